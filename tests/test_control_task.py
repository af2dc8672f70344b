"""Hewitt & Liang control-task selectivity: chance-normalised, paired, and refusing meaningless test sets."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.errors import EmolensError
from emolens.probes.control_task import control_labels, control_task_selectivity


def test_control_labels_are_a_function_of_the_type_with_the_task_base_rates():
    g = np.random.default_rng(0)
    types = g.integers(0, 60, 600)
    labels = g.choice(3, 600, p=[0.6, 0.3, 0.1])
    ctrl = control_labels(types, labels, seed=1)
    for t in np.unique(types):  # one label per type
        assert len(set(ctrl[types == t])) == 1
    assert set(ctrl) <= set(labels)
    shares = np.bincount(ctrl[np.unique(types, return_index=True)[1]], minlength=3) / 60
    assert shares[0] > shares[2]  # drawn from the task's own distribution
    assert (control_labels(types, labels, seed=1) == ctrl).all()


def _data(g, informative: bool, n=160, d=12):
    y = np.repeat(np.arange(4), n // 4)
    types = g.integers(0, 40, n)  # word types unrelated to the label
    X = g.normal(size=(1, n, d))
    if informative:
        X[0, :, :4] += 3 * np.eye(4)[y]
    return X, y, types


def test_selectivity_is_positive_when_the_activations_carry_the_label_and_near_zero_when_not():
    g = np.random.default_rng(2)
    X, y, types = _data(g, True)
    res = control_task_selectivity(X, y, types, [("resid", 0, -1)], n_boot=200)
    sel = res[res.task == "selectivity"].iloc[0]
    emo = res[res.task == "emotion/normalised"].iloc[0]
    assert emo.value > 0.5 and sel.ci_low > 0 and sel.chance == 0
    X, y, types = _data(g, False)
    res = control_task_selectivity(X, y, types, [("resid", 0, -1)], n_boot=200)
    sel = res[res.task == "selectivity"].iloc[0]
    assert sel.ci_low < 0 < sel.ci_high  # neither task is learnable from noise: no selectivity


def test_single_class_or_tiny_test_sets_are_refused():
    g = np.random.default_rng(3)
    X, y, types = _data(g, True, n=40)
    with pytest.raises(EmolensError, match="at least 20 test items"):
        control_task_selectivity(X, y, types, [("resid", 0, -1)])  # the paper split tests 8 items
    with pytest.raises(EmolensError):
        control_task_selectivity(X, np.zeros(40, int), types, [("resid", 0, -1)], protocol="cv")
