"""The engine: plain forward hooks on stock modules, and the one definition of each execution idea.

``ops`` is the vocabulary (``Capture``, ``Set``, ``Add``, ``Scale``, ``Zero``, ``Mean``,
``Resample``, ``Apply``, ``Knockout``); :class:`Intervention` runs a list of ops around a forward
or ``generate()``; :func:`run_forward` passes position ids from the mask. :class:`Positions`,
:class:`Window`, :class:`LabelScorer` and :class:`ConditionRunner` are the single definitions of
positions, layer windows, label scoring and condition running that every analysis uses.
"""

from emolens.engine.intervention import Intervention, run_forward
from emolens.engine.ops import Add, Apply, Capture, Knockout, Mean, Op, Resample, Scale, Set, Zero
from emolens.engine.positions import Positions
from emolens.engine.runner import Condition, ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.engine.windows import Window

__all__ = ["Add", "Apply", "Capture", "Condition", "ConditionRunner", "Intervention", "Knockout", "LabelScorer",
           "Mean", "Op", "Positions", "Resample", "Scale", "Set", "Window", "Zero", "run_forward"]
