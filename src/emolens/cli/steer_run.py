"""The torch side of ``emolens steer``: check the settings, load, sweep, write, summarise.

:mod:`emolens.cli.steer` declares the command; it imports this module when the command runs, so
``emolens --help`` never loads torch, and the imports here show what steering from the CLI uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from emolens.activations.store import ActivationStore
from emolens.cli.options import resolve_batch_size
from emolens.cli.readout import prepare_out_dir
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec
from emolens.model.loading import load_model
from emolens.probes.evaluation import load_directions
from emolens.report.analysis_files import write_steering
from emolens.steering import theory
from emolens.steering.apply import POSITIONS, SCALES
from emolens.steering.directions import METHODS, bank_from_file, bank_from_store, parse_direction, store_acts
from emolens.steering.run import SteerPlan, run_steering
from emolens.steering.selection import DESIGNS


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise EmolensError(f"bad {what} {text!r}", "write numbers separated by commas, e.g. 1,2,4") from exc
    if not values:
        raise EmolensError(f"no {what} given", "write numbers separated by commas, e.g. 1,2,4")
    return values


def _directions_file(acts: str) -> Path | None:
    """The ``directions.safetensors`` that ``--acts`` names, or None (an activation store)."""
    path = Path(acts)
    if path.suffix == ".safetensors":
        return path
    return path / "directions.safetensors" if (path / "directions.safetensors").exists() else None


def _bank(acts: str, lm, dataset, layers, method, seed):
    path = Path(acts)
    file = _directions_file(acts)
    if file is not None:
        return bank_from_file(file, method)
    if not path.exists():
        raise EmolensError(f"--acts {acts!r} does not exist", "pass an activation store folder or a .safetensors file")
    return bank_from_store(path, dataset, layers, method, seed=seed)


def directions_provenance(acts: str, lm, bank) -> dict:
    """Where ``--acts`` directions come from; refuses another model's (source id or width differ).

    Directions fitted on one model are meaningless in another's residual stream even when the
    widths agree, so a recorded source id must match; a width mismatch is refused in any case.
    """
    width = int(lm.sites.width("resid")[0])
    file = _directions_file(acts)
    if file is None:
        ident = ActivationStore.open(acts).identity
        source, model = ident.get("source_id"), ident.get("model")
        where = {"kind": "activation store", "path": str(acts)}
    else:
        _, meta = load_directions(file)
        source, model = meta.get("source_id"), meta.get("model")
        where = {"kind": "directions file", "path": str(file)}
    got = int(bank.vectors.shape[-1])
    if got != width:
        raise EmolensError(f"--acts {acts!r} holds directions of width {got} (model {model or 'unrecorded'}), but "
                           f"{lm.spec} has width {width}", "fit directions on this model: extract a store with it")
    if source is not None and str(source) != str(lm.source_id):
        raise EmolensError(f"--acts {acts!r} comes from {model} ({source}), not {lm.spec} ({lm.source_id})",
                           "use a store or directions file made with this model")
    return {**where, "model": model, "source_id": source, "checked": "source id" if source else "width only"}


def steer(*, model, data, out, direction, acts, method, partial, fixed, windows, span, beta, scale, positions,
          n_random, n_emotion_null, residualised, null_design, holdout, control, reference, limit, generate,
          gen_position, gen_window, max_new_tokens, seed, batch_size, max_rows, fast, device, dtype, force,
          corpus) -> None:
    if method not in METHODS:
        raise EmolensError(f"unknown method {method!r}", f"use one of {list(METHODS)}")
    if scale not in SCALES:
        raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")
    if reference not in ("ratings", "classifier"):
        raise EmolensError(f"unknown reference {reference!r}", "use ratings or classifier")
    pos = [p.strip() for p in positions.split(",") if p.strip()]
    for p in pos + [gen_position]:
        if p not in POSITIONS:
            raise EmolensError(f"unknown position {p!r}", f"use {list(POSITIONS)}")
    sweep_pos = [p for p in pos if p != "generated"] or ["last"]  # 'generated' here: the old spelling
    if null_design not in DESIGNS:
        raise EmolensError(f"unknown --null-design {null_design!r}", f"use one of {list(DESIGNS)}")
    if not 0 <= holdout < 1:
        raise EmolensError(f"--holdout {holdout} is outside [0, 1)", "pass e.g. 0.5, or 0 for all items")
    if gen_window not in ("best", "middle") and not gen_window.lstrip("-").isdigit():
        raise EmolensError(f"bad --gen-window {gen_window!r}", "use best, middle or a centre layer")
    betas = _floats(beta, "beta")
    dirs = [d for spec in direction for d in spec.split(";") if d.strip()]
    if n_random < 0:
        raise EmolensError(f"--n-random {n_random} is negative", "pass 0 (no random controls) or more; 19 lets "
                           "the alignment p-value reach 0.05")
    dataset = corpus.load(data, limit, seed)
    spec = corpus.prompt_for(PromptSpec(), dataset)
    known = list(dataset.appraisal_names) + list(dataset.label_names)
    for d in dirs:
        parse_direction(d, known)  # bad syntax fails before loading
    fixed_list = [f.strip() for f in fixed.split(",") if f.strip()] or None
    for f in fixed_list or []:
        if f not in known:
            raise EmolensError(f"unknown appraisal {f!r} in --fixed", f"use one of {known}")
    out_dir = prepare_out_dir(out, force, marker="steering.parquet")
    lm = load_model(model, dtype=dtype, device=device)
    batch_size = resolve_batch_size(batch_size, lm)
    from_file = bool(acts) and _directions_file(acts) is not None  # fitted elsewhere: steer every item
    plan = SteerPlan(directions=dirs, methods=[method], windows=windows, span=span, betas=betas,
                     positions=sweep_pos, scale=scale, partial=partial, fixed=fixed_list, n_random=n_random,
                     n_emotion_null=n_emotion_null, residualised=residualised, null_design=null_design,
                     control=None if control == "none" else control,
                     holdout=holdout, fit_given=from_file,
                     reference=reference, generations=generate, gen_position=gen_position,
                     gen_window=gen_window if gen_window in ("best", "middle") else int(gen_window),
                     max_new_tokens=max_new_tokens, batch_size=batch_size, max_rows=max_rows,
                     fast=None if fast else False, seed=seed)
    provenance = {"kind": "fitted here", "model": model, "source_id": lm.source_id}

    def bank_for(method_: str, fit, layers: list[int]):
        nonlocal provenance
        if not acts:
            return None
        bank = _bank(acts, lm, fit, layers, method_, seed)
        provenance = directions_provenance(acts, lm, bank)
        return bank

    start = time.perf_counter()
    # a store extracted with this prompt also holds the residuals the nulls need: read, not captured again
    store = store_acts(acts, spec) if acts and not from_file else None
    run = run_steering(lm, dataset, plan, spec=spec, bank_for=bank_for, progress=True, acts=store)
    seconds = time.perf_counter() - start
    write_steering(run, out_dir, {"model": model, "source_id": lm.source_id, "data": data,
                                  "dataset_fingerprint": dataset.fingerprint(), "method": method,
                                  "partial": partial, "scale": scale, "seconds_sweep": round(seconds, 2),
                                  "directions_from": provenance, "labels": list(dataset.label_names)},
                   {"source_id": lm.source_id, "directions_from": json.dumps(provenance)})
    align = run.alignment
    n_conditions = sum(len(r.conditions) for r in run.swept.values())
    line = f"{n_conditions} conditions on {run.summary['n_items']} items ({run.summary['fit']} fit)"
    tested = run.test_table
    if tested is not None:  # the selected design's nulls, at the chosen setting on the test items
        n_test = tested[tested.beta != 0].drop_duplicates(["direction", "window", "beta", "position"]).shape[0]
        line += f", then {n_test} at the chosen setting on {run.summary['n_test']} test items"
    line += f" in {seconds:.1f}s"
    line += theory.headline(align)
    peak = next((p for p in run.summary.get("alignment_peak", {}).values() if p), None)
    if peak:
        line += (f"; alignment peaks at window {peak['peak_window']} (95% bootstrap interval of the peak's "
                 f"location {peak['window_ci_low']}-{peak['window_ci_high']})")
    typer.echo(f"{line}; results in {out_dir}")
