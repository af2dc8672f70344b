"""Selectivity against a real control task (Hewitt & Liang, 2019), read against chance.

Why: "selectivity" as emotion accuracy minus first-word accuracy subtracts scores with very
different chance levels (a first-word majority class of ~0.6 against ~0.08 for 13 emotions), so it
is negative by construction and says nothing about the probe. Hewitt & Liang's control task
instead gives every *word type* one random label, drawn from the task's own label distribution
(the same cardinality and base rates); a probe can only score on it by memorising word types, so
it measures what the probe can do without the property. Here the type is an item's first word
(any hashable per-item key works), the two tasks share items and folds, both accuracies are
chance-normalised (``(acc - majority) / (1 - majority)`` on the test items) and their difference
gets a paired interval from a bootstrap over the shared test items.

Test sets whose labels are a single class, or with fewer than :data:`MIN_TEST` items, make
accuracy meaningless: they are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from emolens.errors import EmolensError
from emolens.probes import estimators as probes
from emolens.probes.evaluation import COLUMNS, splits
from emolens.stats import chance_normalised, cluster_bootstrap, majority_share

__all__ = ["MIN_TEST", "control_labels", "control_task_selectivity"]

#: Fewest tested items for a selectivity estimate.
MIN_TEST = 20


def control_labels(types: Sequence[Any], labels, seed: int = 0) -> np.ndarray:
    """One random label per type, drawn from the empirical distribution of ``labels`` (seeded)."""
    y = np.asarray(labels)
    keys = [str(t) for t in types]
    uniq = sorted(set(keys))
    rng = np.random.default_rng(seed)
    drawn = dict(zip(uniq, rng.choice(y, size=len(uniq), replace=True), strict=True))
    return np.array([drawn[k] for k in keys], dtype=y.dtype)


def control_task_selectivity(X, y, types: Sequence[Any], slices: Sequence[tuple[str, int, int]], *,
                             protocol: str = "paper", k: int = 5, seed: int = 42, C: float = 1.0,
                             n_classes: int | None = None, n_boot: int = 1000, max_iter: int = 1000,
                             dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """Chance-normalised emotion accuracy, control-task accuracy and their difference per slice.

    ``X[S, n, d]`` activations, ``y[n]`` class ids (-1 = unlabelled, dropped), ``types[n]`` the
    word type of each item. Both probes are logistic with the same ``C``, fitted on the same folds
    (stratified by ``y`` for ``cv``). Tasks in the frame: ``emotion/normalised``,
    ``control_task/normalised`` and ``selectivity``, all with metric ``normalised_accuracy`` and
    chance 0; intervals from an item bootstrap shared by the two tasks (paired).
    """
    yv = np.asarray(y)
    keep = np.flatnonzero(yv >= 0)
    labels = yv[keep].astype(np.int64)
    K = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    ctrl = control_labels([types[i] for i in keep], labels, seed)
    folds = splits(len(labels), protocol, strata=labels if protocol == "cv" else None, k=k, seed=seed)
    tested = np.concatenate([te for _, te in folds])
    if len(tested) < MIN_TEST or len(np.unique(labels[tested])) < 2 or len(np.unique(ctrl[tested])) < 2:
        raise EmolensError(f"selectivity needs at least {MIN_TEST} test items with two or more classes in both tasks "
                           f"(got {len(tested)})", "use more items")
    Xk = torch.as_tensor(np.asarray(X)[:, keep], dtype=dtype)
    S = Xk.shape[0]
    correct = {"emotion": np.zeros((S, len(labels))), "control": np.zeros((S, len(labels)))}
    for tr, te in folds:
        targets = {"emotion": labels, "control": ctrl}
        fits = probes.fit_logistic_labels(Xk[:, tr], [t[tr] for t in targets.values()], C=C, n_classes=K,
                                          dtype=dtype, max_iter=max_iter)  # one preconditioner for both
        for (name, target), fit in zip(targets.items(), fits, strict=True):
            pred = probes.linear_logits(Xk[:, te], fit.coef, fit.intercept, None, dtype, None).argmax(-1).numpy()
            correct[name][:, te] = pred == target[te][None]
    ch_e, ch_c = majority_share(labels[tested]), majority_share(ctrl[tested])
    rows = []
    for s, sl in enumerate(slices):
        # per item, so that their mean is the chance-normalised accuracy and the bootstrap is paired
        norm_e = chance_normalised(correct["emotion"][s, tested], ch_e)
        norm_c = chance_normalised(correct["control"][s, tested], ch_c)
        for task, values in (("emotion/normalised", norm_e), ("control_task/normalised", norm_c),
                             ("selectivity", norm_e - norm_c)):
            ci = cluster_bootstrap(values, np.arange(len(values)), n_boot=n_boot, seed=seed)
            rows.append({"task": task, "target": "all", "site": sl[0], "layer": int(sl[1]), "position": int(sl[2]),
                         "metric": "normalised_accuracy", "value": ci.value, "ci_low": ci.low, "ci_high": ci.high,
                         "n": len(tested), "chance": 0.0})
    return pd.DataFrame(rows, columns=list(COLUMNS))
