"""Benchmark: what does capturing cost on top of a plain forward?

On one fixed batch it times (median of ``--repeats`` after a warm-up)

* ``plain``   -- ``model(..., logits_to_keep=1)``, no hooks;
* ``emolens`` -- the same forward with our captures of 3 sites x all layers x last 5 tokens,
  gathered inside the hooks and moved to CPU;
* ``naive``   -- ``output_hidden_states=True`` plus forward hooks that keep whole ``attn``/``mlp``
  outputs, sliced to the last 5 tokens and moved to CPU afterwards (what ``run_with_cache``
  style extraction does).

and prints a markdown table naming the machine. ``--shape llama-1b`` builds a random-initialised
Llama-3.2-1B-shaped model (no download) for GPU runs.

    PYTHONPATH=src python bench/extract.py --model gemma-3-270m --batch-size 16 --seq-len 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from emolens.engine.intervention import run_forward
from emolens.engine.ops import Capture
from emolens.model.sites import resolve_sites
from machine import describe as machine

SITES = ("attn", "mlp", "resid")
POSITIONS = [-1, -2, -3, -4, -5]


class _Bare:
    """Just enough of a LoadedModel (``model`` and ``sites``) for a randomly initialised model."""

    def __init__(self, model):
        self.model = model
        self.sites = resolve_sites(model)


def build(args):
    from emolens.model.loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.shape == "llama-1b":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                             intermediate_size=8192, vocab_size=128256, max_position_embeddings=4096,
                             tie_word_embeddings=True, head_dim=64)
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype).eval()
        return _Bare(model), "llama-1b shape (random init)", config.vocab_size
    from emolens.model.loading import load_model

    lm = load_model(args.model, dtype=args.dtype, device=device, validate=False)
    return lm, args.model, lm.model.config.get_text_config().vocab_size


def timed(fns: dict, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per call.

    Methods are interleaved in rotating order so load spikes on a shared machine hit them alike;
    process CPU time (all threads) is reported too because wall time on a shared CPU mostly
    measures the neighbours.
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    names = list(fns)
    for name in names:
        fns[name]()  # warm-up
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--shape", choices=["llama-1b"], default=None, help="random-init model of this shape")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()

    lm, name, vocab = build(args)
    model = lm.model
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (args.batch_size, args.seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    batch = {"input_ids": ids, "attention_mask": mask}
    reg = lm.sites
    ops = [Capture(s, layers="all", positions=POSITIONS, device="cpu") for s in SITES]

    @torch.no_grad()
    def plain():
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=1)

    def ours():
        out, run = run_forward(lm, batch, ops, need_logits=True, logits_to_keep=1)
        return out, run.captures

    @torch.no_grad()
    def naive():
        kept: dict[tuple[str, int], torch.Tensor] = {}
        handles = []
        for site in ("attn", "mlp"):
            for layer in range(reg.n_layers):
                mod = reg.point(site, layer).module
                handles.append(mod.register_forward_hook(
                    lambda m, a, o, key=(site, layer): kept.__setitem__(key, o if torch.is_tensor(o) else o[0])))
        try:
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        caps = {s: torch.stack([kept[(s, l)][:, -5:] for l in range(reg.n_layers)], 1).cpu() for s in ("attn", "mlp")}
        caps["resid"] = torch.stack(list(out.hidden_states[1:]), 1)[:, :, -5:].cpu()
        return out, caps

    # the engine and the naive path must agree before their times mean anything
    _, a = ours()
    _, b = naive()
    for s in ("attn", "mlp"):
        assert torch.equal(a[s], b[s].flip(2)), s  # ours is ordered -1..-5, the slice -5..-1
    assert torch.equal(a["resid"][:, :-1], b["resid"][:, :-1].flip(2))

    t = timed({"plain": plain, "ours": ours, "naive": naive}, device, args.repeats)
    n = args.batch_size
    print(f"\nmodel: {name}; {reg.n_layers} layers, d={reg.d_model}; dtype {next(model.parameters()).dtype}; "
          f"batch {n} x {args.seq_len} tokens; capture {len(SITES)} sites x {reg.n_layers} layers x "
          f"{len(POSITIONS)} tokens\nmachine: {machine(device)}; torch {torch.__version__}\n")
    load = f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"median of {args.repeats} interleaved runs after a warm-up{load}\n")
    print("| method | wall s / batch | prompts / s | x plain (wall) | CPU s / batch | x plain (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    (w0, c0) = t["plain"]
    for label, key in (("plain forward (logits_to_keep=1)", "plain"), ("emolens capture", "ours"),
                       ("naive (output_hidden_states + whole-output hooks)", "naive")):
        w, c = t[key]
        print(f"| {label} | {w:.4f} | {n / w:.1f} | {w / w0:.3f} | {c:.3f} | {c / max(c0, 1e-9):.3f} |")


if __name__ == "__main__":
    main()
