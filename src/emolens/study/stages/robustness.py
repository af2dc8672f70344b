"""The ``robustness`` stage: the paper's 9 prompt variants, each with its readout and, optionally,
the emotion probe, zero ablation and patching re-run under it (one tidy ``robustness.parquet``).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from emolens.activations.extract import extract
from emolens.activations.store import ActivationStore
from emolens.causal.ablation import ablate
from emolens.causal.patching import patch
from emolens.errors import EmolensError
from emolens.inputs.prompts import PAPER_PROMPT_VARIANTS
from emolens.paths import atomic_write_bytes
from emolens.probes import probing
from emolens.readout import frame_metrics, readout
from emolens.study import registry
from emolens.study.config import StudyConfig
from emolens.study.registry import StageContext, dump_section, stage
from emolens.study.stages.causal import causal_windows
from emolens.study.stages.probe import probe_device

#: Columns of ``robustness.parquet``: one tidy row per (variant, analysis, site, layer or window
#: centre, metric); ``layer`` is NaN for the readout, ``window_span`` 0 for readout and probe rows.
ROBUSTNESS_COLUMNS: tuple[str, ...] = ("variant", "template", "shots", "analysis", "site", "layer", "window_span",
                                       "kind", "metric", "value", "ci_low", "ci_high", "n", "chance")


def _robustness_section(c: StudyConfig) -> dict:
    out = {"variants": c.prompts.variants, "seed": c.seed, "separator": c.prompts.separator, "chat": c.prompts.chat,
           **dump_section(c.robustness)}
    analyses = c.robustness.analyses
    if analyses:
        out["items"] = c.items
    if "probe" in analyses:
        out.update(sites=c.sites, layers=c.layers, extract=dump_section(c.extract), probe=dump_section(c.probe))
    return out


def _robustness_readout(ctx: StageContext, items, spec, store_dir: Path | None = None
                        ) -> tuple[pd.DataFrame, list[str], ActivationStore | None]:
    """The variant's readout rows and correctly read ids; with ``store_dir`` (the probe is re-run) the
    readout is the one an extraction of every item reads in the forward that also captures the
    probe's activations (:func:`emolens.activations.extract.extract` with ``readout``), so the
    variant pays one pass over its items for both, not two."""
    if store_dir is None:
        result = readout(ctx.model.lm, items, spec, batch_size=ctx.cfg.batch_size, progress=ctx.progress)
        raw, correct, store = result.metrics["raw"], list(result.correct_ids), None
    else:
        store = extract(ctx.model.lm, items, store_dir, sites=ctx.cfg.sites, layers=ctx.cfg.layers, positions=[-1],
                        spec=spec, readout=True, dtype=ctx.cfg.extract.dtype, batch_size=ctx.cfg.batch_size,
                        chunk_size=ctx.cfg.extract.chunk_size, progress=ctx.progress)
        frame = store.readout()
        raw, correct = frame_metrics(frame, spec.labels), frame.loc[frame.correct.astype(bool), "id"].tolist()
    rows = [{"analysis": "readout", "site": "", "metric": m, "value": raw[m],
             "ci_low": raw["accuracy_ci_low"] if m == "accuracy" else np.nan,
             "ci_high": raw["accuracy_ci_high"] if m == "accuracy" else np.nan, "n": raw["n"],
             "chance": raw["majority_baseline"] if m == "accuracy" else raw["chance"]}
            for m in ("accuracy", "balanced_accuracy", "macro_f1")]
    return pd.DataFrame(rows), correct, store


def _robustness_probe(ctx: StageContext, items, store: ActivationStore) -> pd.DataFrame:
    """The emotion probe at the answer cue per study site and layer, through the probe stage's path
    (:func:`emolens.probes.probing.run_probing`) on the variant's scratch store of every item, on the
    study's items (``correct``: those this variant's own readout reads correctly)."""
    p = ctx.cfg.probe
    dataset = items.subset(np.asarray(store.item_ids, dtype=object).astype(str))
    res = probing.run_probing(store, dataset, tasks=["emotion"], items=ctx.cfg.items, protocol=p.protocol,
                              probe="logistic",
                              shuffled=False, k=p.k, seed=ctx.cfg.seed + 42, C=p.C, alpha=p.alpha, n_boot=p.n_boot,
                              directions=False, max_iter=p.max_iter, standardize=p.standardize,
                              human_baseline=False, device=probe_device(ctx))
    t = res.table[res.table.task == "emotion"]
    return pd.DataFrame({"analysis": "probe", "site": t.site, "layer": t.layer, "metric": t.metric, "value": t.value,
                         "ci_low": t.ci_low, "ci_high": t.ci_high, "n": t.n, "chance": t.chance})


def _robustness_causal(ctx: StageContext, analysis: str, items, spec) -> pd.DataFrame:
    """Zero ablation (``ablate``) or activation patching (``patch``) of ``robustness.sites`` at the
    answer cue over the robustness windows, through :mod:`emolens.causal.ablation` /
    :mod:`emolens.causal.patching` (the ablate and patch stages' functions)."""
    r = ctx.cfg.robustness
    common = dict(sites=r.sites, windows=causal_windows(ctx, r), positions=[-1], spec=spec,
                  batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed + 100, progress=ctx.progress)
    if analysis == "ablate":
        frame = ablate(ctx.model.lm, items, kinds=["zero"], **common).frame
    else:
        frame = patch(ctx.model.lm, items, pairs=r.pairs, **common).frame
    frame = frame[frame["kind"] != "clean"]
    return pd.DataFrame({"analysis": analysis, "site": frame.site, "layer": frame.window_center,
                         "window_span": frame.window_span, "kind": frame["kind"], "metric": frame.metric,
                         "value": frame.value, "ci_low": frame.ci_low, "ci_high": frame.ci_high, "n": frame.n})


@stage("robustness", _robustness_section, resumable=True)
def _robustness(ctx: StageContext) -> dict:
    """The paper's 9 prompt variants (paper-protocol §2.2, §8 item 2): the readout of each and,
    per ``robustness.analyses``, the emotion probe, zero ablation and patching re-run under it.

    Every variant's rows are written to ``partial/<variant>.parquet`` when all its analyses are
    done, so a killed stage resumes at the first unfinished variant (a variant's probe store
    resumes chunk by chunk, as the extract stage's does). With ``items: correct`` the analyses use
    the items the variant's own readout reads correctly.
    """
    r = ctx.cfg.robustness
    items = ctx.limited(ctx.dataset, r.limit)
    if {"ablate", "patch"} & set(r.analyses) and not causal_windows(ctx, r):  # a config error fails the stage
        raise EmolensError(f"robustness: no window of spans {r.spans} fits {ctx.n_layers()} layers with centers "
                           f"{r.centers}", "change robustness.spans or robustness.centers")
    partial = ctx.dir / "partial"
    partial.mkdir(exist_ok=True)
    frames = []
    for name, template, shots in PAPER_PROMPT_VARIANTS:
        path = partial / f"{name}.parquet"
        if path.exists():
            frames.append(pd.read_parquet(path))
            continue
        spec = replace(ctx.cfg.prompt_spec(template, shots), labels=ctx.prompt.labels)
        store_dir = partial / f"{name}.store" if "probe" in r.analyses else None
        rows, correct, store = _robustness_readout(ctx, items, spec, store_dir)
        parts = [rows]
        analysed = items if ctx.cfg.items == "all" else \
            items.subset(correct, name=f"{items.name}-correct") if len(correct) else None
        if r.analyses and (analysed is None or len(analysed) < 2):
            ctx.notes.append(f"{name}: {len(correct)} correctly read items, too few for {', '.join(r.analyses)}")
            analysed = None
        for analysis in r.analyses if analysed is not None else ():
            try:
                if analysis == "probe":
                    parts.append(_robustness_probe(ctx, items, store))
                else:
                    parts.append(_robustness_causal(ctx, analysis, analysed, spec))
            except EmolensError as exc:  # e.g. too few items of a class for the probe split: say so
                ctx.notes.append(f"{name}: {analysis} skipped: {exc}")
        frame = pd.concat(parts, ignore_index=True).assign(variant=name, template=template, shots=len(shots))
        frame = frame.reindex(columns=list(ROBUSTNESS_COLUMNS))
        frame["kind"] = frame["kind"].astype(object).fillna("").astype(str)
        frame["window_span"] = frame["window_span"].fillna(0).astype("int64")
        frame["layer"] = frame["layer"].astype("float64")
        atomic_write_bytes(path, frame.to_parquet(index=False))
        shutil.rmtree(partial / f"{name}.store", ignore_errors=True)
        frames.append(frame)
        registry.after_unit(ctx, name)
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(ctx.dir / "robustness.parquet", index=False)
    acc = table[(table.analysis == "readout") & (table.metric == "accuracy")]
    summary = {"variants": len(acc), "accuracy_min": float(acc.value.min()), "accuracy_max": float(acc.value.max()),
               "n_items": len(items), "analyses": ["readout", *r.analyses], "rows": len(table)}
    return summary
