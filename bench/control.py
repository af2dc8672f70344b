"""Benchmark: where the control study's time goes, each part against its naive version and the floor.

``emolens control`` spends its time in four parts. Each is timed here on the same sensitive
messages, against the approach a first implementation takes where one exists, and against the
physical floor: one plain batched forward over the same tokens, with no hooks.

* ``generate`` -- greedy replies, clean and steered (``generate_steered``, batches of
  ``--batch-size``), against one message at a time (naive). Floor: one teacher-forced forward over
  every prompt + reply, i.e. the tokens without the decode loop.
* ``fluency`` -- the unsteered model's log-probability of every reply (clean and steered) given its
  prompt (``continuation_logprob``: each shared prompt runs once, the rest in right-padded
  batches), against one forward per reply (naive: the code before this bench). Floor: one forward
  per prompt plus one per reply's tokens, batched -- which the shared path is.
* ``judges`` -- NRC, VADER, the safety lists and the unsteered model's readout of every reply.
  Floor for the readout: one forward over the same readout prompts, last logits only.
* ``capability`` -- perplexity on the neutral texts and readout accuracy on labelled items under a
  steering vector, against the same passes unsteered (the hooks' overhead; unsteered is the floor).

Every timed part also checks its answer against the naive one (the largest difference), so a
speed-up never hides a change in results. Prints a markdown table with wall and CPU seconds and
the machine with its load average before and after.

    PYTHONPATH=src nice -n 10 python bench/control.py --model gemma-3-270m --messages 16
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from emolens.control.capability import steered_perplexity, steered_readout_accuracy
from emolens.control.judges import make_judges
from emolens.control.prompts import reply_prompts, resolve_form
from emolens.control.study import steering_vectors
from emolens.data.sensitive import load_neutral_text, load_sensitive
from emolens.data.stimuli import load_stimuli
from emolens.engine.windows import Window
from emolens.inputs.prompts import Prompt, PromptSpec, build_prompts
from emolens.model.loading import load_model
from emolens.steering.apply import mean_resid_norm, scaled
from emolens.steering.generation import continuation_logprob, generate_steered
from machine import describe as machine


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


@torch.no_grad()
def plain_forward(lm, texts: list[str], batch_size: int, last_only: bool = False) -> None:
    """The floor: one unhooked forward over ``texts``, right-padded batches (no decode loop, no scoring)."""
    tok = lm.tokenizer
    side = tok.padding_side
    tok.padding_side = "right"
    try:
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s:s + batch_size], return_tensors="pt", padding=True).to(lm.device)
            lm.model(**enc, logits_to_keep=1 if last_only else 0)
    finally:
        tok.padding_side = side


@torch.no_grad()
def naive_logprob(lm, prompts: list[str], replies: list[str]) -> np.ndarray:
    """One forward per (prompt, reply): the fluency pass before it was batched."""
    out = np.full(len(prompts), np.nan)
    for i, (p, c) in enumerate(zip(prompts, replies, strict=True)):
        p_ids = lm.tokenizer(p, return_tensors="pt")["input_ids"]
        c_ids = lm.tokenizer(c, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if c_ids.shape[1]:
            logits = lm.model(input_ids=torch.cat([p_ids, c_ids], 1).to(lm.device)).logits[0, p_ids.shape[1] - 1:-1]
            out[i] = float(torch.log_softmax(logits.float(), -1).gather(-1, c_ids[0, :, None].to(lm.device)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--messages", type=int, default=16, help="sensitive messages (emotion-stratified sample)")
    ap.add_argument("--form", default="auto", help="auto, raw or chat")
    ap.add_argument("--direction", default="pleasantness+")
    ap.add_argument("--beta", type=float, default=0.05, help="relative strength of the steered condition")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--retention-items", type=int, default=26, help="labelled stimuli for the readout check")
    ap.add_argument("--parts", default="generate,fluency,judges,capability")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())

    lm = load_model(args.model, dtype="float32", device="cpu")
    data = load_sensitive().sample(args.messages, seed=0)
    form = resolve_form(args.form, lm.tokenizer)
    prompts = [p.text for p in reply_prompts(data.texts, form, lm.tokenizer)]
    layers = list(Window(lm.n_layers // 2, 3).check(lm.n_layers).layers)
    fit = load_stimuli("all").sample(65, seed=0)
    _, unit = steering_vectors(lm, fit, [args.direction], layers)[args.direction]
    ref = mean_resid_norm(lm, [Prompt(t, {}) for t in prompts], layers, "generated")
    vec = scaled(unit, args.beta, "relative", ref)
    rows = []

    def add(part, variant, result, wall, cpu, check=""):
        rows.append((part, variant, wall, cpu, check))
        print(f"  {part:10s} {variant:34s} {wall:8.2f} s wall {cpu:8.2f} s CPU {check}", flush=True)
        return result

    n, k = len(prompts), args.max_new_tokens
    clean, *t = timed(lambda: generate_steered(lm, prompts, max_new_tokens=k, batch_size=args.batch_size))
    add("generate", f"clean, batches of {args.batch_size}", clean, *t)
    steered, *t = timed(lambda: generate_steered(lm, prompts, layers, vec, "generated", k, args.batch_size))
    add("generate", f"steered {args.direction}@{args.beta:g}", steered, *t)
    if "generate" in parts:
        one, *t = timed(lambda: generate_steered(lm, prompts, max_new_tokens=k, batch_size=1))
        same = sum(a == b for a, b in zip(one, clean, strict=True))
        add("generate", "clean, one message at a time (naive)", one, *t, f"{same}/{n} replies identical")
        _, *t = timed(lambda: plain_forward(lm, [p + c for p, c in zip(prompts, clean, strict=True)],
                                            args.batch_size))
        add("generate", "floor: one forward, prompt + reply", None, *t)

    all_prompts, all_replies = prompts + prompts, clean + steered
    if "fluency" in parts:
        ours, *t = timed(lambda: continuation_logprob(lm, all_prompts, all_replies, args.batch_size))
        add("fluency", f"ours ({2 * n} replies, shared prompts)", ours, *t)
        naive, *t = timed(lambda: naive_logprob(lm, all_prompts, all_replies))
        diff = np.nanmax(np.abs(ours - naive))
        add("fluency", "one forward per reply (naive)", naive, *t, f"max |diff| {diff:.1e}")
        _, *t = timed(lambda: plain_forward(lm, prompts + all_replies, args.batch_size))
        add("fluency", "floor: prompts once + replies", None, *t)

    if "judges" in parts:
        for judge in make_judges(["nrc", "vader", "safety", "readout"], lm):
            _, *t = timed(lambda judge=judge: judge.score(all_replies))
            add("judges", judge.name, None, *t)
        texts = [p.text for p in build_prompts([r.strip() or "..." for r in all_replies], PromptSpec(),
                                               lm.tokenizer)]
        _, *t = timed(lambda: plain_forward(lm, texts, 16, last_only=True))
        add("judges", "floor: readout prompts, one forward", None, *t)

    if "capability" in parts:
        neutral = load_neutral_text()
        ret = load_stimuli("singles").sample(args.retention_items, seed=1)
        (ppl0, _), *t = timed(lambda: steered_perplexity(lm, neutral, batch_size=args.batch_size))
        add("capability", "perplexity, unsteered (floor)", None, *t)
        (ppl, _), *t = timed(lambda: steered_perplexity(lm, neutral, layers, vec, args.batch_size))
        add("capability", "perplexity, steered", None, *t, f"ratio {ppl / ppl0:.2f}")
        acc0, *t = timed(lambda: steered_readout_accuracy(lm, ret.texts, ret.labels))
        add("capability", "readout accuracy, unsteered (floor)", None, *t)
        acc, *t = timed(lambda: steered_readout_accuracy(lm, ret.texts, ret.labels, layers, vec))
        add("capability", "readout accuracy, steered", None, *t, f"{acc.mean():.2f} vs {acc0.mean():.2f}")

    print(f"\n{args.model} ({form} form), {n} messages, {k} new tokens, layers {layers}")
    print(f"machine: {machine('cpu')}; load average before {load_before}\n")
    print("| part | variant | wall s | CPU s | check |\n|---|---|---|---|---|")
    for part, variant, wall, cpu, check in rows:
        print(f"| {part} | {variant} | {wall:.2f} | {cpu:.2f} | {check} |")


if __name__ == "__main__":
    main()
