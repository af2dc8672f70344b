"""Benchmark: the streaming neuron pass against a plain extraction of the same neurons, and the floor.

Four runs over the same ``--items`` crowd-enVENT items, each in its own subprocess so peak RSS
is its own: ``floor`` (plain forwards with no hooks, last-position logits only), ``extract``
(the ``neurons`` site of every layer at the answer cue into a float16 activation store, the
"giant store" the streaming pass avoids), ``stream`` (:func:`emolens.neurons.neuron_pass`, which
runs the prompt template's shared tokens once: :mod:`emolens.engine.shared_prefix`) and
``stream_full`` (the same pass with full forwards, ``share_prefix=False``, the naive way).
Prints wall time, peak RSS and bytes on disk, and what a full store would need for the whole
corpus.

Why rounds: on a shared machine the load drifts between runs, so the three modes are run
``--rounds`` times in turn (floor, extract, stream, floor, ...) and each row records the load
average around it; the ratios use each mode's fastest round, which is the one least slowed by
other processes. Timings exclude model loading (each subprocess loads the model before its clock
starts).

    python bench/neurons_pass.py --model gemma-3-270m --items 48 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

MODES = ("floor", "extract", "stream", "stream_full")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_mode(mode: str, model: str, items: int, seed: int, batch_size: int) -> dict:
    import torch

    from emolens.activations.extract import extract
    from emolens.data.loading import load_dataset
    from emolens.engine.intervention import run_forward
    from emolens.inputs.batching import iter_batches
    from emolens.inputs.prompts import PromptSpec, build_prompts
    from emolens.model.loading import load_model
    from emolens.neurons import neuron_pass

    data = load_dataset("crowd-envent").sample(items, seed=seed)
    lm = load_model(model)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"mode": mode, "items": len(data), "rss_after_load_mb": round(rss_model, 1),
           "load_before": round(os.getloadavg()[0], 2)}
    start = time.perf_counter()
    if mode == "floor":
        prompts = build_prompts(data.texts, PromptSpec(), lm.tokenizer)
        with torch.no_grad():
            for batch in iter_batches(lm.tokenizer, prompts, batch_size, lm.device):
                run_forward(lm, batch, [], need_logits=True, logits_to_keep=1)  # no op: no early stop
    elif mode == "extract":
        with tempfile.TemporaryDirectory() as tmp:
            extract(lm, data, Path(tmp) / "store", sites="neurons", layers="all", positions=[-1], dtype="float16",
                    batch_size=batch_size, progress=False)
            out["disk_bytes"] = _dir_bytes(Path(tmp) / "store")
    else:
        result = neuron_pass(lm, data, batch_size=batch_size, progress=False, share_prefix=mode == "stream")
        out["shared_prefix_tokens"] = result.prefix_tokens
        result.moments.correlations()
        result.moments.partial_correlations()
        out["state_bytes"] = int(sum(a.nbytes for a in (result.moments.sx, result.moments.sxx, result.moments.sxy,
                                                         result.moments.gx)))
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["load_after"] = round(os.getloadavg()[0], 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["neurons"] = lm.n_layers * lm.sites.width("neurons")[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="times each mode runs, modes in turn")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.model, args.items, args.seed, args.batch_size)))
        return
    from machine import describe

    print(f"machine: {describe()}")
    rows = []
    for _ in range(args.rounds):
        for mode in MODES:
            proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--model", args.model, "--items",
                                   str(args.items), "--seed", str(args.seed), "--batch-size", str(args.batch_size)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    best = {mode: min((r for r in rows if r["mode"] == mode), key=lambda r: r["seconds"])
            for mode in MODES}
    floor = best["floor"]["seconds"]
    print(f"fastest of {args.rounds} round(s) per mode, {best['floor']['items']} items:")
    for mode, row in best.items():
        print(f"{mode:11s} {row['seconds']:8.1f}s  x{row['seconds'] / floor:5.2f} of floor  "
              f"x{row['seconds'] / best['extract']['seconds']:5.2f} of extract  "
              f"peak RSS {row['peak_rss_mb']:7.1f} MB (model loaded: {row['rss_after_load_mb']:7.1f})  "
              f"disk {row.get('disk_bytes', 0) / 1e6:7.1f} MB  state {row.get('state_bytes', 0) / 1e6:6.1f} MB  "
              f"load {row['load_before']:.1f}-{row['load_after']:.1f}")
    per_item = best["extract"].get("disk_bytes", 0) / max(best["extract"]["items"], 1)
    print(f"a float16 neuron store of all 6,600 crowd-enVENT items at one position: {per_item * 6600 / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
