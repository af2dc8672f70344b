"""Resolving a ``--data`` argument to a dataset: the one place that knows every source.

Kept apart from :mod:`emolens.data.corpus` (the dataset type and file loaders) and
:mod:`emolens.data.stimuli` (the built-in items, which are themselves an ``EmotionDataset``), so
neither of those needs to import the other's loader. :class:`Columns` is how a user's own corpus
is described (its column names, label map, label set and appraisal columns); the CLI option
group and the study YAML's ``dataset:`` keys both build one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emolens.data.corpus import (
    EmotionDataset,
    crowd_envent_from_frame,
    dataset_from_frame,
    load_crowd_envent,
    looks_like_crowd_envent,
    read_table,
)
from emolens.data.sensitive import load_sensitive
from emolens.data.stimuli import load_stimuli
from emolens.errors import EmolensError, arg

__all__ = ["BUILT_IN", "DEFAULT_CORPUS", "Columns", "load_dataset", "parse_pairs"]

#: Names of the default corpus (the only one a study's ``dataset.fallback`` may stand in for).
DEFAULT_CORPUS: tuple[str, ...] = ("crowd-envent", "crowd_envent", "envent")
BUILT_IN: tuple[str, ...] = (*DEFAULT_CORPUS, "stimuli", "sensitive")


def parse_pairs(text: str | None, flag: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}``; a bare ``name`` maps to itself."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not key.strip() or (sep and not value.strip()):
            raise EmolensError(f"bad {flag} entry {part!r}", f"write {flag} name=value,name=value")
        out[key.strip()] = value.strip() if sep else key.strip()
    return out


@dataclass(frozen=True)
class Columns:
    """How to read a user's table: column names, label map, label set, appraisal columns.

    ``labels``: the label set scored in the readout, probed and steered (lower case; ``None`` =
    the protocol emotions the file uses). ``appraisals``: ``{appraisal name: column}`` (``None`` =
    every crowd-enVENT appraisal column present, under its own name).
    """

    text: str | None = None
    label: str | None = None
    id: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    appraisals: dict[str, str] | None = None

    @property
    def given(self) -> bool:
        return any(v not in (None, {}, ()) for v in (self.text, self.label, self.id, self.label_map, self.labels,
                                                      self.appraisals))

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("text", self.text), ("label", self.label), ("id", self.id),
                                         ("label_map", self.label_map), ("labels", self.labels),
                                         ("appraisals", self.appraisals)) if v not in (None, {}, ())]
        return ", ".join(parts)


def load_dataset(spec: str | Path, columns: Columns | None = None, **kwargs) -> EmotionDataset:
    """Resolve a ``--data`` argument: ``crowd-envent``, ``stimuli``, ``sensitive``, or a file/folder path.

    A folder or zip goes through :func:`load_crowd_envent`; a table whose columns are
    crowd-enVENT's (``hidden_emo_text``/``generated_text`` and ``emotion``) too, whatever its name,
    unless ``columns`` describe it. Any other table is read with ``columns`` (default: ``text``,
    ``label``, ``id``; labels case-insensitive; the label set is the protocol emotions it uses).
    """
    columns = columns or Columns()
    text = str(spec)
    if text.lower() in BUILT_IN:
        if columns.given:
            raise EmolensError(f"column options ({columns.describe()}) apply to your own files, not to "
                               f"the built-in {text!r}", f"drop them or pass a file path as {arg('data')}")
        if text.lower() in DEFAULT_CORPUS:
            return load_crowd_envent(**kwargs)
        return load_stimuli(**kwargs) if text.lower() == "stimuli" else load_sensitive(**kwargs)
    path = Path(text).expanduser()
    if path.is_dir() or path.name.lower().endswith(".zip"):
        if columns.given:
            raise EmolensError(f"column options apply to a CSV/TSV/JSONL file, not to {text!r}",
                               "pass the table file itself")
        return load_crowd_envent(path, **kwargs)
    frame = read_table(path)
    named = {"columns.text": columns.text, "columns.label": columns.label, "columns.id": columns.id}
    absent = [arg(name, col) for name, col in named.items() if col and col not in frame.columns]
    if absent:
        raise EmolensError(f"{path.name}: no column for {', '.join(absent)}; found {list(frame.columns)[:12]}",
                           "name columns that exist in the file")
    if not columns.given and looks_like_crowd_envent(frame):
        return crowd_envent_from_frame(frame, str(path), **kwargs)
    return dataset_from_frame(frame, text=columns.text or "text", label=columns.label or "label",
                              id_column=columns.id or "id", label_map=columns.label_map,
                              label_names=columns.labels, appraisals=columns.appraisals,
                              name=path.stem, source=str(path), **kwargs)
