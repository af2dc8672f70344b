"""The ``probe`` stage: emotion and appraisal probes on the extract stage's store.

It goes through :func:`emolens.probes.probing.run_probing`, ``write_outputs`` and
:func:`emolens.report.probe_figures.write_probe_figures` -- the path of ``emolens probe`` -- so a
study and the CLI write the same tables and figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.activations.store import ActivationStore
from emolens.model.loading import placement_device
from emolens.probes import probing
from emolens.report.probe_figures import write_probe_figures
from emolens.study.registry import StageContext, dump_section, stage


def probe_device(ctx: StageContext) -> str:
    """The probes run where the study places its model (without loading it): on a GPU host, the GPU."""
    return placement_device(ctx.cfg.device, ctx.cfg.device_map)


@stage("probe", lambda c: {"items": c.items, "seed": c.seed, "directions_site": c.steer.site, **dump_section(c.probe)},
       modules=("emolens.activations.store", "emolens.probes.evaluation", "emolens.probes.probing"))
def _probe(ctx: StageContext) -> dict:
    """The study's probes through :func:`emolens.probes.probing.run_probing` (the path of ``emolens probe``).

    The store holds exactly the study's items, so every stored item is probed. Tasks: the 13-way
    emotion probe of each ``probe.probes`` kind (an MLP's rows are task ``emotion/mlp``) with the
    shuffled-label control, appraisal ridge probes at position -1 (the paper's), the human
    baseline, and directions at the steering site for the steer stage.
    """
    p = ctx.cfg.probe
    store = ActivationStore.open(ctx.upstream["extract"] / "store")
    dataset = ctx.items().subset(np.asarray(store.item_ids, dtype=object).astype(str))  # store order
    names = probing.parse_appraisals(p.appraisals, dataset.appraisal_names)
    tasks = ["emotion"]
    if names:
        rated = int(np.isfinite(np.stack([dataset.appraisal(a) for a in names], 1)).all(1).sum())
        if rated < max(10, p.k):
            ctx.notes.append(f"appraisal probes skipped: only {rated} items have all ratings")
        elif -1 not in store.positions:
            ctx.notes.append("appraisal probes skipped: they read position -1 (the paper's), which is not extracted")
        else:
            tasks.append("appraisal")
    common = dict(items="all", protocol=p.protocol, shuffled="shuffled" in p.controls, k=p.k, seed=ctx.cfg.seed + 42,
                  C=p.C, alpha=p.alpha, n_boot=p.n_boot, max_iter=p.max_iter, standardize=p.standardize,
                  device=probe_device(ctx))
    results = []
    for i, kind in enumerate(p.probes):  # the first kind also does appraisals, baseline and directions
        res = probing.run_probing(store, dataset, tasks=tasks if i == 0 else ["emotion"], probe=kind,
                                  appraisals=names or "none", directions=i == 0,
                                  human_baseline=i == 0 and p.human_baseline, direction_sites=[ctx.cfg.steer.site],
                                  **common)
        if kind == "mlp":
            emotion = res.table.task.str.startswith("emotion")
            res.table.loc[emotion, "task"] = res.table.loc[emotion, "task"].str.replace("emotion", "emotion/mlp", n=1)
        results.append(res)
    main = results[0]
    main.table = pd.concat([r.table for r in results], ignore_index=True)
    main.summary["probes"] = list(p.probes)
    main.summary["best"] = probing.best_slices(main.table)
    ctx.notes.extend(main.summary.get("notes", []))
    probing.write_outputs(main, ctx.dir)
    write_probe_figures(main.table, ctx.dir)
    table = main.table
    best = table[(table.task == "emotion") & (table.metric == "accuracy")].sort_values("value").tail(1)
    summary = {"rows": len(table), "n_items": len(dataset)}
    if len(best):
        b = best.iloc[0]
        summary.update(best_site=b.site, best_layer=int(b.layer), best_accuracy=float(b.value))
    return summary
