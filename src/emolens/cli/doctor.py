"""``emolens doctor``: check an activation store or a run folder, and repair what can be repaired.

A store damaged behind emolens' back (a truncated or deleted array, a lost readout chunk, a
corrupt manifest) is found by the same checks extract runs on reuse; ``--repair`` puts it into a
resumable shape so the original extract command recomputes only the damaged chunks. Exit status:
0 healthy (or repaired), 1 problems found and left, 2 not a store or run.
"""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.errors import EmolensError
from emolens.locks import LOCK_NAME, WriterLock, lock_holder


def _stores_under(root: Path) -> list[Path]:
    # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
    from emolens.activations.health import BACKUP

    found = {p.parent for name in ("manifest.json", BACKUP) for p in root.rglob(name)}
    return sorted(found)


def _doctor_store(root: Path, repair: bool) -> bool:
    """Report (and optionally repair) one store; True when it is healthy afterwards."""
    # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
    from emolens.activations.health import check_store, repair_store

    check = check_store(root, full=True)
    if check.fatal is not None:
        typer.echo(f"store {root}: {check.fatal}; delete it and extract again")
        return False
    manifest = check.manifest
    n_chunks = -(-len(manifest["item_ids"]) // int(manifest["run"]["chunk_size"]))
    state = "complete" if (root / "COMPLETE").exists() else f"incomplete ({check.chunks_done} of {n_chunks} chunks)"
    if check.ok:
        typer.echo(f"store {root}: ok, {len(manifest['item_ids'])} items, sites {list(manifest['arrays'])}, {state}")
        return True
    for problem in check.problems:
        typer.echo(f"store {root}: {problem}")
    if not repair:
        typer.echo(f"store {root}: run `emolens doctor {root} --repair`, or rerun its extract command")
        return False
    for line in repair_store(check):
        typer.echo(f"store {root}: {line}")
    return True


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        path: Path = typer.Argument(..., help="an activation store (extract --out) or a run folder"),
        repair: bool = typer.Option(False, help="repair what can be repaired (damaged chunks are marked for "
                                                "recomputation by the next extract; stale locks removed)"),
    ) -> None:
        """Check an activation store or a run folder; with --repair, make it resumable again."""
        # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
        from emolens.activations.health import BACKUP, read_json

        if not path.is_dir():
            raise EmolensError(f"{str(path)!r} is not a folder", "pass an extract --out folder or a run folder")
        healthy = True
        is_run = (path / "run.json").exists()
        if not is_run and not (path / "manifest.json").exists() and not (path / BACKUP).exists():
            raise EmolensError(f"{str(path)!r} is neither an activation store nor a run folder",
                               "pass an extract --out folder or a folder made by emolens run")
        for folder in [path, *_stores_under(path)]:
            holder = lock_holder(folder)
            if holder is not None:
                typer.echo(f"{folder}: locked by pid {holder.get('pid')} on {holder.get('host')} "
                           f"since {holder.get('since')}")
                if repair:
                    lock = WriterLock(folder, "folder").acquire()  # refuses a live holder, takes a stale one
                    lock.release()
                    typer.echo(f"{folder}: removed the stale lock ({LOCK_NAME})")
        if is_run:
            meta = read_json(path / "run.json")
            if meta is None:
                typer.echo(f"run {path}: run.json is corrupt; move it aside and rerun the study to rebuild it")
                healthy = False
            else:
                for model, stages in meta.get("stages", {}).items():
                    for stage, info in stages.items():
                        if info.get("status") == "failed":
                            typer.echo(f"run {path}: {model}/{stage} failed: {info.get('note', '')}")
                            healthy = False
        for store in _stores_under(path):
            healthy = _doctor_store(store, repair) and healthy
        if not healthy:
            raise typer.Exit(1)
        typer.echo(f"{path}: healthy" if not repair else f"{path}: repaired where needed; rerun the command "
                   "that made it to recompute marked chunks")
