"""Batched one-hidden-layer ReLU probes trained like scikit-learn's ``MLPClassifier``, seeded.

Glorot init, L2 ``alpha``, Adam, minibatches of 200 and sklearn's no-improvement stopping, but all
slices train together with ``bmm`` and the minibatch order is shared and seeded (the paper's MLP
had no seed), so a fit is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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

__all__ = ["MLPFit", "fit_mlp", "mlp_logits"]


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


def _init(seed: int, index: int, d: int, hidden: int, K: int) -> list[torch.Tensor]:
    """Glorot-uniform weights and biases of slice ``index``, from its own seeded stream, so a fit
    does not depend on how the slices were chunked onto the device."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    out = []
    for fan_in, fan_out in ((d, hidden), (hidden, K)):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        out.append((torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        out.append((torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
    return out


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
    parts = []
    for s0, s1 in slice_ranges(S, slice_chunk):
        Xc = slice_block(X, s0, s1, dev, dtype)
        s = s1 - s0
        lab = (labels if labels.shape[0] == 1 else labels[s0:s1]).to(dev).expand(s, n)
        present = torch.zeros(s, K, dtype=torch.bool, device=dev).scatter_(1, lab, True)
        mask_add = torch.where(present, 0.0, NEG).to(dtype)
        mu, sd = moments(Xc, standardize)
        Xn = (Xc - mu.unsqueeze(1)) / sd.unsqueeze(1) if standardize else Xc

        params = [torch.stack(v) for v in zip(*(_init(seed, g, d, hidden, K) for g in range(s0, s1)), strict=True)]
        params = [p.to(dev, dtype).requires_grad_(True) for p in params]
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        active = torch.ones(s, dtype=torch.bool, device=dev)
        best = torch.full((s,), math.inf, dtype=torch.float64, device=dev)
        stale = torch.zeros(s, dtype=torch.long, device=dev)
        epochs = torch.zeros(s, dtype=torch.long, device=dev)
        last_loss = torch.zeros(s, dtype=torch.float64, device=dev)
        step = 0
        order_gen = torch.Generator().manual_seed(seed)  # every chunk replays the same minibatch order
        bs = min(batch_size, n)
        for _ in range(max_epochs):
            order = torch.randperm(n, generator=order_gen).to(dev)
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
