"""Start a forward at a middle layer: the layers below the first edited one replay clean hidden states.

An edit at layers ``k..`` cannot change what layers ``0..k-1`` compute, so under any condition
those layers produce exactly the clean run's hidden states. A sweep of many conditions at deep
layers recomputes them again and again; on average that is half of every forward. Here the clean
output of layer ``k - 1`` is captured once per batch (:func:`layer_outputs`), and a condition's
forward runs with the decoder layers ``0..k-1`` swapped, for that forward only, for stand-ins
(:func:`start_at`): the last returns the captured hidden states (tiled for stacked conditions),
the others pass their input through. Embedding, rotary tables and masks are still built by the
model's own code, and layers ``k..`` run unchanged, so the logits are those of the full forward up
to float rounding (tests compare them on every tiny family, Gemma-3's sliding windows included).

What it does not do: layers ``0..k-1`` write no keys and values into a cache, so a forward that
starts at ``k`` must not be continued (multi-token label scoring continues the cache; the runner
starts at layer 0 there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["layer_outputs", "start_at"]


class _PassThrough(nn.Module):
    """A skipped layer: its input hidden states go on unchanged (the replayed layer overwrites them)."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _Replay(nn.Module):
    """The last skipped layer: returns the clean hidden states recorded for its output."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states, *args, **kwargs):
        if tuple(hidden_states.shape) != tuple(self.hidden.shape):
            raise RuntimeError(f"replayed hidden states {tuple(self.hidden.shape)} do not match this forward's "
                               f"{tuple(hidden_states.shape)}")
        return self.hidden.to(hidden_states.device, hidden_states.dtype)


def _layer_list(model: nn.Module, sites) -> nn.ModuleList:
    path = sites.paths.layers
    return model.get_submodule(path)


@contextmanager
def start_at(model: nn.Module, sites, layer: int, hidden: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, forwards of ``model`` skip decoder layers ``0..layer-1``, layer ``layer - 1``
    returning ``hidden`` (its clean output for exactly this forward's rows and tokens).

    ``layer = 0`` (or ``hidden`` None) changes nothing. The original layers are put back on exit,
    also on error.
    """
    if layer <= 0 or hidden is None:
        yield
        return
    layers = _layer_list(model, sites)
    saved = [layers[i] for i in range(layer)]
    try:
        for i in range(layer - 1):
            layers[i] = _PassThrough()
        layers[layer - 1] = _Replay(hidden)
        yield
    finally:
        for i, module in enumerate(saved):
            layers[i] = module


def _hidden(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def layer_outputs(model: nn.Module, sites, layers: Sequence[int], run) -> dict[int, torch.Tensor]:
    """The outputs of decoder ``layers`` (``{layer: [B, T, d]}``) during ``run()``, a clean forward.

    Plain forward hooks on the layer modules, removed afterwards; nothing is edited.
    """
    got: dict[int, torch.Tensor] = {}
    handles = []
    for layer in sorted(set(layers)):
        def hook(_module, _args, out, layer=layer):
            got[layer] = _hidden(out).detach()
        handles.append(sites.layers[layer].register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return got
