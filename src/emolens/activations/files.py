"""The store's file-level vocabulary: its format tag and durable writes, shared by store and health.

Kept apart so :mod:`emolens.activations.store` (read/write) and :mod:`emolens.activations.health`
(check/repair) both use one definition without importing each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "VERSION", "atomic_write", "dump", "join_readout"]

FORMAT = "emolens-activations"
VERSION = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write durably (fsync) via a sibling temp file and rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()


def join_readout(root: Path, n_chunks: int) -> None:
    """Join the per-chunk readouts into ``readout.parquet`` (the chunks stay, for repairs)."""
    import pandas as pd

    chunk_dir = root / "readout"
    parts = [pd.read_parquet(chunk_dir / f"chunk-{c:05d}.parquet") for c in range(n_chunks)]
    frame = pd.concat(parts, ignore_index=True)
    tmp = root / "readout.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, root / "readout.parquet")
