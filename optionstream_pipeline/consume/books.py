"""Rebuild Deribit order books from the OptionStream record stream (pure, no Kafka).

The rules a consumer must follow, in one place: a ``snapshot`` replaces the book; a ``change``
applies only if its ``prev_change_id`` is the book's ``change_id``; ``gap`` and ``disconnect``
markers make the book unusable until the next snapshot; ``unsubscribed`` removes it. Records are
the decoded structs of :mod:`optionstream_pipeline.records` (``decode_record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optionstream_pipeline.deribit.books import apply_levels
from optionstream_pipeline.records.book import BookRecord, Change, Disconnect, Gap, Snapshot, Unsubscribed


class ContinuityError(ValueError):
    """A change that does not continue the book (a consumer-side gap)."""


@dataclass
class OrderBook:
    instrument: str
    change_id: int | None = None
    exchange_timestamp_ms: int | None = None
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    valid: bool = False

    def best_bid(self) -> tuple[float, float] | None:
        return max(self.bids.items()) if self.bids else None

    def best_ask(self) -> tuple[float, float] | None:
        return min(self.asks.items()) if self.asks else None


class BookBuilder:
    """Applies records in Kafka order (per instrument, which is per key and thus per partition)."""

    def __init__(self, strict: bool = True) -> None:
        self.books: dict[str, OrderBook] = {}
        self.strict = strict
        self.records_applied = 0

    def apply(self, record: BookRecord) -> OrderBook | None:
        instrument = record.instrument
        book = self.books.get(instrument)
        if isinstance(record, Change):
            if book is None or not book.valid:
                return book  # waiting for a snapshot: capture forwards no such change, but be safe
            if record.prev_change_id != book.change_id:
                if self.strict:
                    raise ContinuityError(
                        f"{instrument}: change {record.change_id} continues {record.prev_change_id}, "
                        f"but the book is at {book.change_id}"
                    )
                book.valid = False
                return book
            self._advance(book, record)
        elif isinstance(record, Snapshot):
            book = OrderBook(instrument)
            self._advance(book, record)
            self.books[instrument] = book
        elif isinstance(record, Gap | Disconnect):
            if book is not None:
                book.valid = False
        elif isinstance(record, Unsubscribed):
            self.books.pop(instrument, None)
            return None
        self.records_applied += 1
        return book

    @staticmethod
    def _advance(book: OrderBook, record: Snapshot | Change) -> None:
        apply_levels(book.bids, record.bids)
        apply_levels(book.asks, record.asks)
        book.change_id = record.change_id
        book.exchange_timestamp_ms = record.exchange_timestamp_ms
        book.valid = True
