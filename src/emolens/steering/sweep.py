"""Steering sweeps: conditions over windows × β × positions, with controls, scored as a tidy table.

Tak et al. add ``β · w/‖w‖`` (a probe weight, unit-normalised) to the residual stream at the last
token of three consecutive layers and read which emotion wins (paper-protocol §7). A sweep does the
same with stock hooks, and fixes or extends what the paper left open (§10.4):

* **Held-out fit**: by default the directions are fitted on a seeded, label-stratified part of
  the items and steering is measured on the rest (:func:`fit_split`; ``holdout=0`` is the
  paper's fit-and-steer-everything), and the table's ``fit`` column says which.
* **Sweeps** stack many conditions into one forward by repeating items, always include the clean
  run in the same batch (so the baseline shares every kernel and padding choice), and add
  controls to every sweep: :data:`N_RANDOM` norm-matched random directions drawn with the fit
  activations' covariance, a specificity control (another appraisal's direction at the same
  norm) and, on request, the emotion-only null (:mod:`emolens.steering.nulls`).

Layers are 0-indexed; a window is named by its centre layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from emolens.engine.runner import ConditionRunner, Prefix
from emolens.engine.scoring import LabelScorer
from emolens.engine.windows import Window, layer_windows
from emolens.errors import EmolensError, arg
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS
from emolens.metrics import wilson_interval
from emolens.steering import nulls
from emolens.steering.apply import (
    SCALES,
    mean_resid_norm,
    scaled,
    steer_positions,
    steering_op,
)
from emolens.steering.directions import (
    ConceptBank,
    Term,
    capture_resid,
    combine,
    compute_bank,
    format_terms,
    parse_direction,
    random_unit,
)
from emolens.steering.theory import EMOTION_NULL_SEP, RESIDUALISED, log_normalise

#: Candidates for the specificity control, in order: appraisals not central to the paper's surgery.
CONTROL_CANDIDATES: tuple[str, ...] = ("familiarity", "suddenness", "attention", "effort", "goal_relevance")
#: Columns of the steering table, in order.
COLUMNS: tuple[str, ...] = ("direction", "kind", "method", "partial", "scale", "fit", "window", "layers", "beta",
                            "position", "metric", "label", "value", "ci_low", "ci_high", "n")
#: Default number of norm-matched random directions: with 99, the permutation p-value of the theory
#: alignment can reach 1 / 100 (and a Holm-corrected one over a few directions stays below 0.05);
#: the last-token fast path makes them cheap.
N_RANDOM = 99
#: Default number of within-emotion permutation refits per direction that ``emolens steer`` and the
#: study's steer stage request (the emotion-only null; p down to 1 / 40).
N_EMOTION_NULL = 39


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
    norm0, norm1 = log_normalise(clean), log_normalise(steered)
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
def steered_label_scores(lm, prompts, reader: LabelScorer, conditions: Sequence[Condition], batch_size: int = 16,
                   max_rows: int = 64, progress: bool = False, fast: bool | None = None, fast_rows: int | None = None,
                   fast_cache_bytes: int | None = None, info: dict | None = None
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
    where the tiled cache would exceed ``fast_cache_bytes``; None: the device's
    :func:`~emolens.engine.memory.stack_budget`).
    Every forward starts at its window's first layer (the layers below replay the batch's clean
    hidden states), and with single-token labels only the labels' rows of the output head are
    computed. Scores are log-probabilities renormalised over the labels (every steering metric
    renormalises anyway); ``fast=False`` is the naive path: full forwards, every layer, full head.
    ``info`` (a dict), when given, receives ``fast_path`` (the positions that took it) and the
    runner's ``forwards`` and ``token_layers`` (tokens run x decoder layers).
    """
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

    # each batch's prefix is made once below, never kept; steering compares labels only (every metric is
    # renormalised over them), so only the labels' rows of the output head are computed
    runner = ConditionRunner(lm, reader, prefix_bytes=0, skip=fast is not False, label_logits=fast is not False)
    if fast is not False:  # each batch's prefix runs only the columns after the template's shared tokens
        runner.share_prefix(prompts)
    fast_keys = [key for key in groups if steer_positions(key[1]).suffix] if fast is not False else []
    took_fast = bool(fast_keys)
    for batch in iter_batches(lm.tokenizer, prompts, item_bs, lm.device):
        prefixes: dict[int, Prefix | None] = {}
        for key, members in groups.items():
            layers, position = key
            where = steer_positions(position)
            m = where.suffix if key in fast_keys else 0
            if m and m not in prefixes:
                prefixes[m] = runner.prefix(batch, m)
            prefix = prefixes.get(m)
            took_fast = took_fast and not (m and prefix is None)  # a cache that cannot be shared: full forwards
            got = runner.stack(batch, stacks[key], lambda v, layers=layers, where=where: steering_op(layers, v, where),
                               prefix, fast_rows if prefix is not None else max_rows, fast_cache_bytes,
                               on_rows=bar.update)
            got = torch.log_softmax(got.double(), -1).numpy()  # over the labels, whichever head scored them
            clean[key][batch.indices] = got[0]
            for j, i in enumerate(members):
                scores[i][batch.indices] = got[j + 1]
    bar.close()
    if info is not None:
        info["fast_path"] = sorted({key[1] for key in fast_keys}) if took_fast else []
        info.update(forwards=runner.counter.forwards, token_layers=runner.counter.token_layers)
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
                     seed: int = 0, randoms: Mapping[int, torch.Tensor] | None = None,
                     emotion_null: Sequence[ConceptBank] = (),
                     residualised: tuple[ConceptBank, Sequence[ConceptBank]] | None = None) -> list[Condition]:
    """Every (direction, window, β, position) plus its controls, vectors scaled and ready.

    Controls per (window, β, position): ``n_random`` seeded random directions (``randoms``, e.g.
    :func:`emolens.steering.nulls.random_by_layer`, else isotropic :func:`random_unit`) and, per
    real direction, a specificity control (another appraisal's unit direction) and its refits in
    each ``emotion_null`` bank (kind ``emotion_null``, named ``theory.emotion_null_name``); all
    take the norm of the real vector at each layer, so only the direction differs. ``residualised``
    (:func:`emolens.steering.nulls.residualised_banks`) adds the direction refitted on ratings
    residualised on emotion (kind ``residualised``, named ``<direction>|residualised``) and its
    within-emotion refits (kind ``residualised_null``), norm-matched the same way.
    """
    n_layers, d = lm.n_layers, lm.sites.d_model
    parsed = {spec: parse_direction(spec, bank.names) for spec in directions}
    for terms in parsed.values():
        bank.check_defined(t.name for t in terms)
    randoms = {s: random_unit(n_layers, d, seed + s) for s in range(n_random)} if randoms is None else \
        {s - seed: r for s, r in randoms.items()}
    # the automatic specificity control must be a concept this fit split can define (a small split
    # may lack items rated high or low on some appraisal); an explicit one is still checked below
    appraisal_names = [n for n in bank.names if n not in EMOTIONS and (control != "auto" or bank.is_defined(n))]
    out: list[Condition] = []
    for centre in windows:
        layers = Window(centre, span).check(n_layers).layers
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
                    for j, null_bank in enumerate(emotion_null):
                        if all(t.name in null_bank.names and null_bank.is_defined(t.name) for t in terms):
                            nu = combine(null_bank, terms, layers, partial, fixed)
                            out.append(Condition(f"{format_terms(terms)}{EMOTION_NULL_SEP}{j}", "emotion_null",
                                                 centre, layers, float(beta), position, nu * norms))
                    out += _residualised_conditions(residualised, terms, centre, layers, float(beta), position,
                                                    partial, fixed, norms)
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


def _residualised_conditions(residualised, terms, centre, layers, beta, position, partial, fixed, norms) -> list:
    """The residualised-on-emotion refit of one direction and its within-emotion refits (see build_conditions)."""
    if residualised is None:
        return []
    name = f"{format_terms(terms)}{RESIDUALISED}"
    out = []
    for j, b in enumerate([residualised[0], *residualised[1]]):
        if all(t.name in b.names and b.is_defined(t.name) for t in terms):
            vec = combine(b, terms, layers, partial, fixed) * norms
            out.append(Condition(name, "residualised", centre, layers, beta, position, vec) if j == 0 else
                       Condition(f"{name}{EMOTION_NULL_SEP}{j - 1}", "residualised_null", centre, layers, beta,
                                 position, vec))
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
                           f"use more items or {arg('holdout', 0)} (fit and steer on all items)")
    return dataset.subset(train), dataset.subset(test)


def fit_relation(fit, steered) -> str:
    """How the fit items relate to the steered ones: ``heldout`` (disjoint), ``all`` (the same
    items), ``overlap`` (some shared) or ``given`` (directions from elsewhere; ``fit`` is None)."""
    if fit is None:
        return "given"
    a, b = set(fit.ids), set(steered.ids)
    return "all" if a == b else "heldout" if not a & b else "overlap"


def _definable(bank: ConceptBank, direction: str) -> bool:
    """Whether every concept of ``direction`` has a direction in ``bank`` at every layer."""
    try:
        terms = parse_direction(direction, bank.names)
    except EmolensError:
        return False
    return all(bank.is_defined(t.name) for t in terms)


def _reference_norm(lm, prompts, items, layers: Sequence[int], position: str, batch_size: int,
                    acts: Callable | None) -> torch.Tensor:
    """The ``relative`` scale's mean residual norm per layer (:func:`~emolens.steering.apply.mean_resid_norm`);
    at ``last`` from ``acts`` when it has the items (the same vectors, not run again)."""
    X = acts(items, layers) if acts is not None and position == "last" else None
    if X is None:
        return mean_resid_norm(lm, prompts, layers, position, batch_size)
    return X.double().norm(dim=-1).mean(0).float()


def sweep(lm, dataset, directions: Sequence[str], *, bank: ConceptBank | None = None, method: str = "diffmean",
          windows: Sequence[int] | str = "auto", span: int = 3, betas: Sequence[float] = (1, 2, 4),
          positions: Sequence[str] = ("last",), scale: str = "unit", partial: bool = False,
          fixed: Sequence[str] | None = None, n_random: int = N_RANDOM, control: str | None = "auto",
          random_kind: str = "covariance", n_emotion_null: int = 0, residualised: bool = False,
          resid_null: int | None = None, spec: PromptSpec | None = None,
          fit_dataset=None, holdout: float | None = 0.5, batch_size: int = 16,
          max_rows: int = 64, fast: bool | None = None, fast_rows: int | None = None, n_boot: int = 200, seed: int = 0,
          progress: bool = False, acts: Callable | None = None, skip_undefined: bool = False,
          ref_norm: Mapping[str, torch.Tensor] | None = None, max_iter: int = 1000) -> SweepResult:
    """Steer prompts along each direction over windows × β × positions, with controls.

    Which items fit the directions and which are steered:

    * by default ``dataset`` is split (seeded by ``seed``, label-stratified): the directions are
      fitted with ``method`` on ``1 - holdout`` of the items and the effects measured on the
      held-out rest; ``holdout=None`` or 0 fits and steers every item, as the paper did;
    * with ``fit_dataset`` the directions are fitted there (or, with ``bank``, were fitted there)
      and every item of ``dataset`` is steered; ``bank`` alone: fit items unknown.

    The table's ``fit`` column says which it was (:func:`fit_relation`).

    Nulls (:mod:`emolens.steering.nulls`): ``random_kind="covariance"`` (default) draws the
    ``n_random`` random directions with the covariance of the fit items' activations (isotropic
    ``"gaussian"`` otherwise, and where the fit items are unknown); ``n_emotion_null`` adds, per
    real direction, that many refits on ratings permuted within each emotion (kind ``emotion_null``);
    ``residualised`` adds each direction refitted on ratings residualised on the gold emotion (kind
    ``residualised``) with ``resid_null`` (default ``n_emotion_null``) within-emotion refits of its own
    (``residualised_null``).

    Positions ``last`` take the KV-prefix fast path (see :func:`steered_label_scores`; ``fast=False``
    forces full forwards). ``acts(items, layers)``, when given, returns the items' residual stream at
    the answer cue (``[N, len(layers), d]``, e.g. :func:`~emolens.steering.directions.store_resid`
    on a store extracted with these prompts) or ``None``: the nulls' fit activations and the
    ``relative`` scale's reference norms at ``last`` are then read there instead of captured again.
    ``skip_undefined`` leaves out directions the fit items cannot define (a concept without items on
    both sides) instead of failing; ``info["skipped_directions"]`` names them. ``ref_norm`` (the
    ``relative`` scale's norms per position over ``bank.layers``, e.g. an earlier sweep's) makes the
    vectors those of that sweep instead of being measured on these items. ``max_iter`` caps the emotion
    probes of a ``probe`` bank the sweep fits itself (:func:`~emolens.steering.directions.probe_directions`).
    Returns a tidy table (:data:`COLUMNS`); β = 0 rows (the clean run)
    are included for every real direction, so dose-response curves start at 0.
    """
    for p in positions:
        if p not in ("last", "prompt"):
            raise EmolensError(f"position {p!r} cannot steer a label readout",
                               "use last or prompt here; 'generated' applies to steered generation")
    if scale not in SCALES:
        raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")
    spec = spec or PromptSpec()
    wins = layer_windows(lm.n_layers, [span], windows)
    centres = [w.center for w in wins]
    layers = sorted({x for w in wins for x in w.layers})
    if bank is not None or fit_dataset is not None:
        fit, steered = fit_dataset, dataset
    else:
        fit, steered = fit_split(dataset, holdout, seed)
    fit_mode = fit_relation(fit, steered)
    prompts = build_prompts(steered.texts, spec, lm.tokenizer)
    if random_kind not in ("covariance", "gaussian"):
        raise EmolensError(f"unknown random_kind {random_kind!r}", "use covariance or gaussian")
    X = None
    resid_null = n_emotion_null if resid_null is None else resid_null
    if fit is not None and (bank is None or random_kind == "covariance" or n_emotion_null or residualised):
        X = acts(fit, layers) if acts is not None else None
        if X is None:
            fit_prompts = prompts if fit is steered else build_prompts(fit.texts, spec, lm.tokenizer)
            X = capture_resid(lm, fit_prompts, layers, batch_size)
    if bank is None:
        bank = compute_bank(X, layers, fit, method, seed=seed, max_iter=max_iter)
    skipped = [d for d in directions if not _definable(bank, d)] if skip_undefined else []
    directions = [d for d in directions if d not in skipped]
    if not directions:
        n_fit = len(fit) if fit is not None else len(steered)
        raise EmolensError(f"no steering direction of {skipped} is defined on these {n_fit} fit items",
                           "they need items on both sides of each concept: use more items or other concepts")
    randoms = nulls.random_by_layer(X, layers, lm.n_layers, n_random, seed) \
        if X is not None and random_kind == "covariance" else None
    null_banks = nulls.emotion_null_banks(X, layers, fit, bank.method, n_emotion_null, seed + 1) \
        if X is not None and n_emotion_null else []
    resid = nulls.residualised_banks(X, layers, fit, bank.method, resid_null, seed + 2) \
        if X is not None and residualised else None
    if ref_norm is None:
        ref_norm = {p: _reference_norm(lm, prompts, steered, bank.layers, p, batch_size, acts) for p in positions} \
            if scale == "relative" else {}
    ref_norm = dict(ref_norm)
    conditions = build_conditions(lm, bank, directions, centres, span, betas, positions, scale,
                                  ref_norm or None, partial, fixed, n_random, control, seed, randoms, null_banks,
                                  resid)
    reader = LabelScorer.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    run_info: dict = {}
    clean, scores = steered_label_scores(lm, prompts, reader, conditions, batch_size, max_rows, progress, fast=fast,
                                   fast_rows=fast_rows, info=run_info)
    common = dict(method=bank.method, partial=bool(partial), scale=scale, fit=fit_mode)
    frame = sweep_table(conditions, scores, clean, spec.labels, common, n_boot, seed)
    info = {"n_items": len(steered), "fit": fit_mode, "n_fit": None if fit is None else len(fit),
            "holdout": float(holdout) if fit_mode == "heldout" else None, "split_seed": seed,
            "steered_ids": list(steered.ids), "fit_ids": None if fit is None else list(fit.ids),
            "windows": centres, "span": span, "betas": list(map(float, betas)), "positions": list(positions),
            "n_random": n_random, "random_seeds": [seed + s for s in range(n_random)], "seed": seed,
            "random_kind": "covariance" if randoms is not None else "gaussian",
            "n_emotion_null": len(null_banks), "residualised": resid is not None,
            "min_p_value": 1 / (1 + n_random), **run_info,
            "label_scoring": reader.describe(), "fixed": list(fixed) if fixed is not None else "default",
            "skipped_directions": skipped}
    return SweepResult(frame, conditions, scores, clean, bank, ref_norm, info, steered)


def sweep_table(conditions: Sequence[Condition], scores: Sequence[np.ndarray], clean: Mapping[tuple, np.ndarray],
                labels: Sequence[str], common: Mapping[str, object], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The tidy table (:data:`COLUMNS`) of conditions' label scores: :func:`outcome_rows` per
    condition, plus β = 0 rows (the clean run) for every direction that is not a null refit."""
    rows = []
    done_zero: set[tuple] = set()
    for c, s in zip(conditions, scores, strict=True):
        base = clean[(c.layers, c.position)]
        meta = dict(direction=c.direction, kind=c.kind, window=c.window, layers=layers_text(c.layers),
                    position=c.position, **common)
        for r in outcome_rows(base, s, labels, n_boot, seed):
            rows.append({**meta, "beta": c.beta, **r})
        key = (c.direction, c.window, c.position)
        if key not in done_zero and c.kind not in ("emotion_null", "residualised_null"):
            done_zero.add(key)
            for r in outcome_rows(base, base, labels, n_boot, seed):
                rows.append({**meta, "beta": 0.0, **r})
    return pd.DataFrame(rows)[list(COLUMNS)]


def layers_text(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


