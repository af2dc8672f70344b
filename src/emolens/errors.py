"""One error type for every problem a user can fix, worded for whoever called.

The CLI turns an :class:`EmolensError` into a single line on stderr and exit status 2, so a bad
input never produces a traceback or a partial result that looks complete. Library callers can
catch it like any other exception.

The library does not know the CLI's flag spellings (``cli/`` sits above it), yet a CLI user
should read ``--batch-size`` where a Python user reads ``batch_size``. So a message names a
parameter with :func:`arg`, which leaves a marker in the text; ``str(error)`` spells it the
Python way (``batch_size=0``) and :meth:`EmolensError.render`, given the CLI's parameter → flag
table, spells it as a flag (``--batch-size 0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["EmolensError", "arg"]

# Private-use code points: they never occur in a user's text, so a marker cannot be forged or
# broken by a value it wraps; " ".join(message.split()) keeps them (they are not whitespace).
_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARK = re.compile(f"{_OPEN}([^{_OPEN}{_CLOSE}]*){_CLOSE}")
_NO_VALUE = object()


def _cli_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def arg(name: str, value: object = _NO_VALUE) -> str:
    """A parameter, optionally with a value, marked for the caller's spelling.

    ``arg("batch_size")`` reads ``batch_size`` from Python and ``--batch-size`` on the command
    line; ``arg("batch_size", 0)`` reads ``batch_size=0`` and ``--batch-size 0``; a ``True``
    value is the bare switch on the command line (``arg("readout", True)`` → ``--readout``).
    Use it inside an f-string passed to :class:`EmolensError`.
    """
    if value is _NO_VALUE:
        return f"{_OPEN}{name}{_SEP}{name}{_SEP}{_CLOSE}"
    cli = "" if value is True else _cli_value(value)
    return f"{_OPEN}{name}{_SEP}{name}={value!r}{_SEP}{cli}{_CLOSE}"


def _render(text: str, flag_of: Callable[[str], str | None] | None) -> str:
    def one(match: re.Match) -> str:
        name, python, cli = match.group(1).split(_SEP)
        flag = flag_of(name) if flag_of is not None else None
        if flag is None:
            return python
        return f"{flag} {cli}" if cli else flag

    return _MARK.sub(one, text)


class EmolensError(Exception):
    """A problem with the user's input or environment, with the fix in the message.

    Messages are one line and name both the problem and what to do about it, e.g.
    ``"unknown model 'foo': pass a hub id, a local directory, a .gguf file or one of ..."``.
    Parameters are named through :func:`arg`, never as CLI flags, so the message is right for
    Python callers and the CLI alike.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}: {fix}"
        # args[0] keeps the markers, so a pickled error (Ray workers) still renders either way.
        super().__init__(" ".join(message.split()))

    def __str__(self) -> str:
        return _render(str(self.args[0]) if self.args else "", None)

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters the message names, in order."""
        text = str(self.args[0]) if self.args else ""
        return tuple(m.group(1).split(_SEP)[0] for m in _MARK.finditer(text))

    def render(self, flag_of: Callable[[str], str | None]) -> str:
        """The message with each parameter spelled as ``flag_of(name)`` (Python spelling where None)."""
        return _render(str(self.args[0]) if self.args else "", flag_of)
