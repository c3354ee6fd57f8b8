"""The capture engine's ``instrument_source``: the current discovery universe, read from disk.

The engine calls the source every few seconds (``source_refresh_s``) from a worker thread, so a
running capture follows a new discovery run within seconds, without a restart. The file is read
again only when its modification time or size changes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

CURRENT_FILE = "current.json"  # the live universe, under discovery.universe_path


class UniverseFileSource:
    """``source()`` returns the instrument names of the current universe.

    ``path`` is the universe directory or its ``current.json``. Before the first discovery run (no
    file) it returns an empty list, which the engine treats as "nothing to follow yet". A file that
    cannot be parsed raises, so the engine logs it and keeps its current universe.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path if path.suffix == ".json" else path / CURRENT_FILE
        self._lock = threading.Lock()
        self._signature: tuple[int, int] | None = None
        self._names: list[str] = []

    def __call__(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        signature = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if signature != self._signature:
                self._names = _read_names(self.path)
                self._signature = signature
                log.info("universe %s: %d instruments", self.path, len(self._names))
            return list(self._names)

    def exists(self) -> bool:
        """Whether discovery has written a universe yet."""
        return self.path.exists()

    def __repr__(self) -> str:
        return f"UniverseFileSource({str(self.path)!r})"


def _read_names(path: Path) -> list[str]:
    document = msgspec.json.decode(path.read_bytes())
    instruments = document.get("instruments")
    if not isinstance(instruments, list):
        raise ValueError(f"{path}: no 'instruments' list")
    return [item["instrument_name"] for item in instruments]
