"""The command line: one-line errors with exit status 2, and the readout command end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.parametrize("args, message", [
    (["readout", "--model", "no-such-model", "--data", "stimuli"], "unknown model 'no-such-model'"),
    (["readout", "--model", "tiny:llama", "--data", "/nope/data.csv"], "does not exist"),
    (["readout", "--model", "tiny:llama", "--data", "stimuli", "--template", "T42"], "unknown template"),
    (["readout", "--model", "tiny:llama", "--data", "stimuli", "--shots", "ecstasy"], "unknown shot"),
    (["readout", "--model", "tiny:llama", "--data", "stimuli", "--batch-size", "0"], "'--batch-size'"),
    (["readout", "--model", "tiny:llama", "--data", "stimuli", "--dtype", "float8"], "unknown dtype"),
    (["readout", "--model", "tiny:llama", "--data", "stimuli", "--bogus-flag"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, run_cli, tmp_path):
    code, _, err = run_cli(args + ["--out", str(tmp_path / "r")])
    assert code == 2
    assert message in err
    assert err.startswith("emolens: error:") and err.count("\n") == 1
    assert not (tmp_path / "r" / "metrics.json").exists()


BATCH_COMMANDS = ("readout", "extract", "ablate", "patch", "knockout", "steer", "neurons", "control")


@pytest.mark.parametrize("command", BATCH_COMMANDS)
def test_every_batch_size_option_takes_auto_and_refuses_junk(command, run_cli, tmp_path):
    """``--batch-size auto`` parses on every command that takes the option (this run then stops at the
    unknown model, after the option was accepted); a bad value is one line and exit 2 before any work."""
    base = [command, "--model", "no-such-model", "--data", "stimuli", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(base + ["--batch-size", "auto"])
    assert code == 2 and "unknown model 'no-such-model'" in err
    for bad in ("0", "-3", "big", "1.5"):
        code, _, err = run_cli(base + ["--batch-size", bad])
        assert code == 2 and err.startswith("emolens: error:") and err.count("\n") == 1, (bad, err)
        assert "'--batch-size'" in err and "auto" in err and "unknown model" not in err


def test_chunk_size_takes_auto_and_refuses_junk(run_cli, tmp_path):
    """``emolens extract --chunk-size auto`` parses (the run then stops at the unknown model); a bad
    value is one line and exit 2 before any work."""
    base = ["extract", "--model", "no-such-model", "--data", "stimuli", "--out", str(tmp_path / "s")]
    code, _, err = run_cli(base + ["--chunk-size", "auto"])
    assert code == 2 and "unknown model 'no-such-model'" in err
    for bad in ("0", "big"):
        code, _, err = run_cli(base + ["--chunk-size", bad])
        assert code == 2 and err.count("\n") == 1 and "'--chunk-size'" in err and "unknown model" not in err, err


def test_batch_size_auto_runs_with_the_memory_chooser(run_cli, tmp_path):
    from emolens.cli.options import parse_batch_size, resolve_batch_size
    from emolens.engine.memory import CPU_BATCH
    from emolens.model.loading import load_model

    code, stdout, err = run_cli(["readout", "--model", "tiny:llama", "--data", "stimuli", "--limit", "13",
                                 "--batch-size", "auto", "--out", str(tmp_path / "r")])
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["raw"]["n"] == 13
    lm = load_model("tiny:llama")
    assert resolve_batch_size(parse_batch_size("AUTO"), lm) == CPU_BATCH  # a CPU with RAM to spare
    assert resolve_batch_size(parse_batch_size(" 7 "), lm) == 7


def test_wrong_columns_are_named(run_cli, tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"sentence": ["I won."], "emo": ["joy"]}).to_csv(path, index=False)
    code, _, err = run_cli(["readout", "--model", "tiny:llama", "--data", str(path), "--out", str(tmp_path / "r")])
    assert code == 2 and "missing column(s) ['text', 'label']" in err


def test_readout_writes_all_outputs_and_refuses_to_overwrite(run_cli, tmp_path):
    out = tmp_path / "r"
    code, stdout, _ = run_cli(["readout", "--model", "tiny:qwen2", "--data", "stimuli", "--limit", "26",
                               "--calibrate", "--out", str(out)])
    assert code == 0 and "accuracy" in stdout
    frame = pd.read_parquet(out / "readout.parquet")
    assert len(frame) == 26 and {"id", "gold", "pred", "correct", "logp_anger", "pred_cal"} <= set(frame.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["raw"]["n"] == 26 and "calibrated" in metrics and metrics["limit"] == 26
    assert 0 <= metrics["raw"]["accuracy_ci_low"] <= metrics["raw"]["accuracy"] <= metrics["raw"]["accuracy_ci_high"]
    ids = (out / "correct_ids.txt").read_text().split()
    assert ids == frame.loc[frame["correct"], "id"].tolist()
    assert (out / "confusion.png").stat().st_size > 1000
    # The label-stratified sample keeps every label of the stimuli.
    assert frame["gold"].nunique() == 13
    code, _, err = run_cli(["readout", "--model", "tiny:qwen2", "--data", "stimuli", "--out", str(out)])
    assert code == 2 and "already holds results" in err


def test_models_lists_every_alias(run_cli):
    code, out, _ = run_cli(["models"])
    assert code == 0
    for name in ("gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"):
        assert name in out
