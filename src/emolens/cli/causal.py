"""``emolens ablate | patch | knockout``: causal interventions over layer windows.

All three share item selection (``--items correct`` runs a readout first, as the paper filters to
correctly predicted items), window and position parsing, and output: the tables the study's stages
write (:func:`emolens.causal.common.write_outputs`: ``ablation.parquet``, ``patching.parquet`` or
``knockout.parquet``, tidy, one row per measurement; ``pairs.parquet`` for ``patch``; ``info.json``),
plus ``run.json`` (the command's arguments and timing) and heatmaps.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.errors import EmolensError


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise EmolensError(f"bad {what} {text!r}", f"give comma-separated integers for {what}") from exc


def _select_items(lm, dataset, items: str, spec, batch_size: int):
    from emolens.data.corpus import read_ids
    from emolens.readout import readout

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
    from emolens.engine.windows import Window, layer_windows

    if layers:
        return [Window.from_layers(_ints(layers, "layers"), lm.n_layers)]
    return layer_windows(lm.n_layers, _ints(span, "spans"), _ints(centers, "centres") if centers else None)


def _positions(text: str) -> list:
    from emolens.engine.positions import position_items

    return position_items(text)


def _heads(lm, text: str | None) -> list[int] | None:
    if not text:
        return None
    if text == "all":
        return list(range(lm.sites.n_heads))
    heads = _ints(text, "heads")
    bad = [h for h in heads if not 0 <= h < lm.sites.n_heads]
    if bad:
        raise EmolensError(f"head(s) {bad} out of range", f"use 0..{lm.sites.n_heads - 1}")
    return heads


def _heads_need_site(heads: str | None, sites: str) -> None:
    """``--heads`` selects heads of the ``heads`` site; with other sites it would be silently ignored."""
    if heads and "heads" not in [s.strip() for s in sites.split(",")]:
        raise EmolensError(f"--heads {heads} applies only to the heads site, not --sites {sites}",
                           "add heads to --sites (e.g. --sites heads --heads 0) or drop --heads")


def _sites(lm, text: str) -> list[str]:
    sites = [s.strip() for s in text.split(",") if s.strip()]
    for site in sites:
        lm.sites.width(site)
        if lm.sites.layer_count(site) == 1:
            raise EmolensError(f"site {site!r} has no layers to window over", "use resid, attn, mlp, *_post or heads")
    return sites


def _finish(result, out_dir: Path, args: dict, metrics: tuple[str, ...], seconds: float, lm) -> None:
    from emolens.causal.common import write_outputs
    from emolens.paths import dump_json
    from emolens.report.causal_figures import plot_all

    write_outputs(result, out_dir, result.frame["analysis"].iloc[0])
    plots = plot_all(result.frame, out_dir, metrics)
    dump_json(out_dir / "run.json", {**args, **result.info, "source_id": lm.source_id,
                                     "seconds": round(seconds, 2), "plots": [p.name for p in plots]})
    typer.echo(f"{len(result.frame)} rows, {result.info.get('forwards')} forward passes, {seconds:.1f}s; "
               f"results in {out_dir}")


def register(app: typer.Typer) -> None:
    common = {
        "model": typer.Option("gemma-3-270m", help="alias, hub id, local folder or .gguf file"),
        "data": typer.Option("crowd-envent", help="crowd-envent, stimuli, or a table path"),
        "items": typer.Option("correct", help="correct (readout first), all, or a correct_ids.txt file"),
        "limit": typer.Option(0, help="seeded label-stratified sample of N items first (0 = all)"),
        "span": typer.Option("3", help="window spans, comma-separated odd numbers"),
        "centers": typer.Option(None, help="window centres (default: all valid)"),
        "layers": typer.Option(None, help="one explicit layer list instead of windows, e.g. 8,9,10"),
        "seed": typer.Option(100, help="seed of --limit, pairs, noise and resampling"),
        "batch_size": typer.Option(16, help="prompts per forward pass"),
        "device": typer.Option("auto", help="auto, cpu, cuda ..."),
        "dtype": typer.Option("auto", help="auto, float32, bfloat16, float16"),
        "out": typer.Option(..., help="output folder"),
        "force": typer.Option(False, help="overwrite an existing result in --out"),
    }

    def _setup(model, data, items, limit, seed, batch_size, device, dtype, out, force, analysis, attn=None,
               corpus=None):
        from emolens.cli.readout import prepare_out_dir
        from emolens.inputs.prompts import PromptSpec
        from emolens.model.loading import load_model

        corpus = corpus or Corpus()
        dataset = corpus.load(data, limit, seed)
        out_dir = prepare_out_dir(out, force, marker=f"{analysis}.parquet")
        lm = load_model(model, dtype=dtype, device=device, attn_implementation=attn)
        spec = corpus.prompt_for(PromptSpec(), dataset)
        return out_dir, _select_items(lm, dataset, items, spec, batch_size), lm, spec

    @app.command()
    @corpus_options
    def ablate(model: str = common["model"], data: str = common["data"], items: str = common["items"],
               limit: int = common["limit"], sites: str = typer.Option("attn,mlp,resid", help="sites to ablate"),
               span: str = common["span"], centers: str = common["centers"], layers: str = common["layers"],
               positions: str = typer.Option("-1", help="positions, each its own condition: -1,-2, all, context"),
               kinds: str = typer.Option("zero,random", help="zero, mean, random, resample"),
               heads: str = typer.Option(None, help="with site heads: 'all' or head ids, each its own condition"),
               seed: int = common["seed"], batch_size: int = common["batch_size"], device: str = common["device"],
               dtype: str = common["dtype"], out: Path = common["out"], force: bool = common["force"],
               corpus: Corpus = None) -> None:
        """Zero / mean / norm-matched random / resample ablation at sites x windows x positions."""
        from emolens.causal.ablation import ablate as run

        _heads_need_site(heads, sites)
        out_dir, items_ds, lm, spec = _setup(model, data, items, limit, seed, batch_size, device, dtype, out, force,
                                             "ablation", corpus=corpus)
        start = time.perf_counter()
        result = run(lm, items_ds, _sites(lm, sites), _windows(lm, span, centers, layers), _positions(positions),
                     [k.strip() for k in kinds.split(",") if k.strip()], _heads(lm, heads), spec, batch_size, seed)
        _finish(result, out_dir, {"command": "ablate", "model": model, "data": data, "items": items, "seed": seed},
                ("agreement", "accuracy", "delta_logp_gold"), time.perf_counter() - start, lm)

    @app.command()
    @corpus_options
    def patch(model: str = common["model"], data: str = common["data"], items: str = common["items"],
              limit: int = common["limit"], sites: str = typer.Option("attn,mlp,resid", help="sites to patch"),
              span: str = common["span"], centers: str = common["centers"], layers: str = common["layers"],
              positions: str = typer.Option("-1", help="integer positions, each its own condition"),
              pairs: str = typer.Option("200", help="number of seeded pairs, or 'stimuli' (built-in minimal pairs)"),
              heads: str = typer.Option(None, help="with site heads: 'all' or head ids"),
              seed: int = common["seed"], batch_size: int = common["batch_size"], device: str = common["device"],
              dtype: str = common["dtype"], out: Path = common["out"], force: bool = common["force"],
               corpus: Corpus = None) -> None:
        """Activation patching source -> target on one fixed, saved pair set."""
        from emolens.causal.patching import patch as run
        from emolens.causal.patching import stimulus_pairs

        if pairs == "stimuli" and data != "stimuli":
            raise EmolensError("--pairs stimuli needs the built-in stimuli", "pass --data stimuli")
        _heads_need_site(heads, sites)
        out_dir, items_ds, lm, spec = _setup(model, data, items, limit, seed, batch_size, device, dtype, out, force,
                                             "patching", corpus=corpus)
        pos = _positions(positions)
        if any(not isinstance(p, int) for p in pos):
            raise EmolensError(f"cannot patch positions {positions!r}", "patch integer positions such as -1,-2")
        if pairs == "stimuli":
            pair_arg = stimulus_pairs(items_ds.ids)
        else:
            (pair_arg,) = _ints(pairs, "pairs") or [0]
        start = time.perf_counter()
        result = run(lm, items_ds, pair_arg, _sites(lm, sites), _windows(lm, span, centers, layers), pos,
                     _heads(lm, heads), spec, batch_size, seed)
        _finish(result, out_dir, {"command": "patch", "model": model, "data": data, "items": items, "seed": seed,
                                  "pairs": pairs}, ("transfer", "remained", "normalised_logit_diff"),
                time.perf_counter() - start, lm)

    @app.command()
    @corpus_options
    def knockout(model: str = common["model"], data: str = common["data"], items: str = common["items"],
                 limit: int = common["limit"], span: str = common["span"], centers: str = common["centers"],
                 layers: str = common["layers"],
                 keys: str = typer.Option("context,shots,instruction", help="key spans (or ints), each a condition"),
                 queries: str = typer.Option("-1", help="query positions: -1 (answer cue), a span name or ints"),
                 heads: str = typer.Option(None, help="'all' or head ids to knock out one head at a time"),
                 seed: int = common["seed"], batch_size: int = common["batch_size"], device: str = common["device"],
                 dtype: str = common["dtype"], out: Path = common["out"], force: bool = common["force"],
               corpus: Corpus = None) -> None:
        """Block attention from the query positions to each key span in each layer window."""
        from emolens.causal.knockout import knockout as run

        out_dir, items_ds, lm, spec = _setup(model, data, items, limit, seed, batch_size, device, dtype, out, force,
                                             "knockout", corpus=corpus)
        q = _positions(queries)
        query = q[0] if len(q) == 1 else q
        start = time.perf_counter()
        result = run(lm, items_ds, _positions(keys), query, _windows(lm, span, centers, layers), _heads(lm, heads),
                     spec, batch_size)
        _finish(result, out_dir, {"command": "knockout", "model": model, "data": data, "items": items},
                ("agreement", "accuracy", "delta_logp_gold"), time.perf_counter() - start, lm)
