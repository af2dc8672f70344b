"""Minimal-pair evidence: which neurons move when a pair's texts differ in (mostly) one appraisal.

Why: crowd-enVENT correlations mix every appraisal a text carries; the built-in minimal pairs
(:mod:`emolens.data.stimuli`) differ by a few words and, by design, only in the appraisals their
type manipulates. For appraisal ``a`` and every pair that manipulates it, the neuron change
``Δx = x_b − x_a`` is signed by the design change ``sign(Δy_a)``; the mean signed change over
those pairs, in units of the neuron's spread across all pair members, is the neuron's pair
effect. Its agreement with the corpus ranking is the Spearman correlation, across neurons,
between the pair effect and the rating correlation ``r``.

The null is that pair members are exchangeable (the manipulation moves no neuron systematically):
flipping the direction of random pairs then leaves the distribution unchanged, so a sign-flip
permutation of pairs gives the p-value of the agreement (neurons are not independent, so a
textbook Spearman p would be far too small).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from emolens.data.stimuli import load_stimuli
from emolens.engine.intervention import Capture, run_forward
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.stats import permutation_p

__all__ = ["capture_neurons", "pair_agreement", "pair_effects", "pairs_table"]


@torch.no_grad()
def capture_neurons(lm, texts, layers, spec=None, position: int = -1, batch_size: int = 16) -> np.ndarray:
    """Neurons of ``layers`` at ``position`` for each text: ``[n, L, N]`` float32 (small inputs only)."""
    prompts = build_prompts(list(texts), spec or PromptSpec(), lm.tokenizer)
    out = np.zeros((len(prompts), len(layers), lm.sites.width("neurons")[0]), np.float32)
    op = Capture("neurons", layers=list(layers), positions=[position], dtype=torch.float32, device="cpu")
    for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
        _, run = run_forward(lm, batch, [op], need_logits=False)
        out[batch.indices] = run.captures["neurons"][:, :, 0].numpy()
    return out


def pair_effects(delta: np.ndarray, design_change: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mean of ``Δx · sign(Δy)`` over pairs, divided by ``scale`` (the neuron's SD): ``[L*N]``."""
    signs = np.sign(design_change)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (signs @ delta.reshape(len(delta), -1)) / len(delta) / scale


def pair_agreement(delta: np.ndarray, design_change: np.ndarray, scale: np.ndarray, r: np.ndarray,
                   n_perm: int = 199, seed: int = 0) -> dict:
    """Spearman rho between pair effects and corpus ``r`` across neurons, with a sign-flip permutation p."""
    ok = np.isfinite(r) & np.isfinite(scale) & (scale > 0)
    effect = pair_effects(delta, design_change, scale)
    rho = sps.spearmanr(effect[ok], r[ok]).statistic
    rng = np.random.default_rng(seed)
    flips = rng.choice([-1.0, 1.0], size=(n_perm, len(delta)))
    null = [sps.spearmanr(pair_effects(delta, design_change * f, scale)[ok], r[ok]).statistic for f in flips]
    return {"rho": float(rho), "p": permutation_p(rho, null, alternative="greater"), "n_pairs": len(delta),
            "n_neurons": int(ok.sum()), "effect": effect}


def pairs_table(lm, table: pd.DataFrame, layers, appraisals, spec=None, batch_size: int = 16, top: int = 20,
                n_perm: int = 199, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement per appraisal (one row each) and the ``top`` neurons by |pair effect| per appraisal."""
    data = load_stimuli("pairs")
    layers = list(layers)
    x = capture_neurons(lm, data.texts, layers, spec, batch_size=batch_size)
    flat = x.reshape(len(x), -1).astype(np.float64)
    scale = flat.std(0, ddof=1)
    index = {item: i for i, item in enumerate(data.ids)}
    meta = data.meta
    members_a = [i for i in range(len(data)) if meta["member"].iloc[i] == "a"]
    agreement, tops = [], []
    for appraisal in appraisals:
        if appraisal not in data.appraisal_names:
            continue
        col = data.appraisal_names.index(appraisal)
        rows = [(i, index[meta["partner_id"].iloc[i]]) for i in members_a
                if appraisal in str(meta["manipulated"].iloc[i]).split("+")]
        rows = [(a, b) for a, b in rows if data.appraisals[b, col] != data.appraisals[a, col]]
        if len(rows) < 5:
            continue
        a_idx, b_idx = np.array([a for a, _ in rows]), np.array([b for _, b in rows])
        delta = flat[b_idx] - flat[a_idx]
        change = data.appraisals[b_idx, col] - data.appraisals[a_idx, col]
        part = table[(table["appraisal"] == appraisal) & table["layer"].isin(layers)]
        part = part.sort_values(["layer", "neuron"])
        result = pair_agreement(delta, change, scale, part["r"].to_numpy(), n_perm, seed)
        effect = result.pop("effect")
        agreement.append({"appraisal": appraisal, **result})
        best = np.argsort(-np.nan_to_num(np.abs(effect), nan=-1))[:top]
        tops.append(pd.DataFrame({"appraisal": appraisal, "layer": part["layer"].to_numpy()[best],
                                  "neuron": part["neuron"].to_numpy()[best], "pair_effect": effect[best],
                                  "r": part["r"].to_numpy()[best], "corpus_rank": part["rank"].to_numpy()[best]}))
    cols = ["appraisal", "layer", "neuron", "pair_effect", "r", "corpus_rank"]
    return pd.DataFrame(agreement), (pd.concat(tops, ignore_index=True) if tops else pd.DataFrame(columns=cols))
