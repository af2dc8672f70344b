"""The stage registry: what a stage function gets (:class:`StageContext`) and how it is registered.

A stage is one function in a module of :mod:`emolens.study.stages`, decorated with
:func:`stage`; importing :mod:`emolens.study.stages` imports every module there, so adding a
stage is one new file (plus its config section and its place in ``STAGE_ORDER`` /
``STAGE_NEEDS`` in :mod:`emolens.study.config`). Nothing here runs a stage: keying, caching and
recording are :mod:`emolens.study.pipeline`'s.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from emolens.data.corpus import read_ids
from emolens.engine.windows import Window, layer_windows
from emolens.errors import EmolensError
from emolens.study.config import STAGE_NEEDS, StudyConfig
from emolens.study.data_choice import ResolvedData
from emolens.study.model_handle import ModelHandle


@dataclass
class StageContext:
    """What a stage function gets: its folder, the study, the model and its upstream folders."""

    name: str
    dir: Path
    key: str
    cfg: StudyConfig
    data: ResolvedData
    model: ModelHandle
    upstream: dict[str, Path]
    resumed: bool = False
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def prompt(self):
        """The study's prompt, scoring the dataset's label set (so chance and macro metrics follow it)."""
        return replace(self.cfg.prompt_spec(), labels=tuple(self.dataset.label_names))

    @property
    def dataset(self):
        return self.data.dataset

    def items(self):
        """The items the analyses use: all study items, or the model's correctly read ones."""
        if self.cfg.items == "all":
            return self.dataset
        ids = read_ids(self.upstream["readout"] / "correct_ids.txt")
        if not ids:
            raise EmolensError(f"{self.model.spec} reads no item correctly, so items: correct leaves nothing",
                               "use items: all or more items")
        return self.dataset.subset(ids, name=f"{self.dataset.name}-correct")

    def n_layers(self) -> int:
        if "readout" not in self.upstream:  # a stage that does not read the readout has loaded the model
            return int(self.model.lm.n_layers)
        meta = json.loads((self.upstream["readout"] / "metrics.json").read_text())
        return int(meta["n_layers"])

    def windows(self, span: int, section) -> list[Window]:
        """Every window of ``span`` layers that the section asks for (centres that do not fit are dropped)."""
        return layer_windows(self.n_layers(), [span], section.centers, section.stride, strict=False)

    def limited(self, dataset, max_items: int):
        if max_items and len(dataset) > max_items:
            return dataset.sample(max_items, seed=self.cfg.seed)
        return dataset


@dataclass
class StageDef:
    """A registered stage: its function, the config it is keyed on, what it needs, and whether it resumes."""

    name: str
    run: Callable[[StageContext], dict] | None
    section: Callable[[StudyConfig], dict]
    needs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    resumable: bool = False

    def unavailable(self) -> str | None:
        if self.run is None:
            return f"not available: the {self.name} stage is not wired into the pipeline in this emolens version"
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"not available: module {', '.join(missing)} is not part of this emolens version yet"
        return None


STAGES: dict[str, StageDef] = {}


def stage(name: str, section: Callable[[StudyConfig], dict], modules: tuple[str, ...] = (), resumable: bool = False):
    """Register ``fn`` as stage ``name``: ``section`` picks the config its key hashes; ``modules`` must be
    importable for the stage to be available; ``resumable`` stages keep an interrupted folder."""

    def wrap(fn: Callable[[StageContext], dict]) -> Callable[[StageContext], dict]:
        STAGES[name] = StageDef(name, fn, section, STAGE_NEEDS[name], modules, resumable)
        return fn

    return wrap


def dump_section(model) -> dict:
    """A pydantic config section as plain JSON data (what stage keys hash)."""
    return model.model_dump(mode="json")


def after_unit(ctx: StageContext, unit: str) -> None:
    """Called after each durable unit of a resumable stage (tests inject interruptions here)."""


__all__ = ["STAGES", "StageContext", "StageDef", "after_unit", "dump_section", "stage"]
