"""``emolens steer``: push the residual stream along appraisal directions and measure what changes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.errors import EmolensError


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
    from emolens.steering.directions import bank_from_file, bank_from_store

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
    from emolens.activations.store import ActivationStore
    from emolens.probes.evaluation import load_directions

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


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def steer(
        model: str = typer.Option("gemma-3-270m", help="alias, hub id, local folder or .gguf file"),
        data: str = typer.Option("crowd-envent", help="crowd-envent, stimuli, or a CSV/TSV/JSONL/zip path"),
        out: Path = typer.Option(..., help="output folder"),
        direction: list[str] = typer.Option(["pleasantness+"], help="signed terms, e.g. pleasantness+,"
                                            "other_responsblt- (repeat the option for several directions)"),
        acts: str = typer.Option("", help="activation store folder (directions fitted on the fit split of its "
                                 "items) or directions.safetensors (every item steered) to take directions "
                                 "from (default: capture them here)"),
        method: str = typer.Option("diffmean", help="diffmean, probe (the paper) or pca"),
        partial: bool = typer.Option(False, help="project the kept-fixed appraisals out of each term"),
        fixed: str = typer.Option("", help="appraisals held fixed with --partial (default: the paper's four "
                                  "surgery appraisals not steered)"),
        windows: str = typer.Option("auto", help="window centre layers (0-indexed), e.g. 3,5,8, or auto"),
        span: int = typer.Option(3, help="layers per window"),
        beta: str = typer.Option("1,2,4", help="strengths"),
        scale: str = typer.Option("unit", help="unit (β in raw units, the paper) or relative (β × mean "
                                  "residual norm at the layer)"),
        positions: str = typer.Option("last", help="sweep positions: last and/or prompt (comma-separated); "
                                      "last runs on the shared-prefix fast path"),
        n_random: int = typer.Option(99, help="norm-matched random directions per condition, drawn with the fit "
                                     "activations' covariance (99: p-values down to 0.01)"),
        n_emotion_null: int = typer.Option(39, help="per direction, refits on ratings permuted within each emotion: "
                                           "the null of appraisal information beyond emotion"),
        residualised: bool = typer.Option(True, help="also steer directions refitted on ratings residualised on "
                                          "emotion, tested against within-emotion refits of the residuals"),
        holdout: float = typer.Option(0.5, help="share of items held out: directions are fitted on the rest "
                                      "and effects measured on these (seeded, label-stratified); 0 = fit and "
                                      "steer on all items, as the paper did"),
        control: str = typer.Option("auto", help="specificity-control appraisal, auto, or none"),
        reference: str = typer.Option("ratings", help="theory reference: ratings (z-scored mean rating per "
                                      "emotion) or classifier (human-baseline coefficients)"),
        limit: int = typer.Option(0, help="seeded label-stratified sample of N items (0 = all)"),
        generate: int = typer.Option(0, help="write steered continuations of this many (steered) items"),
        gen_position: str = typer.Option("generated", help="where generation steers: generated (the last "
                                         "prompt token and every generated token), last or prompt"),
        gen_window: str = typer.Option("best", help="window of the generations: best (the window and beta of "
                                       "the highest theory alignment), middle (largest beta), or a centre layer"),
        max_new_tokens: int = typer.Option(24, help="tokens per continuation"),
        seed: int = typer.Option(0, help="seed of the sample, random directions and bootstrap"),
        batch_size: int = typer.Option(16, help="items per forward"),
        max_rows: int = typer.Option(64, help="rows per full forward when conditions are stacked"),
        fast: bool = typer.Option(True, help="last-token steering on a shared KV prefix (--no-fast: full "
                                  "forwards, same numbers, for checking)"),
        device: str = typer.Option("auto", help="auto, cpu, cuda ..."),
        dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
        force: bool = typer.Option(False, help="overwrite an existing result in --out"),
        corpus: Corpus = None,
    ) -> None:
        """Steering sweep with random and specificity controls, theory alignment and steered generation."""
        import time

        from emolens.cli.readout import prepare_out_dir
        from emolens.inputs.prompts import PromptSpec
        from emolens.model.loading import load_model
        from emolens.report.steering_figures import plot_dose_response, plot_label_bars
        from emolens.steering import theory
        from emolens.steering.apply import POSITIONS, SCALES
        from emolens.steering.directions import METHODS, parse_direction
        from emolens.steering.run import SteerPlan, run_steering, write_outputs

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
        from_file = bool(acts) and _directions_file(acts) is not None  # fitted elsewhere: steer every item
        plan = SteerPlan(directions=dirs, methods=[method], windows=windows, span=span, betas=betas,
                         positions=sweep_pos, scale=scale, partial=partial, fixed=fixed_list, n_random=n_random,
                         n_emotion_null=n_emotion_null, residualised=residualised,
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
        run = run_steering(lm, dataset, plan, spec=spec, bank_for=bank_for, progress=True)
        seconds = time.perf_counter() - start
        figures = [plot_label_bars(run.table, name, out_dir / f"labels_{_slug(name)}.png") for name in run.terms]
        figures.append(plot_dose_response(run.table, out_dir / "dose_response.png"))
        write_outputs(run, out_dir, {"model": model, "source_id": lm.source_id, "data": data,
                                     "dataset_fingerprint": dataset.fingerprint(), "method": method,
                                     "partial": partial, "scale": scale, "seconds_sweep": round(seconds, 2),
                                     "figures": [str(f) for f in figures], "directions_from": provenance,
                                     "labels": list(dataset.label_names)},
                      {"source_id": lm.source_id, "directions_from": json.dumps(provenance)})
        align = run.alignment
        n_conditions = sum(len(r.conditions) for r in run.swept.values())
        line = (f"{n_conditions} conditions on {run.summary['n_items']} items ({run.summary['fit']} fit) "
                f"in {seconds:.1f}s")
        line += theory.headline(align)
        peak = next((p for p in run.summary.get("alignment_peak", {}).values() if p), None)
        if peak:
            line += (f"; alignment peaks at window {peak['peak_window']} (95% bootstrap interval of the peak's "
                     f"location {peak['window_ci_low']}-{peak['window_ci_high']})")
        typer.echo(f"{line}; results in {out_dir}")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else ("p" if ch == "+" else "m" if ch == "-" else "_")
                   for ch in text)
