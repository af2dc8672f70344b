"""``emolens ablate | patch | knockout``: causal interventions over layer windows.

All three share item selection (``--items correct`` runs a readout first, as the paper filters to
correctly predicted items), window and position parsing, and output: the files the study's stages
write (:func:`emolens.report.analysis_files.write_causal`: ``ablation.parquet``, ``patching.parquet``
or ``knockout.parquet``, tidy, one row per measurement; ``pairs.parquet`` for ``patch``;
``info.json``; the heatmaps), plus ``run.json`` (the command's arguments and timing). This module
declares the commands; :mod:`emolens.cli.causal_run` (imported when a command runs) does the work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.errors import EmolensError


def _heads_need_site(heads: str | None, sites: str) -> None:
    """``--heads`` selects heads of the ``heads`` site; with other sites it would be silently ignored."""
    if heads and "heads" not in [s.strip() for s in sites.split(",")]:
        raise EmolensError(f"--heads {heads} applies only to the heads site, not --sites {sites}",
                           "add heads to --sites (e.g. --sites heads --heads 0) or drop --heads")


def register(app: typer.Typer) -> None:
    common = {
        "model": opt.model_option(),
        "data": opt.data_option(),
        "items": typer.Option("correct", help="correct (readout first), all, or a correct_ids.txt file"),
        "limit": opt.limit_option(help="seeded label-stratified sample of N items first (0 = all)"),
        "span": typer.Option("3", help="window spans, comma-separated odd numbers"),
        "centers": typer.Option(None, help="window centres (default: all valid)"),
        "layers": typer.Option(None, help="one explicit layer list instead of windows, e.g. 8,9,10"),
        "seed": opt.seed_option(100, help="seed of --limit, pairs, noise and resampling"),
        "batch_size": opt.batch_size_option(),
        "device": opt.device_option(),
        "dtype": opt.dtype_option(),
        "out": opt.out_option(),
        "force": opt.force_option(),
    }

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
        args = dict(locals())
        _heads_need_site(heads, sites)
        from emolens.cli import causal_run  # lazy: it loads torch and the model code, which `--help` must not

        causal_run.ablate(**args)

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
        args = dict(locals())
        if pairs == "stimuli" and data != "stimuli":
            raise EmolensError("--pairs stimuli needs the built-in stimuli", "pass --data stimuli")
        _heads_need_site(heads, sites)
        from emolens.cli import causal_run  # lazy: it loads torch and the model code, which `--help` must not

        causal_run.patch(**args)

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
        args = dict(locals())
        from emolens.cli import causal_run  # lazy: it loads torch and the model code, which `--help` must not

        causal_run.knockout(**args)
