"""``batch_size: auto``: how many prompts a forward takes, chosen from the memory that is free.

A fixed batch size is wrong at both ends: 16 prompts leave an H100 mostly idle on a small model,
and 64 prompts of an 8B model with a tiled key/value cache can run out of memory late in a run.
The chooser prices one batch row from the model's shapes -- its key/value cache over the prompt
(times the conditions stacked onto it), the widest activations a layer holds at once, attention
scores, and the last position's logits -- and fits as many rows as a share of free memory allows.

On CUDA the free memory is ``torch.cuda.mem_get_info``; on a CPU, the available RAM
(``/proc/meminfo``'s ``MemAvailable``), but a CPU's throughput stops growing long before its
memory runs out, so the CPU rule is simply :data:`CPU_BATCH` unless RAM is too short for that.

The same reasoning sizes condition stacking (:func:`stack_budget`): how many rows one stacked
forward of conditions may hold, and how much tiled key/value cache.
"""

from __future__ import annotations

import os

import torch

from emolens.errors import EmolensError

__all__ = ["CPU_BATCH", "GPU_MAX_BATCH", "GPU_STACK_ROWS", "STACK_CACHE_BYTES", "STACK_CACHE_SHARE", "STACK_ROWS",
           "auto_batch_size", "free_memory", "row_bytes", "stack_budget", "stack_overrides"]

#: The CPU default: beyond ~16 prompts a forward, a few CPU cores gain no throughput.
CPU_BATCH = 16
#: The largest automatic batch on an accelerator (padding waste grows with the batch).
GPU_MAX_BATCH = 256
#: Rows one stacked forward of conditions may hold (batch copies x batch) on a CPU, and the tiled
#: key/value cache it may hold. A condition step runs one token (or a few) per row; a CPU is
#: compute-bound long before 256 rows, and the cache cap keeps a large model's long prompts in RAM.
STACK_ROWS, STACK_CACHE_BYTES = 256, 2 ** 31
#: Rows of a stacked forward on a CUDA device. A one-token step of 256 rows of an 8B model streams
#: every weight (~0.4 GB a layer) for 256 tokens of work and spends more time launching the
#: layer's kernels than computing; about 1,000 rows make it compute-bound (docs/gpu.md).
GPU_STACK_ROWS = 1024
#: Share of a CUDA device's free memory (measured when a runner is made) the tiled cache may take;
#: ``batch_size: auto`` takes half for the batches themselves.
STACK_CACHE_SHARE = 0.25


def free_memory(device: torch.device | str) -> int:
    """Bytes free for tensors on ``device``: CUDA's free memory, else the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def row_bytes(config, tokens: int, bytes_per_value: int, stacked: int = 1) -> int:
    """Peak bytes one batch row adds to a forward of ``tokens`` tokens (``stacked`` conditions per row).

    Key/value cache of every layer (kept for prefixes and label continuations), the widest
    per-layer activations (hidden, MLP intermediate, attention scores of one layer), and the
    float32 logits of the last position.
    """
    cfg = getattr(config, "text_config", None) or config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0))
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 1))
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // max(heads, 1))
    inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 0))
    cache = 2 * layers * kv_heads * head_dim * tokens * bytes_per_value
    live = (4 * hidden + 2 * inter + heads * tokens) * tokens * bytes_per_value
    return stacked * (cache + live) + 4 * vocab


def auto_batch_size(config, device: torch.device | str, dtype: torch.dtype, tokens: int = 128, stacked: int = 1,
                    free: int | None = None, share: float = 0.5) -> int:
    """The batch size for ``batch_size: auto``: as many rows as ``share`` of the free memory holds.

    ``free`` overrides the measured free bytes (tests); ``tokens`` is the longest prompt expected.
    On a CPU the answer is :data:`CPU_BATCH` unless the available RAM holds fewer rows; on an
    accelerator it is capped at :data:`GPU_MAX_BATCH`. Always at least 1.
    """
    device = torch.device(device)
    free = free_memory(device) if free is None else int(free)
    per_row = max(1, row_bytes(config, tokens, torch.empty((), dtype=dtype).element_size(), stacked))
    fits = int(free * share // per_row)
    cap = GPU_MAX_BATCH if device.type != "cpu" else CPU_BATCH
    return max(1, min(cap, fits))


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise EmolensError(f"{name}={raw!r} is not a positive integer", f"unset {name} or give a number such as 256")
    return value


def stack_overrides() -> tuple[int | None, int | None]:
    """``EMOLENS_STACK_ROWS`` and ``EMOLENS_STACK_CACHE_BYTES`` (None where unset). A bad value is an
    :class:`~emolens.errors.EmolensError` naming the variable; a study reads them before any work,
    so a typo fails at once (exit 2), not in its first stacking stage."""
    return _env_int("EMOLENS_STACK_ROWS"), _env_int("EMOLENS_STACK_CACHE_BYTES")


def stack_budget(device: torch.device | str, free: int | None = None) -> tuple[int, int]:
    """``(rows, cache bytes)`` a stacked forward of conditions may hold on ``device``.

    A CPU: :data:`STACK_ROWS` and :data:`STACK_CACHE_BYTES`. A CUDA device: :data:`GPU_STACK_ROWS`
    and :data:`STACK_CACHE_SHARE` of its free memory (``free`` overrides the measured bytes, for
    tests), never less than the CPU's cache cap. Why it matters there: an 8B model's prompt of
    ~90 tokens is ~12 MB of cache a row, so the CPU's 2 GiB holds two copies of a 64-row batch, and
    each condition forward would be 128 one-token rows, launch-bound. ``EMOLENS_STACK_ROWS`` and
    ``EMOLENS_STACK_CACHE_BYTES`` override either (e.g. to reproduce a GPU's stacking on a CPU).
    Stacking changes how many conditions share a forward, never a score (tested).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free = free_memory(device) if free is None else int(free)
        rows, cache = GPU_STACK_ROWS, max(STACK_CACHE_BYTES, int(free * STACK_CACHE_SHARE))
    else:
        rows, cache = STACK_ROWS, STACK_CACHE_BYTES
    set_rows, set_cache = stack_overrides()
    return set_rows or rows, set_cache or cache
