"""Writer locks for folders that one process at a time may write (activation stores, run folders).

Without a lock, two writers on the same store both compute everything and one crashes at the
end. A lock is a small JSON file ``.emolens.lock`` holding the holder's pid, host and start time,
created with ``O_EXCL`` so exactly one writer wins. A second writer gets one line naming the
holder. A lock left by a process that died (same host, pid gone) is stale: it is taken over with a
warning, so a killed run never blocks its own rerun. The holder may take its own lock again
(re-entrant), which lets a command lock its output folder before the library code that writes it.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import socket
from pathlib import Path

from emolens.errors import EmolensError
from emolens.notices import warn

__all__ = ["LOCK_NAME", "WriterLock", "lock_holder"]

LOCK_NAME = ".emolens.lock"
_HELD: dict[Path, WriterLock] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_holder(folder: str | Path) -> dict | None:
    """The holder recorded in ``folder``'s lock (``{"pid", "host", "since", "what"}``), or None."""
    path = Path(folder) / LOCK_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?", "since": "?", "what": "unreadable lock"}


class WriterLock:
    """An exclusive writer lock on ``folder`` (created if missing); release it or let the process end."""

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder = Path(folder).resolve()
        self.what = what
        self.path = self.folder / LOCK_NAME
        self.count = 0

    def acquire(self) -> WriterLock:
        held = _HELD.get(self.folder)
        if held is not None:  # this process already holds it
            held.count += 1
            return held
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "what": self.what}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            self.count = 1
            _HELD[self.folder] = self
            return self
        raise EmolensError(f"cannot take the lock {str(self.path)!r}", "check the folder's permissions")

    def _handle_existing(self) -> None:
        holder = lock_holder(self.folder)
        if holder is None:
            return  # released meanwhile; try again
        pid, host = int(holder.get("pid", -1)), str(holder.get("host", "?"))
        here = socket.gethostname()
        if pid == os.getpid() and host == here:
            stale = True  # our own leftover (a lock object that was dropped without release)
        elif host == here and (pid <= 0 or not _alive(pid)):
            warn(f"{self.what} {str(self.folder)!r} was locked by pid {pid} on {host}, which is gone; "
                 "taking the lock over")
            stale = True
        else:
            stale = False
        if not stale:
            raise EmolensError(
                f"{self.what} {str(self.folder)!r} is being written by pid {pid} on host {host} "
                f"(since {holder.get('since', '?')})",
                f"wait for it to finish, or delete {str(self.path)!r} if that process is gone")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        held = _HELD.get(self.folder)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        _HELD.pop(self.folder, None)
        holder = lock_holder(self.folder)
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.count = 1
        lock.release()
