"""compare_models on synthetic runs and ``emolens crossmodel`` through the entry point."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ortho_group

from emolens.crossmodel.compare import ModelActivations, compare_models
from emolens.labels import EMOTIONS


def _runs(seed=0, n=260):
    rng = np.random.default_rng(seed)
    labels = np.array([EMOTIONS[i % 13] for i in range(n)])
    centres = rng.normal(size=(13, 16)) * 2
    base = centres[[EMOTIONS.index(e) for e in labels]] + rng.normal(size=(n, 16))
    resid_a = np.stack([base * (1 + 0.1 * layer) for layer in range(3)], 1)
    q = ortho_group.rvs(16, random_state=1)
    resid_b = np.stack([base @ q, np.tanh(base @ q), rng.normal(size=(n, 16)), base @ q * 2], 1)
    ratings = base[:, :2] + rng.normal(size=(n, 2))
    ids = [f"i{i}" for i in range(n)]
    a = ModelActivations("A", resid_a, [0, 1, 2], 3, ids, labels, ratings, ("pleasantness", "effort"))
    order = rng.permutation(n)  # B lists the same items in another order
    b = ModelActivations("B", resid_b[order], [0, 1, 2, 3], 4, [ids[i] for i in order], labels[order],
                         ratings[order], ("pleasantness", "effort"))
    return a, b


def test_compare_models_matches_items_by_id_and_finds_the_rotation():
    a, b = _runs()
    tables = compare_models(a, b, EMOTIONS, depths=2, n_perm=99)
    cka = tables["cka"].set_index(["layer_a", "layer_b"])["cka"]
    assert abs(cka[(0, 0)] - 1) < 1e-9 and abs(cka[(2, 3)] - 1) < 1e-9  # rotated/scaled copies
    assert cka[(0, 2)] < 0.3  # the noise layer
    full = tables["cka"].set_index(["layer_a", "layer_b"])
    assert full[["cka_lo", "cka_hi"]].notna().all().all()  # an interval at every depth pair, not only matched
    assert full.loc[(0, 2), "cka_hi"] < full.loc[(0, 1), "cka_lo"]
    rsa = tables["rsa"]
    assert set(rsa["kind"]) == {"model-human", "model-model"}
    assert (rsa[rsa.kind == "model-model"].query("layer_other != 2")["p"] <= 0.05).all()
    acc = tables["transfer"].query("measure == 'emotion_accuracy' and depth == 1.0")
    assert len(acc) == 2 and (abs(acc["transferred"] - acc["native"]) < 0.05).all()


def test_crossmodel_cli_writes_tables(run_cli, tmp_path):
    for run in _runs():
        folder = tmp_path / run.name
        folder.mkdir()
        np.savez(folder / "resid.npz", resid=run.resid, layers=np.asarray(run.layers), ids=np.asarray(run.ids),
                 labels=run.labels, ratings=run.ratings, appraisals=np.asarray(run.appraisals),
                 n_layers=run.n_layers, model=run.name)
    out = tmp_path / "cm"
    code, stdout, err = run_cli(["crossmodel", "--runs", f"{tmp_path / 'A'},{tmp_path / 'B'}", "--out", str(out),
                                 "--permutations", "49", "--depths", "2"])
    assert code == 0, err
    assert len(pd.read_parquet(out / "cka.parquet")) == 12
    assert {"crossmodel_cka.png", "crossmodel_rsa.png", "crossmodel_transfer.png"} <= set(
        json.loads((out / "crossmodel_run.json").read_text())["plots"])
    code, _, err = run_cli(["crossmodel", "--runs", str(tmp_path / "A"), "--out", str(tmp_path / "x")])
    assert code == 2 and "exactly two" in err


def test_too_few_shared_items_is_refused():
    from emolens.errors import EmolensError

    a, b = _runs()
    b.ids = [f"other{i}" for i in range(len(b.ids))]
    with pytest.raises(EmolensError, match="share only"):
        compare_models(a, b, EMOTIONS)
