"""Batched multinomial logistic regression: every slice's L-BFGS solve at once, stopping when done.

Same minimiser as scikit-learn's ``LogisticRegression`` (lbfgs): ``mean_i CE_i + ||W||^2 / (2 C n)``
is sklearn's ``C * sum_i CE_i + ||W||^2 / 2`` divided by ``C n``; intercept unpenalised, symmetric
multinomial parametrisation. Slices are solved together with batched products in coordinates
preconditioned by the Cholesky factor of a Hessian bound, each stops on its own (sklearn's
``max|grad| <= tol``, or round-off: then it is finished in float64), and dropped from the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from emolens.errors import EmolensError
from emolens.probes.slices import (
    NEG,
    ArrayLike,
    encode_labels,
    moments,
    probe_device,
    slice_block,
    slice_ranges,
    stack_slices,
)

__all__ = ["STALL_WINDOW", "LogisticFit", "fit_logistic", "fit_logistic_labels", "linear_logits"]

#: Working memory the full logistic preconditioner may take per slice chunk when ``slice_chunk``
#: is not given (an 8B model's d=4096 needs ~0.5 GB per slice, so it is chunked automatically).
_FULL_PRECONDITIONER_BYTES = 2 * 1024**3


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
            L = _shifted_cholesky(P)  # round-off can make P indefinite: shifted, it is only a preconditioner
            Linv = _triangular_inverse(L)
            self.Linv = Linv.to(X.dtype)  # W = W' Linv
            self.Lt = L.transpose(1, 2).to(X.dtype)  # raw gradient gW = gW' L^T
            # the penalty sum_j pen_j W_kj^2 = w'_k Q w'_k^T with Q = Linv diag(pen) Linv^T
            self.Q = _triangular_gram(Linv, None if bool((pen == 1).all()) else pen.double()).to(X.dtype)
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

    def with_labels(self, Y: torch.Tensor, mask_add: torch.Tensor) -> _Softmax:
        """The same slices and preconditioner with other labels ``Y`` and ``mask_add`` (nothing is copied)."""
        new = object.__new__(_Softmax)
        new.__dict__.update(self.__dict__)
        new.Y, new.mask_add = Y, mask_add
        return new

    def take(self, idx: torch.Tensor, solver_only: bool = False) -> _Softmax:
        """The slices ``idx``. ``solver_only``: for :meth:`fg` alone (no ``d x d`` ``Linv`` copied; no unpacking)."""
        new = object.__new__(_Softmax)
        new.__dict__.update(self.__dict__)
        for name in ("X", "mu", "pen", "mask_add", "sw", "Linv", "Lt", "Q"):
            if getattr(self, name) is not None:
                if solver_only and name == "Linv":
                    new.Linv = None  # fg never reads it
                    continue
                setattr(new, name, getattr(self, name)[idx])
        new.Y = self.Y if self.Y.shape[0] == 1 else self.Y[idx]
        return new

    def _weights(self, Wp: torch.Tensor) -> torch.Tensor:
        """Raw weights ``W [S, K, d]`` from preconditioned ones."""
        return Wp * self.sw if self.sw is not None else Wp @ self.Linv

    def pack(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Solver parameters from raw ``coef [S, K, d]`` and ``intercept [S, K]`` (inverse of :meth:`unpack`)."""
        S = W.shape[0]
        Wp = W / self.sw if self.sw is not None else W @ self.Lt.transpose(1, 2)
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
        if self.sw is None:  # full: X holds (X - mu) Linv^T, the data term sees W' directly
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
        if self.sw is None:
            gWp = torch.bmm(R.transpose(1, 2), self.X) + pen_grad
            gW = gWp @ self.Lt  # raw-coordinate gradient, for sklearn's stopping criterion
        else:
            gW = torch.bmm(R.transpose(1, 2), self.X) - rs.unsqueeze(-1) * self.mu.unsqueeze(1) + pen_grad
            gWp = gW * self.sw
        gmax = torch.maximum(gW.abs().flatten(1).amax(1), rs.abs().amax(1))
        g = torch.cat([gWp.flatten(1), rs * self.sb], 1)
        return f, g, gmax


def _shifted_cholesky(P: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of ``P [S, d, d]`` (float64), shifting the diagonal where round-off made it indefinite.

    A failed factorisation shifts every slice's diagonal by ``jitter * mean(diag)``, ``jitter`` growing
    tenfold (1e-10, 1e-9, ...), until *all* slices factor; every slice gets the chunk's final shift (``P`` is
    shifted in place). Only the slices that still fail are refactorised at each step, and those that
    factorised at a smaller shift once more at the final one: the factors equal those of refactorising
    the whole batch at every step, for a fraction of its cost when few slices fail.
    """
    L, info = torch.linalg.cholesky_ex(P)
    if not bool((info > 0).any()):
        return L
    diag = P.diagonal(dim1=1, dim2=2)
    level = torch.where(info > 0, -1, 0)  # the shift step at which each slice last factorised (-1: not yet)
    step, jitter = 0, 1e-10
    while True:
        diag.add_(jitter * diag.mean(1, keepdim=True))  # every slice, as one shift of the whole batch
        jitter *= 10
        step += 1
        todo = (level < 0).nonzero().squeeze(1)
        Lt, it = torch.linalg.cholesky_ex(P[todo])
        good = it == 0
        L[todo[good]], level[todo[good]] = Lt[good], step
        if bool((level < 0).any()):
            continue
        stale = (level < step).nonzero().squeeze(1)  # factorised at a smaller shift: redo at this one
        if stale.numel():
            Ls, info_s = torch.linalg.cholesky_ex(P[stale])
            L[stale] = Ls
            level[stale[info_s > 0]] = -1  # (round-off can make a larger shift fail: keep going, as the batch would)
            level[stale[info_s == 0]] = step
        if not bool((level < 0).any()):
            return L


#: Column (row) block of the triangular inverse and Gram below: they skip the blocks known to be zero.
_TRI_BLOCK = 128


def _triangular_inverse(L: torch.Tensor, block: int = _TRI_BLOCK) -> torch.Tensor:
    """``L^{-1}`` of lower-triangular ``L [S, d, d]``, by column blocks: block ``j`` of the inverse is
    zero above the diagonal block, so only ``L[j:, j:]`` is solved against (~1/3 of the full solve's work;
    equal to ``solve_triangular(L, I)`` up to float64 round-off)."""
    S, d, _ = L.shape
    out = torch.zeros_like(L)
    eye = torch.eye(d, dtype=L.dtype, device=L.device)
    for j0 in range(0, d, block):
        j1 = min(d, j0 + block)
        out[:, j0:, j0:j1] = torch.linalg.solve_triangular(L[:, j0:, j0:], eye[j0:, j0:j1].expand(S, -1, -1),
                                                           upper=False)
    return out


def _triangular_gram(A: torch.Tensor, pen: torch.Tensor | None = None, block: int = _TRI_BLOCK) -> torch.Tensor:
    """``A diag(pen) A^T`` of lower-triangular ``A [S, d, d]`` (``pen [S, d]``; None: ones), symmetric.

    Row block ``i`` needs only ``A``'s first ``i1`` columns (the rest are zero), and the upper
    triangle mirrors the lower: ~1/3 of a full product's work, equal to it up to float64 round-off.
    """
    S, d, _ = A.shape
    Q = torch.zeros_like(A)
    for i0 in range(0, d, block):
        i1 = min(d, i0 + block)
        left = A[:, i0:i1, :i1] if pen is None else A[:, i0:i1, :i1] * pen[:, None, :i1]
        Q[:, i0:i1, :i1] = left @ A[:, :i1, :i1].transpose(1, 2)  # rows i0:i1 up to the diagonal block
    Q = Q.tril()
    return Q + Q.tril(-1).transpose(1, 2)


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
                sub = problem.take(rows, solver_only=True)
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
            problem = problem.take(keep, solver_only=True)
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
    Returns tensors on the CPU. Several label sets on the same ``X``: :func:`fit_logistic_labels`.
    """
    return fit_logistic_labels(X, [y], C=C, n_classes=n_classes, standardize=standardize, tol=tol,
                               max_iter=max_iter, history=history, device=device, dtype=dtype,
                               slice_chunk=slice_chunk, precondition=precondition, refine=refine)[0]


def fit_logistic_labels(X: ArrayLike, ys: Sequence[ArrayLike], *, C: float = 1.0, n_classes: int | None = None,
                        standardize: bool = False, tol: float = 1e-4, max_iter: int = 1000, history: int = 20,
                        device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                        slice_chunk: int | None = None, precondition: str = "full",
                        refine: bool = True) -> list[LogisticFit]:
    """:func:`fit_logistic` of ``X`` for each label set in ``ys`` (e.g. true and shuffled labels).

    The preconditioner depends on ``X`` only: it is built once per slice chunk and shared by the
    label sets' solves, so each result equals ``fit_logistic(X, y)`` for its ``y`` (the same
    arithmetic, the same chunks) at the cost of one preconditioner instead of ``len(ys)``.
    """
    if not ys:
        return []
    X = stack_slices(X)
    S, n, d = X.shape
    dev = probe_device(X, device)
    encoded = [encode_labels(y, S, n, n_classes) for y in ys]
    lam = 1.0 / (C * n)
    if precondition == "full" and not slice_chunk:
        # the factorisation needs ~3 float64 d x d matrices and a transformed copy of X per slice
        slice_chunk = max(1, _FULL_PRECONDITIONER_BYTES // (3 * 8 * d * d + 4 * n * d))
    parts: list[list[tuple]] = [[] for _ in ys]
    for s0, s1 in slice_ranges(S, slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        mu, sd = moments(Xc, standardize)
        shared = None  # the chunk's preconditioner, built for the first label set
        for v, (labels, K) in enumerate(encoded):
            lab = labels if labels.shape[0] == 1 else labels[s0:s1]
            Y = torch.nn.functional.one_hot(lab, K).to(device=dev, dtype=dtype)
            present = Y.sum(1) > 0  # [1 or s, K]
            mask_add = torch.where(present, 0.0, NEG).to(dtype).expand(s1 - s0, K).contiguous()
            if shared is None or shared.K != K:
                shared = _Softmax(Xc, Y, mu, sd.pow(2), lam, mask_add, precondition)
            problem = shared.with_labels(Y, mask_add)
            parts[v].append(_solve_chunk(problem, Xc, Y, mask_add, present, standardize, lam, tol, max_iter,
                                         history, dtype, precondition, refine))
            del problem
        del Xc, shared
    fits = []
    for part in parts:
        coef, intercept, n_iter, gnorm, loss, refined = (torch.cat(v) for v in zip(*part, strict=True))
        fits.append(LogisticFit(coef, intercept, n_iter, gnorm, gnorm <= tol, loss, tol, refined))
    return fits


def _solve_chunk(problem: _Softmax, Xc, Y, mask_add, present, standardize, lam, tol, max_iter, history, dtype,
                 precondition, refine) -> tuple:
    """Solve one chunk's problem from zero; finish stalled slices in float64; raw coef, intercept and stats."""
    S, K, d = Xc.shape[0], problem.K, problem.d
    theta0 = torch.zeros(S, K * (d + 1), device=Xc.device, dtype=dtype)
    theta, n_it, gmax, f, stalled = _lbfgs(problem, theta0, tol, max_iter, history)
    W, b = problem.unpack(theta)
    W, b = W.cpu(), b.cpu()
    refined = torch.zeros(S, dtype=torch.bool)
    redo = (stalled & (gmax > tol)).nonzero().squeeze(1)
    if refine and dtype != torch.float64 and redo.numel():
        # float32 round-off stopped these slices short of tol: finish them in float64 from where they are
        r = redo.to(Xc.device)
        X64 = Xc[r].double()
        mu64, sd64 = moments(X64, standardize)
        sub = _Softmax(X64, Y[r].double() if Y.shape[0] > 1 else Y.double(), mu64, sd64.pow(2), lam,
                       mask_add[r].double(), precondition)
        Wr, br = problem.take(r).unpack(theta[r])  # the redone slices only (unpack uses per-slice state)
        theta64, it64, g64, f64, _ = _lbfgs(sub, sub.pack(Wr.double(), br.double()), tol,
                                            max(1, max_iter - int(n_it[redo].min())), history)
        W64, b64 = sub.unpack(theta64)
        W[redo], b[redo] = W64.cpu().to(W.dtype), b64.cpu().to(b.dtype)
        n_it[redo] += it64
        gmax[redo], f[redo] = g64.to(gmax.dtype), f64.to(f.dtype)
        refined[redo] = True
        del X64, sub
    b = torch.where(present.expand_as(b).cpu(), b, torch.full_like(b, -math.inf))
    return W, b, n_it, gmax, f, refined


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
