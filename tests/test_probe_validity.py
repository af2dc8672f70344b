"""Probe results whose test set or class count makes them meaningless are flagged, in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emolens.probes.probing import ProbingResult, summary_lines
from emolens.probes.validity import probe_warnings

LABELS = ("anger", "joy", "fear")


def table(n_test: int) -> pd.DataFrame:
    return pd.DataFrame({"task": ["emotion"] * 2, "metric": ["accuracy"] * 2, "n": [n_test, n_test],
                         "value": [1.0, 0.9], "ci_low": [1.0, 0.5], "ci_high": [1.0, 1.0], "site": "resid",
                         "layer": [0, 1], "position": -1, "target": ""})


def test_tiny_test_set_one_class_and_majority_are_flagged():
    y = np.array([0] * 13 + [1] * 3 + [2] * 2)  # the case: 18 correct items, 13 of one label
    flags = probe_warnings(table(4), y, LABELS)
    assert any("only 4 test items" in f for f in flags)
    assert any("72% of the items are 'anger'" in f for f in flags)
    assert all("items='all'" in f and "--" not in f for f in flags)  # read in Python: parameters, not flags
    assert any("1 label(s)" in f for f in probe_warnings(table(40), np.zeros(30, dtype=int), LABELS))
    assert any("first-word control" in f for f in probe_warnings(table(40), y, LABELS, np.array([2, 2, 2, -1])))
    # a sound result carries no flag
    balanced = np.repeat([0, 1, 2], 40)
    assert probe_warnings(table(24), balanced, LABELS, np.tile([0, 1, 3], 40)) == []


def test_cli_lines_mark_the_flagged_headline():
    summary = {"items": {"n_used": 18, "mode": "correct"},
               "best": {"emotion": {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "site": "resid", "layer": 3,
                                    "position": -1}},
               "warnings": probe_warnings(table(4), np.array([0] * 13 + [1] * 5), LABELS)}
    lines = summary_lines(ProbingResult(table(4), {}, {}, summary, None, []))
    assert "NOT A FINDING" in lines[1] and lines[1].startswith("best emotion: 1.000")
    assert any(line.startswith("WARNING: emotion probe: only 4 test items") for line in lines)
