"""Batched linear and MLP probes: every (layer, site, position) slice fitted in one solve.

Tak et al. fit one scikit-learn model per slice, thousands of separate fits for an 8B model. The
probes here take a stack ``X[slices, items, d]`` and solve all slices together with batched
matrix products, on CPU or GPU, so the cost is a handful of passes over the activations instead
of a Python loop of small solves.

The objectives are scikit-learn's, so results are comparable with the paper:

* :func:`fit_logistic` minimises ``mean_i CE_i + ||W||^2 / (2 C n)`` -- sklearn's
  ``C * sum_i CE_i + ||W||^2 / 2`` divided by ``C n`` (same minimiser), intercept unpenalised,
  symmetric multinomial parametrisation. It uses a batched L-BFGS, preconditioned by the Cholesky
  factor of a Hessian bound (``precondition="full"``; ``"diag"`` keeps its diagonal only), that
  stops each slice at ``max|grad| <= tol`` (sklearn's own criterion for ``lbfgs``) and reports per
  slice the gradient norm, the iteration count and whether it converged.
* :func:`fit_ridge` is closed-form ridge with an unpenalised intercept, batched over slices *and*
  targets; ``alpha="gcv"`` (or an array of alphas) picks alpha per slice and target by exact
  efficient leave-one-out error through one eigendecomposition per slice, as
  ``RidgeCV(alphas, alpha_per_target=True)`` does.
* :func:`fit_mlp` is a one-hidden-layer ReLU network trained with Adam like sklearn's
  ``MLPClassifier`` (Glorot init, L2 ``alpha``, minibatches of 200, no-improvement stopping), but
  seeded and batched over slices with ``bmm``.

``standardize=True`` standardises features with training statistics; it is folded into the
penalty (``sum_j sd_j^2 W_j^2``) instead of copying X, and coefficients are always returned in the
*raw* input space, so ``X @ coef.T + intercept`` is the probe's decision function either way and
the weights can be used directly as steering directions.

Inputs may be numpy arrays (memmaps included) or torch tensors. Slices are moved to the device
``slice_chunk`` at a time and cast to ``dtype`` (float32 by default; pass ``torch.float64`` for
reference-grade precision). Labels must be complete: a ``-1`` label or a NaN target is an error
here, never a silently dropped item (:mod:`emolens.probes.evaluation` can filter and report the count).

The scikit-learn-style estimators at the bottom wrap these functions: ``LogisticProbe``,
``RidgeProbe`` and ``MLPProbe`` for one slice, ``BatchedLogisticProbe``, ``BatchedRidgeProbe`` and
``BatchedMLPProbe`` for stacks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from emolens.errors import EmolensError

ArrayLike = Any  # numpy array, numpy memmap or torch tensor

#: Default alpha grid for ``alpha="gcv"`` (raw activations have large scales, so it is wide).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))

_NEG = -1e30  # logit offset for classes absent from a slice's training labels

#: Working memory the full logistic preconditioner may take per slice chunk when ``slice_chunk``
#: is not given (an 8B model's d=4096 needs ~0.5 GB per slice, so it is chunked automatically).
_FULL_PRECONDITIONER_BYTES = 2 * 1024**3


# ----------------------------------------------------------------------------------------------
# input handling


def probe_device(X: ArrayLike, device: str | torch.device | None) -> torch.device:
    """The device probes run on: ``device`` when given, else where a tensor ``X`` already lives (CPU for numpy)."""
    if device is not None:
        return torch.device(device)
    return X.device if isinstance(X, torch.Tensor) else torch.device("cpu")


def stack_slices(X: ArrayLike) -> ArrayLike:
    """``X`` itself once it is ``[S, n, d]`` (slices, items, features): the batched estimators' one input shape."""
    if X.ndim != 3:
        raise EmolensError(f"expected activations of shape [slices, items, d], got shape {tuple(X.shape)}")
    return X


def slice_block(X: ArrayLike, s0: int, s1: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Slices ``s0:s1`` of X as a device tensor; numpy (memmap) data is read once, no extra copy."""
    if isinstance(X, torch.Tensor):
        return X[s0:s1].to(device=device, dtype=dtype)
    part = np.asarray(X[s0:s1])
    with warnings.catch_warnings():  # read-only memmaps: we never write through the tensor
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(part) if part.dtype != np.float16 else torch.from_numpy(part.astype(np.float32))
    return t.to(device=device, dtype=dtype)


def slice_ranges(n_slices: int, slice_chunk: int | None) -> list[tuple[int, int]]:
    """``(s0, s1)`` blocks of at most ``slice_chunk`` slices, so large sweeps fit in device memory."""
    step = n_slices if not slice_chunk else max(1, int(slice_chunk))
    return [(s, min(s + step, n_slices)) for s in range(0, n_slices, step)]


def encode_labels(y: ArrayLike, n_slices: int, n_items: int, n_classes: int | None) -> tuple[torch.Tensor, int]:
    """Integer labels as ``[1 or S, n]`` int64; ``-1``/NaN/out-of-range labels are an error."""
    t = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y))
    if t.is_floating_point():
        if torch.isnan(t).any():
            raise EmolensError(f"{int(torch.isnan(t).sum())} labels are NaN",
                               "drop those items first (probe_eval can filter and report the count)")
        if (t != t.round()).any():
            raise EmolensError("class labels must be integers 0..K-1")
    t = t.long()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[-1] != n_items or t.shape[0] not in (1, n_slices):
        raise EmolensError(f"labels of shape {tuple(t.shape)} do not match X [{n_slices}, {n_items}, d]: "
                           "pass y[n] or y[slices, n]")
    if (t < 0).any():
        raise EmolensError(f"{int((t < 0).sum())} labels are negative (e.g. -1 for 'no label')",
                           "drop those items first (probe_eval can filter and report the count)")
    k = int(t.max()) + 1 if n_classes is None else int(n_classes)
    if int(t.max()) >= k:
        raise EmolensError(f"label {int(t.max())} is out of range for n_classes={k}")
    return t, k


def encode_targets(Y: ArrayLike, n_slices: int, n_items: int) -> tuple[torch.Tensor, bool]:
    """Regression targets as ``[1 or S, n, T]`` float64 on CPU, and whether they were 1-D."""
    t = torch.as_tensor(np.asarray(Y.cpu() if isinstance(Y, torch.Tensor) else Y, dtype=np.float64))
    single = t.ndim == 1
    if t.ndim == 1:
        t = t[None, :, None]
    elif t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[1] != n_items or t.shape[0] not in (1, n_slices):
        raise EmolensError(f"targets of shape {tuple(np.shape(Y))} do not match "
                           f"X [{n_slices}, {n_items}, d]: pass Y[n], Y[n, T] or Y[slices, n, T]")
    if torch.isnan(t).any():
        raise EmolensError(f"{int(torch.isnan(t).any(-1).sum())} items have NaN targets",
                           "drop those items first (probe_eval can filter and report the count)")
    return t, single


def _moments(X: torch.Tensor, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Training mean ``[S, d]`` and scale ``[S, d]`` (ones unless standardising; 0 -> 1 like sklearn)."""
    mu = X.mean(1)
    if not standardize:
        return mu, torch.ones_like(mu)
    sd = X.var(1, unbiased=False).sqrt()
    return mu, torch.where(sd > 0, sd, torch.ones_like(sd))


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# multinomial logistic regression


@dataclass
class LogisticFit:
    """Batched logistic fit. ``coef [S, K, d]`` and ``intercept [S, K]`` act on raw inputs.

    Classes absent from a slice's training labels get zero coefficients and intercept ``-inf``
    (probability 0), as they carry no information. ``grad_norm`` is the final ``max|grad|`` of
    the mean-scaled objective, ``converged`` is ``grad_norm <= tol``; ``refined`` marks slices
    finished in float64 after the working precision stalled; ``n_iter`` counts both phases.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor
    grad_norm: torch.Tensor
    converged: torch.Tensor
    loss: torch.Tensor
    tol: float
    refined: torch.Tensor | None = None


class _Softmax:
    """The batched objective in preconditioned coordinates (one job: value and gradient).

    The intercept is centred (``b' = b + W mu``) and each class's weights are reparametrised as
    ``w = P^{-1/2} w'`` with ``P ~ Sigma / K + lam * diag(pen)``, a bound on the Hessian of the
    objective at the start (``Sigma`` the centred feature covariance). Raw residual-stream
    features are strongly correlated and differ in scale by orders of magnitude, so in plain
    coordinates L-BFGS needs hundreds of iterations per slice; in these coordinates the Hessian
    is close to the identity and a few dozen suffice.

    ``precondition="full"`` uses the Cholesky factor ``P = L L^T`` (one ``d x d`` factorisation per
    slice; X is transformed once, so an evaluation adds two small ``K x d x d`` products: the
    penalty and the raw gradient for the stopping rule); ``"diag"`` keeps only ``P``'s diagonal (a
    Jacobi preconditioner, no ``d x d`` work: use it when ``d`` is so large that ``S d^2`` floats do
    not fit in memory).
    """

    def __init__(self, X, Y, mu, pen, lam, mask_add, precondition: str = "full"):
        self.X, self.Y, self.mu, self.pen, self.lam, self.mask_add = X, Y, mu, pen, lam, mask_add
        S, n, d = X.shape
        K = Y.shape[-1]
        self.n, self.d, self.K = n, d, K
        self.sb = math.sqrt(K)  # intercept curvature ~ 1/K
        if precondition == "full":
            # X^T X / n - mu mu^T: an approximate covariance is enough for a preconditioner.
            gram = torch.baddbmm(-mu.unsqueeze(2) * mu.unsqueeze(1), X.transpose(1, 2), X, alpha=1.0 / n)
            P = gram.double() / K
            del gram
            P.diagonal(dim1=1, dim2=2).add_((lam * pen).double())
            L, info = torch.linalg.cholesky_ex(P)
            jitter = 1e-10
            while bool((info > 0).any()):  # round-off made P indefinite: shift it, it is only a preconditioner
                P.diagonal(dim1=1, dim2=2).add_(jitter * P.diagonal(dim1=1, dim2=2).mean(1, keepdim=True))
                L, info = torch.linalg.cholesky_ex(P)
                jitter *= 10
            eye = torch.eye(d, dtype=L.dtype, device=L.device).expand_as(L)
            Linv = torch.linalg.solve_triangular(L, eye, upper=False)
            self.Linv = Linv.to(X.dtype)  # W = W' Linv
            self.Lt = L.transpose(1, 2).to(X.dtype)  # raw gradient gW = gW' L^T
            # the penalty sum_j pen_j W_kj^2 = w'_k Q w'_k^T with Q = Linv diag(pen) Linv^T
            self.Q = ((Linv * pen.double().unsqueeze(1)) @ Linv.transpose(1, 2)).to(X.dtype)
            del P, L, Linv
            # The data term only ever sees X through X W^T = (X - mu) Linv^T W'^T + const: transform X once.
            self.X = torch.baddbmm(-(mu.unsqueeze(1) @ self.Linv.transpose(1, 2)), X, self.Linv.transpose(1, 2))
            self.sw = None
        elif precondition == "diag":
            var = (X.pow(2).mean(1) - mu.pow(2)).clamp_min(0)
            self.sw = (var / K + lam * pen).rsqrt()[:, None, :]  # dW / dW'
            self.Linv = self.Lt = self.Q = None
        else:
            raise EmolensError(f"unknown precondition {precondition!r}; use 'full' or 'diag'")

    def take(self, idx: torch.Tensor) -> _Softmax:
        new = object.__new__(_Softmax)
        new.__dict__.update(self.__dict__)
        for name in ("X", "mu", "pen", "mask_add", "sw", "Linv", "Lt", "Q"):
            if getattr(self, name) is not None:
                setattr(new, name, getattr(self, name)[idx])
        new.Y = self.Y if self.Y.shape[0] == 1 else self.Y[idx]
        return new

    def _weights(self, Wp: torch.Tensor) -> torch.Tensor:
        """Raw weights ``W [S, K, d]`` from preconditioned ones."""
        return Wp * self.sw if self.Linv is None else Wp @ self.Linv

    def pack(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Solver parameters from raw ``coef [S, K, d]`` and ``intercept [S, K]`` (inverse of :meth:`unpack`)."""
        S = W.shape[0]
        Wp = W / self.sw if self.Linv is None else W @ self.Lt.transpose(1, 2)
        bc = b + (W @ self.mu.unsqueeze(-1)).squeeze(-1)
        return torch.cat([Wp.reshape(S, -1), bc / self.sb], 1)

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``coef [S, K, d]`` and ``intercept [S, K]`` from the solver's parameters."""
        S, K, d = theta.shape[0], self.K, self.d
        W = self._weights(theta[:, : K * d].view(S, K, d))
        bc = theta[:, K * d:] * self.sb
        return W, bc - (W @ self.mu.unsqueeze(-1)).squeeze(-1)

    def fg(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective, gradient in solver coordinates, and ``max|grad|`` in raw coordinates."""
        S, K, d = theta.shape[0], self.K, self.d
        Wp = theta[:, : K * d].view(S, K, d)
        bc = theta[:, K * d:] * self.sb
        if self.Linv is not None:  # X holds (X - mu) Linv^T: the data term sees W' directly
            logits = torch.baddbmm((bc + self.mask_add).unsqueeze(1), self.X, Wp.transpose(1, 2))
            pen_grad = self.lam * (Wp @ self.Q)
            pen_val = 0.5 * (Wp * pen_grad).sum((1, 2))
        else:
            W = Wp * self.sw
            b = bc - (W @ self.mu.unsqueeze(-1)).squeeze(-1)
            logits = torch.baddbmm((b + self.mask_add).unsqueeze(1), self.X, W.transpose(1, 2))
            pen_grad = self.lam * self.pen.unsqueeze(1) * W
            pen_val = 0.5 * (W * pen_grad).sum((1, 2))
        logp = logits.log_softmax(-1)
        f = -(logp * self.Y).sum((1, 2)) / self.n + pen_val
        R = (logp.exp() - self.Y) / self.n
        rs = R.sum(1)
        if self.Linv is not None:
            gWp = torch.bmm(R.transpose(1, 2), self.X) + pen_grad
            gW = gWp @ self.Lt  # raw-coordinate gradient, for sklearn's stopping criterion
        else:
            gW = torch.bmm(R.transpose(1, 2), self.X) - rs.unsqueeze(-1) * self.mu.unsqueeze(1) + pen_grad
            gWp = gW * self.sw
        gmax = torch.maximum(gW.abs().flatten(1).amax(1), rs.abs().amax(1))
        g = torch.cat([gWp.flatten(1), rs * self.sb], 1)
        return f, g, gmax


#: Iterations over which a slice's objective must fall by more than round-off to count as moving.
STALL_WINDOW = 10


def _lbfgs(problem: _Softmax, theta: torch.Tensor, tol: float, max_iter: int, history: int):
    """Batched L-BFGS with per-slice history, step sizes (Armijo backtracking) and stopping.

    A slice stops when ``max|grad| <= tol`` (converged), when no step decreases the objective, or
    when the objective fell by less than ``STALL_WINDOW * eps`` of its own scale over the last
    :data:`STALL_WINDOW` iterations: that is the working precision's round-off, where the raw
    gradient of large-scale activations can sit above ``tol`` forever (gemma's residual stream in
    float32 ran all 1,000 iterations without moving the loss). Those two are *stalled*, returned
    so the caller can finish them in float64.

    Finished slices are dropped from the batch once they are a fifth of it, so late iterations
    only pay for the slices still moving; likewise backtracking re-evaluates only the slices whose
    step was not yet accepted (one stiff slice must not cost a pass over the whole batch).
    """
    S = theta.shape[0]
    out_theta = theta.clone()
    out_iter = torch.zeros(S, dtype=torch.long)
    out_g = torch.zeros(S, dtype=theta.dtype)
    out_f = torch.zeros(S, dtype=theta.dtype)
    out_stall = torch.zeros(S, dtype=torch.bool)
    gid = torch.arange(S, device=theta.device)
    f, g, gmax = problem.fg(theta)
    flat_tol = STALL_WINDOW * torch.finfo(theta.dtype).eps
    f_hist: list[torch.Tensor] = [f]
    stall = torch.zeros(S, dtype=torch.bool, device=theta.device)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    r_hist: list[torch.Tensor] = []
    gamma = torch.ones(S, dtype=theta.dtype, device=theta.device)
    done = gmax <= tol
    n_iter = torch.zeros(S, dtype=torch.long, device=theta.device)
    for it in range(max_iter):
        if bool(done.all()):
            break
        # two-loop recursion, vectorised over slices
        q = g.clone()
        alphas = []
        for s, y, r in zip(reversed(s_hist), reversed(y_hist), reversed(r_hist), strict=True):
            a = r * (s * q).sum(1)
            q -= a[:, None] * y
            alphas.append(a)
        z = gamma[:, None] * q
        for (s, y, r), a in zip(zip(s_hist, y_hist, r_hist, strict=True), reversed(alphas), strict=True):
            z += s * (a - r * (y * z).sum(1))[:, None]
        direction = -z
        gd = (g * direction).sum(1)
        bad = gd >= 0  # not a descent direction (numerical): fall back to steepest descent
        if bool(bad.any()):
            direction[bad] = -g[bad]
            gd = torch.where(bad, -(g * g).sum(1), gd)
        t = torch.ones_like(f)
        if it == 0:
            t = torch.clamp(1.0 / g.norm(dim=1).clamp_min(1e-30), max=1.0)
        accepted = done.clone()
        new_theta, new_f, new_g, new_gmax = theta.clone(), f.clone(), g.clone(), gmax.clone()
        sub, rows = problem, None  # backtracking evaluates only the slices still searching
        for _ in range(30):
            trial = theta + t[:, None] * direction
            if rows is None:
                ft, gt, gmt = sub.fg(trial)
            else:
                ft, gt, gmt = (torch.full_like(f, math.inf), g.clone(), gmax.clone())
                ft[rows], gt[rows], gmt[rows] = sub.fg(trial[rows])
            ok = ~accepted & torch.isfinite(ft) & (ft <= f + 1e-4 * t * gd)
            if bool(ok.any()):
                new_theta[ok], new_f[ok], new_g[ok], new_gmax[ok] = trial[ok], ft[ok], gt[ok], gmt[ok]
                accepted |= ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * 0.5)
            if rows is None or int((~accepted).sum()) < rows.numel():
                rows = (~accepted).nonzero().squeeze(1)
                sub = problem.take(rows)
        stalled = ~accepted  # no decrease possible at working precision
        moved = accepted & ~done
        s_new, y_new = new_theta - theta, new_g - g
        sy = (s_new * y_new).sum(1)
        valid = moved & (sy > 1e-10 * (s_new.norm(dim=1) * y_new.norm(dim=1)).clamp_min(1e-30))
        s_hist.append(s_new)
        y_hist.append(y_new)
        r_hist.append(torch.where(valid, 1.0 / sy.where(valid, torch.ones_like(sy)), torch.zeros_like(sy)))
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), r_hist.pop(0)
        gamma = torch.where(valid, sy / (y_new * y_new).sum(1).clamp_min(1e-30), gamma)
        theta, f, g, gmax = new_theta, new_f, new_g, new_gmax
        n_iter += moved.long()
        f_hist.append(f)
        if len(f_hist) > STALL_WINDOW + 1:
            f_hist.pop(0)
        flat = torch.zeros_like(stalled)
        if len(f_hist) > STALL_WINDOW:  # relative to the loss scale (scipy's ftol rule, over a window)
            flat = (f_hist[0] - f) <= flat_tol * f.abs().clamp_min(1.0)
        converged = gmax <= tol
        stall = stall | (~done & ~converged & (stalled | flat))
        done = done | converged | stall
        # retire finished slices
        if bool(done.any()) and int((~done).sum()) <= 0.8 * done.numel():
            fin = done.nonzero().squeeze(1)
            gi = gid[fin].cpu()
            out_theta[gi], out_iter[gi] = theta[fin].to(out_theta), n_iter[fin].cpu()
            out_g[gi], out_f[gi] = gmax[fin].cpu().to(out_g), f[fin].cpu().to(out_f)
            out_stall[gi] = stall[fin].cpu()
            keep = (~done).nonzero().squeeze(1)
            problem = problem.take(keep)
            gid, theta, f, g, gmax, gamma, n_iter, done, stall = (
                v[keep] for v in (gid, theta, f, g, gmax, gamma, n_iter, done, stall))
            s_hist = [v[keep] for v in s_hist]
            y_hist = [v[keep] for v in y_hist]
            r_hist = [v[keep] for v in r_hist]
            f_hist = [v[keep] for v in f_hist]
    gi = gid.cpu()
    out_theta[gi], out_iter[gi] = theta.to(out_theta), n_iter.cpu()
    out_g[gi], out_f[gi] = gmax.cpu().to(out_g), f.cpu().to(out_f)
    out_stall[gi] = stall.cpu()
    return out_theta, out_iter, out_g, out_f, out_stall


def fit_logistic(X: ArrayLike, y: ArrayLike, *, C: float = 1.0, n_classes: int | None = None,
                 standardize: bool = False, tol: float = 1e-4, max_iter: int = 1000, history: int = 20,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 slice_chunk: int | None = None, precondition: str = "full", refine: bool = True) -> LogisticFit:
    """L2-penalised multinomial logistic regression on every slice of ``X[S, n, d]`` at once.

    ``y`` is ``[n]`` (shared by all slices) or ``[S, n]`` with integer labels ``0..K-1``.
    Same minimiser as ``LogisticRegression(C=C)`` (sklearn >= 1.2, lbfgs); ``tol`` bounds
    ``max|grad|`` of the mean-scaled objective exactly as sklearn's ``tol`` does for lbfgs.
    ``precondition="full"`` (default) costs one ``d x d`` Gram and Cholesky per slice up front and
    cuts the iterations several-fold on raw activations; ``"diag"`` is the cheap fallback.
    Slices whose ``dtype`` solve stalls at round-off above ``tol`` are finished in float64 from
    their current point (``refine=True``; reported in ``refined``), so precision is chosen per
    slice: most solve in float32, the few large-scale ones that need it get float64.
    Returns tensors on the CPU.
    """
    X = stack_slices(X)
    S, n, d = X.shape
    dev = probe_device(X, device)
    labels, K = encode_labels(y, S, n, n_classes)
    lam = 1.0 / (C * n)
    if precondition == "full" and not slice_chunk:
        # the factorisation needs ~3 float64 d x d matrices and a transformed copy of X per slice
        slice_chunk = max(1, _FULL_PRECONDITIONER_BYTES // (3 * 8 * d * d + 4 * n * d))
    parts: list[tuple] = []
    for s0, s1 in slice_ranges(S, slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        lab = labels if labels.shape[0] == 1 else labels[s0:s1]
        Y = torch.nn.functional.one_hot(lab, K).to(device=dev, dtype=dtype)
        present = Y.sum(1) > 0  # [1 or s, K]
        mask_add = torch.where(present, 0.0, _NEG).to(dtype).expand(s1 - s0, K).contiguous()
        mu, sd = _moments(Xc, standardize)
        problem = _Softmax(Xc, Y, mu, sd.pow(2), lam, mask_add, precondition)
        theta0 = torch.zeros(s1 - s0, K * (d + 1), device=dev, dtype=dtype)
        theta, n_it, gmax, f, stalled = _lbfgs(problem, theta0, tol, max_iter, history)
        W, b = problem.unpack(theta)
        W, b = W.cpu(), b.cpu()
        refined = torch.zeros(s1 - s0, dtype=torch.bool)
        redo = (stalled & (gmax > tol)).nonzero().squeeze(1)
        if refine and dtype != torch.float64 and redo.numel():
            # float32 round-off stopped these slices short of tol: finish them in float64 from where they are
            r = redo.to(dev)
            X64 = Xc[r].double()
            mu64, sd64 = _moments(X64, standardize)
            sub = _Softmax(X64, Y[r].double() if Y.shape[0] > 1 else Y.double(), mu64, sd64.pow(2), lam,
                           mask_add[r].double(), precondition)
            Wr, br = problem.unpack(theta[r])
            theta64, it64, g64, f64, _ = _lbfgs(sub, sub.pack(Wr.double(), br.double()), tol,
                                                max(1, max_iter - int(n_it[redo].min())), history)
            W64, b64 = sub.unpack(theta64)
            W[redo], b[redo] = W64.cpu().to(W.dtype), b64.cpu().to(b.dtype)
            n_it[redo] += it64
            gmax[redo], f[redo] = g64.to(gmax.dtype), f64.to(f.dtype)
            refined[redo] = True
            del X64, sub
        b = torch.where(present.expand_as(b).cpu(), b, torch.full_like(b, -math.inf))
        parts.append((W, b, n_it, gmax, f, refined))
        del Xc, problem
    coef, intercept, n_iter, gnorm, loss, refined = (torch.cat(v) for v in zip(*parts, strict=True))
    return LogisticFit(coef, intercept, n_iter, gnorm, gnorm <= tol, loss, tol, refined)


def linear_logits(X: ArrayLike, coef: torch.Tensor, intercept: torch.Tensor, device, dtype,
                  slice_chunk: int | None) -> torch.Tensor:
    """``X @ coef.T + intercept`` per slice: ``[S, n, K]`` on the CPU."""
    X = stack_slices(X)
    dev = probe_device(X, device)
    out = []
    for s0, s1 in slice_ranges(X.shape[0], slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        W = coef[s0:s1].to(dev, dtype)
        b = intercept[s0:s1].to(dev, dtype)
        out.append(torch.baddbmm(b.unsqueeze(1), Xc, W.transpose(1, 2)).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# ridge regression


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
        mu, sd = _moments(Xs, standardize)
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


# ----------------------------------------------------------------------------------------------
# MLP probe


@dataclass
class MLPFit:
    """Batched one-hidden-layer ReLU network acting on raw inputs (standardisation stored)."""

    W1: torch.Tensor  # [S, d, H]
    b1: torch.Tensor  # [S, H]
    W2: torch.Tensor  # [S, H, K]
    b2: torch.Tensor  # [S, K]
    mu: torch.Tensor  # [S, d]
    sd: torch.Tensor  # [S, d]
    n_epochs: torch.Tensor  # [S]
    loss: torch.Tensor  # [S]
    standardized: bool = False
    converged: torch.Tensor | None = None  # [S]: stopped improving before max_epochs (sklearn's rule)


def fit_mlp(X: ArrayLike, y: ArrayLike, *, hidden: int = 32, alpha: float = 1e-4, lr: float = 1e-3,
            batch_size: int = 200, max_epochs: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10,
            n_classes: int | None = None, standardize: bool = False, seed: int = 0,
            device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
            slice_chunk: int | None = None) -> MLPFit:
    """sklearn-``MLPClassifier``-style probe (ReLU, Adam, L2 ``alpha``) on all slices with ``bmm``.

    Minibatch order is shared by all slices and seeded, so a fit is reproducible (the paper's MLP
    had no seed). A slice stops updating once its epoch loss has not improved by ``tol`` for
    ``n_iter_no_change`` epochs (sklearn's rule); the loop ends when all slices have stopped.
    """
    X = stack_slices(X)
    S, n, d = X.shape
    dev = probe_device(X, device)
    labels, K = encode_labels(y, S, n, n_classes)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for s0, s1 in slice_ranges(S, slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        s = s1 - s0
        lab = (labels if labels.shape[0] == 1 else labels[s0:s1]).to(dev).expand(s, n)
        present = torch.zeros(s, K, dtype=torch.bool, device=dev).scatter_(1, lab, True)
        mask_add = torch.where(present, 0.0, _NEG).to(dtype)
        mu, sd = _moments(Xc, standardize)
        Xn = (Xc - mu.unsqueeze(1)) / sd.unsqueeze(1) if standardize else Xc

        def glorot(fan_in, fan_out, s=s):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            return ((torch.rand(s, fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)

        def bias(fan_in, fan_out, s=s):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            return (torch.rand(s, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound

        params = [glorot(d, hidden), bias(d, hidden), glorot(hidden, K), bias(hidden, K)]
        params = [p.to(dev, dtype).requires_grad_(True) for p in params]
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        active = torch.ones(s, dtype=torch.bool, device=dev)
        best = torch.full((s,), math.inf, dtype=torch.float64, device=dev)
        stale = torch.zeros(s, dtype=torch.long, device=dev)
        epochs = torch.zeros(s, dtype=torch.long, device=dev)
        last_loss = torch.zeros(s, dtype=torch.float64, device=dev)
        step = 0
        bs = min(batch_size, n)
        for _ in range(max_epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            tot = torch.zeros(s, dtype=torch.float64, device=dev)
            for b0 in range(0, n, bs):
                idx = order[b0:b0 + bs]
                W1, c1, W2, c2 = params
                h = torch.relu(torch.baddbmm(c1.unsqueeze(1), Xn[:, idx], W1))
                logits = torch.baddbmm((c2 + mask_add).unsqueeze(1), h, W2)
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab[:, idx],
                                                       reduction="none").mean(1)
                reg = 0.5 * alpha * (W1.pow(2).sum((1, 2)) + W2.pow(2).sum((1, 2))) / idx.numel()
                per_slice = ce + reg
                grads = torch.autograd.grad(per_slice.sum(), params)
                step += 1
                with torch.no_grad():
                    tot += per_slice.detach().double() * idx.numel()
                    for p, g, a, v in zip(params, grads, m1, m2, strict=True):
                        a.mul_(0.9).add_(g, alpha=0.1)
                        v.mul_(0.999).addcmul_(g, g, value=0.001)
                        upd = lr * (a / (1 - 0.9 ** step)) / ((v / (1 - 0.999 ** step)).sqrt() + 1e-8)
                        p.sub_(upd * active.view(-1, *([1] * (p.ndim - 1))).to(dtype))
            epoch_loss = tot / n
            last_loss = torch.where(active, epoch_loss, last_loss)
            epochs += active.long()
            improved = epoch_loss < best - tol
            stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
            best = torch.where(epoch_loss < best, epoch_loss, best)
            active &= stale <= n_iter_no_change
            if not bool(active.any()):
                break
        W1, c1, W2, c2 = (p.detach().cpu() for p in params)
        c2 = torch.where(present.cpu(), c2, torch.full_like(c2, -math.inf))
        parts.append((W1, c1, W2, c2, mu.cpu(), sd.cpu(), epochs.cpu(), last_loss.cpu(), (~active).cpu()))
        del Xc, Xn
    *arrays, stopped = (torch.cat(v) for v in zip(*parts, strict=True))
    return MLPFit(*arrays, standardized=standardize, converged=stopped)


def mlp_logits(fit: MLPFit, X: ArrayLike, device, dtype, slice_chunk) -> torch.Tensor:
    """Logits of a fitted batched MLP per slice, block by block, on CPU (shared by predict and evaluation)."""
    X = stack_slices(X)
    dev = probe_device(X, device)
    out = []
    for s0, s1 in slice_ranges(X.shape[0], slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        Xn = Xc
        if fit.standardized:
            Xn = (Xc - fit.mu[s0:s1].to(dev, dtype).unsqueeze(1)) / fit.sd[s0:s1].to(dev, dtype).unsqueeze(1)
        W1, b1, W2, b2 = (t[s0:s1].to(dev, dtype) for t in (fit.W1, fit.b1, fit.W2, fit.b2))
        h = torch.relu(torch.baddbmm(b1.unsqueeze(1), Xn, W1))
        out.append(torch.baddbmm(b2.unsqueeze(1), h, W2).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# scikit-learn style estimators


class _Batched(BaseEstimator):
    """Shared plumbing: device/dtype/chunking parameters and numpy outputs."""

    def _run(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "slice_chunk": self.slice_chunk}


class _BatchedClassifier(_Batched):
    """Classifier outputs every batched classifier derives from its ``decision_function`` logits."""

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        return _to_np(torch.from_numpy(self.decision_function(X)).softmax(-1))

    def predict(self, X: ArrayLike) -> np.ndarray:
        return self.decision_function(X).argmax(-1)

    def score(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Accuracy per slice ``[S]``."""
        return (self.predict(X) == np.asarray(y)).mean(-1)


class BatchedLogisticProbe(_BatchedClassifier):
    """One multinomial logistic probe per slice: ``fit(X[S, n, d], y[n] or y[S, n])``.

    Attributes after ``fit``: ``coef_ [S, K, d]``, ``intercept_ [S, K]`` (numpy, raw input
    space), ``classes_ = arange(K)``, ``n_iter_``, ``grad_norm_``, ``converged_`` per slice.
    """

    def __init__(self, C: float = 1.0, *, n_classes: int | None = None, standardize: bool = False,
                 tol: float = 1e-4, max_iter: int = 1000, device=None, dtype=torch.float32,
                 slice_chunk: int | None = None, precondition: str = "full"):
        self.C, self.n_classes, self.standardize = C, n_classes, standardize
        self.tol, self.max_iter, self.precondition = tol, max_iter, precondition
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, y: ArrayLike) -> BatchedLogisticProbe:
        fit = fit_logistic(X, y, C=self.C, n_classes=self.n_classes, standardize=self.standardize,
                           tol=self.tol, max_iter=self.max_iter, precondition=self.precondition, **self._run())
        self.fit_ = fit
        self.coef_, self.intercept_ = _to_np(fit.coef), _to_np(fit.intercept)
        self.classes_ = np.arange(self.coef_.shape[1])
        self.n_iter_, self.grad_norm_ = _to_np(fit.n_iter), _to_np(fit.grad_norm)
        self.converged_ = _to_np(fit.converged)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Logits ``[S, n, K]``."""
        return _to_np(linear_logits(X, self.fit_.coef, self.fit_.intercept, **self._run()))


class BatchedRidgeProbe(_Batched):
    """Ridge probes for every slice and target: ``fit(X[S, n, d], Y[n, T] | Y[n] | Y[S, n, T])``.

    ``coef_ [S, T, d]``, ``intercept_ [S, T]``, ``alpha_ [S, T]``; 1-D targets give ``[S, d]``
    and ``[S]`` like sklearn's single-output Ridge.
    """

    def __init__(self, alpha: float | str | Sequence[float] = 5.0, *, standardize: bool = False,
                 device=None, dtype=torch.float32, slice_chunk: int | None = None):
        self.alpha, self.standardize = alpha, standardize
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, Y: ArrayLike) -> BatchedRidgeProbe:
        self._single = np.ndim(Y) == 1
        fit = fit_ridge(X, Y, alpha=self.alpha, standardize=self.standardize, **self._run())
        self.fit_ = fit
        sq = (lambda a: a[:, 0]) if self._single else (lambda a: a)
        self.coef_, self.intercept_ = sq(_to_np(fit.coef)), sq(_to_np(fit.intercept))
        self.alpha_ = sq(_to_np(fit.alpha))
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions ``[S, n, T]`` (``[S, n]`` for 1-D targets)."""
        out = _to_np(linear_logits(X, self.fit_.coef, self.fit_.intercept, **self._run()))
        return out[..., 0] if self._single else out

    def score(self, X: ArrayLike, Y: ArrayLike) -> np.ndarray:
        """R² per slice (and target): ``[S]`` or ``[S, T]``."""
        pred = self.predict(X)
        Yt = np.asarray(Y, dtype=np.float64)
        Yt = np.broadcast_to(Yt, pred.shape)
        ss_res = ((Yt - pred) ** 2).sum(1)
        ss_tot = ((Yt - Yt.mean(1, keepdims=True)) ** 2).sum(1)
        return 1 - ss_res / ss_tot


class BatchedMLPProbe(_BatchedClassifier):
    """One MLP probe (32 ReLU units by default) per slice, trained together; seeded."""

    def __init__(self, hidden: int = 32, *, alpha: float = 1e-4, lr: float = 1e-3, batch_size: int = 200,
                 max_epochs: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10,
                 n_classes: int | None = None, standardize: bool = False, seed: int = 0,
                 device=None, dtype=torch.float32, slice_chunk: int | None = None):
        self.hidden, self.alpha, self.lr, self.batch_size = hidden, alpha, lr, batch_size
        self.max_epochs, self.tol, self.n_iter_no_change = max_epochs, tol, n_iter_no_change
        self.n_classes, self.standardize, self.seed = n_classes, standardize, seed
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, y: ArrayLike) -> BatchedMLPProbe:
        fit = fit_mlp(X, y, hidden=self.hidden, alpha=self.alpha, lr=self.lr, batch_size=self.batch_size,
                      max_epochs=self.max_epochs, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
                      n_classes=self.n_classes, standardize=self.standardize, seed=self.seed, **self._run())
        self.fit_ = fit
        self.classes_ = np.arange(fit.W2.shape[-1])
        self.n_iter_ = _to_np(fit.n_epochs)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        return _to_np(mlp_logits(self.fit_, X, **self._run()))


class _SingleClassifier(ClassifierMixin, BaseEstimator):
    """One-slice classifier over a batched one: any label values, sklearn ``score`` (accuracy)."""

    def _batched(self) -> _Batched:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, X: ArrayLike, y: ArrayLike):
        y = np.asarray(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.batched_ = self._batched().set_params(n_classes=len(self.classes_))
        self.batched_.fit(np.asarray(X)[None] if not isinstance(X, torch.Tensor) else X[None], codes)
        return self

    def _x(self, X):
        return np.asarray(X)[None] if not isinstance(X, torch.Tensor) else X[None]

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        return self.batched_.decision_function(self._x(X))[0]

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        return self.batched_.predict_proba(self._x(X))[0]

    def predict(self, X: ArrayLike) -> np.ndarray:
        return self.classes_[self.batched_.predict(self._x(X))[0]]


class LogisticProbe(_SingleClassifier):
    """sklearn-style ``LogisticRegression`` equivalent (multinomial, L2, unpenalised intercept)."""

    def __init__(self, C: float = 1.0, *, standardize: bool = False, tol: float = 1e-4, max_iter: int = 1000,
                 device=None, dtype=torch.float32, precondition: str = "full"):
        self.C, self.standardize, self.tol, self.max_iter = C, standardize, tol, max_iter
        self.device, self.dtype, self.precondition = device, dtype, precondition

    def _batched(self) -> BatchedLogisticProbe:
        return BatchedLogisticProbe(self.C, standardize=self.standardize, tol=self.tol, max_iter=self.max_iter,
                                    device=self.device, dtype=self.dtype, precondition=self.precondition)

    def fit(self, X: ArrayLike, y: ArrayLike) -> LogisticProbe:
        super().fit(X, y)
        self.coef_, self.intercept_ = self.batched_.coef_[0], self.batched_.intercept_[0]
        self.n_iter_, self.converged_ = int(self.batched_.n_iter_[0]), bool(self.batched_.converged_[0])
        return self


class MLPProbe(_SingleClassifier):
    """sklearn-style ``MLPClassifier(hidden_layer_sizes=(32,))`` equivalent, seeded."""

    def __init__(self, hidden: int = 32, *, alpha: float = 1e-4, lr: float = 1e-3, max_epochs: int = 200,
                 standardize: bool = False, seed: int = 0, device=None, dtype=torch.float32):
        self.hidden, self.alpha, self.lr, self.max_epochs = hidden, alpha, lr, max_epochs
        self.standardize, self.seed, self.device, self.dtype = standardize, seed, device, dtype

    def _batched(self) -> BatchedMLPProbe:
        return BatchedMLPProbe(self.hidden, alpha=self.alpha, lr=self.lr, max_epochs=self.max_epochs,
                               standardize=self.standardize, seed=self.seed, device=self.device,
                               dtype=self.dtype)


class RidgeProbe(RegressorMixin, BaseEstimator):
    """sklearn-style ``Ridge`` equivalent (``alpha`` may be ``"gcv"`` or a grid, like RidgeCV)."""

    def __init__(self, alpha: float | str | Sequence[float] = 5.0, *, standardize: bool = False,
                 device=None, dtype=torch.float32):
        self.alpha, self.standardize, self.device, self.dtype = alpha, standardize, device, dtype

    def fit(self, X: ArrayLike, y: ArrayLike) -> RidgeProbe:
        X = np.asarray(X)[None] if not isinstance(X, torch.Tensor) else X[None]
        self.batched_ = BatchedRidgeProbe(self.alpha, standardize=self.standardize, device=self.device,
                                          dtype=self.dtype).fit(X, y)
        b = self.batched_
        self.coef_, self.intercept_, self.alpha_ = b.coef_[0], b.intercept_[0], b.alpha_[0]
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        X = np.asarray(X)[None] if not isinstance(X, torch.Tensor) else X[None]
        return self.batched_.predict(X)[0]
