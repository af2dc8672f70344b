"""Peak windows of causal curves: the max-statistic test holds its level on flat curves, finds planted peaks.

Synthetic causal results (the fields :func:`emolens.causal.curves.peak_table` reads), 200 simulated
studies per world. Level bar: 5% + 2 binomial SE over 200 runs = 0.081 (family-wise: a study
rejects when any searched curve's corrected peak p is <= 0.05).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from emolens.causal.curves import MIN_CLUSTERS, peak_table
from emolens.engine.windows import Window
from emolens.stats.curves import sign_flip_null

N_SIM = 200
LEVEL_BAR = 0.05 + 2 * np.sqrt(0.05 * 0.95 / N_SIM)
CENTRES = list(range(1, 9))
PLANTED = 5


def _cond(kind, site, centre):
    return SimpleNamespace(kind=kind, site=site, window=Window(centre, 3), position=-1, head=None)


def _ablation(rng, n=40, bump=0.0, sites=("attn", "mlp")):
    """Zero and norm-matched random ablation with exchangeable per-item damage, plus ``bump`` extra damage of
    zero ablation of ``attn`` at the planted window (half at its neighbours)."""
    clean = rng.normal(size=(n, 5))
    pred = clean.argmax(1)
    item = rng.gamma(2.0, 0.5, size=(n, 1))  # items differ in how fragile they are, for both kinds alike
    conds, scores = [], []
    for site in sites:
        for c in CENTRES:
            for kind in ("zero", "random"):
                dmg = item[:, 0] * (1 + 0.3 * np.sin(c)) + rng.normal(0, 1.0, n)
                if kind == "zero" and site == "attn":
                    dmg = dmg + bump * (1.0 if c == PLANTED else 0.5 if abs(c - PLANTED) == 1 else 0.0)
                s = clean.copy()
                s[np.arange(n), pred] -= dmg
                conds.append(_cond(kind, site, c))
                scores.append(s)
    return SimpleNamespace(clean_scores=clean, scores=scores, conditions=conds, ids=[f"i{k}" for k in range(n)],
                           pairs=None)


def _patching(rng, n_items=60, n_pairs=80, strength=0.0):
    """Pairs whose patched scores drift towards the model's favourite labels whatever the donor
    (a generic shift), plus ``strength`` x the source-target margin at the planted window."""
    L = 6
    favour = np.array([1.5, 1.0, 0.5, 0.0, 0.0, 0.0])
    clean = rng.normal(size=(n_items, L)) + favour
    src = rng.integers(0, n_items, n_pairs)
    tgt = (src + rng.integers(1, n_items, n_pairs)) % n_items
    ids = [f"i{k}" for k in range(n_items)]
    pairs = pd.DataFrame({"source_id": [ids[k] for k in src], "target_id": [ids[k] for k in tgt]})
    conds, scores = [], []
    for site in ("attn", "mlp"):
        for c in CENTRES:
            lam = strength * (1.0 if c == PLANTED else 0.4 if abs(c - PLANTED) == 1 else 0.0) if site == "attn" else 0
            generic = 0.5 * favour * (1 + 0.2 * np.cos(c))
            s = clean[tgt] + generic + lam * (clean[src] - clean[tgt]) + rng.normal(0, 1.0, (n_pairs, L))
            conds.append(_cond("patch", site, c))
            scores.append(s)
    return SimpleNamespace(clean_scores=clean, scores=scores, conditions=conds, ids=ids, pairs=pairs)


def _study(result, analysis, seed):
    table = peak_table(result, analysis, n_draws=199, n_boot=100, seed=seed)
    return table


def test_sign_flip_null_flips_whole_clusters():
    V = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, -1.0]])
    null = sign_flip_null(V, clusters=[0, 0, 1], n_draws=50, seed=1)
    # rows 0 and 1 always flip together: every column mean is (±2·row0 ± row2) / 3
    col0 = {round(x, 9) for x in null[0]}
    assert col0 <= {round(v, 9) for v in ((2 + 3) / 3, (2 - 3) / 3, (-2 + 3) / 3, (-2 - 3) / 3)}
    assert null.shape == (2, 50)


@pytest.mark.parametrize("analysis", ["ablation", "patching"])
def test_flat_curves_reject_at_most_the_level(analysis):
    rng = np.random.default_rng(7)
    rejected = 0
    for sim in range(N_SIM):
        res = _ablation(rng) if analysis == "ablation" else _patching(rng)
        table = _study(res, analysis, sim)
        assert set(table.n_settings) == {2 * len(CENTRES)}  # every window of both sites was searched
        rejected += bool((table.p_value <= 0.05).any())
    assert rejected / N_SIM <= LEVEL_BAR, f"{analysis}: flat curves rejected in {rejected}/{N_SIM} studies"


@pytest.mark.parametrize("analysis", ["ablation", "patching"])
def test_planted_peak_is_found_with_its_window(analysis):
    rng = np.random.default_rng(11)
    found = covered = 0
    for sim in range(N_SIM):
        res = _ablation(rng, bump=0.8) if analysis == "ablation" else _patching(rng, strength=0.6)
        row = _study(res, analysis, sim).set_index("site").loc["attn"]
        found += bool(row.p_value <= 0.05)
        covered += bool(row.window_ci_low <= PLANTED <= row.window_ci_high)
    assert found / N_SIM >= 0.8, f"{analysis}: planted peak rejected in {found}/{N_SIM}"
    assert covered / N_SIM >= 0.8, f"{analysis}: interval covered the planted window in {covered}/{N_SIM}"


def test_shuffled_donor_null_is_needed_for_patching():
    """Against "no shift at all" (sign flips) a generic drift towards common labels looks like
    transfer; the shuffled-donor null does not take it for one."""
    rng = np.random.default_rng(3)
    res = _patching(rng, n_pairs=200)
    table = _study(res, "patching", 0)
    assert (table.p_value > 0.05).all()
    shift = [sc[:, 0] for sc in res.scores]  # any drift towards label 0 is positive for most pairs
    assert np.mean(np.stack(shift)) > np.mean(res.clean_scores[:, 0])


def test_random_baseline_is_not_searched_and_tiny_n_is_flagged():
    rng = np.random.default_rng(0)
    table = _study(_ablation(rng, n=MIN_CLUSTERS - 2), "ablation", 0)
    assert set(table.kind) == {"zero"} and set(table.effect) == {"excess_damage"}
    assert table.flag.str.contains("not a finding").all()
    only_zero = _ablation(rng)
    keep = [i for i, c in enumerate(only_zero.conditions) if c.kind == "zero"]
    only_zero.conditions = [only_zero.conditions[i] for i in keep]
    only_zero.scores = [only_zero.scores[i] for i in keep]
    table = _study(only_zero, "ablation", 0)
    assert set(table.effect) == {"damage"} and table.null.str.contains("no effect").all()
    assert (table.p_value <= 0.05).all()  # plain damage is real damage: the weaker null rejects it


def test_study_writes_peaks_and_the_report_states_them(tmp_path):
    """A tiny study's causal stages write ``peaks.parquet``; the report's causal sections and summary
    state each peak with its null and the number of searched settings."""
    from emolens.report.findings import findings, summary_text
    from emolens.report.runs import model_runs
    from emolens.study import runner
    from emolens.study.config import config_from_dict

    cfg = config_from_dict({
        "name": "peaks", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 26, "seed": 0},
        "stages": ["readout", "ablate", "patch", "knockout"], "sites": ["attn", "mlp"], "batch_size": 16,
        "ablate": {"spans": [1]}, "patch": {"spans": [1], "pairs": 30}, "knockout": {"spans": [1]},
        "output": str(tmp_path)}, "test.yaml")
    result = runner.run_study(cfg, progress=False, echo=lambda *a, **k: None)
    run_dir = result.run_dir
    for stage, analysis in (("ablate", "ablation"), ("patch", "patching"), ("knockout", "knockout")):
        peaks = pd.read_parquet(run_dir / "tiny-llama" / stage / "peaks.parquet")
        assert len(peaks) and set(peaks.analysis) == {analysis}
        assert (peaks.n_settings == peaks.n_windows.sum()).all()  # the family is every searched curve
        assert peaks.p_value.between(0, 1).all() and (peaks.p_value >= peaks.p_uncorrected).all()
    html = (run_dir / "report.html").read_text()
    assert html.count("Peak: ") == 3 and "searched settings" in html
    assert html.count("<th>null</th>") >= 3  # every peak row names the null its p is against
    found = findings(model_runs(run_dir)[0])
    text = summary_text(found)
    assert text.count("tested: ") == 3 and "searched settings" in text and "against sign flip of" in text
    patched = pd.read_parquet(run_dir / "tiny-llama" / "patch" / "peaks.parquet")
    thin = patched.n_clusters < MIN_CLUSTERS  # the tiny model predicts few labels: few pairs differ clean
    assert (patched.flag[thin].str.contains("not a finding")).all() and (patched.flag[~thin] == "").all()


def test_a_noisy_site_does_not_correct_away_a_clear_peak_elsewhere():
    """Settings compete on standardised statistics: a clear MLP peak survives beside a residual stream
    whose damage is ten times as variable (with raw means the residual's null maximum would swamp it)."""
    from emolens.stats.curves import peak_p_values

    rng = np.random.default_rng(5)
    n = 60
    quiet = rng.normal(0, 1, (n, 4)) + np.array([0, 0, 0.8, 0])  # a real peak at the third window
    noisy = rng.normal(0, 10, (n, 4))  # no effect, large spread
    V = np.concatenate([quiet, noisy], 1)
    null = sign_flip_null(V, n_draws=999, seed=0)
    observed = V.mean(0)
    p, p_single = peak_p_values(observed, null, 2)
    assert p <= 0.01 and p_single <= 0.01
    raw = (1 + (null.max(0) >= observed[2]).sum()) / 1000  # the unstandardised max statistic
    assert raw > 0.05
