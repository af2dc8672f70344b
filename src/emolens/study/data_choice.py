"""Which dataset a study uses: ``dataset.spec``, else ``dataset.fallback``, and a sentence saying why.

A study never silently substitutes data: when the spec cannot be loaded and a fallback is
configured, :class:`ResolvedData` carries the reason, and ``run.json`` and the report print it.
The data fingerprint is part of the study's identity, so a fallback run is another study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from emolens.data.corpus import CorpusUnreachable
from emolens.data.loading import DEFAULT_CORPUS, load_dataset
from emolens.notices import warn
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
    """Load ``dataset.spec``, then sample; ``dataset.fallback`` only if the default corpus is unreachable.

    A file of the user's own that fails to load (missing, wrong columns, labels outside the set)
    is an error even when the config (or its ``base:`` preset) names a fallback: substituting
    other data would give results about a corpus the user did not ask for.
    """
    spec = cfg.dataset.spec
    reason = None
    try:
        dataset = load_dataset(spec, cfg.dataset.columns())
        how = _describe_crowd_envent(dataset) if dataset.name == "crowd-enVENT" else f"{dataset.name} ({spec})"
    except CorpusUnreachable as exc:
        if not cfg.dataset.fallback or str(spec).lower() not in DEFAULT_CORPUS:
            raise
        reason = str(exc)
        spec = cfg.dataset.fallback
        dataset = load_dataset(spec)
        how = (f"{dataset.name} (dataset.fallback: {spec}) because {cfg.dataset.spec} is not reachable "
               f"here: {reason}")
        warn(f"data: using the FALLBACK {how}")
    if cfg.dataset.limit:
        dataset = dataset.sample(cfg.dataset.limit, seed=cfg.dataset.seed, balanced=cfg.dataset.balanced)
    return ResolvedData(dataset, spec, f"{how}; {len(dataset)} items", reason)


__all__ = ["ResolvedData", "resolve_dataset"]
