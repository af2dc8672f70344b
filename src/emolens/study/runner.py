"""Running a whole study: every (model, stage) step, locally or as Ray tasks, then the report.

The steps themselves are :func:`emolens.study.pipeline.run_step`; this module only chooses the
backend, keeps ``run.json`` current as outcomes arrive, and writes the report at the end. It is
kept apart from the pipeline so that the Ray backend (which calls ``run_step`` on workers) and
the report (which reads run folders) never import back into the code that drives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from emolens.engine.memory import stack_overrides
from emolens.errors import EmolensError, arg
from emolens.locks import WriterLock
from emolens.paths import dump_json
from emolens.report.html import write_report
from emolens.study import ray_backend
from emolens.study.config import StudyConfig, model_slug
from emolens.study.data_choice import ResolvedData, resolve_dataset
from emolens.study.model_handle import ModelHandle, model_info
from emolens.study.pipeline import StageOutcome, run_step
from emolens.study.run_folder import claim_run_dir, default_run_dir, now

BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclass
class RunResult:
    run_dir: Path
    data: ResolvedData
    outcomes: list[StageOutcome]
    report: Path | None = None

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class RunRecorder:
    """Keeps ``run.json`` and the progress line up to date as (model, stage) outcomes arrive.

    Only the process that runs the study writes ``run.json``; with ``--backend ray`` the workers
    write their stage folders and the driver records what they return.
    """

    def __init__(self, run_dir: Path, meta: dict, echo, bar):
        self.run_dir, self.meta, self.echo, self.bar = run_dir, meta, echo, bar
        self.outcomes: list[StageOutcome] = []

    def record(self, outcome: StageOutcome) -> None:
        self.outcomes.append(outcome)
        self.echo(_outcome_line(outcome))
        self.meta["stages"].setdefault(outcome.model, {})[outcome.stage] = {
            "status": outcome.status, "seconds": round(outcome.seconds, 3), "note": outcome.note,
            "key": outcome.key, "at": now(), **({"work": outcome.work} if outcome.work else {})}
        self.meta["updated"] = now()
        dump_json(self.run_dir / "run.json", self.meta)
        self.bar.update(1)

    def model(self, slug: str, info: dict | None) -> None:
        if info:
            self.meta["models"].setdefault(slug, {}).update(info)
            dump_json(self.run_dir / "run.json", self.meta)


def _run_local(cfg: StudyConfig, data: ResolvedData, run_dir: Path, recorder: RunRecorder, progress: bool,
               echo) -> None:
    for spec in cfg.models:
        handle = ModelHandle(spec, cfg)
        keys: dict[str, str] = {}
        status: dict[str, str] = {}
        for name in cfg.stages:
            recorder.bar.set_postfix_str(f"{handle.slug}/{name}")
            recorder.record(run_step(cfg, data, run_dir, handle, name, keys, status, progress, echo))
        recorder.model(handle.slug, model_info(handle))
        handle.release()


def run_study(cfg: StudyConfig, out: str | Path | None = None, progress: bool = True, echo=print,
              report: bool = True, backend: str = "local", ray_address: str | None = None,
              ray_cpus: int | None = None, gpus_per_task: float | None = None) -> RunResult:
    """Run every requested stage for every model; skip what is cached; write the report.

    ``backend="local"`` runs the (model, stage) steps one after another in this process;
    ``backend="ray"`` runs each as a Ray task (:mod:`emolens.study.ray_backend`): a model's stages in
    order, models in parallel, on a local Ray cluster (``ray_cpus`` CPUs) or the cluster at
    ``ray_address``, with ``gpus_per_task`` GPUs each (default: 1 when the config's device is CUDA,
    or ``auto`` on a cluster that has GPUs). Both write the same run folder.
    """
    if backend not in BACKENDS:
        raise EmolensError(f"unknown backend {backend!r}", f"use one of {list(BACKENDS)}")
    if backend != "ray" and (ray_address is not None or ray_cpus is not None or gpus_per_task is not None):
        raise EmolensError("a Ray address, CPU count or GPUs per task only apply to the ray backend",
                           "drop them or choose backend ray")
    stack_overrides()  # a bad EMOLENS_STACK_* fails here, before any work, not in the first causal stage
    session = None
    if backend == "ray":  # connect before any work, so a missing Ray or a bad address fails at once
        session = ray_backend.connect(ray_address, ray_cpus)
    try:
        data = resolve_dataset(cfg)
        echo(f"data: {data.how}")
        run_dir = Path(out) if out is not None else default_run_dir(cfg, data)
        if run_dir.exists() and not run_dir.is_dir():
            raise EmolensError(f"{arg('out', str(run_dir))} is a file", "pass a folder path for the run")
        created = not run_dir.exists()
        lock = WriterLock(run_dir, "run folder").acquire()  # one study process per run folder
        try:
            meta = claim_run_dir(run_dir, cfg, data)
            echo(f"run: {run_dir}" + (f" (ray: {session.describe()})" if session is not None else ""))
            bar = tqdm(total=len(cfg.models) * len(cfg.stages), desc="study", unit="stage", disable=not progress)
            recorder = RunRecorder(run_dir, meta, echo, bar)
            try:
                if session is None:
                    _run_local(cfg, data, run_dir, recorder, progress, echo)
                else:
                    session.run(cfg, data, run_dir, recorder, gpus_per_task)
            finally:
                bar.close()
            order = {(model_slug(m), s): i for i, (m, s) in enumerate((m, s) for m in cfg.models for s in cfg.stages)}
            outcomes = sorted(recorder.outcomes, key=lambda o: order.get((o.model, o.stage), len(order)))
            result = RunResult(run_dir, data, outcomes)
            if report:
                result.report = write_report(run_dir)
                echo(f"report: {result.report}")
        finally:
            lock.release()
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
    finally:
        if session is not None:
            session.close()
    return result


def _outcome_line(o: StageOutcome) -> str:
    timing = f"{o.seconds:7.1f}s" if o.status in ("done", "reused", "cached") else " " * 8
    note = f"  {o.note}" if o.note else ""
    return f"  {o.model:<24} {o.stage:<11} {o.status:<11} {timing}{note}"


__all__ = ["BACKENDS", "RunRecorder", "RunResult", "run_study"]
