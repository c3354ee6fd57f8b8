"""Rebuild Deribit order books from the OptionStream record stream (pure: no Kafka, no clock, no I/O).

The rules every consumer follows, in one place (the archive's ``unreliable_why`` states the same ones
in SQL, for the book at a past time):

- a ``snapshot`` replaces the book, which is then reliable;
- a ``change`` applies only if its ``prev_change_id`` is the book's ``change_id``; one that does not
  continue the book is refused, and the book is unreliable (``gap: ...``) until its next snapshot
  (``strict`` raises :class:`ContinuityError` instead: capture's own tests use it);
- a ``change`` for an instrument with no snapshot yet (a consumer started mid-stream) makes a book
  that waits for its first snapshot;
- ``gap`` and ``disconnect`` markers make the book unreliable until the next snapshot, saying why;
- ``unsubscribed`` removes the book (the last update of it says so);
- a record of a capture session never seen before on a stream (a Kafka partition) ends the one
  before it there: the books it wrote last and that are still reliable become unreliable (``capture
  session X ended without markers``, as after the capture process was killed) until their next
  snapshot. Within a partition every record of a session comes before those of the next one.

Records are the decoded structs of :mod:`optionstream_pipeline.records` (``decode_record``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from optionstream_pipeline.deribit.books import apply_levels
from optionstream_pipeline.query.series import SESSION_ENDED
from optionstream_pipeline.records.book import BookRecord, Change, Snapshot, Unsubscribed

WAITING = "waiting for the first snapshot"
"""Why a book that never had a snapshot is not reliable (the archive says it the same way)."""

PriceLevel = tuple[float, float]
"""``(price, amount)``"""


class ContinuityError(ValueError):
    """A change that does not continue the book (a consumer-side gap), in strict mode."""


def session_ended(capture_id: str) -> str:
    """Why a book is unreliable once the next capture session wrote to its partition."""
    return f"{SESSION_ENDED}{capture_id} ended without markers"


@dataclass(slots=True, eq=False)
class OrderBook:
    """One instrument's book as the stream built it, with why it is not reliable (``None``: it is)."""

    instrument: str
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    change_id: int | None = None
    exchange_timestamp_ms: int | None = None  # of the last snapshot or change applied
    local_timestamp_us: int | None = None  # when capture received the last record of the book
    capture_id: str | None = None  # the capture session of the last record
    stream: int = 0  # the Kafka partition the book's records come from
    why: str | None = WAITING

    @property
    def reliable(self) -> bool:
        return self.why is None

    def best_bid(self) -> PriceLevel | None:
        return max(self.bids.items()) if self.bids else None

    def best_ask(self) -> PriceLevel | None:
        return min(self.asks.items()) if self.asks else None

    def mid(self) -> float | None:
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid[0] + ask[0]) / 2

    def spread(self) -> float | None:
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else ask[0] - bid[0]

    def depth(self, levels: int | None = None) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """The best ``levels`` bids (highest first) and asks (lowest first); all of them by default."""
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        return (bids, asks) if levels is None else (bids[:levels], asks[:levels])


class BookBuilder:
    """Applies records in Kafka order (per instrument, which is per key and thus per partition).

    ``select`` keeps only the instruments it accepts (asked once per instrument): the others are
    not rebuilt at all. ``stream`` in :meth:`apply` is the record's Kafka partition.
    """

    def __init__(self, strict: bool = False, select: Callable[[str], bool] | None = None) -> None:
        self.books: dict[str, OrderBook] = {}
        self.strict = strict
        self.records_applied = 0
        self._select = select
        self._selected: dict[str, bool] = {}
        self._session: dict[int, str] = {}  # the capture session writing each stream now
        self._sessions_seen: dict[int, set[str]] = {}

    def selects(self, instrument: str) -> bool:
        selected = self._selected.get(instrument)
        if selected is None:
            selected = self._selected[instrument] = self._select is None or self._select(instrument)
        return selected

    def apply(self, record: BookRecord, stream: int = 0) -> OrderBook | None:
        """Apply one record; returns its instrument's book (``None``: not selected). An ``unsubscribed``
        record returns the book it removed, saying so in ``why``."""
        capture_id = record.capture.id
        if self._session.get(stream) != capture_id:
            self._switch_session(stream, capture_id)
        instrument = record.instrument
        if not self.selects(instrument):
            return None
        self.records_applied += 1
        book = self.books.get(instrument)
        kind = type(record)
        if kind is Change:
            if book is None:
                book = self.books[instrument] = OrderBook(instrument, stream=stream)
            elif book.why is None:
                if record.prev_change_id != book.change_id:
                    if self.strict:
                        raise ContinuityError(
                            f"{instrument}: change {record.change_id} continues {record.prev_change_id}, "
                            f"but the book is at {book.change_id}"
                        )
                    book.why = (
                        f"gap: change {record.change_id} continues {record.prev_change_id}, "
                        f"not the book's {book.change_id}"
                    )
                else:
                    apply_levels(book.bids, record.bids)
                    apply_levels(book.asks, record.asks)
                    book.change_id = record.change_id
                    book.exchange_timestamp_ms = record.exchange_timestamp_ms
        elif kind is Snapshot:
            book = self.books[instrument] = OrderBook(
                instrument,
                {price: amount for _, price, amount in record.bids},
                {price: amount for _, price, amount in record.asks},
                record.change_id,
                record.exchange_timestamp_ms,
                stream=stream,
                why=None,
            )
        elif kind is Unsubscribed:
            book = self.books.pop(instrument, None) or OrderBook(instrument, stream=stream)
            book.why = f"unsubscribed: {record.reason}"
        else:  # Gap | Disconnect
            if book is None:
                book = self.books[instrument] = OrderBook(instrument, stream=stream)
            elif book.why != WAITING:
                book.why = f"{record.type}: {record.reason}"
        book.local_timestamp_us = record.local_timestamp_us
        book.capture_id = capture_id
        return book

    def seed(self, book: OrderBook) -> None:
        """Start from a book known from elsewhere (the archive's book at a past time)."""
        self.books[book.instrument] = book

    def seed_session(self, stream: int, capture_id: str) -> None:
        """The capture session writing ``stream`` at the seeded books' time."""
        self._session[stream] = capture_id
        self._sessions_seen.setdefault(stream, set()).add(capture_id)

    def mark_stream(self, stream: int, why: str) -> None:
        """Every book of ``stream`` that has had a snapshot is unreliable for ``why`` (records of it
        are missing) until its next snapshot."""
        for book in self.books.values():
            if book.stream == stream and book.why != WAITING:
                book.why = why

    def _switch_session(self, stream: int, capture_id: str) -> None:
        seen = self._sessions_seen.setdefault(stream, set())
        ended = self._session.get(stream)
        self._session[stream] = capture_id
        if capture_id in seen:
            return  # an older session writing again (two captures at once): nothing ends
        seen.add(capture_id)
        if ended is None:
            return
        why = session_ended(ended)
        for book in self.books.values():
            if book.stream == stream and book.capture_id == ended and book.why is None:
                book.why = why
