"""Causal analyses on the engine: which sites and layer windows the emotion readout depends on.

:func:`ablate` (zero, mean, resample, noise), :func:`patch` (activation patching between fixed
seeded pairs) and :func:`knockout` (attention edges from the answer cue) each return a
:class:`CausalResult`; :func:`write_outputs` writes its tables, the one path of the CLI commands
and the study stages.
"""

from emolens.causal.ablation import ablate
from emolens.causal.common import CausalResult, write_outputs
from emolens.causal.knockout import knockout
from emolens.causal.patching import patch

__all__ = ["CausalResult", "ablate", "knockout", "patch", "write_outputs"]
