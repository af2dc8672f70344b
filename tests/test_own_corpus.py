"""A corpus with its own columns, labels and appraisals, end to end from the CLI.

The fixture ``tests/data/isear_style.tsv`` was composed for these tests: 70 first-person events in
the style of ISEAR (7 labels: anger, disgust, fear, guilt, joy, sadness, shame; 10 each, mixed
case), its own column names and four binary appraisal columns (one, ``unfair``, with no
crowd-enVENT name). The whole flow of ``docs/data.md`` runs on it: readout, extract, probe, steer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emolens.data.loading import Columns, load_dataset
from emolens.errors import EmolensError

FIXTURE = Path(__file__).parent / "data" / "isear_style.tsv"
LABELS = ("anger", "disgust", "fear", "guilt", "joy", "sadness", "shame")
CORPUS = ["--data", str(FIXTURE), "--text-column", "situation", "--label-column", "emotion_label",
          "--id-column", "sit_id", "--labels", ",".join(LABELS),
          "--appraisal-columns", "pleasantness=pleasant,other_responsblt=caused_by_other,predict_event=expected,unfair"]


def test_columns_labels_and_appraisals_are_read_as_declared():
    ds = load_dataset(FIXTURE, Columns(text="situation", label="emotion_label", id="sit_id", labels=LABELS,
                                       appraisals={"pleasantness": "pleasant", "unfair": "unfair"}))
    assert len(ds) == 70 and ds.ids[0] == "S001" and ds.label_names == LABELS
    assert pd.Series(ds.labels).value_counts().to_dict() == dict.fromkeys(LABELS, 10)  # FEAR, Fear -> fear
    assert ds.appraisal_names == ("pleasantness", "unfair")  # unknown name kept as given
    assert set(np.unique(ds.appraisal("unfair"))) == {0.0, 1.0}
    # without --labels: the protocol emotions the file uses, in the protocol's order
    inferred = load_dataset(FIXTURE, Columns(text="situation", label="emotion_label"))
    assert inferred.label_names == LABELS
    # a declared set lacking a gold label names what is unmapped and how to fix it
    with pytest.raises(EmolensError, match=r"unknown labels \[.shame.\].*columns.label_map=.old=new."):
        load_dataset(FIXTURE, Columns(text="situation", label="emotion_label", labels=LABELS[:-1]))
    mapped = load_dataset(FIXTURE, Columns(text="situation", label="emotion_label", labels=LABELS[:-1],
                                           label_map={"SHAME": "guilt"}))
    assert mapped.labels.count("guilt") == 20


def test_balanced_limit_gives_each_label_its_share():
    ds = load_dataset(FIXTURE, Columns(text="situation", label="emotion_label"))
    lopsided = ds.subset([i for i, lab in enumerate(ds.labels) if lab != "guilt" or ds.ids[i] < "S040"])
    counts = pd.Series(lopsided.sample(35, seed=1, balanced=True).labels).value_counts()
    assert counts.sum() == 35 and counts.min() >= 4 and counts.max() - counts.min() <= 2
    assert pd.Series(ds.sample(28, seed=1, balanced=True).labels).value_counts().to_dict() == dict.fromkeys(LABELS, 4)


def run_flow(run_cli, tmp_path: Path, model: str, extra: list[str]) -> dict:
    """readout -> extract -> probe -> steer on the fixture; returns what each wrote."""
    out = {}
    code, stdout, err = run_cli(["readout", "--model", model, *CORPUS, *extra, "--out", str(tmp_path / "r")])
    assert code == 0, err
    out["metrics"] = json.loads((tmp_path / "r" / "metrics.json").read_text())
    code, _, err = run_cli(["extract", "--model", model, *CORPUS, *extra, "--sites", "resid", "--readout",
                            "--out", str(tmp_path / "acts")])
    assert code == 0, err
    code, stdout, err = run_cli(["probe", "--acts", str(tmp_path / "acts"), *CORPUS, "--items", "all",
                                 "--task", "emotion,appraisal", "--n-boot", "20", "--alpha", "gcv",
                                 "--out", str(tmp_path / "p")])
    assert code == 0, err
    out["probe_stdout"] = stdout
    out["probes"] = pd.read_parquet(tmp_path / "p" / "probes.parquet")
    code, stdout, err = run_cli(["steer", "--model", model, *CORPUS, *extra, "--acts", str(tmp_path / "acts"),
                                 "--direction", "pleasantness+", "--direction", "unfair+", "--windows", "1",
                                 "--span", "1", "--beta", "4", "--n-random", "2", "--holdout", "0.5",
                                 "--out", str(tmp_path / "s")])
    assert code == 0, err
    out["steering"] = pd.read_parquet(tmp_path / "s" / "steering.parquet")
    out["steer_summary"] = json.loads((tmp_path / "s" / "summary.json").read_text())
    return out


def check_flow(out: dict, n_items: int) -> None:
    raw = out["metrics"]["raw"]
    assert raw["n"] == n_items and raw["chance"] == pytest.approx(1 / 7)  # not 1/13
    assert set(raw["predicted_distribution"]) == set(LABELS)  # relief, pride ... are not scored
    probes = out["probes"]
    assert set(probes.task) >= {"emotion", "appraisal"}
    assert {"pleasantness", "unfair"} <= set(probes.loc[probes.task == "appraisal", "target"])
    steering = out["steering"]
    assert {"pleasantness+", "unfair+"} <= set(steering.direction)
    assert set(steering.label.dropna()) - {"*"} <= set(LABELS)  # "*": rows over all labels
    source = out["steer_summary"]["directions_from"]
    assert source["kind"] == "activation store" and source["checked"] == "source id"


def test_isear_style_corpus_end_to_end_on_a_tiny_model(run_cli, tmp_path):
    check_flow(run_flow(run_cli, tmp_path, "tiny:llama", []), 70)


@pytest.mark.real_model
def test_isear_style_corpus_end_to_end_on_gemma(run_cli, tmp_path, real_model):
    check_flow(run_flow(run_cli, tmp_path, "gemma-3-270m", ["--limit", "35", "--balanced"]), 35)
