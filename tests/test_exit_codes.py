"""Exit statuses through the real ``emolens`` entry point, run as a separate process.

Scripts branch on these: 0 success, 1 a failed stage, 2 bad input (one line), 130 interrupted.
In-process tests cannot prove this (the bug was in how ``main`` turned the app's return value
into the process status), so every test here spawns the console script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def emolens_command() -> list[str]:
    """The installed console script next to this interpreter (what users run)."""
    script = Path(sys.executable).with_name("emolens")
    if not script.exists():
        pytest.skip(f"console script {script} not installed (pip install -e . first)")
    return [str(script)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    return env


def emolens(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(emolens_command() + list(args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_success_is_0(tmp_path):
    done = emolens("models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "gemma-3-270m" in done.stdout


@pytest.mark.parametrize("args", [
    ["readout", "--model", "tiny:llama", "--data", "stimuli", "--bogus-flag"],
    ["readout", "--model", "tiny:llama", "--data", "/nope/data.csv", "--out", "r"],
    ["compare", "runs/any", "--out", "r", "--boot", "0"],
    ["compare", "runs/any", "--out", "r", "--permutations", "-5"],
    ["steer", "--model", "tiny:llama", "--data", "stimuli", "--out", "r", "--direction", "pleasantness+",
     "--null-design", "best"],
    [],
])
def test_bad_input_is_2_with_one_line(tmp_path, args):
    done = emolens(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("emolens: error:") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()  # nothing written that could look like a result


@pytest.mark.parametrize("command", [["run", "--preset", "quick", "--out", "r"],
                                     ["ablate", "--model", "tiny:llama", "--data", "stimuli", "--out", "r"]])
def test_a_bad_stacking_setting_is_2_before_any_work(tmp_path, monkeypatch, command):
    """``EMOLENS_STACK_ROWS`` set to junk: a study and a command both refuse it at once, in one line
    naming the variable, and write nothing (a study used to fail its first stage, exit 1)."""
    monkeypatch.setenv("EMOLENS_STACK_ROWS", "lots")
    done = emolens(*command, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("emolens: error: EMOLENS_STACK_ROWS='lots'") and done.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_failed_stage_is_1(tmp_path):
    # readout succeeds; extract fails at run time (tiny:llama has 3 layers), which only the stage can know.
    config = tmp_path / "fail.yaml"
    config.write_text(json.dumps({
        "name": "failing", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 13},
        "stages": ["readout", "extract"], "layers": [50], "output": str(tmp_path / "runs")}))
    done = emolens("run", str(config), "--no-progress", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 stage(s) failed (tiny-llama/extract)" in done.stderr
    assert "Traceback" not in done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["stages"]["tiny-llama"]["readout"]["status"] == "done"
    assert meta["stages"]["tiny-llama"]["extract"]["status"] == "failed"


def test_sigint_is_130_a_second_writer_is_refused_and_the_store_resumes(tmp_path):
    # So many items that the run cannot finish before the signal, however quiet the machine.
    rows = ["id,text,label"] + [f"i{i},Item {i}: the bus left without me again.,{('joy', 'anger', 'fear')[i % 3]}"
                                for i in range(5000)]
    (tmp_path / "many.csv").write_text("\n".join(rows) + "\n")
    store = tmp_path / "store"
    args = ["extract", "--model", "tiny:llama", "--data", "many.csv", "--out", str(store),
            "--sites", "resid", "--layers", "0", "--batch-size", "1", "--chunk-size", "16"]
    # A shell that starts the suite in the background (`pytest &`) leaves SIGINT ignored, and children
    # inherit that; Python then installs no KeyboardInterrupt handler. Give the child the default
    # disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(emolens_command() + args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (store / "progress.json").exists():  # at least one chunk is durable
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "extract made no progress in 300 s"
            time.sleep(0.05)
        second = emolens(*args, cwd=tmp_path)  # the same command, concurrently
        assert second.returncode == 2
        assert f"is being written by pid {proc.pid} on host" in second.stderr and second.stderr.count("\n") == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "emolens: interrupted; rerun to resume"
    assert "Traceback" not in err
    # What was committed stays, and the same command would resume after it.
    from emolens.activations.store import ActivationStore

    done = json.loads((store / "progress.json").read_text())["chunks_done"]
    assert 1 <= done < 5000 // 16
    assert not ActivationStore.open(store, allow_incomplete=True).complete
    assert not (store / ".emolens.lock").exists()  # the interrupted writer let go of the store
