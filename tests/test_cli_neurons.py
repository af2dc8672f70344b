"""``emolens neurons`` through the real entry point: outputs, refusal to overwrite, bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARGS = ["neurons", "--model", "tiny:llama", "--data", "stimuli", "--limit", "80", "--appraisals",
        "pleasantness,other_responsblt,self_responsblt", "--probe-layers", "1", "--ks", "1,4",
        "--ablate", "other_responsblt", "--ablate-k", "4", "--random-sets", "2", "--ablation-items", "8"]


def test_neurons_writes_tables_and_figures_and_refuses_to_overwrite(run_cli, tmp_path):
    out = tmp_path / "n"
    code, stdout, err = run_cli([*ARGS, "--out", str(out)])
    assert code == 0, err
    table = pd.read_parquet(out / "neurons.parquet")
    assert {"layer", "neuron", "appraisal", "r", "partial_r", "q", "rank", "ci_lo", "ci_hi"} <= set(table.columns)
    assert len(table) == 3 * 128 * 3
    sparse = pd.read_parquet(out / "sparse.parquet")
    assert set(sparse.k) == {1, 4, 128} and set(sparse.layer) == {1}
    ablation = pd.read_parquet(out / "ablation.parquet")
    assert ablation.loc[0, "target"] == "anger" and ablation.loc[0, "n_sets"] == 2
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert not pairs["independent"].any()  # --data stimuli: r and pairs share items, flagged
    run = json.loads((out / "neurons_run.json").read_text())
    assert run["neurons_per_layer"] == 128 and run["n_items"] == 80
    assert {"neurons_significant.png", "neurons_sparse.png", "neurons_ablation.png"} <= set(run["plots"])
    assert "q < 0.05" in stdout
    code, _, err = run_cli([*ARGS, "--out", str(out)])
    assert code == 2 and "--force" in err


@pytest.mark.parametrize("extra, message", [
    (["--appraisals", "happiness"], "unknown appraisal"),
    (["--ablate", "familiarity"], "unknown ablation appraisal"),
    (["--probe-layers", "x"], "probe-layers"),
])
def test_neurons_bad_input_is_exit_2(run_cli, tmp_path, extra, message):
    code, _, err = run_cli(["neurons", "--model", "tiny:llama", "--data", "stimuli", "--out", str(tmp_path / "o"),
                            *extra])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_neurons_time_budget_says_how_far_it_got(run_cli, tmp_path):
    out = tmp_path / "b"
    code, stdout, err = run_cli(["neurons", "--model", "tiny:llama", "--data", "stimuli", "--limit", "80",
                                 "--appraisals", "pleasantness", "--probe-layers", "none", "--ablate", "none",
                                 "--no-pairs", "--batch-size", "4", "--budget-minutes", "0.00001", "--out", str(out)])
    assert code == 0, err
    run = json.loads((out / "neurons_run.json").read_text())
    assert run["stopped_early"] and run["n_planned"] == 80 and run["n_items"] == 16
    assert "16 of 80 items" in stdout
