"""On-disk activation store: one memory-mapped ``.npy`` per site, ``[item, layer, position, *width]``.

Layout of a store folder::

    manifest.json     what was extracted, from what (model, weights, data, prompts, sites...)
    <site>.npy        a standard .npy file; readers memory-map it (np.load(mmap_mode="r")); a
                      bfloat16 site holds its raw bit patterns as uint16 (see :class:`Bfloat16Array`)
    manifest.backup.json  a copy of the manifest, so a damaged manifest can be restored
    progress.json     {"chunks_done": k, "checksums": {chunk: {site: crc32}}, "redo": [...]} --
                      replaced atomically after each chunk is durable
    readout/          per-chunk label readouts (parquet, atomically renamed; kept for repairs)
    readout.parquet   the readout of every item, in item order (when requested)
    COMPLETE          written last; only a complete store is reused or opened by default
    .emolens.lock     the writer's pid and host while a writer is at work (see emolens.locks)

Why this shape: items are written in fixed chunks of consecutive items, so each chunk is one
contiguous byte range per site, written with ``pwrite`` from a chunk-sized buffer (host memory
is bounded by the chunk, never the corpus) and made durable (``fsync``) before ``progress.json``
moves forward. A kill at any moment leaves a store that resumes at the first incomplete chunk;
because a chunk's items and their batching are fixed, the resumed run writes the same bytes an
uninterrupted one would. A store whose identity (model, data, prompts, sites, layers, positions,
dtype) differs from the request is refused, never appended to. Damage done behind the store's
back (a truncated or deleted array, a lost readout chunk, a corrupt manifest) is found on open
and repaired on the next extract, which recomputes only the damaged chunks
(:mod:`emolens.activations.health`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emolens.activations.files import FORMAT, STORE_DTYPES, VERSION, join_readout, storage_dtype
from emolens.activations.files import dump as _dump
from emolens.activations.health import BACKUP, check_store, chunk_crc, read_json, repair_store
from emolens.errors import EmolensError, arg
from emolens.locks import LOCK_NAME, WriterLock
from emolens.notices import warn
from emolens.paths import atomic_write_bytes

__all__ = ["STORE_DTYPES", "ActivationStore", "Bfloat16Array", "StoreWriter", "bfloat16_bits", "decode_bfloat16",
           "prepare_store", "storage_dtype"]

_OWN = {"manifest.json", "progress.json", "COMPLETE", "readout.parquet", "readout", BACKUP, LOCK_NAME}


def bfloat16_bits(values) -> np.ndarray:
    """``values`` (a torch tensor or array of any float dtype) rounded to bfloat16, as ``uint16`` bit patterns.

    The one encoder of bfloat16 sites. A bfloat16 tensor's bits are taken unchanged, so a capture
    made in bfloat16 is stored exactly; any other float dtype is rounded by torch (to nearest even).
    """
    import torch

    t = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    return t.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)


def decode_bfloat16(bits) -> np.ndarray:
    """float32 values of bfloat16 bit patterns: a bfloat16 is the upper half of a float32, so this is exact."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class Bfloat16Array:
    """A bfloat16 site as readers see it: indexed like a read-only memmap, giving float32.

    Why: NumPy has no bfloat16, so the file is a standard ``uint16`` ``.npy`` of the bit patterns
    (memory-mapped like any site), and this wrapper is the one place where those bits become numbers.
    Indexing reads only the selected items from disk and widens them exactly (:func:`decode_bfloat16`),
    so every reader that indexes ``store.read(site)`` -- probes, steering, compare -- gets the true
    values without knowing the encoding. ``raw`` is the memmap of the bits.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, raw: np.ndarray):
        self.raw = raw

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    @property
    def size(self) -> int:
        return self.raw.size

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index) -> np.ndarray:
        return decode_bfloat16(self.raw[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = decode_bfloat16(self.raw)
        return values if dtype is None else values.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Bfloat16Array(shape={self.shape}, decoded to float32)"


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("emolens", "torch", "transformers", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "unknown"
    return out


class ActivationStore:
    """Read side of a store: ``ActivationStore.open(dir).read(site)`` -> memmap ``[item, layer, position, *w]``."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | Path, allow_incomplete: bool = False) -> ActivationStore:
        """Open a store for reading after a quick check (manifest, array sizes and headers, readout).

        A damaged store is an error naming the damage and the fix (rerun extract, which repairs).
        """
        root = Path(root)
        if not root.is_dir():
            what = "a file" if root.exists() else "no such folder"
            raise EmolensError(f"{str(root)!r} is not an activation store ({what})",
                               f"pass the {arg('out')} folder of an extraction")
        if not (root / "manifest.json").exists() and not (root / BACKUP).exists():
            raise EmolensError(f"{str(root)!r} is not an activation store (no manifest.json)",
                               f"extract into it ({arg('out')}) to create one")
        manifest = read_json(root / "manifest.json")
        if manifest is not None and manifest.get("format") != FORMAT:
            raise EmolensError(f"{str(root)!r} holds no emolens activations", "point at an extract output folder")
        check = check_store(root, full=False)
        if not check.ok:
            what = check.fatal or "; ".join(check.problems)
            raise EmolensError(f"activation store {str(root)!r} is damaged ({what})",
                               f"rerun the extract command that made it (it repairs only the damage), "
                               f"or see `emolens doctor {root}`")
        if not allow_incomplete and not (root / "COMPLETE").exists():
            raise EmolensError(f"activation store {str(root)!r} is incomplete",
                               "rerun the same extract command to resume it")
        return cls(root, manifest)

    # -- what is inside ----------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        return self.manifest["identity"]

    @property
    def item_ids(self) -> list[str]:
        return list(self.manifest["item_ids"])

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["arrays"])

    @property
    def layers(self) -> list[int]:
        """Layers of the per-layer sites (``embed``/``final`` have only layer 0: see :meth:`layers_of`)."""
        return list(self.identity["layers"])

    def layers_of(self, site: str) -> list[int]:
        return list(self.identity["site_layers"][site])

    @property
    def positions(self) -> list[int | str]:
        """Position labels in storage order: relative ints, or span names (mean-pooled)."""
        return list(self.identity["positions"])

    @property
    def complete(self) -> bool:
        return (self.root / "COMPLETE").exists()

    def __len__(self) -> int:
        return len(self.manifest["item_ids"])

    def _path(self, site: str) -> Path:
        if site not in self.manifest["arrays"]:
            raise EmolensError(f"site {site!r} is not in store {str(self.root)!r}", f"stored sites: {self.sites}")
        return self.root / f"{site}.npy"

    # -- data ----------------------------------------------------------------------------------

    def dtype(self, site: str) -> str:
        """The storage dtype of ``site`` as the manifest names it (``float32``, ``float16`` or ``bfloat16``)."""
        self._path(site)
        return str(self.manifest["arrays"][site]["dtype"])

    def read(self, site: str) -> np.memmap | Bfloat16Array:
        """Read-only ``[item, layer, position, *width]``, memory-mapped; nothing is loaded up front.

        A float32/float16 site is the ``np.memmap`` itself; a bfloat16 site is a
        :class:`Bfloat16Array` over the memmap of its bits, which decodes to float32 what is indexed
        (NumPy has no bfloat16). Either way, indexing gives the stored values as numbers.
        """
        raw = np.load(self._path(site), mmap_mode="r")
        return Bfloat16Array(raw) if self.dtype(site) == "bfloat16" else raw

    def torch(self, site: str):
        """A CPU tensor viewing the file (copy-on-write map, so torch gets a writable buffer).

        A bfloat16 site is a ``torch.bfloat16`` view of the same bytes (torch has the dtype NumPy
        lacks), so it costs no copy and no decode.
        """
        import torch

        raw = np.load(self._path(site), mmap_mode="c")
        if self.dtype(site) == "bfloat16":
            return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(raw)

    def readout(self):
        """The stored label readout as a DataFrame (id, gold, pred, correct, top1, logp_<label>)."""
        import pandas as pd

        path = self.root / "readout.parquet"
        if not path.exists():
            raise EmolensError(f"store {str(self.root)!r} has no readout", f"extract with {arg('readout', True)}")
        return pd.read_parquet(path)

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of item ids (to align a store with a subset such as the correct items)."""
        pos = {item: i for i, item in enumerate(self.manifest["item_ids"])}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise EmolensError(f"{len(missing)} ids are not in the store (first: {missing[0]!r})",
                               "extract the items first or check the id list")
        return np.array([pos[i] for i in ids], dtype=np.int64)


class StoreWriter:
    """Write side: chunked, durable, resumable. Get one from :func:`prepare_store`."""

    def __init__(self, root: Path, manifest: dict, chunks_done: int, progress: dict | None = None,
                 lock: WriterLock | None = None):
        self.root = root
        self.manifest = manifest
        self.chunks_done = chunks_done
        progress = progress or {}
        self.redo: list[int] = sorted(int(c) for c in progress.get("redo", []))
        self.checksums: dict[str, dict[str, int]] = dict(progress.get("checksums", {}))
        self.lock = lock
        self.chunk_size = int(manifest["run"]["chunk_size"])
        self.n_items = len(manifest["item_ids"])
        self._offsets = {}
        for site in manifest["arrays"]:
            mm = np.load(root / f"{site}.npy", mmap_mode="r")
            self._offsets[site] = mm.offset  # bytes of the .npy header
            del mm

    @property
    def n_chunks(self) -> int:
        return -(-self.n_items // self.chunk_size)

    def pending(self) -> list[int]:
        """Chunks still to compute, in order: damaged ones to redo, then the unfinished tail."""
        return sorted(set(self.redo) | set(range(self.chunks_done, self.n_chunks)))

    def chunk_range(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(self.n_items, (chunk + 1) * self.chunk_size))

    def buffers(self, chunk: int) -> dict[str, np.ndarray]:
        """Fresh host buffers for one chunk of every site (the only host memory the data needs).

        Each is in the site's file dtype: a bfloat16 site's buffer is ``uint16`` and takes the bit
        patterns of :func:`bfloat16_bits`.
        """
        n = len(self.chunk_range(chunk))
        return {site: np.zeros((n, *spec["shape"][1:]), dtype=storage_dtype(spec["dtype"]))
                for site, spec in self.manifest["arrays"].items()}

    def commit(self, chunk: int, buffers: Mapping[str, np.ndarray], readout=None) -> None:
        """Write one chunk's rows durably, then advance ``progress.json`` (the commit point)."""
        if chunk != self.chunks_done and chunk not in self.redo:
            raise EmolensError(f"chunk {chunk} committed out of order (next is {self.chunks_done})",
                               "commit chunks in order")
        start = self.chunk_range(chunk).start
        sums = {}
        for site, spec in self.manifest["arrays"].items():
            file_dtype = storage_dtype(spec["dtype"])
            if spec["dtype"] == "bfloat16" and np.asarray(buffers[site]).dtype != file_dtype:
                # a float buffer would be cast to integers, not encoded: refuse rather than store junk
                raise ValueError(f"buffer of bfloat16 site {site} must hold uint16 bit patterns (bfloat16_bits)")
            buf = np.ascontiguousarray(buffers[site], dtype=file_dtype)
            if buf.shape != (len(self.chunk_range(chunk)), *spec["shape"][1:]):
                raise ValueError(f"buffer of {site} has shape {buf.shape}")
            row_bytes = buf[0].nbytes if len(buf) else 0
            sums[site] = chunk_crc(buf)
            fd = os.open(self.root / f"{site}.npy", os.O_WRONLY)
            try:
                view = memoryview(buf.reshape(-1).view(np.uint8))
                pos, offset = 0, self._offsets[site] + start * row_bytes
                while pos < len(view):
                    pos += os.pwrite(fd, view[pos:], offset + pos)
                os.fsync(fd)
            finally:
                os.close(fd)
        if readout is not None:
            (self.root / "readout").mkdir(exist_ok=True)
            path = self.root / "readout" / f"chunk-{chunk:05d}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            readout.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        if chunk in self.redo:
            self.redo.remove(chunk)
        else:
            self.chunks_done = chunk + 1
        self.checksums[str(chunk)] = sums
        progress = {"chunks_done": self.chunks_done, "checksums": self.checksums,
                    **({"redo": self.redo} if self.redo else {})}
        atomic_write_bytes(self.root / "progress.json", _dump(progress))

    def release(self) -> None:
        """Give up the writer lock (also done by :meth:`finish` and at process exit)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def finish(self) -> ActivationStore:
        """Join the readout chunks, then write ``COMPLETE`` (a store is usable only after this)."""
        if self.chunks_done != self.n_chunks or self.redo:
            raise EmolensError(f"store has {self.chunks_done - len(self.redo)} of {self.n_chunks} chunks",
                               "finish extraction first")
        if self.manifest["identity"].get("readout"):
            join_readout(self.root, self.n_chunks)
        done = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        atomic_write_bytes(self.root / "COMPLETE", f"{done}\n".encode())
        self.release()
        return ActivationStore.open(self.root)


def _identity_diff(old: Mapping, new: Mapping) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def prepare_store(root: str | Path, identity: dict, item_ids: Sequence[str],
                  arrays: Mapping[str, tuple[tuple[int, ...], str]], run: dict,
                  info: dict | None = None) -> StoreWriter | ActivationStore:
    """Create, resume, repair or reuse the store at ``root`` for a request.

    ``identity`` is everything that determines the stored values (compared exactly);
    ``arrays`` maps site -> (shape, dtype name); ``run`` holds what must also match to *resume*
    bit-identically (chunk and batch size, device), but not to reuse a complete store. Returns
    the complete :class:`ActivationStore` when one matching the request exists, else a
    :class:`StoreWriter` holding the store's writer lock, positioned at the chunks still to do
    (damaged chunks found by a full check first). A store holding no finished chunk (left by a
    failed extract) is replaced, so a corrected command is never blocked by its failed attempt.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise EmolensError(f"{arg('out', str(root))} is a file", "pass a folder path for the store")
    identity = json.loads(json.dumps(identity))  # normalise tuples etc. to what JSON reads back
    run = json.loads(json.dumps(run))
    created = not root.exists()
    lock = WriterLock(root, "activation store").acquire()
    try:
        target = _prepare(root, identity, list(item_ids), arrays, run, info, lock)
    except BaseException:
        lock.release()
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise
    if isinstance(target, ActivationStore):
        lock.release()
    return target


def _has_work(root: Path) -> bool:
    """Whether a store holds anything worth keeping (a finished chunk, or progress we cannot read)."""
    if (root / "COMPLETE").exists():
        return True
    if not (root / "progress.json").exists():
        return False
    progress = read_json(root / "progress.json")
    return progress is None or int(progress.get("chunks_done", 0)) > 0 or bool(progress.get("redo"))


def _clear(root: Path) -> None:
    for p in root.iterdir():
        if p.name != LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _prepare(root: Path, identity: dict, item_ids: list[str], arrays, run: dict, info: dict | None,
             lock: WriterLock) -> StoreWriter | ActivationStore:
    manifest_path = root / "manifest.json"
    if manifest_path.exists() or (root / BACKUP).exists():
        check = check_store(root, full=True)
        if check.fatal is not None:
            if _has_work(root):
                raise EmolensError(f"store {str(root)!r}: {check.fatal}",
                                   f"delete the folder and extract again, or choose a new {arg('out')} folder")
            warn(f"store {str(root)!r}: {check.fatal}; it held no finished chunk, starting it again")
            _clear(root)
            return _create(root, identity, item_ids, arrays, run, info, lock)
        old = check.manifest
        diff = _identity_diff(old["identity"], identity)
        if diff or old["item_ids"] != item_ids:
            fields = diff or ["item_ids"]
            if not _has_work(root):
                warn(f"replacing store {str(root)!r}: it held no finished chunk (a failed extract with "
                     f"different {', '.join(fields)})")
                _clear(root)
                return _create(root, identity, item_ids, arrays, run, info, lock)
            raise EmolensError(f"store {str(root)!r} was extracted with different {', '.join(fields)}",
                               f"choose a new {arg('out')} folder or delete the old store")
        if not check.ok:
            warn(f"store {str(root)!r} is damaged: {'; '.join(check.problems)}")
            for line in repair_store(check):
                warn(f"store {str(root)!r}: {line}")
        if (root / "COMPLETE").exists():
            return ActivationStore.open(root)
        run_diff = _identity_diff(old["run"], run)
        if run_diff:
            was = ", ".join(f"{k}={old['run'].get(k)!r}" for k in run_diff)
            raise EmolensError(f"incomplete store {str(root)!r} was started with other settings ({was})",
                               f"resume with the same settings or choose a new {arg('out')} folder")
        progress = read_json(root / "progress.json") or {}
        return StoreWriter(root, old, int(progress.get("chunks_done", 0)), progress, lock)
    if root.exists():
        foreign = [p.name for p in root.iterdir()
                   if p.name not in _OWN and not p.name.endswith((".npy", ".tmp"))]
        if foreign:
            raise EmolensError(f"{str(root)!r} exists and is not an activation store (holds {foreign[0]!r})",
                               f"choose a new or empty {arg('out')} folder")
        _clear(root)  # leftovers of a run killed before its manifest was written
    return _create(root, identity, item_ids, arrays, run, info, lock)


def _create(root: Path, identity: dict, item_ids: list[str], arrays, run: dict, info: dict | None,
            lock: WriterLock) -> StoreWriter:
    root.mkdir(parents=True, exist_ok=True)
    specs = {}
    for site, (shape, dtype) in arrays.items():
        np_dtype = storage_dtype(dtype)
        tmp = root / f"{site}.npy.tmp"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np_dtype, shape=tuple(shape))
        del mm  # a sparse file of the full size; chunks fill it
        os.replace(tmp, root / f"{site}.npy")
        specs[site] = {"shape": list(shape), "dtype": dtype}
    manifest = {
        "format": FORMAT, "version": VERSION, "identity": identity, "arrays": specs,
        "item_ids": list(item_ids), "run": run,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": library_versions(), **({"info": info} if info else {}),
    }
    atomic_write_bytes(root / BACKUP, _dump(manifest))
    atomic_write_bytes(root / "manifest.json", _dump(manifest))
    return StoreWriter(root, manifest, 0, None, lock)
