"""Which dataset a study uses: ``dataset.spec``, else ``dataset.fallback``, and a sentence saying why.

A study never silently substitutes data: when the spec cannot be loaded and a fallback is
configured, :class:`ResolvedData` carries the reason, and ``run.json`` and the report print it.
The data fingerprint is part of the study's identity, so a fallback run is another study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from emolens.data.loading import load_dataset
from emolens.errors import EmolensError
from emolens.paths import cache_dir
from emolens.study.config import StudyConfig


@dataclass
class ResolvedData:
    """The dataset a study actually uses and a sentence saying where it came from and why."""

    dataset: Any
    spec: str
    how: str
    fallback_reason: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.dataset.fingerprint()


def _describe_crowd_envent(dataset) -> str:
    env = os.environ.get("EMOLENS_CROWD_ENVENT")
    if env:
        return f"crowd-enVENT from EMOLENS_CROWD_ENVENT ({dataset.source})"
    if str(cache_dir()) in str(dataset.source):
        return f"crowd-enVENT from the cache ({dataset.source})"
    return f"crowd-enVENT ({dataset.source})"


def resolve_dataset(cfg: StudyConfig) -> ResolvedData:
    """Load ``dataset.spec`` (or ``dataset.fallback`` when the spec cannot be loaded), then sample."""
    spec = cfg.dataset.spec
    reason = None
    try:
        dataset = load_dataset(spec)
        how = _describe_crowd_envent(dataset) if dataset.name == "crowd-enVENT" else f"{dataset.name} ({spec})"
    except EmolensError as exc:
        if not cfg.dataset.fallback:
            raise
        reason = str(exc)
        spec = cfg.dataset.fallback
        dataset = load_dataset(spec)
        how = (f"{dataset.name} (dataset.fallback: {spec}) because {cfg.dataset.spec} is not reachable "
               f"here: {reason}")
    if cfg.dataset.limit:
        dataset = dataset.sample(cfg.dataset.limit, seed=cfg.dataset.seed)
    return ResolvedData(dataset, spec, f"{how}; {len(dataset)} items", reason)


__all__ = ["ResolvedData", "resolve_dataset"]
