"""The cross-model similarity part of ``emolens compare``: CKA, RSA and transfer of each model pair.

Takes what :func:`emolens.study.similarity.pair_similarity` measured (objects with ``model_a``,
``model_b``, ``tables`` and ``why``), writes each pair's tables and CKA heatmap next to the page,
and states every number with its interval or p-value: CKA at matched relative depth with its
item-bootstrap interval and item-shuffle p, RSA with Mantel p and Holm across each curve's layers,
and transfer with the native and transferred intervals side by side.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from emolens.report.crossmodel_figures import plot_cka
from emolens.report.page import table_html
from emolens.stats.multiplicity import adjust

__all__ = ["similarity_html"]

#: Transfer rows the page lists (every appraisal is in the pair's ``transfer.parquet``).
TRANSFER_MEASURES = ("emotion_accuracy", "pleasantness_r2", "self_responsblt_r2", "other_responsblt_r2")


def _rsa_rows(rsa: pd.DataFrame) -> pd.DataFrame:
    """RSA rows with Holm-adjusted p across the layers of each curve (model vs model, each model vs humans)."""
    rsa = rsa.copy()
    rsa["p_holm"] = float("nan")
    for _, idx in rsa.groupby(["kind", "model"], sort=False).groups.items():
        rsa.loc[idx, "p_holm"] = adjust(rsa.loc[idx, "p"].to_numpy())
    return rsa


def similarity_html(pairs: Sequence, out: str | Path) -> str:
    """The page section for ``pairs``; each measured pair's tables go to ``out/similarity_<k>/``."""
    if not pairs:
        return ""
    body = ("<h2>Representational similarity</h2><p>Residual stream at the answer cue, on the items both runs "
            "stored: linear CKA (95% item-bootstrap interval; p from an item-shuffle null), RSA of the 13 "
            "emotion-centroid distance matrices (Spearman; Mantel p over relabellings; Holm across each curve's "
            "layers) and probe transfer through a ridge map fitted on half the items (95% item-bootstrap "
            "intervals on the other half).</p>")
    for k, pair in enumerate(pairs, start=1):
        title = f"{html.escape(pair.model_a)} vs {html.escape(pair.model_b)}"
        if pair.tables is None:
            body += f"<h3>{title}</h3><p>Not measured: {html.escape(str(pair.why))}</p>"
            continue
        folder = Path(out) / f"similarity_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        cka, rsa, transfer = pair.tables["cka"], _rsa_rows(pair.tables["rsa"]), pair.tables["transfer"]
        for name, table in (("cka", cka), ("rsa", rsa), ("transfer", transfer)):
            table.to_parquet(folder / f"{name}.parquet", index=False)
        n = int(cka["n_items"].iloc[0]) if len(cka) else 0
        body += f"<h3>{title}: {n} shared items</h3>"
        png = plot_cka(cka, folder / "cka.png")
        if png is not None:
            body += (f"<img style='max-width:560px' alt='CKA' "
                     f"src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'>")
        matched = cka[cka["matched_depth"]]
        body += "<h4>CKA at matched relative depth</h4>" + table_html(
            matched[["depth_a", "layer_a", "layer_b", "cka", "cka_lo", "cka_hi", "cka_null", "cka_p"]], 200)
        body += "<h4>RSA</h4>" + table_html(
            rsa[[c for c in ("kind", "model", "other", "layer", "layer_other", "depth", "rho", "p", "p_holm")
                 if c in rsa]], 400)
        shown = transfer[transfer["measure"].isin(TRANSFER_MEASURES)] if len(transfer) else transfer
        body += "<h4>Transfer (native vs through the map)</h4>" + table_html(
            shown[[c for c in ("probe_model", "mapped_model", "depth", "probe_layer", "mapped_layer", "measure",
                               "native", "native_lo", "native_hi", "transferred", "transferred_lo",
                               "transferred_hi", "chance", "n_test") if c in shown]], 200)
    return body
