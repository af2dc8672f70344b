"""The report's per-model sections, one module per analysis.

Importing this package imports every module in it; each registers its sections with
:func:`emolens.report.section_registry.section`, so adding a report section is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil

from emolens.report.section_registry import SECTIONS, ordered_sections

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["SECTIONS", "ordered_sections"]
