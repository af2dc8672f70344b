"""Benchmark: wall time of the `paper` study preset, stage by stage, for one model.

Runs ``emolens.study.runner.run_study`` on the ``paper`` preset (readout, extract, probe, ablate,
patch, knockout, steer, robustness) in a fresh run folder and prints a markdown table of the
wall time of every stage (and of the model load inside the first stage that needed the model),
plus the machine line of ``bench/machine.py``. Subset flags shrink the protocol for a CPU:
``--limit N`` items (a seeded label-stratified sample), ``--layer-step K`` (every K-th layer
extracted and probed, every K-th window centre in the causal, steering and robustness stages),
``--max-items`` (items of the causal, steering and robustness stages), ``--probes logistic``
(no MLP probe, the costliest part of the probe stage on a CPU), ``--max-iter 100`` (the paper's
own L-BFGS cap instead of the preset's 1000: raw activations of few items can need all 1000),
``--pairs`` (patching pairs, also per prompt variant; the preset's 200 are drawn however few
items there are), ``--n-random`` / ``--n-emotion-null`` / ``--generations`` (the steer stage's
controls and generations), ``--steer-betas`` and ``--stages``.

``--paths naive,fast`` runs the study once per execution-path mode (``bench/paths.py``), each in
its own fresh output root so nothing is reused, in ONE process, and prints each mode's table and
then a before/after table (wall, forwards, token-layers per stage, the plain-forward floor).

``--model tiny-8b-shape`` builds a random-initialised Llama with the shape of Llama-3.1-8B
(hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336) from a config, with no
download; its tokenizer is gemma-3-270m's (real subword lengths) when installed, else the tiny
test tokenizer, and its vocabulary is that tokenizer's. Random weights read (nearly) every
item as one label, so the paper's ``items: correct`` would leave ~1/13 of them: pass
``--items all`` to time the analyses on every item (the load of a model that reads most
items correctly). ``--tiny`` shrinks the shape 64-fold in width and to 6 layers, to check the
path on a CPU.

    python bench/end_to_end.py --limit 26 --items all --layer-step 9 --max-items 4 --pairs 8 --probes logistic \
        --max-iter 100                                                             # gemma-3-270m subset, CPU
    python bench/end_to_end.py --model tiny-8b-shape --tiny --limit 26 --max-items 4 --stages readout,extract
    python bench/end_to_end.py --model tiny-8b-shape --items all --dtype bfloat16   # full corpus, one GPU
    python bench/end_to_end.py --paths naive,fast --limit 260 --layer-step 9 --max-items 8 --pairs 8 \
        --probes logistic --max-iter 100 --n-random 4 --n-emotion-null 2 --generations 1 --steer-betas 2  # before/after
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import describe as machine
from paths import use_paths

#: Llama-3.1-8B's shape (vocabulary: the tokenizer's)
SHAPES = {"tiny-8b-shape": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                num_key_value_heads=8, intermediate_size=14336, head_dim=128,
                                rope_theta=500000.0, max_position_embeddings=8192)}


def shrink(shape: dict) -> dict:
    """Same family and head ratios, 64x narrower, 6 layers (room for span-5 windows): a CPU check of the 8B path."""
    return {**shape, "hidden_size": shape["hidden_size"] // 64, "num_hidden_layers": 6,
            "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": shape["intermediate_size"] // 64,
            "head_dim": shape["hidden_size"] // 64 // 4}


def shape_tokenizer():
    """gemma-3-270m's tokenizer when its package is installed (real token counts), else the tiny one.

    ``EMOLENS_SHAPE_TOKENIZER`` names a folder holding a copy of it (``tokenizer.json`` and
    ``tokenizer_config.json``): a GPU host without the model package carries only those files.
    """
    from emolens.model.loading import alias_status

    carried = os.environ.get("EMOLENS_SHAPE_TOKENIZER")
    if carried:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(carried), f"gemma-3-270m (copy in {carried})"

    if alias_status("gemma-3-270m").installed:
        from transformers import AutoTokenizer

        from emolens.model.loading import _resolve_weights

        return AutoTokenizer.from_pretrained(_resolve_weights("gemma-3-270m", None)[0]), "gemma-3-270m"
    from emolens.model.tiny import tiny_tokenizer

    return tiny_tokenizer(), "tiny test tokenizer"


def install_random_shape(name: str, shape: dict, seed: int = 0) -> dict:
    """Make the pipeline build ``name`` as a random-initialised Llama of ``shape`` instead of loading it."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from emolens.model.loading import LoadedModel, resolve_device, resolve_dtype
    from emolens.model.sites import resolve_sites, validate_sites
    from emolens.study import model_handle, runner

    tokenizer, tok_name = shape_tokenizer()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, **shape)
    ident = f"random:{name}:{json.dumps(config.to_diff_dict(), sort_keys=True)}:seed{seed}"
    info = {"tokenizer": tok_name, "vocab": len(tokenizer), "shape": shape}

    class RandomShapeHandle(model_handle.ModelHandle):
        @property
        def identity(self) -> str:
            return ident if self.spec == name else super().identity

        @property
        def lm(self):
            if self.spec != name:
                return super().lm
            if self._lm is None:
                start = time.perf_counter()
                device = resolve_device(self.cfg.device)
                dtype = resolve_dtype(self.cfg.dtype, device)
                torch.manual_seed(seed)
                with torch.device(device):
                    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
                model.eval().requires_grad_(False)
                sites = resolve_sites(model)
                enc = tokenizer(["I saw mouldy food.", "My first child was born."], return_tensors="pt", padding=True)
                validate_sites(model, sites, enc["input_ids"].to(device), enc["attention_mask"].to(device))
                info["params"] = sum(p.numel() for p in model.parameters())
                self._lm = LoadedModel(model=model, tokenizer=tokenizer, sites=sites, spec=name, source_id=ident,
                                       load_seconds=time.perf_counter() - start, info=dict(info))
            return self._lm

    runner.ModelHandle = RandomShapeHandle  # the local backend builds its handles there
    return info


def n_layers_of(spec: str, shape: dict | None) -> int:
    if shape is not None:
        return shape["num_hidden_layers"]
    if spec.startswith("tiny:"):
        return 3
    from transformers import AutoConfig

    from emolens.model.loading import _resolve_weights

    config = AutoConfig.from_pretrained(_resolve_weights(spec, None)[0])
    return config.get_text_config().num_hidden_layers


def crowd_envent_here() -> str | None:
    """The crowd-enVENT copy this checkout can use offline (env, or shared/ beside or inside it)."""
    if os.environ.get("EMOLENS_CROWD_ENVENT"):
        return os.environ["EMOLENS_CROWD_ENVENT"]
    root = Path(__file__).resolve().parents[1]
    for base in (root.parent / "shared", root / "shared"):
        folder = base / "data" / "crowd-enVENT"
        if (folder / "enVent_gen_Data.csv").exists():
            return str(folder)
    return None


def study_config(args, n_layers: int):
    from emolens.study.config import config_from_dict

    over: dict = {"base": "paper", "name": "bench-e2e", "models": [args.model], "output": args.out,
                  "device": args.device, "batch_size": args.batch_size}
    if args.dtype != "preset":
        over["dtype"] = args.dtype
    over["dataset"] = {"spec": args.data, "limit": args.limit, "seed": 0, "fallback": "stimuli"}
    if args.items:
        over["items"] = args.items
    if args.layer_step > 1:
        over["layers"] = list(range(0, n_layers, args.layer_step))
        for section in ("ablate", "patch", "knockout", "steer", "robustness"):
            over[section] = {"stride": args.layer_step}
    if args.max_items:
        for section in ("ablate", "patch", "knockout", "steer"):
            over.setdefault(section, {})["max_items"] = args.max_items
        over.setdefault("robustness", {})["limit"] = args.max_items
    if args.probes:
        over.setdefault("probe", {})["probes"] = [x.strip() for x in args.probes.split(",") if x.strip()]
    if args.pairs:
        over.setdefault("patch", {})["pairs"] = args.pairs
        over.setdefault("robustness", {})["pairs"] = args.pairs  # the per-prompt patching re-runs
    if args.max_iter:
        over.setdefault("probe", {})["max_iter"] = args.max_iter
    if getattr(args, "steer_betas", None):
        over.setdefault("steer", {})["betas"] = [float(b) for b in args.steer_betas.split(",") if b.strip()]
    for key in ("n_random", "n_emotion_null", "generations"):
        if getattr(args, key, None) is not None:  # bench/gpu_protocol.py's args have none of these
            over.setdefault("steer", {})[key] = getattr(args, key)
    if args.stages:
        over["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    return config_from_dict(over, "bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m", help=f"any emolens model spec, or one of {list(SHAPES)}")
    ap.add_argument("--tiny", action="store_true", help="shrink a random shape to check it on a CPU")
    ap.add_argument("--data", default=None, help="dataset spec (default: crowd-enVENT copy here, else stimuli)")
    ap.add_argument("--limit", type=int, default=0, help="items (seeded stratified sample; 0 = all)")
    ap.add_argument("--layer-step", type=int, default=1, help="every K-th layer / window centre")
    ap.add_argument("--max-items", type=int, default=0, help="items of ablate/patch/knockout/steer/robustness")
    ap.add_argument("--items", choices=["correct", "all"], default=None, help="override the preset's 'correct'")
    ap.add_argument("--stages", default="", help="comma list (default: all of the paper preset)")
    ap.add_argument("--probes", default="", help="probe kinds (default: the preset's logistic,mlp; the MLP "
                                                 "dominates the probe stage on a CPU)")
    ap.add_argument("--pairs", type=int, default=0, help="patching pairs (preset: 200, drawn with replacement "
                                                          "from the analysed items)")
    ap.add_argument("--max-iter", type=int, default=0, help="logistic L-BFGS cap (preset: 1000, to convergence; "
                                                             "the paper's sklearn default: 100)")
    ap.add_argument("--n-random", type=int, default=None, help="steer: random directions (preset: 99)")
    ap.add_argument("--n-emotion-null", type=int, default=None, help="steer: within-emotion refits (preset: 99)")
    ap.add_argument("--generations", type=int, default=None, help="steer: generations per item (preset: 8)")
    ap.add_argument("--steer-betas", default="", help="steer: comma list of betas (preset: 1,2,4)")
    ap.add_argument("--paths", default="fast", help="comma list of execution-path modes run in turn in this "
                                                    "process, e.g. 'naive,fast' (bench/paths.py)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, "
                                                     "or 'preset' (the paper preset's float32)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None, help="output root (default: a fresh temporary folder)")
    args = ap.parse_args()

    if args.data is None:
        found = crowd_envent_here()
        if found:
            os.environ["EMOLENS_CROWD_ENVENT"] = found
            args.data = "crowd-envent"
        else:
            args.data = "stimuli"
    shape = None
    if args.model in SHAPES:
        shape = shrink(SHAPES[args.model]) if args.tiny else SHAPES[args.model]
        shape_info = install_random_shape(args.model, shape)
    elif args.tiny:
        ap.error("--tiny applies to a random shape (--model tiny-8b-shape)")
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="emolens-e2e-")
        args.out = tmp.name
    root = args.out
    n_layers = n_layers_of(args.model, shape)
    modes = [m.strip() for m in args.paths.split(",") if m.strip()]
    tables = {}
    for mode in modes:
        args.out = str(Path(root) / mode) if len(modes) > 1 else root  # a fresh root per mode: nothing reused
        with use_paths(mode):
            tables[mode] = run_mode(args, study_config(args, n_layers), shape, shape_info if shape else None, mode)
    if len(modes) > 1:
        compare(tables, modes)
    if tmp is not None:
        tmp.cleanup()


def run_mode(args, cfg, shape, shape_info, mode: str) -> dict:
    """One study under one execution-path mode; prints its stage table, returns its rows."""
    from emolens.model.loading import resolve_device, resolve_dtype
    from emolens.report.html import write_report
    from emolens.report.runs import read_stage
    from emolens.study import runner

    load = os.getloadavg()
    start = time.perf_counter()
    result = runner.run_study(cfg, progress=False, echo=lambda line: print(line, file=sys.stderr), report=False)
    study_wall = time.perf_counter() - start
    t0 = time.perf_counter()
    write_report(result.run_dir)
    report_wall = time.perf_counter() - t0

    meta = json.loads((result.run_dir / "run.json").read_text())
    slug = next(iter(meta["models"]))
    model_meta = meta["models"][slug]
    device = resolve_device(cfg.device)
    what = args.model + (" (--tiny)" if args.tiny else "")
    if shape is not None:
        what += (f": random-init Llama, hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
                 f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, intermediate "
                 f"{shape['intermediate_size']}, vocab {shape_info['vocab']} ({shape_info['tokenizer']} tokenizer)")
        if "params" in shape_info:
            what += f", {shape_info['params'] / 1e9:.2f}B parameters"
    print(f"\n### paths: {mode}\n")
    print(f"**{what}**, dtype {str(resolve_dtype(cfg.dtype, device)).replace('torch.', '')} on {device}; "
          f"data: {result.data.how}; items: {cfg.items}; layers: "
          f"{cfg.layers if cfg.layers == 'all' else f'every {args.layer_step}th'}; positions {cfg.positions}; "
          f"probes {cfg.probe.probes} (max_iter {cfg.probe.max_iter}); "
          f"max items (causal/steer/robustness): {args.max_items or 'all'}; patching pairs {cfg.patch.pairs}; "
          f"steer: {cfg.steer.n_random} random, {cfg.steer.n_emotion_null} within-emotion refits, "
          f"{cfg.steer.generations} generations, betas {cfg.steer.betas}\n")
    print("| stage | status | wall s | of which model load s | forwards | token-layers | floor s | ratio | summary |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    rows = {}
    for o in result.outcomes:
        rec = read_stage(result.run_dir / o.model / o.stage) or {}
        loaded = rec.get("model_load_seconds", 0.0) if o.status == "done" else 0.0
        work = rec.get("work") or {}  # the stage's model work and its plain-forward floor (stage.json)
        rows[o.stage] = {"wall": o.seconds, "status": o.status, **work}
        cells = [f"{work[k]:,}" if k in work else "" for k in ("forwards", "token_layers")]
        cells += [f"{work[k]:.3g}" if work.get(k) is not None else "" for k in ("floor_s", "ratio")]
        summ = rec.get("summary", {})
        keys = [k for k in ("n", "n_items", "n_correct", "rows", "accuracy", "best_accuracy", "variants") if k in summ]
        text = ", ".join(f"{k} {summ[k]:.3g}" if isinstance(summ[k], float) else f"{k} {summ[k]}" for k in keys)
        if o.status not in ("done", "cached", "reused"):
            text = o.note[:80]
        print(f"| {o.stage} | {o.status} | {o.seconds:.1f} | {loaded:.1f} | {' | '.join(cells)} | {text} |")
    print(f"| report | done | {report_wall:.1f} | | | | | | |")
    print(f"| **total** | | **{study_wall + report_wall:.1f}** | | | | | | data load and bookkeeping included |\n")
    if device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB\n")
    rate = next((r["floor_rate"] for r in rows.values() if r.get("floor_rate")), None)
    if rate:
        print(f"plain-forward floor: {rate:,.0f} token-layers/s (one batch, measured after the first stage)")
    print(f"machine: {machine(device)}; load average at start {' '.join(f'{x:.1f}' for x in load)}, at end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if model_meta.get("load_seconds") is not None:
        print(f"model load: {model_meta['load_seconds']:.1f} s (counted inside the first stage that needed it)")
    return {"rows": rows, "wall": study_wall + report_wall}


def compare(tables: dict, modes: list[str]) -> None:
    """Before/after: each stage's wall, forwards and token-layers in every mode, and the speed-up."""
    first, last = modes[0], modes[-1]
    print(f"\n### before/after: {first} -> {last}\n")
    head = " | ".join(f"{m} {what}" for what in ("wall s", "forwards", "token-layers") for m in modes)
    print(f"| stage | {head} | {last} floor s | {last} ratio | speed-up |")
    print("|---|" + "---:|" * (3 * len(modes) + 3))

    def cell(row, key, fmt):
        return format(row[key], fmt) if row.get(key) is not None else ""

    for stage in tables[last]["rows"]:
        rows = [tables[m]["rows"].get(stage, {}) for m in modes]
        walls = [cell(r, "wall", ".1f") for r in rows]
        fwd = [cell(r, "forwards", ",") for r in rows]
        tl = [cell(r, "token_layers", ",") for r in rows]
        a, b = rows[0].get("wall"), rows[-1].get("wall")
        speed = f"{a / b:.2f}x" if a and b else ""
        print(f"| {stage} | {' | '.join(walls + fwd + tl)} | {cell(rows[-1], 'floor_s', '.3g')} | "
              f"{cell(rows[-1], 'ratio', '.3g')} | {speed} |")
    walls = [tables[m]["wall"] for m in modes]
    print(f"| **total** | {' | '.join(f'**{w:.1f}**' for w in walls)} |" + " |" * (2 * len(modes) + 2)
          + f" {walls[0] / walls[-1]:.2f}x |")


if __name__ == "__main__":
    main()
