"""Where emolens keeps things on disk, and how it writes them without leaving half-files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``EMOLENS_CACHE``, else ``$XDG_CACHE_HOME/emolens``, else ``~/.cache/emolens``."""
    env = os.environ.get("EMOLENS_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emolens"
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a sibling temp file, fsync, then rename: readers never see a partial file, and
    after a crash the file holds either the old or the new bytes, never a torn mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dump_json(path: str | Path, obj) -> None:
    """Write JSON atomically, sorted and indented for diffable results."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, streamed in 4 MiB blocks (downloads and converted weights are checked by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
