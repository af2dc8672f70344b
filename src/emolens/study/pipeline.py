"""The staged study pipeline: content-addressed stages, resume after a kill, no silent overwrites.

Layout of a run (``RUN_DIR`` defaults to ``<output>/<config name>-<hash8>``)::

    run.json                the study: config, data used, models, status and timings of every stage
    config.yaml             the validated config, as run
    report.html             the self-contained report (rebuilt after every run)
    <model>/<stage>/        one folder per model and stage: the stage's tables and files
    <model>/<stage>/stage.json   written last, by atomic rename: key, status, timings, summary

Every stage has a **key**: the SHA-256 of its own config section, the model's weights id, the
dataset fingerprint, the prompt fingerprint, the keys of the stages it reads and the emolens
version. A stage whose folder holds a ``stage.json`` with the same key is skipped. A stage whose
folder has no ``stage.json`` was interrupted: it is cleared and redone, or resumed where the stage
can resume (``extract`` resumes its activation store chunk by chunk; ``robustness`` keeps the
prompt variants it finished). A finished stage whose key changed is moved aside to
``<model>/.superseded/`` -- never overwritten. Before computing a stage, sibling runs under the
same output root are searched for a finished stage with the same key; its files are hard-linked
(or copied) instead of recomputed, so changing one config value re-runs only the stages it
affects.
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from emolens import __version__
from emolens.errors import EmolensError
from emolens.paths import atomic_write_bytes, dump_json
from emolens.study.config import STAGE_NEEDS, STAGE_ORDER, StudyConfig, model_slug

RUN_FORMAT = "emolens-run"
DONE = ("done", "reused")


# ----------------------------------------------------------------------------------------------
# data and models


@dataclass
class ResolvedData:
    """The dataset a study actually uses and a sentence saying where it came from and why."""

    dataset: Any
    spec: str
    how: str
    fallback_reason: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.dataset.fingerprint()


def _describe_crowd_envent(dataset) -> str:
    env = os.environ.get("EMOLENS_CROWD_ENVENT")
    if env:
        return f"crowd-enVENT from EMOLENS_CROWD_ENVENT ({dataset.source})"
    from emolens.paths import cache_dir

    if str(cache_dir()) in str(dataset.source):
        return f"crowd-enVENT from the cache ({dataset.source})"
    return f"crowd-enVENT ({dataset.source})"


def resolve_dataset(cfg: StudyConfig) -> ResolvedData:
    """Load ``dataset.spec`` (or ``dataset.fallback`` when the spec cannot be loaded), then sample."""
    from emolens.data.loading import load_dataset

    spec = cfg.dataset.spec
    reason = None
    try:
        dataset = load_dataset(spec)
        how = _describe_crowd_envent(dataset) if dataset.name == "crowd-enVENT" else f"{dataset.name} ({spec})"
    except EmolensError as exc:
        if not cfg.dataset.fallback:
            raise
        reason = str(exc)
        spec = cfg.dataset.fallback
        dataset = load_dataset(spec)
        how = (f"{dataset.name} (dataset.fallback: {spec}) because {cfg.dataset.spec} is not reachable "
               f"here: {reason}")
    if cfg.dataset.limit:
        dataset = dataset.sample(cfg.dataset.limit, seed=cfg.dataset.seed)
    return ResolvedData(dataset, spec, f"{how}; {len(dataset)} items", reason)


def model_identity(spec: str) -> str:
    """The id of a model's exact weights, without loading it (used in stage keys)."""
    if spec.startswith("tiny:"):
        return f"{spec}:seed0"
    from emolens.model.loading import _resolve_weights

    return _resolve_weights(spec, None)[1]


class ModelHandle:
    """A model loaded on first use, so a fully cached run never loads weights."""

    def __init__(self, spec: str, cfg: StudyConfig):
        self.spec = spec
        self.slug = model_slug(spec)
        self.cfg = cfg
        self._lm = None
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = model_identity(self.spec)
        return self._identity

    @property
    def dtype_name(self) -> str:
        from emolens.model.loading import placement_device, resolve_dtype

        device = placement_device(self.cfg.device, self.cfg.device_map)
        return str(resolve_dtype(self.cfg.dtype, device)).replace("torch.", "")

    @property
    def lm(self):
        if self._lm is None:
            from emolens.model.loading import load_model

            self._lm = load_model(self.spec, **self.cfg.load_kwargs())
        return self._lm

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def release(self) -> None:
        self._lm = None
        gc.collect()


# ----------------------------------------------------------------------------------------------
# stages


@dataclass
class StageContext:
    """What a stage function gets: its folder, the study, the model and its upstream folders."""

    name: str
    dir: Path
    key: str
    cfg: StudyConfig
    data: ResolvedData
    model: ModelHandle
    upstream: dict[str, Path]
    resumed: bool = False
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def prompt(self):
        return self.cfg.prompt_spec()

    @property
    def dataset(self):
        return self.data.dataset

    def items(self):
        """The items the analyses use: all study items, or the model's correctly read ones."""
        if self.cfg.items == "all":
            return self.dataset
        from emolens.data.corpus import read_ids

        ids = read_ids(self.upstream["readout"] / "correct_ids.txt")
        if not ids:
            raise EmolensError(f"{self.model.spec} reads no item correctly, so items: correct leaves nothing",
                               "use items: all or more items")
        return self.dataset.subset(ids, name=f"{self.dataset.name}-correct")

    def n_layers(self) -> int:
        if "readout" not in self.upstream:  # a stage that does not read the readout has loaded the model
            return int(self.model.lm.n_layers)
        meta = json.loads((self.upstream["readout"] / "metrics.json").read_text())
        return int(meta["n_layers"])

    def windows(self, span: int, section) -> list[tuple[int, list[int]]]:
        """(centre, layers) of every window of ``span`` layers that the section asks for."""
        n = self.n_layers()
        half = span // 2
        valid = list(range(half, n - (span - 1 - half)))
        centres = valid if section.centers == "all" else [c for c in section.centers if c in valid]
        centres = centres[:: section.stride]
        return [(c, list(range(c - half, c - half + span))) for c in centres]

    def limited(self, dataset, max_items: int):
        if max_items and len(dataset) > max_items:
            return dataset.sample(max_items, seed=self.cfg.seed)
        return dataset


@dataclass
class StageDef:
    name: str
    run: Callable[[StageContext], dict] | None
    section: Callable[[StudyConfig], dict]
    needs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    resumable: bool = False

    def unavailable(self) -> str | None:
        if self.run is None:
            return f"not available: the {self.name} stage is not wired into the pipeline in this emolens version"
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"not available: module {', '.join(missing)} is not part of this emolens version yet"
        return None


STAGES: dict[str, StageDef] = {}


def stage(name: str, section: Callable[[StudyConfig], dict], modules: tuple[str, ...] = (), resumable: bool = False):
    def wrap(fn: Callable[[StageContext], dict]) -> Callable[[StageContext], dict]:
        STAGES[name] = StageDef(name, fn, section, STAGE_NEEDS[name], modules, resumable)
        return fn

    return wrap


def _dump(model) -> dict:
    return model.model_dump(mode="json")


# -- readout ------------------------------------------------------------------------------------


@stage("readout", lambda c: {"calibrate": c.prompts.calibrate, **_dump(c.readout)})
def _readout(ctx: StageContext) -> dict:
    from emolens.data.corpus import write_ids
    from emolens.readout import readout

    lm = ctx.model.lm
    result = readout(lm, ctx.dataset, ctx.prompt, batch_size=ctx.cfg.batch_size, calibrate=ctx.cfg.prompts.calibrate,
                     progress=ctx.progress)
    result.frame.to_parquet(ctx.dir / "readout.parquet", index=False)
    write_ids(ctx.dir / "correct_ids.txt", result.correct_ids)
    metrics = {**result.metrics, "model": ctx.model.spec, "source_id": lm.source_id, "n_layers": lm.n_layers,
               "family": lm.sites.family, "dataset": ctx.dataset.name, "dataset_fingerprint": ctx.data.fingerprint,
               "prompt": ctx.cfg.prompts.model_dump(), "prompt_fingerprint": ctx.prompt.fingerprint()}
    dump_json(ctx.dir / "metrics.json", metrics)
    raw = result.metrics["raw"]
    return {"accuracy": raw.get("accuracy"), "n": raw.get("n"), "n_correct": len(result.correct_ids),
            "n_layers": lm.n_layers}


# -- extract ------------------------------------------------------------------------------------


@stage("extract", lambda c: {"items": c.items, "sites": c.sites, "layers": c.layers, "positions": c.positions,
                             **_dump(c.extract)},
       modules=("emolens.activations.extract", "emolens.activations.store"), resumable=True)
def _extract(ctx: StageContext) -> dict:
    from emolens.activations.extract import extract

    items = ctx.items()
    store = extract(ctx.model.lm, items, ctx.dir / "store", sites=ctx.cfg.sites, layers=ctx.cfg.layers,
                    positions=ctx.cfg.positions, spec=ctx.prompt, readout=False, dtype=ctx.cfg.extract.dtype,
                    batch_size=ctx.cfg.batch_size, chunk_size=ctx.cfg.extract.chunk_size, progress=ctx.progress)
    return {"n_items": len(store), "sites": store.sites, "shapes": {s: list(store.read(s).shape) for s in store.sites}}


# -- probe --------------------------------------------------------------------------------------


@stage("probe", lambda c: {"items": c.items, "seed": c.seed, "directions_site": c.steer.site, **_dump(c.probe)},
       modules=("emolens.activations.store", "emolens.probes.evaluation", "emolens.probes.probing"))
def _probe(ctx: StageContext) -> dict:
    """The study's probes through :func:`emolens.probes.probing.run_probing` (the path of ``emolens probe``).

    The store holds exactly the study's items, so every stored item is probed. Tasks: the 13-way
    emotion probe of each ``probe.probes`` kind (an MLP's rows are task ``emotion/mlp``) with the
    shuffled-label control, appraisal ridge probes at position -1 (the paper's), the human
    baseline, and directions at the steering site for the steer stage.
    """
    from emolens.activations.store import ActivationStore
    from emolens.probes import probing

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
                  C=p.C, alpha=p.alpha, n_boot=p.n_boot, max_iter=p.max_iter)
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
    probing.write_outputs(main, ctx.dir, figures=False)
    table = main.table
    best = table[(table.task == "emotion") & (table.metric == "accuracy")].sort_values("value").tail(1)
    summary = {"rows": len(table), "n_items": len(dataset)}
    if len(best):
        b = best.iloc[0]
        summary.update(best_site=b.site, best_layer=int(b.layer), best_accuracy=float(b.value))
    return summary


# -- causal analyses (emolens.causal.common*, emolens.causal.knockout) -----------------------------------------


def _causal_windows(ctx: StageContext, section) -> list:
    from emolens.causal.common import layer_windows

    out = []
    for span in section.spans:
        out += layer_windows(ctx.n_layers(), [span], [c for c, _ in ctx.windows(span, section)])
    return out


def _save_causal(ctx: StageContext, result, name: str) -> dict:
    frame = result.frame.copy()
    frame["head"] = frame["head"].astype("float64")  # nullable ints do not round-trip everywhere
    frame.to_parquet(ctx.dir / f"{name}.parquet", index=False)
    if result.pairs is not None:
        result.pairs.to_parquet(ctx.dir / "pairs.parquet", index=False)
    dump_json(ctx.dir / "info.json", result.info)
    return {"rows": len(frame), "conditions": len(result.conditions), **{k: v for k, v in result.info.items()
                                                                        if isinstance(v, (int, float, str))}}


_CAUSAL_SECTION = {"ablate": lambda c: {"items": c.items, "sites": c.sites, "positions": c.positions,
                                        "seed": c.seed, **_dump(c.ablate)},
                   "patch": lambda c: {"items": c.items, "sites": c.sites, "positions": c.positions,
                                       "seed": c.seed, **_dump(c.patch)},
                   "knockout": lambda c: {"items": c.items, "seed": c.seed, **_dump(c.knockout)}}


@stage("ablate", _CAUSAL_SECTION["ablate"], modules=("emolens.causal.common", "emolens.causal.ablation"))
def _ablate(ctx: StageContext) -> dict:
    from emolens.causal.ablation import ablate

    s = ctx.cfg.ablate
    items = ctx.limited(ctx.items(), s.max_items)
    result = ablate(ctx.model.lm, items, sites=ctx.cfg.sites, windows=_causal_windows(ctx, s),
                    positions=ctx.cfg.positions, kinds=s.kinds, spec=ctx.prompt, batch_size=ctx.cfg.batch_size,
                    seed=ctx.cfg.seed + 100, progress=ctx.progress)
    return _save_causal(ctx, result, "ablation")


@stage("patch", _CAUSAL_SECTION["patch"], modules=("emolens.causal.common", "emolens.causal.patching"))
def _patch(ctx: StageContext) -> dict:
    from emolens.causal.patching import patch

    s = ctx.cfg.patch
    items = ctx.limited(ctx.items(), s.max_items)
    result = patch(ctx.model.lm, items, pairs=s.pairs, sites=ctx.cfg.sites, windows=_causal_windows(ctx, s),
                   positions=ctx.cfg.positions, spec=ctx.prompt, batch_size=ctx.cfg.batch_size,
                   seed=ctx.cfg.seed + 100, progress=ctx.progress)
    return _save_causal(ctx, result, "patching")


@stage("knockout", _CAUSAL_SECTION["knockout"], modules=("emolens.causal.common", "emolens.causal.knockout"))
def _knockout(ctx: StageContext) -> dict:
    from emolens.causal.knockout import knockout

    s = ctx.cfg.knockout
    items = ctx.limited(ctx.items(), s.max_items)
    result = knockout(ctx.model.lm, items, keys=s.sources, queries=-1, windows=_causal_windows(ctx, s),
                      spec=ctx.prompt, batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    return _save_causal(ctx, result, "knockout")


# -- steering (emolens.steering) ---------------------------------------------------


def _steer_bank(ctx: StageContext, method: str, fit, layers: list[int]):
    """The directions the steer stage uses, or None to let :func:`steering.sweep` capture and fit
    them on ``fit`` itself. With ``holdout`` they are fitted on the fit split (``fit``) from the
    extract stage's residuals at the answer cue (as ``emolens steer --acts``); without, they are the
    probe stage's (fitted on every item, the paper's)."""
    from emolens.steering.directions import bank_from_file, bank_from_store

    s = ctx.cfg.steer
    try:
        if fit is not None:
            return bank_from_store(ctx.upstream["extract"] / "store", fit, layers, method, seed=ctx.cfg.seed)
        directions_file = ctx.upstream["probe"] / "directions.safetensors"
        if not directions_file.exists():
            raise EmolensError(f"the probe stage saved no directions at site {s.site!r}")
        bank = bank_from_file(directions_file, method)
        if not set(layers) <= set(bank.layers):
            raise EmolensError("directions file lacks some layers")
        return bank
    except EmolensError:
        where = "on the fit split" if fit is not None else "on every item (not in the probe stage)"
        ctx.notes.append(f"{method} directions captured from resid at position -1 {where}")
        return None


_STEER_MODULES = ("emolens.steering.apply", "emolens.steering.directions", "emolens.steering.generation",
                  "emolens.steering.sweep", "emolens.steering.theory")


@stage("steer", lambda c: {"items": c.items, "seed": c.seed, "sites": c.sites, "positions": c.positions,
                           **_dump(c.steer)}, modules=_STEER_MODULES)
def _steer(ctx: StageContext) -> dict:
    """Steering through :func:`emolens.steering.sweep.sweep` (the path of ``emolens steer``).

    With ``steer.holdout`` (default 0.5) the study's items are split by ``steering.fit_split``
    (seeded, label-stratified): directions are fitted on the fit part and steering is measured on
    (up to ``max_items`` of) the held-out part, so the table's ``fit`` is ``heldout``; with 0 the
    probe stage's directions (fitted on every item) steer the items, as the paper did. Generations
    steer ``gen_position`` in the window and beta of the best theory alignment (``gen_window``).
    """
    from emolens.labels import ALL_APPRAISALS
    from emolens.steering import theory
    from emolens.steering.directions import ConceptBank, parse_direction
    from emolens.steering.generation import steered_generations
    from emolens.steering.sweep import fit_split, sweep, window_layers

    s = ctx.cfg.steer
    lm = ctx.model.lm
    items = ctx.items()
    centres = [c for c, _ in ctx.windows(s.span, s)]
    if not centres:
        raise EmolensError(f"steer: no window of span {s.span} fits {ctx.n_layers()} layers with centers "
                           f"{s.centers}", "change steer.span or steer.centers")
    layers = sorted({x for c in centres for x in window_layers(c, s.span, ctx.n_layers())})
    fit, held = fit_split(items, s.holdout, ctx.cfg.seed) if s.holdout else (None, items)
    evaluate = ctx.limited(held, s.max_items)
    frames, terms, swept, info = [], {}, {}, {}
    for method in s.directions:
        bank = _steer_bank(ctx, method, fit, layers)
        names = bank.names if bank is not None else list(items.appraisal_names) + list(items.label_names)

        def defined(name: str, bank=bank, names=names) -> bool:
            return name in names and (bank is None or bank.is_defined(name))

        specs = [f"{e}+" for e in s.emotions if defined(e)]
        for d in s.appraisals:
            if all(defined(t.name) for t in parse_direction(d, ALL_APPRAISALS)):
                specs.append(d)
            else:
                ctx.notes.append(f"no {method} direction for {d!r} (its appraisals lack ratings here)")
        skipped = [e for e in s.emotions if f"{e}+" not in specs]
        if skipped:
            ctx.notes.append(f"no {method} direction for {skipped} (no fit items of that class)")
        if not specs:
            continue
        if bank is not None:  # only defined concepts: the saved directions file holds no NaN/zero vectors
            keep = [i for i, name in enumerate(bank.names) if defined(name)]
            bank = ConceptBank(bank.layers, [bank.names[i] for i in keep], bank.vectors[:, keep], bank.method,
                                  bank.info)
        res = sweep(lm, evaluate, specs, bank=bank, method=method, windows=centres, span=s.span, betas=s.betas,
                       scale=s.scale,
                       n_random=s.n_random, spec=ctx.prompt, fit_dataset=items if fit is None else fit,
                       batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed, progress=ctx.progress)
        frames.append(res.frame)
        terms.update({d: [(t.name, t.sign) for t in parse_direction(d, res.bank.names)] for d in specs})
        swept[method] = res
        info[method] = res.info
    if not frames:
        raise EmolensError("steer: no direction could be built", "check steer.emotions and the probe stage's items")
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(ctx.dir / "steering.parquet", index=False)
    dump_json(ctx.dir / "summary.json", info)
    first = next(iter(swept.values())).bank  # the directions used, readable by steering.bank_from_file
    if all(r.bank.layers == first.layers and r.bank.names == first.names for r in swept.values()):
        from emolens.probes.evaluation import save_directions

        save_directions(ctx.dir / "directions.safetensors", {f"bank/{m}": r.bank.vectors for m, r in swept.items()},
                        {"layers": first.layers, "names": first.names, "model": ctx.model.spec})
    summary: dict = {"rows": len(table), "n_items": len(evaluate), "n_fit": len(items if fit is None else fit),
                     "fit": sorted(set(table.fit)), "n_random": s.n_random}
    reference = theory.rating_profile(items)
    align = pd.DataFrame()
    if reference.notna().any().any():
        align, cells = theory.sweep_alignment(table, reference, terms)
        if len(align):
            align.to_parquet(ctx.dir / "alignment.parquet", index=False)
            cells.to_parquet(ctx.dir / "alignment_cells.parquet", index=False)
            head = align[align.metric == "alignment"].dropna(subset=["value"])
            if len(head):
                summary["best_alignment"] = float(head.value.max())
            best = align[align.metric == "best_alignment"].dropna(subset=["value"]).sort_values("value").tail(1)
            if len(best):
                b = best.iloc[0]
                summary.update(best_alignment=float(b.value), best_alignment_p=float(b.p_value),
                               best_window=int(b.window), best_beta=float(b.beta))
    if s.generations:
        # the generations take the method of the best alignment (else the first), at its best setting
        head = align[align.metric == "alignment"].dropna(subset=["value"]) if len(align) else align
        method = head.sort_values("value").method.iloc[-1] if len(head) else next(iter(swept))
        res = swept[method]
        at = theory.generation_setting(align[align.method == method] if len(align) else align, res.conditions,
                                       centres, s.gen_window, "last")
        chosen = theory.generation_conditions(res.conditions, *at, "last", s.gen_position)
        records = steered_generations(lm, res.dataset, chosen, n_items=s.generations, spec=ctx.prompt)
        gens = pd.DataFrame(records)
        gens["probs"] = gens["probs"].map(lambda d: json.dumps(d, sort_keys=True))
        gens.to_parquet(ctx.dir / "generations.parquet", index=False)
        summary.update(generations=len(gens), generation_method=method, generation_window_beta=list(at),
                       generation_position=s.gen_position, generations_flagged=int(gens.degenerate.sum()))
    return summary


# -- robustness ---------------------------------------------------------------------------------


#: Columns of ``robustness.parquet``: one tidy row per (variant, analysis, site, layer or window
#: centre, metric); ``layer`` is NaN for the readout, ``window_span`` 0 for readout and probe rows.
ROBUSTNESS_COLUMNS: tuple[str, ...] = ("variant", "template", "shots", "analysis", "site", "layer", "window_span",
                                       "kind", "metric", "value", "ci_low", "ci_high", "n", "chance")


def _robustness_section(c: StudyConfig) -> dict:
    out = {"variants": c.prompts.variants, "seed": c.seed, "separator": c.prompts.separator, "chat": c.prompts.chat,
           **_dump(c.robustness)}
    analyses = c.robustness.analyses
    if analyses:
        out["items"] = c.items
    if "probe" in analyses:
        out.update(sites=c.sites, layers=c.layers, extract=_dump(c.extract), probe=_dump(c.probe))
    return out


def _robustness_readout(ctx: StageContext, items, spec) -> tuple[pd.DataFrame, list[str]]:
    from emolens.readout import readout

    result = readout(ctx.model.lm, items, spec, batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    raw = result.metrics["raw"]
    rows = [{"analysis": "readout", "site": "", "metric": m, "value": raw[m],
             "ci_low": raw["accuracy_ci_low"] if m == "accuracy" else np.nan,
             "ci_high": raw["accuracy_ci_high"] if m == "accuracy" else np.nan, "n": raw["n"],
             "chance": raw["majority_baseline"] if m == "accuracy" else raw["chance"]}
            for m in ("accuracy", "balanced_accuracy", "macro_f1")]
    return pd.DataFrame(rows), list(result.correct_ids)


def _robustness_probe(ctx: StageContext, items, spec, store_dir: Path) -> pd.DataFrame:
    """The emotion probe at the answer cue per study site and layer, through the probe stage's path
    (:func:`emolens.activations.extract.extract` into a scratch store, :func:`emolens.probes.probing.run_probing`)."""
    from emolens.activations.extract import extract
    from emolens.probes import probing

    p = ctx.cfg.probe
    store = extract(ctx.model.lm, items, store_dir, sites=ctx.cfg.sites, layers=ctx.cfg.layers, positions=[-1],
                    spec=spec, readout=False, dtype=ctx.cfg.extract.dtype, batch_size=ctx.cfg.batch_size,
                    chunk_size=ctx.cfg.extract.chunk_size, progress=ctx.progress)
    dataset = items.subset(np.asarray(store.item_ids, dtype=object).astype(str))
    res = probing.run_probing(store, dataset, tasks=["emotion"], items="all", protocol=p.protocol, probe="logistic",
                              shuffled=False, k=p.k, seed=ctx.cfg.seed + 42, C=p.C, alpha=p.alpha, n_boot=p.n_boot,
                              directions=False, max_iter=p.max_iter, human_baseline=False)
    t = res.table[res.table.task == "emotion"]
    return pd.DataFrame({"analysis": "probe", "site": t.site, "layer": t.layer, "metric": t.metric, "value": t.value,
                         "ci_low": t.ci_low, "ci_high": t.ci_high, "n": t.n, "chance": t.chance})


def _robustness_causal(ctx: StageContext, analysis: str, items, spec) -> pd.DataFrame:
    """Zero ablation (``ablate``) or activation patching (``patch``) of ``robustness.sites`` at the
    answer cue over the robustness windows, through :mod:`emolens.causal.ablation` /
    :mod:`emolens.causal.patching` (the ablate and patch stages' functions)."""
    r = ctx.cfg.robustness
    common = dict(sites=r.sites, windows=_causal_windows(ctx, r), positions=[-1], spec=spec,
                  batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed + 100, progress=ctx.progress)
    if analysis == "ablate":
        from emolens.causal.ablation import ablate

        frame = ablate(ctx.model.lm, items, kinds=["zero"], **common).frame
    else:
        from emolens.causal.patching import patch

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
    from emolens.inputs.prompts import PAPER_PROMPT_VARIANTS

    r = ctx.cfg.robustness
    items = ctx.limited(ctx.dataset, r.limit)
    if {"ablate", "patch"} & set(r.analyses) and not _causal_windows(ctx, r):  # a config error fails the stage
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
        spec = ctx.cfg.prompt_spec(template, shots)
        rows, correct = _robustness_readout(ctx, items, spec)
        parts = [rows]
        analysed = items if ctx.cfg.items == "all" else \
            items.subset(correct, name=f"{items.name}-correct") if len(correct) else None
        if r.analyses and (analysed is None or len(analysed) < 2):
            ctx.notes.append(f"{name}: {len(correct)} correctly read items, too few for {', '.join(r.analyses)}")
            analysed = None
        for analysis in r.analyses if analysed is not None else ():
            try:
                if analysis == "probe":
                    parts.append(_robustness_probe(ctx, analysed, spec, partial / f"{name}.store"))
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
        _after_unit(ctx, name)
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(ctx.dir / "robustness.parquet", index=False)
    acc = table[(table.analysis == "readout") & (table.metric == "accuracy")]
    summary = {"variants": len(acc), "accuracy_min": float(acc.value.min()), "accuracy_max": float(acc.value.max()),
               "n_items": len(items), "analyses": ["readout", *r.analyses], "rows": len(table)}
    return summary


def _after_unit(ctx: StageContext, unit: str) -> None:
    """Called after each durable unit of a resumable stage (tests inject interruptions here)."""


# ----------------------------------------------------------------------------------------------
# keys, stage records, run folders


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stage_key(name: str, cfg: StudyConfig, model: ModelHandle, data: ResolvedData,
              upstream_keys: dict[str, str]) -> str:
    return _sha({"stage": name, "section": STAGES[name].section(cfg), "model": model.identity,
                 "model_dtype": model.dtype_name, "dataset": data.fingerprint,
                 "prompt": cfg.prompt_spec().fingerprint(), "upstream": upstream_keys, "emolens": __version__})


def read_stage(folder: Path) -> dict | None:
    path = folder / "stage.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def study_hash(cfg: StudyConfig, data: ResolvedData) -> str:
    """The run's identity: the config plus the data actually used (a fallback is another study)."""
    return _sha({"config": cfg.canonical(), "dataset": data.fingerprint})


def default_run_dir(cfg: StudyConfig, data: ResolvedData) -> Path:
    return Path(cfg.output) / f"{cfg.name}-{study_hash(cfg, data)[:8]}"


def claim_run_dir(run_dir: Path, cfg: StudyConfig, data: ResolvedData) -> dict:
    """Create or reopen a run folder; refuse one that holds another study or foreign files."""
    run_dir = Path(run_dir)
    ident = study_hash(cfg, data)
    meta_path = run_dir / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != RUN_FORMAT:
            raise EmolensError(f"{str(run_dir)!r} holds a run.json that is not an emolens run", "choose another --out")
        if meta.get("study_hash") != ident:
            raise EmolensError(
                f"{str(run_dir)!r} holds the run of a different study (config {meta.get('config', {}).get('name')!r}, "
                f"hash {str(meta.get('study_hash'))[:8]}; this one is {ident[:8]})",
                "choose another --out, or leave --out away to get a folder named after this config")
        return meta
    if run_dir.exists() and any(run_dir.iterdir()):
        raise EmolensError(f"{str(run_dir)!r} is not empty and holds no emolens run", "choose an empty or new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": RUN_FORMAT, "study_hash": ident, "created": _now(), "emolens": __version__,
            "config": cfg.model_dump(mode="json"), "dataset": {"spec": data.spec, "how": data.how,
                                                                "name": data.dataset.name,
                                                                "fingerprint": data.fingerprint,
                                                                "n_items": len(data.dataset)},
            "models": {model_slug(m): {"spec": m} for m in cfg.models}, "stages": {}}
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())
    dump_json(meta_path, meta)
    return meta


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _find_reusable(run_dir: Path, slug: str, name: str, key: str) -> Path | None:
    root = run_dir.parent
    if not root.exists():
        return None
    for sibling in sorted(root.iterdir()):
        if sibling == run_dir or not sibling.is_dir():
            continue
        folder = sibling / slug / name
        rec = read_stage(folder)
        if rec and rec.get("key") == key and rec.get("status") in DONE:
            return folder
    return None


# ----------------------------------------------------------------------------------------------
# running


@dataclass
class StageOutcome:
    model: str
    stage: str
    status: str  # done, reused, cached, unavailable, failed, skipped
    seconds: float = 0.0
    note: str = ""
    key: str = ""


def _prepare_folder(folder: Path, key: str, resumable: bool, echo) -> bool:
    """Clear or keep an interrupted folder, move a finished one of another key aside. Returns resumed."""
    rec = read_stage(folder)
    if rec is not None:  # finished, but for another key: keep it, out of the way
        aside = folder.parent / ".superseded" / f"{folder.name}-{str(rec.get('key'))[:8]}-{int(time.time())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.replace(aside)
        echo(f"  {folder.parent.name}/{folder.name}: inputs changed; previous result kept in {aside}")
        return False
    if not folder.exists():
        return False
    started = folder / ".started.json"
    same = started.exists() and json.loads(started.read_text()).get("key") == key
    if resumable and same:
        return True
    shutil.rmtree(folder)
    return False


def run_stage(ctx: StageContext, sdef: StageDef, echo=print) -> StageOutcome:
    folder = ctx.dir
    slug = ctx.model.slug
    rec = read_stage(folder)
    if rec and rec.get("key") == ctx.key and rec.get("status") in DONE:
        return StageOutcome(slug, sdef.name, "cached", float(rec.get("seconds", 0.0)), key=ctx.key)
    reason = sdef.unavailable()
    if reason:
        return StageOutcome(slug, sdef.name, "unavailable", note=reason, key=ctx.key)
    ctx.resumed = _prepare_folder(folder, ctx.key, sdef.resumable, echo)
    if not ctx.resumed:
        source = _find_reusable(folder.parents[1], slug, sdef.name, ctx.key)
        if source is not None:
            tmp = folder.parent / f".{folder.name}.reuse-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp, copy_function=_link_or_copy)
            tmp.replace(folder)
            old = read_stage(folder) or {}
            rec = {**old, "status": "reused", "reused_from": str(source), "reused_at": _now()}
            dump_json(folder / "stage.json", rec)
            return StageOutcome(slug, sdef.name, "reused", float(old.get("seconds", 0.0)),
                                note=f"from {source.parents[1].name}", key=ctx.key)
    folder.mkdir(parents=True, exist_ok=True)
    dump_json(folder / ".started.json", {"key": ctx.key, "started": _now()})
    start = time.perf_counter()
    started = _now()
    load_before = ctx.model.loaded
    summary = sdef.run(ctx)
    seconds = time.perf_counter() - start
    rec = {"stage": sdef.name, "model": ctx.model.spec, "key": ctx.key, "status": "done", "started": started,
           "finished": _now(), "seconds": round(seconds, 3), "resumed": ctx.resumed,
           "model_load_seconds": round(ctx.model.lm.load_seconds, 3) if ctx.model.loaded and not load_before else 0.0,
           "inputs": {"model": ctx.model.identity, "model_dtype": ctx.model.dtype_name,
                      "dataset": ctx.data.fingerprint, "prompt": ctx.prompt.fingerprint(),
                      "upstream": {k: (read_stage(v) or {}).get("key") for k, v in ctx.upstream.items()}},
           "section": STAGES[sdef.name].section(ctx.cfg), "emolens": __version__, "summary": summary,
           "notes": ctx.notes}
    (folder / ".started.json").unlink(missing_ok=True)
    dump_json(folder / "stage.json", rec)
    return StageOutcome(slug, sdef.name, "done", seconds, note="; ".join(ctx.notes), key=ctx.key)





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


def model_info(handle: ModelHandle) -> dict | None:
    """What run.json records about a loaded model (None when no stage loaded it)."""
    if not handle.loaded:
        return None
    info = {"source_id": handle.lm.source_id, "n_layers": handle.lm.n_layers,
            "load_seconds": round(handle.lm.load_seconds, 3)}
    if handle.lm.device_map:
        info["device_map"] = {k: str(v) for k, v in handle.lm.device_map.items()}
    return info


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


__all__ = ["STAGES", "STAGE_ORDER", "ModelHandle", "ResolvedData",
           "StageContext", "StageOutcome", "load_run", "model_info", "resolve_dataset", "run_step",
           "stage_dir", "stage_key"]
