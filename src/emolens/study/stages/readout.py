"""The ``readout`` stage: the model's few-shot label readout over the study's items.

Writes ``readout.parquet`` (one row per item), ``correct_ids.txt`` (what ``items: correct``
analyses), ``confusion.png`` (as ``emolens readout`` does) and ``metrics.json`` (accuracy with its
interval, the model's depth for later stages).
"""

from __future__ import annotations

from emolens.data.corpus import write_ids
from emolens.paths import dump_json
from emolens.readout import readout
from emolens.report.readout_figures import write_readout_figures
from emolens.study.registry import StageContext, dump_section, stage


@stage("readout", lambda c: {"calibrate": c.prompts.calibrate, **dump_section(c.readout)})
def _readout(ctx: StageContext) -> dict:
    lm = ctx.model.lm
    result = readout(lm, ctx.dataset, ctx.prompt, batch_size=ctx.cfg.batch_size, calibrate=ctx.cfg.prompts.calibrate,
                     progress=ctx.progress)
    result.frame.to_parquet(ctx.dir / "readout.parquet", index=False)
    write_ids(ctx.dir / "correct_ids.txt", result.correct_ids)
    n_known = int(result.frame["gold"].isin(list(result.labels)).sum())
    write_readout_figures(result.frame, ctx.dir, f"{ctx.model.spec} on {ctx.dataset.name} (n={n_known})", result.labels)
    metrics = {**result.metrics, "model": ctx.model.spec, "source_id": lm.source_id, "n_layers": lm.n_layers,
               "family": lm.sites.family, "dataset": ctx.dataset.name, "dataset_fingerprint": ctx.data.fingerprint,
               "prompt": ctx.cfg.prompts.model_dump(), "prompt_fingerprint": ctx.prompt.fingerprint()}
    dump_json(ctx.dir / "metrics.json", metrics)
    raw = result.metrics["raw"]
    return {"accuracy": raw.get("accuracy"), "n": raw.get("n"), "n_correct": len(result.correct_ids),
            "n_layers": lm.n_layers}
