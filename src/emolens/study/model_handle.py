"""A study's model, loaded on first use: a fully cached run never loads weights.

Once loaded, a :class:`~emolens.engine.accounting.WorkCounter` counts every forward any stage
makes, so each stage records its model work; :meth:`ModelHandle.plain_rate` measures the
plain-forward floor it is priced at.

Stage keys need the model's weights id and dtype without loading it (:func:`model_identity`);
``run.json`` records what a stage that did load it saw (:func:`model_info`).
"""

from __future__ import annotations

import gc
import time

from emolens.engine.accounting import Work, WorkCounter, plain_forward_rate
from emolens.engine.memory import auto_batch_size
from emolens.model.loading import _resolve_weights, load_model, placement_device, resolve_dtype
from emolens.study.config import StudyConfig, model_slug


def model_identity(spec: str) -> str:
    """The id of a model's exact weights, without loading it (used in stage keys)."""
    if spec.startswith("tiny:"):
        return f"{spec}:seed0"
    return _resolve_weights(spec, None)[1]


class ModelHandle:
    """A model loaded on first use, so a fully cached run never loads weights."""

    def __init__(self, spec: str, cfg: StudyConfig):
        self.spec = spec
        self.slug = model_slug(spec)
        self.cfg = cfg
        self._lm = None
        self._identity: str | None = None
        self.counter: WorkCounter | None = None
        self.rate: dict | None = None
        self._batch: int | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = model_identity(self.spec)
        return self._identity

    @property
    def dtype_name(self) -> str:
        device = placement_device(self.cfg.device, self.cfg.device_map)
        return str(resolve_dtype(self.cfg.dtype, device)).replace("torch.", "")

    @property
    def lm(self):
        if self._lm is None:
            self._lm = load_model(self.spec, **self.cfg.load_kwargs())
            # every stage's model work is counted from here on (read-only pre-hooks; outputs unchanged)
            self.counter = WorkCounter.attach(self._lm)
        return self._lm

    def batch_size(self) -> int:
        """The study's batch size; ``auto`` is chosen once from the free memory of the model's device
        (:func:`~emolens.engine.memory.auto_batch_size`, from the model's shapes; loads the model)."""
        if self.cfg.batch_size != "auto":
            return int(self.cfg.batch_size)
        if self._batch is None:
            lm = self.lm
            self._batch = auto_batch_size(lm.model.config, lm.device, lm.dtype)
        return self._batch

    def work(self) -> Work:
        """The model work counted so far (zero before the model is loaded)."""
        return self.counter.snapshot() if self.counter is not None else Work(seconds=time.perf_counter())

    def plain_rate(self, prompts) -> dict | None:
        """Token-layers per second of plain forwards over one batch of ``prompts`` (measured once, the
        first time a stage has loaded the model): the floor each stage's work is priced at."""
        if self.rate is None and self.loaded and len(prompts):
            size = self.batch_size()
            got = plain_forward_rate(self.lm, prompts[:size], size, warm_up=False)  # a stage just ran it
            self.rate = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in got.items()}
        return self.rate

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def release(self) -> None:
        if self.counter is not None:
            self.counter.detach()
        self._lm, self.counter = None, None
        gc.collect()


def model_info(handle: ModelHandle) -> dict | None:
    """What run.json records about a loaded model (None when no stage loaded it)."""
    if not handle.loaded:
        return None
    info = {"source_id": handle.lm.source_id, "n_layers": handle.lm.n_layers,
            "load_seconds": round(handle.lm.load_seconds, 3)}
    if handle.lm.device_map:
        info["device_map"] = {k: str(v) for k, v in handle.lm.device_map.items()}
    return info


__all__ = ["ModelHandle", "model_identity", "model_info"]
