"""Run every bad input of issue 17 through the real ``emolens`` entry point and print a table.

Each case is a command a user could type; the table shows its exit status and the first line it
wrote to stderr (or the flag line on stdout, for results that are flagged rather than refused).
The claim it checks: zero tracebacks, zero silent misreadings. Run it from the repository root:

    python scripts/bad_inputs.py            # every case (a few minutes on a tiny model)
    python scripts/bad_inputs.py --only layers,positions

Everything is written under a temporary folder; nothing outside it is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "isear_style.tsv"
TINY = ["--model", "tiny:llama"]


@dataclass
class Case:
    name: str
    args: list[str]
    expect: int
    note: str = ""
    stdout_flag: str | None = None  # a line of stdout to show instead of stderr (flagged results)


def emolens_command() -> list[str]:
    script = Path(sys.executable).with_name("emolens")
    return [str(script)] if script.exists() else [sys.executable, "-m", "emolens"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    return e


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(emolens_command() + args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)


def first_line(text: str) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip() and not ln.lstrip().startswith(
        ("extract:", "readout:", "steer", "Writing model"))]
    return lines[0].strip() if lines else ""


NEEDS_STORE = {"safetensors", "damaged", "overwrite", "provenance", "alpha", "degenerate"}


def setup(tmp: Path, store: bool = True) -> None:
    """Inputs the cases need: files, a small store, a damaged copy of it, a damaged model folder."""
    (tmp / "header_only.csv").write_text("text,label\n")
    (tmp / "a_file").write_text("not a folder\n")
    (tmp / "my_envent_notes.csv").write_text("text,label\nI lost my keys.,anger\nWe won the cup.,joy\n")
    (tmp / "own.yaml").write_text(json.dumps({"base": "quick", "models": ["tiny:llama"],
                                              "dataset": {"spec": str(tmp / "absent.csv")}}))
    (tmp / "fail.yaml").write_text(json.dumps({"name": "failing", "models": ["tiny:llama"],
                                               "dataset": {"spec": "stimuli", "limit": 13},
                                               "stages": ["readout", "extract"], "layers": [50],
                                               "output": str(tmp / "runs")}))
    if not store:
        return
    done = run(["extract", *TINY, "--data", "stimuli", "--limit", "26", "--sites", "resid", "--readout",
                "--chunk-size", "8", "--batch-size", "8", "--out", "store"], tmp)
    assert done.returncode == 0, done.stderr
    for name in ("truncated", "nomanifest"):
        subprocess.run(["cp", "-r", "store", name], cwd=tmp, check=True)
    npy = tmp / "truncated" / "resid.npy"
    os.truncate(npy, npy.stat().st_size - 100)
    (tmp / "nomanifest" / "manifest.json").write_text("{not json")
    subprocess.run([sys.executable, "-c", (
        "import os; from emolens.model.tiny import tiny_model, tiny_tokenizer; "
        "tiny_model('llama').save_pretrained('tinydir'); tiny_tokenizer().save_pretrained('tinydir'); "
        "p = 'tinydir/model.safetensors'; os.truncate(p, os.path.getsize(p) // 2)")],
        cwd=tmp, env=env(), check=True, capture_output=True)


def cases(tmp: Path) -> list[Case]:
    ext = ["extract", *TINY, "--data", "stimuli", "--limit", "13", "--sites", "resid"]
    corpus = ["--data", str(FIXTURE), "--text-column", "situation", "--label-column", "emotion_label"]
    return [
        Case("safetensors", ["readout", "--model", "tinydir", "--data", "stimuli", "--out", "o_st"], 2,
             "truncated safetensors folder"),
        Case("header-only", ["readout", *TINY, "--data", "header_only.csv", "--out", "o_hdr"], 2, "header-only CSV"),
        Case("layers", [*ext, "--layers", "foo", "--out", "o_l1"], 2, "--layers foo"),
        Case("layers", [*ext, "--layers", "0:50", "--out", "o_l2"], 2, "--layers 0:50 (range beyond the model)"),
        Case("layers", [*ext, "--layers", "99", "--out", "o_l3"], 2, "--layers 99 (same error as 0:50)"),
        Case("positions", [*ext, "--positions", "3", "--out", "o_p"], 2,
             "--positions 3 (absolute; help says relative)"),
        Case("out-file", [*ext, "--out", "a_file"], 2, "extract --out is a file"),
        Case("out-file", ["readout", *TINY, "--data", "stimuli", "--out", "a_file"], 2, "readout --out is a file"),
        Case("chunk", [*ext, "--chunk-size", "0", "--out", "o_c"], 2, "--chunk-size 0 (names the right flag)"),
        Case("n-random", ["steer", *TINY, "--data", "stimuli", "--n-random", "-1", "--out", "o_nr"], 2,
             "steer --n-random -1"),
        Case("heads", ["ablate", *TINY, "--data", "stimuli", "--heads", "0", "--sites", "attn", "--out", "o_h"], 2,
             "ablate --heads 0 --sites attn"),
        Case("envent-name", ["readout", *TINY, "--data", "my_envent_notes.csv", "--out", "o_env"], 0,
             "generic CSV named *envent* (read as a generic table)"),
        Case("empty-out", ["readout", *TINY, "--data", "absent.csv", "--out", "o_empty/deep"], 2,
             "failed command: no empty --out left (o_empty absent after)"),
        Case("damaged", ["probe", "--acts", "truncated", "--out", "o_tr"], 2, "probe on a store with a truncated .npy"),
        Case("damaged", ["doctor", "truncated"], 1, "doctor on that store (reports, exit 1)"),
        Case("damaged", ["extract", *TINY, "--data", "stimuli", "--limit", "26", "--sites", "resid", "--readout",
                         "--chunk-size", "8", "--batch-size", "8", "--out", "truncated"], 0,
             "rerun extract on it: repairs (warning), recomputes 1 chunk"),
        Case("damaged", ["probe", "--acts", "nomanifest", "--out", "o_nm"], 2,
             "probe on a store with corrupt manifest"),
        Case("damaged", ["extract", *TINY, "--data", "stimuli", "--limit", "26", "--sites", "resid", "--readout",
                         "--chunk-size", "8", "--batch-size", "8", "--out", "nomanifest"], 0,
             "rerun extract on it: manifest restored from backup"),
        Case("overwrite", ["readout", *TINY, "--data", "stimuli", "--out", "store"], 2, "readout --out into a store"),
        Case("overwrite", ["compare", "store", "--out", "store"], 2, "compare --out into a store"),
        Case("provenance", ["steer", "--model", "tiny:qwen2", "--data", "stimuli", "--limit", "26", "--acts", "store",
                            "--windows", "1", "--span", "1", "--beta", "1", "--n-random", "1", "--out", "o_prov"], 2,
             "steer --acts from another model"),
        Case("fallback", ["run", "own.yaml", "--no-progress"], 2,
             "base: quick with your own missing file (no fallback)"),
        Case("failed-stage", ["run", "fail.yaml", "--no-progress"], 1, "a study whose extract stage fails"),
        Case("labels", ["readout", *TINY, *corpus, "--labels", "anger,joy", "--out", "o_lab"], 2,
             "--labels missing some gold labels (lists them)"),
        Case("labels", ["readout", *TINY, *corpus, "--label-map", "joy", "--labels", "a", "--out", "o_lab2"], 2,
             "--labels with one label"),
        Case("columns", ["readout", *TINY, "--data", str(FIXTURE), "--text-column", "story", "--out", "o_col"], 2,
             "--text-column that the file lacks"),
        Case("alpha", ["probe", "--acts", "store", "--alpha", "lots", "--out", "o_a"], 2, "probe --alpha lots"),
        Case("limit", ["readout", *TINY, "--data", "stimuli", "--limit", "-1", "--out", "o_lim"], 2, "--limit -1"),
        Case("limit", ["readout", *TINY, "--data", "stimuli", "--balanced", "--out", "o_bal"], 2,
             "--balanced without --limit"),
        Case("degenerate", ["probe", "--acts", "store", "--items", "correct", "--task", "emotion", "--n-boot", "10",
                            "--out", "o_deg"], None, "probe --items correct on a tiny model (flagged or refused)",
             stdout_flag="WARNING"),
    ]


def concurrent_and_sigint(tmp: Path) -> list[tuple[str, int, str]]:
    """Two concurrent extracts (the second is refused), then Ctrl-C on the first (130)."""
    rows = ["id,text,label"] + [f"i{i},Item {i}: the bus left without me.,joy" for i in range(5000)]
    (tmp / "many.csv").write_text("\n".join(rows) + "\n")
    args = ["extract", *TINY, "--data", "many.csv", "--sites", "resid", "--layers", "0", "--batch-size", "1",
            "--chunk-size", "16", "--out", "busy"]
    proc = subprocess.Popen(emolens_command() + args, cwd=tmp, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not (tmp / "busy" / "progress.json").exists() and proc.poll() is None:
        time.sleep(0.1)
    second = run(args, tmp)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    return [("emolens " + " ".join(args) + "  (while the same command runs)", second.returncode,
             first_line(second.stderr)),
            ("emolens " + " ".join(args) + "  (Ctrl-C)", proc.returncode, first_line(err))]


def _chain(pool, group: list[Case], tmp: Path) -> list:
    """Futures for a group of cases run one after another (in one worker)."""
    results: list = []
    gate = pool.submit(lambda: [run(c.args, tmp) for c in group])
    for i in range(len(group)):
        results.append(_Item(gate, i))
    return results


class _Item:
    def __init__(self, future, index: int):
        self.future, self.index = future, index

    def result(self):
        return self.future.result()[self.index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--no-concurrency", action="store_true", help="skip the concurrent-extract/SIGINT pair")
    parser.add_argument("--jobs", type=int, default=3, help="case groups run side by side (default 3)")
    opts = parser.parse_args()
    only = {s for s in opts.only.split(",") if s}
    bad = 0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        setup(tmp, store=not only or bool(only & NEEDS_STORE))
        print("| command | exit | first stderr line |\n|---|---|---|")
        chosen = [c for c in cases(tmp) if not only or c.name in only]
        # independent cases run side by side; those on the same store (names repeat) stay in order
        groups: dict[str, list[Case]] = {}
        for case in chosen:
            groups.setdefault(case.name, []).append(case)
        with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
            futures = {id(c): f for g in groups.values()
                       for c, f in zip(g, _chain(pool, g, tmp), strict=True)}
        for case in chosen:
            done = futures[id(case)].result()
            shown = first_line(done.stderr) or f"(stdout) {first_line(done.stdout)}"
            if case.stdout_flag:
                shown = next((ln for ln in done.stdout.splitlines() if case.stdout_flag in ln), shown) or shown
            traceback = "Traceback" in done.stderr
            wrong = (case.expect is not None and done.returncode != case.expect) or traceback
            if case.name == "empty-out" and (tmp / "o_empty").exists():
                wrong = True
            bad += wrong
            mark = " **UNEXPECTED**" if wrong else ""
            print(f"| `emolens {' '.join(case.args)}` ({case.note}) | {done.returncode}{mark} | {shown} |", flush=True)
        if not opts.no_concurrency and (not only or "concurrency" in only):
            for command, code, line in concurrent_and_sigint(tmp):
                print(f"| `{command}` | {code} | {line} |", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
