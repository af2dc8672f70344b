"""Corpora as one :class:`EmotionDataset`: crowd-enVENT in any of its published forms, any table.

Every analysis downstream consumes the same object (ids, texts, gold labels, an appraisal
matrix, metadata), so a new corpus only needs a loader here. Loading errors are
:class:`~emolens.errors.EmolensError` with the fix in the message.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emolens.errors import EmolensError, arg
from emolens.labels import ALL_APPRAISALS, APPRAISAL_PRESETS, EMOTIONS
from emolens.paths import cache_dir, sha256_file

CROWD_ENVENT_URL = "https://www.romanklinger.de/data-sets/crowd-enVent2023.zip"
#: SHA-256 of the 2023 zip as reported by a third party; a mismatch is an error unless overridden.
CROWD_ENVENT_ZIP_SHA256 = "8e5b8379aa137124d985f817661fcff5fcede537363798e4e2824f06bd2b746b"
#: SHA-256 of the CSV form shipped with the Tak et al. code (Windows-1252).
CROWD_ENVENT_CSV_SHA256 = "941683c991923cdecf2953c4c945227bbbd3678b96139564c7ed68cb432c5a2c"
_ZIP_MEMBER = "corpus/crowd-enVent_generation.tsv"
#: Columns that identify a crowd-enVENT table (any of the texts, and one of the label columns).
CROWD_ENVENT_TEXTS = ("hidden_emo_text", "generated_text")
CROWD_ENVENT_LABELS = ("emotion", "original_emotion")


class CorpusUnreachable(EmolensError):
    """The default corpus could not be fetched (no local copy, download failed).

    The only loading failure a study's ``dataset.fallback`` may stand in for: a missing file of
    the user's own, or labels outside the set, is an ordinary error and never falls back.
    """
_CSV_NAMES = ("enVent_gen_Data.csv", "crowd-enVent_generation.tsv")


@dataclass
class EmotionDataset:
    """Texts with optional gold emotion labels and appraisal ratings, in a fixed item order.

    ``labels`` holds label names (``None`` where an item has no gold label); ``appraisals`` is a
    float matrix ``[n_items, len(appraisal_names)]`` with NaN for missing ratings. ``meta`` keeps
    every other column so nothing in the source is silently dropped.
    """

    ids: list[str]
    texts: list[str]
    labels: list[str | None]
    appraisals: np.ndarray
    appraisal_names: tuple[str, ...] = ALL_APPRAISALS
    label_names: tuple[str, ...] = EMOTIONS
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = "dataset"
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.texts) != n or len(self.labels) != n:
            raise EmolensError(f"dataset {self.name!r} has {n} ids but {len(self.texts)} texts and "
                               f"{len(self.labels)} labels", "give one text and one label (or None) per id")
        if len(set(self.ids)) != n:
            raise EmolensError(f"dataset {self.name!r} has duplicate item ids", "make the id column unique")
        self.appraisals = np.asarray(self.appraisals, dtype=np.float32).reshape(n, len(self.appraisal_names))
        unknown = sorted({lab for lab in self.labels if lab is not None and lab not in self.label_names})
        if unknown:
            raise EmolensError(f"dataset {self.name!r} has unknown labels {unknown}",
                               f"map them with {arg('columns.label_map', 'old=new')} to one of "
                               f"{list(self.label_names)}, or declare the label set with "
                               f"{arg('columns.labels', ('a', 'b', 'c'))}")
        if self.meta.empty:
            self.meta = pd.DataFrame(index=range(n))
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def label_ids(self) -> np.ndarray:
        """Integer label ids in ``label_names`` order, -1 where the gold label is missing."""
        index = {name: i for i, name in enumerate(self.label_names)}
        return np.array([index[lab] if lab is not None else -1 for lab in self.labels], dtype=np.int64)

    def appraisal(self, name: str) -> np.ndarray:
        """One appraisal column by name."""
        if name not in self.appraisal_names:
            raise EmolensError(f"unknown appraisal {name!r}", f"use one of {list(self.appraisal_names)}")
        return self.appraisals[:, self.appraisal_names.index(name)]

    def fingerprint(self) -> str:
        """SHA-256 over ids, texts, labels and ratings: the identity of the data an analysis saw."""
        h = hashlib.sha256()
        for item_id, text, label in zip(self.ids, self.texts, self.labels, strict=True):
            h.update(f"{item_id}\x1f{text}\x1f{label}\x1e".encode())
        h.update(",".join(self.appraisal_names).encode())
        h.update(np.ascontiguousarray(self.appraisals).tobytes())
        return h.hexdigest()

    def subset(self, selector: Sequence[int] | Sequence[str] | np.ndarray, name: str | None = None) -> EmotionDataset:
        """Items by position, boolean mask or id (ids are strings; unknown ids are an error)."""
        sel = np.asarray(selector)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise EmolensError(f"boolean mask of length {sel.shape} for {len(self)} items",
                                   "pass one boolean per item")
            idx = np.flatnonzero(sel)
        elif sel.size and sel.dtype.kind in "USO":
            pos = {item_id: i for i, item_id in enumerate(self.ids)}
            missing = [s for s in sel.tolist() if s not in pos]
            if missing:
                raise EmolensError(f"{len(missing)} ids not in dataset {self.name!r} (first: {missing[0]!r})",
                                   "check the id list against this dataset")
            idx = np.array([pos[s] for s in sel.tolist()], dtype=np.int64)
        else:
            idx = sel.astype(np.int64).reshape(-1)
        return EmotionDataset(
            ids=[self.ids[i] for i in idx], texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx], appraisals=self.appraisals[idx],
            appraisal_names=self.appraisal_names, label_names=self.label_names,
            meta=self.meta.iloc[idx].reset_index(drop=True), name=name or self.name, source=self.source,
        )

    def sample(self, n: int, seed: int = 0, stratify: bool = True, balanced: bool = False) -> EmotionDataset:
        """A seeded sample of ``n`` items, stratified by label so small ``n`` keeps every class.

        Stratification allocates ``n`` across labels proportionally (largest remainders);
        ``balanced`` allocates ``n / K`` to each of the K labels instead (a label with fewer items
        gives all it has, the rest is shared among the others), so rare labels such as guilt and
        shame are not halved. Draws are within each label; the result keeps the original order.
        """
        if n <= 0:
            raise EmolensError(f"sample size {n} is not positive", "draw 1 or more items")
        if n >= len(self) and not balanced:
            return self
        rng = np.random.default_rng(seed)
        if not stratify:
            return self.subset(np.sort(rng.choice(len(self), size=n, replace=False)))
        groups = _groups(self.labels)
        sizes = np.array([len(g) for g in groups.values()], dtype=int)
        if balanced:
            take = _balanced_quota(sizes, min(n, int(sizes.sum())))
        else:
            quota = sizes / sizes.sum() * n
            take = np.floor(quota).astype(int)
            for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
                take[i] += 1
        chosen = [rng.choice(g, size=k, replace=False) for g, k in zip(groups.values(), take, strict=True) if k]
        return self.subset(np.sort(np.concatenate(chosen)))

    def split(self, test_size: float = 0.2, seed: int = 42, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Train and test positions; stratified by label unless asked otherwise."""
        if not 0 < test_size < 1:
            raise EmolensError(f"test_size {test_size} is outside (0, 1)", "pass a fraction such as 0.2")
        rng = np.random.default_rng(seed)
        if not stratify:
            perm = rng.permutation(len(self))
            n_test = int(round(test_size * len(self)))
            return np.sort(perm[n_test:]), np.sort(perm[:n_test])
        test: list[int] = []
        for members in _groups(self.labels).values():
            perm = rng.permutation(members)
            test.extend(perm[: int(round(test_size * len(members)))].tolist())
        test_idx = np.sort(np.array(test, dtype=np.int64))
        return np.setdiff1d(np.arange(len(self)), test_idx), test_idx

    def to_frame(self) -> pd.DataFrame:
        """A flat table: id, text, label and one column per appraisal."""
        frame = pd.DataFrame({"id": self.ids, "text": self.texts, "label": self.labels})
        for j, name in enumerate(self.appraisal_names):
            frame[name] = self.appraisals[:, j]
        return frame


def _balanced_quota(sizes: np.ndarray, n: int) -> np.ndarray:
    """Equal shares of ``n`` per group, capped by each group's size (water-filling, stable order)."""
    take = np.zeros(len(sizes), dtype=int)
    while take.sum() < n:
        open_ = np.flatnonzero(take < sizes)
        share, extra = divmod(n - int(take.sum()), len(open_))
        for rank, i in enumerate(open_):
            take[i] = min(sizes[i], take[i] + share + (1 if rank < extra else 0))
    return take


def _groups(labels: Sequence[str | None]) -> dict[str | None, np.ndarray]:
    out: dict[str | None, list[int]] = {}
    for i, lab in enumerate(labels):
        out.setdefault(lab, []).append(i)
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Generic tables


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV, TSV or JSONL by extension; CSVs fall back from UTF-8 to Windows-1252."""
    path = Path(path)
    if not path.exists():
        raise EmolensError(f"data file {str(path)!r} does not exist",
                           f"check the path or pass {arg('data', 'stimuli')}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        raw = path.read_bytes()
        return _read_delimited(raw, sep, str(path))
    except EmolensError:
        raise
    except (ValueError, pd.errors.ParserError) as exc:
        raise EmolensError(f"cannot parse {str(path)!r} ({exc.__class__.__name__}: {str(exc).splitlines()[0]})",
                           "pass a well-formed CSV, TSV or JSONL file") from exc


def _read_delimited(raw: bytes, sep: str, where: str) -> pd.DataFrame:
    """Decode bytes as UTF-8 (BOM allowed), else Windows-1252, the encodings crowd-enVENT uses."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return pd.read_csv(io.StringIO(text), sep=sep, dtype={"text_id": str})
    raise EmolensError(f"cannot decode {where!r} as UTF-8 or Windows-1252", "re-save the file as UTF-8")


def dataset_from_frame(
    frame: pd.DataFrame,
    text: str = "text",
    label: str | None = "label",
    appraisals: Iterable[str] | Mapping[str, str] | str | None = None,
    id_column: str | None = "id",
    label_map: dict[str, str] | None = None,
    label_names: Sequence[str] | None = EMOTIONS,
    name: str = "dataset",
    source: str = "",
) -> EmotionDataset:
    """Build a dataset from any table given its column mapping.

    ``appraisals`` is a list of column names, a mapping ``{appraisal name: column}`` (names
    outside crowd-enVENT's are kept as given), a preset name (``"paper"``, ``"all"``), or ``None``
    for every crowd-enVENT appraisal column present. Labels are matched case-insensitively after
    ``label_map`` (keys case-insensitive too). ``label_names`` is the label set; ``None`` means the
    protocol emotions the table uses, in the protocol's order. Missing ids are numbered from 0.
    """
    columns = list(frame.columns)
    required = [text] + ([label] if label else [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise EmolensError(f"{name}: missing column(s) {missing}; found {columns[:12]}",
                           f"pass the right {arg('columns.text')}/{arg('columns.label')} or fix the file")
    if len(frame) == 0:
        raise EmolensError(f"{name}: the table has a header but no rows",
                           f"add rows or pass another {arg('data')} file")
    if isinstance(appraisals, str):
        if appraisals not in APPRAISAL_PRESETS:
            raise EmolensError(f"unknown appraisal preset {appraisals!r}", f"use one of {list(APPRAISAL_PRESETS)}")
        appraisals = APPRAISAL_PRESETS[appraisals]
    if isinstance(appraisals, Mapping):
        absent = [c for c in appraisals.values() if c not in columns]
        if absent:
            raise EmolensError(f"{name}: appraisal column(s) {absent} not found; found {columns[:12]}",
                               f"fix {arg('columns.appraisals', 'name=column,...')}")
        frame = frame.rename(columns={c: n for n, c in appraisals.items() if n != c})
        frame = frame.loc[:, ~frame.columns.duplicated(keep="last")]
        columns = list(frame.columns)
        names = tuple(appraisals)
    elif appraisals is None:
        names = tuple(c for c in ALL_APPRAISALS if c in columns)
    else:
        names = tuple(appraisals)
        absent = [c for c in names if c not in columns]
        if absent:
            raise EmolensError(f"{name}: appraisal column(s) {absent} not found", "check the appraisal list")
    if frame[text].isna().any():
        raise EmolensError(f"{name}: {int(frame[text].isna().sum())} rows have no text in column {text!r}",
                           "drop or fill those rows")
    if id_column and id_column in columns:
        ids = frame[id_column].astype(str).tolist()
    else:
        ids = [str(i) for i in range(len(frame))]
    labels: list[str | None] = [None] * len(frame)
    if label:
        mapping = {str(k).strip().lower(): str(v).strip().lower() for k, v in (label_map or {}).items()}
        labels = [None if pd.isna(v) else mapping.get(str(v).strip().lower(), str(v).strip().lower())
                  for v in frame[label]]
    if label_names is None:
        present = {lab for lab in labels if lab is not None}
        unknown = sorted(present - set(EMOTIONS))
        if unknown:
            raise EmolensError(f"dataset {name!r} has unknown labels {unknown} (outside the protocol emotions)",
                               f"map them with {arg('columns.label_map', 'old=new')}, or declare the label set with "
                               f"{arg('columns.labels', ('a', 'b', 'c'))}")
        label_names = [e for e in EMOTIONS if e in present]
    else:
        label_names = [str(lab).strip().lower() for lab in label_names]
    try:
        matrix = frame[list(names)].to_numpy(dtype=np.float32) if names else np.zeros((len(frame), 0), np.float32)
    except (TypeError, ValueError) as exc:
        raise EmolensError(f"{name}: appraisal columns are not numeric ({exc})", "use ratings such as 1-5") from exc
    used = set(required) | set(names) | ({id_column} if id_column else set())
    meta = frame[[c for c in columns if c not in used]].reset_index(drop=True)
    return EmotionDataset(ids=ids, texts=[str(t) for t in frame[text]], labels=labels, appraisals=matrix,
                          appraisal_names=names, label_names=tuple(label_names), meta=meta, name=name,
                          source=source)


def load_table(path: str | Path, **mapping) -> EmotionDataset:
    """Load any CSV/TSV/JSONL with a column mapping (see :func:`dataset_from_frame`)."""
    return dataset_from_frame(read_table(path), name=Path(path).stem, source=str(path), **mapping)


# ---------------------------------------------------------------------------------------------
# crowd-enVENT


def load_crowd_envent(
    source: str | Path | None = None,
    text_column: str = "hidden_emo_text",
    appraisals: Iterable[str] | str | None = "all",
    verify: bool = True,
) -> EmotionDataset:
    """crowd-enVENT's generation part (6,600 texts, 13 emotions, 21 appraisal ratings).

    ``source`` may be the official zip, the official UTF-8 TSV, the Windows-1252 CSV shipped with
    the Tak et al. code, or a folder holding one of them. Without a source: ``EMOLENS_CROWD_ENVENT``,
    then the cached download, then the official download (checked against its SHA-256).
    ``no-emotion`` becomes ``neutral``; item ids are the corpus' ``text_id``.
    """
    path = _locate_crowd_envent(source, verify=verify)
    if path.suffix.lower() == ".zip":
        frame = _read_zip_member(path)
    else:
        frame = read_table(path)
    return crowd_envent_from_frame(frame, str(path), text_column, appraisals)


def looks_like_crowd_envent(frame: pd.DataFrame) -> bool:
    """Whether a table has crowd-enVENT's columns (a text column and an emotion column)."""
    return any(c in frame.columns for c in CROWD_ENVENT_TEXTS) and any(c in frame.columns for c in CROWD_ENVENT_LABELS)


def crowd_envent_from_frame(frame: pd.DataFrame, path: str, text_column: str = "hidden_emo_text",
                            appraisals: Iterable[str] | str | None = "all") -> EmotionDataset:
    """crowd-enVENT's table (any of its published forms, already read) as a dataset."""
    if "original_emotion" in frame.columns and "emotion" not in frame.columns:
        frame = frame.rename(columns={"original_emotion": "emotion"})
    if text_column not in frame.columns:
        raise EmolensError(f"crowd-enVENT file {str(path)!r} has no column {text_column!r}",
                           "use text_column='hidden_emo_text' or 'generated_text'")
    return dataset_from_frame(frame, text=text_column, label="emotion", appraisals=appraisals,
                              id_column="text_id", label_map={"no-emotion": "neutral"},
                              name="crowd-enVENT", source=path)


def _locate_crowd_envent(source: str | Path | None, verify: bool) -> Path:
    if source is None:
        env = os.environ.get("EMOLENS_CROWD_ENVENT")
        if env:
            source = env
        else:
            cached = cache_dir() / "data" / "crowd-enVent2023.zip"
            return cached if cached.exists() else download_crowd_envent(cached, verify=verify)
    path = Path(source).expanduser()
    if path.is_dir():
        for name in _CSV_NAMES + ("crowd-enVent2023.zip", "crowd-enVent2022.zip"):
            for candidate in (path / name, path / "corpus" / name):
                if candidate.exists():
                    return candidate
        raise EmolensError(f"no crowd-enVENT file in folder {str(path)!r}",
                           f"the folder must hold one of {list(_CSV_NAMES)} or the official zip")
    if not path.exists():
        raise EmolensError(f"crowd-enVENT source {str(path)!r} does not exist",
                           "pass the official zip, TSV or CSV, or set EMOLENS_CROWD_ENVENT")
    return path


def _read_zip_member(path: Path) -> pd.DataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = next((n for n in names if n.endswith(_ZIP_MEMBER)), None)
            if member is None:
                raise EmolensError(f"zip {str(path)!r} has no {_ZIP_MEMBER}",
                                   "pass the official crowd-enVent2023.zip")
            raw = archive.read(member)
    except zipfile.BadZipFile as exc:
        raise EmolensError(f"{str(path)!r} is not a readable zip", "download it again") from exc
    return _read_delimited(raw, "\t", f"{path}:{member}")


def download_crowd_envent(target: Path, url: str = CROWD_ENVENT_URL, verify: bool = True) -> Path:
    """Download the official zip once into the cache, verifying its SHA-256 before keeping it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as fh:
            while block := response.read(1 << 20):
                fh.write(block)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CorpusUnreachable(f"could not download crowd-enVENT from {url} ({exc.__class__.__name__})",
                                "download it by hand and pass its path or set EMOLENS_CROWD_ENVENT") from exc
    digest = sha256_file(partial)
    if verify and digest != CROWD_ENVENT_ZIP_SHA256:
        partial.unlink(missing_ok=True)
        raise EmolensError(f"downloaded crowd-enVENT has SHA-256 {digest[:12]}..., expected "
                           f"{CROWD_ENVENT_ZIP_SHA256[:12]}...", "check the download or pass a local copy")
    partial.replace(target)
    return target


def write_ids(path: str | Path, ids: Iterable[str]) -> None:
    """Write an id list, one per line (the ``correct_ids.txt`` format)."""
    Path(path).write_text("".join(f"{i}\n" for i in ids))


def read_ids(path: str | Path) -> list[str]:
    """Read an id list written by :func:`write_ids` (blank lines ignored)."""
    path = Path(path)
    if not path.exists():
        raise EmolensError(f"id list {str(path)!r} does not exist", "run `emolens readout` first or fix the path")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]

