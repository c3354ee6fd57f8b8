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

import orjson

SCHEMA_VERSION = 1
EXCHANGE = "deribit"

RECORD_TYPES = ("snapshot", "change", "gap", "disconnect", "unsubscribed")
# Why a snapshot was taken.
SNAPSHOT_REASONS = ("subscribe", "resync", "reconnect")

_dumps = orjson.dumps


def encode_book_record(
    data: dict[str, Any],
    record_type: str,
    interval: str,
    local_timestamp_us: int,
    capture: dict[str, Any],
    reason: str | None = None,
) -> bytes:
    """Encode one Deribit ``book`` notification ``data`` as a record (the per-message hot path)."""
    record = {
        "v": SCHEMA_VERSION,
        "type": record_type,
        "exchange": EXCHANGE,
        "instrument": data["instrument_name"],
        "interval": interval,
        "exchange_timestamp_ms": data["timestamp"],
        "local_timestamp_us": local_timestamp_us,
        "change_id": data["change_id"],
        "prev_change_id": data.get("prev_change_id"),
        "bids": data["bids"],
        "asks": data["asks"],
        "capture": capture,
    }
    if reason is not None:
        record["reason"] = reason
    return _dumps(record)


def encode_marker(
    record_type: str,
    instrument: str,
    interval: str,
    local_timestamp_us: int,
    capture: dict[str, Any],
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
    return _dumps(record)


def decode_record(value: bytes | str) -> dict[str, Any]:
    return orjson.loads(value)
