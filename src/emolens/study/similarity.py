"""Representational similarity between the models of finished study runs (``emolens compare``).

Why here and not in the report: the measurement needs each run's extract store, the study's own
data for the items' labels and ratings (reloaded from the run's config and checked against the
fingerprint the run recorded, so a comparison never silently uses other data), and the cross-model
statistics of :mod:`emolens.crossmodel` -- the report only draws what this returns. Every pair of
models gets linear CKA at every layer pair (item-bootstrap intervals, item-shuffle null at matched
depth), RSA of the emotion-centroid geometries (model vs model and vs the human appraisal space,
Mantel p) and probe transfer, on the items both runs stored; a pair that cannot be measured says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pandas as pd

from emolens.crossmodel.compare import ModelActivations, compare_models, from_store
from emolens.errors import EmolensError
from emolens.labels import EMOTIONS
from emolens.report.runs import ModelRun, stage_dir
from emolens.study.config import config_from_dict
from emolens.study.data_choice import resolve_dataset

__all__ = ["PairSimilarity", "model_activations", "pair_similarity"]


@dataclass
class PairSimilarity:
    """The cross-model tables of two studied models (``tables``), or why there are none (``why``)."""

    model_a: str
    model_b: str
    tables: dict[str, pd.DataFrame] | None
    why: str | None = None


def model_activations(mr: ModelRun, loaded: dict | None = None) -> ModelActivations:
    """A run's stored residual stream at the answer cue, with its items' labels and ratings.

    ``loaded`` (run folder -> its dataset) keeps a run's data for its other models: it is loaded,
    and its fingerprint checked, once per run."""
    folder = stage_dir(mr.run_dir, mr.slug, "extract")
    if folder is None:
        raise EmolensError(f"{mr.label} in {mr.run_dir.name} has no finished extract stage",
                           "add extract (resid at position -1) to the study's stages")
    if not mr.n_layers:
        raise EmolensError(f"{mr.label} has no finished readout, so its depth is unknown")
    loaded = {} if loaded is None else loaded
    if mr.run_dir not in loaded:
        cfg = config_from_dict(mr.meta.get("config", {}), str(Path(mr.run_dir) / "run.json"))
        # the run's own data or nothing: no fallback (its fingerprint would differ anyway), no warning about one
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"fallback": None})})
        data = resolve_dataset(cfg).dataset
        recorded = mr.meta.get("dataset", {}).get("fingerprint")
        if recorded and data.fingerprint() != recorded:
            raise EmolensError(f"the data of {mr.run_dir.name} cannot be reloaded here (its fingerprint differs)",
                               "compare on the machine, or with the corpus copy, the runs used")
        loaded[mr.run_dir] = data
    return from_store(Path(folder) / "store", loaded[mr.run_dir], mr.spec, mr.n_layers)


def pair_similarity(models: list[ModelRun], n_boot: int = 200, n_perm: int = 999, seed: int = 0
                    ) -> list[PairSimilarity]:
    """:func:`~emolens.crossmodel.compare.compare_models` for every pair of ``models``."""
    if len(models) < 2:  # no pair: nothing to load
        return []
    acts: dict[int, ModelActivations | str] = {}
    loaded: dict = {}
    for i, mr in enumerate(models):
        try:
            acts[i] = model_activations(mr, loaded)
        except EmolensError as exc:
            acts[i] = str(exc)
    out = []
    for i, j in combinations(range(len(models)), 2):
        a, b = acts[i], acts[j]
        names = (f"{models[i].label} ({models[i].run_dir.name})", f"{models[j].label} ({models[j].run_dir.name})")
        if isinstance(a, str) or isinstance(b, str):
            out.append(PairSimilarity(*names, None, a if isinstance(a, str) else b))
            continue
        try:
            tables = dict(compare_models(a, b, EMOTIONS, n_perm=n_perm, n_boot=n_boot, seed=seed))
        except EmolensError as exc:
            out.append(PairSimilarity(*names, None, str(exc)))
            continue
        out.append(PairSimilarity(*names, tables))
    return out
