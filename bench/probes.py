"""Batched probes vs the paper's per-slice scikit-learn loop, on real activations from a store.

The paper (Tak et al. 2025, protocol §5.1/§5.3) fits, for every (layer, site, position), one
``LogisticRegression(C=1)`` with scikit-learn's defaults (lbfgs, ``max_iter=100``) on the 13
emotions, and for every (layer, site) at position -1 one ``Ridge(alpha=5)`` *per appraisal*; 80/20
split with seed 42, raw activations. This bench runs that loop and ours (:func:`emolens.probes.estimators.fit_logistic`,
:func:`emolens.probes.estimators.fit_ridge`) on the same CPU, in one process, on the same split of the same
items, and prints a markdown table: seconds, ratio, and the held-out accuracy / R² of both on the
slices both ran. The logistic probes are compared twice: both capped at the paper's 100 iterations
(unconverged on raw activations, so the two land on different points), and both run to sklearn's
own convergence criterion, where they solve the same problem and must agree (equal accuracy).

The scikit-learn loop may run on ``--sk-slices`` (``--sk-converged-slices`` for the converged
row) evenly spaced slices only; its time is then extrapolated linearly to all slices and the table
says so. ``0`` runs every slice.

Extract a store first (several minutes on a loaded CPU), e.g.::

    emolens extract --model gemma-3-270m --data ../shared/data/crowd-enVENT/enVent_gen_Data.csv \\
        --limit 1300 --sites attn,mlp,resid --layers all --positions=-1,-2,-3,-4,-5 --readout --out /tmp/acts-gemma
    PYTHONPATH=src python bench/probes.py --acts /tmp/acts-gemma [--sk-slices 12] [--items all|correct]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from machine import describe as machine

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd-enVENT" / "enVent_gen_Data.csv"



def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def pick(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced indices of ``range(n)`` (all of them for ``k <= 0``)."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acts", required=True, help="activation store (emolens extract --out)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the --data the store was extracted from")
    ap.add_argument("--items", default="all", help="all, correct or an id file (as emolens probe)")
    ap.add_argument("--sk-slices", type=int, default=12, help="slices the sklearn loop runs on (0 = all)")
    ap.add_argument("--appraisals", default="paper")
    ap.add_argument("--sk-converged-slices", type=int, default=6,
                    help="slices on which sklearn also runs to convergence (tol 1e-4), for the equal-accuracy row")
    ap.add_argument("--precondition", default="full", choices=["full", "diag"], help="our logistic preconditioner")
    ap.add_argument("--layer-step", type=int, default=1,
                    help="emotion probes on every N-th layer only (both sides; appraisals keep all layers)")
    args = ap.parse_args()

    if not Path(args.data).exists():
        print(f"SKIP: crowd-enVENT copy not found at {args.data} (../shared/data absent); nothing to benchmark")
        return 0
    from sklearn.linear_model import LogisticRegression, Ridge

    from emolens.activations.store import ActivationStore
    from emolens.errors import EmolensError
    from emolens.labels import EMOTIONS
    from emolens.probes.estimators import fit_logistic, fit_ridge
    from emolens.probes.evaluation import splits
    from emolens.probes.probing import dataset_for_store, parse_appraisals, select_items, site_stack

    load_start = load_avg()
    try:
        store = ActivationStore.open(args.acts)
        ds_all = dataset_for_store(store, args.data)
        sel = select_items(store, args.items)
    except EmolensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ds = ds_all.subset(sel.rows)
    y = ds.label_ids
    names = parse_appraisals(args.appraisals, ds.appraisal_names)
    Y = np.stack([ds.appraisal(a) for a in names], 1).astype(np.float64)
    ok = (y >= 0) & np.isfinite(Y).all(1)
    rows_used = sel.rows[ok]
    y, Y = y[ok], Y[ok]
    n = len(y)
    tr, te = splits(n, "paper")[0]
    K = len(EMOTIONS)
    print(f"store {args.acts}: model {store.identity['model']}, {n} items ({sel.mode}), sites {store.sites}, "
          f"layers {len(store.layers)}, positions {store.positions}; split {len(tr)}/{len(te)}")

    # emotion rows: "paper" = both sides capped at sklearn's default 100 iterations; "converged" =
    # both sides run to max|grad| <= 1e-4 (ours capped at 1000, sklearn at 100,000), i.e. equal accuracy.
    RUNS = {"paper": 100, "converged": 1000}
    SK_BUDGET = {"paper": 100, "converged": 100_000}
    ours_t = dict.fromkeys([*RUNS, "appraisal"], 0.0)
    sk_t = dict.fromkeys([*RUNS, "appraisal"], 0.0)
    n_sk = dict.fromkeys([*RUNS, "appraisal"], 0)
    acc = {r: [] for r in RUNS}
    conv = {r: [] for r in RUNS}
    iters = {r: [] for r in RUNS}
    sk_acc = {r: [] for r in RUNS}
    paired = {r: [] for r in RUNS}
    sk_iters = {r: [] for r in RUNS}
    n_slices = {"emotion": 0, "appraisal": 0}
    r2_d, r2_ours_all = [], []
    d = None
    for site in store.sites:
        X, slices, _ = site_stack(store, site, rows_used)  # [S, n, d] float32
        S, d = X.shape[0], X.shape[2]
        Xtr, Xte = np.ascontiguousarray(X[:, tr]), np.ascontiguousarray(X[:, te])
        del X
        # ---- emotion: all slices of the site (every --layer-step-th layer)
        layers = sorted({sl[1] for sl in slices})[:: args.layer_step]
        emo = [i for i, sl in enumerate(slices) if sl[1] in layers]
        Etr, Ete = Xtr[emo], Xte[emo]
        S = len(emo)
        n_slices["emotion"] += S
        for run, budget in RUNS.items():
            t0 = time.perf_counter()
            fit = fit_logistic(Etr, y[tr], C=1.0, n_classes=K, max_iter=budget, precondition=args.precondition)
            pred = (torch.from_numpy(Ete) @ fit.coef.transpose(1, 2) + fit.intercept[:, None]).argmax(-1).numpy()
            ours_t[run] += time.perf_counter() - t0
            acc[run].append((pred == y[te]).mean(1))
            conv[run].append(fit.converged.numpy())
            iters[run].append(fit.n_iter.numpy())
        for run, k in (("paper", args.sk_slices), ("converged", args.sk_converged_slices)):
            idx = pick(S, max(1, round(k / len(store.sites))) if k else 0)
            t0 = time.perf_counter()
            for s in idx:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=100, as in the paper
                    m = LogisticRegression(C=1.0, max_iter=SK_BUDGET[run]).fit(Etr[s], y[tr])
                sk_acc[run].append(m.score(Ete[s], y[te]))
                paired[run].append(acc[run][-1][s])
                sk_iters[run].append(int(m.n_iter_[0]))
            sk_t[run] += (time.perf_counter() - t0) / len(idx) * S
            n_sk[run] += len(idx)
        # ---- appraisals: position -1 slices of the site, one Ridge per appraisal (paper)
        last = [i for i, sl in enumerate(slices) if sl[2] == -1]
        Ltr, Lte = Xtr[last], Xte[last]
        t0 = time.perf_counter()
        rfit = fit_ridge(Ltr, Y[tr], alpha=5.0)
        pr = (torch.from_numpy(Lte).double() @ rfit.coef.double().transpose(1, 2)
              + rfit.intercept.double()[:, None]).numpy()
        ours_t["appraisal"] += time.perf_counter() - t0
        r2 = 1 - ((Y[te] - pr) ** 2).sum(1) / ((Y[te] - Y[te].mean(0)) ** 2).sum(0)  # [S, T]
        r2_ours_all.append(r2)
        n_slices["appraisal"] += len(last)
        ridx = pick(len(last), max(1, round(args.sk_slices / len(store.sites))) if args.sk_slices else 0)
        t0 = time.perf_counter()
        for s in ridx:
            for t in range(len(names)):
                m = Ridge(alpha=5.0).fit(Ltr[s], Y[tr, t])
                r2_d.append(r2[s, t] - m.score(Lte[s], Y[te, t]))
        sk_t["appraisal"] += (time.perf_counter() - t0) / len(ridx) * len(last)
        n_sk["appraisal"] += len(ridx)
        print(f"  {site}: ours {ours_t['paper']:.1f}s / {ours_t['converged']:.1f}s / {ours_t['appraisal']:.1f}s "
              f"cumulative; sklearn timed {n_sk['paper']} + {n_sk['converged']} + {n_sk['appraisal']} slices",
              flush=True)
        del Xtr, Xte, Ltr, Lte, Etr, Ete

    r2_a, r2_d = np.concatenate(r2_ours_all), np.abs(np.array(r2_d))
    print()
    print(f"Machine: {machine()}; load average at start {load_start}, at end {load_avg()}.")
    print(f"Store: {store.identity['model']} ({store.identity.get('dtype')} activations), {n} items "
          f"({sel.mode}), paper split {len(tr)} train / {len(te)} test, d={d}. Our logistic preconditioner: "
          f"{args.precondition}.")
    print()
    print("| probe | slices x train items x d | ours (s) | sklearn loop (s) | ratio | sklearn slices timed "
          "| held-out accuracy / R², ours vs sklearn on the timed slices |")
    print("|---|---|---|---|---|---|---|")
    shape = f"{n_slices['emotion']} x {len(tr)} x {d}, K={K}"
    for run, label in (("paper", "emotion logistic C=1, both capped at 100 iterations (the paper's sklearn default)"),
                       ("converged", "emotion logistic C=1, both to max|grad| <= 1e-4 (equal accuracy)")):
        ours_acc, sk = np.array(paired[run]), np.array(sk_acc[run])
        extra = "" if n_sk[run] == n_slices["emotion"] else f" (extrapolated from {n_sk[run]})"
        print(f"| {label} | {shape} | {ours_t[run]:.1f} | {sk_t[run]:.1f}{extra} | {sk_t[run] / ours_t[run]:.1f}x "
              f"| {n_sk[run]} of {n_slices['emotion']} | {ours_acc.mean():.4f} vs {sk.mean():.4f} "
              f"(mean abs. diff {np.abs(ours_acc - sk).mean():.4f}, max {np.abs(ours_acc - sk).max():.4f}) |")
    extra = "" if n_sk["appraisal"] == n_slices["appraisal"] else f" (extrapolated from {n_sk['appraisal']})"
    print(f"| appraisal ridge alpha=5, {len(names)} appraisals at -1 (sklearn: one fit per appraisal) | "
          f"{n_slices['appraisal']} x {len(tr)} x {d}, T={len(names)} | {ours_t['appraisal']:.1f} | "
          f"{sk_t['appraisal']:.1f}{extra} | {sk_t['appraisal'] / ours_t['appraisal']:.1f}x | "
          f"{n_sk['appraisal']} of {n_slices['appraisal']} | R² mean abs. diff {r2_d.mean():.5f} "
          f"(max {r2_d.max():.5f}) |")
    print()
    if args.layer_step > 1:
        print(f"Emotion probes ran on every {args.layer_step}-th layer only (both sides), not all layers.")
    for run, budget in RUNS.items():
        c, it, a_ = np.concatenate(conv[run]), np.concatenate(iters[run]), np.concatenate(acc[run])
        si = np.array(sk_iters[run])
        print(f"{run}: ours {int(c.sum())}/{len(c)} slices converged (max|grad| <= 1e-4), L-BFGS iterations "
              f"median {int(np.median(it))}, max {int(it.max())} (cap {budget}); held-out accuracy "
              f"{a_.min():.3f}..{a_.max():.3f}, mean {a_.mean():.3f}. sklearn n_iter median {int(np.median(si))}, "
              f"max {int(si.max())} (limit {SK_BUDGET[run]}).")
    print(f"Appraisal R² (ours) mean {r2_a.mean():.3f}, max {r2_a.max():.3f}.")
    print("sklearn times are measured on the timed slices (evenly spaced per site) and scaled linearly to all "
          "slices; accuracy/R² comparisons are over the timed slices only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
