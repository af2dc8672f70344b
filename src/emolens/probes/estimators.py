"""scikit-learn estimators over the batched probe solvers: one slice, or a whole stack of slices.

Tak et al. fit one scikit-learn model per (layer, site, position) slice, thousands of separate
fits for an 8B model. The solvers (:mod:`emolens.probes.logistic`, :mod:`emolens.probes.ridge`,
:mod:`emolens.probes.mlp`) take a stack ``X[slices, items, d]`` and solve all slices together
with batched products on the CPU or a GPU, streaming slices from a memmapped store a chunk at a
time (:mod:`emolens.probes.slices`). Their objectives are scikit-learn's, so results compare with
the paper's.

The estimators follow scikit-learn's contract, so they drop into its tooling (pipelines, grid
search, ``clone``) and are checked by ``sklearn.utils.estimator_checks``:

* ``LogisticProbe``, ``RidgeProbe`` and ``MLPProbe`` fit one slice ``X[n, d]`` (any label values;
  ``classes_`` from the labels, ``n_features_in_``, input validation, ``NotFittedError``);
* ``BatchedLogisticProbe``, ``BatchedRidgeProbe`` and ``BatchedMLPProbe`` fit a stack with
  integer labels ``0..K-1`` (shared ``y[n]`` or per-slice ``y[S, n]``) and return per-slice arrays.

Fitted state carries a trailing underscore (``coef_``, ``intercept_``, ``converged_``,
``n_iter_``, ``fit_`` the solver's raw result); constructor arguments are stored unchanged.
``device`` (``None``: where X lives; ``"auto"``: CUDA when available) and ``dtype``
(``"float32"`` or ``"float64"``, or a ``torch.dtype``) choose where and in what precision the
solve runs; coefficients always act on raw inputs, so ``X @ coef_.T + intercept_`` is the
decision function and the weights can be used directly as steering directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from emolens.probes.logistic import STALL_WINDOW, LogisticFit, fit_logistic, fit_logistic_labels, linear_logits
from emolens.probes.mlp import MLPFit, fit_mlp, mlp_logits
from emolens.probes.ridge import DEFAULT_ALPHAS, RidgeFit, fit_ridge
from emolens.probes.slices import (
    ArrayLike,
    encode_labels,
    encode_targets,
    moments,
    probe_device,
    slice_block,
    slice_ranges,
    stack_slices,
    to_numpy,
)

__all__ = [
    "DEFAULT_ALPHAS", "STALL_WINDOW", "BatchedLogisticProbe", "BatchedMLPProbe", "BatchedRidgeProbe",
    "LogisticFit", "LogisticProbe", "MLPFit", "MLPProbe", "RidgeFit", "RidgeProbe", "slice_ranges",
    "encode_labels", "fit_logistic", "fit_logistic_labels", "fit_mlp", "fit_ridge", "linear_logits", "slice_block",
    "mlp_logits", "moments", "encode_targets", "probe_device", "stack_slices", "to_numpy",
]


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (the estimators' picklable, default-constructible form) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in ("float32", "float64"):
        return getattr(torch, dtype)
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


# ----------------------------------------------------------------------------------------------
# stacks of slices


class _Batched(BaseEstimator):
    """Shared plumbing: device/dtype/chunking parameters."""

    def _run(self) -> dict:
        return {"device": self.device, "dtype": torch_dtype(self.dtype), "slice_chunk": self.slice_chunk}


class _BatchedClassifier(_Batched):
    """Classifier outputs every batched classifier derives from its ``decision_function`` logits."""

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        return to_numpy(torch.from_numpy(self.decision_function(X)).softmax(-1))

    def predict(self, X: ArrayLike) -> np.ndarray:
        return self.decision_function(X).argmax(-1)

    def score(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Accuracy per slice ``[S]``."""
        return (self.predict(X) == np.asarray(y)).mean(-1)


class BatchedLogisticProbe(_BatchedClassifier):
    """One multinomial logistic probe per slice: ``fit(X[S, n, d], y[n] or y[S, n])``.

    Attributes after ``fit``: ``coef_ [S, K, d]``, ``intercept_ [S, K]`` (numpy, raw input
    space), ``classes_ = arange(K)``, ``n_iter_``, ``grad_norm_``, ``converged_`` and
    ``refined_`` (finished in float64) per slice.
    """

    def __init__(self, C: float = 1.0, *, n_classes: int | None = None, standardize: bool = False,
                 tol: float = 1e-4, max_iter: int = 1000, device=None, dtype="float32",
                 slice_chunk: int | None = None, precondition: str = "full"):
        self.C, self.n_classes, self.standardize = C, n_classes, standardize
        self.tol, self.max_iter, self.precondition = tol, max_iter, precondition
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, y: ArrayLike) -> BatchedLogisticProbe:
        fit = fit_logistic(X, y, C=self.C, n_classes=self.n_classes, standardize=self.standardize,
                           tol=self.tol, max_iter=self.max_iter, precondition=self.precondition, **self._run())
        self.fit_ = fit
        self.coef_, self.intercept_ = to_numpy(fit.coef), to_numpy(fit.intercept)
        self.classes_ = np.arange(self.coef_.shape[1])
        self.n_iter_, self.grad_norm_ = to_numpy(fit.n_iter), to_numpy(fit.grad_norm)
        self.converged_, self.refined_ = to_numpy(fit.converged), to_numpy(fit.refined)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Logits ``[S, n, K]``."""
        check_is_fitted(self)
        return to_numpy(linear_logits(X, self.fit_.coef, self.fit_.intercept, **self._run()))


class BatchedRidgeProbe(_Batched):
    """Ridge probes for every slice and target: ``fit(X[S, n, d], Y[n, T] | Y[n] | Y[S, n, T])``.

    ``coef_ [S, T, d]``, ``intercept_ [S, T]``, ``alpha_ [S, T]``; 1-D targets give ``[S, d]``
    and ``[S]`` like sklearn's single-output Ridge (``single_target_``).
    """

    def __init__(self, alpha: float | str | Sequence[float] = 5.0, *, standardize: bool = False,
                 device=None, dtype="float32", slice_chunk: int | None = None):
        self.alpha, self.standardize = alpha, standardize
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, Y: ArrayLike) -> BatchedRidgeProbe:
        self.single_target_ = np.ndim(Y) == 1
        fit = fit_ridge(X, Y, alpha=self.alpha, standardize=self.standardize, **self._run())
        self.fit_ = fit
        sq = (lambda a: a[:, 0]) if self.single_target_ else (lambda a: a)
        self.coef_, self.intercept_ = sq(to_numpy(fit.coef)), sq(to_numpy(fit.intercept))
        self.alpha_ = sq(to_numpy(fit.alpha))
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions ``[S, n, T]`` (``[S, n]`` for 1-D targets)."""
        check_is_fitted(self)
        out = to_numpy(linear_logits(X, self.fit_.coef, self.fit_.intercept, **self._run()))
        return out[..., 0] if self.single_target_ else out

    def score(self, X: ArrayLike, Y: ArrayLike) -> np.ndarray:
        """R² per slice (and target): ``[S]`` or ``[S, T]``."""
        pred = self.predict(X)
        Yt = np.asarray(Y, dtype=np.float64)
        Yt = np.broadcast_to(Yt, pred.shape)
        ss_res = ((Yt - pred) ** 2).sum(1)
        ss_tot = ((Yt - Yt.mean(1, keepdims=True)) ** 2).sum(1)
        return 1 - ss_res / ss_tot


class BatchedMLPProbe(_BatchedClassifier):
    """One MLP probe (32 ReLU units by default) per slice, trained together; seeded."""

    def __init__(self, hidden: int = 32, *, alpha: float = 1e-4, lr: float = 1e-3, batch_size: int = 200,
                 max_epochs: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10,
                 n_classes: int | None = None, standardize: bool = False, seed: int = 0,
                 device=None, dtype="float32", slice_chunk: int | None = None):
        self.hidden, self.alpha, self.lr, self.batch_size = hidden, alpha, lr, batch_size
        self.max_epochs, self.tol, self.n_iter_no_change = max_epochs, tol, n_iter_no_change
        self.n_classes, self.standardize, self.seed = n_classes, standardize, seed
        self.device, self.dtype, self.slice_chunk = device, dtype, slice_chunk

    def fit(self, X: ArrayLike, y: ArrayLike) -> BatchedMLPProbe:
        fit = fit_mlp(X, y, hidden=self.hidden, alpha=self.alpha, lr=self.lr, batch_size=self.batch_size,
                      max_epochs=self.max_epochs, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
                      n_classes=self.n_classes, standardize=self.standardize, seed=self.seed, **self._run())
        self.fit_ = fit
        self.classes_ = np.arange(fit.W2.shape[-1])
        self.n_iter_, self.converged_ = to_numpy(fit.n_epochs), to_numpy(fit.converged)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return to_numpy(mlp_logits(self.fit_, X, **self._run()))


# ----------------------------------------------------------------------------------------------
# one slice


class _SingleClassifier(ClassifierMixin, BaseEstimator):
    """One-slice classifier over a batched one: any label values, validated input, sklearn ``score``."""

    def _batched(self) -> _Batched:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, X: ArrayLike, y: ArrayLike):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("needs samples of at least 2 classes in the data, but the data contains only one class: "
                             f"{self.classes_[0]!r}")
        self.batched_ = self._batched().set_params(n_classes=len(self.classes_))
        self.batched_.fit(X[None], codes)
        return self

    def _x(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])[None]

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        X = self._x(X)
        out = self.batched_.decision_function(X)[0]
        return out[:, 1] - out[:, 0] if len(self.classes_) == 2 else out  # sklearn's binary shape

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        X = self._x(X)
        return self.batched_.predict_proba(X)[0]

    def predict(self, X: ArrayLike) -> np.ndarray:
        X = self._x(X)
        return self.classes_[self.batched_.predict(X)[0]]


class LogisticProbe(_SingleClassifier):
    """sklearn-style ``LogisticRegression`` equivalent (multinomial, L2, unpenalised intercept)."""

    def __init__(self, C: float = 1.0, *, standardize: bool = False, tol: float = 1e-4, max_iter: int = 1000,
                 device=None, dtype="float32", precondition: str = "full"):
        self.C, self.standardize, self.tol, self.max_iter = C, standardize, tol, max_iter
        self.device, self.dtype, self.precondition = device, dtype, precondition

    def _batched(self) -> BatchedLogisticProbe:
        return BatchedLogisticProbe(self.C, standardize=self.standardize, tol=self.tol, max_iter=self.max_iter,
                                    device=self.device, dtype=self.dtype, precondition=self.precondition)

    def fit(self, X: ArrayLike, y: ArrayLike) -> LogisticProbe:
        super().fit(X, y)
        self.coef_, self.intercept_ = self.batched_.coef_[0], self.batched_.intercept_[0]
        self.n_iter_, self.converged_ = int(self.batched_.n_iter_[0]), bool(self.batched_.converged_[0])
        return self


class MLPProbe(_SingleClassifier):
    """sklearn-style ``MLPClassifier(hidden_layer_sizes=(32,))`` equivalent, seeded."""

    def __init__(self, hidden: int = 32, *, alpha: float = 1e-4, lr: float = 1e-3, max_epochs: int = 200,
                 standardize: bool = False, seed: int = 0, device=None, dtype="float32"):
        self.hidden, self.alpha, self.lr, self.max_epochs = hidden, alpha, lr, max_epochs
        self.standardize, self.seed, self.device, self.dtype = standardize, seed, device, dtype

    def _batched(self) -> BatchedMLPProbe:
        return BatchedMLPProbe(self.hidden, alpha=self.alpha, lr=self.lr, max_epochs=self.max_epochs,
                               standardize=self.standardize, seed=self.seed, device=self.device,
                               dtype=self.dtype)

    def fit(self, X: ArrayLike, y: ArrayLike) -> MLPProbe:
        super().fit(X, y)
        self.n_iter_, self.converged_ = int(self.batched_.n_iter_[0]), bool(self.batched_.converged_[0])
        return self


class RidgeProbe(RegressorMixin, BaseEstimator):
    """sklearn-style ``Ridge`` equivalent (``alpha`` may be ``"gcv"`` or a grid, like RidgeCV)."""

    def __init__(self, alpha: float | str | Sequence[float] = 5.0, *, standardize: bool = False,
                 device=None, dtype="float32"):
        self.alpha, self.standardize, self.device, self.dtype = alpha, standardize, device, dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # Y [n, T] fits T ridges, like sklearn's Ridge
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike) -> RidgeProbe:
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True)
        self.batched_ = BatchedRidgeProbe(self.alpha, standardize=self.standardize, device=self.device,
                                          dtype=self.dtype).fit(X[None], y)
        b = self.batched_
        self.coef_, self.intercept_, self.alpha_ = b.coef_[0], b.intercept_[0], b.alpha_[0]
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.batched_.predict(X[None])[0].astype(np.float64)
