"""Appraisal neurons: which MLP neurons track appraisal ratings, how few carry a probe, and whether they matter.

Data flow: :mod:`collect` streams a corpus through the model at the ``neurons`` site into the
running sums of :mod:`moments`; :mod:`significance` and :mod:`table` turn them into a per-neuron
table with q-values and intervals.
"""

from emolens.neurons.collect import NeuronPass, complete_items, neuron_pass
from emolens.neurons.moments import NeuronMoments
from emolens.neurons.significance import bh_by_target, correlation_p, fisher_interval
from emolens.neurons.table import neuron_table, significant_counts

__all__ = [
    "NeuronMoments",
    "NeuronPass",
    "bh_by_target",
    "complete_items",
    "correlation_p",
    "fisher_interval",
    "neuron_pass",
    "neuron_table",
    "significant_counts",
]
