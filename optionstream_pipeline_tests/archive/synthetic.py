"""A synthetic archive of several hours, shared by the checkpoint and time-series tests (a plugin).

The streams (written straight into the archive, no broker needed) have what the book at T must carry
across hour boundaries: books unchanged for hours, gaps and disconnects waiting for their resync,
unsubscribed instruments, an instrument listed after the first checkpoints, a capture session killed
without markers, an hour without any record, a partition quiet while another goes on, and a topic
incarnation replaced by a new one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline_tests.support.books import Replay, Stream

HOUR_MS = 3_600_000
NAMES = [f"BTC-27JUN25-{strike}-{kind}" for strike in (90000, 100000, 110000, 120000) for kind in "CP"]
LISTED_LATE = "BTC-27JUN25-130000-C"  # listed at 11:06, after partition 0's checkpoints began
NAMES.append(LISTED_LATE)


@dataclass
class _Book:
    subscribed: bool = False
    valid: bool = False
    change_id: int = 0
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)


class Market:
    """Random but well-formed capture output (capture's rules: changes continue their book, a marker
    is followed by a resync snapshot, an unsubscribed instrument by a subscribe snapshot)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.books = {name: _Book() for name in NAMES}
        self.change_ids = iter(range(1000, 10**9, 7))

    def step(self, stream: Stream, name: str, at: int, session: str) -> None:
        book, rng = self.books[name], self.rng
        if not book.valid:
            if rng.random() < 0.15:  # dropped before the snapshot came (unsubscribed: a book waiting for it)
                return stream.marker("disconnect", name, at, "connection dropped", session)
            return self._snapshot(stream, name, at, session, "resync" if book.subscribed else "subscribe")
        roll = rng.random()
        if roll < 0.78:
            return self._change(stream, name, at, session)
        book.valid = False
        if roll < 0.84:
            change_id = next(self.change_ids)
            return stream.gap(name, at, change_id + 3, change_id + 1, book.change_id, session)
        if roll < 0.90:
            return stream.marker("disconnect", name, at, "connection dropped", session)
        if roll < 0.93:
            book.subscribed = False
            return stream.marker("unsubscribed", name, at, "left the universe", session)
        return self._snapshot(stream, name, at, session, "resync")

    def restart(self) -> None:
        """A new capture session: every instrument subscribed again from its snapshot."""
        for book in self.books.values():
            book.subscribed = book.valid = False

    def _snapshot(self, stream: Stream, name: str, at: int, session: str, reason: str) -> None:
        book, rng = self.books[name], self.rng
        book.bids = {round(0.01 * i, 4): float(rng.randint(1, 50)) for i in rng.sample(range(1, 20), 4)}
        book.asks = {round(0.01 * i, 4): float(rng.randint(1, 50)) for i in rng.sample(range(21, 40), 4)}
        book.subscribed = book.valid = True
        book.change_id = next(self.change_ids)
        levels = {side: [("new", p, a) for p, a in getattr(book, side).items()] for side in ("bids", "asks")}
        stream.snapshot(name, at, book.change_id, session, reason=reason, **levels)

    def _change(self, stream: Stream, name: str, at: int, session: str) -> None:
        book, rng = self.books[name], self.rng
        side = rng.choice(("bids", "asks"))
        levels = getattr(book, side)
        base = 1 if side == "bids" else 21
        price = round(0.01 * rng.randint(base, base + 18), 4)
        if price in levels and rng.random() < 0.4:
            update = ("delete", price, 0.0)
            del levels[price]
        else:
            update = ("change" if price in levels else "new", price, float(rng.randint(1, 50)))
            levels[price] = update[2]
        previous, book.change_id = book.change_id, next(self.change_ids)
        stream.change(name, at, book.change_id, previous, session, **{side: [update]})


@dataclass
class Archive:
    root: Path
    streams: list[Stream]
    replay: Replay
    killed_at_ms: int


def build_archive(root: Path, seed: int = 7) -> Archive:
    """Partition 0 from 08:00 to 12:30 with no record from 10:00 to 11:00; partition 1 in incarnation
    0 to 09:40, then in incarnation 1 (offsets again from 0) to 11:20, quiet after. Session ``a``
    is killed at 10:40 (no markers), ``b`` starts at 10:45."""
    market = Market(seed)
    p0, p1, p1_new = Stream(0), Stream(1, 0), Stream(1, 1)
    killed, restarted = int(2.67 * HOUR_MS), int(2.75 * HOUR_MS)
    at, session = 0, "a"
    while at < int(4.5 * HOUR_MS):
        at += market.rng.randint(2_000, 30_000)
        if killed <= at < restarted:
            continue  # no capture running
        if at >= restarted and session == "a":
            session = "b"
            market.restart()
        name = market.rng.choice(NAMES)
        if name == LISTED_LATE and at < int(3.1 * HOUR_MS):
            continue
        partition = NAMES.index(name) % 2
        if partition == 0:
            if 2 * HOUR_MS <= at < 3 * HOUR_MS:
                continue  # an hour without any record
            stream = p0
        else:
            if at >= int(3.33 * HOUR_MS):
                continue  # quiet from 11:20
            stream = p1 if at < int(1.67 * HOUR_MS) else p1_new
        market.step(stream, name, at, session)
    store = ArchiveStore(root)
    for stream in (p0, p1, p1_new):  # each file as an archive run writes it, checkpoints after each
        stream.write(store, per_file=40)
    return Archive(root, [p0, p1, p1_new], Replay([p0.records, p1.records, p1_new.records]), killed)


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Built once per test session; tests that change it work on a copy."""
    return build_archive(tmp_path_factory.mktemp("synthetic"))
