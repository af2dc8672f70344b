"""Probes: batched scikit-learn-style estimators fitted on every (site, layer, position) slice at once,
their held-out evaluation, and :func:`run_probing` (the one path of ``emolens probe`` and the probe stage).
"""

from emolens.probes.estimators import (
    BatchedLogisticProbe,
    BatchedMLPProbe,
    BatchedRidgeProbe,
    LogisticProbe,
    MLPProbe,
    RidgeProbe,
)
from emolens.probes.probing import ProbingResult, run_probing, write_outputs

__all__ = ["BatchedLogisticProbe", "BatchedMLPProbe", "BatchedRidgeProbe", "LogisticProbe", "MLPProbe",
           "ProbingResult", "RidgeProbe", "run_probing", "write_outputs"]
