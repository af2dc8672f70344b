"""The store's file-level vocabulary: its format tag, record encoding and readout join, shared by store and health.

Durable writes are :func:`emolens.paths.atomic_write_bytes` (fsync, then rename), the one writer.

Kept apart so :mod:`emolens.activations.store` (read/write) and :mod:`emolens.activations.health`
(check/repair) both use one definition without importing each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "VERSION", "dump", "join_readout"]

FORMAT = "emolens-activations"
VERSION = 1


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
