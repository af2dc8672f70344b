"""Benchmark: a small ablation sweep, full forwards against the KV-prefix fast path (same numbers).

Zero ablation at ``--sites`` over a few span-3 windows at the paper's positions -1 .. -5, on
``--items`` built-in stimuli. ``fast=False`` runs every condition as a full forward; the fast path
runs each batch's prefix once per suffix length m (1 .. 5) and then only the last m tokens per
condition. Both runs are timed in the same process, and their scores are compared.

    python bench/causal_fast.py --items 16 --centers 3,9,15
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

from emolens.causal.ablation import ablate  # noqa: E402
from emolens.engine.windows import layer_windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data", default="stimuli")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--sites", default="attn")
    parser.add_argument("--centers", default="3,9,15")
    parser.add_argument("--positions", default="-1,-2,-3,-4,-5")
    parser.add_argument("--kinds", default="zero")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from emolens.data.loading import load_dataset
    from emolens.model.loading import load_model

    lm = load_model(args.model, dtype="float32")
    ds = load_dataset(args.data).sample(args.items, seed=0)
    windows = layer_windows(lm.n_layers, [3], [int(c) for c in args.centers.split(",")])
    kw = dict(sites=args.sites.split(","), windows=windows, positions=[int(p) for p in args.positions.split(",")],
              kinds=args.kinds.split(","), batch_size=args.batch_size, progress=False)
    n_cond = len(kw["sites"]) * len(windows) * len(kw["positions"]) * len(kw["kinds"])
    print(f"{args.model}, {len(ds)} items, {n_cond} conditions; {machine()}")
    ablate(lm, ds.sample(2, seed=1), **{**kw, "positions": [-1]})  # warm-up
    out, secs = {}, {}
    for name, fast in (("full", False), ("fast", True)):
        t0 = time.perf_counter()
        out[name] = ablate(lm, ds, fast=fast, **kw)
        secs[name] = time.perf_counter() - t0
        print(f"{name}: {secs[name]:.1f} s, {out[name].info['forwards']} forwards, "
              f"{out[name].info['token_layers']} token-layers")
    diff = max(float(np.abs(a - b).max()) for a, b in zip(out["fast"].scores, out["full"].scores, strict=True))
    same = all((a.argmax(1) == b.argmax(1)).all() for a, b in zip(out["fast"].scores, out["full"].scores,
                                                                  strict=True))
    print(f"speed-up {secs['full'] / secs['fast']:.1f}x; max |fast - full| = {diff:.2e}, same argmax: {same}; "
          f"after: {machine()}")


if __name__ == "__main__":
    main()
