"""One prepared command: every paper-preset stage on an 8B-shaped model, with work and throughput ratios.

Runs the ``paper`` study preset (readout, extract, probe, ablate, patch, knockout, steer,
robustness) through ``emolens.study.runner.run_study`` on a random-initialised Llama with
Llama-3.1-8B's shape (``bench/end_to_end.py``'s ``tiny-8b-shape``: gemma-3-270m's tokenizer,
bf16 on CUDA), on a subset sized to fit <= 8 minutes on one H100. Before the study it measures
the plain-forward floor -- token-layers per second of plain batched bf16 forwards over the
study's prompts -- and while it runs it counts each stage's model work with
:mod:`emolens.engine.accounting` (forwards, tokens, token-layers). It prints the stage table
(wall, work, floor time of that work, ratio = floor / wall) and projects the full protocol
(6,600 items; causal and steering stages on 3,300, a paper model's correct subset) two ways:
measured wall scaled by items (and layer windows), and the work scaled the same way at the
floor rate -- the time the protocol would take at ratio 1. The work is scaled without the subset's
padding (a few items in one batch pad far more than the corpus in length-sorted batches): padded
calls count their real positions plus the padding the full corpus has when batched as the stages
batch it (:func:`full_padding`).

On a GPU host with only torch and transformers (no network): bring the other wheels in a
folder that travels with the working tree, then install from it::

    # here (network):  pip download -d wheels --only-binary=:all: --python-version 3.11 \\
    #                      --platform manylinux2014_x86_64 pydantic pydantic-core typer pyyaml pyarrow pandas \\
    #                      scipy scikit-learn safetensors tqdm matplotlib
    # there:           pip install --no-index --find-links wheels --no-deps -e . && \\
    #                  EMOLENS_CROWD_ENVENT=../shared/data/crowd-enVENT python bench/gpu_protocol.py

(``pip download`` needs the packages' dependency closure; ``--no-deps`` there keeps pip from
asking the network for what the host already has.) ``--tiny`` shrinks the shape 64-fold in width
and to 6 layers and the subset to a few items, to check the whole path on a CPU::

    python bench/gpu_protocol.py --tiny                 # CPU check of the path, ~1-3 min
    python bench/gpu_protocol.py                        # one H100: the subset below, <= 8 min
    python bench/gpu_protocol.py --model gemma-3-270m --limit 260 --max-items 16   # a real small model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emolens.engine.accounting import Work  # noqa: E402
from end_to_end import SHAPES, crowd_envent_here, install_random_shape, n_layers_of, shrink, study_config  # noqa: E402
from machine import describe as machine  # noqa: E402
from paths import use_paths  # noqa: E402

FULL_ITEMS, FULL_CAUSAL_ITEMS, FULL_PAIRS = 6600, 3300, 200  # the paper preset's corpus, correct subset, pairs
CAUSAL = ("ablate", "patch", "knockout", "steer", "robustness")
STEER_HOLDOUT = 0.5  # the paper preset's steer.holdout: the steered items are this share of the analysed ones
LAYER_SWEEPS = (*CAUSAL, "probe")


def stage_registry() -> dict:
    """The pipeline's stage table (``study.stages`` since the split; ``study.pipeline`` before it)."""
    try:
        from emolens.study.stages import STAGES
    except ImportError:  # older layout
        from emolens.study.pipeline import STAGES
    return STAGES


def model_handle_class():
    """The handle class ``install_random_shape`` put in place (``study.runner`` since the split)."""
    try:
        from emolens.study import (
            model_handle,  # noqa: F401  (exists since the split)
            runner,
        )

        return runner.ModelHandle
    except ImportError:  # older layout
        from emolens.study import pipeline

        return pipeline.ModelHandle


def instrument(rate_prompts: int, batch_size: int) -> SimpleNamespace:
    """Count every stage's model work, and measure the plain-forward floor once the model exists."""
    from emolens.engine.accounting import Work, WorkCounter, plain_forward_rate
    from emolens.inputs.prompts import PromptSpec, build_prompts
    state = SimpleNamespace(counter=None, rate=None, work={}, status={}, lm=None, floor_seconds=0.0, current=None)
    handle_cls = model_handle_class()
    plain_lm = handle_cls.lm

    def lm(self):
        got = plain_lm.fget(self)
        if state.counter is None:
            from emolens.data.loading import load_dataset

            state.lm = got
            began = time.perf_counter()
            texts = load_dataset("stimuli").texts[:rate_prompts]
            prompts = build_prompts(texts, PromptSpec(), got.tokenizer)
            state.rate = plain_forward_rate(got, prompts, batch_size)  # before any stage work is counted
            state.counter = WorkCounter.attach(got)
            state.floor_seconds = time.perf_counter() - began  # not the stage's work: taken off its wall
        return got

    handle_cls.lm = property(lm)
    registry = stage_registry()  # imports every stage module, so the writers they bound can be found
    time_writers(state)
    instrument_parts(state)
    count_laid_out_padding(state)
    for name, sdef in registry.items():
        if sdef.run is None:
            continue

        def wrapped(ctx, _run=sdef.run, _name=name):
            start = state.counter.snapshot() if state.counter else Work(seconds=time.perf_counter())
            measured_floor_here = state.counter is None
            state.current = _name
            status = "interrupted"
            try:
                out = _run(ctx)
                status = "done"
                return out
            except Exception:
                traceback.print_exc()  # the study records only the message: a device run needs the line
                raise
            finally:
                if state.counter is not None:  # attached in this stage if the model loaded here: from zero
                    work = state.counter.snapshot() - start
                    work.seconds -= state.floor_seconds if measured_floor_here else 0.0
                    state.work[_name] = work
                    state.status[_name] = status
                    # one line per stage as it ends: a run cut off by its time limit still says what it did
                    print(f"[stage] {_name} {status}: {work.seconds:.1f} s, {work.forwards:,} forwards, "
                          f"{work.token_layers:,} token-layers", file=sys.stderr, flush=True)

        sdef.run = wrapped
    return state


#: Parts of a stage whose work scales unlike the stage's: (module, attribute) -> (part name, or None for
#: the function's ``analysis`` argument; how it scales: ``items`` = corpus items, ``causal`` = the
#: causal items, ``steered`` = the held-out share of them, ``pairs`` = patching pairs, ``fixed`` = not
#: at all, ``inherit`` = as the part or stage around it; whether it also scales with the layer step).
#: The robustness stage's readouts run the whole corpus once per variant and its probe extractions the
#: whole forward, neither sweeps windows; the selected steering design's test runs one setting; the
#: sample generations are a fixed number (``steer.generations``) at one setting; the runner's clean
#: passes (prefix caches, clean scores, clean hidden states) run once per batch of items, whatever the
#: number of windows; the tokens every prompt of a run starts with (the template, its shots) run once
#: per runner (:meth:`~emolens.engine.runner.ConditionRunner.share_prefix`), whatever the number of
#: items, so scaling them by the items would price a long few-shot template thousands of times over; the
#: label head's check (one forward, the first stacked step a steering runner makes) is made once per
#: runner however many items and windows. A steering residual capture (``store``) exists here only
#: because the bench keeps every ``--layer-step``-th layer, so the extract stage's store lacks the
#: steering windows' other layers; the paper preset stores every layer and reads these residuals there
#: (:func:`~emolens.steering.directions.store_acts`, as the quick study's steer stage does), so the
#: projection prices such a capture at zero (and as its stage when every layer is kept). Work is counted
#: exclusively: a part inside another (a clean prefix inside robustness's ablation) is taken out of the
#: outer one.
PARTS = {
    ("emolens.study.stages.robustness", "_robustness_readout"): ("readout", "variants", False),
    ("emolens.study.stages.robustness", "_robustness_probe"): ("probe", "causal", False),
    ("emolens.study.stages.robustness", "_robustness_causal"): (None, None, True),
    ("emolens.steering.run", "_selected_test"): ("selected test", "steered", False),
    ("emolens.steering.run", "steered_generations"): ("generations", "fixed", False),
    ("emolens.engine.runner", "ConditionRunner.prefixes"): ("clean passes", "inherit", False),
    ("emolens.engine.runner", "ConditionRunner.clean"): ("clean passes", "inherit", False),
    ("emolens.engine.runner", "ConditionRunner.clean_hidden"): ("clean passes", "inherit", False),
    ("emolens.engine.runner", "ConditionRunner.share_prefix"): ("shared prefix", "fixed", False),
    ("emolens.engine.runner", "ConditionRunner._check_label_head"): ("label head check", "fixed", False),
    ("emolens.steering.run", "capture_resid"): ("residual capture", "store", False),
    ("emolens.steering.sweep", "capture_resid"): ("residual capture", "store", False),
}


def instrument_parts(state: SimpleNamespace) -> None:
    """Count the work of each :data:`PARTS` function apart from the rest of its stage, exclusively
    (``state.parts[(stage, part)] = (work, units, windows)``), so the projection scales each part by
    what it grows with. A part inside another inherits its units (``inherit``) and its work is taken
    out of the outer part's."""
    import importlib

    from emolens.engine.accounting import Work

    state.parts, stack = {}, []

    def snap() -> Work:
        return state.counter.snapshot() if state.counter else Work()

    for (module_name, attr), (part, units, windows) in PARTS.items():
        owner = importlib.import_module(module_name)
        *path, leaf = attr.split(".")
        for name in path:
            owner = getattr(owner, name)
        original = getattr(owner, leaf)

        def counted(*args, _fn=original, _part=part, _units=units, _windows=windows, **kwargs):
            name = _part or str(args[1])  # _robustness_causal(ctx, analysis, ...): ablate or patch
            how = _units or ("pairs" if name == "patch" else "causal")
            if how == "inherit":
                how = stack[-1]["how"] if stack else "stage"
            frame = {"how": how, "start": snap(), "inner": Work()}
            stack.append(frame)
            try:
                return _fn(*args, **kwargs)
            finally:
                stack.pop()
                end = snap()
                total = end - frame["start"]
                if stack:
                    stack[-1]["inner"] = stack[-1]["inner"] + total
                if state.counter is not None:
                    key = (state.current, name)
                    own = total - frame["inner"]
                    old = state.parts.get((key, how), (Work(), how, _windows))[0]
                    state.parts[(key, how)] = (old + own, how, _windows)

        setattr(owner, leaf, counted)


def count_laid_out_padding(state: SimpleNamespace) -> None:
    """Count as padding the shared tokens a laid-out clean prefix re-runs because its row is padded.

    :func:`~emolens.engine.shared_prefix.laid_out_prefix` keeps a batch's column layout: the shared
    tokens' cache fills columns ``0..P-1``, so a row with ``s`` left pads has its last ``min(s, P)``
    shared tokens at columns ``P`` and after, and runs them again. That work exists only because
    the row is padded (in a 16-item subset, most of its clean passes' work; in the full corpus's
    length-sorted batches, as little as its padding), so the projection treats it as padding."""
    import emolens.engine.runner as runner_module

    original = runner_module.laid_out_prefix

    def counted(model, batch, prefix, m: int = 1):
        cache = original(model, batch, prefix, m)
        if cache is not None and state.counter is not None:
            B, T = batch.input_ids.shape
            P, layers = prefix.length, state.n_layers
            starts = T - batch.attention_mask.sum(1)  # each row's left pads
            redo = int(starts.clamp(max=P).sum())  # real positions, apart from the pads the hook counted
            total = state.counter.total
            if redo > 0:
                if not bool((batch.attention_mask[:, P:T - m] == 0).any()):  # the hook saw no padding
                    total.ragged_token_layers += B * (T - m - P) * layers
                total.pad_token_layers += redo * layers
        return cache

    runner_module.laid_out_prefix = counted


def time_writers(state: SimpleNamespace) -> None:
    """Time the table-and-figure writers apart from the rest of each stage.

    Writing figures is CPU work whose size follows the settings searched (windows, sites, positions),
    not the items, so the projection scales it by the layer step only. The writers are replaced
    wherever a module bound them by name (``from ... import write_causal``).
    """
    from emolens.report import analysis_files

    state.writing = {}
    originals = {name: getattr(analysis_files, name) for name in ("write_causal", "write_steering")}

    def timed(fn):
        def run(*args, **kwargs):
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                state.writing[state.current] = state.writing.get(state.current, 0.0) + time.perf_counter() - began
        return run

    wrapped = {id(fn): timed(fn) for fn in originals.values()}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("emolens"):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in wrapped and value in originals.values():
                setattr(module, attr, wrapped[id(value)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-8b-shape", help=f"one of {list(SHAPES)} or any emolens model spec")
    ap.add_argument("--tiny", action="store_true", help="64x narrower, 6 layers, a few items: a CPU check")
    ap.add_argument("--layers", type=int, default=None,
                    help="with --tiny: this many layers (32 = the 8B's depth: its forwards and token-layers are the "
                         "8B's exactly, since they depend on depth, tokens and conditions, not on width)")
    ap.add_argument("--limit", type=int, default=None, help="items (default 650; --tiny 26)")
    ap.add_argument("--max-items", type=int, default=None, help="items of causal/steer/robustness (default 32; "
                                                                 "--tiny 4)")
    ap.add_argument("--layer-step", type=int, default=None, help="every K-th layer / window centre (default 4; "
                                                                  "--tiny 1)")
    ap.add_argument("--pairs", type=int, default=None, help="patching pairs (default 32; --tiny 8)")
    ap.add_argument("--probes", default="logistic,mlp")
    ap.add_argument("--max-iter", type=int, default=0, help="logistic cap (default: the preset's 1000)")
    ap.add_argument("--stages", default="")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto = bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default 64 on CUDA, 16 on CPU")
    ap.add_argument("--json", default=None, help="also write the table and projection here")
    ap.add_argument("--paths", default="fast", help="comma list of execution paths to run in turn, e.g. "
                                                    "'naive,fast' for before/after in one run (bench/paths.py)")
    args = ap.parse_args()
    tiny = args.tiny
    args.limit = args.limit if args.limit is not None else (26 if tiny else 650)
    args.max_items = args.max_items if args.max_items is not None else (4 if tiny else 32)
    args.layer_step = args.layer_step if args.layer_step is not None else (1 if tiny else 4)
    args.pairs = args.pairs if args.pairs is not None else (8 if tiny else 32)
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda") or args.device.startswith("cuda")
    args.batch_size = args.batch_size or (64 if cuda else 16)
    args.items, args.out, args.data = "all", None, None  # random weights read ~1/13 correctly: analyse all

    found = crowd_envent_here()
    if found:
        os.environ["EMOLENS_CROWD_ENVENT"] = found
    args.data = "crowd-envent" if found else "stimuli"
    shape = None
    if args.model in SHAPES:
        shape = shrink(SHAPES[args.model]) if tiny else SHAPES[args.model]
        if tiny and args.layers:
            shape = {**shape, "num_hidden_layers": args.layers}
        install_random_shape(args.model, shape)
    state = instrument(rate_prompts=4 * args.batch_size, batch_size=args.batch_size)
    n_layers = n_layers_of(args.model, shape)
    state.n_layers = n_layers
    out = {}
    for mode in [m.strip() for m in args.paths.split(",") if m.strip()]:
        state.work, state.status, state.writing = {}, {}, {}
        state.counter = None  # each mode's study builds its own model: count that one, floor measured anew
        with use_paths(mode):
            out[mode] = run_once(args, state, n_layers, shape, tiny, mode)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


def run_once(args, state, n_layers: int, shape, tiny: bool, mode: str) -> dict:
    """One study under one execution-path mode (a fresh output root: nothing reused), and its table."""
    tmp = tempfile.TemporaryDirectory(prefix=f"emolens-gpu-{mode}-")
    args.out = tmp.name
    cfg = study_config(args, n_layers)

    from emolens.study import runner

    start = time.perf_counter()
    try:
        result = runner.run_study(cfg, progress=False, echo=lambda line: print(line, file=sys.stderr), report=False)
        outcomes = [(o.stage, o.status, state.work[o.stage].seconds if o.stage in state.work else o.seconds)
                    for o in result.outcomes]
    except KeyboardInterrupt:  # the part's time limit: tabulate the stages that ran, the cut one marked
        print("interrupted: the stages below ran before the time limit", file=sys.stderr)
        outcomes = [(name, state.status[name], work.seconds) for name, work in state.work.items()]
    wall = time.perf_counter() - start
    rate = state.rate["token_layers_per_s"] if state.rate else None
    n_items = args.limit
    chunks = target_chunks(cfg, args, state.lm)
    padding = full_padding(cfg, getattr(state.lm, "tokenizer", None), args.batch_size, chunks)
    rows = []
    for stage, status, seconds in outcomes:
        o = SimpleNamespace(stage=stage, status=status, seconds=seconds)
        work = state.work.get(o.stage)
        # items scale every stage; the layer step only what sweeps layers (a readout or an extraction
        # runs the whole forward whichever layers it keeps)
        # patching runs pairs, not items: the paper preset's 200 over the pairs run here
        per = {"pairs": FULL_PAIRS / max(1, args.pairs), "fixed": 1.0,
               "causal": FULL_CAUSAL_ITEMS / max(1, min(args.max_items, n_items)),
               "items": FULL_ITEMS / n_items,
               # the robustness variants read every item of their (--max-items) subset, each in extraction chunks
               "variants": FULL_ITEMS / max(1, min(args.max_items, n_items)),
               # the paper preset's extract and probe stages take the correct items (this bench: all of its items)
               "correct": FULL_CAUSAL_ITEMS / n_items,
               # steering measures the held-out share of the analysed items (the rest fits the directions)
               "steered": FULL_CAUSAL_ITEMS * STEER_HOLDOUT / max(1, min(args.max_items, n_items * STEER_HOLDOUT))}
        population = "pairs" if o.stage == "patch" else "steered" if o.stage == "steer" \
            else "causal" if o.stage in CAUSAL else "correct" if o.stage in ("extract", "probe") else "items"
        units = per[population]
        scale = units * (args.layer_step if o.stage in LAYER_SWEEPS else 1)
        # parts that grow otherwise (PARTS) are taken out of the stage's work and scaled by their own
        # units; a part that grows as its stage ("stage") has the stage's population
        per["stage"] = units
        per["store"] = 0.0 if args.layer_step > 1 else units  # read from the full preset's store (PARTS)
        parts = {f"{name} ({how})" if how != "stage" else name:
                 (w, per[how] * (args.layer_step if windows else 1), population if how in ("stage", "store") else how)
                 for ((stage, name), how), (w, _, windows) in getattr(state, "parts", {}).items()
                 if stage == o.stage}

        def projected(w: Work, sc: float, how: str) -> float:
            """Full-protocol token-layers of ``w``: a fixed part as it ran; a scaled one times its
            scale, its padded calls' real work with the padding its population has at full scale."""
            if how == "fixed":
                return w.token_layers
            if sc == 0:
                return 0.0
            real_padded = w.ragged_token_layers - w.pad_token_layers
            return (w.token_layers - w.ragged_token_layers + real_padded * (1 + padding[how])) * sc

        row = {"stage": o.stage, "status": o.status, "wall_s": o.seconds, "scale": scale,
               "parts": {name: {"forwards": w.forwards, "token_layers": w.token_layers, "seconds": w.seconds,
                                "pad_token_layers": w.pad_token_layers, "scale": sc,
                                "projected_token_layers": projected(w, sc, how)}
                         for name, (w, sc, how) in parts.items()}}
        if work is not None:
            row.update(forwards=work.forwards, tokens=work.tokens, token_layers=work.token_layers,
                       pad_token_layers=work.pad_token_layers)
            if rate:
                row["floor_s"] = work.token_layers / rate
                row["ratio"] = row["floor_s"] / o.seconds if o.seconds > 0 else math.nan
        row["write_s"] = state.writing.get(o.stage, 0.0)
        rest_s = o.seconds - row["write_s"] - sum(w.seconds for w, _, _ in parts.values())
        row["projected_wall_s"] = rest_s * scale + row["write_s"] * args.layer_step + \
            sum(w.seconds * sc for w, sc, _ in parts.values())
        if rate and work is not None:
            rest = work - sum((w for w, _, _ in parts.values()), Work())
            row["projected_token_layers"] = projected(rest, scale, population) + \
                sum(p["projected_token_layers"] for p in row["parts"].values())
            row["projected_floor_s"] = row["projected_token_layers"] / rate
        else:
            row["projected_floor_s"] = math.nan
        rows.append(row)
    device = str(state.lm.device) if state.lm is not None else args.device
    dtype = str(state.lm.dtype).replace("torch.", "") if state.lm is not None else "?"
    print(f"\n### paths: {mode}\n")
    print(f"**{args.model}{' (--tiny)' if tiny else ''}** on {device}, {dtype}; {n_items} items "
          f"({args.data}); causal/steer/robustness on {args.max_items}; every {args.layer_step}th layer; "
          f"{args.pairs} patching pairs; probes {args.probes}; batch {args.batch_size}")
    if state.rate:
        print(f"plain-forward floor: {rate:,.0f} token-layers/s ({state.rate['forwards']} forwards, "
              f"{state.rate['token_layers']:,} token-layers in {state.rate['seconds']:.2f} s)\n")
    from emolens.engine.memory import stack_budget

    rows_cap, cache_cap = stack_budget(device)
    print(f"condition stacking: up to {rows_cap} rows and {cache_cap / 2 ** 30:.2f} GiB of tiled cache a forward "
          f"(engine.memory.stack_budget on {device})\n")
    print("padding at full scale (length-sorted batches of {}; extraction chunks of {} items, {} for the "
          "robustness variants): {}\n".format(args.batch_size, chunks["correct"], chunks["variants"],
                                              ", ".join(f"{k} {v:.1%}" for k, v in padding.items() if k != "fixed")))
    print("| stage | status | wall s | of it writing s | forwards | token-layers | of them padding | floor s | ratio | "
          "projected s | projected token-layers | at floor s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def num(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r and not (isinstance(r[key], float) and math.isnan(r[key])) else ""

    for r in rows:
        print(f"| {r['stage']} | {r['status']} | {r['wall_s']:.1f} | {r['write_s']:.1f} | {num(r, 'forwards', ',')} | "
              f"{num(r, 'token_layers', ',')} | {num(r, 'pad_token_layers', ',')} | {num(r, 'floor_s', '.2f')} | "
              f"{num(r, 'ratio', '.3f')} | {r['projected_wall_s']:.0f} | {num(r, 'projected_token_layers', ',.0f')} | "
              f"{num(r, 'projected_floor_s', '.0f')} |")
        for name, part in r["parts"].items():
            print(f"| ↳ {name} | | {part['seconds']:.1f} | | {part['forwards']:,} | {part['token_layers']:,} | "
                  f"{part['pad_token_layers']:,} | | | x{part['scale']:.1f} | {part['projected_token_layers']:,.0f} | "
                  f"{part['projected_token_layers'] / rate if rate else math.nan:.0f} |")
    cut = [r["stage"] for r in rows if r["status"] != "done"]
    rows_done = [r for r in rows if r["status"] == "done"]
    total = sum(r["projected_wall_s"] for r in rows_done)
    floor = sum(r["projected_floor_s"] for r in rows_done if not math.isnan(r["projected_floor_s"]))
    if cut:
        print(f"not in the totals (did not finish: a lower bound only): {', '.join(cut)}")
    projected_tl = sum(r.get("projected_token_layers", 0) for r in rows_done)
    print(f"| **total** | | {wall:.1f} | | | | | | | **{total:.0f}** | **{projected_tl:,.0f}** | **{floor:.0f}** |\n")
    print(f"projected full protocol ({FULL_ITEMS} items, causal/steer on {FULL_CAUSAL_ITEMS}): "
          f"{total / 60:.1f} min at the measured stage speeds, {floor / 60:.1f} min if every stage ran at the "
          "plain-forward floor (the probe stage has no model work: its floor column is empty)")
    if device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"machine: {machine(device)}")
    tmp.cleanup()
    return {"rows": rows, "rate": state.rate, "wall_s": wall, "args": dict(vars(args))}


def target_chunks(cfg, args, lm) -> dict[str, int]:
    """The extraction chunk (items) of the projected model's stores with the preset's ``chunk_size``
    (:func:`~emolens.activations.extract.chunk_items`, as the extract stage sizes them): the
    extract stage's (every study position) and a robustness variant's (the answer cue only). The
    bench's own model is 64 times narrower with ``--tiny``, so its chunks would hold every item; the
    projection batches as the full-size model's stores do (the 8B shape in bfloat16)."""
    from emolens.activations.extract import chunk_items

    if args.model in SHAPES:
        width, layers, dtype = SHAPES[args.model]["hidden_size"], args.layers or \
            SHAPES[args.model]["num_hidden_layers"], "bfloat16"
    else:
        width, layers, dtype = lm.sites.d_model, lm.n_layers, str(lm.dtype).replace("torch.", "")
    return {name: chunk_items(cfg.extract.chunk_size,
                              {s: ((FULL_ITEMS, layers, positions, width), dtype) for s in cfg.sites}, args.batch_size)
            for name, positions in (("correct", len(cfg.positions)), ("variants", 1))}


def full_padding(cfg, tokenizer, batch_size: int, chunks: dict[str, int], seed: int = 0) -> dict[str, float]:
    """The padding share (pad positions per real position) of each population's own-token passes at
    full scale, batched as the stages batch them (:func:`~emolens.inputs.batching.batch_plan` at
    ``batch_size``): the whole corpus packed in one plan (``items``: the readout stage), the corpus
    in packed extraction chunks of ``chunks["variants"]`` (the robustness variants' readouts), a
    random half (a paper model's correct items) in packed chunks of ``chunks["correct"]`` (the
    extract stage) and unpacked in one plan (``causal``), a quarter (``steered``) and the patching
    pairs' items; ``fixed`` parts do not scale.

    Why simulate: a subset of 16 items is one batch padded to its longest prompt, so its measured
    token-layers are mostly padding a 6,600-item run in length-sorted batches does not pay. The
    projection scales the subset's real work and adds this padding back. Own tokens are what
    follows the prompts' shared prefix (the template, its shots), the same for every variant.
    Without the corpus here (the built-in stimuli) the share is 0."""
    import numpy as np

    from emolens.data.loading import load_dataset
    from emolens.inputs.batching import batch_plan, shared_prefix_length
    from emolens.inputs.prompts import build_prompts

    none = {k: 0.0 for k in ("items", "variants", "correct", "causal", "steered", "pairs", "fixed")}
    if tokenizer is None:
        return none
    try:
        dataset = load_dataset(cfg.dataset.spec)
    except Exception as exc:  # noqa: BLE001 - the projection then says it has no padding estimate
        print(f"padding estimate unavailable ({exc}); projected without it", file=sys.stderr)
        return none
    ids = tokenizer([p.text for p in build_prompts(dataset.texts, cfg.prompt_spec())])["input_ids"]
    own = np.array([len(t) for t in ids]) - shared_prefix_length(ids)
    rng = np.random.default_rng(seed)
    out = {"fixed": 0.0}
    plans = {"items": (FULL_ITEMS, None, True), "variants": (FULL_ITEMS, chunks["variants"], True),
             "correct": (FULL_CAUSAL_ITEMS, chunks["correct"], True), "causal": (FULL_CAUSAL_ITEMS, None, False),
             "steered": (int(FULL_CAUSAL_ITEMS * STEER_HOLDOUT), None, False), "pairs": (2 * FULL_PAIRS, None, False)}
    for how, (n, chunk, pack) in plans.items():
        pick = rng.permutation(len(own))[:n]
        chunk = chunk or len(pick)
        pads = 0
        for c in range(0, len(pick), chunk):
            block = own[pick[c:c + chunk]]
            for rows in batch_plan(block, batch_size, pack=pack):  # as the stages do
                pads += len(rows) * int(block[rows].max()) - int(block[rows].sum())
        out[how] = pads / max(1, int(own[pick].sum()))
    return out


if __name__ == "__main__":
    main()
