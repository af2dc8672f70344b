"""Check and time the shared-prompt-prefix path on a real model: neurons read at the cue vs full forwards.

Why a bench and not a test: the equality is tested on every tiny family; this runs the real
tokenizer and weights (where the template's shared tokens and a real sliding window live) on a
few crowd-enVENT items, prints the largest relative difference of the neurons read, the token
positions each path runs and its CPU seconds (process time, so other processes' load does not
count).

    python bench/shared_prefix.py --model qwen2.5-coder-0.5b-instruct --items 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the 1,300-item sample the items come from")
    args = parser.parse_args()

    import torch

    from emolens.data.loading import load_dataset
    from emolens.engine.intervention import Capture, run_forward
    from emolens.engine.shared_prefix import pad_id, prefix_state, run_suffix, shared_prefix_length, suffix_batch
    from emolens.inputs.batching import iter_batches
    from emolens.inputs.prompts import PromptSpec, build_prompts
    from emolens.model.loading import load_model

    lm = load_model(args.model, dtype="float32", device="cpu")
    data = load_dataset("crowd-envent").sample(1300, seed=args.seed)
    prompts = build_prompts(data.texts[: args.items], PromptSpec(), lm.tokenizer)
    enc = lm.tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
    length = shared_prefix_length(enc)
    prefix = prefix_state(lm.model, torch.tensor(enc[0][:length]))
    if prefix is None:
        print(f"{args.model}: its cache cannot be shared; the pass runs full forwards")
        return
    ops = [Capture("neurons", layers="all", positions=[-1], dtype=torch.float32)]
    worst, cpu_full, cpu_fast, tok_full, tok_fast, fallbacks = 0.0, 0.0, 0.0, 0, 0, 0
    for batch in iter_batches(lm.tokenizer, prompts, args.batch_size, "cpu"):
        tic = time.process_time()
        _, full = run_forward(lm, batch, ops, need_logits=False)
        cpu_full += time.process_time() - tic
        tok_full += batch.input_ids.numel()
        suffix = suffix_batch(batch, prefix, pad_id(lm))
        if suffix is None:
            fallbacks += 1
            continue
        tic = time.process_time()
        _, fast = run_suffix(lm, suffix, ops)
        cpu_fast += time.process_time() - tic
        tok_fast += suffix.input_ids.numel()
        a, b = full.captures["neurons"], fast.captures["neurons"]
        worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    print(f"{args.model}, {len(prompts)} items: shared prefix {length} tokens (window {prefix.window}); "
          f"max |fast - full| / max |full| = {worst:.2e}; token positions {tok_fast} vs {tok_full}; "
          f"CPU {cpu_fast:.1f} s vs {cpu_full:.1f} s; batches run in full (too wide for the window): {fallbacks}")


if __name__ == "__main__":
    main()
