"""``emolens compare``: the paper's cross-model figures on relative depth, from saved run tables, and
the representational similarity of every model pair (CKA, RSA, transfer) from their stores.

The drawing is :func:`emolens.report.compare.compare_runs` and the measuring
:func:`emolens.study.similarity.pair_similarity`; this module only parses the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.errors import EmolensError


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        runs: list[Path] = typer.Argument(..., help="run folders made by emolens run"),
        out: Path = opt.out_option(help="folder for compare.png, peaks.csv and compare.html"),
        similarity: bool = typer.Option(True, help="also CKA, RSA and probe transfer between every pair of models "
                                                 "(from their extract stores: resid at position -1)"),
        boot: int = typer.Option(200, help="item-bootstrap draws of each CKA interval"),
        permutations: int = typer.Option(999, help="Mantel relabellings per RSA test"),
        seed: int = opt.seed_option(help="seed of the bootstrap, the permutations and the transfer split"),
        force: bool = opt.force_option(),
    ) -> None:
        """Cross-model figures on relative depth (probes, patching, ablation, steering), one row per model,
        and how alike every pair of models represents emotions (CKA, RSA, transfer)."""
        from functools import partial

        from emolens.cli.readout import prepare_out_dir
        from emolens.report.compare import compare_runs  # lazy: pandas/matplotlib would slow `emolens --help`
        from emolens.study.similarity import pair_similarity

        if boot < 1 or permutations < 1:
            raise EmolensError(f"--boot {boot} and --permutations {permutations} must both be at least 1",
                               "pass e.g. --boot 200 --permutations 999, or --no-similarity")
        prepare_out_dir(out, force, marker="compare.html")  # the page is written last: it marks a finished result
        measure = partial(pair_similarity, n_boot=boot, n_perm=permutations, seed=seed) if similarity else None
        paths = compare_runs(list(runs), out, similarity=measure)
        typer.echo(f"figure: {paths['figure']}; peaks: {paths['peaks']}; page: {paths['html']}")
