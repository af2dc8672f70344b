"""Steering: concept directions added to the residual stream, swept over windows and strengths with
controls, aligned with appraisal theory, and used to steer generations.

:func:`run_steering` and :func:`write_outputs` are the one orchestration behind ``emolens steer``
and the study's steer stage; :func:`sweep` is the sweep itself; banks of directions come from
:mod:`emolens.steering.directions`, theory alignment from :mod:`emolens.steering.theory`.
"""

from emolens.steering.directions import ConceptBank, bank_from_file, bank_from_store, parse_direction
from emolens.steering.run import SteeringRun, SteerPlan, run_steering, write_outputs
from emolens.steering.sweep import SweepResult, fit_split, sweep

__all__ = ["ConceptBank", "SteerPlan", "SteeringRun", "SweepResult", "bank_from_file", "bank_from_store", "fit_split",
           "parse_direction", "run_steering", "sweep", "write_outputs"]
