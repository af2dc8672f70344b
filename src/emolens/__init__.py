"""emolens: mechanistic interpretability of emotion inference in causal language models.

The package follows the protocol of Tak et al. (2025) -- few-shot label readout, activation
capture, probes, causal interventions and appraisal steering -- on stock ``transformers``
modules with forward hooks, for any model family the site registry can resolve.

Everything a notebook needs is one import away::

    from emolens import load_model, load_dataset, PromptSpec, readout, run_forward, Capture, Add

The names below load their module on first use (PEP 562), so ``import emolens`` and the
``emolens`` command stay fast: torch and transformers are imported only when a name that needs
them is touched. ``__all__`` is the public API; everything else is reachable through the
subpackages, which follow the data flow (see ``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # errors
    "EmolensError": "emolens.errors",
    # data
    "EmotionDataset": "emolens.data.corpus",
    "load_dataset": "emolens.data.loading",
    # prompts
    "PromptSpec": "emolens.inputs.prompts",
    # models
    "LoadedModel": "emolens.model.loading",
    "load_model": "emolens.model.loading",
    # the engine: forward hooks on stock modules
    "Add": "emolens.engine.ops",
    "Capture": "emolens.engine.ops",
    "Intervention": "emolens.engine.intervention",
    "Positions": "emolens.engine.positions",
    "Window": "emolens.engine.windows",
    "run_forward": "emolens.engine.intervention",
    # analyses
    "readout": "emolens.readout",
    "ActivationStore": "emolens.activations.store",
    "extract": "emolens.activations.extract",
    "run_probing": "emolens.probes.probing",
    "ablate": "emolens.causal.ablation",
    "patch": "emolens.causal.patching",
    "knockout": "emolens.causal.knockout",
    "run_steering": "emolens.steering.run",
    "sweep": "emolens.steering.sweep",
    # studies and reports
    "load_config": "emolens.study.config",
    "load_preset": "emolens.study.config",
    "run_study": "emolens.study.runner",
    "write_report": "emolens.report.html",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


class _Package(types.ModuleType):
    """The ``emolens`` package object. One public function shares its name with its submodule
    (``emolens.readout``); the import system would record the submodule on the package and shadow
    the function, so ``from emolens import readout`` gave the module or the function depending on
    what was imported first. Submodules stay in ``sys.modules``; the package attribute is the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'emolens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

