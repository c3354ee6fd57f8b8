"""Deribit book notifications, decoded only as far as capture needs (the hot path's first step).

The level arrays stay raw JSON bytes (``msgspec.Raw``): capture never needs their values, so it
neither parses their floats nor re-serializes them; the record encoder splices them verbatim into
the Kafka record (:mod:`optionstream_pipeline.records.book`). ``gc=False``: these short-lived
objects hold no cycles, so they need not burden the collector.
"""

from __future__ import annotations

import msgspec


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
