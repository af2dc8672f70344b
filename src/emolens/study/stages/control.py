"""The ``control`` stage: ``emolens control`` inside a study (opt-in; see ``docs/control.md``).

The study's own labelled items supply the directions (``control.fit_items`` of them) and the
readout-retention check (``control.retention_items`` others, never the fit ones); the replies are
to the built-in sensitive messages. Generations are cached per condition in the stage folder, so
an interrupted stage resumes.
"""

from __future__ import annotations

from emolens.control.study import ControlConfig, run_control
from emolens.data.sensitive import load_neutral_text, load_sensitive
from emolens.errors import EmolensError
from emolens.study.registry import StageContext, dump_section, stage


@stage("control", lambda c: {"seed": c.seed, "dataset_limit": c.dataset.limit, **dump_section(c.control)},
       modules=("emolens.control.study",), resumable=True)
def _control(ctx: StageContext) -> dict:
    c = ctx.cfg.control
    items = ctx.dataset.subset([i for i, lab in enumerate(ctx.dataset.labels) if lab is not None])
    if len(items) < c.fit_items + 2:
        raise EmolensError(f"control: {len(items)} labelled items cannot give {c.fit_items} fit items and a "
                           "retention set", "lower control.fit_items or use more items")
    fit = items.sample(c.fit_items, seed=ctx.cfg.seed)
    rest = items.subset([i for i, x in enumerate(items.ids) if x not in set(fit.ids)])
    retention = ctx.limited(rest, c.retention_items)
    messages = load_sensitive()
    if c.messages:
        messages = messages.sample(c.messages, seed=ctx.cfg.seed)
    cfg = ControlConfig(directions=tuple(c.directions), betas=tuple(c.betas),
                        capability_betas=tuple(c.capability_betas), scale=c.scale, span=c.span,
                        form=c.form, max_new_tokens=c.max_new_tokens, batch_size=ctx.cfg.batch_size,
                        n_boot=c.n_boot, seed=ctx.cfg.seed)
    result = run_control(ctx.model.lm, messages, ctx.dir, fit, retention, load_neutral_text(), cfg,
                         overwrite=not ctx.resumed, progress=print if ctx.progress else (lambda _: None))
    v = result.info["verdict"]
    best = v.get("best_appraisal") or {}
    return {"n_messages": len(messages), "conditions": int(result.replies["condition"].nunique()),
            "form": result.info["form"], "layers": result.info["layers"], "best_appraisal": best.get("condition"),
            "versus_instruction": (v.get("versus_instruction") or {}).get("outcome")}
