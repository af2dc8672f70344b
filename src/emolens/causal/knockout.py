"""Attention-edge knockout: stop chosen query positions from reading chosen key positions.

Tak et al. only *inspect* attention (paper-protocol §6.4). To test whether the answer cue needs to
read the context (or the shots) at some layers, we block those query->key edges and measure the
readout. The blocking itself is the engine's :class:`~emolens.engine.ops.Knockout` op, which edits
the attention mask each chosen attention module receives (so fast kernels such as SDPA stay in
play, and Gemma's sliding-window masks keep their window). transformers 5.x hands every attention
module (llama, gemma2/3, qwen2/3, mistral, phi3, olmo, gpt2, gpt_neox) ``attention_mask=`` as a
keyword: a float additive mask for eager attention, a boolean one for SDPA, or ``None`` when SDPA
relies on ``is_causal``, which the op spells out. Queries align to the end of the keys, so a
knockout from the last ``m`` queries runs on the runner's KV-prefix fast path like any other
condition.

Only the *direct* query -> key edges are cut: the context can still reach the cue through the
other positions, which read it at every layer. The measured drop is therefore a lower bound on the
cue's reliance on those keys at those layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from emolens.causal.common import (
    CausalResult,
    Condition,
    gold_index,
    make_batches,
    prediction_metrics,
    runner_for,
    to_frame,
)
from emolens.engine.ops import Knockout, check_maskable
from emolens.engine.positions import Positions
from emolens.engine.runner import path_name
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec, build_prompts


def knockout_condition(keys, queries, window, head: int | None, fast: int) -> Condition:
    """One edge knockout as a :class:`~emolens.causal.common.Condition` (kind = the key positions)."""
    keys, queries = Positions.of(keys), Positions.of(queries)
    op = Knockout("attn", layers=list(window.layers), positions=queries, keys=keys,
                  heads=None if head is None else [head])
    query = queries.span if queries.span else (queries.ints[0] if len(queries.ints) == 1 else queries.ints)
    return Condition(f"keys={keys.label}", "attn_edge", window, query, head, lambda batch: [op], fast)


def knockout(lm, dataset, keys: Sequence = ("context",), queries=-1, windows=(),
             heads: Sequence[int] | None = None, spec=None, batch_size: int = 16, fast: bool = True,
             progress: bool = True):
    """Block ``queries -> keys`` attention in each window (all heads, or each of ``heads`` alone).

    Metrics as for ablation: agreement with the clean prediction, accuracy, change in the gold
    log-probability. Negative int ``queries`` (``-1``: the answer cue) use the KV-prefix fast path:
    blocking edges from the last ``m`` queries changes nothing before them.
    """
    check_maskable(lm.model)
    if not windows:
        raise EmolensError("no layer windows given", "pass windows from layer_windows()")
    spec = spec or PromptSpec()
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    runner = runner_for(lm, prompts, spec, fast)
    reader = runner.scorer
    batches = make_batches(lm, prompts, batch_size)
    path_fast = Positions.of(queries).suffix if fast else 0
    path = path_name(path_fast)
    clean = runner.clean(batches, len(prompts), (path,), None, progress)
    head_list: list[int | None] = list(heads) if heads is not None else [None]
    conditions = [knockout_condition(k, queries, w, h, path_fast) for k in keys for w in windows
                  for h in head_list]
    scores = runner.conditions(batches, len(prompts), conditions, progress, desc="knockout")
    gold = gold_index(dataset.labels, spec.labels)
    reference = clean.scores[path]
    rows = prediction_metrics("knockout", None, reference, reference, gold, lm.spec)
    for cond, s in zip(conditions, scores, strict=True):
        rows += prediction_metrics("knockout", cond, s, reference, gold, lm.spec)
    return CausalResult(to_frame(rows), reference, scores, conditions, list(dataset.ids),
                        info={"forwards": runner.forwards, "token_layers": runner.counter.token_layers,
                              "n_items": len(prompts), "label_scoring": reader.describe()})
