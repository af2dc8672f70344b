"""Theory alignment: ± pairs are one test, each unit has its own null, and the peak window has an interval."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from emolens.labels import EMOTIONS
from emolens.steering import theory

K = len(EMOTIONS)


def test_sign_pairs_form_one_unit_and_their_null_does_not_cancel():
    units = theory.alignment_units({"p+": [("pleasantness", 1.0)], "p-": [("pleasantness", -1.0)],
                                    "o+": [("other_responsblt", 1.0)]})
    assert units == {"pleasantness±": [("p+", 1.0), ("p-", -1.0)], "o+": [("o+", 1.0)]}
    g = np.random.default_rng(0)
    ref = pd.DataFrame(g.normal(size=(1, K)), index=["pleasantness"], columns=list(EMOTIONS))
    rows = pd.DataFrame([ref.loc["pleasantness"], -ref.loc["pleasantness"]], index=["p+", "p-"])
    rnd = pd.DataFrame(g.normal(size=(19, K)), columns=list(EMOTIONS), index=[f"random:{j}" for j in range(19)])
    res = theory.alignment(rows + 0.01 * g.normal(size=(2, K)), rows, rnd,
                           units={"pleasantness±": [("p+", 1.0), ("p-", -1.0)]})
    # the old score averaged each random row against +ref and -ref: exactly 0 for every draw
    assert np.abs(res.random_scores).max() > 0.05 and res.p_value == pytest.approx(0.05)
    assert len(res.units) == 1 and res.units.p_random_holm.iloc[0] == pytest.approx(0.05)


def test_alignment_peak_locates_the_aligned_window_with_an_interval():
    g = np.random.default_rng(1)
    ref = pd.DataFrame(g.normal(size=(1, K)), index=["pleasantness"], columns=list(EMOTIONS))
    n = 40
    clean = g.normal(size=(n, K))
    conditions, scores = [], []
    for window, signal in ((1, 0.0), (2, 1.0), (3, 0.3)):
        conditions.append(SimpleNamespace(kind="real", direction="p+", position="last", layers=(window,),
                                          window=window, beta=1.0))
        scores.append(clean + signal * ref.to_numpy() + g.normal(0, 1.0, (n, K)))
    frame = pd.DataFrame({"metric": "delta_logp", "label": list(EMOTIONS)})
    result = SimpleNamespace(frame=frame, conditions=conditions, scores=scores,
                             clean={((w,), "last"): clean for w in (1, 2, 3)})
    peak = theory.alignment_peak(result, ref, {"p+": [("pleasantness", 1.0)]}, n_boot=100)
    assert peak["peak_window"] == 2 and peak["window_ci_low"] <= 2 <= peak["window_ci_high"]
    assert peak["share_at_peak"] > 0.5 and peak["n_settings"] == 3 and peak["n_items"] == n
    one = SimpleNamespace(frame=frame, conditions=conditions[:1], scores=scores[:1], clean=result.clean)
    assert theory.alignment_peak(one, ref, {"p+": [("pleasantness", 1.0)]}) is None


def test_steer_reports_directions_fitted_on_residualised_ratings(tmp_path, run_cli):
    """``emolens steer`` also steers each direction refitted on ratings residualised on emotion, writes
    its alignment rows (``reference = residualised``) against its own within-emotion refits, and says
    so in the CLI line; ``--no-residualised`` leaves them out."""
    out = tmp_path / "steer"
    args = ["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "130", "--direction",
            "pleasantness+;pleasantness-", "--n-random", "9", "--n-emotion-null", "3", "--beta", "2,8", "--span", "1"]
    code, line, _ = run_cli([*args, "--out", str(out)])
    assert code == 0
    assert "directions fit on ratings residualised on emotion" in line and "refits of the residuals" in line
    align = pd.read_parquet(out / "alignment.parquet")
    table = pd.read_parquet(out / "steering.parquet")
    assert set(align.reference) == {"ratings", "residualised"}
    resid = align[align.reference == "residualised"]
    best = resid[resid.metric == "best_alignment_beyond_emotion"]
    assert len(best) == 1 and best.null.iloc[0] == "emotion" and best.n_emotion_null.iloc[0] == 3
    assert "random" not in set(resid["null"])  # random directions are no valid null for these
    assert 0.25 - 1e-12 <= best.p_value.iloc[0] <= 1  # 3 refits: p cannot go below 1/4
    assert set(table[table.kind == "residualised"].direction) == {"pleasantness+|residualised",
                                                                  "pleasantness-|residualised"}
    assert (table[table.kind == "residualised_null"].beta != 0).all()  # no clean rows for null refits
    code, _, _ = run_cli([*args, "--no-residualised", "--out", str(tmp_path / "plain")])
    assert code == 0
    assert set(pd.read_parquet(tmp_path / "plain" / "alignment.parquet").reference) == {"ratings"}


def test_alignment_peak_scores_every_resample_as_one_spearman_call_each_would():
    """The vectorised resampling equals the per-resample, per-direction ``spearmanr`` loop it replaced,
    including a unit whose effects are non-finite in some items."""
    g = np.random.default_rng(3)
    n = 25
    refs = {d: g.normal(size=K) for d in ("a", "b", "c")}
    settings = [{d: g.normal(size=(n, K)) for d in refs} for _ in range(4)]
    settings[2]["c"][3, 5] = np.nan  # one item with an undefined effect: that direction's rows take the slow path
    settings[1]["b"][:] = 1.0        # a constant effect: ρ undefined, so the unit averages the others
    units = {"ab": [("a", 1.0), ("b", -1.0)], "c": [("c", 1.0)]}
    weights = np.vstack([np.ones(n)] + [np.bincount(g.integers(0, n, n), minlength=n) for _ in range(30)])
    fast = theory._setting_scores(weights.astype(float), settings, refs, units)

    def loop(w, eff_by_d):
        eff = {d: w @ v / w.sum() for d, v in eff_by_d.items()}
        per_unit = [np.nanmean([theory._spearman(eff[d], refs[d]) for d, _ in m] or [np.nan]) for m in units.values()]
        return np.nanmean(per_unit) if np.isfinite(per_unit).any() else -np.inf

    slow = np.array([[loop(w, s) for s in settings] for w in weights.astype(float)])
    assert np.isnan(fast).sum() == 0 and np.allclose(fast, slow, atol=1e-12, equal_nan=True)
