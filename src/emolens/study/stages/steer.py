"""The ``steer`` stage: appraisal and emotion steering, its theory alignment and sample generations.

Directions come from the extract stage's store (held-out fit) or the probe stage's file;
:func:`emolens.steering.sweep.sweep` does the sweep, :mod:`emolens.steering.theory` the alignment.
"""

from __future__ import annotations

import json

import pandas as pd

from emolens.errors import EmolensError
from emolens.labels import ALL_APPRAISALS
from emolens.paths import dump_json
from emolens.probes.evaluation import save_directions
from emolens.steering import theory
from emolens.steering.directions import ConceptBank, bank_from_file, bank_from_store, parse_direction
from emolens.steering.generation import steered_generations
from emolens.steering.sweep import fit_split, sweep
from emolens.study.registry import StageContext, dump_section, stage


def _steer_bank(ctx: StageContext, method: str, fit, layers: list[int]):
    """The directions the steer stage uses, or None to let :func:`steering.sweep` capture and fit
    them on ``fit`` itself. With ``holdout`` they are fitted on the fit split (``fit``) from the
    extract stage's residuals at the answer cue (as ``emolens steer --acts``); without, they are the
    probe stage's (fitted on every item, the paper's)."""
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
                           **dump_section(c.steer)}, modules=_STEER_MODULES)
def _steer(ctx: StageContext) -> dict:
    """Steering through :func:`emolens.steering.sweep.sweep` (the path of ``emolens steer``).

    With ``steer.holdout`` (default 0.5) the study's items are split by ``steering.fit_split``
    (seeded, label-stratified): directions are fitted on the fit part and steering is measured on
    (up to ``max_items`` of) the held-out part, so the table's ``fit`` is ``heldout``; with 0 the
    probe stage's directions (fitted on every item) steer the items, as the paper did. Generations
    steer ``gen_position`` in the window and beta of the best theory alignment (``gen_window``).
    """
    s = ctx.cfg.steer
    lm = ctx.model.lm
    items = ctx.items()
    centres = [w.center for w in ctx.windows(s.span, s)]
    if not centres:
        raise EmolensError(f"steer: no window of span {s.span} fits {ctx.n_layers()} layers with centers "
                           f"{s.centers}", "change steer.span or steer.centers")
    layers = sorted({x for w in ctx.windows(s.span, s) for x in w.layers})
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
