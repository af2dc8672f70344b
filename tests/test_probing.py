"""``emolens probe`` end to end on a tiny-model store: outputs, item selection, the first-word
control, selectivity and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from emolens.cli.app import main
from emolens.labels import ALL_APPRAISALS, FIRST_WORDS, PAPER_APPRAISALS
from emolens.probes.evaluation import COLUMNS, load_directions
from emolens.probes.probing import first_word_labels, parse_appraisals, parse_tasks

STARTS = ["I", "My", "When", "the", "Yesterday", "Honestly", "I", "My"]  # two of eight are excluded
EMOS = ["surprise", "sadness", "anger", "joy"]  # tiny:llama reads most items as surprise
N = 80
SITES, LAYERS, POSITIONS = ["attn", "mlp", "resid"], 3, [-1, -2]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_llama):
    from emolens.activations.extract import extract
    from emolens.data.loading import load_dataset

    root = tmp_path_factory.mktemp("probing")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        e, w = EMOS[i % 4], STARTS[(i // 4) % len(STARTS)]
        row = {"id": f"x{i}", "text": f"{w} felt {e} about thing {i} today.", "label": e}
        row.update({a: float(rng.integers(1, 6)) for a in ALL_APPRAISALS})
        row["pleasantness"] = {"anger": 1, "joy": 5, "surprise": 4, "sadness": 1}[e] + float(rng.integers(0, 2))
        rows.append(row)
    csv = root / "tiny.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    store = extract(tiny_llama, load_dataset(csv), root / "store", sites=",".join(SITES), layers="all",
                    positions="-1,-2", readout=True, dtype="float32", batch_size=16, chunk_size=32, progress=False)
    return store, csv


@pytest.fixture(scope="module")
def full_run(tiny_store, tmp_path_factory):
    """One CLI run of every task on all items (shared by the output tests)."""
    store, csv = tiny_store
    out = tmp_path_factory.mktemp("probe-all") / "out"
    main(["probe", "--acts", str(store.root), "--data", str(csv), "--items", "all", "--task", "all",
          "--n-boot", "20", "--max-iter", "100", "--out", str(out)])  # exits only on error
    return out


def test_parsers_and_first_word_labels():
    assert parse_tasks("all") == ["emotion", "appraisal", "first-word"]
    assert parse_tasks("first_word,emotion") == ["emotion", "first-word"]
    assert parse_appraisals("paper", ALL_APPRAISALS) == PAPER_APPRAISALS
    assert parse_appraisals("pleasantness, effort", ALL_APPRAISALS) == ("pleasantness", "effort")
    y = first_word_labels(["I won.", "i won", "Today I won", "The end", "", "  my   cat", "Someone came"])
    assert y.tolist() == [FIRST_WORDS.index("I"), FIRST_WORDS.index("i"), -1, FIRST_WORDS.index("The"), -1,
                          FIRST_WORDS.index("my"), FIRST_WORDS.index("Someone")]


def test_cli_writes_every_output(full_run):
    out = full_run
    for name in ("probes.parquet", "directions.safetensors", "human_baseline.json", "human_baseline_coef.parquet",
                 "summary.json", "items.txt", "curve_emotion.png", "heatmap_emotion_sites.png",
                 "heatmap_emotion_positions.png", "heatmap_appraisal_r2.png"):
        assert (out / name).exists() and (out / name).stat().st_size > 0, name
    table = pd.read_parquet(out / "probes.parquet")
    assert list(table.columns) == list(COLUMNS)
    # 16 test items: too few for the control-task selectivity, which is refused (see the next test)
    assert set(table.task) == {"emotion", "emotion/shuffled", "first_word", "first_word/shuffled", "appraisal",
                               "appraisal/shuffled", "human_baseline"}
    want = {(s, layer, p) for s in SITES for layer in range(LAYERS) for p in POSITIONS}
    for task in ("emotion", "first_word"):
        part = table[(table.task == task) & (table.metric == "accuracy")]
        assert set(zip(part.site, part.layer, part.position, strict=True)) == want and len(part) == len(want)
    emo = table[table.task == "emotion"]
    assert (emo.n == 16).all()  # paper split: ceil(0.2 * 80) test items
    assert (emo.ci_low <= emo.value + 1e-12).all() and (emo.value <= emo.ci_high + 1e-12).all()
    app = table[(table.task == "appraisal") & (table.metric == "r2")]
    assert set(app.position) == {-1} and set(app.target) == set(PAPER_APPRAISALS)
    assert len(app) == len(PAPER_APPRAISALS) * len(SITES) * LAYERS
    dirs, meta = load_directions(out / "directions.safetensors")
    slices = json.loads(meta["slices"])
    assert {tuple(s) for s in slices} == want and len(slices) == len(want)
    assert dirs["emotion/probe"].shape == (len(want), 4, 64)  # the label set is the four the file uses
    assert dirs["appraisal/probe"].shape == (len(want), 20, 64)
    assert json.loads(meta["appraisals"]) == list(PAPER_APPRAISALS) and len(json.loads(meta["emotions"])) == 4
    human = json.loads((out / "human_baseline.json").read_text())
    assert 0 <= human["ci_low"] <= human["accuracy"] <= human["ci_high"] <= 1 and human["n"] == 16
    coef = pd.read_parquet(out / "human_baseline_coef.parquet")
    assert list(coef.columns) == ["emotion", "intercept", *PAPER_APPRAISALS] and len(coef) == 4


def test_first_word_exclusions_and_selectivity(full_run):
    summary = json.loads((full_run / "summary.json").read_text())
    excluded = sum(STARTS[(i // 4) % len(STARTS)] not in FIRST_WORDS for i in range(N))  # Yesterday, Honestly
    assert excluded == 16
    assert summary["first_word"]["n_excluded"] == excluded
    assert summary["first_word"]["n_included"] == N - excluded
    assert summary["items"] == {"mode": "all", "source": "all store items", "n_store": N, "n_used": N,
                                "n_with_label": N}
    table = pd.read_parquet(full_run / "probes.parquet")
    conv = table[table.metric == "converged"]  # every classifier task says whether its fits finished
    assert set(conv.task) >= {"emotion", "first_word"} and set(summary["converged"]) == set(conv.task)
    assert summary["converged"]["emotion"]["slices"] == len(conv[conv.task == "emotion"])
    assert "converged" not in set(table[table.task == "selectivity"].metric)
    fw = table[(table.task == "first_word") & (table.metric != "converged")]
    assert (fw.n == int(np.ceil(0.2 * (N - excluded)))).all()
    # selectivity needs >= 20 test items; the paper split of 80 items tests 16, so it is refused with a note
    assert "selectivity" not in set(table.task)
    assert any("selectivity at" in n and "at least 20 test items" in n for n in summary["notes"])


def test_control_task_selectivity_through_the_cli(tiny_store, tmp_path, run_cli):
    store, csv = tiny_store
    out = tmp_path / "cv"
    code, _, _ = run_cli(["probe", "--acts", str(store.root), "--data", str(csv), "--items", "all", "--task",
                          "emotion,first-word", "--protocol", "cv", "--n-boot", "20", "--max-iter", "50",
                          "--out", str(out)])
    assert code == 0
    table = pd.read_parquet(out / "probes.parquet")
    sel = table[table.task == "selectivity"]
    assert len(sel) == len(SITES) * LAYERS * len(POSITIONS) and set(sel.metric) == {"normalised_accuracy"}
    keys = ["site", "layer", "position"]
    m = sel.merge(table[table.task == "emotion/normalised"], on=keys, suffixes=("", "_e")).merge(
        table[table.task == "control_task/normalised"], on=keys, suffixes=("", "_c"))
    np.testing.assert_allclose(m.value, m.value_e - m.value_c, atol=1e-9)  # paired: same items
    assert (sel.n == N).all() and (sel.ci_low <= sel.value + 1e-12).all()
    assert (out / "heatmap_selectivity_sites.png").exists()


def test_items_correct_uses_the_readout(tiny_store, tmp_path, run_cli):
    store, csv = tiny_store
    correct = store.readout().query("correct")["id"].tolist()
    assert 2 <= len(correct) < N
    out = tmp_path / "c"
    code, stdout, _ = run_cli(["probe", "--acts", str(store.root), "--data", str(csv), "--items", "correct",
                               "--task", "emotion", "--no-shuffled", "--no-directions", "--n-boot", "10",
                               "--positions=-1", "--out", str(out)])
    assert code == 0 and f"{len(correct)} items (correct)" in stdout
    assert (out / "items.txt").read_text().split() == correct
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"]["mode"] == "correct" and summary["items"]["n_used"] == len(correct)
    assert summary["items"]["source"].endswith("readout.parquet")
    table = pd.read_parquet(out / "probes.parquet")
    assert set(table.task) == {"emotion", "human_baseline"}
    assert (table[table.task == "emotion"].n == int(np.ceil(0.2 * len(correct)))).all()
    assert set(table[table.task == "emotion"].position) == {-1}
    # the human baseline does not depend on the model: it uses every gold-labelled item, not the correct ones
    human = table[(table.task == "human_baseline") & (table.metric == "accuracy")]
    assert (human.n == int(np.ceil(0.2 * N))).all() and sum(summary["human_baseline_n_per_emotion"].values()) == N
    assert not (out / "directions.safetensors").exists()


def test_bad_input_is_one_line_exit_2(tiny_store, tmp_path, run_cli):
    store, csv = tiny_store
    incomplete = tmp_path / "incomplete"
    shutil.copytree(store.root, incomplete)
    (incomplete / "COMPLETE").unlink()
    ids = tmp_path / "ids.txt"
    ids.write_text("x1\nnot-an-item\n")
    other = tmp_path / "other.csv"
    frame = pd.read_csv(csv)
    frame.loc[0, "text"] = "Changed text."
    frame.to_csv(other, index=False)
    base = ["probe", "--acts", str(store.root), "--data", str(csv)]
    cases = [
        (["probe", "--acts", str(tmp_path / "nope")], "not an activation store"),
        (["probe", "--acts", str(incomplete), "--data", str(csv)], "is incomplete"),
        (base + ["--task", "sentiment"], "unknown task"),
        (base + ["--probe", "svm"], "unknown probe"),
        (base + ["--items", str(ids)], "ids are not in the store"),
        (base + ["--items", str(tmp_path / "missing.txt")], "does not exist"),
        (["probe", "--acts", str(store.root), "--data", str(other)], "fingerprint mismatch"),
        (["probe", "--acts", str(store.root)], "pass --data"),
        (base + ["--appraisals", "pleasantness,joyfulness"], "not in the data"),
        (base + ["--positions=-7"], "not in the store"),
    ]
    for args, message in cases:
        out = tmp_path / "o"
        code, _, err = run_cli(args + ["--out", str(out), "--n-boot", "10"])
        assert code == 2, (args, err)
        assert message in err, (message, err)
        assert err.startswith("emolens: error:") and err.count("\n") == 1
        assert not (out / "probes.parquet").exists()
