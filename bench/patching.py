"""Benchmark: activation patching over all windows x 3 sites, emolens against the paper's loop.

Ours (:func:`emolens.causal.patching.patch`): one clean run per item capturing the patched
position, then batched patched runs on a shared cached prefix. The paper's loop (§6.3): for every
site, window and pair (pairs re-drawn each time), run the source alone caching every activation
(moved to CPU), run the target alone, then run the patched target -- three batch-1 full forwards.
The paper loop is timed on ``--paper-pairs`` pairs per condition and extrapolated to ``--pairs``
(printed as such), because running it in full takes hours on a CPU.

    python bench/patching.py --pairs 200 --paper-pairs 2
    python bench/patching.py --device cuda --shape llama-1b
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe as machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from emolens.causal.patching import draw_pairs, patch  # noqa: E402
from emolens.engine.intervention import Intervention  # noqa: E402
from emolens.engine.ops import Capture, Set  # noqa: E402
from emolens.engine.windows import layer_windows  # noqa: E402
from emolens.inputs.prompts import PromptSpec, build_prompts  # noqa: E402


def llama_1b_shape(device: str):
    """A random-initialised Llama-3.2-1B-shaped model (bf16) with the tiny test tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from emolens.model.loading import LoadedModel
    from emolens.model.sites import resolve_sites
    from emolens.model.tiny import tiny_tokenizer

    config = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tiny_tokenizer(), sites=resolve_sites(model), spec="llama-1b-shape",
                       source_id="random")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def paper_loop(lm, dataset, sites, windows, n_pairs: int, seed: int, device: str) -> tuple[float, int]:
    """Seconds and forwards of the paper's per-pair loop over every condition, ``n_pairs`` each."""
    spec = PromptSpec()
    forwards = 0
    start = time.perf_counter()
    for c, (site, window) in enumerate((s, w) for s in sites for w in windows):
        pairs = draw_pairs(dataset.ids, dataset.labels, n_pairs, seed + c)  # re-drawn per condition
        where = {i: k for k, i in enumerate(dataset.ids)}
        for src_id, tgt_id in zip(pairs["source_id"], pairs["target_id"], strict=True):
            src, tgt = (build_prompts([dataset.texts[where[i]]], spec, lm.tokenizer)[0] for i in (src_id, tgt_id))
            enc_s = lm.tokenizer(src.text, return_tensors="pt").to(lm.device)
            length = enc_s["input_ids"].shape[1]
            cap = Capture(site, layers="all", positions=list(range(-length, 0)), device="cpu")
            with Intervention(lm, [cap]) as run:  # source with its whole cache moved to CPU
                lm.model(**enc_s)
            cache = run.captures[site]
            enc_t = lm.tokenizer(tgt.text, return_tensors="pt").to(lm.device)
            lm.model(**enc_t)  # target clean
            value = cache[:, list(window.layers), -1:].to(lm.device)
            with Intervention(lm, [Set(site, layers=list(window.layers), positions=[-1], value=value, dims="blp")]):
                lm.model(**enc_t).logits[:, -1].float().cpu()
            forwards += 3
    sync(device)
    return time.perf_counter() - start, forwards



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--shape", choices=["llama-1b"], default=None, help="random model of this shape instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="stimuli")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--paper-pairs", type=int, default=2, help="pairs per condition timed for the paper loop")
    parser.add_argument("--sites", default="attn,mlp,resid")
    parser.add_argument("--span", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()

    from emolens.data.loading import load_dataset
    from emolens.model.loading import load_model

    lm = llama_1b_shape(args.device) if args.shape else load_model(args.model, device=args.device)
    dataset = load_dataset(args.data)
    sites = args.sites.split(",")
    windows = layer_windows(lm.n_layers, [args.span])
    n_cond = len(sites) * len(windows)

    sync(args.device)
    start = time.perf_counter()
    ours = patch(lm, dataset, args.pairs, sites, windows, batch_size=args.batch_size, seed=args.seed, progress=False)
    sync(args.device)
    ours_s = time.perf_counter() - start

    paper_n = min(args.paper_pairs, args.pairs)
    paper_s, paper_f = paper_loop(lm, dataset, sites, windows, paper_n, args.seed, args.device)
    scale = args.pairs / paper_n
    est_s, est_f = paper_s * scale, int(paper_f * scale)
    extrapolated = paper_n < args.pairs
    transfer = ours.frame[ours.frame["metric"] == "transfer"]
    note = f" (timed on {paper_n} pairs per condition, extrapolated x{scale:g})" if extrapolated else ""
    print(f"\nMachine: {machine(args.device)}; model {lm.spec} ({lm.n_layers} layers); {args.pairs} pairs x "
          f"{len(windows)} windows (span {args.span}) x {len(sites)} sites = {n_cond} conditions\n")
    print("| method | forward passes | seconds | pairs x conditions / s |")
    print("|---|---|---|---|")
    print(f"| emolens (fixed pairs, batched, cached prefix) | {ours.info['forwards']} | {ours_s:.1f} | "
          f"{args.pairs * n_cond / ours_s:.1f} |")
    print(f"| paper loop (batch 1, full source cache){' *' if extrapolated else ''} | {est_f} | {est_s:.1f} | "
          f"{args.pairs * n_cond / est_s:.2f} |")
    print(f"\nspeed-up: {est_s / ours_s:.1f}x{note}")
    print(f"mean transfer over conditions (ours): {np.nanmean(transfer['value']):.3f}")


if __name__ == "__main__":
    main()
