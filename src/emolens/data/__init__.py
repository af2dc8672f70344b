"""Datasets: crowd-enVENT, the built-in stimuli and sensitive messages, or any labelled table.

:func:`load_dataset` resolves a ``--data`` argument to an :class:`EmotionDataset` (items, gold
labels, appraisal ratings, a fingerprint that names the exact data).
"""

from emolens.data.corpus import EmotionDataset, load_crowd_envent, load_table, read_ids, write_ids
from emolens.data.loading import load_dataset
from emolens.data.sensitive import load_sensitive
from emolens.data.stimuli import load_stimuli

__all__ = ["EmotionDataset", "load_crowd_envent", "load_dataset", "load_sensitive", "load_stimuli", "load_table",
           "read_ids", "write_ids"]
