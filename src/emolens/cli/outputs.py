"""Output folders a command created, so a failed command leaves no empty ``--out`` behind.

A folder that exists but holds nothing looks like a result that was never written; scripts that
test for the folder would be misled. Commands note each folder they create; when the command
fails (any non-zero exit), :func:`remove_empty_created` removes those still empty.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["note_created", "remove_empty_created"]

_CREATED: list[Path] = []


def note_created(folder: str | Path) -> None:
    """Remember that this command created ``folder``."""
    _CREATED.append(Path(folder))


def remove_empty_created() -> None:
    """Remove the noted folders that are still empty (innermost first)."""
    for folder in sorted(_CREATED, key=lambda p: len(p.parts), reverse=True):
        try:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:
            pass
    _CREATED.clear()
