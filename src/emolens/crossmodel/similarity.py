"""Do two models represent emotions alike? Linear CKA on shared items and RSA of emotion geometry.

Why two measures: linear CKA (Kornblith et al., 2019) compares whole item x feature matrices and
is invariant to rotations and isotropic scaling, so it asks "do the items sit in the same
configuration?" without a fitted map; RSA compares only the 13 x 13 distances between emotion
centroids, the part of the geometry the study is about, and can also be held against a non-model
space: the distances between emotions' mean human appraisal profiles.

CKA of two *unrelated* representations is not 0 at finite n (it is biased upwards, more so for
wide features), so a CKA value is read against its item-permutation null (B's items shuffled:
same features, no item correspondence) and given an item-bootstrap interval
(:func:`cka_inference`).

The RSA null is the Mantel permutation: relabel the emotions of one distance matrix (rows and
columns together) and recompute; ``p = (1 + #{null >= observed}) / (1 + n_perm)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import pdist, squareform

from emolens.stats import permutation_p

__all__ = ["appraisal_rdm", "centroid_rdm", "cka_inference", "cka_matrix", "cka_matrix_interval", "linear_cka",
           "mantel", "relative_depth_pairs"]


def _centre(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(0)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between ``x [n, d1]`` and ``y [n, d2]`` (same items in the same order)."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same items: {len(x)} vs {len(y)} rows")
    x, y = _centre(x), _centre(y)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def cka_matrix(layers_a: Sequence[np.ndarray], layers_b: Sequence[np.ndarray]) -> np.ndarray:
    """CKA of every layer of model A with every layer of model B: ``[La, Lb]``.

    Uses centred Gram matrices once per layer (``n x n``), so each pair costs one elementwise
    product instead of a ``d1 x d2`` matrix.
    """
    def gram(x):
        x = _centre(x)
        g = x @ x.T
        return g / np.linalg.norm(g)

    ga, gb = [gram(x) for x in layers_a], [gram(y) for y in layers_b]
    return np.array([[float((a * b).sum()) for b in gb] for a in ga])


def _centred_gram(g: np.ndarray) -> np.ndarray:
    return g - g.mean(0) - g.mean(1)[:, None] + g.mean()


def _gram_cka(ga: np.ndarray, gb: np.ndarray) -> float:
    """CKA from two *uncentred* linear Gram matrices of the same items."""
    a, b = _centred_gram(ga), _centred_gram(gb)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float((a * b).sum() / norm) if norm > 0 else float("nan")


def cka_inference(x: np.ndarray, y: np.ndarray, n_boot: int = 200, n_perm: int = 99, seed: int = 0) -> dict:
    """Linear CKA of ``x`` and ``y`` with a 95% item-bootstrap interval and an item-permutation null.

    The bootstrap resamples items (rows of both Gram matrices together); a resample repeats
    items, which pulls CKA up a little, so the interval is a guide to its spread, not an exact
    coverage statement. The null shuffles ``y``'s items: ``null_mean`` is the CKA two matrices
    with these shapes reach by chance, ``p = (1 + #{null >= observed}) / (1 + n_perm)``.
    """
    x, y = _centre(x), _centre(y)
    ga, gb = x @ x.T, y @ y.T
    value = _gram_cka(ga, gb)
    rng = np.random.default_rng(seed)
    n = len(x)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        boots.append(_gram_cka(ga[np.ix_(idx, idx)], gb[np.ix_(idx, idx)]))
    null = []
    for _ in range(n_perm):
        idx = rng.permutation(n)
        null.append(_gram_cka(ga, gb[np.ix_(idx, idx)]))
    lo, hi = np.quantile(boots, [0.025, 0.975]) if boots else (np.nan, np.nan)
    return {"cka": value, "cka_lo": float(lo), "cka_hi": float(hi),
            "null_mean": float(np.mean(null)) if null else float("nan"),
            "p": permutation_p(value, np.asarray(null), alternative="greater") if null else float("nan")}


def cka_matrix_interval(layers_a: Sequence[np.ndarray], layers_b: Sequence[np.ndarray], n_boot: int = 200,
                        level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item-bootstrap interval of every entry of :func:`cka_matrix`: ``(lo, hi)``, each ``[La, Lb]``.

    Why one joint bootstrap: a depth x depth heatmap is read as a whole (where is the ridge?), so
    every layer pair is resampled with the *same* items in each draw. Each draw gathers the rows
    and columns of every layer's uncentred Gram matrix once, centres and normalises them, and gets
    all ``La x Lb`` CKAs from one matrix product of the flattened Grams -- per draw about the cost
    of one pair done naively, where calling :func:`cka_inference` per pair costs ``La x Lb`` times
    that. float32 Grams: CKA is a ratio of sums of ``n²`` products, good to ~1e-6, far below the
    interval's width.
    """
    def grams(layers):
        out = []
        for x in layers:
            x = _centre(x)
            out.append((x @ x.T).astype(np.float32))
        return out

    ga, gb = grams(layers_a), grams(layers_b)
    n = len(ga[0]) if ga else 0
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(ga), len(gb)))

    def flat(gs, idx):
        rows = []
        for g in gs:
            c = _centred_gram(g[np.ix_(idx, idx)])
            norm = np.linalg.norm(c)
            rows.append((c / norm if norm > 0 else c * np.nan).ravel())
        return np.stack(rows)

    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        draws[b] = flat(ga, idx) @ flat(gb, idx).T
    if not n_boot:
        nan = np.full((len(ga), len(gb)), np.nan)
        return nan, nan.copy()
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail], axis=0)
    return lo, hi


def centroid_rdm(x: np.ndarray, labels: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """Condensed Euclidean distances between emotion centroids of standardised features.

    Features are z-scored over items first so that a few high-variance dimensions (massive
    activations) do not decide the geometry alone.
    """
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(0)
    z = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    labels = np.asarray(labels)
    centroids = np.stack([z[labels == e].mean(0) for e in emotions])
    return pdist(centroids)


def appraisal_rdm(ratings: np.ndarray, labels: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """Condensed distances between emotions' mean (z-scored) appraisal rating profiles."""
    return centroid_rdm(ratings, labels, emotions)


def mantel(rdm_a: np.ndarray, rdm_b: np.ndarray, n_perm: int = 999, seed: int = 0) -> tuple[float, float]:
    """Spearman rho between two condensed RDMs and its Mantel permutation p (one-sided, greater).

    Ranking commutes with relabelling, so every permutation only reorders B's ranks: all null
    draws are one gather and one correlation, not ``n_perm`` calls to ``spearmanr``.
    """
    ra = sps.rankdata(rdm_a)
    rb = squareform(sps.rankdata(rdm_b), checks=False)
    k = len(rb)
    rows, cols = np.triu_indices(k, 1)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(k) for _ in range(n_perm)]) if n_perm else np.zeros((0, k), int)
    draws = np.vstack([rb[rows, cols], rb[perms[:, rows], perms[:, cols]]])  # [1 + n_perm, pairs]
    a = (ra - ra.mean()) / np.linalg.norm(ra - ra.mean())
    d = draws - draws.mean(1, keepdims=True)
    rhos = d @ a / np.linalg.norm(d, axis=1)
    return float(rhos[0]), permutation_p(rhos[0], rhos[1:], alternative="greater")


def relative_depth_pairs(n_a: int, n_b: int, points: int | None = None) -> list[tuple[float, int, int]]:
    """Layers of A and B at matched relative depth ``(layer + 1) / n_layers``: (depth, layer_a, layer_b).

    One pair per layer of the shallower model (or ``points`` evenly spaced depths), B's layer
    being the nearest in relative depth.
    """
    n = points or min(n_a, n_b)
    out = []
    for i in range(n):
        depth = (i + 1) / n
        la = min(n_a - 1, max(0, round(depth * n_a) - 1))
        lb = min(n_b - 1, max(0, round(depth * n_b) - 1))
        out.append((depth, la, lb))
    return out
