"""Concept directions for steering: parse signed specs, fit per-layer directions, combine them.

Directions come from difference-of-means (default: items rated ``>= 4`` minus items rated
``<= 2`` for an appraisal, class minus rest for an emotion), probe weights (the paper) or the
first principal axis of matched high-minus-low differences. They are computed per layer from
residual activations captured here, or loaded from a store or ``directions.safetensors``.

Combinations such as ``"pleasantness+,other_responsblt-"`` are signed sums normalised to unit
norm per layer. ``partial=True`` removes the span of the "kept fixed" appraisals from each term
first (with a pseudo-inverse, stable for rank-deficient sets) -- the paper's stated intent, which
its code computed and then discarded. ``partial=False`` is what it published.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emolens.activations.store import ActivationStore
from emolens.engine.ops import Capture
from emolens.engine.runner import ConditionRunner
from emolens.errors import EmolensError, arg
from emolens.inputs.batching import iter_batches
from emolens.labels import ALL_APPRAISALS, EMOTIONS, PAPER_APPRAISALS
from emolens.probes.directions import fit_directions
from emolens.probes.evaluation import load_directions

METHODS: tuple[str, ...] = ("diffmean", "probe", "pca")
#: The four appraisals the paper's surgery holds fixed against each other (paper-protocol §7.3).
SURGERY_APPRAISALS: tuple[str, ...] = ("pleasantness", "other_responsblt", "predict_event", "chance_control")

_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([+-]?)\s*$")


@dataclass(frozen=True)
class Term:
    """One named concept in a direction spec, with its sign (+1 or -1)."""

    name: str
    sign: float


def parse_direction(spec: str, known: Iterable[str]) -> tuple[Term, ...]:
    """``"pleasantness+,other_responsblt-"`` -> terms; a bare name means ``+``.

    ``known`` is every concept name allowed (appraisals and emotions); anything else, a repeated
    name or a malformed term is an :class:`EmolensError`.
    """
    known = list(known)
    terms: list[Term] = []
    if not spec or not spec.strip():
        raise EmolensError("empty steering direction", "write e.g. pleasantness+ or pleasantness+,other_responsblt-")
    for part in spec.split(","):
        m = _TERM.match(part)
        if not m:
            raise EmolensError(f"bad direction term {part.strip()!r} in {spec!r}",
                               "write each term as a name followed by + or -, e.g. pleasantness+")
        name, sign = m.group(1), m.group(2)
        if name not in known:
            raise EmolensError(f"unknown appraisal or emotion {name!r} in direction {spec!r}",
                               f"use one of {known}")
        if any(t.name == name for t in terms):
            raise EmolensError(f"{name!r} appears twice in direction {spec!r}", "name each concept once")
        terms.append(Term(name, -1.0 if sign == "-" else 1.0))
    return tuple(terms)


def format_terms(terms: Sequence[Term]) -> str:
    """The canonical spec string of a list of terms."""
    return ",".join(f"{t.name}{'+' if t.sign > 0 else '-'}" for t in terms)


def capture_resid(lm, prompts, layers: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """Residual stream at the answer cue (position -1) for each prompt: ``[N, len(layers), d]`` float32.

    A clean read of the engine's runner: the template's shared tokens run once, each prompt's own
    tokens per batch (:meth:`~emolens.engine.runner.ConditionRunner.share_prefix`)."""
    out = torch.zeros(len(prompts), len(layers), lm.sites.d_model)
    op = Capture("resid", layers=list(layers), positions=-1, dtype=torch.float32, device="cpu")
    runner = ConditionRunner(lm, None)
    runner.share_prefix(prompts)
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        out[torch.as_tensor(batch.indices)] = runner.read(batch, [op]).captures["resid"][:, :, 0]
    return out


@dataclass
class ConceptBank:
    """Raw per-layer directions of named concepts: ``vectors[layer_idx, concept_idx, d]``.

    Raw (not unit) so that partialling and combining see the directions as estimated; steering
    normalises at the end.
    """

    layers: list[int]
    names: list[str]
    vectors: torch.Tensor
    method: str
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.vectors.shape[:2]) != (len(self.layers), len(self.names)):
            raise EmolensError(f"direction tensor of shape {tuple(self.vectors.shape)} does not match "
                               f"{len(self.layers)} layers x {len(self.names)} concepts")

    def get(self, name: str, layers: Sequence[int] | None = None) -> torch.Tensor:
        """One concept's raw vectors at ``layers`` (default all): ``[L, d]``."""
        if name not in self.names:
            raise EmolensError(f"no direction for {name!r} (method {self.method})", f"available: {self.names}")
        # the concept first, then the layers: indexing layers first copied every concept's vectors
        # (a sweep's bank holds hundreds of null refits), once per call, thousands of calls per sweep
        one = self.vectors[:, self.names.index(name)]
        if layers is None:
            return one
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise EmolensError(f"directions were computed for layers {self.layers}, not {missing}",
                               "compute or load directions for every layer of the windows")
        return one[[self.layers.index(layer) for layer in layers]]

    def is_defined(self, name: str) -> bool:
        """Whether the concept has a finite, non-zero direction at every layer of the bank."""
        v = self.get(name)
        return bool(torch.isfinite(v).all()) and not bool((v.norm(dim=-1) == 0).any())

    def check_defined(self, names: Iterable[str]) -> None:
        for name in names:
            if not self.is_defined(name):
                raise EmolensError(f"the {self.method} direction of {name!r} is undefined at some layer",
                                   "it needs items on both sides (rated >= 4 and <= 2, or in and out of the "
                                   "class); use more data or another concept")


def _ratings_and_labels(dataset, appraisals: Sequence[str], emotions: Sequence[str]):
    """Ratings ``[N, A]`` on crowd-enVENT's 1-5 scale, and label ids.

    A binary column (a corpus that codes an appraisal as 0/1) is put on the 1-5 scale (0 -> 1,
    1 -> 5), so the high/low thresholds split it into its two groups instead of leaving one side empty.
    """
    R = np.stack([dataset.appraisal(a) for a in appraisals], 1) if appraisals else np.zeros((len(dataset), 0))
    for j in range(R.shape[1]):
        values = R[:, j][np.isfinite(R[:, j])]
        if len(values) and np.isin(values, (0.0, 1.0)).all():
            R[:, j] = np.where(np.isfinite(R[:, j]), 1 + 4 * R[:, j], np.nan)
    index = {e: i for i, e in enumerate(emotions)}
    y = np.array([index.get(lab, -1) if lab is not None else -1 for lab in dataset.labels])
    return R.astype(np.float64), y


def diffmean_directions(X: torch.Tensor, ratings: np.ndarray | None = None, labels: np.ndarray | None = None,
                        n_classes: int = len(EMOTIONS), high: float = 4, low: float = 2) -> torch.Tensor:
    """Difference-of-means directions ``[L, A + K, d]`` from activations ``X[N, L, d]``.

    Appraisal ``a``: mean over items rated ``>= high`` minus mean over items rated ``<= low``;
    emotion ``k``: mean of class ``k`` minus mean of the rest. Missing ratings and labels follow
    :mod:`emolens.probes.directions` (the item is left out of that concept only; an empty side
    gives NaN, never a silent zero).
    """
    return _directions(X, ratings, labels, "diffmean", n_classes=n_classes, high=high, low=low)


def probe_directions(X: torch.Tensor, ratings: np.ndarray | None = None, labels: np.ndarray | None = None,
                     n_classes: int = len(EMOTIONS), alpha: float = 5.0, C: float = 1.0,
                     max_iter: int = 1000) -> torch.Tensor:
    """Probe-weight directions ``[L, A + K, d]`` (the paper): ridge per appraisal, logistic per emotion.

    Each appraisal's ridge is fitted on the items that rate it, the logistic on labelled items
    (:mod:`emolens.probes.directions`) with at most ``max_iter`` L-BFGS iterations: a study passes its
    probe section's cap (the paper's sklearn default is 100), so its steering directions are the
    probes it reports; on a fit split smaller than the width the classes separate and the solve
    would otherwise run the whole budget without converging.
    """
    return _directions(X, ratings, labels, "probe", n_classes=n_classes, alpha=alpha, C=C, max_iter=max_iter)


def _directions(X: torch.Tensor, ratings, labels, method: str, **options) -> torch.Tensor:
    """``[L, A + K, d]`` from the shared fitter, appraisals first."""
    ratings = ratings if ratings is not None and ratings.shape[1] else None
    got = fit_directions(X.permute(1, 0, 2).contiguous(), labels, ratings, methods=(method,), **options)
    return torch.cat([got[k] for k in (f"appraisal/{method}", f"emotion/{method}") if k in got], 1).float()


def pca_directions(X: torch.Tensor, ratings: np.ndarray, high: float = 4, low: float = 2,
                   pairs: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None, seed: int = 0) -> torch.Tensor:
    """First principal axis of matched high-minus-low differences, per appraisal: ``[L, A, d]``.

    Items rated ``>= high`` are matched one-to-one with items rated ``<= low`` (a seeded random
    matching, or the given ``pairs[j] = (high_idx, low_idx)``, e.g. minimal pairs). The axis is
    the top right-singular vector of the *uncentred* difference matrix -- the direction that
    best explains the paired differences, mean shift included -- with its sign fixed so it
    points along the mean difference, and scaled to the mean difference's length along it.
    """
    L, _, d = X.shape[1], X.shape[0], X.shape[2]
    out = torch.full((L, ratings.shape[1], d), float("nan"))
    rng = np.random.default_rng(seed)
    for j in range(ratings.shape[1]):
        if pairs is not None and j in pairs:
            hi, lo = (np.asarray(p) for p in pairs[j])
        else:
            hi, lo = np.flatnonzero(ratings[:, j] >= high), np.flatnonzero(ratings[:, j] <= low)
            k = min(len(hi), len(lo))
            hi, lo = rng.permutation(hi)[:k], rng.permutation(lo)[:k]
        if len(hi) == 0:
            continue
        D = (X[hi] - X[lo]).permute(1, 0, 2).double()  # [L, P, d]
        _, _, Vh = torch.linalg.svd(D, full_matrices=False)
        axis = Vh[:, 0]  # [L, d]
        mean = D.mean(1)
        proj = (axis * mean).sum(-1, keepdim=True)
        sign = torch.where(proj < 0, -1.0, 1.0).to(axis)
        out[:, j] = (axis * sign * proj.abs()).float()
    return out


def compute_bank(X: torch.Tensor, layers: Sequence[int], dataset, method: str = "diffmean",
                 appraisals: Sequence[str] | None = None, emotions: Sequence[str] = EMOTIONS,
                 high: float = 4, low: float = 2, seed: int = 0, max_iter: int = 1000) -> ConceptBank:
    """Directions of every appraisal in ``appraisals`` (default: the dataset's) and every emotion
    (``max_iter``: the emotion probes' iteration cap, :func:`probe_directions`)."""
    if method not in METHODS:
        raise EmolensError(f"unknown direction method {method!r}", f"use one of {list(METHODS)}")
    appraisals = list(appraisals if appraisals is not None else dataset.appraisal_names)
    R, y = _ratings_and_labels(dataset, appraisals, emotions)
    has_labels = bool((y >= 0).any())
    if method == "diffmean":
        V = diffmean_directions(X, R, y if has_labels else None, len(emotions), high, low)
    elif method == "probe":
        V = probe_directions(X, R, y if has_labels else None, len(emotions), max_iter=max_iter)
    else:  # pca: appraisals from paired differences; emotions fall back to diff-of-means
        V = pca_directions(X, R, high, low, seed=seed)
        if has_labels:
            V = torch.cat([V, diffmean_directions(X, None, y, len(emotions))], 1)
    names = appraisals + (list(emotions) if has_labels else [])
    return ConceptBank(list(layers), names, V, method, {"n_items": len(dataset), "high": high, "low": low})


def bank_from_store(store_dir: str | Path, dataset, layers: Sequence[int], method: str = "diffmean",
                    appraisals: Sequence[str] | None = None, seed: int = 0, max_iter: int = 1000) -> ConceptBank:
    """Directions from an :class:`~emolens.activations.store.ActivationStore` (site ``resid``, position -1)."""
    return compute_bank(store_resid(store_dir, dataset, layers), layers, dataset, method, appraisals, seed=seed,
                        max_iter=max_iter)


def store_resid(store: str | Path | ActivationStore, dataset, layers: Sequence[int]) -> torch.Tensor:
    """``dataset``'s residual stream at the answer cue from an activation store (a folder, or one already
    open): ``[N, len(layers), d]`` float32, what :func:`capture_resid` computes on the prompts the store
    was extracted with."""
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    if -1 not in store.positions:
        raise EmolensError(f"store {str(store.root)!r} has no position -1", "extract with positions -1")
    stored = store.layers_of("resid") if "resid" in store.sites else []
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        raise EmolensError(f"store {str(store.root)!r} lacks resid layers {missing}", "extract those layers")
    arr = store.read("resid")
    rows = store.index_of(dataset.ids)
    p = store.positions.index(-1)
    return torch.from_numpy(np.stack([np.asarray(arr[rows, stored.index(layer), p], dtype=np.float32)
                                      for layer in layers], 1))


def store_acts(store_dir: str | Path, spec) -> Callable[[object, Sequence[int]], torch.Tensor | None] | None:
    """``acts(items, layers)`` for :func:`~emolens.steering.sweep.sweep`: items' residuals at the cue read
    from an activation store, or ``None`` when ``store_dir`` is not a store extracted with ``spec``'s
    prompt (its vectors would not be the ones the sweep captures). ``acts`` gives ``None`` for items
    or layers the store lacks, and the sweep captures them."""
    try:
        store = ActivationStore.open(store_dir)
    except EmolensError:
        return None
    if store.identity.get("prompt_fingerprint") != spec.fingerprint():
        return None

    def acts(items, layers: Sequence[int]) -> torch.Tensor | None:
        try:
            return store_resid(store, items, layers)  # opened (and checked) once above
        except EmolensError:
            return None

    return acts


def bank_from_file(path: str | Path, method: str = "diffmean") -> ConceptBank:
    """Directions saved by :func:`emolens.probes.evaluation.save_directions` (keys ``appraisal/<method>``...)
    or by ``emolens steer`` (key ``bank/<method>``), so a steering run's directions can be reused.

    Uses the metadata ``slices`` (``[site, layer, position]`` per slice; resid at -1 is kept) and
    ``appraisals``/``emotions`` name lists when present, else the paper's orders.
    """

    dirs, meta = load_directions(path)
    if f"bank/{method}" in dirs:  # written by `emolens steer`: layers and names in the metadata
        return ConceptBank([int(x) for x in json.loads(meta["layers"])], list(json.loads(meta["names"])),
                           dirs[f"bank/{method}"].float(), method, {"file": str(path)})
    key = {"diffmean": "diffmean", "probe": "probe"}.get(method)
    if key is None:
        raise EmolensError(f"method {method!r} cannot be loaded from a directions file", "use diffmean or probe")
    S = next(iter(dirs.values())).shape[0] if dirs else 0
    slices = json.loads(meta["slices"]) if "slices" in meta else [["resid", i, -1] for i in range(S)]
    keep = [i for i, s in enumerate(slices) if s[0] == "resid" and s[2] == -1]
    layers = [int(slices[i][1]) for i in keep]
    names, parts = [], []
    if f"appraisal/{key}" in dirs:
        V = dirs[f"appraisal/{key}"][keep]
        default = PAPER_APPRAISALS if V.shape[1] == len(PAPER_APPRAISALS) else ALL_APPRAISALS
        names += list(json.loads(meta["appraisals"])) if "appraisals" in meta else list(default)
        parts.append(V)
    if f"emotion/{key}" in dirs:
        V = dirs[f"emotion/{key}"][keep]
        names += list(json.loads(meta["emotions"])) if "emotions" in meta else list(EMOTIONS)
        parts.append(V)
    if not parts or not layers:
        raise EmolensError(f"{str(path)!r} holds no resid/-1 {method} directions", "save them with save_directions")
    return ConceptBank(layers, names, torch.cat(parts, 1).float(), method, {"file": str(path)})


def project_out(v: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Remove from ``v[..., d]`` its component in the row span of ``span[..., k, d]``.

    Uses the pseudo-inverse (``P = pinv(W) W``), so a rank-deficient set -- e.g. multinomial
    logistic weights, which sum to about zero -- is handled instead of inverting a singular
    ``W Wᵀ`` as the paper's ``make_projections`` does.
    """
    if span.shape[-2] == 0:
        return v
    W = span.double()
    coeff = torch.einsum("...kd,...d->...k", torch.linalg.pinv(W).transpose(-1, -2), v.double())
    return (v.double() - torch.einsum("...k,...kd->...d", coeff, W)).to(v.dtype)


def combine(bank: ConceptBank, terms: Sequence[Term], layers: Sequence[int], partial: bool = False,
            fixed: Sequence[str] | None = None) -> torch.Tensor:
    """Unit direction ``[L, d]`` of a signed combination at ``layers``.

    ``partial=False`` (the paper): normalise ``Σ sign·w``. ``partial=True``: first project each
    ``w`` off the span of the ``fixed`` concepts (default: the paper's four surgery appraisals not
    in the combination), so steering one appraisal does not move the ones held fixed.
    """
    names = [t.name for t in terms]
    total = torch.zeros(len(layers), bank.vectors.shape[-1], dtype=torch.float64)
    fixed_names = default_fixed(terms, bank.names) if fixed is None else [f for f in fixed if f not in names]
    span = torch.stack([bank.get(f, layers) for f in fixed_names], 1) if (partial and fixed_names) else None
    for t in terms:
        w = bank.get(t.name, layers).double()
        if span is not None:
            w = project_out(w, span.double())
        total += t.sign * w
    norm = total.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-12).any()) or not bool(torch.isfinite(norm).all()):
        raise EmolensError(f"direction {format_terms(terms)!r} is zero or undefined at some layer",
                           f"it cancels out or lies inside the span held fixed; change the terms or {arg('fixed')}")
    return (total / norm).float()


def default_fixed(terms: Sequence[Term], available: Sequence[str]) -> list[str]:
    """The paper's surgery appraisals that are not steered and that the bank knows."""
    names = {t.name for t in terms}
    return [a for a in SURGERY_APPRAISALS if a not in names and a in available]


def random_unit(n_layers_total: int, d: int, seed: int) -> torch.Tensor:
    """Seeded Gaussian unit vectors ``[n_layers_total, d]``, one per model layer.

    Indexed by absolute layer, so a layer's random direction is the same in every window that
    contains it (and never re-drawn per window, unlike the paper's loop).
    """
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(n_layers_total, d, generator=g, dtype=torch.float64)
    return (v / v.norm(dim=-1, keepdim=True)).float()


