"""What a steering vector costs: perplexity on neutral text and emotion readout on unrelated items.

A direction that makes replies kinder only by breaking the model is no control at all. Two
measures, each under the same vector, layers and scale as the generation it accompanies:

* :func:`steered_perplexity` -- token-weighted perplexity of neutral factual text
  (``resources/neutral_text.jsonl``) with the vector added at every token but the first (the
  attention sink), as generation steering adds it to every generated token.
* :func:`steered_readout_accuracy` -- the paper's emotion readout on labelled items the
  directions were not fitted on, with the vector added at the answer cue.

``value=None`` gives the unsteered numbers; a zero vector gives them too, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emolens.engine.intervention import run_forward
from emolens.engine.runner import ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import Prompt, PromptSpec, build_prompts
from emolens.steering.apply import steer_positions, steering_op

__all__ = ["steered_perplexity", "steered_readout_accuracy"]


@torch.no_grad()
def steered_perplexity(lm, texts: Sequence[str], layers: Sequence[int] | None = None,
                       value: torch.Tensor | None = None, batch_size: int = 8) -> tuple[float, int]:
    """Perplexity of ``texts`` (token-weighted over all of them) and the number of scored tokens."""
    prompts = [Prompt(t, {}) for t in texts]
    total, count = 0.0, 0
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        ops = []
        if value is not None:
            ops = [steering_op(layers, value.to(lm.device, lm.dtype), steer_positions("prompt"))]
        out, _ = run_forward(lm, batch, ops)
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
        target = batch.input_ids[:, 1:]
        nll = -logp.gather(-1, target[..., None]).squeeze(-1)
        keep = batch.attention_mask[:, 1:].bool() & batch.attention_mask[:, :-1].bool()
        total += float(nll[keep].double().sum())
        count += int(keep.sum())
    return (float(np.exp(total / count)) if count else float("nan")), count


@torch.no_grad()
def steered_readout_accuracy(lm, texts: Sequence[str], labels: Sequence[str], layers: Sequence[int] | None = None,
                             value: torch.Tensor | None = None, spec: PromptSpec | None = None,
                             batch_size: int = 16) -> np.ndarray:
    """Per-item correctness (bool array) of the emotion readout with ``value`` added at the answer cue."""
    spec = spec or PromptSpec()
    prompts = build_prompts(list(texts), spec, lm.tokenizer)
    runner = ConditionRunner(lm, LabelScorer.build(lm.tokenizer, spec.labels, prompts[0].text,
                                                   prompts[0].label_prefix))
    ops = [] if value is None else [steering_op(list(layers), value.to(lm.device, lm.dtype), steer_positions("last"))]
    pred = np.zeros(len(prompts), dtype=np.int64)
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        scores, _ = runner.run(batch, ops)
        pred[batch.indices] = scores.argmax(-1).numpy()
    gold = np.array([list(spec.labels).index(lab) for lab in labels])
    return pred == gold
