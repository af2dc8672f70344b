"""Reports and figures, drawn from saved tables only (never from a live model).

:func:`write_report` renders a run folder's self-contained ``report.html``; ``*_figures`` modules
draw every figure the CLI commands and study stages write; :mod:`emolens.report.runs` reads run
folders; :func:`compare_runs` draws the cross-model comparison.
"""

from emolens.report.compare import compare_runs
from emolens.report.html import render_report, write_report
from emolens.report.runs import ModelRun, load_run, model_runs

__all__ = ["ModelRun", "compare_runs", "load_run", "model_runs", "render_report", "write_report"]
