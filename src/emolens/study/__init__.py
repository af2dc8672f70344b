"""Studies: one YAML config runs every stage for every model, cached by content, resumable, then the report.

:func:`load_config` / :func:`load_preset` validate a config; :func:`run_study` runs it (locally or
on Ray). Stages live in :mod:`emolens.study.stages`, one module each.
"""

from emolens.study.config import StudyConfig, load_config, load_preset
from emolens.study.runner import RunResult, run_study

__all__ = ["RunResult", "StudyConfig", "load_config", "load_preset", "run_study"]
