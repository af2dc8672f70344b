"""Probing an activation store: which items, which labels, which slices -- and the outputs.

This module is the orchestration around the probe math of :mod:`emolens.probes.estimators` and
:mod:`emolens.probes.evaluation`: it reopens an extract store (:mod:`emolens.activations.store`), recovers the data
the store was extracted from (checked by fingerprint), picks the items (all, the model's correctly
read ones, or an id list), builds the labels of each task, runs the probes site by site and writes
one folder of results (``emolens probe``):

``probes.parquet``
    tidy rows (:data:`emolens.probes.evaluation.COLUMNS`) of tasks ``emotion`` (13-way probe on every
    layer x site x position), ``appraisal`` (ridge per appraisal, position -1 as in the paper),
    ``first_word`` (the control task), ``selectivity`` (emotion minus first-word, per slice and
    metric), ``<task>/shuffled`` (shuffled-label controls) and ``human_baseline``.
``directions.safetensors``
    per slice: ``emotion/probe``, ``emotion/diffmean``, ``appraisal/probe``, ``appraisal/diffmean``
    (fitted on all used items); metadata names the slices, emotions and appraisals (readable by
    :func:`emolens.steering.directions.bank_from_file`).
``human_baseline.json`` / ``human_baseline_coef.parquet``
    how well the human appraisal ratings alone predict the emotion (paper §5.4), and its weights.
``summary.json``, ``items.txt``
    which items were used and why, exclusions, timings, best slices. Figures (heatmaps, probe
    curves) are drawn from the table by :mod:`emolens.report.probe_figures`.

The first-word control (paper §5.5): the label is the first whitespace token of the text when it
is one of :data:`emolens.labels.FIRST_WORDS` (case-sensitive); other items are excluded and
counted. Here it is probed on the *same* activations as the emotion task (a Hewitt & Liang
control task), so selectivity is a per-slice difference; the paper instead re-ran the whole
pipeline with a first-word prompt -- probe a store extracted with such a template to get that.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from emolens.data.corpus import read_ids
from emolens.data.loading import load_dataset
from emolens.data.stimuli import load_stimuli
from emolens.errors import EmolensError, arg
from emolens.labels import APPRAISAL_PRESETS, FIRST_WORDS
from emolens.paths import cache_dir, dump_json
from emolens.probes import evaluation as pe
from emolens.probes.control_task import control_task_selectivity
from emolens.probes.directions import fit_directions
from emolens.probes.validity import probe_warnings

#: Task names accepted by ``tasks`` (``all`` = every one of them).
TASKS: tuple[str, ...] = ("emotion", "appraisal", "first-word")
PROBES: tuple[str, ...] = ("logistic", "mlp")
PROTOCOLS: tuple[str, ...] = ("paper", "cv")
#: Output file names.
TABLE, DIRECTIONS, SUMMARY = "probes.parquet", "directions.safetensors", "summary.json"
HUMAN_JSON, HUMAN_COEF, ITEMS = "human_baseline.json", "human_baseline_coef.parquet", "items.txt"


# ----------------------------------------------------------------------------------------------
# arguments


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"all"``, one task or a comma list -> tasks in :data:`TASKS` order (``first_word`` accepted)."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s.replace("_", "-") for s in items if s]
    if items == ["all"]:
        return list(TASKS)
    unknown = [s for s in items if s not in TASKS]
    if unknown or not items:
        raise EmolensError(f"unknown task(s) {unknown or items}", f"use 'all' or some of {list(TASKS)}")
    return [t for t in TASKS if t in items]


def parse_appraisals(spec: str | Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """``paper`` (20), ``all`` (21), ``none`` or ``a,b,c`` -> names, kept only where the data has them.

    A preset keeps the names the dataset has, plus the dataset's own appraisals that crowd-enVENT
    lacks (a user's corpus declares those on purpose, so they are never silently dropped); an
    explicit name the dataset lacks is an error.
    """
    if isinstance(spec, str) and spec == "none":
        return ()
    if isinstance(spec, str) and spec in APPRAISAL_PRESETS:
        own = [a for a in available if a not in APPRAISAL_PRESETS["all"]]
        return tuple(a for a in APPRAISAL_PRESETS[spec] if a in available) + tuple(own)
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [s for s in names if s]
    missing = [a for a in names if a not in available]
    if missing or not names:
        raise EmolensError(f"appraisal(s) {missing or names} not in the data",
                           f"use 'paper', 'all' or names from {list(available)}")
    return tuple(dict.fromkeys(names))


def first_word_labels(texts: Sequence[str], vocabulary: Sequence[str] = FIRST_WORDS) -> np.ndarray:
    """Id in ``vocabulary`` of each text's first whitespace token, ``-1`` where it is not listed."""
    index = {w: i for i, w in enumerate(vocabulary)}
    return np.array([index.get(t.split()[0], -1) if t.split() else -1 for t in texts], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# store, data and items


def dataset_for_store(store, data: str | Path | None = None, columns=None):
    """The store's items as an :class:`~emolens.data.corpus.EmotionDataset`, in store order.

    The manifest records the dataset's name, fingerprint and item ids, not its path. With
    ``data`` the dataset is loaded from there; without, built-in data (``stimuli``) and a
    crowd-enVENT copy that needs no download (``EMOLENS_CROWD_ENVENT`` or the cache) are tried.
    Either way the items are matched by id and the fingerprint must equal the manifest's.
    """
    ident = store.identity
    name = str(ident.get("dataset", ""))
    if data is None:
        if name.startswith("stimuli-"):
            full = load_stimuli(kind=name.split("-", 1)[1])
        elif name == "crowd-enVENT" and _crowd_envent_local():
            full = load_dataset("crowd-envent")
        else:
            raise EmolensError(f"store {str(store.root)!r} was extracted from dataset {name!r}, whose path the "
                               "store does not record", f"pass {arg('data')} with the file used for extraction")
        where = name
    else:
        full = load_dataset(data, columns)  # columns: a user's corpus options (emolens.data.loading.Columns)
        where = str(data)
    try:
        ds = full.subset(np.array(store.item_ids, dtype=object).astype(str))
    except EmolensError as exc:
        raise EmolensError(f"{arg('data', where)} does not hold the store's items ({exc})",
                           "pass the data the store was extracted from") from exc
    want = ident.get("dataset_fingerprint")
    if want and ds.fingerprint() != want:
        raise EmolensError(f"data {where!r} differs from what store {str(store.root)!r} was extracted from "
                           "(dataset fingerprint mismatch)",
                           f"pass the same {arg('data')} (and version) used for extraction")
    return ds


def _crowd_envent_local() -> bool:
    if os.environ.get("EMOLENS_CROWD_ENVENT"):
        return True
    return (cache_dir() / "data" / "crowd-enVent2023.zip").exists()


@dataclass
class ItemSelection:
    """The items a probe run uses: ids, their store rows and where the choice came from."""

    mode: str  # "all", "correct" or "file"
    ids: list[str]
    rows: np.ndarray
    source: str
    n_store: int


def select_items(store, items: str = "correct") -> ItemSelection:
    """``all``, ``correct`` (the store's readout, else ``correct_ids.txt`` beside it) or an id file."""
    n = len(store)
    if items == "all":
        return ItemSelection("all", store.item_ids, np.arange(n), "all store items", n)
    if items == "correct":
        if (store.root / "readout.parquet").exists():
            frame = store.readout()
            if list(frame["id"].astype(str)) != store.item_ids:
                raise EmolensError(f"the readout of store {str(store.root)!r} does not list the store's items",
                                   "re-extract the store")
            ids = frame.loc[frame["correct"].astype(bool), "id"].astype(str).tolist()
            source = str(store.root / "readout.parquet")
        elif (store.root / "correct_ids.txt").exists():
            ids = read_ids(store.root / "correct_ids.txt")
            source = str(store.root / "correct_ids.txt")
        else:
            raise EmolensError(f"store {str(store.root)!r} has no readout to tell correct items",
                               f"extract with {arg('readout', True)}, or pass {arg('items', 'all')} or an id file "
                               f"as {arg('items')}")
        mode = "correct"
    else:
        ids = read_ids(items)
        source, mode = str(items), "file"
        if len(set(ids)) != len(ids):
            raise EmolensError(f"id list {items!r} repeats ids", "list each item once")
    if not ids:
        raise EmolensError(f"no items selected ({source} lists none)", f"use {arg('items', 'all')} or another id list")
    rows = store.index_of(ids)
    order = np.argsort(rows, kind="stable")  # keep store order: contiguous memmap reads
    return ItemSelection(mode, [ids[i] for i in order], rows[order], source, n)


def site_stack(store, site: str, rows: np.ndarray,
               positions: Sequence[int] | None = None) -> tuple[np.ndarray, list[tuple[str, int, int]], list]:
    """``X [layers*positions, items, width]`` float32 for one site; slices; skipped span positions.

    Mean-pooled span positions (strings) are not probed (the result columns hold int positions);
    multi-dimensional widths (``heads``) are flattened. ``positions`` keeps only those stored positions.
    """
    arr = store.read(site)
    wanted = None if positions is None else set(positions)
    positions = store.positions
    keep = [j for j, p in enumerate(positions) if isinstance(p, int) and (wanted is None or p in wanted)]
    skipped = [p for p in positions if not isinstance(p, int)]
    if not keep:
        return np.zeros((0, len(rows), 0), np.float32), [], skipped
    data = np.asarray(arr[rows][:, :, keep], dtype=np.float32)  # [n, L, P, *w]
    n, L, P = data.shape[:3]
    X = np.ascontiguousarray(data.reshape(n, L * P, -1).transpose(1, 0, 2))
    layers = store.layers_of(site)
    slices = [(site, int(layers[i]), int(positions[keep[j]])) for i in range(L) for j in range(P)]
    return X, slices, skipped


# ----------------------------------------------------------------------------------------------
# the run


@dataclass
class ProbingResult:
    """Everything a run produced, before it is written (see :func:`write_outputs`)."""

    table: pd.DataFrame
    directions: dict[str, Any]
    metadata: dict[str, Any]
    summary: dict[str, Any]
    human: Any = None  # probe_eval.HumanBaseline or None
    items: list[str] = field(default_factory=list)


def run_probing(store, dataset, *, tasks: Sequence[str] = TASKS, items: str = "correct",
                protocol: str = "paper", probe: str = "logistic", standardize: bool = False,
                shuffled: bool = True, appraisals: str | Sequence[str] = "paper", k: int = 5, seed: int = 42,
                C: float = 1.0, alpha: float = 5.0, n_boot: int = 200, directions: bool = True,
                max_iter: int = 1000, positions: Sequence[int] | None = None,
                human_baseline: bool = True, direction_sites: Sequence[str] | None = None,
                log: Callable[[str], None] | None = None, device: str | None = None,
                slice_chunk: int | None = None) -> ProbingResult:
    """Probe every slice of ``store`` for ``tasks`` on the selected items (see the module docstring).

    ``dataset`` is the store's data in store order (:func:`dataset_for_store`). ``max_iter``
    caps the logistic L-BFGS iterations (probes and directions; the MLP's epochs are its own):
    raw activations of real models can need several hundred to converge (the paper's sklearn
    default stops at 100); ``summary.json`` reports how many directions fits converged.
    ``positions`` restricts the stored positions probed. ``human_baseline=False`` skips the
    ratings-only classifier; ``direction_sites`` fits directions only at those sites (default: all).
    ``device`` runs every probe and direction fit there (``"auto"``: CUDA when available; None:
    the CPU, as a memmapped store has no device), streaming ``slice_chunk`` slices at a time.
    """
    say = log or (lambda _m: None)
    tasks = parse_tasks(tasks)
    if probe not in PROBES:
        raise EmolensError(f"unknown probe {probe!r}", f"use one of {list(PROBES)}")
    if protocol not in PROTOCOLS:
        raise EmolensError(f"unknown protocol {protocol!r}", f"use one of {list(PROTOCOLS)}")
    if positions is not None:
        missing = [p for p in positions if p not in store.positions]
        if missing or not positions:
            raise EmolensError(f"positions {missing or list(positions)} are not in the store",
                               f"stored positions: {store.positions}")
    if list(dataset.ids) != store.item_ids:
        raise EmolensError("dataset items are not the store's items", "load it with dataset_for_store")
    sel = select_items(store, items)
    ds = dataset.subset(sel.rows)
    y = ds.label_ids
    K = len(ds.label_names)
    names = parse_appraisals(appraisals, ds.appraisal_names)
    if "appraisal" in tasks and not names:
        raise EmolensError("the data has none of the requested appraisals", f"pick {arg('appraisals')} the data has")
    Y = np.stack([ds.appraisal(a) for a in names], 1).astype(np.float64) if names else None
    rated = np.isfinite(Y).all(1) if Y is not None else np.zeros(len(ds), bool)
    fw = first_word_labels(ds.texts)
    labelled = y >= 0
    summary: dict[str, Any] = {
        "store": str(store.root), "model": store.identity.get("model"), "dataset": store.identity.get("dataset"),
        "dataset_fingerprint": store.identity.get("dataset_fingerprint"),
        "items": {"mode": sel.mode, "source": sel.source, "n_store": sel.n_store, "n_used": len(sel.ids),
                  "n_with_label": int(labelled.sum())},
        "tasks": tasks, "protocol": protocol, "probe": probe, "standardize": standardize, "shuffled": shuffled,
        "k": k, "seed": seed, "C": C, "alpha": alpha, "n_boot": n_boot, "seconds": {}, "notes": [],
    }
    if "emotion" in tasks and labelled.sum() < 2:
        raise EmolensError(f"only {int(labelled.sum())} selected items have an emotion label", "use more items")
    if "appraisal" in tasks:
        summary["appraisal"] = {"names": list(names), "n_rated": int(rated.sum()),
                                "n_excluded_missing_rating": int((~rated).sum()), "position": -1}
        if rated.sum() < max(10, k):
            raise EmolensError(f"only {int(rated.sum())} selected items have all {len(names)} appraisal ratings",
                               f"pick {arg('appraisals')} the data rates, or use more items")
        if -1 not in store.positions:
            raise EmolensError("the paper probes appraisals at position -1, which the store lacks",
                               f"extract with {arg('positions')} including -1")
    if "first-word" in tasks:
        summary["first_word"] = {"vocabulary": list(FIRST_WORDS), "n_included": int((fw >= 0).sum()),
                                 "n_excluded": int((fw < 0).sum()),
                                 "counts": {w: int((fw == i).sum()) for i, w in enumerate(FIRST_WORDS)}}
        if (fw >= 0).sum() < max(10, k):
            raise EmolensError(f"only {int((fw >= 0).sum())} selected items start with a first-word label",
                               f"use more items or {arg('tasks', 'emotion')}")
    say(f"{len(sel.ids)} items ({sel.mode}: {sel.source}); tasks {', '.join(tasks)}")

    common = dict(protocol=protocol, k=k, seed=seed, n_boot=n_boot)
    run_on = dict(device=device, slice_chunk=slice_chunk)
    ckw = dict(convergence=True, **common, **run_on)
    pkw = {"max_iter": max_iter} if probe == "logistic" else {}
    summary["max_iter"] = max_iter
    frames: list[pd.DataFrame] = []
    dirs: dict[str, list] = {}
    all_slices: list[tuple[str, int, int]] = []
    dir_slices: list[tuple[str, int, int]] = []  # slices of the direction tensors' rows
    conv_total = [0, 0]  # converged / fitted emotion direction probes
    timing = summary["seconds"]

    @contextmanager
    def timed(key: str):
        t0 = time.perf_counter()
        yield
        timing[key] = round(timing.get(key, 0.0) + time.perf_counter() - t0, 3)

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant targets give NaN metrics, not noise
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for site in store.sites:
            with timed("read"):
                X, slices, skipped = site_stack(store, site, sel.rows, positions)
            if skipped and "skipped_positions" not in summary:
                summary["skipped_positions"] = skipped
                summary["notes"].append(f"span positions {skipped} are not probed (mean-pooled spans)")
            if not slices:
                continue
            say(f"{site}: {len(slices)} slices x {X.shape[1]} items x {X.shape[2]}")
            if "emotion" in tasks:
                with timed("emotion"):
                    frames.append(pe.evaluate_classifier(
                        X, y, slices, task="emotion", probe=probe, C=C, n_classes=K, standardize=standardize,
                        shuffled=shuffled, drop_invalid=True, probe_kwargs=pkw, **ckw))
            if "first-word" in tasks:
                with timed("first_word"):
                    frames.append(pe.evaluate_classifier(
                        X, fw, slices, task="first_word", probe=probe, C=C, n_classes=len(FIRST_WORDS),
                        standardize=standardize, shuffled=shuffled, drop_invalid=True, probe_kwargs=pkw,
                        **ckw))
            if "emotion" in tasks and "first-word" in tasks:
                # selectivity against the Hewitt & Liang control task (random label per first-word type)
                with timed("control_task"):
                    try:
                        frames.append(control_task_selectivity(
                            X, y, [t.split()[0].lower() if t.split() else "" for t in ds.texts], slices,
                            protocol=protocol, k=k, seed=seed, C=C, n_classes=K, n_boot=n_boot, max_iter=max_iter))
                    except EmolensError as err:
                        summary["notes"].append(f"selectivity at {site} not computed: {err}")
            if "appraisal" in tasks:
                last = [i for i, s in enumerate(slices) if s[2] == -1]
                with timed("appraisal"):
                    frames.append(pe.evaluate_regressor(
                        X[last][:, rated], Y[rated], [slices[i] for i in last], list(names), alpha=alpha,
                        standardize=standardize,
                        strata=y[rated] if protocol == "cv" and (y[rated] >= 0).all() else None,
                        shuffled=shuffled, dtype=torch.float64, **common, **run_on))
            if directions and (direction_sites is None or site in direction_sites):
                with timed("directions"):
                    got, conv = _directions(X, y, Y, rated, K, C, alpha, standardize, max_iter, run_on)
                conv_total[0] += int(conv.sum())
                conv_total[1] += len(conv)
                for key, v in got.items():
                    dirs.setdefault(key, []).append(v)
                dir_slices += slices
            all_slices += slices
            del X
        if not all_slices:
            raise EmolensError(f"store {str(store.root)!r} has no int positions to probe",
                               f"extract with {arg('positions', (-1, -2))}")
        human = None
        if human_baseline and Y is not None and ("emotion" in tasks or "appraisal" in tasks):
            # human ratings -> emotion on every gold-labelled item of the data, not the selected (e.g. the
            # model's correct) ones: the baseline must not depend on the model
            Y_all = np.stack([dataset.appraisal(a) for a in names], 1).astype(np.float64)
            y_all = np.asarray(dataset.label_ids)
            ok = np.isfinite(Y_all).all(1) & (y_all >= 0)
            if ok.sum() >= max(10, k) and len(np.unique(y_all[ok])) > 1:
                with timed("human_baseline"):
                    human = pe.human_baseline(Y_all[ok], y_all[ok], appraisal_names=list(names),
                                              emotion_names=list(ds.label_names), C=C, standardize=standardize,
                                              **common)
                frames.append(human.results)
                counts = np.bincount(y_all[ok], minlength=len(ds.label_names))
                summary["human_baseline_n_per_emotion"] = {e: int(c) for e, c in zip(ds.label_names, counts,
                                                                                      strict=True)}
                thin = [e for e, c in zip(ds.label_names, counts, strict=True) if 0 < c < 20]
                if thin:
                    summary["notes"].append(f"human baseline: fewer than 20 items for {', '.join(thin)}")
            else:
                summary["notes"].append("human baseline skipped: too few items with ratings and labels")
    table = pd.concat(frames, ignore_index=True) if frames else pe.results_frame([])
    summary["converged"] = convergence_summary(table)
    unfinished = {t: c for t, c in summary["converged"].items() if c["slices_converged"] < c["slices"]}
    if unfinished:
        summary["notes"].append("some probe fits did not converge (table metric 'converged' < 1): " + ", ".join(
            f"{t} {c['slices_converged']}/{c['slices']} slices" for t, c in unfinished.items()))
    summary["best"] = best_slices(table)
    summary["warnings"] = probe_warnings(table, y if "emotion" in tasks else np.array([], dtype=np.int64),
                                         ds.label_names, fw if "first-word" in tasks else None)
    if human is not None:
        summary["human_baseline"] = {"accuracy": human.accuracy, "ci_low": human.ci_low, "ci_high": human.ci_high,
                                     "n": human.n}
    if conv_total[1]:
        summary["directions_converged"] = f"{conv_total[0]}/{conv_total[1]}"
    direction_tensors = {key: torch.cat(v).contiguous() for key, v in dirs.items()}
    metadata = {
        "slices": [list(s) for s in dir_slices], "emotions": list(ds.label_names), "appraisals": list(names),
        "store": str(store.root), "model": str(store.identity.get("model")), "items": sel.mode,
        "n_items": len(sel.ids), "fitted_on": "all used items (not a training split)", "C": C, "alpha": alpha,
        "standardize": standardize,
    }
    if probe == "mlp" and directions:
        summary["notes"].append("directions are logistic-probe weights (an MLP probe has no single direction)")
    return ProbingResult(table, direction_tensors, metadata, summary, human, sel.ids)


def _directions(X, y, Y, rated, K, C, alpha, standardize, max_iter, run_on):
    """Emotion probe weights and class diff-of-means, appraisal ridge weights and high-low means."""
    out, conv = {}, np.zeros(0, bool)
    valid = y >= 0
    if valid.sum() >= 2:
        fits: dict = {}
        out.update(fit_directions(X[:, valid], y[valid], n_classes=K, C=C, standardize=standardize,
                                  max_iter=max_iter, fits=fits, **run_on))
        conv = fits["emotion"].converged.numpy() if "emotion" in fits else conv
    if Y is not None and rated.sum() >= 2:
        # float64: with n < d the kernel Cholesky of raw activations (|x| ~ 1e4) fails in float32
        out.update(fit_directions(X[:, rated], ratings=Y[rated], alpha=alpha, standardize=standardize,
                                  dtype=torch.float64, **run_on))
    return out, conv


def convergence_summary(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per task: slices whose every fold fit met its stopping rule, and the share of all fits that
    did (from the table's ``converged`` rows)."""
    out: dict[str, dict[str, Any]] = {}
    rows = table[table.metric == "converged"]
    for task, grp in rows.groupby("task", sort=False):
        out[str(task)] = {"slices": len(grp), "slices_converged": int((grp["value"] >= 1).sum()),
                          "share_of_fits": round(float(grp["value"].mean()), 4)}
    return out


PRIMARY = {"emotion": "accuracy", "first_word": "accuracy", "selectivity": "normalised_accuracy", "appraisal": "r2",
           "human_baseline": "accuracy"}


def best_slices(table: pd.DataFrame) -> dict[str, Any]:
    """The best slice per task (and per appraisal) on the task's primary metric."""
    out: dict[str, Any] = {}
    for task, metric in PRIMARY.items():
        part = table[(table.task == task) & (table.metric == metric)].dropna(subset=["value"])
        if part.empty or task == "human_baseline":
            continue
        for target, grp in part.groupby("target", sort=False):
            b = grp.loc[grp["value"].idxmax()]
            rec = {"site": b.site, "layer": int(b.layer), "position": int(b.position), "metric": metric,
                   "value": float(b.value), "ci_low": float(b.ci_low), "ci_high": float(b.ci_high)}
            if task == "appraisal":
                out.setdefault("appraisal", {})[target] = rec
            else:
                out[task] = rec
    return out


# ----------------------------------------------------------------------------------------------
# outputs


def write_outputs(result: ProbingResult, out: str | Path) -> list[Path]:
    """Write the table, directions, human baseline, items and summary into ``out``.

    Figures are drawn from the table by :func:`emolens.report.probe_figures.write_probe_figures`,
    which ``emolens probe`` and the probe stage both call after this.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    result.table.to_parquet(out / TABLE, index=False)
    written.append(out / TABLE)
    if result.directions:
        pe.save_directions(out / DIRECTIONS, result.directions, result.metadata)
        written.append(out / DIRECTIONS)
    if result.human is not None:
        h = result.human
        rows = h.results
        dump_json(out / HUMAN_JSON, {
            "accuracy": h.accuracy, "ci_low": h.ci_low, "ci_high": h.ci_high, "n": h.n,
            "chance": float(rows[rows.metric == "accuracy"].chance.iloc[0]),
            "metrics": {r.metric: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "chance": r.chance}
                        for r in rows.itertuples()},
            "appraisals": list(h.coef.columns), "emotions": list(h.coef.index),
            "protocol": result.summary["protocol"],
            "what": "logistic regression (C as the probes) from the human appraisal ratings to the gold emotion "
                    "(paper section 5.4)"})
        coef = h.coef.copy()
        coef.insert(0, "intercept", h.intercept.replace(-np.inf, np.nan))
        coef.index.name = "emotion"
        coef.reset_index().to_parquet(out / HUMAN_COEF, index=False)
        written += [out / HUMAN_JSON, out / HUMAN_COEF]
    (out / ITEMS).write_text("".join(f"{i}\n" for i in result.items))
    written.append(out / ITEMS)
    result.summary["files"] = sorted(p.name for p in written) + [SUMMARY]
    dump_json(out / SUMMARY, result.summary)
    return written + [out / SUMMARY]


def summary_lines(result: ProbingResult) -> list[str]:
    """A few human-readable lines for the CLI."""
    s = result.summary
    lines = [f"{s['items']['n_used']} items ({s['items']['mode']}); {len(result.table)} rows"]
    best = s.get("best", {})
    flags = s.get("warnings", [])
    for task in ("emotion", "first_word", "selectivity"):
        if task in best:
            b = best[task]
            flagged = any(w.startswith("emotion" if task == "emotion" else "first-word") for w in flags) or \
                (task == "selectivity" and bool(flags))
            lines.append(f"best {task}: {b['value']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] at {b['site']} "
                         f"layer {b['layer']} position {b['position']}" + (" (NOT A FINDING: see warning)"
                                                                          if flagged else ""))
    if "first_word" in s:
        lines.append(f"first-word control: {s['first_word']['n_included']} items, "
                     f"{s['first_word']['n_excluded']} excluded (first word not in the vocabulary)")
    if "appraisal" in best:
        top = sorted(best["appraisal"].items(), key=lambda kv: -kv[1]["value"])[:3]
        lines.append("best appraisal R²: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in top))
    if "human_baseline" in s:
        h = s["human_baseline"]
        lines.append(f"human baseline: {h['accuracy']:.3f} [{h['ci_low']:.3f}, {h['ci_high']:.3f}] (n={h['n']})")
    lines += [f"WARNING: {w}" for w in flags]
    return lines
