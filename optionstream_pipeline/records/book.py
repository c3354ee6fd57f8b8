"""The book record: the Kafka message value of the live topic, one JSON object per book update or marker.

Typed msgspec structs, one per record type, as a union tagged by ``type``; capture encodes them and
every consumer decodes them (:func:`decode_record`). The published contract is the JSON Schema in
``optionstream_pipeline/schemas/book-record.schema.json`` (a test checks that these structs and the
schema agree field by field) and ``docs/message-schema.md``. Like tardis-node's normalized types,
every record carries the exchange timestamp and the local receive timestamp side by side.

Record types:

- :class:`Snapshot`: the full book; replaces whatever a consumer held for the instrument.
- :class:`Change`: levels to apply; ``prev_change_id`` equals the ``change_id`` of the previous
  snapshot or change of the instrument (capture checked it).
- :class:`Gap`: the exchange skipped an update of the instrument: its book is unusable until the
  next snapshot (which capture requests at once, ``reason: "resync"``).
- :class:`Disconnect`: the connection carrying the instrument dropped, or capture stopped: the book
  is stale until the next snapshot (``reason: "reconnect"``).
- :class:`Unsubscribed`: capture stopped following the instrument (it expired or left the universe).

Levels are Deribit's own triples ``[action, price, amount]``. Capture never parses them: it hands
the record the exchange's bytes (``msgspec.Raw``), which the encoder splices in verbatim, so the
level fields are generic: raw bytes when encoding, typed :data:`Level` tuples when decoding.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar, Union

import msgspec

SCHEMA_VERSION = 1
EXCHANGE = "deribit"

Interval = Literal["100ms", "agg2", "raw"]
SnapshotReason = Literal["subscribe", "resync", "reconnect"]
Action = Literal["new", "change", "delete"]
Price = Annotated[float, msgspec.Meta(gt=0)]
Amount = Annotated[float, msgspec.Meta(ge=0)]
Level = tuple[Action, Price, Amount]
"""``[action, price in BTC, amount in contracts]``; a ``delete`` has amount 0.0."""
NewLevel = tuple[Literal["new"], Price, Amount]
"""Every level of a snapshot is ``new``."""

Levels = TypeVar("Levels")


class CaptureMeta(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """Which capture session wrote the record, and over which of its WebSocket connections."""

    id: str
    connection: Annotated[int, msgspec.Meta(ge=0)] | None = None  # absent on markers capture writes itself


# ``gc=False``: records hold no reference cycles, so the collector need not track them.
class _Record(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, gc=False):
    v: int
    exchange: Literal["deribit"]
    instrument: str
    interval: Interval

    @property
    def type(self) -> str:
        """The record type, as on the wire (``snapshot``, ``change``, ...)."""
        return self.__struct_config__.tag


class _BookEvent(_Record):
    exchange_timestamp_ms: int  # Deribit's timestamp of the update (ms since the epoch, UTC)
    local_timestamp_us: int  # when capture received the frame (µs since the epoch, UTC, capture host clock)
    change_id: int


class Snapshot(_BookEvent, Generic[Levels], tag="snapshot"):
    prev_change_id: None
    bids: Levels
    asks: Levels
    capture: CaptureMeta
    reason: SnapshotReason


class Change(_BookEvent, Generic[Levels], tag="change"):
    prev_change_id: int
    bids: Levels
    asks: Levels
    capture: CaptureMeta


class Gap(_BookEvent, tag="gap"):
    """``prev_change_id`` is what the exchange sent; ``expected_prev_change_id`` what continuity needed."""

    prev_change_id: int
    expected_prev_change_id: int | None
    reason: str
    capture: CaptureMeta


class _Marker(_Record):
    local_timestamp_us: int
    reason: str  # free text for people (``capture stopped``, ``left the universe``, ...): do not parse it
    capture: CaptureMeta


class Disconnect(_Marker, tag="disconnect"):
    pass


class Unsubscribed(_Marker, tag="unsubscribed"):
    pass


BookRecord = Union[  # noqa: UP007 (a runtime union of parametrized structs)
    Snapshot[list[NewLevel]], Change[list[Level]], Gap, Disconnect, Unsubscribed
]
"""What :func:`decode_record` returns."""
RECORD_TYPES = tuple(cls.__struct_config__.tag for cls in (Snapshot, Change, Gap, Disconnect, Unsubscribed))
SNAPSHOT_REASONS: tuple[str, ...] = SnapshotReason.__args__


class RecordError(ValueError):
    """A Kafka message value that is not a book record this version of OptionStream can read."""


class _Version(msgspec.Struct):
    v: object = None


_decode = msgspec.json.Decoder(BookRecord).decode
_decode_version = msgspec.json.Decoder(_Version).decode
_encode = msgspec.json.Encoder().encode


def decode_record(value: bytes) -> BookRecord:
    """Decode and check one record; raises :class:`RecordError` naming what is wrong.

    A record of another schema version is refused, never guessed at.
    """
    try:
        record = _decode(value)
    except msgspec.DecodeError as exc:
        _refuse_other_versions(value)
        raise RecordError(f"not a valid book record: {exc}") from None
    if record.v != SCHEMA_VERSION:
        _refuse_other_versions(value)
    return record


def _refuse_other_versions(value: bytes) -> None:
    try:
        version = _decode_version(value).v
    except msgspec.DecodeError:
        return
    if version is not None and version != SCHEMA_VERSION:
        raise RecordError(
            f"book record schema version {version!r} is not supported: this OptionStream reads version "
            f"{SCHEMA_VERSION} (upgrade the consumer to read newer records)"
        )


def encode_capture_meta(capture_id: str, connection: int | None = None) -> msgspec.Raw:
    """Pre-encode the capture metadata once per connection, not per message."""
    return msgspec.Raw(_encode(CaptureMeta(capture_id, connection)))


# -- encoding: the capture side. ``bids``, ``asks`` and ``capture`` are pre-encoded JSON (``msgspec.Raw``).


def encode_snapshot(
    instrument: str,
    interval: str,
    exchange_timestamp_ms: int,
    local_timestamp_us: int,
    change_id: int,
    bids: msgspec.Raw,
    asks: msgspec.Raw,
    capture: msgspec.Raw,
    reason: str,
) -> bytes:
    return _encode(
        Snapshot(
            SCHEMA_VERSION,
            EXCHANGE,
            instrument,
            interval,
            exchange_timestamp_ms,
            local_timestamp_us,
            change_id,
            None,
            bids,
            asks,
            capture,
            reason,
        )
    )


def encode_change(
    instrument: str,
    interval: str,
    exchange_timestamp_ms: int,
    local_timestamp_us: int,
    change_id: int,
    prev_change_id: int,
    bids: msgspec.Raw,
    asks: msgspec.Raw,
    capture: msgspec.Raw,
) -> bytes:
    return _encode(
        Change(
            SCHEMA_VERSION,
            EXCHANGE,
            instrument,
            interval,
            exchange_timestamp_ms,
            local_timestamp_us,
            change_id,
            prev_change_id,
            bids,
            asks,
            capture,
        )
    )


def encode_gap(
    instrument: str,
    interval: str,
    exchange_timestamp_ms: int,
    local_timestamp_us: int,
    change_id: int,
    prev_change_id: int,
    expected_prev_change_id: int | None,
    capture: msgspec.Raw,
    reason: str = "change_id gap",
) -> bytes:
    return _encode(
        Gap(
            SCHEMA_VERSION,
            EXCHANGE,
            instrument,
            interval,
            exchange_timestamp_ms,
            local_timestamp_us,
            change_id,
            prev_change_id,
            expected_prev_change_id,
            reason,
            capture,
        )
    )


_MARKERS = {"disconnect": Disconnect, "unsubscribed": Unsubscribed}


def encode_marker(
    record_type: Literal["disconnect", "unsubscribed"],
    instrument: str,
    interval: str,
    local_timestamp_us: int,
    reason: str,
    capture: msgspec.Raw,
) -> bytes:
    """A ``disconnect`` or ``unsubscribed`` marker for one instrument."""
    marker = _MARKERS[record_type]
    return _encode(marker(SCHEMA_VERSION, EXCHANGE, instrument, interval, local_timestamp_us, reason, capture))
