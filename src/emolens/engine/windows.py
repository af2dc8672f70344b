"""Layer windows: ``span`` consecutive layers centred on one layer, validated once.

Tak et al. ablate and steer over windows of consecutive layers named by their centre (paper §6,
§7). A window is centred, so its span is odd: an even span has no centre, and two earlier
definitions put its extra layer on opposite sides -- a study could steer other layers than it
reported. Here an even span is refused when the :class:`Window` is made, and every caller (causal
analyses, steering, the study) takes its layers from :attr:`Window.layers`. Layers are 0-indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emolens.errors import EmolensError

#: At most this many centres when centres are chosen automatically (evenly spread).
AUTO_CENTERS = 8


@dataclass(frozen=True, order=True)
class Window:
    """Layers ``center - span // 2 .. center + span // 2`` (``span`` odd and positive)."""

    center: int
    span: int = 1

    def __post_init__(self) -> None:
        for name in ("center", "span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise EmolensError(f"window {name} {value!r} is not an integer")
            object.__setattr__(self, name, int(value))
        if self.span < 1 or self.span % 2 == 0:
            raise EmolensError(f"window span {self.span} is not a positive odd number (a window is centred on a "
                               "layer, so spans are 1, 3, 5 ...)")
        if self.center - self.span // 2 < 0:
            raise EmolensError(f"window centred on layer {self.center} with span {self.span} starts before layer 0")

    @property
    def layers(self) -> tuple[int, ...]:
        half = self.span // 2
        return tuple(range(self.center - half, self.center + half + 1))

    @property
    def label(self) -> str:
        """The layers, comma-separated (the causal tables' ``layers`` column)."""
        return ",".join(map(str, self.layers))

    @property
    def text(self) -> str:
        """The layers as a range, ``first-last`` (the steering table's ``layers`` column)."""
        return f"{self.layers[0]}-{self.layers[-1]}" if self.span > 1 else str(self.center)

    def check(self, n_layers: int) -> Window:
        """This window, if it fits a model of ``n_layers`` layers."""
        if self.layers[-1] >= n_layers:
            lo, hi = self.span // 2, n_layers - 1 - self.span // 2
            valid = f"centres {lo}..{hi}" if lo <= hi else f"spans up to {n_layers}"
            raise EmolensError(f"window centred on layer {self.center} with span {self.span} falls outside the "
                               f"model's {n_layers} layers (valid: {valid})")
        return self

    @classmethod
    def from_layers(cls, layers: Sequence[int], n_layers: int) -> Window:
        """The window of an explicit list of consecutive layers (odd in number)."""
        got = sorted({int(x) for x in layers})
        if not got or got[0] < 0 or got[-1] >= n_layers:
            raise EmolensError(f"layers {got} out of range for a model of {n_layers} layers")
        if got != list(range(got[0], got[-1] + 1)) or len(got) % 2 == 0:
            raise EmolensError(f"layers {got} are not an odd number of consecutive layers, so they are no window")
        return cls(got[len(got) // 2], len(got)).check(n_layers)


def valid_centers(n_layers: int, span: int) -> list[int]:
    """Every centre a window of ``span`` layers can have in a model of ``n_layers`` layers."""
    Window(span // 2, span)  # validates the span
    return list(range(span // 2, n_layers - span // 2))


def parse_centers(text: str | Sequence[int] | None) -> str | list[int]:
    """``"3,5,8"`` -> ``[3, 5, 8]``; ``"all"``/``None`` -> ``"all"``; ``"auto"`` -> ``"auto"``."""
    if text is None:
        return "all"
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("all", "auto"):
            return word
        try:
            centres = [int(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise EmolensError(f"bad window centres {text!r}: write centre layers like 3,5,8, all or auto") from exc
    else:
        centres = [int(x) for x in text]
    if not centres:
        raise EmolensError("no window centres given (e.g. 3,5,8, all or auto)")
    return centres


def layer_windows(n_layers: int, spans: Sequence[int] | int = (3,), centers: str | Sequence[int] | None = None,
                  stride: int = 1, strict: bool = True) -> list[Window]:
    """The windows of each span at the given centres, in span order then centre order.

    ``centers``: ``None``/``"all"`` (every valid centre), ``"auto"`` (every valid centre, at most
    :data:`AUTO_CENTERS` evenly spread), a list or ``"3,5,8"``. ``stride`` keeps every
    ``stride``-th centre. A centre that does not fit is an error with ``strict``, else dropped.
    """
    spans = [spans] if isinstance(spans, int) else list(spans)
    if not spans:
        raise EmolensError("no window spans given")
    if stride < 1:
        raise EmolensError(f"window stride {stride} is not positive")
    chosen = parse_centers(centers)
    out: list[Window] = []
    for span in spans:
        valid = valid_centers(n_layers, span)
        if not valid:
            raise EmolensError(f"window span {span} is larger than the model's {n_layers} layers")
        if chosen == "all":
            centres = valid
        elif chosen == "auto":
            centres = valid if len(valid) <= AUTO_CENTERS else sorted(
                {valid[round(i)] for i in np.linspace(0, len(valid) - 1, AUTO_CENTERS)})
        else:
            bad = [c for c in chosen if c not in valid]
            if bad and strict:
                raise EmolensError(f"window centre(s) {bad} out of range for span {span} in a model of {n_layers} "
                                   f"layers (valid centres: {valid[0]}..{valid[-1]})")
            centres = sorted({c for c in chosen if c in valid})
        out += [Window(c, span) for c in centres[::stride]]
    return out
