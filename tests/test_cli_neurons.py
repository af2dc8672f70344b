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


def test_limit_sample_is_recorded_and_ids_rerun_reproduces_it(run_cli, tmp_path):
    """``--limit N --seed S`` draws from the corpus itself; ``items.txt`` records the draw and
    ``--ids items.txt`` (no limit) gives the very same statistics: a sample is derivable, not a file."""
    from emolens.data.corpus import read_ids
    from emolens.data.loading import load_dataset

    base = ["neurons", "--model", "tiny:llama", "--data", "stimuli", "--appraisals", "pleasantness",
            "--probe-layers", "none", "--ablate", "none", "--no-pairs"]
    code, _, err = run_cli([*base, "--limit", "40", "--seed", "3", "--out", str(tmp_path / "a")])
    assert code == 0, err
    drawn = read_ids(tmp_path / "a" / "items.txt")
    assert drawn == load_dataset("stimuli").sample(40, seed=3).ids
    assert drawn != load_dataset("stimuli").sample(40, seed=4).ids  # the seed matters
    code, _, err = run_cli([*base, "--ids", str(tmp_path / "a" / "items.txt"), "--out", str(tmp_path / "b")])
    assert code == 0, err
    assert read_ids(tmp_path / "b" / "items.txt") == drawn
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "neurons.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "neurons.parquet"))


def test_documented_1300_item_sample_is_the_seeded_limit_sample(crowd_envent_csv, monkeypatch):
    """docs/neurons.md's runs use ``--limit 1300 --seed 0`` on crowd-enVENT; these are its ids (the
    list the earlier runs read from a file), pinned by hash so a change to sampling is noticed."""
    import hashlib

    from emolens.data.loading import load_dataset

    monkeypatch.setenv("EMOLENS_CROWD_ENVENT", str(crowd_envent_csv.parent))
    ids = load_dataset("crowd-envent").sample(1300, seed=0).ids
    digest = hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
    assert digest == "cf54c4d08ff0bb442a3bbc68054e8687af1db6099b9a67ac6735c66c7f00df05"
