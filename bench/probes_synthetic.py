"""Batched probes vs a per-slice scikit-learn loop on synthetic activations.

Shapes follow gemma-3-270m (d=640; 18 layers x 3 sites x 5 positions = 270 slices for the emotion
probe, 54 last-position slices x 20 appraisals for ridge) or, with ``--shape 8b``, an 8B model
(96 slices x 6,600 items x 4,096 dims; meant for ``--device cuda``). The data are anisotropic,
offset Gaussian classes whose separation grows with depth, so accuracies span chance to high and
the features have raw-activation-like scales. The paper protocol is used: 80/20 split, seed 42,
``LogisticRegression(C=1)`` (here with ``max_iter=1000`` so the reference converges) and
``Ridge(alpha=5)`` fitted once per slice and appraisal, as the paper does.

The scikit-learn loop runs on an evenly spaced subsample of slices (``--sk-slices``) and its time
is extrapolated linearly to all slices; the output says so. Accuracy differences are measured on
exactly those slices.

    PYTHONPATH=src python bench/probes_synthetic.py [--device cuda] [--shape 8b] [--sk-slices 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from emolens.probes.estimators import fit_logistic, fit_ridge
from machine import describe as machine

SHAPES = {
    "gemma": {"layers": 18, "sites": 3, "positions": 5, "items": 3000, "d": 640},
    "8b": {"layers": 32, "sites": 3, "positions": 1, "items": 6600, "d": 4096},
}



def make_data(S: int, n: int, d: int, K: int, T: int, depth: np.ndarray, device: str, seed: int = 0):
    """X [S, n, d] float32 on ``device``, labels y [n], appraisal ratings Y [n, T] in 1..5."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    scale = torch.randn(d, generator=g).exp()
    offset = 3 * torch.randn(d, generator=g)
    X = torch.empty(S, n, d, device=device)
    for s in range(S):
        sep = 0.3 * float(depth[s])  # deeper slices carry more class information
        means = torch.randn(K, d, generator=g) * sep
        X[s] = ((torch.randn(n, d, generator=g) + means[y] + offset) * scale).to(device)
    A = torch.randn(K, T, generator=g)
    Y = (3 + A[y] + 0.8 * torch.randn(n, T, generator=g)).round().clamp(1, 5)
    return X, y.numpy(), Y.numpy()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="gemma")
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers for a quick run")
    ap.add_argument("--sk-slices", type=int, default=8, help="slices the sklearn loop runs on (extrapolated)")
    ap.add_argument("--appraisals", type=int, default=20)
    ap.add_argument("--slice-chunk", type=int, default=None)
    args = ap.parse_args()
    sh = SHAPES[args.shape]
    n = args.items or sh["items"]
    L, n_sites, P, d, K, T = args.layers or sh["layers"], sh["sites"], sh["positions"], sh["d"], 13, args.appraisals
    S = L * n_sites * P
    layer = np.repeat(np.arange(L), n_sites * P)
    pos_factor = np.tile(np.repeat(1.0 / (1 + np.arange(P)), 1), L * n_sites)
    depth = (layer + 1) / L * pos_factor
    t0 = time.perf_counter()
    X, y, Y = make_data(S, n, d, K, T, depth, args.device)
    print(f"generated X {tuple(X.shape)} in {time.perf_counter() - t0:.1f}s")
    perm = np.random.RandomState(42).permutation(n)
    n_te = int(np.ceil(0.2 * n))
    te, tr = perm[:n_te], perm[n_te:]
    tr_t, te_t = torch.as_tensor(tr, device=args.device), torch.as_tensor(te, device=args.device)
    rows = []

    # ---- emotion: multinomial logistic, all slices
    Xtr, Xte = X[:, tr_t], X[:, te_t]
    sync(args.device)
    t0 = time.perf_counter()
    fit = fit_logistic(Xtr, y[tr], C=1.0, n_classes=K, slice_chunk=args.slice_chunk)
    sync(args.device)
    t_ours = time.perf_counter() - t0
    pred = torch.baddbmm(fit.intercept.to(X).unsqueeze(1), Xte, fit.coef.to(X).transpose(1, 2)).argmax(-1)
    acc_ours = (pred.cpu().numpy() == y[te]).mean(1)
    pick = np.unique(np.linspace(0, S - 1, min(args.sk_slices, S)).round().astype(int))
    t0 = time.perf_counter()
    acc_sk, sk_iter = [], []
    for s in pick:
        Xs_tr, Xs_te = Xtr[s].double().cpu().numpy(), Xte[s].double().cpu().numpy()
        m = LogisticRegression(C=1.0, max_iter=1000).fit(Xs_tr, y[tr])
        acc_sk.append(m.score(Xs_te, y[te]))
        sk_iter.append(int(m.n_iter_[0]))
    t_sk = (time.perf_counter() - t0) / len(pick) * S
    diff = acc_ours[pick] - np.array(acc_sk)
    rows.append(("emotion logistic (C=1)", f"{S} x {len(tr)} x {d}, K={K}", t_ours, t_sk, len(pick),
                 f"{np.abs(diff).mean():.4f} (max {np.abs(diff).max():.4f})"))
    conv = (f"{int(fit.converged.sum())}/{S} converged (max|grad| <= {fit.tol:g}), iterations "
            f"median {int(fit.n_iter.median())} max {int(fit.n_iter.max())}; "
            f"sklearn n_iter median {int(np.median(sk_iter))}")
    acc_range = f"test accuracy ours {acc_ours.min():.3f}..{acc_ours.max():.3f} (mean {acc_ours.mean():.3f})"
    del Xtr, Xte

    # ---- appraisals: ridge on the last-position slices, every appraisal
    last = np.flatnonzero(np.tile(np.arange(P) == 0, L * n_sites))
    Xl = X[torch.as_tensor(last, device=args.device)]
    Sl = len(last)
    Xtr, Xte = Xl[:, tr_t], Xl[:, te_t]
    for alpha in (5.0, "gcv"):
        sync(args.device)
        t0 = time.perf_counter()
        rfit = fit_ridge(Xtr, Y[tr], alpha=alpha, slice_chunk=args.slice_chunk)
        sync(args.device)
        t_r = time.perf_counter() - t0
        pr = torch.baddbmm(rfit.intercept.to(X).unsqueeze(1), Xte, rfit.coef.to(X).transpose(1, 2)).cpu().numpy()
        r2_ours = 1 - ((Y[te] - pr) ** 2).sum(1) / ((Y[te] - Y[te].mean(0)) ** 2).sum(0)
        if alpha == "gcv":
            rows.append(("appraisal ridge, alpha by LOO (17 alphas)", f"{Sl} x {len(tr)} x {d}, T={T}", t_r,
                         float("nan"), 0, "n/a (no per-slice sklearn loop timed)"))
            continue
        rpick = np.unique(np.linspace(0, Sl - 1, min(args.sk_slices, Sl)).round().astype(int))
        t0 = time.perf_counter()
        r2_sk = []
        for s in rpick:
            Xs_tr, Xs_te = Xtr[s].double().cpu().numpy(), Xte[s].double().cpu().numpy()
            row = []
            for t in range(T):  # the paper fits one Ridge per appraisal
                m = Ridge(alpha=5.0).fit(Xs_tr, Y[tr, t])
                row.append(m.score(Xs_te, Y[te, t]))
            r2_sk.append(row)
        t_rsk = (time.perf_counter() - t0) / len(rpick) * Sl
        t0 = time.perf_counter()
        for s in rpick:  # and a fairer reference: one multi-output Ridge per slice
            Ridge(alpha=5.0).fit(Xtr[s].double().cpu().numpy(), Y[tr])
        t_rsk_multi = (time.perf_counter() - t0) / len(rpick) * Sl
        dr = np.abs(r2_ours[rpick] - np.array(r2_sk))
        rows.append(("appraisal ridge (alpha=5), sklearn one fit per appraisal", f"{Sl} x {len(tr)} x {d}, T={T}",
                     t_r, t_rsk, len(rpick), f"R² {dr.mean():.5f} (max {dr.max():.5f})"))
        rows.append(("appraisal ridge (alpha=5), sklearn multi-output per slice", f"{Sl} x {len(tr)} x {d}, T={T}",
                     t_r, t_rsk_multi, len(rpick), "same fits"))

    print()
    print(f"Machine: {machine(args.device)}; device `{args.device}`, shape `{args.shape}`, float32 (ours) vs "
          "float64 scikit-learn")
    print()
    print("| probe | slices x train items x d | ours (s) | sklearn loop (s) | speed-up | sklearn slices timed "
          "| mean abs. metric diff |")
    print("|---|---|---|---|---|---|---|")
    for name, shape, a, b, k, dd in rows:
        sp = f"{b / a:.1f}x" if b == b else "–"
        bs = f"{b:.1f} (extrapolated from {k})" if b == b else "–"
        print(f"| {name} | {shape} | {a:.2f} | {bs} | {sp} | {k} | {dd} |")
    print()
    print(f"Logistic: {conv}; {acc_range}.")
    print("sklearn times are measured on the timed slices and scaled linearly to all slices.")


if __name__ == "__main__":
    main()
