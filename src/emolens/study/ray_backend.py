"""``emolens run --backend ray``: the study's (model, stage) steps as Ray tasks.

Every (model, stage) is one Ray remote task that calls :func:`emolens.study.pipeline.run_step` -- the
same function the local backend calls, so keys, caching, reuse from sibling runs, resume and
failure records are the pipeline's own. A model's stages are chained in config order (each task
takes the previous one's result as its argument, so Ray starts it only when that one finished);
different models' chains run in parallel, as far as the cluster's CPUs and GPUs allow.

* Each task loads the model itself when its stage is not cached (a fully cached chain never
  loads weights) and frees it when done, so a GPU is held only while a stage runs.
* Workers write the stage folders; only the driver (the ``emolens run`` process) writes
  ``run.json``, from the outcomes the tasks return. On a real cluster the run folder must be on a
  filesystem every node mounts at the same path; a stage whose result the driver cannot see is
  recorded as failed, saying so.
* Without an address a local cluster is started (``ray.init(num_cpus=...)``) and shut down at
  the end; an already initialised Ray (a notebook, a test) is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emolens.errors import EmolensError
from emolens.report.runs import DONE, read_stage
from emolens.study.config import model_slug
from emolens.study.model_handle import ModelHandle, model_info
from emolens.study.pipeline import StageOutcome, run_step

INSTALL = "pip install 'emolens[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise EmolensError(f"the ray backend needs Ray, which is not installed here ({exc})", INSTALL) from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (one line) when ``host:port`` or ``ray://host:port`` does not accept connections."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EmolensError(f"bad Ray address {address!r}", "use host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EmolensError(f"cannot reach the Ray cluster at {address!r} ({exc.__class__.__name__}: {exc})",
                           "start it (ray start --head) or check the address; leave it away for a local "
                           "cluster") from None


def _stage_task(cfg, data, run_dir: str, spec: str, name: str, state: dict, cwd: str | None = None) -> dict:
    """One (model, stage) on a worker: the pipeline's own step, with this model's earlier state.

    ``cwd`` is the driver's working folder: relative model paths and offload folders in the
    config mean the same there when the worker sees that folder (always on a local cluster).
    """
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)

    keys, status = dict(state["keys"]), dict(state["status"])
    handle = ModelHandle(spec, cfg)
    messages: list[str] = []
    start = time.perf_counter()
    outcome = run_step(cfg, data, Path(run_dir), handle, name, keys, status, progress=False,
                       echo=messages.append)
    info = model_info(handle)
    handle.release()
    return {"outcome": outcome, "keys": keys, "status": status, "messages": messages, "model_info": info,
            "task_seconds": time.perf_counter() - start}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


@dataclass
class RaySession:
    """A connection to a Ray cluster for one study; ``close`` shuts down what it started."""

    ray: Any
    address: str | None
    started: bool

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        where = self.address or ("local cluster" if self.started else "existing Ray session")
        return f"{where}, {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"

    def gpus_for(self, cfg, gpus_per_task: float | None) -> float:
        """GPUs each task asks for: given, else 1 for a CUDA device (``auto``: when the cluster has GPUs)."""
        if gpus_per_task is not None:
            if gpus_per_task < 0:
                raise EmolensError(f"gpus per task must be >= 0, got {gpus_per_task}", "pass 0, a fraction or 1")
            return float(gpus_per_task)
        device = str(cfg.device)
        if device.startswith("cuda"):
            if not self.ray.cluster_resources().get("GPU", 0):
                raise EmolensError(f"device {device!r} but the Ray cluster has no GPU",
                                   "use device: cpu (or auto), or a cluster with GPUs")
            return 1.0
        if device == "auto":
            return 1.0 if self.ray.cluster_resources().get("GPU", 0) else 0.0
        return 0.0

    def run(self, cfg, data, run_dir: Path, recorder, gpus_per_task: float | None = None) -> None:
        ray = self.ray
        gpus = self.gpus_for(cfg, gpus_per_task)
        run_dir = Path(run_dir).resolve()
        task = ray.remote(_stage_task)
        data_ref = ray.put(data)
        pending: dict[Any, tuple[str, str]] = {}
        for spec in cfg.models:
            prev: Any = {"keys": {}, "status": {}}
            for name in cfg.stages:
                ref = task.options(num_cpus=1, num_gpus=gpus, max_retries=0,
                                   name=f"emolens:{model_slug(spec)}/{name}").remote(
                    cfg, data_ref, str(run_dir), spec, name, prev, os.getcwd())
                pending[ref] = (spec, name)
                prev = ref
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec, name = pending.pop(ref)
                    slug = model_slug(spec)
                    try:
                        res = ray.get(ref)
                    except Exception as exc:  # a worker died, or the task before it in the chain did
                        recorder.record(StageOutcome(slug, name, "failed", note=f"ray task: {_first_line(exc)}"))
                        continue
                    for line in res["messages"]:
                        recorder.echo(line)
                    outcome = res["outcome"]
                    rec = read_stage(run_dir / slug / name)
                    if outcome.status in (*DONE, "cached") and not (rec and rec.get("key") == outcome.key):
                        outcome = StageOutcome(slug, name, "failed", key=outcome.key,
                                               note=f"a Ray worker finished this stage, but {run_dir} here does not "
                                                    "hold its result: put the run folder on a filesystem every "
                                                    "Ray node mounts at the same path")
                    recorder.model(slug, res["model_info"])
                    recorder.record(outcome)
        finally:
            for ref in pending:  # interrupted: do not leave the cluster working for nobody
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def connect(address: str | None = None, num_cpus: int | None = None) -> RaySession:
    """Start a local Ray cluster (``num_cpus`` CPUs, default all) or connect to ``address``."""
    ray = _import_ray()
    if num_cpus is not None and num_cpus < 1:
        raise EmolensError(f"a local Ray cluster needs >= 1 CPU, got {num_cpus}", "pass a positive number of CPUs")
    if address is not None:
        if num_cpus is not None:
            raise EmolensError("a CPU count sizes a local cluster, not one at an address",
                               "give the address or the CPUs")
        _check_reachable(address)
    if ray.is_initialized():
        return RaySession(ray, address, started=False)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ... with long texts
        raise EmolensError(f"cannot start or join Ray at {address or 'a local cluster'!r} ({_first_line(exc)})",
                           "check the address, or leave it away for a local cluster") from None
    return RaySession(ray, address, started=True)
