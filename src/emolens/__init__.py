"""emolens: mechanistic interpretability of emotion inference in causal language models.

The package follows the protocol of Tak et al. (2025) -- few-shot label readout, activation
capture, probes, causal interventions and appraisal steering -- on stock ``transformers``
modules with forward hooks, for any model family the site registry can resolve.
"""

from emolens.errors import EmolensError

__version__ = "0.1.0"

__all__ = ["EmolensError", "__version__"]
