"""Running sufficient statistics for neuron x rating correlations, so no activation store is needed.

Why: an 8B model has ~458k MLP neurons; 6,600 items x 458k x 4 bytes is 12 GB per position, and
all we want from them is, per neuron and appraisal, a correlation and a partial correlation.
Both are functions of a few sums, which we accumulate batch by batch during the forward:

* ``Σx, Σx², Σx·y`` (and ``Σy, Σy²``) give Pearson's r;
* per-emotion sums ``Σ_e x, Σ_e y`` and counts give the *within-emotion* sums of squares and
  cross-products, and the correlation of within-emotion residuals is exactly the partial
  correlation controlling for the emotion label (regression on an intercept plus one-hot label).

Sums are float64 and taken around a per-column shift (the first batch's mean), which keeps
``Σx² − (Σx)²/n`` from cancelling catastrophically when a neuron's mean is large against its
spread. Memory is ``L·N·(A + E + 2)`` float64 numbers, independent of the number of items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["NeuronMoments"]


@dataclass
class NeuronMoments:
    """Sums over items for ``x [n, L, N]`` (neurons per layer) and ``y [n, A]`` (ratings) by group.

    ``update(x, y, groups)`` adds a batch; ``groups`` are integer emotion ids in ``[0, n_groups)``.
    """

    n_layers: int
    n_neurons: int
    n_targets: int
    n_groups: int
    n: int = 0
    shift_x: np.ndarray | None = field(default=None, repr=False)
    shift_y: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        L, N, A, E = self.n_layers, self.n_neurons, self.n_targets, self.n_groups
        self.sx = np.zeros((L * N,))
        self.sxx = np.zeros((L * N,))
        self.sy = np.zeros((A,))
        self.syy = np.zeros((A,))
        self.sxy = np.zeros((L * N, A))
        self.count = np.zeros((E,))
        self.gx = np.zeros((E, L * N))
        self.gy = np.zeros((E, A))

    def update(self, x, y, groups) -> None:
        """Add a batch: ``x [b, L, N]`` (any float dtype), ``y [b, A]``, ``groups [b]`` ints."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        y = np.asarray(y, dtype=np.float64).reshape(len(x), self.n_targets)
        g = np.asarray(groups, dtype=np.int64).ravel()
        if x.shape[1] != self.n_layers * self.n_neurons:
            raise ValueError(f"batch has {x.shape[1]} neurons per item, expected {self.n_layers * self.n_neurons}")
        if len(g) != len(x) or (len(g) and (g.min() < 0 or g.max() >= self.n_groups)):
            raise ValueError("groups must be one id in [0, n_groups) per item")
        if not len(x):
            return
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
        xc, yc = x - self.shift_x, y - self.shift_y
        self.n += len(x)
        self.sx += xc.sum(0)
        self.sxx += np.einsum("ij,ij->j", xc, xc)
        self.sy += yc.sum(0)
        self.syy += (yc * yc).sum(0)
        self.sxy += xc.T @ yc
        onehot = np.zeros((len(g), self.n_groups))
        onehot[np.arange(len(g)), g] = 1.0
        self.count += onehot.sum(0)
        self.gx += onehot.T @ xc
        self.gy += onehot.T @ yc

    # -- results ------------------------------------------------------------------------------

    def _shape(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.n_layers, self.n_neurons, *a.shape[1:])

    @property
    def mean(self) -> np.ndarray:
        """Per-neuron mean ``[L, N]``."""
        return self._shape(self.shift_x + self.sx / self.n)

    @property
    def var(self) -> np.ndarray:
        """Per-neuron variance ``[L, N]`` (ddof=1)."""
        return self._shape(np.maximum(self.sxx - self.sx**2 / self.n, 0.0) / max(self.n - 1, 1))

    @property
    def n_covariates(self) -> int:
        """Covariates the partial correlation removes besides the intercept: groups seen minus one."""
        return max(int((self.count > 0).sum()) - 1, 0)

    def correlations(self) -> np.ndarray:
        """Pearson r of every neuron with every target, ``[L, N, A]`` (NaN for constant columns)."""
        n = self.n
        cxx = self.sxx - self.sx**2 / n
        cyy = self.syy - self.sy**2 / n
        cxy = self.sxy - np.outer(self.sx, self.sy) / n
        return self._shape(_ratio(cxy, cxx, cyy))

    def partial_correlations(self) -> np.ndarray:
        """r of the within-group residuals (= partial r given the one-hot group), ``[L, N, A]``."""
        seen = self.count > 0
        inv = np.zeros_like(self.count)
        inv[seen] = 1.0 / self.count[seen]
        wxx = self.sxx - (self.gx**2 * inv[:, None]).sum(0)
        wyy = self.syy - (self.gy**2 * inv[:, None]).sum(0)
        wxy = self.sxy - (self.gx * inv[:, None]).T @ self.gy
        return self._shape(_ratio(wxy, wxx, wyy))


def _ratio(cxy: np.ndarray, cxx: np.ndarray, cyy: np.ndarray) -> np.ndarray:
    """``cxy / sqrt(cxx ⊗ cyy)``; columns with no variance (dead neurons) give NaN, not noise."""
    sx = np.sqrt(np.where(cxx > 0, cxx, np.nan))
    sy = np.sqrt(np.where(cyy > 0, cyy, np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(cxy / np.outer(sx, sy), -1.0, 1.0)
