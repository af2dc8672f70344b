"""``emolens probe``: linear (or MLP) probes, controls and directions over an activation store."""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.cli.readout import prepare_out_dir
from emolens.errors import EmolensError


def parse_alpha(text: str) -> float | str:
    """``--alpha``: a ridge penalty >= 0, or ``gcv`` (leave-one-out choice per target, as RidgeCV)."""
    if text.strip().lower() == "gcv":
        return "gcv"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise EmolensError(f"bad --alpha {text!r}", "pass a number >= 0 or gcv")
    return value


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def probe(
        acts: Path = typer.Option(..., help="activation store folder written by `emolens extract`"),
        out: Path = opt.out_option(),
        task: str = typer.Option("all", help="all, emotion, appraisal, first-word, or a comma list"),
        protocol: str = typer.Option("paper", help="paper (80/20 split, seed 42) or cv (stratified k-fold)"),
        items: str = typer.Option("correct", help="correct (the store's readout), all, or a file of item ids"),
        data: str = opt.data_option(None, help="the --data the store was extracted from (checked by "
                                               "fingerprint); needed unless it is built in"),
        probe: str = typer.Option("logistic", help="logistic or mlp (emotion and first-word tasks)"),
        standardize: bool = typer.Option(False, help="standardise features (training statistics only)"),
        shuffled: bool = typer.Option(True, help="also fit shuffled-label controls"),
        appraisals: str = typer.Option("paper", help="paper (20), all (21) or a comma list"),
        k: int = typer.Option(5, help="folds for --protocol cv"),
        seed: int = opt.seed_option(42, help="split, bootstrap and control seed"),
        n_boot: int = typer.Option(200, help="bootstrap resamples for the 95% intervals"),
        c: float = typer.Option(1.0, "--C", help="inverse L2 strength of the logistic probes"),
        alpha: str = typer.Option("5", help="ridge penalty of the appraisal probes: a number >= 0, or gcv "
                                            "(leave-one-out choice per target)"),
        max_iter: int = typer.Option(1000, help="L-BFGS iteration cap of the logistic probes (the paper's "
                                                 "sklearn default is 100)"),
        positions: str = typer.Option("", help="probe only these stored positions, e.g. '-1' or '-1,-2' "
                                               "(default: all int positions)"),
        directions: bool = typer.Option(True, help="write directions.safetensors"),
        device: str = opt.device_option(help="where the probes run: auto (CUDA when available), cpu, cuda, cuda:1 ..."),
        slice_chunk: int = typer.Option(0, help="slices moved to the device at a time (0: all of a site)"),
        force: bool = opt.force_option(),
        corpus: Corpus = None,
    ) -> None:
        """Probe every layer x site x position for emotions, appraisals and the first-word control."""
        import time

        from emolens.activations.store import ActivationStore
        from emolens.probes.probing import (
            PROBES,
            PROTOCOLS,
            TABLE,
            dataset_for_store,
            parse_tasks,
            run_probing,
            summary_lines,
            write_outputs,
        )
        from emolens.report.probe_figures import write_probe_figures

        tasks = parse_tasks(task)  # cheap checks first
        if probe not in PROBES:
            raise EmolensError(f"unknown probe {probe!r}", f"use one of {list(PROBES)}")
        if protocol not in PROTOCOLS:
            raise EmolensError(f"unknown protocol {protocol!r}", f"use one of {list(PROTOCOLS)}")
        ridge_alpha = parse_alpha(alpha)
        if k < 2 or n_boot < 10 or c <= 0 or max_iter < 1:
            raise EmolensError("bad number: need --k >= 2, --n-boot >= 10, --C > 0, --max-iter >= 1")
        if corpus.balanced:
            raise EmolensError("--balanced does not apply to probe", "sample when extracting: extract --limit N "
                               "--balanced")
        try:
            pos = [int(p) for p in positions.split(",") if p.strip()] or None
        except ValueError as exc:
            raise EmolensError(f"bad --positions {positions!r}", "pass ints such as -1,-2") from exc
        store = ActivationStore.open(acts)
        dataset = dataset_for_store(store, data, corpus.columns() if data is not None else None)
        out_dir = prepare_out_dir(out, force, marker=TABLE)
        start = time.perf_counter()
        result = run_probing(store, dataset, tasks=tasks, items=items, protocol=protocol, probe=probe,
                             standardize=standardize, shuffled=shuffled, appraisals=appraisals, k=k, seed=seed,
                             C=c, alpha=ridge_alpha, n_boot=n_boot, directions=directions, max_iter=max_iter,
                             positions=pos, log=lambda m: typer.echo(m, err=True), device=device,
                             slice_chunk=slice_chunk or None)
        result.summary["seconds"]["total"] = round(time.perf_counter() - start, 2)
        write_outputs(result, out_dir)
        write_probe_figures(result.table, out_dir)
        for line in summary_lines(result):
            typer.echo(line)
        typer.echo(f"{result.summary['seconds']['total']:.1f}s; results in {out_dir}")
