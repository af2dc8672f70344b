"""Causal test of appraisal neurons: mean-ablate an appraisal's top neurons, watch the emotion it predicts.

Why: a correlation says a neuron *tracks* other-responsibility; appraisal theory says the model
should *use* it, so removing it should lower anger. Removal is mean ablation at the answer cue
(the neuron set to its corpus mean, where the statistics were taken) through the engine's
``Apply`` op at the ``neurons`` site. Any removal of many neurons moves log-probs somewhat, so
the effect is judged against random neuron sets **matched** to the top set: same layer for each
neuron and the same (mean, variance) decile cell within that layer, so a top set of loud,
high-variance neurons is not compared against quiet ones. The score is the target emotion's
log-probability renormalised over the label set (first label token), so a generic loss of
probability mass that leaves the ranking of emotions alone does not count as an effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp

from emolens.engine.intervention import Apply
from emolens.engine.runner import Condition, ConditionRunner
from emolens.engine.scoring import LabelScorer
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.stats import cluster_bootstrap, permutation_p

__all__ = ["THEORY_TARGETS", "NeuronSet", "ablation_ops", "ablation_table", "compare_to_random", "matched_random_sets",
           "top_set"]

#: Appraisal -> the emotion appraisal theory ties it to most directly (and the predicted sign of
#: ablating the appraisal's neurons on that emotion's items: its log-probability goes down).
THEORY_TARGETS: dict[str, str] = {"other_responsblt": "anger", "self_responsblt": "guilt",
                                  "pleasantness": "joy", "unpleasantness": "sadness",
                                  "suddenness": "surprise", "goal_support": "joy"}


@dataclass(frozen=True)
class NeuronSet:
    """Neurons as parallel arrays of layer ids and neuron ids within the layer."""

    layers: np.ndarray
    neurons: np.ndarray

    def __len__(self) -> int:
        return len(self.neurons)

    def by_layer(self) -> dict[int, np.ndarray]:
        return {int(layer): np.sort(self.neurons[self.layers == layer]) for layer in np.unique(self.layers)}


def top_rows(table: pd.DataFrame, appraisal: str, k: int, column: str = "r") -> pd.DataFrame:
    """The table rows of the ``k`` neurons with the largest ``|column|`` for ``appraisal``."""
    rows = table[table["appraisal"] == appraisal]
    return rows.loc[rows[column].abs().sort_values(ascending=False, kind="stable").index[:k]]


def top_set(table: pd.DataFrame, appraisal: str, k: int, column: str = "r") -> NeuronSet:
    """The ``k`` neurons with the largest ``|column|`` for ``appraisal`` across all layers."""
    rows = top_rows(table, appraisal, k, column)
    return NeuronSet(rows["layer"].to_numpy(), rows["neuron"].to_numpy())


def _cells(mean: np.ndarray, var: np.ndarray, bins: int) -> np.ndarray:
    """Per layer, a (mean decile, variance decile) cell id for every neuron: ``[L, N]``."""
    def decile(a):
        ranks = a.argsort(1, kind="stable").argsort(1, kind="stable")
        return ranks * bins // a.shape[1]
    return decile(mean) * bins + decile(var)


def matched_random_sets(target: NeuronSet, layers: Sequence[int], mean: np.ndarray, var: np.ndarray,
                        n_sets: int, seed: int = 0, bins: int = 10) -> list[NeuronSet]:
    """``n_sets`` random sets, each neuron drawn from the same layer and (mean, var) decile cell as
    one neuron of ``target``, never a target neuron, without repeats within a set."""
    rng = np.random.default_rng(seed)
    layers = list(layers)
    cells = _cells(np.asarray(mean), np.asarray(var), bins)
    taken = {(int(la), int(n)) for la, n in zip(target.layers, target.neurons, strict=True)}
    sets = []
    for _ in range(n_sets):
        used: set[tuple[int, int]] = set()
        out = []
        for layer, neuron in zip(target.layers, target.neurons, strict=True):
            row = layers.index(int(layer))
            cell = cells[row, neuron]
            pool = [n for n in np.flatnonzero(cells[row] == cell) if (int(layer), int(n)) not in taken | used]
            if not pool:  # an exhausted cell: fall back to any free neuron of the layer
                pool = [n for n in range(cells.shape[1]) if (int(layer), n) not in taken | used]
            pick = int(rng.choice(pool))
            used.add((int(layer), pick))
            out.append(pick)
        sets.append(NeuronSet(np.asarray(target.layers), np.asarray(out)))
    return sets


def ablation_ops(neurons: NeuronSet, layers: Sequence[int], mean: np.ndarray, position: int = -1) -> list[Apply]:
    """One ``Apply`` per layer that sets the set's neurons to their means at ``position``."""
    layers = list(layers)
    ops = []
    for layer, idx in neurons.by_layer().items():
        index = torch.as_tensor(idx, dtype=torch.long)
        value = torch.as_tensor(np.asarray(mean)[layers.index(layer), idx], dtype=torch.float32)

        def fn(x, index=index, value=value):
            out = x.clone()
            out[..., index.to(x.device)] = value.to(device=x.device, dtype=x.dtype)
            return out

        ops.append(Apply("neurons", layers=[layer], positions=position, fn=fn))
    return ops


def compare_to_random(top: np.ndarray, random: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Effect of the top set vs matched random sets on the same items.

    ``top [n_items]`` and ``random [n_sets, n_items]`` are per-item score changes (ablated −
    clean). Returns the mean top effect and the mean random effect with item-bootstrap intervals,
    their per-item difference with an item-clustered interval, and the one-sided p that the top
    set lowers the score more than a random set: ``(1 + #{random mean <= top mean}) / (1 + n_sets)``.
    """
    top = np.asarray(top, float)
    random = np.asarray(random, float).reshape(-1, len(top))
    items = np.arange(len(top))
    t = cluster_bootstrap(top, items, n_boot=n_boot, seed=seed)
    r = cluster_bootstrap(random.mean(0), items, n_boot=n_boot, seed=seed)
    d = cluster_bootstrap(top - random.mean(0), items, n_boot=n_boot, seed=seed)
    return {"effect": t.value, "effect_lo": t.low, "effect_hi": t.high,
            "random_effect": r.value, "random_lo": r.low, "random_hi": r.high,
            "difference": d.value, "difference_lo": d.low, "difference_hi": d.high,
            "p": permutation_p(t.value, random.mean(1), alternative="less"), "n_items": len(top),
            "n_sets": len(random)}


def ablation_table(lm, dataset, result, table: pd.DataFrame, appraisals: Sequence[str] | None = None,
                   k: int = 50, n_sets: int = 19, max_items: int = 60, spec=None, batch_size: int = 16,
                   seed: int = 0, position: int = -1, fast: bool = True) -> pd.DataFrame:
    """Mean-ablate each appraisal's top-``k`` neurons on items of its theory emotion vs matched random sets.

    Items are the pass's items whose gold label is the appraisal's :data:`THEORY_TARGETS` emotion
    (a seeded sample of at most ``max_items``). One row per appraisal with :func:`compare_to_random`.

    The clean run, the top set and every random set are conditions of one
    :class:`~emolens.engine.runner.ConditionRunner`: with ``fast`` and the edit at the last token
    (``position = -1``), each batch's prompt prefix runs once and each of the ``2 + n_sets``
    conditions is a one-token step on it -- the same scores as full forwards (tested), for about
    ``1 / (2 + n_sets)`` of the compute. Scores are the engine's label log-probabilities
    renormalised over the labels.
    """
    spec = spec or PromptSpec()
    labels = list(spec.labels)
    mean, var = result.moments.mean, result.moments.var
    rng = np.random.default_rng(seed)
    suffix = 1 if fast and position == -1 else 0
    rows = []
    for appraisal in appraisals or [a for a in THEORY_TARGETS if a in result.appraisals]:
        target = THEORY_TARGETS[appraisal]
        if target not in labels or appraisal not in result.appraisals:
            continue
        pos = np.flatnonzero(result.groups == result.emotions.index(target))
        if len(pos) > max_items:
            pos = np.sort(rng.choice(pos, max_items, replace=False))
        if len(pos) < 5:
            rows.append({"appraisal": appraisal, "target": target, "k": k, "n_items": len(pos),
                         "note": "fewer than 5 items of the target emotion: not tested"})
            continue
        items = result.items[pos]
        prompts = build_prompts([dataset.texts[i] for i in items], spec, lm.tokenizer)
        chosen = top_set(table, appraisal, k)
        sets = [chosen, *matched_random_sets(chosen, result.layers, mean, var, n_sets, seed=seed)]
        conditions = [Condition(lambda _b: [], suffix)]
        conditions += [Condition(lambda _b, ops=ablation_ops(s, result.layers, mean, position): ops, suffix)
                       for s in sets]
        t = labels.index(target)
        scores = [s[:, t] for s in _condition_scores(lm, prompts, labels, conditions, batch_size)]
        clean = scores[0]
        top, randoms = scores[1] - clean, [s - clean for s in scores[2:]]
        row = {"appraisal": appraisal, "target": target, "k": k,
               "layers": ",".join(str(la) for la in sorted(chosen.by_layer())), "clean_logp": float(clean.mean()),
               "n_positive_r": int((top_rows(table, appraisal, k)["r"] > 0).sum())}
        row.update(compare_to_random(top, np.array(randoms), seed=seed))
        row["note"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def _condition_scores(lm, prompts, labels: Sequence[str], conditions: Sequence[Condition],
                      batch_size: int) -> list[np.ndarray]:
    """Per condition, ``[n, K]`` label log-probabilities renormalised over ``labels``."""
    scorer = LabelScorer.build(lm.tokenizer, labels, prompts[0].text, prompts[0].label_prefix)
    runner = ConditionRunner(lm, scorer, prefix_bytes=0)  # one batch's prefix at a time
    batches = list(iter_batches(lm.tokenizer, prompts, batch_size, lm.device))
    out = runner.conditions(batches, len(prompts), conditions)
    return [s - logsumexp(s, axis=-1, keepdims=True) for s in out]
