"""The HTML building blocks of a self-contained report: embedded PNGs, tables, notes, the stylesheet."""

from __future__ import annotations

import base64
import html

import pandas as pd


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4}img{max-width:100%;margin:.4em 0}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}
.absent{color:#8a5a00;background:#fff7e6;padding:.3em .6em;border-left:3px solid #f0ad4e}
.summary{background:#eef6ee;padding:.6em 1em;border-left:4px solid #2ca02c}
"""


def table_html(frame: pd.DataFrame, max_rows: int = 40) -> str:
    if len(frame) > max_rows:
        frame = frame.head(max_rows)
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, escape=True)


def absent(text: str) -> str:
    return f'<p class="absent">{html.escape(text)}</p>'


__all__ = ["CSS", "absent", "img", "table_html"]
