"""``emolens neurons``: appraisal neurons of one model on one corpus, in one streaming pass.

Writes ``neurons.parquet`` (layer, neuron, appraisal, r, partial_r, q, rank, intervals),
``significant.csv`` (q < 0.05 counts per layer x appraisal), ``sparse.parquet`` (R² versus k),
``ablation.parquet`` (causal test vs matched random sets), ``pairs.parquet`` and
``pair_neurons.parquet`` (minimal-pair agreement), figures, ``items.txt`` (the ids of the items
that entered the statistics) and ``neurons_run.json`` with timings (not ``run.json``: that name
marks a study run folder).

Why ``items.txt``: a run on a sample must be reproducible by anyone. ``--limit N --seed S`` draws
the sample from the corpus itself (label-stratified, seeded), and ``items.txt`` records what it
drew (after a ``--budget-minutes`` stop: what was done), so a second model can be run on exactly
those items with ``--ids items.txt`` and a reader can check the sample without rerunning.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.cli.readout import prepare_out_dir
from emolens.errors import EmolensError
from emolens.labels import APPRAISAL_PRESETS
from emolens.paths import dump_json

MARKER = "neurons.parquet"


def _names(text: str, allowed, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise EmolensError(f"unknown {what} {bad or items}", f"use some of {list(allowed)}")
    return items


def _probe_layers(text: str, n_layers: int) -> list[int]:
    if text == "auto":  # four evenly spaced layers, the last included
        return sorted({round(i * (n_layers - 1) / 3) for i in range(4)})
    if text == "none":
        return []
    try:
        layers = sorted({int(x) % n_layers for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise EmolensError(f"bad --probe-layers {text!r}", "use 'auto', 'none' or e.g. 3,9,15") from exc
    return layers


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def neurons(
        out: Path = opt.out_option(),
        model: str = opt.model_option(),
        data: str = opt.data_option(help="crowd-envent, stimuli, or a table path with appraisal ratings"),
        appraisals: str = typer.Option("all", help="'all', 'paper' or comma-separated appraisal columns"),
        layers: str = typer.Option("all", help="layers of the neuron pass: 'all', '3', '2,5,7' or 'a:b'"),
        probe_layers: str = typer.Option("auto", help="layers for sparse probes: auto (4 spread), none, or ids"),
        ks: str = typer.Option("", help="k values of the R²-vs-k curve (default 1, 2, 4, ... < width)"),
        ablate: str = typer.Option("other_responsblt,self_responsblt,pleasantness",
                                   help="appraisals to ablate ('none' to skip the causal test)"),
        ablate_k: int = typer.Option(50, help="top neurons ablated per appraisal"),
        random_sets: int = typer.Option(19, help="matched random neuron sets per appraisal"),
        ablation_items: int = typer.Option(60, help="items of the target emotion per appraisal (seeded sample)"),
        pairs: bool = typer.Option(True, help="minimal-pair evidence on the built-in stimuli pairs"),
        ids: Path = typer.Option(None, help="a file of item ids (one per line): analyse only these items"),
        save_resid: bool = typer.Option(False, help="also save the residual stream at the cue (resid.npz) for "
                                                   "emolens crossmodel, captured in the same pass"),
        limit: int = opt.limit_option(help="seeded label-stratified sample of N items first (0 = all)"),
        budget_minutes: float = typer.Option(0.0, help="stop the pass before it would run past this many minutes "
                                                      "(items in seeded random blocks, so the items done are a "
                                                      "random subset; 0 = no limit)"),
        seed: int = opt.seed_option(help="seed of --limit, the probe split and random sets"),
        batch_size: int = opt.batch_size_option(),
        device: str = opt.device_option(),
        dtype: str = opt.dtype_option(),
        force: bool = opt.force_option(),
        corpus: Corpus = None,
    ) -> None:
        """Per-neuron correlations with appraisal ratings, sparse probes, minimal pairs and ablation."""
        # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
        from emolens.data.corpus import read_ids, write_ids
        from emolens.model.loading import load_model
        from emolens.neurons import neuron_pass, neuron_table, significant_counts
        from emolens.neurons.ablation import THEORY_TARGETS, ablation_table
        from emolens.neurons.pairs import pairs_table
        from emolens.neurons.sparse import sparse_table
        from emolens.report.neuron_figures import plot_neuron_figures

        out_dir = prepare_out_dir(out, force, marker=MARKER)
        dataset = corpus.load(data)
        names = list(APPRAISAL_PRESETS[appraisals]) if appraisals in APPRAISAL_PRESETS else \
            _names(appraisals, dataset.appraisal_names, "appraisal(s)")
        names = [a for a in names if a in dataset.appraisal_names]
        ablated = [] if ablate == "none" else _names(ablate, THEORY_TARGETS, "ablation appraisal(s)")
        missing = [a for a in ablated if a not in names]
        if missing:
            raise EmolensError(f"ablation appraisal(s) {missing} are not analysed", "add them to --appraisals")
        k_values = [int(k) for k in ks.split(",") if k.strip()] or None
        if ids is not None:
            dataset = dataset.subset(read_ids(ids), name=dataset.name)
        if limit:
            dataset = dataset.sample(limit, seed=seed)
        lm = load_model(model, dtype=dtype, device=device)
        batch_size = opt.resolve_batch_size(batch_size, lm)
        keep = _probe_layers(probe_layers, lm.n_layers)
        timings = {}
        start = time.perf_counter()
        result = neuron_pass(lm, dataset, names, layers=layers, keep_layers=keep, batch_size=batch_size,
                             extra_sites=("resid",) if save_resid else (),
                             budget_s=budget_minutes * 60 if budget_minutes > 0 else None, seed=seed)
        timings["neuron_pass_s"] = time.perf_counter() - start
        rss_after_pass = _peak_rss_mb()
        table = neuron_table(result)
        counts = significant_counts(table)
        timings["statistics_s"] = time.perf_counter() - start - timings["neuron_pass_s"]
        tic = time.perf_counter()
        sparse = sparse_table(result, k_values, seed=seed)
        timings["sparse_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        ablation = ablation_table(lm, dataset, result, table, ablated, k=ablate_k, n_sets=random_sets,
                                  max_items=ablation_items, batch_size=batch_size, seed=seed) if ablated else None
        timings["ablation_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        agreement = None
        if pairs:
            agreement, top_pairs = pairs_table(lm, table, result.layers, names, batch_size=batch_size, seed=seed)
            # with --data stimuli the corpus r comes from the pair members themselves: not independent evidence
            agreement["independent"] = dataset.name.startswith("stimuli") is False
            agreement.to_parquet(out_dir / "pairs.parquet", index=False)
            top_pairs.to_parquet(out_dir / "pair_neurons.parquet", index=False)
        timings["pairs_s"] = time.perf_counter() - tic
        if save_resid:
            import numpy as np

            np.savez(out_dir / "resid.npz", resid=result.extra["resid"], layers=np.asarray(result.layers),
                     ids=np.asarray([dataset.ids[i] for i in result.items]),
                     labels=np.asarray([result.emotions[g] for g in result.groups]), ratings=result.ratings,
                     appraisals=np.asarray(result.appraisals), n_layers=lm.n_layers, model=model)
        write_ids(out_dir / "items.txt", [dataset.ids[i] for i in result.items])
        sparse.to_parquet(out_dir / "sparse.parquet", index=False)
        if ablation is not None:
            ablation.to_parquet(out_dir / "ablation.parquet", index=False)
        counts.to_csv(out_dir / "significant.csv")
        plots = plot_neuron_figures(out_dir, counts, sparse, ablation)
        table.to_parquet(out_dir / MARKER, index=False)  # last: its presence marks a finished run
        seconds = time.perf_counter() - start
        dump_json(out_dir / "neurons_run.json", {
            "model": model, "source_id": lm.source_id, "data": data, "n_items": int(result.moments.n),
            "n_planned": int(result.n_planned), "stopped_early": result.stopped_early,
            "budget_minutes": budget_minutes,
            "n_skipped": result.n_skipped, "shared_prefix_tokens": result.prefix_tokens, "appraisals": names,
            "layers": result.layers, "probe_layers": keep,
            "neurons_per_layer": lm.sites.width("neurons")[0], "ablate": ablated, "ablate_k": ablate_k,
            "random_sets": random_sets, "seed": seed, "batch_size": batch_size, "device": str(lm.device),
            "seconds": round(seconds, 2), **{k: round(v, 2) for k, v in timings.items()},
            "peak_rss_mb_after_pass": round(rss_after_pass, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "limit": limit, "ids": str(ids) if ids is not None else None,
            "plots": [p.name for p in plots], "pairs": agreement is not None})
        n_sig = int((table["q"] < 0.05).sum())
        if result.stopped_early:
            typer.echo(f"time budget of {budget_minutes:g} min reached: {result.moments.n} of {result.n_planned} "
                       "items (a seeded random subset) entered every statistic")
        typer.echo(f"{result.moments.n} items x {len(result.layers)} layers x {lm.sites.width('neurons')[0]} neurons: "
                   f"{n_sig} neuron-appraisal pairs at q < 0.05; {seconds:.1f}s; results in {out_dir}")
