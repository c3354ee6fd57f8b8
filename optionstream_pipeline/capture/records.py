"""The Kafka message value: one normalized JSON record per book update or stream marker.

Documented in ``docs/message-schema.md`` and ``optionstream_pipeline/schemas/book-record.schema.json``.
Like tardis-node's normalized types, every record carries the exchange timestamp and the local
receive timestamp side by side, so replays can be ranged by either clock.

Record types:

- ``snapshot``: the full book; replaces whatever a consumer held for the instrument.
- ``change``: levels to apply; ``prev_change_id`` equals the ``change_id`` of the previous
  ``snapshot``/``change`` record of the instrument (the capture checked it).
- ``gap``: the exchange skipped an update for the instrument: its book is unusable until the
  next ``snapshot`` (which capture requests at once, with ``reason: "resync"``).
- ``disconnect``: the connection carrying the instrument dropped: the book is stale until the next
  ``snapshot`` (``reason: "reconnect"``).
- ``unsubscribed``: capture stopped following the instrument (it expired or left the universe).

Levels are Deribit's own triples ``[action, price, amount]`` with action ``new``, ``change`` or
``delete`` (amount 0.0): the exchange's own words, re-serialized without reshaping, which keeps the
hot path cheap.
"""

from __future__ import annotations

from typing import Any

import msgspec

SCHEMA_VERSION = 1
EXCHANGE = "deribit"

RECORD_TYPES = ("snapshot", "change", "gap", "disconnect", "unsubscribed")
# Why a snapshot was taken.
SNAPSHOT_REASONS = ("subscribe", "resync", "reconnect")


# -- the incoming Deribit book notification, decoded only as far as capture needs ----------------
# The level arrays stay raw JSON bytes (``msgspec.Raw``): capture never needs their values, so it
# neither parses their floats nor re-serializes them; they are spliced into the record verbatim.
# ``gc=False``: these short-lived objects hold no cycles, so they need not burden the collector.


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


class BookRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """The record of a ``snapshot`` or ``change`` (field order is the wire order)."""

    v: int
    type: str
    exchange: str
    instrument: str
    interval: str
    exchange_timestamp_ms: int
    local_timestamp_us: int
    change_id: int
    prev_change_id: int | None
    bids: msgspec.Raw
    asks: msgspec.Raw
    capture: msgspec.Raw
    reason: str | None = None


_encode = msgspec.json.Encoder().encode


def encode_capture_meta(capture: dict[str, Any]) -> msgspec.Raw:
    """Pre-encode the per-connection capture metadata once, not per message."""
    return msgspec.Raw(_encode(capture))


def encode_book_record(
    data: BookData,
    record_type: str,
    interval: str,
    local_timestamp_us: int,
    capture: msgspec.Raw,
    reason: str | None = None,
) -> bytes:
    """Encode one Deribit ``book`` notification as a record (the per-message hot path)."""
    return _encode(
        BookRecord(
            SCHEMA_VERSION,
            record_type,
            EXCHANGE,
            data.instrument_name,
            interval,
            data.timestamp,
            local_timestamp_us,
            data.change_id,
            data.prev_change_id,
            data.bids,
            data.asks,
            capture,
            reason,
        )
    )


def encode_marker(
    record_type: str,
    instrument: str,
    interval: str,
    local_timestamp_us: int,
    capture: msgspec.Raw,
    reason: str,
    **details: Any,
) -> bytes:
    """Encode a ``gap``, ``disconnect`` or ``unsubscribed`` marker for one instrument."""
    record = {
        "v": SCHEMA_VERSION,
        "type": record_type,
        "exchange": EXCHANGE,
        "instrument": instrument,
        "interval": interval,
        "local_timestamp_us": local_timestamp_us,
        "reason": reason,
        "capture": capture,
        **details,
    }
    return _encode(record)
