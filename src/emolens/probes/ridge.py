"""Batched closed-form ridge regression, with exact leave-one-out alpha selection per slice and target.

``alpha="gcv"`` (or a grid) picks alpha as ``RidgeCV(alphas, alpha_per_target=True)`` does, from one
eigendecomposition per slice; a float32 Gram matrix that rounding makes indefinite is redone in
float64 (chosen per slice, never returned as garbage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emolens.errors import EmolensError
from emolens.probes.slices import (
    ArrayLike,
    encode_targets,
    moments,
    probe_device,
    slice_block,
    slice_ranges,
    stack_slices,
)

__all__ = ["DEFAULT_ALPHAS", "RidgeFit", "fit_ridge"]

#: Default alpha grid for ``alpha="gcv"`` (raw activations have large scales, so it is wide).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))


@dataclass
class RidgeFit:
    """Batched ridge fit: ``coef [S, T, d]``, ``intercept [S, T]``, the ``alpha [S, T]`` used,
    and for an alpha grid the leave-one-out MSE ``loo_mse [S, A, T]`` over ``alphas``."""

    coef: torch.Tensor
    intercept: torch.Tensor
    alpha: torch.Tensor
    alphas: torch.Tensor | None = None
    loo_mse: torch.Tensor | None = None


def fit_ridge(X: ArrayLike, Y: ArrayLike, *, alpha: float | str | Sequence[float] = 5.0,
              standardize: bool = False, device: str | torch.device | None = None,
              dtype: torch.dtype = torch.float32, slice_chunk: int | None = None) -> RidgeFit:
    """Ridge regression with unpenalised intercept on every slice and target at once.

    ``Y`` is ``[n]``, ``[n, T]`` (shared by slices) or ``[S, n, T]``. A scalar ``alpha`` solves
    ``(Xc'Xc + alpha I) W = Xc'Yc`` by Cholesky (or its kernel form when ``d > n``), as
    ``Ridge(alpha)``. ``alpha="gcv"`` (grid :data:`DEFAULT_ALPHAS`) or a sequence of alphas picks,
    per slice and target, the alpha with the smallest exact leave-one-out squared error, from one
    eigendecomposition per slice -- the criterion of ``RidgeCV(alphas, alpha_per_target=True)``.
    """
    X = stack_slices(X)
    S, n, d = X.shape
    dev = probe_device(X, device)
    T_all, _ = encode_targets(Y, S, n)
    grid = None
    if isinstance(alpha, str):
        if alpha != "gcv":
            raise EmolensError(f"unknown alpha {alpha!r}", "pass a number, 'gcv' or a list of alphas")
        grid = torch.tensor(DEFAULT_ALPHAS, dtype=torch.float64)
    elif np.ndim(alpha) > 0:
        grid = torch.as_tensor(np.asarray(alpha, dtype=np.float64)).flatten()
    if grid is not None and (grid <= 0).any():
        raise EmolensError("ridge alphas must be positive")
    parts = []
    for s0, s1 in slice_ranges(S, slice_chunk):
        Xs = slice_block(X, s0, s1, dev, dtype)
        Yt = (T_all if T_all.shape[0] == 1 else T_all[s0:s1]).to(dev, dtype)
        mu, sd = moments(Xs, standardize)
        Xs = (Xs - mu.unsqueeze(1)) / sd.unsqueeze(1)  # the one working copy of this chunk
        ym = Yt.mean(1, keepdim=True)
        Yc = (Yt - ym).expand(s1 - s0, -1, -1)
        if grid is None:
            Wst, a_used, loo = _ridge_fixed(Xs, Yc, float(alpha)), None, None
            a_used = torch.full((s1 - s0, Yc.shape[-1]), float(alpha), dtype=torch.float64)
        else:
            Wst, a_used, loo = _ridge_loo(Xs, Yc, grid.to(dev, dtype))
        W = Wst / sd.unsqueeze(1)  # back to raw input space
        b = ym.squeeze(1).expand(s1 - s0, -1) - (W @ mu.unsqueeze(-1)).squeeze(-1)
        parts.append((W.cpu(), b.cpu(), a_used.cpu().double(), None if loo is None else loo.cpu()))
        del Xs
    coef = torch.cat([p[0] for p in parts])
    intercept = torch.cat([p[1] for p in parts])
    a = torch.cat([p[2] for p in parts])
    loo = None if grid is None else torch.cat([p[3] for p in parts])
    return RidgeFit(coef, intercept, a, grid, loo)


def _ridge_fixed(Xc: torch.Tensor, Yc: torch.Tensor, alpha: float) -> torch.Tensor:
    """Coefficients ``[S, T, d]`` for one alpha, primal (d <= n) or kernel (d > n) Cholesky.

    Raw activations reach scales where a float32 Gram matrix's rounding exceeds ``alpha`` and the
    factorisation fails; those slices are redone in float64 rather than returned as garbage.
    """
    S, n, d = Xc.shape
    primal = d <= n

    def solve(X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A = X.transpose(1, 2) @ X if primal else X @ X.transpose(1, 2)
        A.diagonal(dim1=1, dim2=2).add_(alpha)
        L, info = torch.linalg.cholesky_ex(A)
        if primal:
            W = torch.cholesky_solve(X.transpose(1, 2) @ Y, L)
        else:
            W = X.transpose(1, 2) @ torch.cholesky_solve(Y, L)
        return W.transpose(1, 2), info > 0

    W, failed = solve(Xc, Yc)
    if Xc.dtype != torch.float64 and bool(failed.any()):
        redo = failed.nonzero().squeeze(1)
        W64, failed64 = solve(Xc[redo].double(), Yc[redo].double())
        W[redo] = W64.to(W.dtype)
        failed[redo] = failed64
    if bool(failed.any()):
        raise EmolensError(f"ridge: the regularised Gram matrix of {int(failed.sum())} slice(s) is not positive "
                           f"definite at alpha={alpha}", "use a larger alpha or standardize=True")
    return W


def _ridge_loo(Xc: torch.Tensor, Yc: torch.Tensor, alphas: torch.Tensor):
    """Exact leave-one-out errors for every alpha, per slice and target (intercept in the hat).

    With ``Xc = U diag(s) V'``, the fit for alpha is ``U diag(s^2/(s^2+alpha)) U' y`` and the
    leverage ``h_ii = sum_j U_ij^2 s_j^2/(s_j^2+alpha) + 1/n`` (the ``1/n`` is the unpenalised
    intercept), so the LOO residual is ``(y_i - yhat_i) / (1 - h_ii)`` for all alphas at once.
    """
    S, n, d = Xc.shape
    if d <= n:
        ev, V = torch.linalg.eigh(Xc.transpose(1, 2) @ Xc)
        keep = ev > ev[:, -1:].clamp_min(0) * max(n, d) * torch.finfo(Xc.dtype).eps
        s = ev.clamp_min(0).sqrt()
        U = (Xc @ V) / torch.where(keep, s, torch.ones_like(s)).unsqueeze(1)
    else:
        ev, U = torch.linalg.eigh(Xc @ Xc.transpose(1, 2))
        keep = ev > ev[:, -1:].clamp_min(0) * max(n, d) * torch.finfo(Xc.dtype).eps
        s = ev.clamp_min(0).sqrt()
        V = (Xc.transpose(1, 2) @ U) / torch.where(keep, s, torch.ones_like(s)).unsqueeze(1)
    ev = torch.where(keep, ev, torch.zeros_like(ev))
    U = U * keep.unsqueeze(1)
    UtY = U.transpose(1, 2) @ Yc  # [S, r, T]
    shrink = ev.unsqueeze(-1) / (ev.unsqueeze(-1) + alphas)  # [S, r, A]
    lev = (U * U) @ shrink + 1.0 / n  # [S, n, A]
    A = alphas.numel()
    fitted = U @ (shrink.unsqueeze(-1) * UtY.unsqueeze(2)).flatten(2)  # [S, n, A*T]
    fitted = fitted.view(S, n, A, -1)
    resid = (Yc.unsqueeze(2) - fitted) / (1 - lev).unsqueeze(-1)
    loo = resid.pow(2).mean(1)  # [S, A, T]
    best = loo.argmin(1)  # [S, T]
    a_best = alphas[best]  # [S, T]
    gain = torch.where(keep, ev.clamp_min(1e-30).rsqrt(), torch.zeros_like(ev)).unsqueeze(-1)
    coef_r = gain * ev.unsqueeze(-1) / (ev.unsqueeze(-1) + a_best.unsqueeze(1)) * UtY  # [S, r, T]
    return (V @ coef_r).transpose(1, 2), a_best, loo
