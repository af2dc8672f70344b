"""One error type for every problem a user can fix.

The CLI turns an :class:`EmolensError` into a single line on stderr and exit status 2, so a bad
input never produces a traceback or a partial result that looks complete. Library callers can
catch it like any other exception.
"""

from __future__ import annotations


class EmolensError(Exception):
    """A problem with the user's input or environment, with the fix in the message.

    Messages are one line and name both the problem and what to do about it, e.g.
    ``"unknown model 'foo': pass a hub id, a local directory, a .gguf file or one of ..."``.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}: {fix}"
        super().__init__(" ".join(message.split()))
