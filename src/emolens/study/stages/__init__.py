"""The study's stages, one module per stage (or per family of stages).

Importing this package imports every module in it, and each module registers its stages with
:func:`emolens.study.registry.stage`, so adding a stage is adding one file here (plus its config
section and its place in ``STAGE_ORDER`` / ``STAGE_NEEDS`` in :mod:`emolens.study.config`).
"""

from __future__ import annotations

import importlib
import pkgutil

from emolens.study.registry import STAGES

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STAGES"]
