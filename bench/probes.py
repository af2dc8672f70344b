"""Batched probes vs the paper's per-slice scikit-learn loop, on real activations from a store.

The paper (Tak et al. 2025, protocol §5.1/§5.3) fits, for every (layer, site, position), one
``LogisticRegression(C=1)`` with scikit-learn's defaults (lbfgs, ``max_iter=100``) on the 13
emotions, and for every (layer, site) at position -1 one ``Ridge(alpha=5)`` *per appraisal*; 80/20
split with seed 42, raw activations. This bench runs that loop and ours (:func:`emolens.probes.fit_logistic`
to convergence, :func:`emolens.probes.fit_ridge`) on the same CPU, in one process, on the same
split of the same items, and prints a markdown table: seconds, ratio, and the mean held-out
accuracy / R² difference on the slices both ran.

The scikit-learn loop may run on ``--sk-slices`` evenly spaced slices only; its time is then
extrapolated linearly to all slices and the table says so. ``--sk-slices 0`` runs every slice.

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
    ap.add_argument("--max-iter", type=int, default=100,
                    help="our L-BFGS cap (100 = the paper's sklearn budget; 1000 = run to tol 1e-4)")
    ap.add_argument("--layer-step", type=int, default=1,
                    help="emotion probes on every N-th layer only (both sides; appraisals keep all layers)")
    args = ap.parse_args()

    if not Path(args.data).exists():
        print(f"SKIP: crowd-enVENT copy not found at {args.data} (../shared/data absent); nothing to benchmark")
        return 0
    from sklearn.linear_model import LogisticRegression, Ridge

    from emolens.errors import EmolensError
    from emolens.labels import EMOTIONS
    from emolens.probe_eval import splits
    from emolens.probes import fit_logistic, fit_ridge
    from emolens.probing import dataset_for_store, parse_appraisals, select_items, site_stack
    from emolens.store import ActivationStore

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

    ours_t = {"emotion": 0.0, "appraisal": 0.0}
    sk_t = {"emotion": 0.0, "appraisal": 0.0}
    n_slices = {"emotion": 0, "appraisal": 0}
    n_sk = {"emotion": 0, "appraisal": 0}
    acc_d, r2_d, sk_iters, conv, iters = [], [], [], [], []
    acc_ours_all, r2_ours_all = [], []
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
        t0 = time.perf_counter()
        fit = fit_logistic(Etr, y[tr], C=1.0, n_classes=K, max_iter=args.max_iter)
        pred = (torch.from_numpy(Ete) @ fit.coef.transpose(1, 2) + fit.intercept[:, None]).argmax(-1).numpy()
        ours_t["emotion"] += time.perf_counter() - t0
        acc = (pred == y[te]).mean(1)
        acc_ours_all.append(acc)
        conv.append(fit.converged.numpy())
        iters.append(fit.n_iter.numpy())
        n_slices["emotion"] += S
        idx = pick(S, max(1, round(args.sk_slices * S / (S * len(store.sites))) if args.sk_slices else 0))
        t0 = time.perf_counter()
        for s in idx:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=100, as in the paper
                m = LogisticRegression(C=1.0).fit(Etr[s], y[tr])
            acc_d.append(acc[s] - m.score(Ete[s], y[te]))
            sk_iters.append(int(m.n_iter_[0]))
        sk_t["emotion"] += (time.perf_counter() - t0) / len(idx) * S
        n_sk["emotion"] += len(idx)
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
        print(f"  {site}: ours {ours_t['emotion']:.1f}s / {ours_t['appraisal']:.1f}s cumulative; "
              f"sklearn timed {n_sk['emotion']} + {n_sk['appraisal']} slices", flush=True)
        del Xtr, Xte, Ltr, Lte, Etr, Ete

    conv_a, iters_a = np.concatenate(conv), np.concatenate(iters)
    acc_a, r2_a = np.concatenate(acc_ours_all), np.concatenate(r2_ours_all)
    acc_d, r2_d = np.abs(np.array(acc_d)), np.abs(np.array(r2_d))
    print()
    print(f"Machine: {machine()}; load average at start {load_start}, at end {load_avg()}.")
    print(f"Store: {store.identity['model']} ({store.identity.get('dtype')} activations), {n} items "
          f"({sel.mode}), paper split {len(tr)} train / {len(te)} test, d={d}.")
    print()
    print("| probe | slices x train items x d | ours (s) | sklearn loop (s) | ratio | sklearn slices timed "
          "| mean abs. diff (max) |")
    print("|---|---|---|---|---|---|---|")
    for key, label, shape, diff in (
        ("emotion", f"emotion logistic, C=1 (ours: max_iter={args.max_iter}; sklearn: lbfgs max_iter=100, paper)",
         f"{n_slices['emotion']} x {len(tr)} x {d}, K={K}",
         f"accuracy {acc_d.mean():.4f} ({acc_d.max():.4f})"),
        ("appraisal", f"appraisal ridge alpha=5, {len(names)} appraisals at -1 (sklearn: one fit per appraisal)",
         f"{n_slices['appraisal']} x {len(tr)} x {d}, T={len(names)}",
         f"R² {r2_d.mean():.5f} ({r2_d.max():.5f})"),
    ):
        extra = "" if n_sk[key] == n_slices[key] else f" (extrapolated from {n_sk[key]})"
        print(f"| {label} | {shape} | {ours_t[key]:.1f} | {sk_t[key]:.1f}{extra} | "
              f"{sk_t[key] / ours_t[key]:.1f}x | {n_sk[key]} of {n_slices[key]} | {diff} |")
    print()
    if args.layer_step > 1:
        print(f"Emotion probes ran on every {args.layer_step}-th layer only (both sides), not all layers.")
    print(f"Ours, logistic: {int(conv_a.sum())}/{len(conv_a)} slices converged (max|grad| <= 1e-4), L-BFGS "
          f"iterations median {int(np.median(iters_a))}, max {int(iters_a.max())} (cap {args.max_iter}); "
          "sklearn n_iter median "
          f"{int(np.median(sk_iters))} (limit 100; {int((np.array(sk_iters) >= 100).sum())}/{len(sk_iters)} "
          "stopped at the limit).")
    print(f"Held-out accuracy (ours) {acc_a.min():.3f}..{acc_a.max():.3f}, mean {acc_a.mean():.3f}; "
          f"appraisal R² (ours) mean {r2_a.mean():.3f}, max {r2_a.max():.3f}.")
    if any(n_sk[k] < n_slices[k] for k in n_sk):
        print("sklearn times are measured on the timed slices (evenly spaced per site) and scaled linearly to "
              "all slices; accuracy/R² differences are over the timed slices only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
