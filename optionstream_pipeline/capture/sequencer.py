"""Per-instrument ``change_id`` continuity: the book-integrity core of capture (pure, no I/O).

Deribit numbers book updates with one ``change_id`` counter shared by every book, so the ids of
one instrument are increasing but not consecutive. Continuity means each ``change`` names the
``change_id`` of the previous message of the same instrument as its ``prev_change_id``.

On a gap only the affected instrument is resynchronized: its changes are dropped until a new
snapshot arrives, while every other instrument keeps flowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    SNAPSHOT = "snapshot"  # forward; the book restarts here
    CHANGE = "change"  # forward; continuous with the previous message
    GAP = "gap"  # a message was missed: emit a gap marker and resync the instrument
    DROP = "drop"  # waiting for the snapshot after a gap or (re)subscribe: not forwardable


@dataclass(slots=True)
class GapInfo:
    instrument: str
    expected_prev_change_id: int | None
    prev_change_id: int
    change_id: int


class BookSequencer:
    """Decides, for each book message, whether it continues the instrument's stream.

    ``last_change_id[instrument]`` is ``None`` while the instrument waits for a snapshot.
    """

    __slots__ = ("last_change_id", "last_gap")

    def __init__(self) -> None:
        self.last_change_id: dict[str, int | None] = {}
        self.last_gap: GapInfo | None = None

    def check(self, instrument: str, change_id: int, prev_change_id: int | None) -> Verdict:
        """Classify one message. ``prev_change_id is None`` marks a snapshot (old feeds have no ``type``)."""
        if prev_change_id is None:
            self.last_change_id[instrument] = change_id
            return Verdict.SNAPSHOT
        last = self.last_change_id.get(instrument)
        if prev_change_id == last:
            self.last_change_id[instrument] = change_id
            return Verdict.CHANGE
        if last is None:
            return Verdict.DROP
        self.last_gap = GapInfo(instrument, last, prev_change_id, change_id)
        self.last_change_id[instrument] = None
        return Verdict.GAP

    def await_snapshot(self, instrument: str) -> None:
        """Forget the instrument's position: changes are dropped until its next snapshot."""
        self.last_change_id[instrument] = None

    def forget(self, instrument: str) -> None:
        self.last_change_id.pop(instrument, None)

    def is_synced(self, instrument: str) -> bool:
        return self.last_change_id.get(instrument) is not None
