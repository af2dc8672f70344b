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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS
from emolens.probes.evaluation import human_baseline


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


def _sign_agreement(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
    return float((np.sign(x[ok]) == np.sign(y[ok])).mean()) if ok.any() else float("nan")


@dataclass
class Alignment:
    """Agreement of steering effects with the human reference.

    ``score``: mean over directions of Spearman ρ(effect row, reference row) -- the headline;
    ``spearman``/``sign_agreement``: over all cells pooled; ``p_value``: share of random
    directions (plus one, Laplace-style) scoring at least ``score``; ``cells``: the long table
    behind it (direction, emotion, effect, reference); ``random_scores``: the null sample.
    """

    score: float
    spearman: float
    sign_agreement: float
    p_value: float
    n_random: int
    per_direction: pd.DataFrame
    cells: pd.DataFrame
    random_scores: np.ndarray

    def as_rows(self) -> list[dict]:
        null = self.random_scores[np.isfinite(self.random_scores)]
        return [
            {"metric": "alignment", "value": self.score, "p_value": self.p_value, "n_random": self.n_random},
            {"metric": "spearman", "value": self.spearman, "p_value": np.nan, "n_random": self.n_random},
            {"metric": "sign_agreement", "value": self.sign_agreement, "p_value": np.nan,
             "n_random": self.n_random},
            {"metric": "random_alignment_mean", "value": float(null.mean()) if null.size else np.nan,
             "p_value": np.nan, "n_random": self.n_random},
        ]


def alignment(effects: pd.DataFrame, reference: pd.DataFrame,
              random_effects: pd.DataFrame | None = None) -> Alignment:
    """Compare an effect matrix ``[direction, emotion]`` with its reference rows (same index).

    ``random_effects`` ``[random direction, emotion]`` are effect rows of controls; each gets the
    score it would have had in place of every real direction (mean ρ against all reference rows),
    giving the null distribution of ``score``.
    """
    cols = [c for c in effects.columns if c in reference.columns]
    if not cols or not set(effects.index) <= set(reference.index):
        raise EmolensError("effects and reference do not share directions and emotions",
                           "index both by direction and give emotion columns")
    E = effects[cols].astype(float)
    R = reference.loc[E.index, cols].astype(float)
    per = pd.DataFrame({
        "direction": E.index,
        "spearman": [_spearman(E.loc[d].to_numpy(), R.loc[d].to_numpy()) for d in E.index],
        "sign_agreement": [_sign_agreement(E.loc[d].to_numpy(), R.loc[d].to_numpy()) for d in E.index],
    })
    score = float(np.nanmean(per["spearman"])) if per["spearman"].notna().any() else float("nan")
    e_flat, r_flat = E.to_numpy().ravel(), R.to_numpy().ravel()
    null = np.array([])
    if random_effects is not None and len(random_effects):
        rnd = random_effects[cols].astype(float).to_numpy()
        null = np.array([np.nanmean([_spearman(row, R.loc[d].to_numpy()) for d in E.index]) for row in rnd])
    finite = null[np.isfinite(null)]
    p = float((1 + (finite >= score).sum()) / (1 + finite.size)) if finite.size and np.isfinite(score) \
        else float("nan")
    cells = pd.DataFrame({"direction": np.repeat(E.index.to_numpy(), len(cols)),
                          "emotion": np.tile(cols, len(E)), "effect": e_flat, "reference": r_flat})
    return Alignment(score, _spearman(e_flat, r_flat), _sign_agreement(e_flat, r_flat), p, int(finite.size),
                     per, cells, null)


def effect_matrix(frame: pd.DataFrame, kind: str = "real", metric: str = "delta_logp") -> pd.DataFrame:
    """``[direction, label]`` of one metric from a slice of the steering table (one window/β/position)."""
    sub = frame[(frame["kind"] == kind) & (frame["metric"] == metric)]
    return sub.pivot_table(index="direction", columns="label", values="value", aggfunc="mean")


def sweep_alignment(frame: pd.DataFrame, reference: pd.DataFrame, terms: Mapping[str, Sequence[tuple[str, float]]]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Alignment per (window, β, position) of a steering table: ``(alignment rows, cells)``.

    ``terms`` maps each real direction name to its ``(appraisal, sign)`` terms; directions with a
    term outside the reference (e.g. emotions) are left out. β = 0 rows are skipped.

    Besides the per-setting rows, each (method, partial, scale, fit, position) group gets one
    ``best_alignment`` row when it swept more than one window or β: the highest alignment over
    them, at its window and β, with a p-value corrected for picking the best -- each random
    direction (the same seeded vector in every window) contributes its own best score over the
    same settings to the null (a max-statistic permutation test).
    """
    usable = {d: t for d, t in terms.items() if all(name in reference.index for name, _ in t)}
    rows, cells = [], []
    if not usable:
        return pd.DataFrame(rows), pd.DataFrame(cells)
    ref_rows = pd.DataFrame({d: reference_for(t, reference) for d, t in usable.items()}).T
    outer = ["method", "partial", "scale", *(["fit"] if "fit" in frame.columns else [])]
    keys = [*outer, "window", "layers", "beta", "position"]
    searched: dict[tuple, list[tuple[dict, float, dict[str, float]]]] = {}
    for key, sub in frame[frame["beta"] != 0].groupby(keys, dropna=False):
        eff = effect_matrix(sub)
        eff = eff.loc[[d for d in eff.index if d in usable]]
        if eff.empty:
            continue
        rnd = effect_matrix(sub, "random")
        res = alignment(eff, ref_rows.loc[eff.index], rnd)
        meta = dict(zip(keys, key, strict=True))
        rows += [{**meta, **r, "n_directions": len(eff)} for r in res.as_rows()]
        cells.append(res.cells.assign(**meta))
        group = tuple(meta[k] for k in outer) + (meta["position"],)
        null = dict(zip(rnd.index, res.random_scores, strict=True)) if len(rnd) else {}
        searched.setdefault(group, []).append((meta, res.score, null))
    for settings in searched.values():
        if len(settings) < 2:
            continue
        rows.append(_best_row(settings))
    return pd.DataFrame(rows), (pd.concat(cells, ignore_index=True) if cells else pd.DataFrame())


def _best_row(settings: list[tuple[dict, float, dict[str, float]]]) -> dict:
    """The best alignment over settings, with its max-statistic permutation p-value."""
    scores = np.array([s for _, s, _ in settings], dtype=float)
    if not np.isfinite(scores).any():
        meta = settings[0][0]
        return {**meta, "metric": "best_alignment", "value": np.nan, "p_value": np.nan, "n_random": 0,
                "n_settings": len(settings)}
    i = int(np.nanargmax(scores))
    names = sorted({n for _, _, null in settings for n in null})
    # [settings, random directions]: each random direction's score in every searched setting
    null = np.array([[nl.get(n, np.nan) for n in names] for _, _, nl in settings], dtype=float).reshape(-1, len(names))
    seen = np.isfinite(null).any(0)
    null_max = np.nanmax(null[:, seen], axis=0) if seen.any() else np.zeros(0)
    p = float((1 + (null_max >= scores[i]).sum()) / (1 + null_max.size)) if null_max.size else float("nan")
    return {**settings[i][0], "metric": "best_alignment", "value": float(scores[i]), "p_value": p,
            "n_random": int(null_max.size), "n_settings": len(settings)}


# ----------------------------------------------------------------------------------------------
# which setting the steered generations use


def generation_setting(align: pd.DataFrame, conditions: Sequence, centres: Sequence[int], choice: str | int = "best",
                       position: str = "last") -> tuple[int, float]:
    """(window, β) of steered generations: ``best`` -- those of the highest theory alignment at
    ``position`` (the middle window and largest β when nothing was aligned), ``middle`` -- the
    middle window with its largest β, or a centre layer (its largest β)."""
    if choice == "best" and align is not None and len(align):
        head = align[(align.metric == "alignment") & (align.position == position)].dropna(subset=["value"])
        if len(head):
            best = head.sort_values("value", ascending=False).iloc[0]
            return int(best.window), float(best.beta)
    window = centres[len(centres) // 2] if choice in ("best", "middle") else int(choice)
    if window not in centres:
        raise EmolensError(f"generation window {window} is not one of the swept windows {list(centres)}",
                           "pick a swept centre, best or middle")
    return window, max(c.beta for c in conditions if c.window == window)


def generation_conditions(conditions: Sequence, window: int, beta: float, position: str, steer_at: str) -> list:
    """The conditions steered generations continue under, at one (window, β, sweep position): every
    real direction and specificity control plus one random direction, each re-targeted to steer
    ``steer_at`` (``generated``: the last prompt token and every generated token; ``last``; ``prompt``)."""
    from dataclasses import replace

    at = [c for c in conditions if c.beta == beta and c.window == window and c.position == position]
    chosen = [c for c in at if c.kind in ("real", "specificity")] + [c for c in at if c.kind == "random"][:1]
    return [replace(c, position=steer_at) for c in chosen]
