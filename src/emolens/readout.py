"""Closed-vocabulary emotion readout: which label each text implies, as Tak et al. ask it.

Every label is scored at the answer position by :class:`~emolens.engine.scoring.LabelScorer`
(single-token check, multi-token labels by their full log-probability), on the clean reads of
the engine's :class:`~emolens.engine.runner.ConditionRunner` (the one place forwards run); this
module adds contextual calibration (Zhao et al., 2021) and the accuracy metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from emolens.data.corpus import EmotionDataset
from emolens.engine.runner import ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.errors import EmolensError, arg
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.metrics import classification_summary

#: Content-free inputs for contextual calibration (Zhao et al., 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")


#: The readout's name for the engine's label scorer (one implementation: :mod:`emolens.engine.scoring`).
LabelReader = LabelScorer


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
        """Items the raw (uncalibrated) readout gets right: the "correct" subset downstream
        analyses use unless :meth:`correct_ids_from` is asked for the calibrated one."""
        return self.correct_ids_from("raw")

    def correct_ids_from(self, which: str = "raw") -> list[str]:
        """Correctly read items by the ``raw`` or the ``calibrated`` prediction.

        Calibration changes which items count as correct; nothing switches to it silently, the
        caller says which (``correct_from``).
        """
        if which == "raw":
            return self.frame.loc[self.frame["correct"], "id"].tolist()
        if which == "calibrated":
            if "correct_cal" not in self.frame:
                raise EmolensError("the calibrated correct subset needs calibration", f"pass {arg('calibrate', True)}")
            return self.frame.loc[self.frame["correct_cal"], "id"].tolist()
        raise EmolensError(f"unknown correct subset {which!r}", "use raw or calibrated")


@torch.no_grad()
def score_prompts(lm, prompts, reader: LabelReader, batch_size: int = 16, top_k: int = 1,
                  progress: bool = False, desc: str = "readout") -> tuple[np.ndarray, list[str]]:
    """Label log-probabilities ``[N, K]`` and the top-1 vocabulary token for each prompt."""
    if batch_size < 1:
        raise EmolensError(f"batch size {batch_size} is not positive")
    scores = np.zeros((len(prompts), len(reader.labels)), dtype=np.float32)
    top: list[str] = [""] * len(prompts)
    runner = ConditionRunner(lm, reader)  # the engine's one forward loop; the clean read has no ops
    runner.share_prefix(prompts)  # the template's shared tokens once; each item's own tokens per read
    bar = tqdm(total=len(prompts), desc=desc, unit="item", disable=not progress, leave=False)
    # packed as an extraction's reads are, so a readout and an extraction of the same items batch alike
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device, pack=True):
        got = runner.read(batch)
        scores[batch.indices] = got.scores.numpy()
        for i, tok_id in zip(batch.indices, got.top.tolist(), strict=True):
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


def label_ids(names: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Class ids of label names (-1: no label, or one outside ``labels``)."""
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index.get(name, -1) if name is not None else -1 for name in names], dtype=np.int64)


def readout_frame(ids: Sequence[str], gold: Sequence[str | None], labels: Sequence[str], scores: np.ndarray,
                  top: Sequence[str]) -> pd.DataFrame:
    """The readout table: ``id, gold, pred, correct, top1, logp_<label>`` from label scores ``[N, K]``
    (what :func:`readout` returns and an extraction's store keeps, chunk by chunk)."""
    pred = scores.argmax(1)
    frame = pd.DataFrame({"id": list(ids), "gold": list(gold), "pred": [labels[p] for p in pred],
                          "correct": pred == label_ids(gold, labels), "top1": list(top)})
    for k, lab in enumerate(labels):
        frame[f"logp_{lab}"] = scores[:, k]
    return frame


def frame_metrics(frame: pd.DataFrame, labels: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1 (with intervals) and the predicted-label counts of a
    readout table (``gold``, ``pred``): the ``raw`` metrics of :func:`readout`, and of an extraction's
    readout (``ActivationStore.readout``), which reads the same labels in the same forward as its
    captures."""
    gold, pred = label_ids(frame["gold"], labels), label_ids(frame["pred"], labels)
    has_gold = gold >= 0
    out = classification_summary(gold[has_gold], pred[has_gold], len(labels)) if has_gold.any() else {"n": 0}
    out["predicted_distribution"] = {lab: int((pred == k).sum()) for k, lab in enumerate(labels)}
    return out


def readout(lm, dataset: EmotionDataset, spec: PromptSpec | None = None, batch_size: int = 16,
            calibrate: bool = False, progress: bool = True) -> ReadoutResult:
    """Ask the model which label each text implies, as Tak et al. do, plus calibration if asked."""
    spec = spec or PromptSpec()
    labels = spec.labels
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    reader = LabelReader.build(lm.tokenizer, labels, prompts[0].text, prompts[0].label_prefix)
    scores, top = score_prompts(lm, prompts, reader, batch_size, progress=progress)
    frame = readout_frame(dataset.ids, dataset.labels, labels, scores, top)
    gold = label_ids(dataset.labels, labels)
    has_gold = gold >= 0
    metrics: dict = {"raw": frame_metrics(frame, labels)}
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
