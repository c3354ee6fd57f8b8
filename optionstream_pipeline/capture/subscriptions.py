"""The subscription table: the followed universe and every instrument's state, in one pure structure.

For each followed instrument: which connection (shard) carries it, whether the exchange confirmed
its subscription or refused it, whether its book is in sync (the ``change_id`` it is at) or awaits a
snapshot and why, and when it last updated. The table decides what to subscribe, unsubscribe and
resync, and classifies every book message (:meth:`SubscriptionTable.on_book`, the continuity rule).

No sockets and no clock (times are passed in), so every rule is unit-tested without a network, as
the simulator's ``exchange.py`` is. The capture engine owns the table and tells it what happened;
connections read their shard from it and report their sessions' events to it.

Continuity: Deribit numbers book updates with one ``change_id`` counter shared by every book, so the
ids of one instrument increase but are not consecutive. A ``change`` continues the book when its
``prev_change_id`` is the ``change_id`` of the instrument's previous update. On a gap only that
instrument is resynchronized: its changes are dropped until its new snapshot, while every other
instrument keeps flowing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

# instrument.state values after which an instrument trades no more (Deribit documents only
# "created"; the others are what it and the simulator send as an expiry settles).
ENDED_STATES = frozenset({"closed", "settled", "terminated", "deactivated", "inactive"})


class Verdict(Enum):
    SNAPSHOT = "snapshot"  # forward; the book restarts here
    CHANGE = "change"  # forward; continuous with the previous message
    GAP = "gap"  # a message was missed: emit a gap marker and resync the instrument
    DROP = "drop"  # waiting for the snapshot after a gap or (re)subscribe: not forwardable
    UNFOLLOWED = "unfollowed"  # not (or no longer) followed: in flight during an unsubscribe


@dataclass(slots=True)
class Instrument:
    """One followed instrument's state."""

    name: str
    shard: int
    subscribed: bool = False  # confirmed by the exchange on its shard's connection
    rejected: str | None = None  # why the exchange refused its channel, while it does
    last_change_id: int | None = None  # of its last forwarded update; None: awaiting a snapshot
    snapshot_reason: str = "subscribe"  # what its next snapshot is: subscribe, resync or reconnect
    last_update_us: int | None = None  # local receive time of its last forwarded update

    @property
    def awaiting_snapshot(self) -> bool:
        return self.last_change_id is None


@dataclass(frozen=True, slots=True)
class GapInfo:
    instrument: str
    expected_prev_change_id: int | None
    prev_change_id: int
    change_id: int


@dataclass
class Changes:
    """What :meth:`SubscriptionTable.follow` changed, per shard: ``{shard: sorted names}``."""

    added: dict[int, list[str]] = field(default_factory=dict)
    removed: dict[int, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class SubscriptionTable:
    """Followed instruments by name, placed on at most ``max_shards`` shards of ``per_shard`` each.

    Placement is stable: a new instrument goes to the least-loaded shard with room (opening a new
    shard while allowed, else overfilling the least loaded), and removing instruments never moves
    another (moving one would cost it a resubscription and a fresh snapshot).
    """

    def __init__(self, per_shard: int, max_shards: int) -> None:
        self.per_shard = per_shard
        self.max_shards = max_shards
        self.last_gap: GapInfo | None = None
        self.snapshot_reason = "subscribe"  # of the snapshot on_book classified last
        self._entries: dict[str, Instrument] = {}
        self._shard_sizes: list[int] = []
        self._expired: set[str] = set()

    # -- the universe ---------------------------------------------------------------------------

    def follow(self, wanted: Iterable[str]) -> Changes:
        """Follow exactly ``wanted`` from now on (less those that expired); returns what moved where."""
        wanted = set(wanted)
        self._expired &= wanted  # an expired name that left the universe need not be remembered
        changes = Changes()
        for name in sorted(set(self._entries) - wanted):
            entry = self._entries.pop(name)
            self._shard_sizes[entry.shard] -= 1
            changes.removed.setdefault(entry.shard, []).append(name)
        for name in sorted(wanted - set(self._entries) - self._expired):
            shard = self._room()
            self._entries[name] = Instrument(name, shard)
            self._shard_sizes[shard] += 1
            changes.added.setdefault(shard, []).append(name)
        return changes

    def expire(self, name: str) -> int | None:
        """The exchange ended the instrument: stop following it, even while the universe still lists it.

        Returns the shard to unsubscribe it on, or ``None`` if it was not followed.
        """
        entry = self._entries.pop(name, None)
        if entry is None:
            return None
        self._shard_sizes[entry.shard] -= 1
        self._expired.add(name)
        return entry.shard

    def _room(self) -> int:
        sizes = self._shard_sizes
        candidates = [shard for shard, size in enumerate(sizes) if size < self.per_shard]
        if candidates:
            return min(candidates, key=sizes.__getitem__)
        if len(sizes) < self.max_shards:
            sizes.append(0)
            return len(sizes) - 1
        return min(range(len(sizes)), key=sizes.__getitem__)

    # -- reading (safe from other threads: each call copies before it iterates) ----------------

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Instrument | None:
        return self._entries.get(name)

    def names(self) -> set[str]:
        return set(self._entries)

    def instruments(self) -> list[Instrument]:
        return list(self._entries.values())

    def members(self, shard: int) -> list[str]:
        """The instruments a shard's connection should have subscribed, sorted."""
        return sorted(entry.name for entry in self.instruments() if entry.shard == shard)

    def shard_of(self, name: str) -> int | None:
        entry = self._entries.get(name)
        return entry.shard if entry is not None else None

    def shard_sizes(self) -> list[int]:
        return list(self._shard_sizes)

    @property
    def expired(self) -> set[str]:
        return set(self._expired)

    # -- what connections report ----------------------------------------------------------------

    def confirm(self, shard: int, names: Iterable[str]) -> list[str]:
        """The exchange confirmed these subscriptions on ``shard``.

        Returns those no longer followed there (removed while the request was in flight), which the
        connection must unsubscribe again.
        """
        gone = []
        for name in names:
            entry = self._entries.get(name)
            if entry is None or entry.shard != shard:
                gone.append(name)
                continue
            entry.subscribed = True
            entry.rejected = None
        return gone

    def reject(self, shard: int, names: Iterable[str], reason: str) -> None:
        """The exchange refused these channels (an error reply, or left out of the result)."""
        for name in names:
            entry = self._entries.get(name)
            if entry is not None and entry.shard == shard:
                entry.subscribed = False
                entry.rejected = reason

    def unsubscribing(self, shard: int, names: Iterable[str]) -> None:
        """The connection is leaving these books: a drop from now on is no disconnect of theirs."""
        for name in names:
            entry = self._entries.get(name)
            if entry is not None and entry.shard == shard:
                entry.subscribed = False

    def resyncing(self, shard: int, names: Iterable[str]) -> list[str]:
        """These books are resubscribed for fresh snapshots; returns those followed on ``shard``."""
        wanted = []
        for name in sorted(set(names)):
            entry = self._entries.get(name)
            if entry is not None and entry.shard == shard:
                entry.snapshot_reason = "resync"
                wanted.append(name)
        return wanted

    def connection_lost(self, shard: int) -> list[str]:
        """The shard's session ended. Its subscribed books are stale until their reconnect snapshots;
        returns them (each needs a ``disconnect`` marker)."""
        lost = []
        for entry in self.instruments():
            if entry.shard == shard and entry.subscribed:
                entry.subscribed = False
                entry.last_change_id = None
                entry.snapshot_reason = "reconnect"
                lost.append(entry.name)
        return sorted(lost)

    def invalidate(self, name: str) -> int | None:
        """An update of this book was lost (an unreadable frame): it awaits a snapshot from now on.

        Returns the ``change_id`` it was at, or ``None`` if it was not followed or already awaiting.
        """
        entry = self._entries.get(name)
        if entry is None:
            return None
        last, entry.last_change_id = entry.last_change_id, None
        return last

    # -- the hot path ---------------------------------------------------------------------------

    def on_book(self, name: str, change_id: int, prev_change_id: int | None, local_us: int) -> Verdict:
        """Classify one book message. ``prev_change_id is None`` marks a snapshot (old feeds have no
        ``type``). On ``SNAPSHOT``, :attr:`snapshot_reason` says which kind; on ``GAP``,
        :attr:`last_gap` says what was expected."""
        entry = self._entries.get(name)
        if entry is None:
            return Verdict.UNFOLLOWED
        if prev_change_id is None:
            entry.last_change_id = change_id
            entry.last_update_us = local_us
            self.snapshot_reason = entry.snapshot_reason
            entry.snapshot_reason = "subscribe"
            return Verdict.SNAPSHOT
        last = entry.last_change_id
        if prev_change_id == last:
            entry.last_change_id = change_id
            entry.last_update_us = local_us
            return Verdict.CHANGE
        if last is None:
            return Verdict.DROP
        self.last_gap = GapInfo(name, last, prev_change_id, change_id)
        entry.last_change_id = None
        return Verdict.GAP
