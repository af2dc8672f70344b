"""Resolving a ``--data`` argument to a dataset: the one place that knows every source.

Kept apart from :mod:`emolens.data.corpus` (the dataset type and file loaders) and
:mod:`emolens.data.stimuli` (the built-in items, which are themselves an ``EmotionDataset``), so
neither of those needs to import the other's loader.
"""

from __future__ import annotations

from pathlib import Path

from emolens.data.corpus import EmotionDataset, load_crowd_envent, load_table
from emolens.data.sensitive import load_sensitive
from emolens.data.stimuli import load_stimuli


def load_dataset(spec: str | Path, **kwargs) -> EmotionDataset:
    """Resolve a ``--data`` argument: ``crowd-envent``, ``stimuli``, ``sensitive``, or a file/folder path.

    A path that looks like crowd-enVENT (its CSV/TSV/zip or a folder holding one) goes through
    :func:`load_crowd_envent`; any other table needs ``text``/``label`` columns (see
    :func:`load_table`).
    """
    text = str(spec)
    if text.lower() in ("crowd-envent", "crowd_envent", "envent"):
        return load_crowd_envent(**kwargs)
    if text.lower() == "stimuli":
        return load_stimuli(**kwargs)
    if text.lower() == "sensitive":
        return load_sensitive(**kwargs)
    path = Path(text).expanduser()
    name = path.name.lower()
    if path.is_dir() or name.endswith(".zip") or "envent" in name:
        return load_crowd_envent(path, **kwargs)
    return load_table(path, **kwargs)
