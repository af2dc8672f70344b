"""Activations on disk: :func:`extract` captures sites x layers x positions into a memory-mapped,
resumable, self-checking :class:`ActivationStore` that probes and steering read.
"""

from emolens.activations.extract import extract
from emolens.activations.health import check_store, repair_store
from emolens.activations.store import ActivationStore

__all__ = ["ActivationStore", "check_store", "extract", "repair_store"]
