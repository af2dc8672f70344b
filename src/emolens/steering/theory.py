"""Appraisal-theory expectations from human ratings, and how well steering effects agree with them.

Tak et al. judge their appraisal "surgery" by eye against a table of what theory expects
(paper-protocol §7.4). Here the expectation is derived from the corpus itself -- how each
appraisal rating relates to each emotion label in human data -- and compared with the measured
effect of steering each appraisal direction on each emotion's log-probability:

* :func:`rating_profile` -- the **reference** ``R[appraisal, emotion]``: the mean z-scored rating
  of that appraisal among texts labelled with that emotion (how much higher or lower than
  average people rated it for that emotion). :func:`classifier_profile` offers the alternative:
  the coefficients of the human-baseline appraisal→emotion classifier (``probe_eval``).
* :func:`alignment` -- the **score**: for each steered direction, Spearman's ρ between its effect
  row (mean Δ log-probability per emotion) and its reference row (a signed combination of
  appraisals gets the same signed combination of reference rows), averaged over directions; plus
  sign agreement and the ρ of all cells pooled. The **p-value** compares the score with the same
  score computed for norm-matched random directions: a real direction must align with theory
  better than a direction that only perturbs the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS
from emolens.probes.evaluation import human_baseline
from emolens.stats import adjust, max_statistic_p, permutation_p


def rating_profile(dataset, appraisals: Sequence[str] | None = None,
                   emotions: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """Mean z-scored rating of each appraisal per emotion: ``[appraisal, emotion]``.

    Ratings are standardised per appraisal over all rated items, so rows are comparable across
    appraisals with different scales and base rates; an emotion without items is NaN.
    """
    appraisals = list(appraisals if appraisals is not None else dataset.appraisal_names)
    labels = np.array([lab if lab is not None else "" for lab in dataset.labels])
    out = pd.DataFrame(np.nan, index=appraisals, columns=list(emotions))
    for a in appraisals:
        r = dataset.appraisal(a).astype(np.float64)
        ok = np.isfinite(r)
        sd = r[ok].std()
        if ok.sum() < 2 or sd == 0:
            continue
        z = (r - r[ok].mean()) / sd
        for e in emotions:
            sel = ok & (labels == e)
            if sel.any():
                out.loc[a, e] = z[sel].mean()
    return out


#: Emotions with fewer rated items than this make noisy reference cells; they are flagged.
MIN_PROFILE_N = 20


def profile_counts(dataset, emotions: Sequence[str] = EMOTIONS) -> dict[str, int]:
    """Gold-labelled items per emotion behind :func:`rating_profile` (the n of each reference column)."""
    labels = [lab for lab in dataset.labels if lab is not None]
    return {e: int(sum(lab == e for lab in labels)) for e in emotions}


def classifier_profile(dataset, appraisals: Sequence[str] | None = None, emotions: Sequence[str] = EMOTIONS,
                       **kwargs) -> pd.DataFrame:
    """Human-baseline classifier coefficients (ratings → emotion), transposed to ``[appraisal, emotion]``.

    Standardised inputs, so coefficients compare across appraisals. Emotions absent from the
    data come out as zero rows in the fit; they are set to NaN here.
    """
    appraisals = list(appraisals if appraisals is not None else dataset.appraisal_names)
    index = {e: i for i, e in enumerate(emotions)}
    y = np.array([index.get(lab, -1) if lab is not None else -1 for lab in dataset.labels])
    R = np.stack([dataset.appraisal(a) for a in appraisals], 1)
    kwargs.setdefault("standardize", True)
    kwargs.setdefault("n_boot", 100)
    base = human_baseline(R, y, appraisal_names=appraisals, emotion_names=list(emotions), drop_invalid=True,
                          **kwargs)
    coef = base.coef.T.copy()
    present = np.isin(np.arange(len(emotions)), y[y >= 0])
    coef.loc[:, ~present] = np.nan
    return coef


def reference_for(terms: Sequence[tuple[str, float]], reference: pd.DataFrame) -> pd.Series:
    """Expected effect row of a signed combination: ``Σ sign · R[appraisal]``."""
    missing = [name for name, _ in terms if name not in reference.index]
    if missing:
        raise EmolensError(f"no reference for {missing}", f"the reference covers {list(reference.index)}")
    return sum(sign * reference.loc[name] for name, sign in terms)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def _spearman_rows(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ of every row of ``A[M, K]`` with ``b[K]`` over the columns finite everywhere
    (vectorised: the nulls score hundreds of rows per setting)."""
    A = np.atleast_2d(np.asarray(A, dtype=float))
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(b) & np.isfinite(A).all(0)
    if ok.sum() < 3 or np.ptp(b[ok]) == 0:
        return np.full(A.shape[0], np.nan)
    ra = stats.rankdata(A[:, ok], axis=1)
    rb = stats.rankdata(b[ok])
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean()
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, ra @ rb / den, np.nan)


def _sign_agreement(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
    return float((np.sign(x[ok]) == np.sign(y[ok])).mean()) if ok.any() else float("nan")


#: Separator of the emotion-only null's direction names: ``"<real direction>|within-emotion:<j>"``.
EMOTION_NULL_SEP = "|within-emotion:"


#: Suffix of a direction refitted on ratings residualised on the gold emotion (kinds ``residualised``
#: and ``residualised_null`` of a steering table).
RESIDUALISED = "|residualised"
#: The ``reference`` value of the alignment rows of the residualised directions.
RESIDUALISED_REFERENCE = "residualised"


def emotion_null_name(direction: str, j: int) -> str:
    """Name of the ``j``-th within-emotion-permutation refit of ``direction`` in a steering table."""
    return f"{direction}{EMOTION_NULL_SEP}{j}"


def alignment_units(terms: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, list[tuple[str, float]]]:
    """Group directions that differ only by sign into one test: ``{unit: [(direction, orientation)]}``.

    ``pleasantness+`` and ``pleasantness-`` steer along one axis; counting them as two
    hypotheses (or averaging their null scores, which cancel) is wrong. A unit's orientation is
    fixed by its alphabetically first term being positive; each member carries ``+1``/``-1``
    relative to it. The unit is named by its positive orientation, with ``±`` when both are steered.
    """
    groups: dict[tuple, list[tuple[str, float]]] = {}
    for direction, t in terms.items():
        ordered = sorted((name, float(sign)) for name, sign in t)
        orient = 1.0 if ordered[0][1] > 0 else -1.0
        key = tuple((name, sign * orient) for name, sign in ordered)
        groups.setdefault(key, []).append((direction, orient))
    out = {}
    for key, members in groups.items():
        base = ",".join(f"{name}{'+' if sign > 0 else '-'}" for name, sign in key)
        name = base[:-1] + "±" if len({o for _, o in members}) > 1 and len(key) == 1 else \
            (base + " ±" if len({o for _, o in members}) > 1 else members[0][0])
        out[name] = members
    return out


@dataclass
class Alignment:
    """Agreement of steering effects with the human reference, and which null each p-value is against.

    ``score``: mean over test units (± pairs are one unit) of the mean Spearman ρ(effect row,
    reference row) of their members -- the headline. ``p_value``: against norm-matched random
    directions (``null = "random"``; a draw replaces each unit's directions by a different random
    direction, oriented like the member it replaces); ``p_emotion``: against the same directions
    refitted on ratings permuted within each emotion (``"emotion"``, the test of appraisal
    information *beyond* emotion). ``units``: per unit, its score, both p-values and their Holm
    adjustment across units. ``spearman``/``sign_agreement``: over all cells pooled.
    """

    score: float
    spearman: float
    sign_agreement: float
    p_value: float
    n_random: int
    per_direction: pd.DataFrame
    cells: pd.DataFrame
    random_scores: np.ndarray
    p_emotion: float = float("nan")
    n_emotion: int = 0
    emotion_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    units: pd.DataFrame = field(default_factory=pd.DataFrame)
    random_names: list[str] = field(default_factory=list)

    def as_rows(self) -> list[dict]:
        def mean(x):
            x = np.asarray(x, dtype=float)
            x = x[np.isfinite(x)]
            return float(x.mean()) if x.size else np.nan

        common = {"n_random": self.n_random, "n_emotion_null": self.n_emotion, "n_units": len(self.units)}
        rows = [
            {"metric": "alignment", "value": self.score, "p_value": self.p_value, "null": "random", **common},
            {"metric": "alignment_beyond_emotion", "value": self.score, "p_value": self.p_emotion, "null": "emotion",
             **common},
            {"metric": "spearman", "value": self.spearman, "p_value": np.nan, "null": "", **common},
            {"metric": "sign_agreement", "value": self.sign_agreement, "p_value": np.nan, "null": "", **common},
            {"metric": "random_alignment_mean", "value": mean(self.random_scores), "p_value": np.nan, "null": "random",
             **common},
            {"metric": "emotion_null_alignment_mean", "value": mean(self.emotion_scores), "p_value": np.nan,
             "null": "emotion", **common},
        ]
        for u in self.units.itertuples():
            rows.append({"metric": "unit_alignment", "unit": u.unit, "value": u.score, "p_value": u.p_random,
                         "p_holm": u.p_random_holm, "null": "random", **common})
            rows.append({"metric": "unit_alignment_beyond_emotion", "unit": u.unit, "value": u.score,
                         "p_value": u.p_emotion, "p_holm": u.p_emotion_holm, "null": "emotion", **common})
        return rows


def _emotion_null_rows(emotion_effects: pd.DataFrame | None, directions, cols) -> dict[str, np.ndarray]:
    """``{direction: [perm j, emotion]}`` (ordered by ``j``) from rows named :func:`emotion_null_name`."""
    out: dict[str, np.ndarray] = {}
    if emotion_effects is None or not len(emotion_effects):
        return out
    parts = [str(name).rpartition(EMOTION_NULL_SEP) for name in emotion_effects.index]
    M = emotion_effects.reindex(columns=cols).to_numpy(dtype=float)
    for d in directions:
        rows = [(int(j), i) for i, (base, _, j) in enumerate(parts) if base == d]
        if rows:
            out[d] = M[[i for _, i in sorted(rows)]]
    return out


def alignment(effects: pd.DataFrame, reference: pd.DataFrame, random_effects: pd.DataFrame | None = None,
              *, units: Mapping[str, Sequence[tuple[str, float]]] | None = None,
              emotion_effects: pd.DataFrame | None = None) -> Alignment:
    """Compare an effect matrix ``[direction, emotion]`` with its reference rows (same index).

    ``units`` (:func:`alignment_units`; default: every direction its own unit, orientation +1) says
    which directions form one test. ``random_effects`` ``[random direction, emotion]``: the
    controls' effect rows. Unit ``u``'s null draw from random ``r`` is the mean over its members
    ``m`` of ρ(o_m · effect_r, reference_m) -- the negated random row stands for the random
    direction steered the other way, so a ± pair's null does not cancel to 0. For the headline
    score, draw ``j`` gives each unit a different random direction (the ``j + u``-th, cyclically).
    ``emotion_effects``: rows named :func:`emotion_null_name` (``direction``, perm ``j``); draw
    ``j`` scores every unit with its members' ``j``-th refit.
    """
    cols = [c for c in effects.columns if c in reference.columns]
    if not cols or not set(effects.index) <= set(reference.index):
        raise EmolensError("effects and reference do not share directions and emotions",
                           "index both by direction and give emotion columns")
    E = effects[cols].astype(float)
    R = reference.loc[E.index, cols].astype(float)
    units = {d: [(d, 1.0)] for d in E.index} if units is None else \
        {u: [(d, o) for d, o in m if d in E.index] for u, m in units.items()}
    units = {u: m for u, m in units.items() if m}
    rho = {d: float(_spearman_rows(E.loc[[d]].to_numpy(), R.loc[d].to_numpy())[0]) for d in E.index}
    per = pd.DataFrame({
        "direction": E.index,
        "spearman": [rho[d] for d in E.index],
        "sign_agreement": [_sign_agreement(E.loc[d].to_numpy(), R.loc[d].to_numpy()) for d in E.index],
    })
    unit_names = list(units)
    unit_score = np.array([np.nanmean([rho[d] for d, _ in units[u]]) if any(np.isfinite(rho[d])
                           for d, _ in units[u]) else np.nan for u in unit_names])
    score = float(np.nanmean(unit_score)) if np.isfinite(unit_score).any() else float("nan")
    # random null: [unit, random]
    rnd_names: list[str] = []
    rnd_unit = np.zeros((len(unit_names), 0))
    if random_effects is not None and len(random_effects):
        rnd = random_effects[cols].astype(float)
        rnd_names = [str(n) for n in rnd.index]
        M = rnd.to_numpy()
        rnd_unit = np.stack([np.nanmean(np.stack([_spearman_rows(o * M, R.loc[d].to_numpy())
                                                  for d, o in units[u]]), 0) for u in unit_names])
    n_r = rnd_unit.shape[1]
    null = np.array([np.nanmean([rnd_unit[k, (j + k) % n_r] for k in range(len(unit_names))])
                     for j in range(n_r)]) if n_r else np.zeros(0)
    # emotion-only null: [unit, perm]
    emo = _emotion_null_rows(emotion_effects, set(E.index), cols)
    n_e = min((len(v) for v in emo.values()), default=0) if all(d in emo for m in units.values() for d, _ in m) \
        else 0
    emo_unit = np.zeros((len(unit_names), n_e))
    if n_e:
        emo_unit = np.stack([np.nanmean(np.stack([_spearman_rows(emo[d][:n_e], R.loc[d].to_numpy())
                                                  for d, _ in units[u]]), 0) for u in unit_names])
    emo_null = np.nanmean(emo_unit, 0) if n_e else np.zeros(0)
    p_rand = np.array([permutation_p(s, rnd_unit[k]) for k, s in enumerate(unit_score)]) if n_r \
        else np.full(len(unit_names), np.nan)
    p_emo = np.array([permutation_p(s, emo_unit[k]) for k, s in enumerate(unit_score)]) if n_e \
        else np.full(len(unit_names), np.nan)
    unit_frame = pd.DataFrame({
        "unit": unit_names, "directions": [",".join(d for d, _ in units[u]) for u in unit_names],
        "score": unit_score, "p_random": p_rand, "p_random_holm": adjust(p_rand, "holm"),
        "p_emotion": p_emo, "p_emotion_holm": adjust(p_emo, "holm"),
    })
    e_flat, r_flat = E.to_numpy().ravel(), R.to_numpy().ravel()
    cells = pd.DataFrame({"direction": np.repeat(E.index.to_numpy(), len(cols)),
                          "emotion": np.tile(cols, len(E)), "effect": e_flat, "reference": r_flat})
    finite = null[np.isfinite(null)]
    return Alignment(score, _spearman(e_flat, r_flat), _sign_agreement(e_flat, r_flat),
                     permutation_p(score, null), int(finite.size), per, cells, null,
                     permutation_p(score, emo_null), int(np.isfinite(emo_null).sum()), emo_null, unit_frame,
                     rnd_names)


def effect_matrix(frame: pd.DataFrame, kind: str = "real", metric: str = "delta_logp") -> pd.DataFrame:
    """``[direction, label]`` of one metric from a slice of the steering table (one window/β/position)."""
    sub = frame[(frame["kind"] == kind) & (frame["metric"] == metric)]
    if sub.empty:
        return pd.DataFrame()
    return sub.groupby(["direction", "label"], sort=True)["value"].mean().unstack("label")


#: The columns a searched setting is identified by (those present in a table are used).
SEARCH_KEYS: tuple[str, ...] = ("method", "partial", "scale", "fit", "window", "layers", "beta", "position")


def sweep_alignment(frame: pd.DataFrame, reference: pd.DataFrame, terms: Mapping[str, Sequence[tuple[str, float]]]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Alignment per searched setting (method, window, β, position, ...) of a steering table:
    ``(alignment rows, cells)``.

    ``terms`` maps each real direction name to its ``(appraisal, sign)`` terms; directions with a
    term outside the reference (e.g. emotions) are left out; ± pairs form one test unit
    (:func:`alignment_units`). Rows of kind ``random`` are the random null, rows of kind
    ``emotion_null`` (named :func:`emotion_null_name`) the emotion-only null. β = 0 rows are skipped.

    When more than one setting was searched, one ``best_alignment`` row (p against random
    directions) and one ``best_alignment_beyond_emotion`` row (p against the emotion-only null)
    report the highest alignment over *all* of them -- every method, position, window and β in
    the table -- with max-statistic p-values: each null draw (the same random direction or the
    same rating permutation in every setting) contributes its best score over the same settings.
    ``n_settings`` says how many were searched.
    """
    usable = {d: t for d, t in terms.items() if all(name in reference.index for name, _ in t)}
    rows, cells = [], []
    if not usable:
        return pd.DataFrame(rows), pd.DataFrame(cells)
    ref_rows = pd.DataFrame({d: reference_for(t, reference) for d, t in usable.items()}).T
    units = alignment_units(usable)
    keys = [k for k in SEARCH_KEYS if k in frame.columns]
    searched: list[tuple[dict, Alignment]] = []
    frame = frame[(frame["beta"] != 0) & (frame["metric"] == "delta_logp")]
    for key, sub in frame.groupby(keys, dropna=False):
        eff = effect_matrix(sub)
        eff = eff.loc[[d for d in eff.index if d in usable]]
        if eff.empty:
            continue
        res = alignment(eff, ref_rows.loc[eff.index], effect_matrix(sub, "random"), units=units,
                        emotion_effects=effect_matrix(sub, "emotion_null"))
        meta = dict(zip(keys, key, strict=True))
        rows += [{**meta, **r, "n_directions": len(eff)} for r in res.as_rows()]
        cells.append(res.cells.assign(**meta))
        searched.append((meta, res))
    if len(searched) > 1:
        rows += _best_rows(searched)
    return pd.DataFrame(rows), (pd.concat(cells, ignore_index=True) if cells else pd.DataFrame())


def residualised_alignment(frame: pd.DataFrame, reference: pd.DataFrame,
                           terms: Mapping[str, Sequence[tuple[str, float]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`sweep_alignment` of the directions refitted on ratings **residualised on the gold emotion**.

    Why: a direction fitted on raw ratings picks up the emotion geometry through the rating-emotion
    association, so even a model that knows only the emotion aligns with theory. A direction fitted
    on residuals (rating minus its emotion's mean) holds no emotion-mean information; if steering
    it still moves emotions the way the human profile says, the model carries appraisal variation
    beyond the emotion. The reference row stays the human profile of raw ratings: a profile of
    *residualised* ratings is zero by construction (each emotion's mean residual is 0), and the
    expectation for "more of this appraisal" is the same. The p-value to read is ``null =
    emotion``: refits on the residuals permuted within each emotion, exchangeable with the real fit
    when nothing beyond the emotion is there (:func:`emolens.steering.nulls.residualised_banks`).
    No p-value against random directions is reported for them: a residualised direction lives in
    the within-emotion part of the activations, the covariance-matched random directions mostly in
    the emotion part, so the two are not exchangeable even when nothing beyond the emotion is
    there -- simulated, an emotion-only model's residualised directions beat random directions in
    21% of 200 studies at p <= 0.05 (4.5% against the within-emotion refits).
    Rows carry ``reference = "residualised"``; none when the table has no residualised rows.
    """
    if "kind" not in frame or not frame.kind.isin(["residualised"]).any():
        return pd.DataFrame(), pd.DataFrame()
    sub = frame[frame.kind.isin(["residualised", "residualised_null"])].copy()
    sub["direction"] = sub.direction.str.replace(RESIDUALISED, "", regex=False)
    sub["kind"] = sub.kind.map({"residualised": "real", "residualised_null": "emotion_null"})
    align, cells = sweep_alignment(sub, reference, terms)
    if len(align):  # no random directions were scored for them: drop the rows of that (invalid) null
        align = align[align["null"] != "random"].assign(reference=RESIDUALISED_REFERENCE, n_random=0)
    return align, cells


def _best_rows(searched: list[tuple[dict, Alignment]]) -> list[dict]:
    """The best alignment over every searched setting, with max-statistic p-values against both nulls."""
    scores = np.array([res.score for _, res in searched], dtype=float)
    n = len(searched)
    if not np.isfinite(scores).any():
        return [{**searched[0][0], "metric": m, "value": np.nan, "p_value": np.nan, "null": null, "n_settings": n}
                for m, null in (("best_alignment", "random"), ("best_alignment_beyond_emotion", "emotion"))]
    i = int(np.nanargmax(scores))
    names = sorted({name for _, res in searched for name in res.random_names})
    rnd = np.full((n, len(names)), np.nan)
    for s, (_, res) in enumerate(searched):
        # draw j of a setting is keyed by the random direction the first unit used (the same vector everywhere)
        for j, name in enumerate(res.random_names[:len(res.random_scores)]):
            rnd[s, names.index(name)] = res.random_scores[j]
    n_e = max((res.emotion_scores.size for _, res in searched), default=0)
    emo = np.full((n, n_e), np.nan)
    for s, (_, res) in enumerate(searched):
        emo[s, :res.emotion_scores.size] = res.emotion_scores
    out = []
    for metric, null_name, null in (("best_alignment", "random", rnd),
                                    ("best_alignment_beyond_emotion", "emotion", emo)):
        p = max_statistic_p(scores, null)[i] if null.shape[1] else np.nan
        out.append({**searched[i][0], "metric": metric, "value": float(scores[i]), "p_value": float(p),
                    "null": null_name, "n_random": int(np.isfinite(null).any(0).sum()), "n_settings": n,
                    "n_emotion_null": int(n_e)})
    return out


def log_normalise(scores: np.ndarray) -> np.ndarray:
    """Label log-probabilities ``[N, K]`` renormalised over the labels (rows sum to 1 in probability):
    every steering effect is a difference of these, whichever head scored the labels."""
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def alignment_peak(result, reference: pd.DataFrame, terms: Mapping[str, Sequence[tuple[str, float]]], *,
                   position: str = "last", n_boot: int = 200, level: float = 0.95, seed: int = 0) -> dict | None:
    """Where the theory alignment peaks over the swept windows, with a bootstrap interval of *where*.

    ``result`` is a :class:`~emolens.steering.sweep.SweepResult` (its per-item label scores). Each
    resample draws steered items with replacement, recomputes every real direction's mean Δ log p
    per (window, β), the alignment score per setting (mean over test units) and the window of its
    maximum; the interval is the percentile interval of those windows, ``share_at_peak`` the share
    of resamples that peak at the reported window. None when fewer than two settings were swept.
    """
    usable = {d: t for d, t in terms.items() if all(name in reference.index for name, _ in t)}
    frame = result.frame
    labels = list(dict.fromkeys(frame.loc[frame.metric == "delta_logp", "label"]))
    cols = [c for c in labels if c in reference.columns]
    idx = [labels.index(c) for c in cols]
    ref_rows = {d: reference_for(t, reference)[cols].to_numpy(dtype=float) for d, t in usable.items()}
    units = alignment_units(usable)
    settings: dict[tuple, dict[str, np.ndarray]] = {}
    for c, sc in zip(result.conditions, result.scores, strict=True):
        if c.kind == "real" and c.direction in usable and c.position == position:
            base = result.clean[(c.layers, c.position)]
            settings.setdefault((c.window, c.beta), {})[c.direction] = \
                (log_normalise(sc) - log_normalise(base))[:, idx]
    if len(settings) < 2:
        return None
    keys = sorted(settings)
    n = next(iter(settings[keys[0]].values())).shape[0]

    rng = np.random.default_rng(seed)
    weights = np.vstack([np.ones(n)] + [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
    grid = _setting_scores(weights.astype(float), [settings[k] for k in keys], ref_rows, units)
    observed = grid[0]
    peak = keys[int(np.argmax(observed))]
    where = np.array([keys[int(j)][0] for j in np.argmax(grid[1:], axis=1)], dtype=float)
    a = (1 - level) / 2
    lo, hi = np.quantile(where, [a, 1 - a], method="inverted_cdf")
    return {"peak_window": int(peak[0]), "peak_beta": float(peak[1]), "value": float(observed.max()),
            "window_ci_low": int(lo), "window_ci_high": int(hi), "share_at_peak": float((where == peak[0]).mean()),
            "n_boot": n_boot, "n_items": int(n), "n_settings": len(keys), "position": position}


def _setting_scores(weights: np.ndarray, settings: list[dict[str, np.ndarray]], ref_rows: dict[str, np.ndarray],
                    units: Mapping[str, Sequence[tuple[str, float]]]) -> np.ndarray:
    """Alignment score of every setting under every item weighting: ``[rows of weights, settings]``.

    Row ``r`` weights the items (all ones: the observed score; bootstrap counts: a resample); a
    setting's score is the mean over test units of the mean Spearman ρ of its directions' weighted
    mean effects with their references, ``-inf`` where no unit is defined. All weightings go through
    one ranking per (setting, direction), not one ``spearmanr`` call each: a paper-sized sweep has
    hundreds of settings x 200 resamples.
    """
    total = weights.sum(1, keepdims=True)
    out = np.empty((weights.shape[0], len(settings)))
    for j, effects in enumerate(settings):
        per_unit = []
        for members in units.values():
            rhos = [_spearman_each(weights @ effects[d] / total, ref_rows[d]) for d, _ in members if d in effects]
            with warnings.catch_warnings():  # a unit undefined under every weighting is NaN, as before
                warnings.simplefilter("ignore", RuntimeWarning)
                per_unit.append(np.nanmean(rhos, axis=0) if rhos else np.full(weights.shape[0], np.nan))
        per_unit = np.vstack(per_unit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, j] = np.where(np.isfinite(per_unit).any(0), np.nanmean(per_unit, axis=0), -np.inf)
    return out


def _spearman_each(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`_spearman` of every row of ``A`` with ``b``, each row over its own finite entries."""
    if np.isfinite(A).all():  # then one ranking of all rows gives the same ρ (NaN for a constant row)
        return _spearman_rows(A, b)
    return np.array([_spearman(row, b) for row in A])


def headline(align: pd.DataFrame) -> str:
    """One sentence for a CLI line or summary: the best alignment, how many settings were searched,
    and its p-values, each naming its null (empty when nothing was aligned); then the same for the
    directions fitted on residualised ratings, when the table has them."""
    if align is None or not len(align):
        return ""
    main, resid = split_reference(align)
    if resid is not None and len(resid):
        return headline(main) + residualised_headline(resid)
    best = align[align.metric == "best_alignment"].dropna(subset=["value"])
    if not len(best):
        best = align[align.metric == "alignment"].dropna(subset=["value"]).sort_values("value").tail(1)
    if not len(best):
        return ""
    b = best.iloc[0]
    n_set = n_settings_of(b)
    beyond = align[(align.metric == ("best_alignment_beyond_emotion" if n_set > 1 else "alignment_beyond_emotion"))
                   & (align.window == b.window) & (align.beta == b.beta)] if n_set == 1 else \
        align[align.metric == "best_alignment_beyond_emotion"]
    text = (f"; best theory alignment {b.value:.2f} (window {b.window}, beta {b.beta:g}; {searched_text(b)}): "
            f"p={b.p_value:.2g} vs {int(b.n_random)} random directions")
    if len(beyond) and np.isfinite(beyond.p_value.iloc[0]):
        text += (f", p={beyond.p_value.iloc[0]:.2g} vs {int(beyond.n_emotion_null.iloc[0])} within-emotion "
                 "permutation refits (appraisal beyond emotion)")
    else:
        text += "; no emotion-only null was run, so this does not show appraisal information beyond emotion"
    return text


def split_reference(align: pd.DataFrame | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(rows scored against the human profile, rows of the directions fitted on residualised ratings).

    One place decides which alignment rows are which, so the CLI line, the report and its findings
    never read the residualised rows as the headline alignment (they answer another question)."""
    if align is None or "reference" not in align:
        return align, None
    is_resid = align.reference == RESIDUALISED_REFERENCE
    return align[~is_resid], align[is_resid]


def best_residualised_row(resid: pd.DataFrame | None) -> pd.Series | None:
    """The residualised directions' headline row: the max-statistic row when several settings were
    searched, else the single setting's own row; ``None`` when nothing could be aligned."""
    if resid is None or not len(resid):
        return None
    best = resid[resid.metric == "best_alignment_beyond_emotion"].dropna(subset=["value"])
    if not len(best):  # one setting searched: its own row
        best = resid[resid.metric == "alignment_beyond_emotion"].dropna(subset=["value"]).sort_values("value")
    return best.iloc[-1] if len(best) else None


def searched_text(row: pd.Series) -> str:
    """Where a headline row's value comes from: the best of the searched settings (max statistic), or
    the test items at the setting chosen on other items (the selected design, ``steering.selection``)."""
    n_set = n_settings_of(row)
    if row.get("design") == "selected":
        return (f"the setting chosen on {int(row.n_selection)} selection items among {n_set} searched, measured "
                f"on {int(row.n_test)} other test items")
    return f"best of {n_set} searched setting{'s' if n_set > 1 else ''}"


def n_settings_of(row: pd.Series) -> int:
    """How many settings a headline row's max statistic ran over (1 when the column is absent)."""
    return int(row.n_settings) if "n_settings" in row and pd.notna(row.n_settings) else 1


def residualised_headline(align: pd.DataFrame) -> str:
    """The residualised directions' best alignment and its p against the within-emotion refits."""
    b = best_residualised_row(align)
    if b is None:
        return ""
    p = f"p={b.p_value:.2g} vs {int(b.n_emotion_null)} within-emotion refits of the residuals" \
        if pd.notna(b.p_value) else "no within-emotion refits were run, so no p-value"
    return (f"; directions fit on ratings residualised on emotion: alignment {b.value:.2f} (window {b.window}, "
            f"beta {b.beta:g}; {searched_text(b)}), {p}")
