"""The built-in emotionally sensitive messages and the neutral text the control study needs.

The control study asks whether steering makes a model's *replies* to upset people calmer and
kinder. That needs messages written to be answered -- crowd-enVENT's event descriptions are not
-- so emolens ships its own (``resources/sensitive.jsonl``, written by ``scripts/make_sensitive.py``):
first-person messages across six domains (loss, conflict, failure, health, unfairness,
loneliness), each ending in a request for a reply, with the emotion the writer expresses and its
appraisal profile (crowd-enVENT's 21 appraisals, design values 1-5, not annotations). Unlike the
stimuli, messages may name emotions: people who write for help do.

``resources/neutral_text.jsonl`` is a small set of plain factual sentences, also written for
emolens, on which the control study measures a steered model's perplexity (capability retention).

Loading goes through :func:`load_sensitive` (also ``load_dataset("sensitive")``) and
:func:`load_neutral_text`; :func:`validate_sensitive` checks the schema and the design rules.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from emolens.data.corpus import EmotionDataset
from emolens.data.stimuli import _check, _read_jsonl, resource_path, words
from emolens.errors import EmolensError
from emolens.labels import ALL_APPRAISALS, EMOTIONS

SENSITIVE_FILE = "sensitive.jsonl"
SENSITIVE_SCHEMA = "sensitive_schema.json"
NEUTRAL_FILE = "neutral_text.jsonl"
#: The six domains of the sensitive set, in file order.
DOMAINS: tuple[str, ...] = ("loss", "conflict", "failure", "health", "unfairness", "loneliness")

__all__ = ["DOMAINS", "load_neutral_text", "load_sensitive", "load_sensitive_schema", "validate_sensitive"]


@lru_cache(maxsize=1)
def load_sensitive_schema() -> dict[str, Any]:
    """The sensitive-set JSON schema, with its design rules under the ``x-`` keywords."""
    return json.loads(resource_path(SENSITIVE_SCHEMA).read_text(encoding="utf-8"))


def validate_sensitive(path: str | Path | None = None) -> dict[str, Any]:
    """Check the sensitive set against its schema and rules; return its counts.

    Rules: every line matches the schema (a message ends in ``?``, i.e. asks for a reply); ids
    are unique and named ``sensitive-<domain>-NN`` after their own domain; no text repeats (up to
    case and punctuation); every text has a first-person word; at least ``x-minimum-counts``
    messages in all and per domain. The first violation raises :class:`EmolensError`.
    """
    schema = load_sensitive_schema()
    defs = schema["$defs"]
    path = Path(path) if path else resource_path(SENSITIVE_FILE)
    first_person = set(schema["x-first-person"]["words"])
    ids: set[str] = set()
    texts: dict[str, str] = {}
    per_domain: Counter[str] = Counter()
    per_emotion: Counter[str] = Counter()
    for lineno, obj in _read_jsonl(path):
        where = f"{path.name}:{lineno}"
        _check(obj, defs["message"], defs, where)
        if obj["id"] in ids:
            raise EmolensError(f"{where}: duplicate id {obj['id']!r}", "number messages uniquely")
        if not obj["id"].startswith(f"sensitive-{obj['domain']}-"):
            raise EmolensError(f"{where}: id {obj['id']!r} does not match domain {obj['domain']!r}",
                               "name messages sensitive-<domain>-NN")
        ids.add(obj["id"])
        tokens = words(obj["text"])
        if not first_person.intersection(tokens):
            raise EmolensError(f"{where}: message is not written in the first person: {obj['text']!r}",
                               "write it as the person asking for help (I, my, we ...)")
        key = " ".join(tokens)
        if key in texts:
            raise EmolensError(f"{where}: text duplicates {texts[key]}", "make every message unique")
        texts[key] = where
        per_domain[obj["domain"]] += 1
        per_emotion[obj["emotion"]] += 1
    need = schema["x-minimum-counts"]
    if len(ids) < need["messages"]:
        raise EmolensError(f"{path.name}: {len(ids)} messages, fewer than {need['messages']}", "add messages")
    short = {d: per_domain[d] for d in DOMAINS if per_domain[d] < need["per_domain"]}
    if short:
        raise EmolensError(f"{path.name}: domains below {need['per_domain']} messages: {short}", "add messages")
    return {"messages": len(ids), "per_domain": dict(per_domain), "per_emotion": dict(per_emotion)}


@lru_cache(maxsize=4)
def _validated(path: str) -> None:
    validate_sensitive(path)


def load_sensitive(domains: tuple[str, ...] | list[str] | None = None, validate: bool = True) -> EmotionDataset:
    """The sensitive messages as an :class:`EmotionDataset` (label = the emotion the writer expresses).

    ``appraisals`` holds all 21 design values; ``meta`` has ``domain``. ``domains`` keeps only
    those domains (default all six).
    """
    path = resource_path(SENSITIVE_FILE)
    if validate:
        _validated(str(path))
    if domains is not None:
        unknown = sorted(set(domains) - set(DOMAINS))
        if unknown:
            raise EmolensError(f"unknown sensitive domain(s) {unknown}", f"use some of {list(DOMAINS)}")
    rows = [obj for _, obj in _read_jsonl(path) if domains is None or obj["domain"] in domains]
    frame = pd.DataFrame([{"id": o["id"], "text": o["text"], "label": o["emotion"], "domain": o["domain"],
                           **o["appraisals"]} for o in rows])
    return EmotionDataset(ids=frame["id"].tolist(), texts=frame["text"].tolist(), labels=frame["label"].tolist(),
                          appraisals=frame[list(ALL_APPRAISALS)].to_numpy(dtype="float32"),
                          appraisal_names=ALL_APPRAISALS, label_names=EMOTIONS,
                          meta=frame[["domain"]], name="sensitive", source=str(path.parent))


def load_neutral_text() -> list[str]:
    """The neutral held-out sentences (perplexity under steering measures capability retention)."""
    texts = [obj["text"] for _, obj in _read_jsonl(resource_path(NEUTRAL_FILE))]
    if not texts:
        raise EmolensError(f"{NEUTRAL_FILE} is empty", "reinstall emolens")
    return texts
