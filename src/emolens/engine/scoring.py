"""Label scoring: the log-probability of each answer label after a prompt, the one way emolens reads it.

Tak et al. take the logit of the *last* sub-token of ``" <label>"`` with no check that labels are
single tokens (paper-protocol §2.3, §10.9). We tokenise each label exactly as it would follow the
prompt and check that labels are single and distinct tokens. Then a label's score is the
log-probability of its first token at the answer position; a label that splits into several
tokens is scored by its full sequence log-probability instead (and :meth:`LabelScorer.describe`
says so), continuing the prompt's key/value cache with the label's tokens. The continuation runs
outside every hook, so an edit of the prompt (ablation, patching, steering) changes the label
score only through the prompt, never by editing the label tokens themselves. Scores are
log-probabilities over the whole vocabulary, so single- and multi-token labels are comparable.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from emolens.engine.prefix import tile_cache
from emolens.errors import EmolensError
from emolens.labels import EMOTIONS


def fork_cache(cache):
    """A copy of a key/value cache that a continuation may extend without touching the original."""
    twin = tile_cache(cache, 1)
    return twin if twin is not None else copy.deepcopy(cache)


@dataclass
class LabelScorer:
    """Token ids of each label as it follows the prompt, and how they are scored."""

    labels: tuple[str, ...]
    token_ids: list[list[int]]
    single_token: bool

    @classmethod
    def build(cls, tokenizer, labels: Sequence[str] = EMOTIONS, prompt_text: str = "Context: x Answer:",
              prefix: str = " ") -> LabelScorer:
        """Tokenise ``prompt_text + prefix + label`` and keep the tokens after the prompt's own.

        Using the real prompt tail as context catches tokenizers that merge the prefix space
        differently in context than alone.
        """
        base = tokenizer(prompt_text, add_special_tokens=True)["input_ids"]
        ids = []
        for label in labels:
            full = tokenizer(prompt_text + prefix + label, add_special_tokens=True)["input_ids"]
            if full[: len(base)] == base and len(full) > len(base):
                ids.append(list(full[len(base):]))
            else:  # the label merged into the prompt's last token: fall back to the bare label
                ids.append(list(tokenizer(prefix + label, add_special_tokens=False)["input_ids"]))
            if not ids[-1]:
                raise EmolensError(f"label {label!r} tokenises to nothing", "check the label list")
        if len({tuple(t) for t in ids}) < len(ids):
            raise EmolensError("two labels tokenise to the same tokens", "use distinct label words")
        firsts = [t[0] for t in ids]
        single = all(len(t) == 1 for t in ids) and len(set(firsts)) == len(firsts)
        return cls(tuple(labels), ids, single)

    @property
    def multi_token_labels(self) -> list[str]:
        return [lab for lab, ids in zip(self.labels, self.token_ids, strict=True) if len(ids) > 1]

    @property
    def needs_cache(self) -> bool:
        """Whether scoring continues the prompt's cache (some label has more than one token)."""
        return not self.single_token

    @property
    def extra_forwards(self) -> int:
        """Continuation forwards per scored batch (one per multi-token label)."""
        return 0 if self.single_token else sum(len(t) > 1 for t in self.token_ids)

    def describe(self) -> str:
        if self.single_token:
            return "every label is a single, distinct token: scored by its next-token log-probability"
        return (f"labels {self.multi_token_labels or 'sharing a first token'} split into several tokens: every "
                "label is scored by its full teacher-forced log-probability")

    def new_cache(self, model) -> DynamicCache | None:
        """A cache for the prompt forward when scoring will continue it, else ``None`` (no cache needed)."""
        return DynamicCache(config=model.config) if self.needs_cache else None

    def first_token(self, last_logits: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` log-probability of each label's first token from the answer-position logits."""
        logp = torch.log_softmax(last_logits.float(), dim=-1)
        return logp[:, torch.tensor([t[0] for t in self.token_ids], device=logp.device)]

    @torch.no_grad()
    def score(self, model, batch, last_logits: torch.Tensor, cache=None) -> torch.Tensor:
        """Label log-probabilities ``[B, K]`` given the answer-position logits of ``batch``.

        ``batch`` has the prompt's ``attention_mask`` and ``position_ids`` (``[B, T]``, the rows
        of ``last_logits``). Multi-token labels continue ``cache`` -- the key/value cache of the
        forward that produced ``last_logits``, edited or not -- on a fork, so the cache is kept;
        without a cache the clean prompt is run once to make one.
        """
        scores = self.first_token(last_logits).clone()
        if self.single_token:
            return scores
        mask, pos = batch.attention_mask, batch.position_ids
        if cache is None:
            cache = DynamicCache(config=model.config)
            model(input_ids=batch.input_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                  logits_to_keep=1)
        rows, device = last_logits.shape[0], last_logits.device
        for k, toks in enumerate(self.token_ids):
            if len(toks) == 1:
                continue
            extra = torch.tensor(toks[:-1], device=device).expand(rows, -1)
            out = model(input_ids=extra, attention_mask=torch.cat([mask, torch.ones_like(extra)], 1),
                        position_ids=pos[:, -1:] + torch.arange(1, len(toks), device=device),
                        cache=fork_cache(cache), use_cache=True)
            rest = torch.log_softmax(out.logits.float(), -1)
            target = torch.tensor(toks[1:], device=device).expand(rows, -1)
            scores[:, k] += rest.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1).to(scores.device)
        return scores


class LabelHead:
    """Label scores renormalised over the labels, from the labels' rows of the output head only.

    An analysis that compares labels with each other (steering's fractions, success and Δ log p
    are all renormalised over the labels) does not need the log-softmax over the whole vocabulary:
    the labels' logits decide everything. For a large vocabulary the output head is most of a
    one-token step's work (gemma-3's 262k x 640 head is 63% of gemma-3-270m's multiply-adds per
    token), so for such a forward the model's output head is swapped (:meth:`swapped`) for a
    linear layer holding only the labels' rows (and bias): the model's own forward -- hooks, final
    norm, logit soft-capping -- then yields the labels' logits. The first use is checked against
    the model's full logits (:meth:`check`); on a mismatch the runner falls back to the full head
    for good, so the shortcut is exact or off.
    """

    def __init__(self, model, scorer: LabelScorer):
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            raise ValueError("no linear output head")
        ids = torch.tensor([t[0] for t in scorer.token_ids])
        self.ids = ids
        rows = torch.nn.Linear(head.in_features, len(ids), bias=head.bias is not None, device=head.weight.device,
                               dtype=head.weight.dtype)
        with torch.no_grad():
            rows.weight.copy_(head.weight[ids.to(head.weight.device)])
            if head.bias is not None:
                rows.bias.copy_(head.bias[ids.to(head.bias.device)])
        rows.requires_grad_(False)
        self.rows = rows
        #: None until checked; then whether this model's logits are reproduced
        self.usable: bool | None = None

    @classmethod
    def of(cls, model, scorer: LabelScorer) -> LabelHead | None:
        """The label head of ``model``, or None where its output head is not one linear layer."""
        try:
            return cls(model, scorer)
        except (ValueError, AttributeError, NotImplementedError):
            return None

    @contextmanager
    def swapped(self, model):
        """Inside the block, ``model``'s logits are the labels' only (``[B, T, K]``)."""
        head = model.get_output_embeddings()
        model.set_output_embeddings(self.rows)
        try:
            yield
        finally:
            model.set_output_embeddings(head)

    def scores(self, label_logits: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` log-probabilities over the labels from the swapped head's last-position logits."""
        return torch.log_softmax(label_logits.float(), -1)

    def renormalised(self, full_logits: torch.Tensor) -> torch.Tensor:
        """The same scores from the model's full last-position logits ``[B, V]``."""
        return torch.log_softmax(full_logits.float()[:, self.ids.to(full_logits.device)], -1)

    def check(self, scores: torch.Tensor, full_logits: torch.Tensor, atol: float = 1e-4) -> bool:
        """Whether ``scores`` equal the full head's (to ``atol``); decides :attr:`usable` for good."""
        self.usable = bool(torch.allclose(scores, self.renormalised(full_logits).to(scores.device), atol=atol, rtol=0))
        return self.usable
