"""Deribit book and ticker notifications, decoded only as far as capture needs (the hot path's first step).

The level arrays stay raw JSON bytes (``msgspec.Raw``): capture never needs their values, so it
does not re-serialize them; the record encoder splices them verbatim into the Kafka record
(:mod:`optionstream_pipeline.records.book`). They are checked first, though (:func:`level_problem`):
every level must be the record schema's ``[new|change|delete, price > 0, amount >= 0]`` (``new``
only in a snapshot), so that a frame that is valid JSON but not a Deribit book never becomes a
record. ``gc=False``: these short-lived objects hold no cycles, so they need not burden the collector.
"""

from __future__ import annotations

import msgspec

from optionstream_pipeline.records.book import Level, NewLevel


class BookData(msgspec.Struct, gc=False):
    timestamp: int
    instrument_name: str
    change_id: int
    bids: msgspec.Raw
    asks: msgspec.Raw
    prev_change_id: int | None = None  # absent on snapshots (old feeds have no "type": this decides)


class BookParams(msgspec.Struct, gc=False):
    channel: str
    data: BookData


class BookNotification(msgspec.Struct, gc=False):
    method: str
    params: BookParams


decode_book_notification = msgspec.json.Decoder(BookNotification).decode
"""Decode a ``subscription`` frame of a book channel; raises ``msgspec.DecodeError`` for anything else."""


_check_levels = msgspec.json.Decoder(list[Level]).decode
_check_new_levels = msgspec.json.Decoder(list[NewLevel]).decode


def level_problem(data: BookData) -> str | None:
    """What is wrong with the levels of a decoded book notification, or ``None`` when nothing is.

    The same level types as the record codec, validated in C on the raw bytes: a fraction of a
    microsecond for the one to five levels of a typical change (measured in the capture benchmark).
    """
    check = _check_new_levels if data.prev_change_id is None else _check_levels
    try:
        check(data.bids)
    except msgspec.ValidationError as exc:
        return f"bids: {exc}"
    try:
        check(data.asks)
    except msgspec.ValidationError as exc:
        return f"asks: {exc}"
    return None


class TickerParams(msgspec.Struct, gc=False):
    channel: str
    data: msgspec.Raw


class TickerNotification(msgspec.Struct, gc=False):
    method: str
    params: TickerParams


decode_ticker_notification = msgspec.json.Decoder(TickerNotification).decode
"""Decode a ``subscription`` frame of a ticker channel, its ``data`` left as bytes (the record splices them)."""

TICKER_CHANNEL_MARK = b'"channel":"ticker.'
"""Where a ticker frame says so: Deribit puts ``params.channel`` within the frame's first bytes."""


def is_ticker_frame(frame: bytes) -> bool:
    """A cheap look before decoding: a frame that is not caught here still takes the slow path."""
    return frame.find(TICKER_CHANNEL_MARK, 0, 120) >= 0
