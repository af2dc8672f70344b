"""Built-in appraisal stimuli: minimal pairs that move one appraisal, and labelled single items.

crowd-enVENT texts differ in many ways at once, so patching between two of them cannot say which
appraisal carried an effect. The stimuli shipped here are written for emolens and controlled by
design: the two members of a pair differ by a few words and, in their design values, only in the
appraisal columns their pair type allows (``stimuli_schema.json``, ``x-pair-types``). Labels are
the emotions appraisal theory predicts, not annotations. See ``docs/stimuli.md``.

Loading goes through :func:`load_stimuli` (also ``load_dataset("stimuli")``); patching pairs come
from :func:`load_stimulus_pairs`; :func:`validate_stimuli` checks every schema and design rule.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from emolens.data.corpus import EmotionDataset
from emolens.errors import EmolensError
from emolens.labels import ALL_APPRAISALS, APPRAISAL_PRESETS, EMOTIONS

PAIRS_FILE = "stimuli_pairs.jsonl"
SINGLES_FILE = "stimuli_singles.jsonl"
SCHEMA_FILE = "stimuli_schema.json"
KINDS = ("singles", "pairs", "all")
#: Columns of :func:`load_stimulus_pairs`, in order.
PAIR_COLUMNS = ("source_id", "target_id", "type", "manipulated", "domain", "frame", "source_emotion",
                "target_emotion", "pair_id", "source_text", "target_text")

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


def resource_path(name: str) -> Path:
    """Path of a packaged stimuli resource (``stimuli_pairs.jsonl`` and friends)."""
    return Path(str(resources.files("emolens") / "resources" / name))


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The stimuli JSON schema, with the design rules under its ``x-`` keywords."""
    return json.loads(resource_path(SCHEMA_FILE).read_text(encoding="utf-8"))


def words(text: str) -> list[str]:
    """Lower-cased word tokens (apostrophe contractions kept whole): the unit of edits and bans."""
    return _WORD.findall(text.lower())


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two texts counted in whole words."""
    x, y = words(a), words(b)
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, start=1):
        cur = [i]
        for j, wy in enumerate(y, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy)))
        prev = cur
    return prev[-1]


def banned_words(text: str) -> list[str]:
    """Words of ``text`` that share a lemma with an emotion label (the schema's ``x-banned-words``)."""
    pattern = re.compile(load_schema()["x-banned-words"]["pattern"])
    return [w for w in words(text) if pattern.match(w)]


# ---------------------------------------------------------------------------------------------
# Reading and validation


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise EmolensError(f"stimuli file {str(path)!r} does not exist",
                           "reinstall emolens or regenerate it with scripts/make_stimuli.py")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EmolensError(f"{path.name}:{lineno}: not valid JSON ({exc.msg})", "fix that line") from exc
        rows.append((lineno, obj))
    return rows


def _check(value: Any, spec: dict[str, Any], defs: dict[str, Any], where: str) -> None:
    """The subset of JSON Schema the stimuli schema uses (no third-party validator needed)."""
    if "$ref" in spec:
        spec = defs[spec["$ref"].rsplit("/", 1)[-1]]
    kind = spec.get("type")
    types = {"object": dict, "array": list, "string": str}
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise EmolensError(f"{where}: expected an integer, got {value!r}", "use whole numbers 1-5")
    elif kind in types and not isinstance(value, types[kind]):
        raise EmolensError(f"{where}: expected {kind}, got {type(value).__name__}", "fix the value's type")
    if "enum" in spec and value not in spec["enum"]:
        raise EmolensError(f"{where}: {value!r} is not one of {spec['enum']}", "use an allowed value")
    if "minimum" in spec and value < spec["minimum"] or "maximum" in spec and value > spec["maximum"]:
        raise EmolensError(f"{where}: {value!r} is outside [{spec.get('minimum')}, {spec.get('maximum')}]",
                           "use the 1-5 crowd-enVENT scale")
    if isinstance(value, str):
        if len(value) < spec.get("minLength", 0) or len(value) > spec.get("maxLength", 10**9):
            bounds = f"[{spec.get('minLength', 0)}, {spec.get('maxLength')}]"
            raise EmolensError(f"{where}: length {len(value)} outside {bounds}", "shorten or extend it")
        if "pattern" in spec and not re.search(spec["pattern"], value):
            raise EmolensError(f"{where}: {value!r} does not match {spec['pattern']!r}", "fix its format")
    if isinstance(value, dict):
        props = spec.get("properties", {})
        missing = [k for k in spec.get("required", []) if k not in value]
        if missing:
            raise EmolensError(f"{where}: missing field(s) {missing}", "add them")
        extra = [k for k in value if k not in props]
        if extra and spec.get("additionalProperties") is False:
            raise EmolensError(f"{where}: unknown field(s) {extra}", f"use only {list(props)}")
        for key, sub in props.items():
            if key in value:
                _check(value[key], sub, defs, f"{where}.{key}")
    if isinstance(value, list):
        if len(value) < spec.get("minItems", 0):
            raise EmolensError(f"{where}: needs at least {spec['minItems']} item(s)", "add items")
        if spec.get("uniqueItems") and len(set(map(str, value))) != len(value):
            raise EmolensError(f"{where}: repeated items {value}", "list each once")
        for i, item in enumerate(value):
            _check(item, spec.get("items", {}), defs, f"{where}[{i}]")


def _check_text(text: str, where: str, seen: dict[str, str]) -> None:
    bad = banned_words(text)
    if bad:
        raise EmolensError(f"{where}: text names an emotion ({', '.join(bad)}): {text!r}",
                           "describe the event without emotion-label words")
    first_person = set(load_schema()["x-first-person"]["words"])
    if not first_person.intersection(words(text)):
        raise EmolensError(f"{where}: text is not told in the first person: {text!r}",
                           "anchor the event to the writer (I, my, we, our ...)")
    key = " ".join(words(text))
    if key in seen:
        raise EmolensError(f"{where}: text duplicates {seen[key]}: {text!r}", "make every text unique")
    seen[key] = where


def _check_pair(obj: dict[str, Any], where: str, schema: dict[str, Any]) -> None:
    rule = schema["x-pair-types"][obj["type"]]
    if sorted(obj["manipulated"]) != sorted(rule["manipulated"]):
        raise EmolensError(f"{where}: manipulated {obj['manipulated']} but type {obj['type']!r} moves "
                           f"{rule['manipulated']}", "use the columns the schema lists for this type")
    if obj["frame"] not in rule["frames"]:
        raise EmolensError(f"{where}: frame {obj['frame']!r} is not defined for type {obj['type']!r}",
                           f"use one of {list(rule['frames'])}")
    for member in ("a", "b"):
        expected = rule["frames"][obj["frame"]][member]
        if obj[member]["emotion"] != expected:
            raise EmolensError(f"{where}.{member}: emotion {obj[member]['emotion']!r} but the rule for "
                               f"{obj['type']}/{obj['frame']} predicts {expected!r}",
                               "fix the label or the frame")
    va, vb = obj["a"]["appraisals"], obj["b"]["appraisals"]
    moved = {k for k in ALL_APPRAISALS if va[k] != vb[k]}
    stray = sorted(moved - set(rule["manipulated"]))
    if stray:
        raise EmolensError(f"{where}: members differ in fixed appraisal(s) {stray}",
                           f"type {obj['type']!r} may only move {rule['manipulated']}")
    for column, direction in rule["direction"].items():
        high, low = (va, vb) if direction == "a>b" else (vb, va)
        if not high[column] > low[column]:
            raise EmolensError(f"{where}: {column} must satisfy {direction} (a={va[column]}, b={vb[column]})",
                               "set the design values in the declared direction")
    distance = word_edit_distance(obj["a"]["text"], obj["b"]["text"])
    limit = schema["x-max-word-edit"]
    if not 0 < distance <= limit:
        raise EmolensError(f"{where}: members are {distance} word edits apart (allowed 1-{limit})",
                           "make the smallest wording change that moves the appraisal")


def validate_stimuli(pairs_path: str | Path | None = None,
                     singles_path: str | Path | None = None) -> dict[str, Any]:
    """Check both stimuli files against the schema and the design rules; return their counts.

    Rules: every line matches the JSON schema; pair and single ids are unique; every pair's
    ``manipulated`` and member emotions follow ``x-pair-types``; members differ only in the
    appraisal columns their type moves, each in its declared direction; member texts are
    1..``x-max-word-edit`` word edits apart; no text repeats, contains an emotion-label word or
    lacks a first-person word; minimum counts (``x-minimum-counts``) hold. The first violation
    raises :class:`EmolensError`.
    """
    schema = load_schema()
    defs = schema["$defs"]
    pairs_path = Path(pairs_path) if pairs_path else resource_path(PAIRS_FILE)
    singles_path = Path(singles_path) if singles_path else resource_path(SINGLES_FILE)
    seen_texts: dict[str, str] = {}
    pair_ids: set[str] = set()
    per_type: Counter[str] = Counter()
    for lineno, obj in _read_jsonl(pairs_path):
        where = f"{pairs_path.name}:{lineno}"
        _check(obj, defs["pair"], defs, where)
        if obj["pair_id"] in pair_ids:
            raise EmolensError(f"{where}: duplicate pair_id {obj['pair_id']!r}", "number pairs uniquely")
        pair_ids.add(obj["pair_id"])
        _check_pair(obj, where, schema)
        for member in ("a", "b"):
            _check_text(obj[member]["text"], f"{where}.{member}", seen_texts)
        per_type[obj["type"]] += 1
    single_ids: set[str] = set()
    per_emotion: Counter[str] = Counter()
    for lineno, obj in _read_jsonl(singles_path):
        where = f"{singles_path.name}:{lineno}"
        _check(obj, defs["single"], defs, where)
        if obj["id"] in single_ids:
            raise EmolensError(f"{where}: duplicate id {obj['id']!r}", "number singles uniquely")
        if not obj["id"].startswith(f"single-{obj['emotion']}-"):
            raise EmolensError(f"{where}: id {obj['id']!r} does not match emotion {obj['emotion']!r}",
                               "name singles single-<emotion>-NN")
        single_ids.add(obj["id"])
        _check_text(obj["text"], where, seen_texts)
        per_emotion[obj["emotion"]] += 1
    need = schema["x-minimum-counts"]
    if len(pair_ids) < need["pairs"]:
        raise EmolensError(f"{pairs_path.name}: {len(pair_ids)} pairs, fewer than {need['pairs']}",
                           "add pairs")
    short = {t: per_type[t] for t in schema["x-pair-types"] if per_type[t] < need["pairs_per_type"]}
    if short:
        raise EmolensError(f"{pairs_path.name}: pair types below {need['pairs_per_type']}: {short}",
                           "add pairs")
    short = {e: per_emotion[e] for e in EMOTIONS if per_emotion[e] < need["singles_per_emotion"]}
    if short:
        raise EmolensError(f"{singles_path.name}: emotions below {need['singles_per_emotion']} "
                           f"singles: {short}", "add singles")
    return {"pairs": len(pair_ids), "pairs_per_type": dict(per_type), "singles": len(single_ids),
            "singles_per_emotion": dict(per_emotion)}


# ---------------------------------------------------------------------------------------------
# Loading


def _records(pairs_path: Path, singles_path: Path, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if kind in ("pairs", "all"):
        for _, obj in _read_jsonl(pairs_path):
            for member, other in (("a", "b"), ("b", "a")):
                m = obj[member]
                rows.append({"id": f"{obj['pair_id']}-{member}", "text": m["text"], "label": m["emotion"],
                             **m["appraisals"], "kind": "pair", "pair_id": obj["pair_id"], "member": member,
                             "partner_id": f"{obj['pair_id']}-{other}", "type": obj["type"],
                             "manipulated": "+".join(obj["manipulated"]), "domain": obj["domain"],
                             "frame": obj["frame"]})
    if kind in ("singles", "all"):
        for _, obj in _read_jsonl(singles_path):
            rows.append({"id": obj["id"], "text": obj["text"], "label": obj["emotion"], **obj["appraisals"],
                         "kind": "single", "pair_id": None, "member": None, "partner_id": None, "type": None,
                         "manipulated": None, "domain": obj["domain"], "frame": None})
    return rows


def load_stimuli(kind: str = "all", appraisals: Iterable[str] | str | None = "all",
                 validate: bool = True) -> EmotionDataset:
    """The built-in stimuli as an :class:`EmotionDataset` (labels are the predicted emotions).

    ``kind`` is ``"singles"``, ``"pairs"`` or ``"all"`` (pairs first, then singles). Pair members
    get ids ``pair-012-a`` / ``pair-012-b``, singles ``single-anger-03``. ``appraisals`` picks the
    design-value columns (``"all"`` 21, ``"paper"`` 20, or a list). ``meta`` keeps ``kind``,
    ``pair_id``, ``member``, ``partner_id``, ``type``, ``manipulated`` (``+``-joined), ``domain``
    and ``frame``.
    """
    if kind not in KINDS:
        raise EmolensError(f"unknown stimuli kind {kind!r}", f"use one of {list(KINDS)}")
    names = _appraisal_names(appraisals)
    pairs_path, singles_path = resource_path(PAIRS_FILE), resource_path(SINGLES_FILE)
    if validate:
        _validated(str(pairs_path), str(singles_path))
    frame = pd.DataFrame(_records(pairs_path, singles_path, kind))
    ds_meta = frame[["kind", "pair_id", "member", "partner_id", "type", "manipulated", "domain", "frame"]]
    matrix = frame[list(names)].to_numpy(dtype="float32")
    return EmotionDataset(ids=frame["id"].tolist(), texts=frame["text"].tolist(),
                          labels=frame["label"].tolist(), appraisals=matrix, appraisal_names=names,
                          label_names=EMOTIONS, meta=ds_meta,
                          name=f"stimuli-{kind}", source=str(pairs_path.parent))


def load_stimulus_pairs(types: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per minimal pair, for patching: columns :data:`PAIR_COLUMNS`.

    ``source_id`` is member ``a`` and ``target_id`` member ``b`` (ids as in :func:`load_stimuli`);
    ``manipulated`` is the ``+``-joined list of appraisal columns the pair moves. ``types`` keeps
    only the given pair types.
    """
    schema = load_schema()
    if types is not None:
        unknown = sorted(set(types) - set(schema["x-pair-types"]))
        if unknown:
            raise EmolensError(f"unknown pair type(s) {unknown}",
                               f"use some of {list(schema['x-pair-types'])}")
    path = resource_path(PAIRS_FILE)
    _validated(str(path), str(resource_path(SINGLES_FILE)))
    rows = []
    for _, obj in _read_jsonl(path):
        if types is not None and obj["type"] not in types:
            continue
        rows.append({"source_id": f"{obj['pair_id']}-a", "target_id": f"{obj['pair_id']}-b",
                     "type": obj["type"], "manipulated": "+".join(obj["manipulated"]),
                     "domain": obj["domain"], "frame": obj["frame"],
                     "source_emotion": obj["a"]["emotion"], "target_emotion": obj["b"]["emotion"],
                     "pair_id": obj["pair_id"], "source_text": obj["a"]["text"],
                     "target_text": obj["b"]["text"]})
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


@lru_cache(maxsize=4)
def _validated(pairs_path: str, singles_path: str) -> None:
    validate_stimuli(pairs_path, singles_path)


def _appraisal_names(appraisals: Iterable[str] | str | None) -> tuple[str, ...]:
    if appraisals is None:
        return ALL_APPRAISALS
    if isinstance(appraisals, str):
        if appraisals not in APPRAISAL_PRESETS:
            raise EmolensError(f"unknown appraisal preset {appraisals!r}",
                               f"use one of {list(APPRAISAL_PRESETS)}")
        return APPRAISAL_PRESETS[appraisals]
    names = tuple(appraisals)
    unknown = [n for n in names if n not in ALL_APPRAISALS]
    if unknown:
        raise EmolensError(f"unknown appraisal(s) {unknown}", f"use names from {list(ALL_APPRAISALS)}")
    return names
