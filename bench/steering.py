"""Benchmark: a last-token steering sweep on full forwards vs the KV-prefix fast path.

Both paths score the same conditions (directions x windows x betas, with random and specificity
controls, plus the clean run per window) on the same items with
:func:`emolens.steering.sweep.steered_label_scores`:

* ``full`` -- every condition re-runs the whole prompt (items stacked ``--max-rows`` rows per
  forward), as before the fast path;
* ``prefix`` -- each item batch runs its first ``T - 1`` tokens once; every condition of every
  window then runs only the answer cue on a tiled copy of that cache, through every layer and
  the full output head (the engine before this change);
* ``fast`` -- the same, but each forward starts at the window's first layer (the clean hidden
  states below it are replayed) and scores the labels from their rows of the output head.

Directions are fitted once (on at least 26 items), outside the timing. Prints wall and CPU seconds
(CPU time is steadier on a shared machine), the ratio, the largest score
difference between the paths and their argmax agreement, and the machine with its load average
(before and after), as a markdown table.

    PYTHONPATH=src nice -n 10 python bench/steering.py --model gemma-3-270m --items 12
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from emolens.data.stimuli import load_stimuli
from emolens.engine.scoring import LabelScorer
from emolens.engine.windows import Window
from emolens.inputs.prompts import build_prompts
from emolens.labels import EMOTIONS
from emolens.model.loading import load_model
from emolens.steering.apply import mean_resid_norm
from emolens.steering.directions import capture_resid, compute_bank
from emolens.steering.sweep import build_conditions, steered_label_scores
from machine import describe as machine
from paths import use_paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--items", type=int, default=12, help="built-in single stimuli (label-stratified sample)")
    ap.add_argument("--directions", default="pleasantness+;other_responsblt+")
    ap.add_argument("--windows", default="4,9", help="window centres (0-indexed)")
    ap.add_argument("--span", type=int, default=3)
    ap.add_argument("--betas", default="0.1,0.2", help="relative strengths")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-rows", type=int, default=64, help="rows per full forward")
    ap.add_argument("--fast-rows", type=int, default=256, help="rows per fast-path forward")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default; 1 suits a busy "
                    "2-core VM, where a descheduled second thread stalls every small op at its barrier)")
    ap.add_argument("--no-full", action="store_true", help="skip the full-forward path (its row reads 0 s)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, dtype="float32", device="cpu")
    fit = load_stimuli("singles").sample(max(args.items, 26), seed=0)  # 2 per emotion: every direction defined
    data = fit.subset(np.arange(args.items))
    prompts = build_prompts(data.texts, None, lm.tokenizer)
    centres = [int(x) for x in args.windows.split(",")]
    layers = sorted({x for c in centres for x in Window(c, args.span).check(lm.n_layers).layers})
    X = capture_resid(lm, build_prompts(fit.texts, None, lm.tokenizer), layers, args.batch_size)
    bank = compute_bank(X, layers, fit)
    ref = {"last": mean_resid_norm(lm, prompts, layers, "last", args.batch_size)}
    conds = build_conditions(lm, bank, args.directions.split(";"), centres, args.span,
                                [float(b) for b in args.betas.split(",")], ["last"], "relative", ref,
                                n_random=args.n_random)
    reader = LabelScorer.build(lm.tokenizer, EMOTIONS, prompts[0].text, prompts[0].label_prefix)
    tokens = [len(lm.tokenizer(p.text)["input_ids"]) for p in prompts]

    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    steered_label_scores(lm, prompts[:2], reader, conds[:1], 2, fast=None)  # warm-up (allocator, kernels)
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
    fast_clean, fast = steered_label_scores(lm, prompts, reader, conds, args.batch_size, fast=None,
                                         fast_rows=args.fast_rows, info=info)
    t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    if args.no_full:  # the comparison of the two prefix paths only (full forwards take the longest)
        full_clean, full = fast_clean, fast
    else:
        full_clean, full = steered_label_scores(lm, prompts, reader, conds, args.batch_size, args.max_rows, fast=False)
    t_full, c_full = time.perf_counter() - t0, time.process_time() - c0
    assert info["fast_path"] == ["last"], info
    t0, c0 = time.perf_counter(), time.process_time()
    with use_paths("prefix"):  # the KV prefix only: every layer, the full output head (the engine before)
        steered_label_scores(lm, prompts, reader, conds, args.batch_size, fast=None, fast_rows=args.fast_rows)
    t_prefix, c_prefix = time.perf_counter() - t0, time.process_time() - c0

    pairs = list(zip(fast + list(fast_clean.values()), full + list(full_clean.values()), strict=True))
    diff = max(np.abs(a - b).max() for a, b in pairs)
    rel = max((np.abs(a - b) / np.abs(b).clip(1e-12)).max() for a, b in pairs)
    agree = np.mean([(a.argmax(1) == b.argmax(1)).mean() for a, b in zip(fast, full, strict=True)])
    rows = len(prompts) * (len(conds) + len(centres))
    print(f"### Steering sweep, {args.model}: {len(conds)} conditions + {len(centres)} clean runs x "
          f"{len(prompts)} items = {rows} scored rows\n")
    print(f"prompts of {min(tokens)}-{max(tokens)} tokens (mean {np.mean(tokens):.0f}); windows {centres} "
          f"(span {args.span}); label scoring {reader.describe()}\n")
    print("| path | wall s | CPU s | rows/s (wall) |\n|---|---|---|---|")
    print(f"| full forwards | {t_full:.1f} | {c_full:.1f} | {rows / t_full:.1f} |")
    print(f"| KV prefix only (every layer, full head) | {t_prefix:.1f} | {c_prefix:.1f} | {rows / t_prefix:.1f} |")
    print(f"| fast: KV prefix, from the window's first layer, label head rows | {t_fast:.1f} | {c_fast:.1f} | "
          f"{rows / t_fast:.1f} |")
    print(f"\nspeed-up {t_full / max(t_fast, 1e-9):.1f}x wall, {c_full / max(c_fast, 1e-9):.1f}x CPU time over full "
          "forwards; "
          f"{t_prefix / t_fast:.1f}x wall, {c_prefix / c_fast:.1f}x CPU over the prefix-only path; "
          "largest score difference "
          f"{diff:.1e} (log-prob; relative {rel:.1e}); argmax agreement {agree:.3f}\n")
    print(f"load average before: {load_before}\nmachine (after): {machine('cpu')}")


if __name__ == "__main__":
    main()
