"""Statistics every analysis reports the same way: clustered intervals, permutation p-values, multiplicity.

A base-layer package (it imports nothing else from emolens), so data, probes, causal, steering
and report code can all share one definition of "interval", "p-value" and "corrected".
"""

from emolens.stats.bootstrap import Interval, PeakLocation, cluster_bootstrap, cluster_statistic, peak_location
from emolens.stats.chance import balanced_accuracy, chance_normalised, majority_share
from emolens.stats.multiplicity import adjust, max_statistic_p, permutation_p

__all__ = [
    "Interval",
    "PeakLocation",
    "adjust",
    "balanced_accuracy",
    "chance_normalised",
    "cluster_bootstrap",
    "cluster_statistic",
    "majority_share",
    "max_statistic_p",
    "peak_location",
    "permutation_p",
]
