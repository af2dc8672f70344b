"""Model inputs: few-shot prompts with named spans (:class:`PromptSpec`) and left-padded batches.

Every analysis builds its prompts here, so a prompt fingerprint means the same text everywhere.
"""

from emolens.inputs.batching import Batch, encode, iter_batches, position_ids_from_mask
from emolens.inputs.prompts import SPAN_NAMES, Prompt, PromptSpec, build_prompts, parse_shots

__all__ = ["SPAN_NAMES", "Batch", "Prompt", "PromptSpec", "build_prompts", "encode", "iter_batches", "parse_shots",
           "position_ids_from_mask"]
