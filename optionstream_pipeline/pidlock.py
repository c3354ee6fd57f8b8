"""An exclusive lock on a file that names its holder: the archive's partition locks and the demo's.

``flock`` (not the file's existence) is the lock, so a holder that dies, however it dies, releases it
with its last descriptor; the pid written in the file is only there to name the holder in a refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class LockHeld(RuntimeError):
    """Another process holds the lock; ``holder`` is the pid it wrote (``"?"`` when none)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.holder = holder


def hold(path: Path) -> IO[str]:
    """Take the lock without waiting and write our pid in it; close the handle to release it."""
    handle = open(path, "a+")  # noqa: SIM115 (the caller holds it as long as it holds the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise LockHeld(path, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
