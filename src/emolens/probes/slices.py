"""Moving probe inputs onto the compute device: slice stacks, labels, targets, standardisation.

Every probe solver in :mod:`emolens.probes` takes a stack ``X[slices, items, d]`` that may be a
numpy array, a read-only numpy memmap (an activation store) or a torch tensor, and fits all
slices together. This module is the one place that turns such input into device tensors, a
chunk of slices at a time, so memory stays bounded and a GPU host streams the store instead of
copying it: on CUDA a chunk goes through pinned host memory with a non-blocking copy, so the next
chunk's disk read overlaps the current chunk's transfer and solve. On the CPU the memmap pages
are wrapped without an extra copy. Labels and targets are validated here too: a ``-1`` label or a
NaN target is an error, never a silently dropped item.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from emolens.errors import EmolensError

__all__ = ["ArrayLike", "slice_ranges", "encode_labels", "slice_block", "moments", "encode_targets",
           "probe_device", "stack_slices", "to_numpy"]

ArrayLike = Any  # numpy array, numpy memmap or torch tensor

NEG = -1e30  # logit offset for classes absent from a slice's training labels



def probe_device(X: ArrayLike, device: str | torch.device | None) -> torch.device:
    """Where a solve runs: ``device`` if given (``"auto"``: CUDA when available), else X's own device.

    A numpy memmap has no device, so without this every probe of a store ran on the CPU even on a
    GPU host; callers pass the run's device through.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device is not None:
        return torch.device(device)
    return X.device if isinstance(X, torch.Tensor) else torch.device("cpu")


def stack_slices(X: ArrayLike) -> ArrayLike:
    """X itself, after checking it is a ``[slices, items, d]`` stack."""
    if X.ndim != 3:
        raise EmolensError(f"expected activations of shape [slices, items, d], got shape {tuple(X.shape)}")
    return X


def slice_block(X: ArrayLike, s0: int, s1: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Slices ``s0:s1`` of X as a ``dtype`` tensor on ``device``.

    numpy (memmap) data is read once and wrapped without a copy. For CUDA the chunk is staged in
    pinned memory and copied with ``non_blocking=True`` in its stored dtype (a float16 store moves
    half the bytes) and cast on the device; on the CPU it is cast in place of the copy.
    """
    if isinstance(X, torch.Tensor):
        return X[s0:s1].to(device=device, dtype=dtype)
    part = np.asarray(X[s0:s1])
    with warnings.catch_warnings():  # read-only memmaps: we never write through the tensor
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(part)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True).to(dtype)
    return t.to(dtype=dtype)


def slice_ranges(n_slices: int, slice_chunk: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of ``slice_chunk`` slices (one chunk when it is None/0)."""
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


def moments(X: torch.Tensor, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Training mean ``[S, d]`` and scale ``[S, d]`` (ones unless standardising; 0 -> 1 like sklearn)."""
    mu = X.mean(1)
    if not standardize:
        return mu, torch.ones_like(mu)
    sd = X.var(1, unbiased=False).sqrt()
    return mu, torch.where(sd > 0, sd, torch.ones_like(sd))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU numpy copy of ``t``."""
    return t.detach().cpu().numpy()
