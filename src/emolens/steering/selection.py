"""The ``selected`` null design: choose the steering setting on some steered items, test it on others.

Why: a sweep searches many settings (method × window × β × position; the paper preset 30 windows
× 3 β on a 32-layer model). Testing the best of them with the max statistic
(:func:`emolens.steering.theory.sweep_alignment`) needs every null direction at every setting:
99 covariance-matched random directions plus 99 within-emotion refits of each appraisal
direction and of its residualised refit -- about 1,700 steered conditions per setting, three
quarters of the projected 8B protocol (docs/gpu.md). The ``selected`` design pays for the search
with items instead of null draws:

1. the steered items are split in two, seeded and label-stratified (:func:`split`);
2. the real directions (and a few random ones, for the figures' reference lines) are steered at
   every setting on all steered items -- the descriptive table;
3. the setting whose alignment with the human appraisal profile is highest **on the selection
   items alone** is chosen (:func:`choose`);
4. the nulls run at that one setting, on the **test items alone**, and the p-values are the
   plain permutation p-values there.

The test items never influenced the choice, so their p-value needs no correction for the search
(simulated under three nulls and a planted signal in ``tests/test_statistical_validity.py``).
The price is power: half of the steered items carry the test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emolens.steering import theory
from emolens.steering.sweep import SweepResult, fit_split, layers_text

__all__ = ["DESIGNS", "PARTS", "SWEEP_RANDOM", "choose", "effect_frame", "headline_rows", "split"]

#: ``every``: the nulls at every searched setting, max-statistic p over the search; ``selected``:
#: the setting chosen on selection items, the nulls at that setting on test items (this module).
DESIGNS: tuple[str, ...] = ("every", "selected")
#: What an alignment row's ``part`` says it was computed on: ``sweep`` every steered item at every
#: setting (no p-value in the selected design), ``selection`` the selection items at every setting
#: (what the choice read), ``test`` the test items at the chosen setting (the p-values).
PARTS: tuple[str, ...] = ("sweep", "selection", "test")
#: Random directions steered at every setting in the selected design: reference lines for the
#: figures (their mean), not a null -- the test's random directions run at the chosen setting.
#: Three, as the paper's appraisal surgery has (``random_42..44``, paper-protocol §7.3); each one
#: more is 1/30 of the 8B sweep's work.
SWEEP_RANDOM = 3
#: Offset of the selection split's seed from the run's seed, so it differs from the fit split's.
_SPLIT_SEED = 7919


def split(steered, share: float = 0.5, seed: int = 0):
    """``(selection items, test items)``: a seeded, label-stratified split of the steered items with
    ``share`` of them (rounded by largest remainders, :func:`~emolens.steering.sweep.fit_split`) in the test."""
    return fit_split(steered, share, seed + _SPLIT_SEED)


def effect_frame(result: SweepResult, ids: Sequence[str], kinds: Sequence[str] = ("real", "residualised")
                 ) -> pd.DataFrame:
    """Mean Δ log-probability rows (the columns :func:`theory.sweep_alignment` reads) of ``result``'s
    conditions of ``kinds``, over the items ``ids`` only -- recomputed from the per-item label
    scores, so the choice reads nothing of the other items."""
    where = {item: k for k, item in enumerate(result.dataset.ids)}
    rows = np.array([where[i] for i in ids], dtype=np.int64)
    frame = result.frame
    labels = list(dict.fromkeys(frame.loc[frame.metric == "delta_logp", "label"]))
    common = frame.iloc[0][["method", "partial", "scale", "fit"]].to_dict()
    out = []
    for c, scores in zip(result.conditions, result.scores, strict=True):
        if c.kind not in kinds:
            continue
        base = result.clean[(c.layers, c.position)][rows]
        effect = (theory.log_normalise(scores[rows]) - theory.log_normalise(base)).mean(0)
        out.append(pd.DataFrame({"direction": c.direction, "kind": c.kind, **common, "window": c.window,
                                 "layers": layers_text(c.layers), "beta": c.beta, "position": c.position,
                                 "metric": "delta_logp", "label": labels, "value": effect, "n": len(rows)}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def choose(frame: pd.DataFrame, reference: pd.DataFrame, terms: Mapping[str, Sequence[tuple[str, float]]],
           residualised: bool = False) -> tuple[dict | None, pd.DataFrame]:
    """The setting (a dict of :data:`theory.SEARCH_KEYS`) with the highest alignment score in
    ``frame`` (the selection items' effects), and the per-setting alignment rows it compared.

    ``residualised``: choose among the directions refitted on residualised ratings (their score).
    None when no setting could be scored; ties go to the first setting in table order.
    """
    if residualised:
        align, _ = theory.residualised_alignment(frame, reference, terms)
        metric = "alignment_beyond_emotion"
    else:
        align, _ = theory.sweep_alignment(frame, reference, terms)
        metric = "alignment"
    if not len(align):
        return None, align
    scored = align[align.metric == metric].dropna(subset=["value"])
    if not len(scored):
        return None, scored
    best = scored.loc[scored.value.idxmax()]
    keys = [k for k in theory.SEARCH_KEYS if k in scored]
    return {k: best[k] for k in keys}, scored.assign(p_value=np.nan)


def headline_rows(test_align: pd.DataFrame, n_settings: int, n_selection: int, n_test: int,
                  residualised: bool = False) -> list[dict]:
    """The ``best_alignment`` / ``best_alignment_beyond_emotion`` rows of the selected design: the
    test items' alignment at the chosen setting with its plain permutation p-values, marked
    ``design = selected`` with the number of settings searched on the selection items."""
    out = []
    pairs = (("best_alignment_beyond_emotion", "alignment_beyond_emotion"),) if residualised else \
        (("best_alignment", "alignment"), ("best_alignment_beyond_emotion", "alignment_beyond_emotion"))
    for metric, source in pairs:
        rows = test_align[test_align.metric == source]
        if len(rows):
            out.append({**rows.iloc[0].to_dict(), "metric": metric, "n_settings": n_settings, "design": "selected",
                        "n_selection": n_selection, "n_test": n_test})
    return out
