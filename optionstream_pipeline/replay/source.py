"""The archive played back as a Deribit data source: rows in, Deribit frames out, on a clock passed in.

:class:`ArchiveSource` is a :class:`~optionstream_pipeline.simulator.exchange.DataSource` for the
simulator's pure :class:`~optionstream_pipeline.simulator.exchange.Exchange`, in the shape of
:class:`~optionstream_pipeline.simulator.replay.ReplaySource`, but with ONE cursor for every session:
the replay clock. No sockets and no DuckDB here (the shell, :mod:`.loading`, reads the archive), so
the tests drive it with rows and a hand-moved clock.

- **The clock** stands at ``start`` until ``start_delay_s`` after the first subscription to a data
  channel (so that a client subscribing in several requests, or several clients started together,
  all get the books at ``start``), then runs at ``speed`` times real time (``speed=None``: as fast as
  the slowest subscriber reads, see :data:`HIGH_WATER`). Every session sees the same events at the
  same replay time; a session that joins later starts from the books as they stand then.
- **Books** are kept in memory while the replay plays, seeded from ``books_at(start)``: a book
  subscribed gets Deribit's snapshot notification of that state, then every archived change of it
  with its original ``change_id``/``prev_change_id`` and levels. An archived snapshot (a resync or
  reconnect in the capture) is sent as a snapshot. ``gap``/``disconnect``/``unsubscribed`` markers
  are not Deribit messages and are not sent; they leave the book *unsynced*: its changes are not
  sent (nor applied) until its next archived snapshot, and a session subscribing then gets no
  snapshot until that one. A book not reliable at ``start`` (no snapshot yet, after a marker, its
  capture session ended) starts unsynced too: a Deribit client is never sent a change it cannot
  apply. A capture session that ends inside the window without markers (its process was killed)
  leaves its books unsynced once the clock passes its last record, as ``books_at`` judges them
  from then on: a client subscribing then gets their snapshot only after the next session's.
- **Tickers** are sent as archived, interleaved with the books on the same clock; nothing is sent on
  subscribe (the next archived ticker follows, as Deribit's next 100 ms ticker would).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from optionstream_pipeline.archive.ticker_schema import ticker_data
from optionstream_pipeline.deribit.instruments import InstrumentNameError, OptionName, parse_option_name
from optionstream_pipeline.deribit.protocol import split_channel
from optionstream_pipeline.records.ticker import deribit_ticker
from optionstream_pipeline.simulator.universe import Instrument, settlement_period

log = logging.getLogger(__name__)

HIGH_WATER = 2_000  # as fast as possible: frames queued to a subscriber before the replay waits for it
MAX_EVENTS_PER_STEP = 20_000  # a step of the timer never holds the event loop longer than this many events
MARKERS = ("gap", "disconnect", "unsubscribed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class BookEvent:
    """One archived book record (its rows grouped), in stream order by :attr:`key`."""

    key: tuple[int, int, int, int, int]  # book_time µs, table (0), incarnation, partition, offset
    instrument: str
    interval: str
    kind: str  # snapshot, change, gap, disconnect or unsubscribed
    capture_id: str  # the capture session that wrote it
    timestamp_ms: int
    change_id: int | None
    prev_change_id: int | None
    bids: list[list[Any]]  # [action, price, amount] in the record's order
    asks: list[list[Any]]

    @property
    def channel(self) -> str:
        return f"book.{self.instrument}.{self.interval}"


@dataclass(frozen=True, slots=True)
class TickerEvent:
    """One archived ticker row, Deribit's ``data`` object ready to send."""

    key: tuple[int, int, int, int, int]  # ticker_time µs, table (1), incarnation, partition, offset
    instrument: str
    interval: str
    data: dict

    @property
    def channel(self) -> str:
        return f"ticker.{self.instrument}.{self.interval}"


Event = BookEvent | TickerEvent


def book_events(rows: Iterable[dict]) -> Iterator[BookEvent]:
    """Group the book table's rows (in stream order, bids then asks by ``level``) into records."""
    current: list[dict] = []
    for row in rows:
        if current and _record_id(row) != _record_id(current[0]):
            yield _book_event(current)
            current = []
        current.append(row)
    if current:
        yield _book_event(current)


def _record_id(row: dict) -> tuple[int, int, int]:
    return row["topic_incarnation"], row["kafka_partition"], row["kafka_offset"]


def _book_event(rows: list[dict]) -> BookEvent:
    first = rows[0]
    levels: dict[str, list[list[Any]]] = {"bid": [], "ask": []}
    for row in sorted((r for r in rows if r["side"] is not None), key=lambda r: (r["side"] != "bid", r["level"])):
        levels[row["side"]].append([row["action"], row["price"], row["amount"]])
    key = (first["book_time_us"], 0, *_record_id(first))
    return BookEvent(
        key,
        first["symbol"],
        first["interval"],
        first["record_type"],
        first["capture_id"],
        first["timestamp_us"] // 1000,
        first["change_id"],
        first["prev_change_id"],
        levels["bid"],
        levels["ask"],
    )


def ticker_events(rows: Iterable[dict]) -> Iterator[TickerEvent]:
    """The ticker table's rows (in stream order) as Deribit ticker objects, through ``ticker_data``."""
    for row in rows:
        key = (row["ticker_time_us"], 1, *_record_id(row))
        ticker = ticker_data(row, row["timestamp_us"] // 1000)
        yield TickerEvent(key, row["symbol"], row["interval"], deribit_ticker(ticker))


def merged(*streams: Iterable[Event]) -> Iterator[Event]:
    """Book and ticker events (each stream in its own order) on one time line: by time, books first."""
    return heapq.merge(*streams, key=lambda event: event.key)


class EventFeed(Protocol):
    """Where the events come from: a list in tests, a prefetching reader of the archive in the shell."""

    def peek(self) -> Event | None:
        """The next event if it is loaded (``None``: not yet, or no more: see :attr:`done`)."""

    def pop(self) -> None:
        """Drop the event :meth:`peek` returned."""

    @property
    def done(self) -> bool:
        """No event will come any more."""


class ListFeed:
    """An :class:`EventFeed` over events already in memory, in order."""

    def __init__(self, events: Iterable[Event]) -> None:
        self._events = list(events)
        self._position = 0

    def peek(self) -> Event | None:
        return self._events[self._position] if self._position < len(self._events) else None

    def pop(self) -> None:
        self._position += 1

    @property
    def done(self) -> bool:
        return self._position >= len(self._events)


@dataclass
class Book:
    """One book as the replay has played it; ``synced`` when a client may be sent its snapshot."""

    timestamp_ms: int = 0
    change_id: int | None = None
    synced: bool = False
    capture_id: str | None = None  # the session of its last snapshot or change
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)

    def snapshot(self, instrument: str) -> dict:
        """Deribit's snapshot notification ``data`` for the book as it stands."""
        return {
            "type": "snapshot",
            "timestamp": self.timestamp_ms,
            "instrument_name": instrument,
            "change_id": self.change_id,
            "bids": [["new", p, a] for p, a in sorted(self.bids.items(), reverse=True)],
            "asks": [["new", p, a] for p, a in sorted(self.asks.items())],
        }

    def apply(self, event: BookEvent) -> None:
        """A snapshot restarts the book; a change updates it (``delete`` or amount 0 removes a level)."""
        if event.kind == "snapshot":
            self.bids, self.asks, self.synced = {}, {}, True
        for side, levels in ((self.bids, event.bids), (self.asks, event.asks)):
            for action, price, amount in levels:
                if action == "delete" or not amount:
                    side.pop(price, None)
                else:
                    side[price] = amount
        self.timestamp_ms, self.change_id, self.capture_id = event.timestamp_ms, event.change_id, event.capture_id


@dataclass(frozen=True, slots=True)
class SeedBook:
    """A book at the window's start, as ``books_at(start)`` gives it."""

    instrument: str
    interval: str
    reliable: bool
    change_id: int | None
    timestamp_ms: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    capture_id: str | None = None  # the session of its last record


@dataclass
class Played:
    """What the replay has done, for the log and for tests."""

    book_records: int = 0
    tickers: int = 0
    held_back: int = 0  # changes of unsynced books, not sent
    markers: int = 0
    sessions_ended: int = 0  # capture sessions that ended without markers inside the window

    def __str__(self) -> str:
        return (
            f"{self.book_records} book records ({self.markers} markers not sent, {self.held_back} changes of "
            f"unsynced books held back, {self.sessions_ended} capture sessions ended without markers), "
            f"{self.tickers} tickers"
        )


class ArchiveSource:
    """A :class:`DataSource` playing the archive's window ``[start, stop]`` on one replay clock."""

    raw_requires_auth = False  # the archive is the user's own: raw books need no API key here

    def __init__(
        self,
        feed: EventFeed,
        start: datetime,
        stop: datetime,
        seeds: Iterable[SeedBook],
        channels: Iterable[str],
        speed: float | None = 1.0,
        start_delay_s: float = 0.0,
        session_ends: Mapping[str, int] | None = None,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be above 0, got {speed!r}")
        self.feed, self.speed, self.start_delay_s = feed, speed, start_delay_s
        self.start_us, self.stop_us = epoch_us(start), epoch_us(stop)
        self.books: dict[str, Book] = {}
        for seed in seeds:
            self.books[f"book.{seed.instrument}.{seed.interval}"] = _seeded(seed)
        self.channels = frozenset(channels) | frozenset(self.books)
        self.started_s: float | None = None
        self.position_us = self.start_us  # the replay clock: exchange time played up to
        self.finished = False
        self.played = Played()
        self._index: float | None = None
        ends = (session_ends or {}).items()
        self._endings = deque(sorted((us, capture_id) for capture_id, us in ends if self.start_us <= us < self.stop_us))

    # -- the DataSource protocol --------------------------------------------------------------

    def accepts(self, channel: str) -> bool:
        return channel in self.channels

    def on_subscribed(self, exchange, session, channel: str, now_s: float) -> None:
        """Start the clock on the first subscription; send a synced book's snapshot as it stands."""
        if self.started_s is None:
            self.started_s = now_s + self.start_delay_s
            log.info("replay clock starts at %s in %g s (speed %s)", _shown(self.start_us), self.start_delay_s,
                     self.speed or "as fast as possible")  # fmt: skip
        book = self.books.get(channel)
        if book is not None and book.synced:
            session.send(exchange.encode_notification(channel, book.snapshot(split_channel(channel)[1])))

    def advance(self, exchange, now_s: float, halted: bool) -> None:
        """Send every event the clock has reached (as fast as possible: while subscribers keep up)."""
        if self.started_s is None or now_s < self.started_s or self.finished or halted:
            return
        target = self.stop_us if self.speed is None else self.clock_us(now_s)
        for _ in range(MAX_EVENTS_PER_STEP):
            event = self.feed.peek()
            if event is None or event.key[0] > target:
                break
            if self.speed is None and self._behind(exchange, event.channel):
                return
            self.feed.pop()
            self._play(exchange, event)
        else:
            return
        if self.speed is not None:
            self.position_us = max(self.position_us, min(target, self.stop_us))
        elif self.feed.done:  # as fast as possible: the clock stands at the last event played until the end
            self.position_us = self.stop_us
        self._end_sessions_before(self.position_us)
        if self.feed.done and self.position_us >= self.stop_us:
            self.finished = True
            log.info("replay finished: the window to %s is played out (%s); connections stay open",
                     _shown(self.stop_us), self.played)  # fmt: skip

    def instruments_json(self, currency: str, expired: bool) -> list[dict]:
        """The options the window holds, as Deribit instrument objects as of ``start``: all active
        (the archive holds their books then, so they were trading); ``expired=true`` lists none."""
        if expired or currency not in ("BTC", "any"):
            return []
        names = sorted({channel.split(".")[1] for channel in self.channels})
        objects = []
        for number, name in enumerate(names):
            try:
                parsed = parse_option_name(name)
            except InstrumentNameError:
                continue
            objects.append(_instrument(name, parsed, number, self.start_us).to_json())
        return objects

    def index_price(self) -> float | None:
        """The index price of the last ticker played (``None`` before any)."""
        return self._index

    def time_ms(self, now_s: float) -> int:
        """``public/get_time``: the replay clock (exchange time played up to), as Deribit's time."""
        return self.clock_us(now_s) // 1000

    # -- the clock ----------------------------------------------------------------------------

    def clock_us(self, now_s: float) -> int:
        """Exchange time the replay stands at, at real time ``now_s`` (``start`` until it starts)."""
        if self.started_s is None or now_s < self.started_s:
            return self.start_us
        if self.speed is None:
            return self.position_us
        return self.start_us + int((now_s - self.started_s) * self.speed * 1_000_000)

    def _behind(self, exchange, channel: str) -> bool:
        subscribers = exchange.subscribers.get(channel, ())
        return any(len(session.outbox) >= HIGH_WATER for session in subscribers)

    # -- events -------------------------------------------------------------------------------

    def _play(self, exchange, event: Event) -> None:
        self._end_sessions_before(event.key[0])
        if isinstance(event, TickerEvent):
            self.played.tickers += 1
            self._index = event.data.get("index_price", self._index)
            exchange.publish(event.channel, event.data)
        else:
            self._play_book(exchange, event)
        if self.speed is None:
            self.position_us = max(self.position_us, event.key[0])

    def _end_sessions_before(self, moment_us: int) -> None:
        """Capture sessions whose last record is before ``moment_us`` and that left no marker (their
        process was killed): their books are not known from then on (``books_at`` says the same),
        until a later snapshot of each."""
        while self._endings and self._endings[0][0] < moment_us:
            _, capture_id = self._endings.popleft()
            self.played.sessions_ended += 1
            for book in self.books.values():
                if book.capture_id == capture_id:
                    book.synced = False

    def _play_book(self, exchange, event: BookEvent) -> None:
        self.played.book_records += 1
        book = self.books.setdefault(event.channel, Book())
        if event.kind in MARKERS:
            self.played.markers += 1
            book.synced = False
            return
        if event.kind == "change" and not book.synced:
            self.played.held_back += 1
            return
        book.apply(event)
        exchange.publish(event.channel, _notification(event))


def _notification(event: BookEvent) -> dict:
    """Deribit's book notification ``data`` for an archived snapshot or change, ids and levels as archived."""
    data: dict[str, Any] = {"type": event.kind, "timestamp": event.timestamp_ms}
    if event.kind == "change":
        data["prev_change_id"] = event.prev_change_id
    data.update(instrument_name=event.instrument, change_id=event.change_id, bids=event.bids, asks=event.asks)
    return data


def _seeded(seed: SeedBook) -> Book:
    if not seed.reliable:
        return Book()
    return Book(seed.timestamp_ms, seed.change_id, True, seed.capture_id, dict(seed.bids), dict(seed.asks))


def _instrument(name: str, parsed: OptionName, number: int, start_us: int) -> Instrument:
    """The simulator's instrument object; the archive does not know the listing time: a day before start."""
    created = start_us // 1000 - 86_400_000
    return Instrument(name, parsed.expiry, parsed.strike, parsed.option_type, 100_000 + number, created,
                      settlement_period(parsed.expiry), parsed.currency)  # fmt: skip


def _shown(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()
