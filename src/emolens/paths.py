"""Where emolens keeps things on disk, and how it writes them without leaving half-files."""

from __future__ import annotations

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
    """Write via a sibling temp file and rename, so readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def dump_json(path: str | Path, obj) -> None:
    """Write JSON atomically, sorted and indented for diffable results."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
