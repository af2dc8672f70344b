"""Two models' residual streams on shared items -> CKA, RSA (model-model, model-human) and transfer tables.

Why a loader-free core: the inputs are plain arrays (``resid [n, L, d]``, item ids, labels,
ratings) so the same code serves ``emolens neurons --save-resid`` outputs, activation stores and
tests. Items are matched by id; only shared items with a label enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emolens.activations.store import ActivationStore
from emolens.crossmodel.similarity import (
    appraisal_rdm,
    centroid_rdm,
    cka_inference,
    cka_matrix,
    cka_matrix_interval,
    mantel,
    relative_depth_pairs,
)
from emolens.crossmodel.transfer import transfer
from emolens.errors import EmolensError, arg

__all__ = ["ModelActivations", "compare_models", "from_store", "load_resid"]


@dataclass
class ModelActivations:
    """One model's activations at one position: ``resid [n, L, d]`` for ``layers`` of ``n_layers``."""

    name: str
    resid: np.ndarray
    layers: list[int]
    n_layers: int
    ids: list[str]
    labels: np.ndarray
    ratings: np.ndarray
    appraisals: tuple[str, ...]

    def depth(self, layer: int) -> float:
        return (layer + 1) / self.n_layers


def load_resid(path: str | Path) -> ModelActivations:
    """Read ``resid.npz`` written by the neuron pass with ``save_resid`` (a folder or the file)."""
    path = Path(path)
    path = path / "resid.npz" if path.is_dir() else path
    if not path.exists():
        raise EmolensError(f"{str(path)!r} does not exist",
                           f"run the neuron pass with {arg('save_resid', True)} for each model first")
    z = np.load(path, allow_pickle=False)
    return ModelActivations(str(z["model"]), z["resid"], [int(x) for x in z["layers"]], int(z["n_layers"]),
                            [str(x) for x in z["ids"]], z["labels"].astype(str), z["ratings"],
                            tuple(str(x) for x in z["appraisals"]))


def from_store(store_dir: str | Path, dataset, name: str, n_layers: int, site: str = "resid",
               position: int = -1) -> ModelActivations:
    """A study's extract store as :class:`ModelActivations`: ``site`` at ``position`` for every stored
    layer, labels and ratings of the store's items from ``dataset`` (the study's own data).

    Why: ``emolens compare`` measures how alike two studied models represent emotions from what
    their runs already stored, without running either model again."""
    store = ActivationStore.open(store_dir)
    if site not in store.sites or position not in store.positions:
        raise EmolensError(f"store {str(store_dir)!r} holds no {site} at position {position}",
                           f"extract {site} at position {position} in both studies")
    items = dataset.subset(np.asarray(store.item_ids, dtype=object).astype(str))
    values = np.asarray(store.read(site)[:, :, store.positions.index(position)], dtype=np.float32)
    return ModelActivations(name, values, [int(x) for x in store.layers_of(site)], int(n_layers), list(items.ids),
                            np.asarray(items.labels, dtype=object).astype(str), np.asarray(items.appraisals),
                            tuple(items.appraisal_names))


def _shared(a: ModelActivations, b: ModelActivations) -> tuple[np.ndarray, np.ndarray]:
    pos_b = {item: i for i, item in enumerate(b.ids)}
    ia = np.array([i for i, item in enumerate(a.ids) if item in pos_b], dtype=int)
    ib = np.array([pos_b[a.ids[i]] for i in ia], dtype=int)
    if len(ia) < 26:
        raise EmolensError(f"{a.name} and {b.name} share only {len(ia)} items",
                           f"run both on the same {arg('ids')} file")
    return ia, ib


def compare_models(a: ModelActivations, b: ModelActivations, emotions: Sequence[str], depths: int = 4,
                   n_perm: int = 999, n_boot: int = 200, seed: int = 0) -> Mapping[str, pd.DataFrame]:
    """CKA (every layer pair with a joint item-bootstrap interval; at matched depths also its
    item-shuffle null), RSA at matched depths and against human appraisal space, transfer."""
    ia, ib = _shared(a, b)
    labels = a.labels[ia]
    if not np.array_equal(labels, b.labels[ib]):
        raise EmolensError("the two runs disagree on item labels", "run both on the same dataset")
    present = [e for e in emotions if (labels == e).sum() >= 2]
    xa, xb = a.resid[ia], b.resid[ib]
    layers_a, layers_b = [xa[:, i] for i in range(xa.shape[1])], [xb[:, j] for j in range(xb.shape[1])]
    cka = cka_matrix(layers_a, layers_b)
    lo, hi = cka_matrix_interval(layers_a, layers_b, n_boot=n_boot, seed=seed)
    cka_rows = [{"model_a": a.name, "model_b": b.name, "layer_a": la, "layer_b": lb, "depth_a": a.depth(la),
                 "depth_b": b.depth(lb), "cka": cka[i, j], "cka_lo": lo[i, j], "cka_hi": hi[i, j],
                 "n_items": len(ia)}
                for i, la in enumerate(a.layers) for j, lb in enumerate(b.layers)]
    pairs = relative_depth_pairs(a.n_layers, b.n_layers)
    matched = {(la, lb) for _, la, lb in pairs}
    for row in cka_rows:
        if (row["layer_a"], row["layer_b"]) in matched:
            got = cka_inference(xa[:, a.layers.index(row["layer_a"])], xb[:, b.layers.index(row["layer_b"])],
                                n_boot=0, n_perm=min(n_perm, 99), seed=seed)
            row.update(matched_depth=True, cka_null=got["null_mean"], cka_p=got["p"])
        else:
            row.update(matched_depth=False, cka_null=np.nan, cka_p=np.nan)
    keep = np.isin(labels, present)
    ratings = a.ratings[ia]
    human = appraisal_rdm(ratings[keep], labels[keep], present)
    rsa_rows = []
    for model, x, acts in ((a.name, xa, a), (b.name, xb, b)):
        for i, layer in enumerate(acts.layers):
            rho, p = mantel(centroid_rdm(x[keep, i], labels[keep], present), human, n_perm, seed)
            rsa_rows.append({"kind": "model-human", "model": model, "other": "human appraisal space",
                             "layer": layer, "depth": acts.depth(layer), "rho": rho, "p": p})
    for depth, la, lb in pairs:
        if la in a.layers and lb in b.layers:
            ra = centroid_rdm(xa[keep, a.layers.index(la)], labels[keep], present)
            rb = centroid_rdm(xb[keep, b.layers.index(lb)], labels[keep], present)
            rho, p = mantel(ra, rb, n_perm, seed)
            rsa_rows.append({"kind": "model-model", "model": a.name, "other": b.name, "layer": la,
                             "layer_other": lb, "depth": depth, "rho": rho, "p": p})
    transfer_rows = []
    for depth, la, lb in relative_depth_pairs(a.n_layers, b.n_layers, depths):
        if la not in a.layers or lb not in b.layers:
            continue
        x1, x2 = xa[keep, a.layers.index(la)], xb[keep, b.layers.index(lb)]
        for src, tgt, s_x, t_x, s_l, t_l in ((a.name, b.name, x1, x2, la, lb), (b.name, a.name, x2, x1, lb, la)):
            for row in transfer(s_x, t_x, labels[keep], ratings[keep], a.appraisals, seed=seed):
                transfer_rows.append({"probe_model": src, "mapped_model": tgt, "depth": depth, "probe_layer": s_l,
                                      "mapped_layer": t_l, **row})
    return {"cka": pd.DataFrame(cka_rows), "rsa": pd.DataFrame(rsa_rows), "transfer": pd.DataFrame(transfer_rows)}
