"""``emolens compare``: the paper's cross-model figures on relative depth, from saved run tables.

The drawing is :func:`emolens.report.compare.compare_runs`; this module only parses the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        runs: list[Path] = typer.Argument(..., help="run folders made by emolens run"),
        out: Path = opt.out_option(help="folder for compare.png, peaks.csv and compare.html"),
        force: bool = opt.force_option(),
    ) -> None:
        """Cross-model figures on relative depth (probes, patching, ablation, steering), one row per model."""
        from emolens.cli.readout import prepare_out_dir
        from emolens.report.compare import compare_runs  # lazy: pandas/matplotlib would slow `emolens --help`

        prepare_out_dir(out, force, marker="peaks.csv")
        paths = compare_runs(list(runs), out)
        typer.echo(f"figure: {paths['figure']}; peaks: {paths['peaks']}; page: {paths['html']}")
