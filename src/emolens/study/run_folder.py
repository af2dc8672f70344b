"""A run folder on disk: claiming it for one study, and keeping, clearing or reusing stage folders.

Layout (``RUN_DIR`` defaults to ``<output>/<config name>-<hash8>``)::

    run.json                the study: config, data used, models, status and timings of every stage
    config.yaml             the validated config, as run
    report.html             the self-contained report (rebuilt after every run)
    <model>/<stage>/        one folder per model and stage: the stage's tables and files
    <model>/<stage>/stage.json   written last, by atomic rename: key, status, timings, summary

A folder that holds another study or foreign files is refused, never overwritten; a finished
stage whose key changed is moved aside to ``<model>/.superseded/``; a sibling run's finished stage
with the same key is hard-linked (or copied) instead of recomputed. Reading a run folder (the
format marker, ``stage.json``) is :mod:`emolens.report.runs`'s, so the report needs no study code.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from emolens import __version__
from emolens.errors import EmolensError
from emolens.locks import LOCK_NAME
from emolens.paths import atomic_write_bytes, dump_json
from emolens.report.runs import DONE, RUN_FORMAT, read_stage
from emolens.study.config import StudyConfig, model_slug
from emolens.study.data_choice import ResolvedData


def now() -> str:
    """The current UTC time as run.json and stage.json record it."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def content_hash(obj: Any) -> str:
    """SHA-256 of a JSON-able object, key order ignored (stage keys and the study hash)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the emolens package's own files (its source and resources, by relative path).

    Why stage keys carry it: the version string stays ``0.1.0`` across every change made from a
    checkout, so a key with only the version would let a run reuse -- from a sibling run, or by
    resuming an interrupted store -- results that older code computed, silently. Any change to the
    package's files changes this fingerprint, and with it every stage key."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def study_hash(cfg: StudyConfig, data: ResolvedData) -> str:
    """The run's identity: the config plus the data actually used (a fallback is another study)."""
    return content_hash({"config": cfg.canonical(), "dataset": data.fingerprint})


def default_run_dir(cfg: StudyConfig, data: ResolvedData) -> Path:
    """``<output>/<config name>-<hash8>``: the folder a study gets when none is given."""
    return Path(cfg.output) / f"{cfg.name}-{study_hash(cfg, data)[:8]}"


def claim_run_dir(run_dir: Path, cfg: StudyConfig, data: ResolvedData) -> dict:
    """Create or reopen a run folder; refuse one that holds another study or foreign files."""
    run_dir = Path(run_dir)
    ident = study_hash(cfg, data)
    meta_path = run_dir / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != RUN_FORMAT:
            raise EmolensError(f"{str(run_dir)!r} holds a run.json that is not an emolens run",
                               "choose another run folder")
        if meta.get("study_hash") != ident:
            raise EmolensError(
                f"{str(run_dir)!r} holds the run of a different study (config {meta.get('config', {}).get('name')!r}, "
                f"hash {str(meta.get('study_hash'))[:8]}; this one is {ident[:8]})",
                "choose another run folder, or none to get one named after this config")
        return meta
    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise EmolensError(f"{str(run_dir)!r} is not empty and holds no emolens run",
                           "choose an empty or new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": RUN_FORMAT, "study_hash": ident, "created": now(), "emolens": __version__,
            "config": cfg.model_dump(mode="json"), "dataset": {"spec": data.spec, "how": data.how,
                                                                "fallback_reason": data.fallback_reason,
                                                                "labels": list(data.dataset.label_names),
                                                                "name": data.dataset.name,
                                                                "fingerprint": data.fingerprint,
                                                                "n_items": len(data.dataset)},
            "models": {model_slug(m): {"spec": m} for m in cfg.models}, "stages": {}}
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())
    dump_json(meta_path, meta)
    return meta


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link ``src`` to ``dst`` (no copy of large stores), copying where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def find_reusable(run_dir: Path, slug: str, name: str, key: str) -> Path | None:
    """A finished ``<slug>/<name>`` folder with this key in a sibling run under the same output root."""
    root = run_dir.parent
    if not root.exists():
        return None
    for sibling in sorted(root.iterdir()):
        if sibling == run_dir or not sibling.is_dir():
            continue
        folder = sibling / slug / name
        rec = read_stage(folder)
        if rec and rec.get("key") == key and rec.get("status") in DONE:
            return folder
    return None


def reuse_stage(source: Path, folder: Path) -> dict:
    """Link (or copy) a sibling run's finished stage into ``folder``, marked ``reused``; its old record."""
    tmp = folder.parent / f".{folder.name}.reuse-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, copy_function=link_or_copy)
    tmp.replace(folder)
    old = read_stage(folder) or {}
    dump_json(folder / "stage.json", {**old, "status": "reused", "reused_from": str(source), "reused_at": now()})
    return old


def prepare_folder(folder: Path, key: str, resumable: bool, echo) -> bool:
    """Clear or keep an interrupted folder, move a finished one of another key aside. Returns resumed."""
    rec = read_stage(folder)
    if rec is not None:  # finished, but for another key: keep it, out of the way
        aside = folder.parent / ".superseded" / f"{folder.name}-{str(rec.get('key'))[:8]}-{int(time.time())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.replace(aside)
        echo(f"  {folder.parent.name}/{folder.name}: inputs changed; previous result kept in {aside}")
        return False
    if not folder.exists():
        return False
    started = folder / ".started.json"
    same = started.exists() and json.loads(started.read_text()).get("key") == key
    if resumable and same:
        return True
    shutil.rmtree(folder)
    return False


__all__ = ["claim_run_dir", "code_fingerprint", "content_hash", "default_run_dir", "find_reusable", "link_or_copy",
           "now", "prepare_folder", "reuse_stage", "study_hash"]
