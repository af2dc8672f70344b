"""``emolens crossmodel``: do two models represent emotions alike? CKA, RSA and transfer on shared items.

Reads the ``resid.npz`` of two ``emolens neurons --save-resid`` runs (same ``--ids`` file) and
writes ``cka.parquet`` (every layer pair, each with an item-bootstrap interval), ``rsa.parquet``
(model-model at matched relative depth and each model against the human appraisal space, Mantel
p), ``transfer.parquet`` (native vs transferred emotion accuracy and appraisal R², both
directions, with intervals) and figures.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.readout import prepare_out_dir
from emolens.errors import EmolensError
from emolens.labels import EMOTIONS
from emolens.paths import dump_json

MARKER = "cka.parquet"


def register(app: typer.Typer) -> None:
    @app.command()
    def crossmodel(
        runs: str = typer.Option(..., help="two run folders (or resid.npz files), comma-separated"),
        out: Path = opt.out_option(),
        depths: int = typer.Option(4, help="matched relative depths for the transfer test"),
        permutations: int = typer.Option(999, help="Mantel permutations per RSA test"),
        boot: int = typer.Option(200, help="item-bootstrap draws of the CKA interval at every layer pair"),
        seed: int = opt.seed_option(help="seed of the permutations and the half/half split"),
        force: bool = opt.force_option(),
    ) -> None:
        """Linear CKA (depth x depth), RSA of emotion geometry and probe transfer between two models."""
        # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
        from emolens.crossmodel.compare import compare_models, load_resid
        from emolens.report.crossmodel_figures import plot_crossmodel_figures

        paths = [p.strip() for p in runs.split(",") if p.strip()]
        if len(paths) != 2:
            raise EmolensError(f"--runs needs exactly two folders, got {len(paths)}", "pass --runs A,B")
        a, b = (load_resid(p) for p in paths)
        out_dir = prepare_out_dir(out, force, marker=MARKER)
        tables = compare_models(a, b, EMOTIONS, depths=depths, n_perm=permutations, n_boot=boot,
                                seed=seed)
        for name in ("rsa", "transfer", "cka"):  # cka last: it marks a finished result
            tables[name].to_parquet(out_dir / f"{name}.parquet", index=False)
        plots = plot_crossmodel_figures(out_dir, tables)
        dump_json(out_dir / "crossmodel_run.json", {"runs": paths, "models": [a.name, b.name],
                                         "n_items": int(tables["cka"]["n_items"].iloc[0]),
                                         "permutations": permutations, "boot": boot, "seed": seed,
                                         "plots": [p.name for p in plots]})
        cka = tables["cka"]
        m = cka[cka["matched_depth"]]
        typer.echo(f"{a.name} vs {b.name}: {int(cka['n_items'].iloc[0])} shared items, max CKA "
                   f"{cka['cka'].max():.3f}; at matched depth {m['cka'].min():.3f}-{m['cka'].max():.3f} "
                   f"(item-shuffle null {m['cka_null'].max():.3f} at most, largest p {m['cka_p'].max():.3f}); "
                   f"results in {out_dir}")
