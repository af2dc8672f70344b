"""Reading a run folder: its ``run.json``, each stage's ``stage.json`` and saved tables.

This is the one reader of the run-folder format, used by the report, ``emolens compare`` and the
study itself (to see which stages finished). It lives in ``report`` -- below ``study`` in the
layering -- so drawing a report never imports the code that runs a study. Layers are 0-indexed
in the tables; *relative depth* is ``(layer + 1) / n_layers`` (the last layer is 1.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from emolens.errors import EmolensError

#: The ``format`` marker in ``run.json``: a folder without it is not an emolens run.
RUN_FORMAT = "emolens-run"
#: Statuses of a stage whose results are complete (computed here, or reused from a sibling run).
DONE: tuple[str, ...] = ("done", "reused")
#: Table file of each stage (relative to the stage folder).
TABLES = {"readout": "readout.parquet", "probe": "probes.parquet", "ablate": "ablation.parquet",
          "patch": "patching.parquet", "knockout": "knockout.parquet", "steer": "steering.parquet",
          "alignment": "alignment.parquet", "generations": "generations.parquet",
          "robustness": "robustness.parquet"}
#: Tables saved by a stage of another name.
TABLE_STAGE = {"alignment": "steer", "generations": "steer"}


def read_stage(folder: Path) -> dict | None:
    """A stage folder's ``stage.json`` (None when absent or unreadable: the stage did not finish)."""
    path = Path(folder) / "stage.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | Path) -> dict:
    """``run.json`` of a run folder (an error that says so when it is not one)."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise EmolensError(f"{str(run_dir)!r} is not an emolens run (no run.json)", "pass a folder made by emolens run")
    meta = json.loads(path.read_text())
    if meta.get("format") != RUN_FORMAT:
        raise EmolensError(f"{str(run_dir)!r} holds no emolens run", "pass a folder made by emolens run")
    return meta


def stage_dir(run_dir: str | Path, model: str, name: str) -> Path | None:
    """The folder of a finished stage of a run, or None when it did not run (to completion)."""
    folder = Path(run_dir) / model / name
    rec = read_stage(folder)
    return folder if rec and rec.get("status") in DONE else None


def relative_depth(layer: float, n_layers: int) -> float:
    """``(layer + 1) / n_layers`` for a 0-indexed layer: models of different depths line up."""
    return (float(layer) + 1.0) / float(n_layers)


class ModelRun:
    """The saved results of one model in a run folder."""

    def __init__(self, run_dir: Path, slug: str, meta: dict):
        self.run_dir = Path(run_dir)
        self.slug = slug
        self.meta = meta
        self.spec = meta.get("models", {}).get(slug, {}).get("spec", slug)

    def stage_record(self, stage: str) -> dict | None:
        path = self.run_dir / self.slug / stage / "stage.json"
        return json.loads(path.read_text()) if path.exists() else None

    def stage_status(self, stage: str) -> tuple[bool, str]:
        """(finished, why not) for a stage of this model."""
        rec = self.stage_record(stage)
        if rec and rec.get("status") in DONE:
            return True, ""
        info = self.meta.get("stages", {}).get(self.slug, {}).get(stage)
        if stage not in self.meta.get("config", {}).get("stages", []):
            return False, f"the {stage} stage was not requested in this study's config"
        if info is None:
            return False, f"the {stage} stage has not run yet"
        return False, f"the {stage} stage is {info['status']}" + (f": {info['note']}" if info.get("note") else "")

    def table(self, name: str) -> pd.DataFrame | None:
        stage = TABLE_STAGE.get(name, name)
        ok, _ = self.stage_status(stage)
        path = self.run_dir / self.slug / stage / TABLES[name]
        if not ok or not path.exists():
            return None
        return pd.read_parquet(path)

    def json(self, stage: str, name: str) -> dict | None:
        ok, _ = self.stage_status(stage)
        path = self.run_dir / self.slug / stage / name
        return json.loads(path.read_text()) if ok and path.exists() else None

    @property
    def n_layers(self) -> int | None:
        n = self.meta.get("models", {}).get(self.slug, {}).get("n_layers")
        if n:
            return int(n)
        metrics = self.json("readout", "metrics.json")
        return int(metrics["n_layers"]) if metrics and "n_layers" in metrics else None

    @property
    def label(self) -> str:
        n = self.n_layers
        return f"{self.spec} ({n} layers)" if n else self.spec


def model_runs(run_dir: str | Path) -> list[ModelRun]:
    """One :class:`ModelRun` per model of the run in ``run_dir``."""
    meta = load_run(run_dir)
    return [ModelRun(Path(run_dir), slug, meta) for slug in meta.get("models", {})]


__all__ = ["DONE", "RUN_FORMAT", "TABLES", "ModelRun", "load_run", "model_runs", "read_stage", "relative_depth",
           "stage_dir"]
