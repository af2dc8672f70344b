"""Cheap checks of CLI values, run before a model loads so a typo costs no time.

Each check raises one :class:`~emolens.errors.EmolensError` line naming the flag and the fix; the
library functions behind the commands check again (they are callable without the CLI).
"""

from __future__ import annotations

import re

from emolens.errors import EmolensError

__all__ = ["check_layer_text", "relative_positions"]

_LAYERS = re.compile(r"^(all|-?\d+(\s*,\s*-?\d+)*|-?\d*:-?\d*)$")


def check_layer_text(layers: str) -> None:
    """``--layers`` must be ``all``, ints ``3``/``2,5,7`` or a range ``a:b`` (checked against the model later)."""
    if not _LAYERS.match(layers.strip()):
        raise EmolensError(f"bad --layers {layers!r}", "use 'all', '3', '2,5,7' or 'a:b' (0-indexed, b excluded)")


def relative_positions(positions: str) -> list[int | str]:
    """Parse ``--positions``: ints must be negative (relative to the end of the prompt, -1 = cue)."""
    from emolens.engine.positions import position_items

    parsed = position_items(positions)
    absolute = [p for p in parsed if isinstance(p, int) and p >= 0]
    if absolute:
        raise EmolensError(f"--positions {absolute[0]} is not relative",
                           "positions count back from the answer cue: -1 is the cue token, -2 the one before, "
                           "-5: the last five")
    return parsed
