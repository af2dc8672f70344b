"""Report section: appraisal neurons (significant neurons per layer, top neurons, R² vs k, ablation, pairs)."""

from __future__ import annotations

import html

import pandas as pd

from emolens.report.page import absent, img, table_html
from emolens.report.runs import ModelRun
from emolens.report.section_registry import section

SHOWN = ("pleasantness", "other_responsblt", "self_responsblt")


def top_neurons(table: pd.DataFrame, appraisals=SHOWN, k: int = 5) -> pd.DataFrame:
    """The ``k`` strongest neurons (by rank) of each shown appraisal, with r, partial r, q and interval."""
    rows = table[table["appraisal"].isin(appraisals) & (table["rank"] <= k)]
    cols = ["appraisal", "rank", "layer", "neuron", "r", "ci_lo", "ci_hi", "q", "partial_r", "partial_q"]
    return rows.sort_values(["appraisal", "rank"])[cols]


def sparse_summary(sparse: pd.DataFrame, appraisals=SHOWN, ks=(1, 16)) -> pd.DataFrame:
    """R² (with its 95% held-out interval where the table has one) at a few k and dense, shown appraisals."""
    rows = sparse[sparse["appraisal"].isin(appraisals) & (sparse["k"].isin(ks) | (sparse["kind"] == "dense"))]
    cols = [c for c in ("appraisal", "layer", "kind", "k", "r2", "r2_lo", "r2_hi", "n_train", "n_test") if c in rows]
    return rows.sort_values(["appraisal", "layer", "k"])[cols]


@section("neurons", "Appraisal neurons", 80)
def neurons_section(mr: ModelRun) -> str:
    ok, why = mr.stage_status("neurons")
    folder = mr.run_dir / mr.slug / "neurons"
    if not ok or not (folder / "neurons.parquet").exists():
        return absent(f"No neuron tables: {why or 'neurons.parquet is missing'}.")
    table = pd.read_parquet(folder / "neurons.parquet")
    n_items = int(table.attrs.get("n_items", 0)) if table.attrs else 0
    sig = int((table["q"] < 0.05).sum())
    psig = int((table["partial_q"] < 0.05).sum())
    text = (f"{sig} neuron-appraisal pairs at q < 0.05 (Benjamini-Hochberg across all neurons per appraisal); "
            f"{psig} after partialling out the emotion label." + (f" {n_items} items." if n_items else ""))
    body = f'<p class="summary">{html.escape(text)}</p>'
    for name, alt in (("neurons_significant.png", "significant neurons"), ("neurons_sparse.png", "R² vs k"),
                      ("neurons_ablation.png", "ablation vs random sets")):
        if (folder / name).exists():
            body += img((folder / name).read_bytes(), alt)
    body += "<h3>Top neurons</h3>" + table_html(top_neurons(table))
    if (folder / "sparse.parquet").exists():
        body += "<h3>Held-out R² of sparse (top-k) and dense probes</h3>" + table_html(
            sparse_summary(pd.read_parquet(folder / "sparse.parquet")))
    if (folder / "ablation.parquet").exists():
        ablation = pd.read_parquet(folder / "ablation.parquet")
        cols = [c for c in ("appraisal", "target", "k", "n_items", "n_sets", "effect", "effect_lo", "effect_hi",
                            "random_effect", "difference", "difference_lo", "difference_hi", "p", "note")
                if c in ablation]
        body += "<h3>Mean ablation vs matched random sets</h3>" + table_html(ablation[cols])
    if (folder / "pairs.parquet").exists():
        body += "<h3>Minimal-pair agreement (Spearman, sign-flip p)</h3>" + table_html(
            pd.read_parquet(folder / "pairs.parquet"))
    return body
