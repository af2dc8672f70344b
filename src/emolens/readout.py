"""Closed-vocabulary emotion readout: score every label at the answer position.

Tak et al. take the logit of the *last* sub-token of ``" <label>"`` with no check that labels are
single tokens (paper-protocol §2.3, §10.9). We tokenise each label exactly as it would follow the
prompt, check that labels are single and distinct tokens, and where one splits we score it by its
full teacher-forced log-probability (and say so) instead of an arbitrary sub-token. Scores are
log-probabilities over the whole vocabulary, so single- and multi-token labels are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from emolens.data.corpus import EmotionDataset
from emolens.errors import EmolensError
from emolens.inputs.batching import Batch, iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS
from emolens.metrics import classification_summary

#: Content-free inputs for contextual calibration (Zhao et al., 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass
class LabelReader:
    """Token ids of each label as it follows the prompt, and how they are scored."""

    labels: tuple[str, ...]
    token_ids: list[list[int]]
    single_token: bool

    @classmethod
    def build(cls, tokenizer, labels: Sequence[str] = EMOTIONS, prompt_text: str = "Context: x Answer:",
              prefix: str = " ") -> LabelReader:
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

    def describe(self) -> str:
        if self.single_token:
            return "every label is a single, distinct token: scored by its next-token log-probability"
        return (f"labels {self.multi_token_labels or 'sharing a first token'} split into several tokens: every "
                "label is scored by its full teacher-forced log-probability")

    @torch.no_grad()
    def score(self, model, batch: Batch, last_logits: torch.Tensor) -> torch.Tensor:
        """Label log-probabilities ``[B, K]`` given the answer-position logits of ``batch``."""
        logp = torch.log_softmax(last_logits.float(), dim=-1)
        first = torch.tensor([t[0] for t in self.token_ids], device=logp.device)
        scores = logp[:, first]
        if self.single_token:
            return scores
        for k, ids in enumerate(self.token_ids):
            if len(ids) > 1:
                scores[:, k] = self._sequence_logprob(model, batch, ids)
        return scores

    def _sequence_logprob(self, model, batch: Batch, ids: list[int]) -> torch.Tensor:
        """log p(ids | prompt) by one teacher-forced forward of prompt + label tokens."""
        n = len(batch)
        device = batch.input_ids.device
        extra = torch.tensor(ids, device=device).expand(n, -1)
        input_ids = torch.cat([batch.input_ids, extra], dim=1)
        mask = torch.cat([batch.attention_mask, torch.ones_like(extra)], dim=1)
        pos = batch.position_ids[:, -1:] + torch.arange(1, len(ids) + 1, device=device)
        position_ids = torch.cat([batch.position_ids, pos], dim=1)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                    logits_to_keep=len(ids) + 1)
        logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # predicts each label token
        return logp.gather(-1, extra.unsqueeze(-1)).squeeze(-1).sum(-1)


@dataclass
class ReadoutResult:
    """Per-item label scores and predictions plus summary metrics.

    ``frame`` columns: id, gold, pred, correct, top1, and ``logp_<label>`` per label; with
    calibration also ``pred_cal`` and ``correct_cal``.
    """

    frame: pd.DataFrame
    metrics: dict
    labels: tuple[str, ...]
    reader: LabelReader
    calibration: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def scores(self) -> np.ndarray:
        return self.frame[[f"logp_{lab}" for lab in self.labels]].to_numpy()

    @property
    def correct_ids(self) -> list[str]:
        return self.frame.loc[self.frame["correct"], "id"].tolist()


@torch.no_grad()
def score_prompts(lm, prompts, reader: LabelReader, batch_size: int = 16, top_k: int = 1,
                  progress: bool = False, desc: str = "readout") -> tuple[np.ndarray, list[str]]:
    """Label log-probabilities ``[N, K]`` and the top-1 vocabulary token for each prompt."""
    if batch_size < 1:
        raise EmolensError(f"batch size {batch_size} is not positive", "pass --batch-size 1 or more")
    scores = np.zeros((len(prompts), len(reader.labels)), dtype=np.float32)
    top: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="item", disable=not progress, leave=False)
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        out = lm.model(**batch.model_inputs(), logits_to_keep=1)
        last = out.logits[:, -1]
        scores[batch.indices] = reader.score(lm.model, batch, last).cpu().numpy()
        best = last.argmax(-1).tolist()
        for i, tok_id in zip(batch.indices, best, strict=True):
            top[i] = lm.tokenizer.decode([tok_id])
        bar.update(len(batch))
    bar.close()
    return scores, top


def content_free_prior(lm, spec: PromptSpec, reader: LabelReader, batch_size: int = 16) -> np.ndarray:
    """The label distribution for content-free inputs, averaged (Zhao et al., 2021)."""
    prompts = build_prompts(CONTENT_FREE, spec, lm.tokenizer)
    scores, _ = score_prompts(lm, prompts, reader, batch_size)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs.mean(0)


def calibrate_scores(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Renormalise over labels, then divide out the content-free prior (in log space)."""
    logp = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    return logp - np.log(prior)[None, :]


def readout(lm, dataset: EmotionDataset, spec: PromptSpec | None = None, batch_size: int = 16,
            calibrate: bool = False, progress: bool = True) -> ReadoutResult:
    """Ask the model which label each text implies, as Tak et al. do, plus calibration if asked."""
    spec = spec or PromptSpec()
    labels = spec.labels
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    reader = LabelReader.build(lm.tokenizer, labels, prompts[0].text, prompts[0].label_prefix)
    scores, top = score_prompts(lm, prompts, reader, batch_size, progress=progress)
    index = {lab: i for i, lab in enumerate(labels)}
    gold = np.array([index.get(lab, -1) if lab is not None else -1 for lab in dataset.labels])
    pred = scores.argmax(1)
    frame = pd.DataFrame({"id": dataset.ids, "gold": dataset.labels, "pred": [labels[p] for p in pred],
                          "correct": pred == gold, "top1": top})
    for k, lab in enumerate(labels):
        frame[f"logp_{lab}"] = scores[:, k]
    has_gold = gold >= 0
    metrics: dict = {"raw": classification_summary(gold[has_gold], pred[has_gold], len(labels)) if has_gold.any()
                     else {"n": 0}}
    metrics["raw"]["predicted_distribution"] = {lab: int((pred == k).sum()) for k, lab in enumerate(labels)}
    prior = None
    if calibrate:
        prior = content_free_prior(lm, spec, reader, batch_size)
        pred_cal = calibrate_scores(scores, prior).argmax(1)
        frame["pred_cal"] = [labels[p] for p in pred_cal]
        frame["correct_cal"] = pred_cal == gold
        metrics["calibrated"] = classification_summary(gold[has_gold], pred_cal[has_gold], len(labels))
        metrics["calibrated"]["predicted_distribution"] = {lab: int((pred_cal == k).sum())
                                                           for k, lab in enumerate(labels)}
        metrics["content_free_prior"] = dict(zip(labels, prior.round(5).tolist(), strict=True))
    metrics["label_scoring"] = reader.describe()
    metrics["n_items"] = len(dataset)
    metrics["n_with_gold"] = int(has_gold.sum())
    return ReadoutResult(frame, metrics, tuple(labels), reader, prior)
