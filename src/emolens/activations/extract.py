"""Extraction: one forward per batch gives the label readout and every requested capture.

The corpus is processed in fixed chunks of consecutive items (length-sorted batches inside a
chunk), so a killed run resumes at the first incomplete chunk and writes exactly the bytes an
uninterrupted run would (see :mod:`emolens.activations.store`). Each batch is one clean read of the
engine's :class:`~emolens.engine.runner.ConditionRunner`; without ``readout`` the forward stops
after the deepest requested layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from emolens.activations.store import ActivationStore, bfloat16_bits, prepare_store, storage_dtype
from emolens.engine.ops import Capture
from emolens.engine.positions import position_items
from emolens.engine.runner import ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.errors import EmolensError, arg
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.sites import SITES
from emolens.readout import readout_frame

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def store_dtype_for(name: str, model_dtype: torch.dtype) -> str:
    """The store dtype ``name`` stands for: ``auto`` is the model's compute dtype.

    A float32 model stores float32 (nothing is lost on a CPU), a float16 model float16 and a
    bfloat16 model bfloat16: the activations are kept bit for bit at half of float32's size. (float16
    would not do for bfloat16: it overflows above 65504 and loses bits below 2^-14.) ``float32``,
    ``float16`` and ``bfloat16`` are taken as given on any model; a stored value is the capture cast
    to that dtype, so a float32 model's activations are rounded by ``bfloat16`` or ``float16``, and
    ``float16`` refuses a value it cannot hold (the finite-value check names the fix).
    """
    if name != "auto":
        storage_dtype(name)
        return name
    return {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(model_dtype, "float32")


def _stored(block: torch.Tensor, dtype: str) -> np.ndarray:
    """A captured block as the store's buffer holds it (bfloat16: its bit patterns; NumPy has no bfloat16)."""
    return bfloat16_bits(block) if dtype == "bfloat16" else block.numpy()


def parse_sites(sites: str | Sequence[str]) -> list[str]:
    """``"attn,mlp,resid"`` -> a list of known sites, in the order given, without repeats."""
    items = [s.strip() for s in sites.split(",")] if isinstance(sites, str) else list(sites)
    items = [s for s in items if s]
    unknown = [s for s in items if s not in SITES]
    if unknown or not items:
        raise EmolensError(f"unknown site(s) {unknown or items}", f"use sites from {list(SITES)}")
    return list(dict.fromkeys(items))


def _capture_ops(sites: list[str], layers_of: dict[str, list[int]], positions: list[int | str],
                 dtype: torch.dtype) -> tuple[list[Capture], dict[str, list[tuple[str, int]]]]:
    """Captures for each site plus, per site, where each stored position comes from (name, index)."""
    ints = [p for p in positions if isinstance(p, int)]
    ops: list[Capture] = []
    layout: dict[str, list[tuple[str, int]]] = {}
    for site in sites:
        layout[site] = []
        if ints:
            ops.append(Capture(site, layers=layers_of[site], positions=ints, name=f"{site}@idx", dtype=dtype,
                               device="cpu"))
        for p in positions:
            if isinstance(p, int):
                layout[site].append((f"{site}@idx", ints.index(p)))
            else:
                name = f"{site}@{p}"
                ops.append(Capture(site, layers=layers_of[site], positions=p, pool="mean", name=name, dtype=dtype,
                                   device="cpu"))
                layout[site].append((name, 0))
    return ops, layout


def prompt_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x1e")
    return h.hexdigest()


def store_bytes(arrays: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """Bytes a store of these ``site -> (shape, dtype name)`` arrays takes once written."""
    return sum(int(np.prod(shape)) * storage_dtype(dtype).itemsize for shape, dtype in arrays.values())


#: Host memory one chunk's buffers may take with ``chunk_size="auto"``.
CHUNK_BYTES = 2 ** 30
#: The smallest automatic chunk (the fixed default's size).
MIN_CHUNK = 256


def auto_chunk_size(arrays: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """Items per chunk for ``chunk_size="auto"``: as many as :data:`CHUNK_BYTES` of host buffers hold,
    at least :data:`MIN_CHUNK`.

    Why: a chunk's batches are length-sorted within the chunk only, so a small chunk's last batch
    spans its whole length tail. On crowd-enVENT at 64 rows a batch, 256-item chunks pad 28% of
    the real tokens, 1,365-item chunks 6% (``bench/batching.py``). A store of one position (the
    robustness variants' probe stores) is 0.8 MB an item for an 8B model in bfloat16, so a GiB
    holds 1,365 items; one of five positions 273 (256 in whole batches of 64). It depends only on
    the store's shapes, so a resumed store gets the same chunks on any machine."""
    per_item = store_bytes({site: ((1, *shape[1:]), dtype) for site, (shape, dtype) in arrays.items()})
    return max(MIN_CHUNK, CHUNK_BYTES // max(1, per_item))


def chunk_items(chunk_size: int | str, arrays: dict[str, tuple[tuple[int, ...], str]], batch_size: int) -> int:
    """The items a chunk of this store holds: ``chunk_size`` (``auto``: :func:`auto_chunk_size`) in
    whole batches, at least one batch."""
    size = auto_chunk_size(arrays) if chunk_size == "auto" else int(chunk_size)
    return max(batch_size, size // batch_size * batch_size)


def check_free_space(out: str | Path, needed: int, margin: float = 1.05) -> None:
    """Refuse, before any work, a store the disk cannot hold.

    The store's memmaps are created sparse, so a disk too small fails only when a late chunk is
    written -- for an 8B model's full-corpus fp32 store (52 GB) after most of an hour. Checking
    up front costs one ``statvfs``.
    """
    import shutil

    where = Path(out).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed * margin > free:
        raise EmolensError(f"the activation store needs {needed / 1e9:.2f} GB but {where} has {free / 1e9:.2f} GB free",
                           f"free space, put {arg('out')} on a larger disk, or store fewer layers/positions or "
                           f"{arg('dtype', 'float16')}")


def extract(lm, dataset, out: str | Path, sites: str | Sequence[str] = ("attn", "mlp", "resid"),
            layers="all", positions=(-1,), spec=None, readout: bool = False, dtype: str = "auto",
            batch_size: int = 16, chunk_size: int | str = 256, progress: bool = True,
            on_chunk: Callable[[int], None] | None = None) -> ActivationStore:
    """Extract activations of ``dataset`` under ``lm`` into the store at ``out`` (resume or reuse).

    ``positions`` are relative ints (−1 = answer cue) and/or span names (``context``, ``all``,
    ...; stored mean-pooled). ``on_chunk(k)`` runs after chunk ``k`` is committed (tests inject
    kills there). ``dtype`` is the store's: ``auto`` (the model's compute dtype, see
    :func:`store_dtype_for`), ``bfloat16``, ``float16`` or ``float32``. ``chunk_size``: items per
    durable chunk, or ``auto`` (:func:`auto_chunk_size`). Returns the complete store.
    """
    spec = spec or PromptSpec()
    site_list = parse_sites(sites)
    pos = position_items(positions)
    dtype = store_dtype_for(dtype, lm.dtype)
    if batch_size < 1 or (chunk_size != "auto" and (not isinstance(chunk_size, int) or chunk_size < 1)):
        raise EmolensError(f"{arg('batch_size', batch_size)} and {arg('chunk_size', chunk_size)} must be positive",
                           "pass 1 or more (or auto for the chunk size)")
    if len(dataset) == 0:
        raise EmolensError("the dataset has no items", f"check {arg('data')} and {arg('limit')}")
    reg = lm.sites
    layer_sites = [s for s in site_list if reg.layer_count(s) > 1] or ["resid"]
    layer_list = reg.resolve_layers(layers, layer_sites[0])
    layers_of = {s: (layer_list if reg.layer_count(s) > 1 else [0]) for s in site_list}
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    identity = {
        "model": lm.spec, "source_id": lm.source_id, "model_dtype": str(lm.dtype).replace("torch.", ""),
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "prompt": asdict(spec), "prompt_fingerprint": spec.fingerprint(),
        "prompt_hash": prompt_hash([p.text for p in prompts]),
        "sites": site_list, "layers": layer_list, "site_layers": layers_of, "positions": pos, "span_pool": "mean",
        "dtype": dtype, "readout": bool(readout), "n_items": len(dataset),
    }
    arrays = {s: ((len(dataset), len(layers_of[s]), len(pos), *reg.width(s)), dtype) for s in site_list}
    chunk_size = chunk_items(chunk_size, arrays, batch_size)
    run = {"chunk_size": chunk_size, "batch_size": batch_size, "device": str(lm.device)}
    if not (Path(out) / "manifest.json").exists():
        check_free_space(out, store_bytes(arrays))
    target = prepare_store(out, identity, dataset.ids, arrays, run,
                           info={"model_family": reg.family, "n_layers": reg.n_layers})
    if isinstance(target, ActivationStore):
        return target
    writer = target
    ops, layout = _capture_ops(site_list, layers_of, pos, _TORCH_DTYPES[dtype])
    reader = None
    if readout:
        reader = LabelScorer.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    todo = writer.pending()  # damaged chunks a repair marked, then the unfinished tail
    done_items = len(dataset) - sum(len(writer.chunk_range(c)) for c in todo)
    bar = tqdm(total=len(dataset), initial=done_items, desc="extract", unit="item", disable=not progress)
    try:
        share_keep = -min(pos) if pos and all(isinstance(p, int) and p < 0 for p in pos) else 0
        _fill(writer, todo, lm, dataset, prompts, spec, ops, layout, site_list, dtype, reader, batch_size,
              bar, on_chunk, share_keep)
    except BaseException:
        writer.release()  # a failed or interrupted writer frees the store for the rerun
        raise
    finally:
        bar.close()
    return writer.finish()


def _fill(writer, todo, lm, dataset, prompts, spec, ops, layout, site_list, dtype: str, reader, batch_size, bar,
          on_chunk, share_keep: int = 0) -> None:
    """Compute and commit the chunks in ``todo`` (each batch one clean read of the engine's runner).

    ``share_keep > 0`` (every stored position is counted from the end, the deepest ``-share_keep``):
    reads run each prompt's own tokens on the cached tokens all prompts share
    (:meth:`~emolens.engine.runner.ConditionRunner.share_prefix`)."""
    runner = ConditionRunner(lm, reader)  # no scorer without a readout: captures only, stopping early
    if share_keep:  # every position counts from the end: the template's shared tokens run once
        runner.share_prefix(prompts, keep=share_keep)
    for chunk in todo:
        rows = writer.chunk_range(chunk)
        buffers = writer.buffers(chunk)
        scores = np.zeros((len(rows), len(spec.labels)), dtype=np.float32) if reader else None
        top: list[str] = [""] * len(rows)
        chunk_prompts = [prompts[i] for i in rows]
        # packed: a chunk sorts only its own items, so its last batch would span the length tail
        for batch in iter_batches(lm.tokenizer, chunk_prompts, batch_size, lm.device, pack=True):
            with torch.no_grad():
                got = runner.read(batch, ops)
                caps = got.captures
                for site in site_list:
                    parts = [caps[name][:, :, j] for name, j in layout[site]]
                    block = torch.stack(parts, 2)  # [b, L, P, *w]
                    if dtype == "float16" and not bool(torch.isfinite(block).all()):
                        raise EmolensError(f"activations at {site!r} overflow float16",
                                           f"extract with {arg('dtype', 'bfloat16')} or {arg('dtype', 'float32')}")
                    buffers[site][batch.indices] = _stored(block, dtype)
                if reader is not None:
                    scores[batch.indices] = got.scores.numpy()
                    for i, tok_id in zip(batch.indices, got.top.tolist(), strict=True):
                        top[i] = lm.tokenizer.decode([tok_id])
            bar.update(len(batch))
        frame = readout_frame([dataset.ids[i] for i in rows], [dataset.labels[i] for i in rows], spec.labels,
                              scores, top) if reader is not None else None
        writer.commit(chunk, buffers, frame)
        if on_chunk is not None:
            on_chunk(chunk)
