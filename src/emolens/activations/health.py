"""Checking and repairing activation stores, so a damaged store costs a rerun, never a trap.

A store can be damaged behind emolens' back: a ``.npy`` truncated by a full disk or deleted by
hand, a readout chunk removed, ``manifest.json`` overwritten. :func:`check_store` finds every such
problem and says which chunks must be recomputed; :func:`repair_store` puts the files back into
a resumable shape (restores the manifest from its backup, recreates or re-extends arrays, marks
damaged chunks for recomputation, rejoins the readout), after which the same ``emolens extract``
command recomputes only those chunks. Checks come in two depths: ``full=False`` (file sizes,
headers, manifest, readout files; what every open does) and ``full=True`` (also the CRC-32 of every
finished chunk against the one recorded when it was committed; what extract and ``doctor`` do).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.activations.files import FORMAT, dump, join_readout, storage_dtype
from emolens.paths import atomic_write_bytes

__all__ = ["StoreCheck", "check_store", "chunk_crc", "npy_layout", "read_json", "repair_store"]

BACKUP = "manifest.backup.json"


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def chunk_crc(rows: np.ndarray) -> int:
    """CRC-32 of a chunk's rows as stored (C order bytes)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(rows).reshape(-1).view(np.uint8)))


def npy_layout(path: Path) -> tuple[int, tuple[int, ...], np.dtype] | None:
    """(data offset, shape, dtype) from a ``.npy`` header, or None if the header is unreadable."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            return (fh.tell(), tuple(shape), np.dtype(dtype)) if not fortran else None
    except (OSError, ValueError, EOFError):
        return None


@dataclass
class StoreCheck:
    """What :func:`check_store` found: problems (one line each) and what a repair would do."""

    root: Path
    manifest: dict | None = None
    manifest_from_backup: bool = False
    progress: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    redo: set[int] = field(default_factory=set)
    recreate: set[str] = field(default_factory=set)  # sites whose file must be made anew
    extend: set[str] = field(default_factory=set)  # sites whose file is short but has a good header
    rejoin_readout: bool = False
    fatal: str | None = None  # a problem no repair can fix without the original request

    @property
    def ok(self) -> bool:
        return not self.problems and self.fatal is None

    @property
    def chunks_done(self) -> int:
        return int(self.progress.get("chunks_done", 0))


def _n_chunks(manifest: dict) -> int:
    return -(-len(manifest["item_ids"]) // int(manifest["run"]["chunk_size"]))


def _committed(check: StoreCheck, complete: bool) -> list[int]:
    if complete:
        return list(range(_n_chunks(check.manifest)))
    return sorted(set(range(check.chunks_done)) - {int(c) for c in check.progress.get("redo", [])})


def check_store(root: str | Path, full: bool = True) -> StoreCheck:
    """Inspect the store at ``root`` (see the module docstring); never raises for damage."""
    root = Path(root)
    check = StoreCheck(root)
    manifest = read_json(root / "manifest.json")
    if manifest is None or manifest.get("format") != FORMAT:
        backup = read_json(root / BACKUP)
        if (root / "manifest.json").exists():
            check.problems.append("manifest.json is corrupt")
        elif backup is not None:
            check.problems.append("manifest.json is missing")
        if backup is None or backup.get("format") != FORMAT:
            check.fatal = "manifest.json is corrupt and has no readable backup"
            return check
        manifest, check.manifest_from_backup = backup, True
    check.manifest = manifest
    progress_path = root / "progress.json"
    check.progress = read_json(progress_path) or {}
    if progress_path.exists() and not check.progress:
        check.problems.append("progress.json is corrupt; every chunk will be recomputed")
    complete = (root / "COMPLETE").exists()
    n_chunks = _n_chunks(manifest)
    chunk_size = int(manifest["run"]["chunk_size"])
    n_items = len(manifest["item_ids"])
    if not check.progress and complete:
        check.progress = {"chunks_done": n_chunks}
    check.redo |= {int(c) for c in check.progress.get("redo", [])}
    committed = _committed(check, complete)
    sums = check.progress.get("checksums", {})
    for site, spec in manifest["arrays"].items():
        path = root / f"{site}.npy"
        shape, dtype = tuple(spec["shape"]), storage_dtype(spec["dtype"])
        if not path.exists():
            check.problems.append(f"{site}.npy is missing")
            check.recreate.add(site)
            check.redo |= set(committed)
            continue
        layout = npy_layout(path)
        if layout is None or layout[1] != shape or layout[2] != dtype:
            check.problems.append(f"{site}.npy has a damaged header")
            check.recreate.add(site)
            check.redo |= set(committed)
            continue
        offset, row_bytes = layout[0], int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        size = path.stat().st_size
        if size != offset + n_items * row_bytes:
            check.problems.append(f"{site}.npy has {size} bytes, expected {offset + n_items * row_bytes}")
            check.extend.add(site)
            intact_rows = max(0, (size - offset) // row_bytes) if row_bytes else n_items
            check.redo |= {c for c in committed if min(n_items, (c + 1) * chunk_size) > intact_rows}
        if full and sums:
            arr = np.load(path, mmap_mode="r") if site not in check.extend else None
            bad = []
            for c in committed:
                want = sums.get(str(c), {}).get(site)
                if want is None or arr is None or c in check.redo:
                    continue
                if chunk_crc(arr[c * chunk_size: min(n_items, (c + 1) * chunk_size)]) != want:
                    bad.append(c)
            if bad:
                check.problems.append(f"{site}.npy: chunk(s) {bad} fail their checksum")
                check.redo |= set(bad)
            del arr
    if manifest["identity"].get("readout"):
        chunk_dir = root / "readout"
        missing = [c for c in committed if not (chunk_dir / f"chunk-{c:05d}.parquet").exists()]
        if complete:
            joined = root / "readout.parquet"
            if not _readable_parquet(joined, n_items):
                check.problems.append("readout.parquet is " + ("missing" if not joined.exists() else "damaged"))
                check.rejoin_readout = True
                check.redo |= set(missing)
        elif missing:
            check.problems.append(f"readout chunk(s) {missing} are missing")
            check.redo |= set(missing)
    return check


def _readable_parquet(path: Path, n_rows: int) -> bool:
    if not path.exists():
        return False
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows == n_rows
    except Exception:  # any reader error means the file cannot be trusted
        return False


def repair_store(check: StoreCheck) -> list[str]:
    """Make a damaged store resumable (see the module docstring); returns what was done, one line each.

    After this the store is incomplete when chunks must be recomputed, and the same extract
    command recomputes only ``check.redo``. Raises nothing for damage it can fix; a ``fatal``
    check is returned unchanged (the caller explains it).
    """
    if check.fatal is not None or check.ok:
        return []
    root, manifest, done = check.root, check.manifest, []
    if check.manifest_from_backup:
        atomic_write_bytes(root / "manifest.json", dump(manifest))
        done.append("restored manifest.json from its backup")
    for site in sorted(check.recreate):
        spec = manifest["arrays"][site]
        tmp = root / f"{site}.npy.tmp"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=storage_dtype(spec["dtype"]), shape=tuple(spec["shape"]))
        del mm
        os.replace(tmp, root / f"{site}.npy")
        done.append(f"recreated {site}.npy")
    for site in sorted(check.extend):
        spec = manifest["arrays"][site]
        offset = npy_layout(root / f"{site}.npy")[0]
        dtype = storage_dtype(spec["dtype"])
        os.truncate(root / f"{site}.npy", offset + int(np.prod(spec["shape"], dtype=np.int64)) * dtype.itemsize)
        done.append(f"restored the size of {site}.npy")
    n_chunks = _n_chunks(manifest)
    complete = (root / "COMPLETE").exists()
    progress = dict(check.progress)
    if complete and "chunks_done" not in progress:
        progress["chunks_done"] = n_chunks
    if check.redo:
        progress["redo"] = sorted(check.redo | {int(c) for c in progress.get("redo", [])})
        sums = progress.get("checksums", {})
        for c in check.redo:
            sums.pop(str(c), None)
        atomic_write_bytes(root / "progress.json", dump(progress))
        (root / "COMPLETE").unlink(missing_ok=True)
        (root / "readout.parquet").unlink(missing_ok=True)
        done.append(f"chunk(s) {progress['redo']} marked for recomputation: rerun the same extract command")
    elif check.rejoin_readout:
        join_readout(root, n_chunks)
        done.append("rejoined readout.parquet from its chunks")
    elif check.progress != progress or not (root / "progress.json").exists():
        atomic_write_bytes(root / "progress.json", dump(progress))
    return done
