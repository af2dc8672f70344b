"""The causal stages: ``ablate``, ``patch`` and ``knockout`` over the study's layer windows.

Each calls its analysis' function in :mod:`emolens.causal` and writes its files through
:func:`emolens.report.analysis_files.write_causal`, as ``emolens ablate|patch|knockout`` do: the
tidy table, the pairs (patching), ``info.json`` and the heatmaps. :func:`causal_windows` is shared
with the robustness stage.
"""

from __future__ import annotations

from emolens.causal.ablation import ablate
from emolens.causal.knockout import knockout
from emolens.causal.patching import patch
from emolens.engine.windows import Window
from emolens.report.analysis_files import write_causal
from emolens.study.registry import StageContext, dump_section, stage


def causal_windows(ctx: StageContext, section) -> list[Window]:
    """The layer windows of every span in ``section`` whose centre the section asks for."""
    return [w for span in section.spans for w in ctx.windows(span, section)]


def save_causal(ctx: StageContext, result) -> dict:
    """Write a causal result as ``emolens ablate|patch|knockout`` does; return the stage summary."""
    _, figures = write_causal(result, ctx.dir)
    return {"rows": len(result.frame), "conditions": len(result.conditions), "figures": [f.name for f in figures],
            **{k: v for k, v in result.info.items() if isinstance(v, (int, float, str))}}


_CAUSAL_SECTION = {"ablate": lambda c: {"items": c.items, "sites": c.sites, "positions": c.positions,
                                        "seed": c.seed, **dump_section(c.ablate)},
                   "patch": lambda c: {"items": c.items, "sites": c.sites, "positions": c.positions,
                                       "seed": c.seed, **dump_section(c.patch)},
                   "knockout": lambda c: {"items": c.items, "seed": c.seed, **dump_section(c.knockout)}}


@stage("ablate", _CAUSAL_SECTION["ablate"], modules=("emolens.causal.common", "emolens.causal.ablation"))
def _ablate(ctx: StageContext) -> dict:
    s = ctx.cfg.ablate
    items = ctx.limited(ctx.items(), s.max_items)
    result = ablate(ctx.model.lm, items, sites=ctx.cfg.sites, windows=causal_windows(ctx, s),
                    positions=s.positions or ctx.cfg.positions, kinds=s.kinds, spec=ctx.prompt,
                    batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed + 100, progress=ctx.progress)
    return save_causal(ctx, result)


@stage("patch", _CAUSAL_SECTION["patch"], modules=("emolens.causal.common", "emolens.causal.patching"))
def _patch(ctx: StageContext) -> dict:
    s = ctx.cfg.patch
    items = ctx.limited(ctx.items(), s.max_items)
    result = patch(ctx.model.lm, items, pairs=s.pairs, sites=ctx.cfg.sites, windows=causal_windows(ctx, s),
                   positions=s.positions or ctx.cfg.positions, spec=ctx.prompt,
                   batch_size=ctx.cfg.batch_size, seed=ctx.cfg.seed + 100, progress=ctx.progress)
    return save_causal(ctx, result)


@stage("knockout", _CAUSAL_SECTION["knockout"], modules=("emolens.causal.common", "emolens.causal.knockout"))
def _knockout(ctx: StageContext) -> dict:
    s = ctx.cfg.knockout
    items = ctx.limited(ctx.items(), s.max_items)
    result = knockout(ctx.model.lm, items, keys=s.sources, queries=-1, windows=causal_windows(ctx, s),
                      spec=ctx.prompt, batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    return save_causal(ctx, result)
