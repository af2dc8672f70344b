"""One-line notices on stderr for things a user must know but that are not errors.

A repaired store, a stale lock taken over or a fallback dataset changes what a run means, so it
is announced where scripts and people look for trouble (stderr), never only on stdout, and in
one recognisable shape: ``emolens: warning: <what happened>``.
"""

from __future__ import annotations

import sys

__all__ = ["warn"]


def warn(message: str) -> None:
    """Print ``emolens: warning: <message>`` on stderr (one line)."""
    print(f"emolens: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)
