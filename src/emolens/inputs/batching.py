"""Left-padded, length-sorted batches with position ids and prompt-span token masks.

Left padding keeps the answer cue at the last column, so "position -1" is the same token in every
row. Explicit ``position_ids`` (counting real tokens only) make a padded row compute exactly what
it computes alone, up to float rounding; the padding-parity test relies on that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from emolens.errors import EmolensError
from emolens.inputs.prompts import SPAN_NAMES, Prompt


@dataclass
class Batch:
    """Model inputs for a group of prompts plus, per named span, a ``[B, T]`` token mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    span_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: np.ndarray | None = None  # positions of these prompts in the caller's list

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     {k: v.to(device) for k, v in self.span_masks.items()}, self.indices)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2 ... over real tokens; pads get 0 (they are masked out anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def encode(tokenizer, prompts: Sequence[Prompt], device: torch.device | str = "cpu",
           max_length: int | None = None) -> Batch:
    """Tokenise prompts with left padding and turn their character spans into token masks.

    A token belongs to a span when its character range overlaps it; special tokens (empty
    offsets) belong to none.
    """
    texts = [p.text for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True)
    length = enc["input_ids"].shape[1]
    limit = max_length or getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1e9 and length > limit:
        raise EmolensError(f"a prompt has {length} tokens, more than the model's {limit}",
                           "shorten the texts or use fewer shots")
    offsets = enc["offset_mapping"]  # [B, T, 2]
    starts, ends = offsets[..., 0], offsets[..., 1]
    real = enc["attention_mask"].bool() & (ends > starts)
    span_masks = {}
    for name in SPAN_NAMES:
        mask = torch.zeros_like(real)
        for row, prompt in enumerate(prompts):
            for s, e in prompt.spans.get(name, []):
                mask[row] |= real[row] & (starts[row] < e) & (ends[row] > s)
        span_masks[name] = mask
    attention_mask = enc["attention_mask"]
    return Batch(enc["input_ids"], attention_mask, position_ids_from_mask(attention_mask), span_masks).to(device)


def token_lengths(tokenizer, prompts: Sequence[Prompt], own: bool = False) -> np.ndarray:
    """Token count of each prompt (with special tokens), for length-sorted batching; with ``own``,
    only the tokens after those every prompt starts with (:func:`shared_prefix_length`)."""
    ids = tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    lengths = np.array([len(t) for t in ids], dtype=np.int64)
    return lengths - shared_prefix_length(ids) if own else lengths


def shared_prefix_length(token_ids: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Leading tokens common to every sequence, capped so each keeps at least ``keep`` of its own."""
    if not token_ids:
        return 0
    first, shortest = token_ids[0], min(len(t) for t in token_ids)
    n = 0
    while n < shortest and all(t[n] == first[n] for t in token_ids):
        n += 1
    return max(0, min(n, shortest - keep))


def batch_plan(lengths: Sequence[int] | np.ndarray, batch_size: int, pack: bool = False) -> list[np.ndarray]:
    """Which prompts go together: indices into ``lengths``, in length order, at most ``batch_size``
    rows a batch; with ``pack``, also at most ``batch_size`` times the mean length in token slots
    (rows times the batch's longest prompt), so a batch of long prompts has fewer rows.

    Why pack: a left-padded batch costs its longest row in every row, and prompt lengths have a
    long tail (crowd-enVENT: median 51 tokens, 99th percentile 165, longest 511). An extraction
    sorts within chunks of 256 items; cut by rows alone at 64, a chunk's last batch spans its
    whole tail and padding was 1.58 times the real tokens (0.28 packed; ``bench/batching.py``). Reads (readout,
    extraction) pack. Why not always: every extra forward streams all the weights again, and
    the causal stages run many one-token condition steps per batch of items (sorted over all of
    them, padding a few percent), so there more batches cost more than the padding they save
    (gemma-3-270m's knockout on this CPU: 22 -> 36 forwards, 7.2 -> 8.3 s, packed).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    budget = batch_size * float(lengths.mean()) if pack and len(lengths) else np.inf
    plan, start = [], 0
    for end in range(1, len(order) + 1):
        rows = end - start
        if end == len(order) or rows == batch_size or (rows + 1) * lengths[order[end]] > budget:
            plan.append(order[start:end])
            start = end
    return plan


def iter_batches(tokenizer, prompts: Sequence[Prompt], batch_size: int, device: torch.device | str = "cpu",
                 sort_by_length: bool = True, pack: bool = False) -> Iterator[Batch]:
    """Batches in length order (less padding, faster; :func:`batch_plan`, ``pack`` as there), each
    carrying its original indices.

    The plan reads each prompt's own tokens, those after the ones every prompt starts with: the
    engine runs the shared ones once (:meth:`~emolens.engine.runner.ConditionRunner.share_prefix`),
    so a batch costs its own tokens, and a 12-shot template's 300 shared tokens would otherwise
    hide a 10-fold spread of own lengths from the slot budget.

    Results are written back by ``batch.indices``, so callers see the input order whatever the
    batching order.
    """
    if batch_size < 1:
        raise EmolensError(f"batch size {batch_size} is not positive", "use a batch size of 1 or more")
    if sort_by_length and len(prompts) > batch_size:
        # own tokens matter to the slot budget only; unpacked, the order is the same either way
        plan = batch_plan(token_lengths(tokenizer, prompts, own=pack), batch_size, pack)
    else:
        order = np.arange(len(prompts))
        plan = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    for idx in plan:
        batch = encode(tokenizer, [prompts[i] for i in idx], device)
        batch.indices = idx
        yield batch
