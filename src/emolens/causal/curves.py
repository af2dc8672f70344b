"""Peak windows of the ablation, patching and knockout curves, with their intervals and corrected p-values.

Every causal analysis measures one curve per (kind, site, position, head, span) over layer windows,
and the report reads each curve for its peak. This module turns a :class:`CausalResult` into
``peaks.parquet``: per curve, the peak window, a bootstrap interval on its *location* (whole items
resampled, :func:`emolens.stats.peak_location`), and a p-value for "the peak effect is beyond the
null", max-statistic corrected over **every** window, site, position, kind and head of the
analysis (``n_settings``). Each analysis gets the null that matches its question:

* **Ablation** -- per item, damage = the clean prediction's log-probability lost. Any edit of an
  activation does some damage, so "zeroing hurts" is no finding; the question is whether a window
  matters more than a perturbation of the same size. When norm-matched ``random`` ablation ran at
  the same (site, window, position, head), the curve of every other kind is the per-item *excess*
  damage over it, and the null flips the sign of each item's excess (zero and random ablation
  exchangeable per item under H0). The ``random`` curve itself, and every curve when no random
  ablation ran, is plain damage with the sign-flip null "no effect in either direction" -- a
  weaker claim, which the ``null`` column names.
* **Patching** -- per pair, the shift of the target's log-probability margin towards the source's
  clean prediction (the normalised logit difference's numerator; its denominator is the same at
  every window, so both peak at the same window). Patching any other item's activation moves the
  target towards the model's common labels whatever the donor's emotion, so the null keeps the
  patched scores and *shuffles which donor's label* each pair is scored towards (a permutation of
  the source labels across pairs, the same permutation at every setting): the shift must be
  towards the donor's own emotion, not towards whatever donors tend to be. No extra forwards.
* **Knockout** -- per item, damage as for ablation, against the sign-flip null "no effect"; the
  knockout cuts only direct cue -> context edges, so its effect is a lower bound anyway.

The max statistic runs on standardised statistics for ablation and knockout (sites differ tenfold
in scale; :mod:`emolens.stats.curves`) and on raw margin shifts for patching, whose settings share
units and whose donor-shuffle spread grows with the effect (standardising halved the power to find
a planted peak in ``tests/test_causal_curves.py``).

Curves on fewer than :data:`MIN_CLUSTERS` items are flagged, not read as findings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emolens.stats import peak_location
from emolens.stats.curves import column_means, peak_p_values, sign_flip_null

__all__ = ["MIN_CLUSTERS", "N_DRAWS", "PEAKS_FILE", "PEAK_COLUMNS", "peak_table"]

#: The file every causal analysis writes its peaks to (beside its tidy table).
PEAKS_FILE = "peaks.parquet"
#: Null draws (sign flips or donor shuffles) behind every corrected p-value.
N_DRAWS = 999
#: Fewer items than this and a curve's peak is flagged rather than read.
MIN_CLUSTERS = 10
PEAK_COLUMNS = ("analysis", "kind", "site", "position", "head", "window_span", "effect", "null", "peak_window",
                "window_ci_low", "window_ci_high", "share_at_peak", "peak_value", "peak_effect", "p_value",
                "p_uncorrected", "n_settings", "n_windows", "n_rows", "n_clusters", "n_draws", "flag")

NULLS = {"excess": "sign flip of per-item excess damage over norm-matched random ablation",
         "damage": "sign flip of per-item damage (no effect in either direction)",
         "donor": "donor labels shuffled across pairs (shift not towards the donor's own emotion)"}


def _curves(conditions: Sequence) -> dict[tuple, list[tuple[int, int]]]:
    """``{(kind, site, position, head, span): [(window centre, condition index)]}`` sorted by centre."""
    out: dict[tuple, list[tuple[int, int]]] = {}
    for i, c in enumerate(conditions):
        if c.window is None:
            continue
        pos = c.position if isinstance(c.position, (int, str)) else str(c.position)
        out.setdefault((c.kind, c.site, pos, c.head, c.window.span), []).append((c.window.center, i))
    return {k: sorted(v) for k, v in out.items()}


def _damage(result) -> list[np.ndarray]:
    clean = np.asarray(result.clean_scores, dtype=float)
    rows, pred = np.arange(len(clean)), clean.argmax(1)
    return [clean[rows, pred] - np.asarray(s, dtype=float)[rows, pred] for s in result.scores]


def _item_effects(result, analysis: str) -> tuple[dict[tuple, tuple[np.ndarray, np.ndarray, str]], np.ndarray]:
    """Per curve ``(centres, V[items, windows], null key)`` for ablation and knockout; clusters = items."""
    damage = _damage(result)
    curves = _curves(result.conditions)
    random_at = {(c.site, c.position if isinstance(c.position, (int, str)) else str(c.position), c.head,
                  c.window.span, c.window.center): i
                 for i, c in enumerate(result.conditions) if c.kind == "random" and c.window is not None}
    out, baseline_used = {}, False
    for key, members in curves.items():
        kind, site, pos, head, span = key
        pairs = [random_at.get((site, pos, head, span, centre)) for centre, _ in members]
        excess = analysis == "ablation" and kind != "random" and all(j is not None for j in pairs)
        baseline_used |= excess
        V = np.stack([damage[i] - (damage[j] if excess else 0.0) for (_, i), j in zip(members, pairs, strict=True)],
                     1)
        out[key] = (np.array([c for c, _ in members]), V, "excess" if excess else "damage")
    if baseline_used:  # random ablation served as the baseline: it is the control, not a searched setting
        out = {k: v for k, v in out.items() if not (k[0] == "random" and v[2] == "damage")}
    return out, np.arange(len(result.clean_scores))


def _patch_effects(result) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Per curve ``(centres, numerator V[pairs, windows], "donor")``, clusters (target item), source and
    target labels of the valid pairs, and the pieces the donor-shuffle null needs."""
    where = {item: k for k, item in enumerate(result.ids)}
    src = result.pairs["source_id"].map(where).to_numpy()
    tgt = result.pairs["target_id"].map(where).to_numpy()
    clean = np.asarray(result.clean_scores, dtype=float)
    s, t = clean[src].argmax(1), clean[tgt].argmax(1)
    valid = np.flatnonzero(s != t)
    s, t, src, tgt = s[valid], t[valid], src[valid], tgt[valid]
    rows = np.arange(len(valid))
    ct = clean[tgt]
    base = ct[rows, s] - ct[rows, t]
    den = clean[src][rows, s] - clean[src][rows, t] - base
    patched = {i: np.asarray(sc, dtype=float)[valid] for i, sc in enumerate(result.scores)}
    out = {}
    for key, members in _curves(result.conditions).items():
        V = np.stack([patched[i][rows, s] - patched[i][rows, t] - base for _, i in members], 1)
        out[key] = (np.array([c for c, _ in members]), V, "donor")
    return out, tgt, den, {"s": s, "t": t, "ct": ct, "patched": patched}


def _donor_null(curves: dict, members: dict, parts: dict, n_draws: int, seed: int) -> dict[tuple, np.ndarray]:
    """Column means of the margin shift towards shuffled donors' labels: ``{curve: [windows, n_draws]}``."""
    s, t, ct, patched = parts["s"], parts["t"], parts["ct"], parts["patched"]
    n = len(s)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(n_draws)]) if n else np.zeros((n_draws, 0), int)
    lab = s[perms]  # [B, n]
    ok = lab != t[None, :]
    rows = np.arange(n)[None, :]
    count = ok.sum(1).astype(float)
    base = ct[rows, lab] - ct[rows, t[None, :]]
    out = {}
    for key in curves:
        cols = []
        for _, i in members[key]:
            P = patched[i]
            shift = np.where(ok, P[rows, lab] - P[rows, t[None, :]] - base, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append(shift.sum(1) / np.where(count > 0, count, np.nan))
        out[key] = np.stack(cols)
    return out


def peak_table(result, analysis: str, *, n_draws: int = N_DRAWS, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per curve of ``result`` (``analysis``: ablation, patching or knockout); see the module docstring."""
    if analysis not in ("ablation", "patching", "knockout"):
        raise ValueError(f"unknown causal analysis {analysis!r}")
    den = None
    if analysis == "patching":
        if result.pairs is None or not len(result.pairs):
            return pd.DataFrame(columns=list(PEAK_COLUMNS))
        curves, clusters, den, parts = _patch_effects(result)
        null = _donor_null(curves, _curves(result.conditions), parts, n_draws, seed)
    else:
        curves, clusters = _item_effects(result, analysis)
        stacked = sign_flip_null(np.concatenate([v for _, v, _ in curves.values()], 1), clusters, n_draws=n_draws,
                                 seed=seed) if curves else np.zeros((0, n_draws))
        null, at = {}, 0
        for key, (centres, _, _) in curves.items():
            null[key] = stacked[at:at + len(centres)]
            at += len(centres)
    if not curves:
        return pd.DataFrame(columns=list(PEAK_COLUMNS))
    observed = np.concatenate([column_means(V) for _, V, _ in curves.values()])
    all_null = np.concatenate([null[k] for k in curves])
    n_settings = len(observed)
    rows, offset = [], 0
    for key, (centres, V, null_key) in curves.items():
        kind, site, pos, head, span = key
        means = column_means(V)
        n_clusters = len(np.unique(clusters)) if len(V) else 0
        if not np.isfinite(means).any():
            offset += len(centres)
            continue
        k = int(np.nanargmax(means))
        loc = peak_location(V, centres, clusters, n_boot=n_boot, seed=seed)
        p, p_single = peak_p_values(observed, all_null, offset + k, standardised=analysis != "patching")
        value = float(means[k])
        if den is not None:  # patching reports the normalised logit difference (ratio of sums) at the peak
            num = V[:, k]
            value = float(num.sum() / den.sum()) if den.sum() != 0 else float("nan")
        flag = f"only {n_clusters} items: not a finding" if n_clusters < MIN_CLUSTERS else ""
        rows.append({"analysis": analysis, "kind": kind, "site": site, "position": str(pos),
                     "head": np.nan if head is None else float(head), "window_span": int(span),
                     "effect": {"excess": "excess_damage", "damage": "damage", "donor": "normalised_logit_diff"}[
                         null_key], "null": NULLS[null_key], "peak_window": int(centres[k]),
                     "window_ci_low": loc.low, "window_ci_high": loc.high, "share_at_peak": loc.share_at_peak,
                     "peak_value": value, "peak_effect": float(means[k]), "p_value": p, "p_uncorrected": p_single,
                     "n_settings": n_settings, "n_windows": len(centres), "n_rows": int(np.isfinite(V[:, k]).sum()),
                     "n_clusters": n_clusters, "n_draws": n_draws, "flag": flag})
        offset += len(centres)
    return pd.DataFrame(rows, columns=list(PEAK_COLUMNS))
