"""The report's per-model sections: each is a function of a :class:`ModelRun` returning HTML.

A section is registered with :func:`section` in a module of :mod:`emolens.report.sections`;
importing that package imports every module there, so adding a report section is one new file.
``order`` places it on the page (the built-in sections use 10, 20, ... 70).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emolens.report.runs import ModelRun


@dataclass(frozen=True)
class Section:
    """One heading of a model's part of the report and the function that fills it."""

    name: str
    title: str
    order: int
    render: Callable[[ModelRun], str]


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, order: int) -> Callable[[Callable[[ModelRun], str]], Callable[[ModelRun], str]]:
    """Register ``fn(model_run) -> html`` as the section ``name`` shown under ``title``."""

    def wrap(fn: Callable[[ModelRun], str]) -> Callable[[ModelRun], str]:
        if name in SECTIONS and SECTIONS[name].render is not fn:
            raise ValueError(f"report section {name!r} is registered twice")
        SECTIONS[name] = Section(name, title, order, fn)
        return fn

    return wrap


def ordered_sections() -> list[Section]:
    """The registered sections in page order."""
    return sorted(SECTIONS.values(), key=lambda s: (s.order, s.name))


__all__ = ["SECTIONS", "Section", "ordered_sections", "section"]
