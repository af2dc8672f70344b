"""``emolens run``: a whole study from one config, resumable, with a self-contained report."""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.errors import EmolensError


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: str = typer.Argument(None, help="study config (YAML) or a preset name; default: the quick preset"),
        out: Path = typer.Option(None, help="run folder (default: <output>/<config name>-<hash8>)"),
        preset: str = typer.Option(None, help="quick or paper (instead of a config file)"),
        backend: str = typer.Option("local", help="local (this process), or ray: (model, stage) tasks on a Ray "
                                                 "cluster, models in parallel"),
        ray_address: str = typer.Option(None, "--ray-address", "--address",
                                        help="Ray cluster address (host:port, ray://host:port or auto); default: "
                                             "start a local cluster"),
        ray_cpus: int = typer.Option(None, "--ray-cpus", help="CPUs of the local Ray cluster (default: all)"),
        gpus_per_task: float = typer.Option(None, "--gpus-per-task",
                                            help="GPUs each Ray task asks for (default: 1 when the device is CUDA)"),
        progress: bool = typer.Option(True, help="show progress bars"),
    ) -> None:
        """Run a study: readout, extraction, probes, causal analyses, steering, robustness, report.

        Stages whose inputs did not change are skipped; an interrupted run resumes where it stopped.
        Without a config this runs the `quick` preset on gemma-3-270m.
        """
        # lazy: the study imports torch and transformers, which would slow `emolens --help`
        from emolens.study.config import load_config, load_preset
        from emolens.study.runner import run_study

        if config is not None and preset is not None:
            raise EmolensError("pass a config file or --preset, not both",
                               "put `base: <preset>` in the config to start from a preset")
        if backend != "ray" and (ray_address is not None or ray_cpus is not None or gpus_per_task is not None):
            raise EmolensError("--ray-address, --ray-cpus and --gpus-per-task only apply to --backend ray",
                               "drop them or add --backend ray")
        cfg = load_config(config) if config is not None else load_preset(preset or "quick")
        result = run_study(cfg, out=out, progress=progress, echo=typer.echo, backend=backend,
                           ray_address=ray_address, ray_cpus=ray_cpus, gpus_per_task=gpus_per_task)
        done = sum(o.status == "done" for o in result.outcomes)
        skipped = sum(o.status in ("cached", "reused") for o in result.outcomes)
        missing = [f"{o.model}/{o.stage}" for o in result.outcomes if o.status in ("unavailable", "skipped")]
        line = f"{done} stage(s) computed, {skipped} reused from cache"
        if missing:
            line += f", {len(missing)} not available or skipped ({', '.join(missing)})"
        typer.echo(line)
        if result.failed:
            names = ", ".join(f"{o.model}/{o.stage}" for o in result.failed)
            typer.echo(f"emolens: error: {len(result.failed)} stage(s) failed ({names}); see error.txt in their "
                       "folders, fix and rerun to resume", err=True)
            raise typer.Exit(1)
