"""The staged study pipeline: content-addressed stages, resume after a kill, no silent overwrites.

Every stage has a **key**: the SHA-256 of its own config section, the model's weights id, the
dataset fingerprint, the prompt fingerprint, the keys of the stages it reads, the emolens version
and the fingerprint of the package's code (:func:`~emolens.study.run_folder.code_fingerprint`:
results of other code are never cached, reused or resumed). A stage whose folder holds a
``stage.json`` with the same key is skipped. A stage whose folder has no ``stage.json`` was
interrupted: it is cleared and redone, or resumed where the stage can resume (``extract`` resumes
its activation store chunk by chunk; ``robustness`` keeps the prompt variants it finished). A
finished stage whose key changed is moved aside to ``<model>/.superseded/`` -- never overwritten.
Before computing a stage, sibling runs under the same output root are searched for a finished stage
with the same key; its files are hard-linked (or copied) instead of recomputed, so changing one
config value re-runs only the stages it affects.

Where the parts live: the stages themselves in :mod:`emolens.study.stages` (one module each,
registered in :mod:`emolens.study.registry`), the run folder's layout in
:mod:`emolens.study.run_folder`, the data choice in :mod:`emolens.study.data_choice`, the lazily
loaded model in :mod:`emolens.study.model_handle`. This module keys and runs one (model, stage)
step; :mod:`emolens.study.runner` runs them all (locally or on Ray) and writes the report.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from emolens import __version__
from emolens.engine.accounting import Work, stage_row
from emolens.errors import EmolensError
from emolens.inputs.prompts import build_prompts
from emolens.paths import dump_json
from emolens.report.runs import DONE, read_stage
from emolens.study.config import StudyConfig
from emolens.study.data_choice import ResolvedData
from emolens.study.model_handle import ModelHandle
from emolens.study.registry import StageContext, StageDef
from emolens.study.run_folder import code_fingerprint, content_hash, find_reusable, now, prepare_folder, reuse_stage
from emolens.study.stages import STAGES


def stage_key(name: str, cfg: StudyConfig, model: ModelHandle, data: ResolvedData,
              upstream_keys: dict[str, str]) -> str:
    """The content address of a stage: what it computes from, so equal keys mean equal results."""
    return content_hash({"stage": name, "section": STAGES[name].section(cfg), "model": model.identity,
                         "model_dtype": model.dtype_name, "dataset": data.fingerprint,
                         "prompt": replace(cfg.prompt_spec(), labels=tuple(data.dataset.label_names)).fingerprint(),
                         "upstream": upstream_keys,
                         "emolens": __version__, "code": code_fingerprint()})


@dataclass
class StageOutcome:
    """What became of one (model, stage) step; ``run.json`` records it."""

    model: str
    stage: str
    status: str  # done, reused, cached, unavailable, failed, skipped
    seconds: float = 0.0
    note: str = ""
    key: str = ""
    work: dict | None = None


def run_stage(ctx: StageContext, sdef: StageDef, echo=print) -> StageOutcome:
    """One keyed stage: cached when its folder holds this key, reused from a sibling run, else computed."""
    folder = ctx.dir
    slug = ctx.model.slug
    rec = read_stage(folder)
    if rec and rec.get("key") == ctx.key and rec.get("status") in DONE:
        return StageOutcome(slug, sdef.name, "cached", float(rec.get("seconds", 0.0)), key=ctx.key)
    reason = sdef.unavailable()
    if reason:
        return StageOutcome(slug, sdef.name, "unavailable", note=reason, key=ctx.key)
    ctx.resumed = prepare_folder(folder, ctx.key, sdef.resumable, echo)
    if not ctx.resumed:
        source = find_reusable(folder.parents[1], slug, sdef.name, ctx.key)
        if source is not None:
            old = reuse_stage(source, folder)
            return StageOutcome(slug, sdef.name, "reused", float(old.get("seconds", 0.0)),
                                note=f"from {source.parents[1].name}", key=ctx.key)
    folder.mkdir(parents=True, exist_ok=True)
    if ctx.cfg.batch_size == "auto":  # resolved when a stage really runs (a cached run never loads the model)
        ctx.cfg = ctx.cfg.model_copy(update={"batch_size": ctx.model.batch_size()})
        ctx.notes.append(f"batch size {ctx.cfg.batch_size} (auto, from free memory on {ctx.model.lm.device})")
    dump_json(folder / ".started.json", {"key": ctx.key, "started": now()})
    start = time.perf_counter()
    started = now()
    load_before = ctx.model.loaded
    work_before = ctx.model.work()
    summary = sdef.run(ctx)
    seconds = time.perf_counter() - start
    work = stage_work(ctx, sdef.name, work_before, seconds)
    rec = {"stage": sdef.name, "model": ctx.model.spec, "key": ctx.key, "status": "done", "started": started,
           "finished": now(), "seconds": round(seconds, 3), "resumed": ctx.resumed,
           "model_load_seconds": round(ctx.model.lm.load_seconds, 3) if ctx.model.loaded and not load_before else 0.0,
           "inputs": {"model": ctx.model.identity, "model_dtype": ctx.model.dtype_name,
                      "dataset": ctx.data.fingerprint, "prompt": ctx.prompt.fingerprint(),
                      "upstream": {k: (read_stage(v) or {}).get("key") for k, v in ctx.upstream.items()}},
           "section": STAGES[sdef.name].section(ctx.cfg), "emolens": __version__, "code": code_fingerprint(),
           "summary": summary,
           "work": work, "notes": ctx.notes}
    (folder / ".started.json").unlink(missing_ok=True)
    dump_json(folder / "stage.json", rec)
    return StageOutcome(slug, sdef.name, "done", seconds, note="; ".join(ctx.notes), key=ctx.key, work=work)


def stage_work(ctx: StageContext, name: str, before: Work, seconds: float) -> dict | None:
    """A stage's model work (forwards, tokens, token-layers), its wall time, and -- once the model is
    loaded -- the plain-forward floor of that work and the share of it the stage achieved
    (:func:`~emolens.engine.accounting.stage_row`). ``None`` when the stage never touched the model."""
    if not ctx.model.loaded:
        return None
    done = ctx.model.work() - before  # before the model loaded, ``before`` counts nothing
    done.seconds = seconds
    rate = ctx.model.plain_rate(_floor_prompts(ctx))  # once, after the first stage that loaded the model
    row = stage_row(name, done, rate["token_layers_per_s"] if rate else None)
    row.pop("stage")
    return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
            "floor_rate": rate["token_layers_per_s"] if rate else None}


def _floor_prompts(ctx: StageContext):
    try:
        return build_prompts(ctx.dataset.texts[: ctx.model.batch_size()], ctx.prompt, ctx.model.lm.tokenizer)
    except EmolensError:
        return []


def run_step(cfg: StudyConfig, data: ResolvedData, run_dir: Path, handle: ModelHandle, name: str,
             keys: dict[str, str], status: dict[str, str], progress: bool = True, echo=print) -> StageOutcome:
    """Run one (model, stage) of a study: skip it when a stage it needs did not finish, else key it and
    run it (cached, reused or computed). ``keys`` and ``status`` hold the model's earlier stages and are
    updated in place. A failure is recorded (``error.txt``), not raised. Both backends call this."""
    sdef = STAGES[name]
    blocked = [n for n in sdef.needs if status.get(n) not in ("done", "reused", "cached")]
    if blocked:
        why = ", ".join(f"{b} {status.get(b, '?')}" for b in blocked)
        outcome = StageOutcome(handle.slug, name, "skipped", note=f"needs {why}")
    else:
        # with items: all, later stages read only the model's depth from the readout, which its
        # weights fix: a readout-only change (e.g. calibrate) must not re-run them
        key = stage_key(name, cfg, handle, data, {n: keys[n] for n in sdef.needs
                                                  if n != "readout" or cfg.items == "correct"})
        keys[name] = key
        ctx = StageContext(name, run_dir / handle.slug / name, key, cfg, data, handle,
                           {n: run_dir / handle.slug / n for n in sdef.needs}, progress=progress)
        try:
            outcome = run_stage(ctx, sdef, echo)
        except Exception as exc:  # record, keep going with stages that do not need this one
            ctx.dir.mkdir(parents=True, exist_ok=True)
            (ctx.dir / "error.txt").write_text(traceback.format_exc())
            what = str(exc) if isinstance(exc, EmolensError) else f"{type(exc).__name__}: {exc}"
            outcome = StageOutcome(handle.slug, name, "failed", note=what, key=key)
    status[name] = outcome.status
    return outcome


__all__ = ["STAGES", "StageOutcome", "run_stage", "run_step", "stage_key"]
