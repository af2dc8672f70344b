"""The torch side of ``emolens ablate | patch | knockout``: load, select items, run, write.

:mod:`emolens.cli.causal` declares the commands and checks what needs no model; it imports this
module inside each command, so ``emolens --help`` never loads torch, and this module's imports
show what the causal commands depend on.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from emolens.causal.ablation import ablate as run_ablation
from emolens.causal.knockout import knockout as run_knockout
from emolens.causal.patching import patch as run_patching
from emolens.causal.patching import stimulus_pairs
from emolens.cli.corpus_options import Corpus
from emolens.cli.options import resolve_batch_size
from emolens.cli.readout import prepare_out_dir
from emolens.data.corpus import read_ids
from emolens.engine.positions import position_items
from emolens.engine.windows import Window, layer_windows
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec
from emolens.model.loading import load_model
from emolens.paths import dump_json
from emolens.readout import readout
from emolens.report.analysis_files import write_causal


def ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise EmolensError(f"bad {what} {text!r}", f"give comma-separated integers for {what}") from exc


def select_items(lm, dataset, items: str, spec, batch_size: int):
    if items == "all":
        return dataset
    if items == "correct":
        result = readout(lm, dataset, spec, batch_size=batch_size)
        ids = result.correct_ids
    else:
        wanted = set(read_ids(items))
        ids = [i for i in dataset.ids if i in wanted]
    if not ids:
        raise EmolensError("no items selected (no correct predictions or no id overlap)",
                       "use --items all, a larger --limit, or an id file matching --data")
    return dataset.subset(ids)


def _windows(lm, span: str, centers: str | None, layers: str | None):
    if layers:
        return [Window.from_layers(ints(layers, "layers"), lm.n_layers)]
    return layer_windows(lm.n_layers, ints(span, "spans"), ints(centers, "centres") if centers else None)


def _positions(text: str) -> list:
    return position_items(text)


def _heads(lm, text: str | None) -> list[int] | None:
    if not text:
        return None
    if text == "all":
        return list(range(lm.sites.n_heads))
    heads = ints(text, "heads")
    bad = [h for h in heads if not 0 <= h < lm.sites.n_heads]
    if bad:
        raise EmolensError(f"head(s) {bad} out of range", f"use 0..{lm.sites.n_heads - 1}")
    return heads


def _sites(lm, text: str) -> list[str]:
    sites = [s.strip() for s in text.split(",") if s.strip()]
    for site in sites:
        lm.sites.width(site)
        if lm.sites.layer_count(site) == 1:
            raise EmolensError(f"site {site!r} has no layers to window over", "use resid, attn, mlp, *_post or heads")
    return sites


def finish(result, out_dir: Path, args: dict, seconds: float, lm) -> None:
    """Tables and figures exactly as the study's stage writes them, plus this command's ``run.json``."""
    _, plots = write_causal(result, out_dir)
    dump_json(out_dir / "run.json", {**args, **result.info, "source_id": lm.source_id,
                                     "seconds": round(seconds, 2), "plots": [p.name for p in plots]})
    typer.echo(f"{len(result.frame)} rows, {result.info.get('forwards')} forward passes, {seconds:.1f}s; "
               f"results in {out_dir}")


def setup(model, data, items, limit, seed, batch_size, device, dtype, out, force, analysis, attn=None,
           corpus=None):
    corpus = corpus or Corpus()
    dataset = corpus.load(data, limit, seed)
    out_dir = prepare_out_dir(out, force, marker=f"{analysis}.parquet")
    lm = load_model(model, dtype=dtype, device=device, attn_implementation=attn)
    spec = corpus.prompt_for(PromptSpec(), dataset)
    batch_size = resolve_batch_size(batch_size, lm)
    return out_dir, select_items(lm, dataset, items, spec, batch_size), lm, spec, batch_size



def ablate(*, model, data, items, limit, sites, span, centers, layers, positions, kinds, heads, seed, batch_size,
           device, dtype, out, force, corpus) -> None:
    out_dir, items_ds, lm, spec, batch_size = setup(model, data, items, limit, seed, batch_size, device,
                                                    dtype, out, force, "ablation", corpus=corpus)
    start = time.perf_counter()
    result = run_ablation(lm, items_ds, _sites(lm, sites), _windows(lm, span, centers, layers), _positions(positions),
                          [k.strip() for k in kinds.split(",") if k.strip()], _heads(lm, heads), spec, batch_size,
                          seed)
    finish(result, out_dir, {"command": "ablate", "model": model, "data": data, "items": items, "seed": seed},
           time.perf_counter() - start, lm)


def patch(*, model, data, items, limit, sites, span, centers, layers, positions, pairs, heads, seed, batch_size,
          device, dtype, out, force, corpus) -> None:
    out_dir, items_ds, lm, spec, batch_size = setup(model, data, items, limit, seed, batch_size, device,
                                                    dtype, out, force, "patching", corpus=corpus)
    pos = _positions(positions)
    if any(not isinstance(p, int) for p in pos):
        raise EmolensError(f"cannot patch positions {positions!r}", "patch integer positions such as -1,-2")
    if pairs == "stimuli":
        pair_arg = stimulus_pairs(items_ds.ids)
    else:
        (pair_arg,) = ints(pairs, "pairs") or [0]
    start = time.perf_counter()
    result = run_patching(lm, items_ds, pair_arg, _sites(lm, sites), _windows(lm, span, centers, layers), pos,
                          _heads(lm, heads), spec, batch_size, seed)
    finish(result, out_dir, {"command": "patch", "model": model, "data": data, "items": items, "seed": seed,
                             "pairs": pairs}, time.perf_counter() - start, lm)


def knockout(*, model, data, items, limit, span, centers, layers, keys, queries, heads, seed, batch_size, device,
             dtype, out, force, corpus) -> None:
    out_dir, items_ds, lm, spec, batch_size = setup(model, data, items, limit, seed, batch_size, device,
                                                    dtype, out, force, "knockout", corpus=corpus)
    q = _positions(queries)
    query = q[0] if len(q) == 1 else q
    start = time.perf_counter()
    result = run_knockout(lm, items_ds, _positions(keys), query, _windows(lm, span, centers, layers),
                          _heads(lm, heads), spec, batch_size)
    finish(result, out_dir, {"command": "knockout", "model": model, "data": data, "items": items},
           time.perf_counter() - start, lm)
