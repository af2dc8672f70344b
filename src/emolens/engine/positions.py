"""Positions: where in each prompt an op acts, and the one way they become per-row indices or masks.

Every analysis names token positions the same way, so one type says what they mean:

* **Ints are relative to the row's real tokens**: negative from the last real token (``-1`` is the
  answer cue, ``-2`` the token before it), non-negative from the first real token. They are
  resolved per row against the attention mask, so left or right padding never shifts them.
* **Named spans**: ``instruction``, ``shots``, ``context``, ``answer`` (the prompt's character
  spans turned into token masks by :mod:`emolens.inputs.batching`), ``all`` (every real token),
  ``prompt`` (every real token but the first -- the attention sink, which an edit would wreck
  rather than steer), ``generated`` (no prompt token: only tokens ``generate()`` adds) and
  ``none`` (no token).
* **A boolean mask** ``[B, T]`` given directly, for one batch.

Text such as ``"-1,-2"``, ``"-5:"`` (= -5..-1) or ``"context"`` parses to a :class:`Positions`;
:func:`position_items` splits a list into one slot per int or span (what extraction stores and what
the causal commands run as separate conditions). Validation happens once, when a
:class:`Positions` is made; errors name what is wrong in library terms.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from emolens.errors import EmolensError
from emolens.inputs.prompts import SPAN_NAMES

#: Named positions that are not prompt spans (see the module docstring).
SPECIAL: tuple[str, ...] = ("all", "prompt", "generated", "none")
NAMES: tuple[str, ...] = SPECIAL + SPAN_NAMES


def _parse_ints(text: str) -> list[int | str]:
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if ":" in part:
            lo, hi = part.split(":", 1)
            try:
                start, stop = int(lo) if lo else None, int(hi) if hi else None
            except ValueError as exc:
                raise EmolensError(f"bad position range {part!r}: write it relative to the end, like -5: or -5:-1"
                                   ) from exc
            if start is None or start >= 0 or (stop is not None and stop > 0):
                raise EmolensError(f"bad position range {part!r}: ranges are relative to the end, like -5: or -5:-2")
            out.extend(range(start, stop if stop is not None else 0))
            continue
        try:
            out.append(int(part))
        except ValueError:
            if part not in NAMES:
                raise EmolensError(f"bad position {part!r}: use ints relative to the answer cue (-1), ranges "
                                   f"like -5:, or one of {list(NAMES)}") from None
            out.append(part)
    if not out:
        raise EmolensError("no positions given (e.g. -1 or -1,-2,-3)")
    return out


def position_items(spec) -> list[int | str]:
    """One slot per int or name: ``"-1,-2,context"`` -> ``[-1, -2, "context"]``; ``"-3:"`` -> ``[-3, -2, -1]``.

    Each slot is a valid :class:`Positions` on its own; a repeated slot is an error.
    """
    if isinstance(spec, Positions):
        items: list[int | str] = list(spec.ints) if spec.ints else [spec.span]
    elif isinstance(spec, str):
        items = _parse_ints(spec)
    elif isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        items = [int(spec)]
    elif isinstance(spec, (Sequence, range)):
        items = [x for part in spec for x in position_items(part)]
    else:
        raise EmolensError(f"bad positions {spec!r}: use ints, a list of ints, or a position name")
    for p in items:
        if isinstance(p, bool) or not isinstance(p, (int, str)) or (isinstance(p, str) and p not in NAMES):
            raise EmolensError(f"bad position {p!r}: use ints or one of {list(NAMES)}")
    if len(set(items)) != len(items):
        raise EmolensError(f"repeated positions in {items}: list each position once")
    return items


@dataclass(frozen=True)
class Positions:
    """Relative ints, or one named span, or an explicit ``[B, T]`` mask (see the module docstring).

    Build with :meth:`of`, which accepts an int, ints, a range, a name, text or a mask.
    """

    ints: tuple[int, ...] = ()
    span: str | None = None
    explicit: torch.Tensor | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        kinds = bool(self.ints) + (self.span is not None)
        if kinds != 1 or (self.explicit is not None) != (self.span == "mask"):
            raise EmolensError("positions need exactly one of: ints, a span name, or a mask")
        if self.span is not None and self.span not in NAMES and self.span != "mask":
            raise EmolensError(f"unknown position name {self.span!r}: use ints or one of {list(NAMES)}")
        if any(isinstance(p, bool) or not isinstance(p, int) for p in self.ints):
            raise EmolensError(f"bad positions {self.ints!r}: a list of positions must hold ints only")
        if len(set(self.ints)) != len(self.ints):
            raise EmolensError(f"repeated positions in {list(self.ints)}: list each position once")
        if self.explicit is not None and self.explicit.ndim != 2:
            raise EmolensError(f"a position mask must be [B, T], got shape {tuple(self.explicit.shape)}")

    @classmethod
    def of(cls, value) -> Positions:
        """Any accepted spelling -> :class:`Positions` (a :class:`Positions` is returned as is)."""
        if isinstance(value, Positions):
            return value
        if isinstance(value, torch.Tensor):
            if value.ndim != 2:
                raise EmolensError(f"a position mask must be [B, T], got shape {tuple(value.shape)}")
            return cls(span="mask", explicit=value.bool())
        if isinstance(value, str) and value.strip() in NAMES:
            return cls(span=value.strip())
        items = position_items(value)
        names = [p for p in items if isinstance(p, str)]
        if names and len(items) > 1:
            raise EmolensError(f"positions {items} mix ints and names: one op acts on ints or on one span")
        return cls(span=names[0]) if names else cls(ints=tuple(items))

    # -- facts ---------------------------------------------------------------------------------

    @property
    def is_index(self) -> bool:
        """Whether these are int positions (gathered per row) rather than a mask."""
        return bool(self.ints)

    @property
    def suffix(self) -> int:
        """How many last tokens these positions are confined to (0: not confined to a suffix).

        Negative ints touch only the last ``-min(ints)`` tokens, so an edit there leaves every
        earlier position of a causal model untouched (the KV-prefix fast path relies on it).
        """
        return -min(self.ints) if self.ints and all(p < 0 for p in self.ints) else 0

    @property
    def label(self) -> str:
        """The table spelling: ``-1``, ``-1|-2``, or the name."""
        return "|".join(map(str, self.ints)) if self.ints else str(self.span)

    # -- resolution ----------------------------------------------------------------------------

    def index(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` absolute column of each int position in each row (ints only)."""
        if not self.ints:
            raise EmolensError(f"positions {self.label!r} are a span, not ints: resolve them with mask()")
        first, last = row_bounds(attention_mask)
        rel = torch.tensor(self.ints, device=attention_mask.device)
        idx = torch.where(rel < 0, last[:, None] + 1 + rel[None, :], first[:, None] + rel[None, :])
        bad = (idx < first[:, None]) | (idx > last[:, None])
        if bool(bad.any()):
            row = int(bad.any(1).nonzero()[0])
            length = int(last[row] - first[row] + 1)
            outside = sorted({self.ints[j] for j in bad[row].nonzero().flatten().tolist()})
            raise EmolensError(f"position(s) {outside} fall outside row {row}, which has {length} real tokens")
        return idx

    def mask(self, attention_mask: torch.Tensor, spans: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B, T]`` boolean mask of these positions over the real tokens of each row."""
        real = attention_mask.bool()
        if self.ints:
            return torch.zeros_like(real).scatter_(1, self.index(attention_mask), True)
        if self.explicit is not None:
            if tuple(self.explicit.shape) != tuple(real.shape):
                raise EmolensError(f"position mask of shape {tuple(self.explicit.shape)} does not match the batch "
                                   f"{tuple(real.shape)}")
            return self.explicit.to(real.device) & real
        if self.span == "all":
            return real
        if self.span in ("none", "generated"):
            return torch.zeros_like(real)
        if self.span == "prompt":
            first, _ = row_bounds(real)
            out = real.clone()
            out[torch.arange(real.shape[0], device=real.device), first] = False
            return out
        if spans is None or self.span not in spans:
            raise EmolensError(f"no token mask for span {self.span!r} in this batch (batches from "
                               f"emolens.inputs.batching carry {list(SPAN_NAMES)})")
        got = spans[self.span]
        if tuple(got.shape) != tuple(real.shape):
            raise EmolensError(f"span {self.span!r} mask of shape {tuple(got.shape)} does not match the batch "
                               f"{tuple(real.shape)}")
        return got.to(real.device).bool() & real


def row_bounds(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last real-token index of each row of a ``[B, T]`` mask (left or right padded)."""
    m = mask.bool()
    if not bool(m.any(1).all()):
        raise EmolensError("a row of the attention mask has no real token (an empty prompt)")
    first = m.int().argmax(1)
    last = m.shape[1] - 1 - m.flip(1).int().argmax(1)
    return first, last
