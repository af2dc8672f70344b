"""Benchmark: padding of row-only and packed batch plans on a corpus, and what packing costs a causal stage.

Two questions behind :func:`emolens.inputs.batching.batch_plan`'s ``pack``:

1. How much padding do left-padded, length-sorted batches carry on the corpus's own tokens (the
   tokens after the ones every prompt shares), cut by rows alone or packed (also capped in token
   slots), in extraction chunks of 256 items and sorted over the whole corpus? And packed at 64
   rows, by extraction chunk size (``chunk_size: auto`` gives an 8B's one-position store 1,344
   items a chunk, its five-position store 256)? Exact, from the tokenizer; no model runs.
2. What does packing do to a causal stage, whose batches each run many one-token condition steps?
   gemma-3-270m's knockout on ``--items`` items, row-only and packed batches in turn (``--repeats``
   times, interleaved), timed in the same process.

    python bench/batching.py                      # crowd-enVENT (EMOLENS_CROWD_ENVENT), gemma-3-270m
    python bench/batching.py --no-model           # part 1 only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from machine import describe as machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from emolens.data.loading import load_dataset  # noqa: E402
from emolens.inputs import batching  # noqa: E402
from emolens.inputs.prompts import PromptSpec, build_prompts  # noqa: E402


def padding(own: np.ndarray, batch_size: int, pack: bool, chunk: int | None) -> tuple[float, int]:
    """Pad positions per real own-token position, and the number of batches, of ``own`` cut into
    chunks of ``chunk`` items (None: one sorted set) and planned as :func:`batch_plan` plans them."""
    pads = batches = 0
    step = chunk or len(own)
    for c in range(0, len(own), step):
        block = own[c:c + step]
        for rows in batching.batch_plan(block, batch_size, pack):
            lengths = block[rows]
            pads += len(lengths) * int(lengths.max()) - int(lengths.sum())
            batches += 1
    return pads / int(own.sum()), batches


def knockout_ab(lm, items: int, repeats: int) -> None:
    from emolens.causal import common
    from emolens.causal.knockout import knockout
    from emolens.engine.windows import Window

    ds = load_dataset("crowd-envent").sample(items, seed=0)
    spec = PromptSpec(shots=("joy", "sadness"))
    windows = [Window(c, 3) for c in range(1, lm.n_layers - 1, 4)]
    plain = common.iter_batches

    def packed(*args, **kwargs):
        return plain(*args, **{**kwargs, "pack": True})

    print(f"\nknockout, gemma-3-270m, {items} items, windows {[w.center for w in windows]}, batch 16")
    print("| batches | s | forwards | token-layers |\n|---|---:|---:|---:|")
    for _ in range(repeats):
        for name, plan in (("rows only", plain), ("packed", packed)):
            common.iter_batches = plan
            start = time.perf_counter()
            result = knockout(lm, ds, windows=windows, spec=spec, batch_size=16, progress=False)
            print(f"| {name} | {time.perf_counter() - start:.2f} | {result.info['forwards']} | "
                  f"{result.info['token_layers']:,} |", flush=True)
    common.iter_batches = plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from emolens.model.loading import load_model

    lm = None if args.no_model else load_model("gemma-3-270m")
    if lm is None:  # the tokenizer alone, from the cached gemma-3-270m folder
        tokenizer = AutoTokenizer.from_pretrained(next(Path.home().glob(".cache/emolens/models/gemma-3-270m-*")))
    else:
        tokenizer = lm.tokenizer
    ds = load_dataset("crowd-envent")
    ids = tokenizer([p.text for p in build_prompts(ds.texts, PromptSpec(shots=("joy", "sadness")))])["input_ids"]
    whole = np.array([len(t) for t in ids])
    own = whole - batching.shared_prefix_length(ids)
    rng = np.random.default_rng(0)
    own = own[rng.permutation(len(own))]  # chunks of random items, as a corpus in no length order
    print(f"{len(whole)} prompts (T1, 2 shots); whole-prompt tokens: median {np.median(whole):.0f}, "
          f"99th percentile {np.percentile(whole, 99):.0f}, longest {whole.max()}; own tokens: mean {own.mean():.1f}")
    print("\npadding of own tokens (pad positions per real one) and batches\n")
    print("| batch | sorted | rows only | packed |\n|---:|---|---:|---:|")
    for bs in (16, 64, 256):
        for chunk, label in ((256, "in 256-item chunks"), (None, "over the corpus")):
            (a, na), (b, nb) = padding(own, bs, False, chunk), padding(own, bs, True, chunk)
            print(f"| {bs} | {label} | {a:.0%} ({na}) | {b:.0%} ({nb}) |")
    print("\npacked at 64 rows, by extraction chunk (items)\n")
    print("| chunk | padding | batches |\n|---:|---:|---:|")
    for chunk in (256, 512, 1024, 1344, 1365, None):
        share, n = padding(own, 64, True, chunk)
        print(f"| {chunk or 'the corpus'} | {share:.1%} | {n} |")
    if lm is not None:
        knockout_ab(lm, args.items, args.repeats)
    print(f"\nmachine: {machine('cpu')}")


if __name__ == "__main__":
    main()
