"""The store's file-level vocabulary: its format tag, storage dtypes, record encoding and readout join,
shared by store and health.

Durable writes are :func:`emolens.paths.atomic_write_bytes` (fsync, then rename), the one writer.

Kept apart so :mod:`emolens.activations.store` (read/write) and :mod:`emolens.activations.health`
(check/repair) both use one definition without importing each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emolens.errors import EmolensError

__all__ = ["FORMAT", "STORE_DTYPES", "VERSION", "dump", "join_readout", "storage_dtype"]

FORMAT = "emolens-activations"
VERSION = 1

#: storage dtype name (what the manifest records) -> the NumPy dtype of the ``.npy`` file. NumPy has
#: no bfloat16, so a bfloat16 site is a standard ``uint16`` ``.npy`` of the raw bit patterns (any
#: tool can memory-map it); :class:`emolens.activations.store.ActivationStore` decodes it on read.
STORE_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("float32"), "float16": np.dtype("float16"),
                                     "bfloat16": np.dtype("uint16")}


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype a site stored as ``name`` has on disk (``bfloat16``: ``uint16`` bit patterns)."""
    if name not in STORE_DTYPES:
        raise EmolensError(f"unknown storage dtype {name!r}", f"use one of {list(STORE_DTYPES)}")
    return STORE_DTYPES[name]


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
