"""The ``neurons`` stage: appraisal neurons of each model (what ``emolens neurons`` computes).

Writes ``neurons.parquet`` (per layer x neuron x appraisal: r, partial r, q, rank, intervals),
``significant.csv``, ``sparse.parquet``, ``ablation.parquet`` and, with ``pairs``,
``pairs.parquet`` / ``pair_neurons.parquet``, plus the figures; the report's neuron section reads
them. Opt-in (list it in ``stages``): one extra pass over the items plus the ablation forwards.
"""

from __future__ import annotations

from emolens.labels import APPRAISAL_PRESETS
from emolens.neurons import neuron_pass, neuron_table, significant_counts
from emolens.neurons.ablation import ablation_table
from emolens.neurons.pairs import pairs_table
from emolens.neurons.sparse import sparse_table
from emolens.report.neuron_figures import plot_neuron_figures
from emolens.study.registry import StageContext, dump_section, stage


def _neurons_section(c) -> dict:
    return {"seed": c.seed, "items": c.items, **dump_section(c.neurons)}


def _probe_layers(setting, n_layers: int) -> list[int]:
    if setting == "auto":
        return sorted({round(i * (n_layers - 1) / 3) for i in range(4)})
    return sorted({int(x) % n_layers for x in setting})


@stage("neurons", _neurons_section)
def _neurons(ctx: StageContext) -> dict:
    n = ctx.cfg.neurons
    lm = ctx.model.lm
    data = ctx.limited(ctx.dataset, n.limit)
    names = list(APPRAISAL_PRESETS[n.appraisals]) if isinstance(n.appraisals, str) else list(n.appraisals)
    names = [a for a in names if a in data.appraisal_names]
    result = neuron_pass(lm, data, names, ctx.prompt, keep_layers=_probe_layers(n.probe_layers, lm.n_layers),
                         batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    table = neuron_table(result)
    counts = significant_counts(table)
    sparse = sparse_table(result, n.ks or None, seed=ctx.cfg.seed)
    ablated = [a for a in n.ablate if a in names]
    ablation = ablation_table(lm, data, result, table, ablated, k=n.ablate_k, n_sets=n.random_sets,
                              max_items=n.ablation_items, spec=ctx.prompt, batch_size=ctx.cfg.batch_size,
                              seed=ctx.cfg.seed) if ablated else None
    if n.pairs:
        agreement, top = pairs_table(lm, table, result.layers, names, ctx.prompt, ctx.cfg.batch_size,
                                     seed=ctx.cfg.seed)
        agreement["independent"] = not data.name.startswith("stimuli")
        agreement.to_parquet(ctx.dir / "pairs.parquet", index=False)
        top.to_parquet(ctx.dir / "pair_neurons.parquet", index=False)
    table.to_parquet(ctx.dir / "neurons.parquet", index=False)
    counts.to_csv(ctx.dir / "significant.csv")
    sparse.to_parquet(ctx.dir / "sparse.parquet", index=False)
    if ablation is not None:
        ablation.to_parquet(ctx.dir / "ablation.parquet", index=False)
    plot_neuron_figures(ctx.dir, counts, sparse, ablation)
    return {"n_items": int(result.moments.n), "n_significant": int((table["q"] < 0.05).sum()),
            "n_partial_significant": int((table["partial_q"] < 0.05).sum()),
            "neurons_per_layer": int(lm.sites.width("neurons")[0])}
