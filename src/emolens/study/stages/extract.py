"""The ``extract`` stage: activations at the study's sites, layers and positions into a store.

The store resumes chunk by chunk, so this stage is resumable: a killed run keeps what it wrote.
"""

from __future__ import annotations

from emolens.activations.extract import extract
from emolens.study.registry import StageContext, dump_section, stage


@stage("extract", lambda c: {"items": c.items, "sites": c.sites, "layers": c.layers, "positions": c.positions,
                             **dump_section(c.extract)},
       modules=("emolens.activations.extract", "emolens.activations.store"), resumable=True)
def _extract(ctx: StageContext) -> dict:
    items = ctx.items()
    store = extract(ctx.model.lm, items, ctx.dir / "store", sites=ctx.cfg.sites, layers=ctx.cfg.layers,
                    positions=ctx.cfg.positions, spec=ctx.prompt, readout=False, dtype=ctx.cfg.extract.dtype,
                    batch_size=ctx.cfg.batch_size, chunk_size=ctx.cfg.extract.chunk_size, progress=ctx.progress)
    return {"n_items": len(store), "sites": store.sites, "shapes": {s: list(store.read(s).shape) for s in store.sites}}
