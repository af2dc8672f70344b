"""Steering the residual stream along appraisal and emotion directions, with controls.

Tak et al. add ``β · w/‖w‖`` (a probe weight, unit-normalised) to the residual stream at the last
token of three consecutive layers and read which emotion wins (paper-protocol §7). This module
does the same with stock hooks, and fixes or extends what the paper left open (§10.4):

* **Directions** come from difference-of-means (default: items rated ``>= 4`` minus items rated
  ``<= 2`` for an appraisal, class minus rest for an emotion), probe weights (the paper) or the
  first principal axis of matched high-minus-low differences. They are computed per layer from
  residual activations captured here, or loaded from a store or ``directions.safetensors``.
* **Combinations** such as ``"pleasantness+,other_responsblt-"`` are signed sums normalised to
  unit norm per layer. ``partial=True`` removes the span of the "kept fixed" appraisals from each
  term first (with a pseudo-inverse, stable for rank-deficient sets) -- the paper's stated
  intent, which its code computed and then discarded. ``partial=False`` is what it published.
* **Scale** is ``β`` in raw units (``scale="unit"``, the paper) or ``β`` times the mean residual
  norm at that layer over the steered positions, first-token sink excluded
  (``scale="relative"``), so one β means the same push across layers and models.
* **Held-out fit**: by default the directions are fitted on a seeded, label-stratified part of
  the items and steering is measured on the rest (:func:`fit_split`; ``holdout=0`` is the
  paper's fit-and-steer-everything), and the table's ``fit`` column says which.
* **Sweeps** stack many conditions into one forward by repeating items, always include the clean
  run in the same batch (so the baseline shares every kernel and padding choice), and add
  controls to every sweep: 19 norm-matched random directions (so the permutation p-value can
  reach 0.05) and a specificity control (another appraisal's direction at the same norm).
  Steering the answer cue only cannot change an earlier position, so those conditions share one
  key/value prefix per item batch and run just the cue token (:func:`fast_label_scores`).
* **Steered generation** continues an event description under steering, reads the continuation's
  emotion with the model's own label scoring, and flags degenerate text by its log-probability
  under the unsteered model and by repetition and symbol signals, each also against the clean
  continuation of the same prompt (:func:`fluency_flags`).

Layers are 0-indexed; a window is named by its centre layer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from emolens.engine.intervention import Add, Apply, Capture, Intervention, run_forward
from emolens.engine.prefix import bytes_per_row as _bytes_per_row
from emolens.engine.prefix import prefix_cache as _prefix_cache
from emolens.engine.prefix import suffix_inputs, tile_cache
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch, iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS, PAPER_APPRAISALS
from emolens.metrics import wilson_interval
from emolens.readout import LabelReader

METHODS: tuple[str, ...] = ("diffmean", "probe", "pca")
SCALES: tuple[str, ...] = ("unit", "relative")
POSITIONS: tuple[str, ...] = ("last", "prompt", "generated")
#: The four appraisals the paper's surgery holds fixed against each other (paper-protocol §7.3).
SURGERY_APPRAISALS: tuple[str, ...] = ("pleasantness", "other_responsblt", "predict_event", "chance_control")
#: Candidates for the specificity control, in order: appraisals not central to the paper's surgery.
CONTROL_CANDIDATES: tuple[str, ...] = ("familiarity", "suddenness", "attention", "effort", "goal_relevance")
#: Columns of the steering table, in order.
COLUMNS: tuple[str, ...] = ("direction", "kind", "method", "partial", "scale", "fit", "window", "layers", "beta",
                            "position", "metric", "label", "value", "ci_low", "ci_high", "n")
#: Default number of norm-matched random directions: with 19, the permutation p-value of the theory
#: alignment can reach 1 / 20 = 0.05.
N_RANDOM = 19

_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([+-]?)\s*$")


# ----------------------------------------------------------------------------------------------
# direction specs


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


def window_layers(centre: int, span: int, n_layers: int) -> list[int]:
    """The ``span`` consecutive layers around ``centre`` (an even span leans left); must fit the model."""
    if span < 1:
        raise EmolensError(f"span {span} is not positive", "use --span 1 or more")
    start = centre - (span - 1) // 2
    layers = list(range(start, start + span))
    if layers[0] < 0 or layers[-1] >= n_layers:
        lo, hi = (span - 1) // 2, n_layers - 1 - span // 2
        raise EmolensError(f"window centred on layer {centre} with span {span} falls outside the model's "
                           f"{n_layers} layers", f"use centres {lo}..{hi} (0-indexed)" if lo <= hi
                           else "use a smaller --span")
    return layers


def parse_windows(text: str | Sequence[int], span: int, n_layers: int) -> list[int]:
    """Window centres from ``"3,5,8"`` or ``"auto"`` (every valid centre, at most 8, evenly spread)."""
    lo, hi = (span - 1) // 2, n_layers - 1 - span // 2
    if isinstance(text, str) and text.strip().lower() == "auto":
        if lo > hi:
            raise EmolensError(f"span {span} is wider than the model's {n_layers} layers", "use a smaller --span")
        valid = list(range(lo, hi + 1))
        if len(valid) > 8:
            valid = sorted({valid[round(i)] for i in np.linspace(0, len(valid) - 1, 8)})
        return valid
    if isinstance(text, str):
        try:
            centres = [int(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise EmolensError(f"bad windows {text!r}", "write centre layers like 3,5,8 or auto") from exc
    else:
        centres = [int(x) for x in text]
    if not centres:
        raise EmolensError("no windows given", "write centre layers like 3,5,8 or auto")
    for c in centres:
        window_layers(c, span, n_layers)
    return sorted(set(centres))


# ----------------------------------------------------------------------------------------------
# activations and concept directions


def capture_resid(lm, prompts, layers: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """Residual stream at the answer cue (position -1) for each prompt: ``[N, len(layers), d]`` float32."""
    out = torch.zeros(len(prompts), len(layers), lm.sites.d_model)
    op = Capture("resid", layers=list(layers), positions=-1, dtype=torch.float32, device="cpu")
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        _, run = run_forward(lm, batch, [op], need_logits=False)
        out[torch.as_tensor(batch.indices)] = run.captures["resid"][:, :, 0]
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
        return self._rows(layers)[:, self.names.index(name)]

    def _rows(self, layers: Sequence[int] | None) -> torch.Tensor:
        if layers is None:
            return self.vectors
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise EmolensError(f"directions were computed for layers {self.layers}, not {missing}",
                               "compute or load directions for every layer of the windows")
        return self.vectors[[self.layers.index(layer) for layer in layers]]

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
    R = np.stack([dataset.appraisal(a) for a in appraisals], 1) if appraisals else np.zeros((len(dataset), 0))
    index = {e: i for i, e in enumerate(emotions)}
    y = np.array([index.get(lab, -1) if lab is not None else -1 for lab in dataset.labels])
    return R.astype(np.float64), y


def diffmean_directions(X: torch.Tensor, ratings: np.ndarray | None = None, labels: np.ndarray | None = None,
                        n_classes: int = len(EMOTIONS), high: float = 4, low: float = 2) -> torch.Tensor:
    """Difference-of-means directions ``[L, A + K, d]`` from activations ``X[N, L, d]``.

    Appraisal ``a``: mean over items rated ``>= high`` minus mean over items rated ``<= low``
    (NaN ratings fall on neither side). Emotion ``k``: mean of class ``k`` minus mean of the rest
    (items without a label on neither side). An empty side gives NaN, never a silent zero.
    """
    from emolens.probes.evaluation import class_diffmeans

    Xs = X.permute(1, 0, 2).double()  # [L, N, d]
    parts = []
    if ratings is not None and ratings.shape[1]:
        T = torch.as_tensor(ratings, dtype=torch.float64)
        parts.append(class_diffmeans(Xs, torch.ge(T, high).long(), torch.le(T, low).long()))
    if labels is not None:
        y = torch.as_tensor(labels)
        member = torch.nn.functional.one_hot(y.clamp_min(0), n_classes) * (y >= 0)[:, None]
        other = (1 - member) * (y >= 0)[:, None]
        parts.append(class_diffmeans(Xs, member, other))
    return torch.cat(parts, 1).float()


def probe_directions(X: torch.Tensor, ratings: np.ndarray | None = None, labels: np.ndarray | None = None,
                     n_classes: int = len(EMOTIONS), alpha: float = 5.0, C: float = 1.0) -> torch.Tensor:
    """Probe-weight directions ``[L, A + K, d]`` (the paper): ridge per appraisal, logistic per emotion.

    Each appraisal's ridge is fitted on the items that rate it; the logistic on labelled items.
    """
    from emolens.probes import estimators as probes

    Xs = X.permute(1, 0, 2).contiguous()
    parts = []
    if ratings is not None and ratings.shape[1]:
        cols = []
        for j in range(ratings.shape[1]):
            keep = np.isfinite(ratings[:, j])
            if keep.sum() < 3:
                cols.append(torch.full((Xs.shape[0], 1, Xs.shape[2]), float("nan")))
                continue
            fit = probes.fit_ridge(Xs[:, keep], ratings[keep, j:j + 1], alpha=alpha)
            cols.append(fit.coef.reshape(Xs.shape[0], 1, -1).float())
        parts.append(torch.cat(cols, 1))
    if labels is not None:
        keep = labels >= 0
        fit = probes.fit_logistic(Xs[:, keep], labels[keep], C=C, n_classes=n_classes)
        parts.append(fit.coef.float())
    return torch.cat(parts, 1)


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
                 high: float = 4, low: float = 2, seed: int = 0) -> ConceptBank:
    """Directions of every appraisal in ``appraisals`` (default: the dataset's) and every emotion."""
    if method not in METHODS:
        raise EmolensError(f"unknown direction method {method!r}", f"use one of {list(METHODS)}")
    appraisals = list(appraisals if appraisals is not None else dataset.appraisal_names)
    R, y = _ratings_and_labels(dataset, appraisals, emotions)
    has_labels = bool((y >= 0).any())
    if method == "diffmean":
        V = diffmean_directions(X, R, y if has_labels else None, len(emotions), high, low)
    elif method == "probe":
        V = probe_directions(X, R, y if has_labels else None, len(emotions))
    else:  # pca: appraisals from paired differences; emotions fall back to diff-of-means
        V = pca_directions(X, R, high, low, seed=seed)
        if has_labels:
            V = torch.cat([V, diffmean_directions(X, None, y, len(emotions))], 1)
    names = appraisals + (list(emotions) if has_labels else [])
    return ConceptBank(list(layers), names, V, method, {"n_items": len(dataset), "high": high, "low": low})


def bank_from_store(store_dir: str | Path, dataset, layers: Sequence[int], method: str = "diffmean",
                    appraisals: Sequence[str] | None = None, seed: int = 0) -> ConceptBank:
    """Directions from an :class:`~emolens.activations.store.ActivationStore` (site ``resid``, position -1)."""
    from emolens.activations.store import ActivationStore

    store = ActivationStore.open(store_dir)
    if -1 not in store.positions:
        raise EmolensError(f"store {str(store_dir)!r} has no position -1", "extract with positions -1")
    stored = store.layers_of("resid") if "resid" in store.sites else []
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        raise EmolensError(f"store {str(store_dir)!r} lacks resid layers {missing}", "extract those layers")
    arr = store.read("resid")
    rows = store.index_of(dataset.ids)
    p = store.positions.index(-1)
    X = torch.from_numpy(np.stack([np.asarray(arr[rows, stored.index(layer), p], dtype=np.float32)
                                   for layer in layers], 1))
    return compute_bank(X, layers, dataset, method, appraisals, seed=seed)


def bank_from_file(path: str | Path, method: str = "diffmean") -> ConceptBank:
    """Directions saved by :func:`emolens.probes.evaluation.save_directions` (keys ``appraisal/<method>``...)
    or by ``emolens steer`` (key ``bank/<method>``), so a steering run's directions can be reused.

    Uses the metadata ``slices`` (``[site, layer, position]`` per slice; resid at -1 is kept) and
    ``appraisals``/``emotions`` name lists when present, else the paper's orders.
    """
    from emolens.labels import ALL_APPRAISALS
    from emolens.probes.evaluation import load_directions

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


# ----------------------------------------------------------------------------------------------
# combining, partialling, scaling


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
                           "it cancels out or lies inside the span held fixed; change the terms or --fixed")
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


def position_mask(attention_mask: torch.Tensor, position: str) -> torch.Tensor:
    """Steered prompt positions ``[B, T]``: ``last`` = the answer cue; ``prompt`` = every real
    token but the first (the attention sink, which steering would wreck rather than steer);
    ``generated`` = the answer cue (the generated tokens follow during ``generate()``).
    """
    if position not in POSITIONS:
        raise EmolensError(f"unknown steering position {position!r}", f"use one of {list(POSITIONS)}")
    from emolens.engine.intervention import row_bounds

    m = attention_mask.bool()
    first, last = row_bounds(m)
    rows = torch.arange(m.shape[0], device=m.device)
    out = torch.zeros_like(m)
    if position == "prompt":
        out = m.clone()
        out[rows, first] = False
    else:
        out[rows, last] = True
    return out


@torch.no_grad()
def mean_resid_norm(lm, prompts, layers: Sequence[int], position: str = "last", batch_size: int = 16
                    ) -> torch.Tensor:
    """Mean ‖resid‖ at each layer over the steered positions (``generated``: the prompt's), sink excluded.

    The reference for ``scale="relative"``: β = 1 adds a vector as long as a typical residual
    vector at that layer and position.
    """
    where = "prompt" if position == "generated" else position
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        sel = position_mask(batch.attention_mask, where)
        norms: dict[int, torch.Tensor] = {}

        def record(x, layer, norms=norms):
            norms[layer] = x.detach().float().norm(dim=-1)
            return x

        ops = [Apply("resid", layers=[layer], positions="all", fn=lambda x, layer=layer: record(x, layer))
               for layer in layers]
        run_forward(lm, batch, ops, need_logits=False)
        for i, layer in enumerate(layers):
            sums[i] += float(norms[layer][sel.to(norms[layer].device)].double().sum())
        count += int(sel.sum())
    return (sums / max(count, 1)).float()


def scaled(unit: torch.Tensor, beta: float, scale: str = "unit", ref_norm: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``β · u`` (``unit``) or ``β · ref_norm[layer] · u`` (``relative``) for unit vectors ``u[L, d]``."""
    if scale == "unit":
        return unit * float(beta)
    if scale == "relative":
        if ref_norm is None:
            raise EmolensError("relative scale needs the reference residual norms", "pass ref_norm")
        return unit * float(beta) * ref_norm.to(unit)[:, None]
    raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")


# ----------------------------------------------------------------------------------------------
# steering primitives


def steering_op(layers: Sequence[int], value: torch.Tensor, positions: torch.Tensor | str,
                every_token: bool = False) -> Add:
    """The one op steering needs: add ``value`` (``[L, d]`` or ``[B, L, d]``) to resid at ``layers``."""
    dims = "bl" if value.ndim == 3 else ("l" if value.ndim == 2 else None)
    return Add("resid", layers=list(layers), positions=positions, value=value, dims=dims,
               every_token=every_token)


@torch.no_grad()
def steered_label_scores(lm, reader: LabelReader, batch: Batch, layers: Sequence[int] | None = None,
                         value: torch.Tensor | None = None, pos_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Label log-probabilities ``[B, K]`` with ``value`` added at ``pos_mask`` (no steering when None).

    Multi-token labels are scored by teacher forcing with the same steering at the same prompt
    positions (the mask is padded with False over the label tokens).
    """
    model = lm.model
    inputs = batch.model_inputs()

    def forward(ids, mask, pos, keep, pmask):
        if value is None:
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep)
        with Intervention(lm, [steering_op(layers, value, pmask)], batch_mask=mask):
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep)

    out = forward(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], 1, pos_mask)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    scores = logp[:, torch.tensor([t[0] for t in reader.token_ids], device=logp.device)]
    if reader.single_token:
        return scores
    n_rows = len(batch)
    for k, ids in enumerate(reader.token_ids):
        if len(ids) == 1:
            continue
        extra = torch.tensor(ids, device=batch.input_ids.device).expand(n_rows, -1)
        ids2 = torch.cat([inputs["input_ids"], extra], 1)
        mask2 = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], 1)
        pos2 = torch.cat([inputs["position_ids"], inputs["position_ids"][:, -1:]
                          + torch.arange(1, len(ids) + 1, device=extra.device)], 1)
        pmask2 = None if pos_mask is None else torch.cat([pos_mask, torch.zeros_like(extra, dtype=torch.bool)], 1)
        out2 = forward(ids2, mask2, pos2, len(ids) + 1, pmask2)
        lp = torch.log_softmax(out2.logits[:, :-1].float(), dim=-1)
        scores[:, k] = lp.gather(-1, extra.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores


def _repeat(batch: Batch, times: int) -> Batch:
    """The batch stacked ``times`` over (condition-major rows: row = c * B + i)."""
    return Batch(batch.input_ids.repeat(times, 1), batch.attention_mask.repeat(times, 1),
                 batch.position_ids.repeat(times, 1), {}, None)


# ----------------------------------------------------------------------------------------------
# the last-token fast path


def prefix_cache(lm, batch: Batch):
    """The clean key/value cache of every column but the last (``None`` where the fast path cannot run).

    Steering only the answer cue cannot change any earlier position of a causal model, so this
    cache is shared by every (direction, window, β) condition of a batch: each then runs the one
    cue token on a copy of it (:func:`fast_label_scores`). See :mod:`emolens.engine.prefix`.
    """
    return _prefix_cache(lm, batch, 1)  # None already where the cache cannot be copied safely


@torch.no_grad()
def fast_label_scores(lm, reader: LabelReader, batch: Batch, prefix, times: int = 1,
                      layers: Sequence[int] | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
    """Label log-probabilities ``[times * B, K]`` of ``batch`` stacked ``times`` over (condition-major),
    steering the answer cue only, from the shared ``prefix`` cache of :func:`prefix_cache`.

    The same numbers as :func:`steered_label_scores` with ``position_mask(..., "last")`` on the
    repeated batch (up to float rounding): one token per row runs instead of the whole prompt.
    ``value`` is ``[times * B, L, d]`` (or ``[L, d]``); multi-token labels continue each row's
    steered cache with the label's tokens, unsteered, as the full path does.
    """
    kwargs = suffix_inputs(batch, prefix, 1, times)
    ids, mask, pos, cache = kwargs["input_ids"], kwargs["attention_mask"], kwargs["position_ids"], kwargs["cache"]
    if value is None:
        out = lm.model(**kwargs, logits_to_keep=1)
    else:
        with Intervention(lm, [steering_op(layers, value, "generated")]):  # the one new token: the cue
            out = lm.model(**kwargs, logits_to_keep=1)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    scores = logp[:, torch.tensor([t[0] for t in reader.token_ids], device=logp.device)]
    for k, toks in enumerate(reader.token_ids):
        if len(toks) == 1:
            continue
        extra = torch.tensor(toks[:-1], device=ids.device).expand(ids.shape[0], -1)
        out2 = lm.model(input_ids=extra, attention_mask=torch.cat([mask, torch.ones_like(extra)], 1),
                        position_ids=pos + torch.arange(1, len(toks), device=ids.device), cache=tile_cache(cache, 1),
                        use_cache=True)
        rest = torch.log_softmax(out2.logits.float(), dim=-1)
        target = torch.tensor(toks[1:], device=ids.device).expand(ids.shape[0], -1)
        scores[:, k] = scores[:, k] + rest.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores


# ----------------------------------------------------------------------------------------------
# conditions and sweeps


@dataclass
class Condition:
    """One steering setting: which vector, where, how strong."""

    direction: str
    kind: str  # real | random | specificity
    window: int
    layers: tuple[int, ...]
    beta: float
    position: str
    vector: torch.Tensor  # [L, d], already scaled


def success_score(p0: np.ndarray | float, p1: np.ndarray | float) -> np.ndarray:
    """The paper's promotion success score: ``Δ/(1-p0)`` if ``Δ > 0``, ``Δ/p0`` if ``Δ < 0``, else 0."""
    p0, p1 = np.asarray(p0, dtype=float), np.asarray(p1, dtype=float)
    delta = p1 - p0
    up = np.divide(delta, 1 - p0, out=np.zeros_like(delta), where=(delta > 0) & (p0 < 1))
    down = np.divide(delta, p0, out=np.zeros_like(delta), where=(delta < 0) & (p0 > 0))
    return np.where(delta > 0, up, np.where(delta < 0, down, 0.0))


def _norm_ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = x.shape[0]
    mean = x.mean(0)
    se = x.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, np.nan)
    return mean, mean - 1.96 * se, mean + 1.96 * se


def outcome_rows(clean: np.ndarray, steered: np.ndarray, labels: Sequence[str], n_boot: int = 200,
                 seed: int = 0) -> list[dict]:
    """Metrics of one condition from label scores ``[N, K]`` (clean and steered, same items).

    ``fraction`` (share of items whose argmax is the label, Wilson CI), ``success`` (the paper's
    score for promoting that label, bootstrap CI over items), ``delta_logp`` (mean change of the
    label's log-probability renormalised over the labels, normal CI) and ``flip_rate``.
    """
    N, K = clean.shape
    norm0 = clean - np.logaddexp.reduce(clean, axis=1, keepdims=True)
    norm1 = steered - np.logaddexp.reduce(steered, axis=1, keepdims=True)
    pred0, pred1 = clean.argmax(1), steered.argmax(1)
    rows: list[dict] = []
    onehot0, onehot1 = np.eye(K)[pred0], np.eye(K)[pred1]
    p0, p1 = onehot0.mean(0), onehot1.mean(0)
    succ = success_score(p0, p1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size=(n_boot, N))
    boot = success_score(onehot0[idx].mean(1), onehot1[idx].mean(1))  # [n_boot, K]
    s_lo, s_hi = np.quantile(boot, [0.025, 0.975], axis=0)
    d_mean, d_lo, d_hi = _norm_ci(norm1 - norm0)
    for k, lab in enumerate(labels):
        lo, hi = wilson_interval(float(onehot1[:, k].sum()), N)
        rows.append(dict(metric="fraction", label=lab, value=float(p1[k]), ci_low=lo, ci_high=hi, n=N))
        rows.append(dict(metric="success", label=lab, value=float(succ[k]), ci_low=float(s_lo[k]),
                         ci_high=float(s_hi[k]), n=N))
        rows.append(dict(metric="delta_logp", label=lab, value=float(d_mean[k]), ci_low=float(d_lo[k]),
                         ci_high=float(d_hi[k]), n=N))
    flips = int((pred0 != pred1).sum())
    lo, hi = wilson_interval(flips, N)
    rows.append(dict(metric="flip_rate", label="*", value=flips / N, ci_low=lo, ci_high=hi, n=N))
    return rows


@torch.no_grad()
def run_conditions(lm, prompts, reader: LabelReader, conditions: Sequence[Condition], batch_size: int = 16,
                   max_rows: int = 64, progress: bool = False, fast: bool | None = None, fast_rows: int = 256,
                   fast_cache_bytes: int = 2 ** 31, info: dict | None = None
                   ) -> tuple[dict[tuple, np.ndarray], list[np.ndarray]]:
    """Label scores ``[N, K]`` of every condition, plus the clean scores per (layers, position) group.

    Conditions sharing a window and position run together: each forward holds a batch of items
    repeated once per condition, with the clean (zero-vector) condition always in the stack, so
    the baseline comes from the very same batch shapes. Returns ``(clean_by_group, scores)``
    where ``scores[i]`` belongs to ``conditions[i]``.

    **Fast path** (``position == "last"``; ``fast=None`` uses it wherever the model's cache
    allows, ``False`` never): steering only the answer cue cannot change an earlier position, so
    each item batch runs its first ``T - 1`` tokens once, and every condition of every window
    then runs only the cue token on a tiled copy of that cache (``fast_rows`` rows per forward, fewer
    where the tiled cache would exceed ``fast_cache_bytes``).
    ``info`` (a dict), when given, receives ``fast_path``: the positions that took it.
    """
    from tqdm.auto import tqdm

    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(conditions):
        groups.setdefault((c.layers, c.position), []).append(i)
    K = len(reader.labels)
    N = len(prompts)
    scores = [np.zeros((N, K), dtype=np.float64) for _ in conditions]
    clean: dict[tuple, np.ndarray] = {key: np.zeros((N, K)) for key in groups}
    stacks = {key: torch.stack([torch.zeros_like(conditions[members[0]].vector)]
                               + [conditions[i].vector for i in members]) for key, members in groups.items()}
    item_bs = max(1, min(batch_size, N))
    total = sum(len(v) + 1 for v in groups.values()) * N
    bar = tqdm(total=total, desc="steer", unit="row", disable=not progress, leave=False)

    def store(key, members, c0, got, B, indices):
        for j in range(got.shape[0] // B):
            target = clean[key] if c0 + j == 0 else scores[members[c0 + j - 1]]
            target[indices] = got[j * B:(j + 1) * B]
        bar.update(got.shape[0])

    fast_keys = [key for key in groups if key[1] == "last"] if fast is not False else []
    full_batches: dict[tuple, list[Batch]] = {key: [] for key in groups if key not in fast_keys}
    took_fast = bool(fast_keys)
    for batch in (iter_batches(lm.tokenizer, prompts, item_bs, lm.device) if fast_keys else ()):
        prefix = prefix_cache(lm, batch)
        B = len(batch)
        for key in fast_keys:
            if prefix is None:  # this model's cache cannot be shared: full forwards for this batch
                took_fast = False
                full_batches.setdefault(key, []).append(batch)
                continue
            layers, _ = key
            per = max(1, min(fast_rows // B, fast_cache_bytes // max(1, B * _bytes_per_row(prefix))))
            for c0 in range(0, stacks[key].shape[0], per):
                chunk = stacks[key][c0:c0 + per].to(lm.device, lm.dtype)
                got = fast_label_scores(lm, reader, batch, prefix, chunk.shape[0], list(layers),
                                        chunk.repeat_interleave(B, 0))
                store(key, groups[key], c0, got.double().cpu().numpy(), B, batch.indices)
    for key, done in full_batches.items():
        layers, position = key
        batches = done if key in fast_keys else iter_batches(lm.tokenizer, prompts, item_bs, lm.device)
        for batch in batches:
            B = len(batch)
            per = max(1, max_rows // B)
            base_mask = position_mask(batch.attention_mask, position)
            for c0 in range(0, stacks[key].shape[0], per):
                chunk = stacks[key][c0:c0 + per].to(lm.device, lm.dtype)
                C = chunk.shape[0]
                got = steered_label_scores(lm, reader, _repeat(batch, C), list(layers), chunk.repeat_interleave(B, 0),
                                           base_mask.repeat(C, 1))
                store(key, groups[key], c0, got.double().cpu().numpy(), B, batch.indices)
    bar.close()
    if info is not None:
        info["fast_path"] = sorted({key[1] for key in fast_keys}) if took_fast else []
    return clean, scores


@dataclass
class SweepResult:
    """A sweep's tidy table plus what produced it (conditions, scores, the bank)."""

    frame: pd.DataFrame
    conditions: list[Condition]
    scores: list[np.ndarray]
    clean: dict[tuple, np.ndarray]
    bank: ConceptBank
    ref_norm: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)
    dataset: object = None  # the steered items (the held-out split by default)


def pick_control(terms: Sequence[Term], available: Sequence[str], control: str | None = None) -> str | None:
    """The specificity-control appraisal: ``control`` if given, else the first candidate not steered."""
    names = {t.name for t in terms}
    if control is not None:
        if control not in available:
            raise EmolensError(f"unknown control appraisal {control!r}", f"use one of {list(available)}")
        return control
    for c in CONTROL_CANDIDATES + tuple(available):
        if c not in names and c in available and c not in EMOTIONS:
            return c
    return None


def build_conditions(lm, bank: ConceptBank, directions: Sequence[str], windows: Sequence[int], span: int,
                     betas: Sequence[float], positions: Sequence[str], scale: str = "unit",
                     ref_norm: Mapping[str, torch.Tensor] | None = None, partial: bool = False,
                     fixed: Sequence[str] | None = None, n_random: int = N_RANDOM, control: str | None = "auto",
                     seed: int = 0) -> list[Condition]:
    """Every (direction, window, β, position) plus its controls, vectors scaled and ready.

    Controls per (window, β, position): ``n_random`` seeded random directions and, per real
    direction, a specificity control (another appraisal's unit direction); both take the norm of
    the real vector at each layer, so only the direction differs.
    """
    n_layers, d = lm.n_layers, lm.sites.d_model
    parsed = {spec: parse_direction(spec, bank.names) for spec in directions}
    for terms in parsed.values():
        bank.check_defined(t.name for t in terms)
    randoms = {s: random_unit(n_layers, d, seed + s) for s in range(n_random)}
    # the automatic specificity control must be a concept this fit split can define (a small split
    # may lack items rated high or low on some appraisal); an explicit one is still checked below
    appraisal_names = [n for n in bank.names if n not in EMOTIONS and (control != "auto" or bank.is_defined(n))]
    out: list[Condition] = []
    for centre in windows:
        layers = tuple(window_layers(centre, span, n_layers))
        for position in positions:
            ref = None if ref_norm is None else ref_norm[position][[bank.layers.index(x) for x in layers]]
            for beta in betas:
                norms = None
                controls_done: set[str] = set()
                for terms in parsed.values():
                    unit = combine(bank, terms, layers, partial, fixed)
                    vec = scaled(unit, beta, scale, ref)
                    norms = vec.norm(dim=-1, keepdim=True)
                    out.append(Condition(format_terms(terms), "real", centre, layers, float(beta), position, vec))
                    ctrl = pick_control(terms, appraisal_names, None if control == "auto" else control) \
                        if control else None
                    if ctrl is not None and ctrl not in controls_done:
                        controls_done.add(ctrl)
                        bank.check_defined([ctrl])
                        cu = combine(bank, [Term(ctrl, 1.0)], layers, False)
                        out.append(Condition(f"control:{ctrl}+", "specificity", centre, layers, float(beta),
                                             position, cu * norms))
                if norms is None:
                    norms = scaled(torch.ones(len(layers), 1), beta, scale, ref).abs()
                for s, r in randoms.items():
                    out.append(Condition(f"random:{seed + s}", "random", centre, layers, float(beta), position,
                                         r[list(layers)] * norms))
    return out


def fit_split(dataset, holdout: float | None = 0.5, seed: int = 0):
    """``(fit items, steered items)``: a seeded, label-stratified split that holds out
    ``round(holdout · N)`` items, or the whole dataset for both when ``holdout`` is ``None`` or 0
    (the paper).

    Each label contributes ``holdout`` of its items, rounded by largest remainders with ties
    broken at random (seeded), so small samples with one or two items per label still hold out
    the requested share instead of keeping every singleton for fitting.
    """
    if not holdout:
        return dataset, dataset
    if not 0 < holdout < 1:
        raise EmolensError(f"holdout {holdout} is outside [0, 1)", "pass a fraction such as 0.5, or 0 for all items")
    n = len(dataset)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(dataset.labels):
        groups.setdefault("" if lab is None else str(lab), []).append(i)
    names = sorted(groups)
    quota = np.array([len(groups[g]) * holdout for g in names])
    take = np.floor(quota).astype(int)
    extra = int(round(holdout * n)) - int(take.sum())
    order = np.lexsort((rng.permutation(len(names)), -(quota - take)))  # largest remainder, random ties
    take[order[:max(extra, 0)]] += 1
    test = np.sort(np.concatenate([rng.permutation(groups[g])[:k] for g, k in zip(names, take, strict=True)]
                                  + [np.zeros(0, dtype=np.int64)]).astype(np.int64))
    train = np.setdiff1d(np.arange(n), test)
    if len(train) < 2 or len(test) < 1:
        raise EmolensError(f"{n} items are too few to hold out {holdout:g} of them",
                           "use more items or --holdout 0 (fit and steer on all items)")
    return dataset.subset(train), dataset.subset(test)


def fit_relation(fit, steered) -> str:
    """How the fit items relate to the steered ones: ``heldout`` (disjoint), ``all`` (the same
    items), ``overlap`` (some shared) or ``given`` (directions from elsewhere; ``fit`` is None)."""
    if fit is None:
        return "given"
    a, b = set(fit.ids), set(steered.ids)
    return "all" if a == b else "heldout" if not a & b else "overlap"


def sweep(lm, dataset, directions: Sequence[str], *, bank: ConceptBank | None = None, method: str = "diffmean",
          windows: Sequence[int] | str = "auto", span: int = 3, betas: Sequence[float] = (1, 2, 4),
          positions: Sequence[str] = ("last",), scale: str = "unit", partial: bool = False,
          fixed: Sequence[str] | None = None, n_random: int = N_RANDOM, control: str | None = "auto",
          spec: PromptSpec | None = None, fit_dataset=None, holdout: float | None = 0.5, batch_size: int = 16,
          max_rows: int = 64, fast: bool | None = None, fast_rows: int = 256, n_boot: int = 200, seed: int = 0,
          progress: bool = False) -> SweepResult:
    """Steer prompts along each direction over windows × β × positions, with controls.

    Which items fit the directions and which are steered:

    * by default ``dataset`` is split (seeded by ``seed``, label-stratified): the directions are
      fitted with ``method`` on ``1 - holdout`` of the items and the effects measured on the
      held-out rest; ``holdout=None`` or 0 fits and steers every item, as the paper did;
    * with ``fit_dataset`` the directions are fitted there (or, with ``bank``, were fitted there)
      and every item of ``dataset`` is steered; ``bank`` alone: fit items unknown.

    The table's ``fit`` column says which it was (:func:`fit_relation`).

    Positions ``last`` take the KV-prefix fast path (see :func:`run_conditions`; ``fast=False``
    forces full forwards). Returns a tidy table (:data:`COLUMNS`); β = 0 rows (the clean run)
    are included for every real direction, so dose-response curves start at 0.
    """
    for p in positions:
        if p not in ("last", "prompt"):
            raise EmolensError(f"position {p!r} cannot steer a label readout",
                               "use last or prompt here; 'generated' applies to steered generation")
    if scale not in SCALES:
        raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")
    spec = spec or PromptSpec()
    centres = parse_windows(windows, span, lm.n_layers)
    layers = sorted({x for c in centres for x in window_layers(c, span, lm.n_layers)})
    if bank is not None or fit_dataset is not None:
        fit, steered = fit_dataset, dataset
    else:
        fit, steered = fit_split(dataset, holdout, seed)
    fit_mode = fit_relation(fit, steered)
    prompts = build_prompts(steered.texts, spec, lm.tokenizer)
    if bank is None:
        fit_prompts = prompts if fit is steered else build_prompts(fit.texts, spec, lm.tokenizer)
        X = capture_resid(lm, fit_prompts, layers, batch_size)
        bank = compute_bank(X, layers, fit, method, seed=seed)
    ref_norm = {p: mean_resid_norm(lm, prompts, bank.layers, p, batch_size) for p in positions} \
        if scale == "relative" else {}
    conditions = build_conditions(lm, bank, directions, centres, span, betas, positions, scale,
                                  ref_norm or None, partial, fixed, n_random, control, seed)
    reader = LabelReader.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    run_info: dict = {}
    clean, scores = run_conditions(lm, prompts, reader, conditions, batch_size, max_rows, progress, fast=fast,
                                   fast_rows=fast_rows, info=run_info)
    rows = []
    common = dict(method=bank.method, partial=bool(partial), scale=scale, fit=fit_mode)
    done_zero: set[tuple] = set()
    for c, s in zip(conditions, scores, strict=True):
        base = clean[(c.layers, c.position)]
        meta = dict(direction=c.direction, kind=c.kind, window=c.window, layers=_layers_text(c.layers),
                    position=c.position, **common)
        for r in outcome_rows(base, s, spec.labels, n_boot, seed):
            rows.append({**meta, "beta": c.beta, **r})
        key = (c.direction, c.window, c.position)
        if key not in done_zero:
            done_zero.add(key)
            for r in outcome_rows(base, base, spec.labels, n_boot, seed):
                rows.append({**meta, "beta": 0.0, **r})
    frame = pd.DataFrame(rows)[list(COLUMNS)]
    info = {"n_items": len(steered), "fit": fit_mode, "n_fit": None if fit is None else len(fit),
            "holdout": float(holdout) if fit_mode == "heldout" else None, "split_seed": seed,
            "steered_ids": list(steered.ids), "fit_ids": None if fit is None else list(fit.ids),
            "windows": centres, "span": span, "betas": list(map(float, betas)), "positions": list(positions),
            "n_random": n_random, "random_seeds": [seed + s for s in range(n_random)], "seed": seed,
            "min_p_value": 1 / (1 + n_random), **run_info,
            "label_scoring": reader.describe(), "fixed": list(fixed) if fixed is not None else "default"}
    return SweepResult(frame, conditions, scores, clean, bank, ref_norm, info, steered)


def _layers_text(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


# ----------------------------------------------------------------------------------------------
# steered generation


@torch.no_grad()
def continuation_logprob(lm, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
    """Mean per-token log-probability of each continuation given its prompt, under the *unsteered* model.

    The fluency guard: steering that breaks the model produces text the clean model finds very
    unlikely (or repeats one token), which shows here before anyone reads the samples.
    """
    out = np.full(len(prompts), np.nan)
    tok = lm.tokenizer
    for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        p_ids = tok(p, return_tensors="pt")["input_ids"]
        c_ids = tok(c, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if c_ids.shape[1] == 0:
            continue
        ids = torch.cat([p_ids, c_ids], 1).to(lm.device)
        logits = lm.model(input_ids=ids).logits[0, p_ids.shape[1] - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, c_ids[0].to(lm.device)[:, None]).squeeze(-1)
        out[i] = float(lp.mean())
    return out


@torch.no_grad()
def generate_steered(lm, texts: Sequence[str], layers: Sequence[int] | None = None,
                     vector: torch.Tensor | None = None, position: str = "generated", max_new_tokens: int = 24,
                     batch_size: int = 8) -> list[str]:
    """Greedy continuations of ``texts`` with ``vector [L, d]`` added at ``layers``.

    ``position``: ``last`` (the prompt's last token, prefill only), ``prompt`` (every prompt
    token but the first) or ``generated`` (the last prompt token and every generated token, via
    the KV-cached decode steps). ``vector=None`` generates unsteered.
    """
    tok = lm.tokenizer
    tok.padding_side = "left"
    out: list[str] = []
    for s in range(0, len(texts), batch_size):
        chunk = list(texts[s:s + batch_size])
        enc = tok(chunk, return_tensors="pt", padding=True).to(lm.device)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        if vector is None:
            gen = lm.model.generate(**enc, **kw)
        else:
            pmask = position_mask(enc["attention_mask"], position)
            op = steering_op(layers, vector.to(lm.device, lm.dtype), pmask, every_token=position == "generated")
            with Intervention(lm, [op]):
                gen = lm.model.generate(**enc, **kw)
        new = gen[:, enc["input_ids"].shape[1]:]
        out.extend(tok.decode(row, skip_special_tokens=True) for row in new)
    return out


_WORD = re.compile(r"\S+")
#: A line that reads as source code rather than prose: imports, definitions, assignments,
#: statement punctuation at the end, calls on dotted names, comment markers.
_CODE_LINE = re.compile(
    r"""^(\.?(import|from)\s+[\w.]+"""
    r"""|(def|class|public|private|protected|static|function|var|let|const|return|package|using)\b"""
    r"""|#include|#\s|//|/\*|@\w+|\"\"\"|'''"""
    r"""|['"][\w ]+['"]\s*:"""
    r"""|[\w.\[\]'"]+\s*[-+*/]?=\s*\S"""
    r"""|.*[;{}]$|.*\)\s*:$"""
    r"""|[\w.]+\.\w+\(.*)""")
#: Absolute fluency limits: below/above these a continuation is degenerate whatever the clean one did.
MIN_LOGP, MIN_DISTINCT2, MAX_REPEAT, MAX_NONALPHA, MAX_CODE = -6.0, 0.5, 0.4, 0.5, 0.5
#: Relative limits: how much worse than the unsteered continuation of the same prompt is too much.
MAX_LOGP_DROP, MAX_DISTINCT2_DROP, MAX_REPEAT_RISE, MAX_NONALPHA_RISE = 2.5, 0.3, 0.3, 0.3


def text_stats(text: str) -> dict[str, float]:
    """Degeneracy signals of a continuation, over its whitespace-separated words.

    ``distinct2``: distinct word bigrams / bigrams (1 = no bigram repeats; loops drive it to 0);
    ``repeat``: length of the longest word n-gram (n >= 2) that occurs at least twice, overlaps
    allowed, over the number of words (a loop of period p over n words scores (n - p) / n);
    ``nonalpha``: share of words without a letter (symbol or digit salad such as ``!! ## ;;``);
    ``code``: share of non-empty lines that read as source code (a coder model asked to continue
    an event description may switch to Python or Java: fluent under the model, but no longer a
    text whose emotion can be read out);
    ``words``: the number of words. An empty text scores 0 words and neutral signals.
    """
    words = _WORD.findall(text.lower())
    n = len(words)
    bigrams = list(zip(words, words[1:], strict=False))
    distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    longest = 0
    for size in range(2, n):  # the longest n-gram seen twice; a longer one implies every shorter one
        grams = [tuple(words[i:i + size]) for i in range(n - size + 1)]
        if len(set(grams)) == len(grams):
            break
        longest = size
    nonalpha = sum(not any(ch.isalpha() for ch in w) for w in words) / n if n else 0.0
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    code = sum(bool(_CODE_LINE.match(line)) for line in lines) / len(lines) if lines else 0.0
    return {"words": float(n), "distinct2": distinct2, "repeat": longest / n if n else 0.0, "nonalpha": nonalpha,
            "code": code}


def fluency_flags(text: str, mean_logp: float, clean: tuple[str, float] | None = None) -> list[str]:
    """Why a continuation looks degenerate (empty list: it does not).

    Absolute checks: empty, mean log-probability under the unsteered model below
    :data:`MIN_LOGP`, distinct-2 below :data:`MIN_DISTINCT2` or ``repeat`` above
    :data:`MAX_REPEAT` (8+ words), non-alphabetic words above :data:`MAX_NONALPHA` (4+ words),
    source-code lines above :data:`MAX_CODE` (``code``; code is never a valid continuation of an
    event description, so this one holds even when the clean continuation is code too).
    Relative checks against ``clean = (text, mean_logp)``, the unsteered continuation of the same
    prompt: log-probability more than :data:`MAX_LOGP_DROP` nats lower, distinct-2 more than
    :data:`MAX_DISTINCT2_DROP` lower, ``repeat`` or ``nonalpha`` more than 0.3 higher -- so a
    prompt whose clean continuation is already odd (a list, code) is judged against itself.
    """
    s = text_stats(text)
    if s["words"] == 0:
        return ["empty"]
    flags = []
    if not np.isfinite(mean_logp) or mean_logp < MIN_LOGP:
        flags.append("logp")
    if s["words"] >= 8 and s["distinct2"] < MIN_DISTINCT2:
        flags.append("distinct2")
    if s["words"] >= 8 and s["repeat"] > MAX_REPEAT:
        flags.append("repeat")
    if s["words"] >= 4 and s["nonalpha"] > MAX_NONALPHA:
        flags.append("nonalpha")
    if s["code"] > MAX_CODE:
        flags.append("code")
    if clean is not None:
        c = text_stats(clean[0])
        if np.isfinite(clean[1]) and np.isfinite(mean_logp) and mean_logp < clean[1] - MAX_LOGP_DROP:
            flags.append("logp_vs_clean")
        if s["words"] >= 4 and s["distinct2"] < c["distinct2"] - MAX_DISTINCT2_DROP:
            flags.append("distinct2_vs_clean")
        if s["words"] >= 4 and s["repeat"] > c["repeat"] + MAX_REPEAT_RISE:
            flags.append("repeat_vs_clean")
        if s["words"] >= 4 and s["nonalpha"] > c["nonalpha"] + MAX_NONALPHA_RISE:
            flags.append("nonalpha_vs_clean")
    return flags


def degenerate(text: str, mean_logp: float, clean: tuple[str, float] | None = None) -> bool:
    """Whether :func:`fluency_flags` flags the continuation (see there)."""
    return bool(fluency_flags(text, mean_logp, clean))


def steered_generations(lm, dataset, conditions: Sequence[Condition], n_items: int = 3,
                        spec: PromptSpec | None = None, max_new_tokens: int = 24,
                        clean_label: Callable | None = None) -> list[dict]:
    """Continuations of ``n_items`` event descriptions, clean and under each condition, with readout.

    The emotion of text + continuation is read by the model's own label scoring on the T1
    prompt (unsteered). Fluency: ``mean_logp`` (under the unsteered model) and the
    :func:`text_stats` signals; ``flags``/``degenerate`` are :func:`fluency_flags`' verdict,
    each steered continuation judged also against the clean continuation of the same item.
    """
    spec = spec or PromptSpec()
    texts = list(dataset.texts[:n_items])
    ids = list(dataset.ids[:n_items])
    clean = generate_steered(lm, texts, max_new_tokens=max_new_tokens)
    records = []
    settings: list[tuple[Condition | None, list[str]]] = [(None, clean)]
    for c in conditions:
        settings.append((c, generate_steered(lm, texts, list(c.layers), c.vector, c.position, max_new_tokens)))
    clean_fluency: np.ndarray | None = None
    for c, conts in settings:
        full = [f"{t} {x.strip()}".strip() for t, x in zip(texts, conts, strict=True)]
        prompts = build_prompts(full, spec, lm.tokenizer)
        reader = LabelReader.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
        scores = np.zeros((len(full), len(spec.labels)))
        for batch in iter_batches(lm.tokenizer, prompts, 8, lm.device):
            scores[batch.indices] = steered_label_scores(lm, reader, batch).double().cpu().numpy()
        fluency = continuation_logprob(lm, texts, conts)
        if c is None:
            clean_fluency = fluency
        for i in range(len(texts)):
            probs = np.exp(scores[i] - np.logaddexp.reduce(scores[i]))
            versus = None if c is None else (clean[i], float(clean_fluency[i]))
            flags = fluency_flags(conts[i], float(fluency[i]), versus)
            stats = text_stats(conts[i])
            records.append({
                "id": ids[i], "text": texts[i], "direction": c.direction if c else "clean",
                "kind": c.kind if c else "clean", "window": c.window if c else None,
                "layers": _layers_text(c.layers) if c else None, "beta": c.beta if c else 0.0,
                "position": c.position if c else None, "continuation": conts[i],
                "emotion": spec.labels[int(scores[i].argmax())],
                "probs": {lab: round(float(p), 4) for lab, p in zip(spec.labels, probs, strict=True)},
                "mean_logp": None if not np.isfinite(fluency[i]) else round(float(fluency[i]), 4),
                **{k: round(stats[k], 4) for k in ("distinct2", "repeat", "nonalpha", "code")},
                "flags": flags, "degenerate": bool(flags),
            })
    return records


# ----------------------------------------------------------------------------------------------
# figures (drawn from the steering table only)


def plot_label_bars(frame: pd.DataFrame, direction: str, path: str | Path, window: int | None = None,
                    position: str | None = None) -> Path:
    """Stacked bars: the predicted-label distribution at each β for one direction and its controls.

    One window and position (default: the middle window, the first position), so the bars show
    the paper's appraisal-surgery picture with the controls beside it.
    """
    from emolens.report.figures import plt, save_figure

    sub = frame[frame["metric"] == "fraction"]
    windows = sorted(sub["window"].unique())
    window = windows[len(windows) // 2] if window is None else window
    position = sub["position"].iloc[0] if position is None else position
    sub = sub[(sub["window"] == window) & (sub["position"] == position)]
    names = [direction] + sorted(n for n in sub.loc[sub["kind"] != "real", "direction"].unique())
    labels = list(dict.fromkeys(sub["label"]))
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names) + 1.5, 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        part = sub[sub["direction"] == name].pivot_table(index="beta", columns="label", values="value")
        part = part.reindex(columns=labels).fillna(0.0)
        bottom = np.zeros(len(part))
        for k, lab in enumerate(labels):
            ax.bar([f"{b:g}" for b in part.index], part[lab], bottom=bottom, color=cmap(k % 20), label=lab)
            bottom += part[lab].to_numpy()
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("β")
    axes[0][0].set_ylabel("share of items")
    axes[0][-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    layers = sub["layers"].iloc[0] if len(sub) else ""
    fig.suptitle(f"predicted label by β; window centre {window} (layers {layers}, 0-indexed), {position}",
                 fontsize=9)
    return save_figure(fig, path)


def plot_dose_response(frame: pd.DataFrame, path: str | Path, position: str | None = None) -> Path:
    """Success score vs β for each real direction's most promoted label, with its controls' scores
    for the same label (mean over random seeds), one panel per window; bands are the 95% CIs."""
    from emolens.report.figures import plt, save_figure

    sub = frame[frame["metric"] == "success"]
    position = sub["position"].iloc[0] if position is None else position
    sub = sub[sub["position"] == position]
    windows = sorted(sub["window"].unique())
    fig, axes = plt.subplots(1, len(windows), figsize=(3.2 * len(windows) + 1, 3.2), sharey=True, squeeze=False)
    top = sub["beta"].max()
    for ax, window in zip(axes[0], windows, strict=True):
        w = sub[sub["window"] == window]
        for name in w.loc[w["kind"] == "real", "direction"].unique():
            d = w[w["direction"] == name]
            target = d[d["beta"] == top].sort_values("value").iloc[-1]["label"]
            curve = d[d["label"] == target].sort_values("beta")
            line = ax.plot(curve["beta"], curve["value"], marker="o", label=f"{name} → {target}")[0]
            ax.fill_between(curve["beta"], curve["ci_low"], curve["ci_high"], alpha=0.15, color=line.get_color())
            for kind, style in (("specificity", "--"), ("random", ":")):
                ctrl = w[(w["kind"] == kind) & (w["label"] == target)].groupby("beta")["value"].mean()
                if len(ctrl):
                    ax.plot(ctrl.index, ctrl.to_numpy(), style, color=line.get_color(), alpha=0.7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"window centre {window} (0-indexed)", fontsize=8)
        ax.set_xlabel("β")
    axes[0][0].set_ylabel("success score")
    axes[0][-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"dose-response at {position}; dashed: specificity control, dotted: random (mean)", fontsize=9)
    return save_figure(fig, path)
