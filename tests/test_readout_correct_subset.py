"""Calibration never changes the correct subset silently: the caller picks raw or calibrated."""

from __future__ import annotations

import pandas as pd
import pytest

from emolens.errors import EmolensError
from emolens.readout import ReadoutResult


def test_correct_subset_is_raw_unless_calibrated_is_asked_for():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "correct": [True, False, False], "correct_cal": [False, True, True]})
    res = ReadoutResult(frame, {}, ("joy",), None)
    assert res.correct_ids == ["a"] == res.correct_ids_from("raw")
    assert res.correct_ids_from("calibrated") == ["b", "c"]
    with pytest.raises(EmolensError, match="needs calibration"):
        ReadoutResult(frame.drop(columns="correct_cal"), {}, ("joy",), None).correct_ids_from("calibrated")
    with pytest.raises(EmolensError):
        res.correct_ids_from("best")


def test_cli_refuses_a_calibrated_subset_without_calibration(run_cli, tmp_path):
    code, _, err = run_cli(["readout", "--model", "tiny:llama", "--data", "stimuli", "--correct-from", "calibrated",
                            "--out", str(tmp_path / "r")])
    assert code == 2 and "--calibrate" in err
