"""The ``steer`` stage: appraisal and emotion steering, its theory alignment and sample generations.

Directions come from the extract stage's store (held-out fit) or the probe stage's file; the run
itself is :func:`emolens.steering.run.run_steering` and its files (tables and figures)
:func:`emolens.report.analysis_files.write_steering`, exactly as ``emolens steer`` does.
"""

from __future__ import annotations

from emolens.errors import EmolensError
from emolens.report.analysis_files import write_steering
from emolens.steering.directions import bank_from_file, bank_from_store, store_acts
from emolens.steering.run import SteerPlan, run_steering
from emolens.study.registry import StageContext, dump_section, stage


def _steer_bank(ctx: StageContext, method: str, fit, layers: list[int]):
    """The directions the steer stage uses, or None to let :func:`steering.sweep` capture and fit
    them on ``fit`` itself. With ``holdout`` they are fitted on the fit split (``fit``) from the
    extract stage's residuals at the answer cue (as ``emolens steer --acts``); without, they are the
    probe stage's (fitted on every item, the paper's)."""
    s = ctx.cfg.steer
    try:
        if fit is not None:
            return bank_from_store(ctx.upstream["extract"] / "store", fit, layers, method, seed=ctx.cfg.seed,
                                   max_iter=ctx.cfg.probe.max_iter)
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
                  "emolens.steering.run", "emolens.steering.sweep", "emolens.steering.theory")


@stage("steer", lambda c: {"items": c.items, "seed": c.seed, "sites": c.sites, "positions": c.positions,
                           "probe_max_iter": c.probe.max_iter, **dump_section(c.steer)}, modules=_STEER_MODULES)
def _steer(ctx: StageContext) -> dict:
    """Steering through :func:`emolens.steering.run.run_steering` (the path of ``emolens steer``).

    With ``steer.holdout`` (default 0.5) the study's items are split by ``steering.fit_split``
    (seeded, label-stratified): directions are fitted on the fit part and steering is measured on
    (up to ``max_items`` of) the held-out part, so the table's ``fit`` is ``heldout``; with 0 the
    probe stage's directions (fitted on every item) steer the items, as the paper did. Generations
    steer ``gen_position`` in the window and beta of the best theory alignment (``gen_window``).
    """
    s = ctx.cfg.steer
    windows = ctx.windows(s.span, s)
    if not windows:
        raise EmolensError(f"steer: no window of span {s.span} fits {ctx.n_layers()} layers with centers "
                           f"{s.centers}", "change steer.span or steer.centers")
    plan = SteerPlan(directions=[f"{e}+" for e in s.emotions] + list(s.appraisals), methods=list(s.directions),
                     windows=[w.center for w in windows], span=s.span, betas=s.betas, scale=s.scale,
                     n_random=s.n_random, n_emotion_null=s.n_emotion_null,
                     residualised=s.residualised, null_design=s.null_design, holdout=s.holdout,
                     max_items=s.max_items,
                     generations=s.generations,
                     gen_position=s.gen_position, gen_window=s.gen_window, skip_undefined=True,
                     max_iter=ctx.cfg.probe.max_iter,
                     batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed)

    def bank_for(method: str, fit, layers: list[int]):
        return _steer_bank(ctx, method, fit if s.holdout else None, layers)

    # the extract stage stored resid at the cue for every item, with this prompt: the nulls read it there
    acts = store_acts(ctx.upstream["extract"] / "store", ctx.prompt)
    run = run_steering(ctx.model.lm, ctx.items(), plan, spec=ctx.prompt, bank_for=bank_for, progress=ctx.progress,
                       reference_items=ctx.dataset, acts=acts)
    ctx.notes.extend(run.notes)
    write_steering(run, ctx.dir, directions_meta={"source_id": ctx.model.lm.source_id})
    keep = ("rows", "n_items", "n_fit", "n_random", "best_alignment", "best_alignment_p", "best_window",
            "best_beta", "n_settings", "best_alignment_p_beyond_emotion", "residualised_alignment",
            "residualised_p_beyond_emotion", "alignment_headline", "alignment_peak",
            "reference_n_per_emotion", "generations", "generation_method", "generation_window_beta",
            "generation_position", "generations_flagged", "null_design", "n_selection", "n_test", "selected_setting",
            "selected_setting_residualised")
    return {**{k: run.summary[k] for k in keep if k in run.summary}, "fit": sorted(set(run.table.fit))}
