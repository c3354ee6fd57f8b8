"""The archive's table: one row per price-level update, and the rule that explodes a record into rows.

Modelled on Tardis' ``incremental_book_L2`` (``exchange, symbol, timestamp, local_timestamp,
is_snapshot, side, price, amount``: ``amount`` is the level's new size, 0 removes it) with what this
stream adds: the Deribit action, ``change_id`` and ``prev_change_id``, the record type and reason,
the capture session, where the record is in Kafka, and the option's expiry, strike and type parsed
from its name, so that chain queries need no string parsing.

Every record becomes at least one row, so the archive holds the topic exactly: a snapshot or change
becomes one row per level (bids then asks, in the record's order); a record with no level at all (an
empty snapshot, a gap, disconnect or unsubscribed marker) becomes one row whose level columns are
null. The rows of one record share ``kafka_partition`` and ``kafka_offset``.

``book_time`` is the time axis of the archive: the record's own time (``timestamp``), or the latest
``book_time`` before it in its Kafka partition when that is later. It never goes back within a
partition, so the archive's files, hours and checkpoints split the stream at clean offsets. Why not
``timestamp`` itself: a snapshot carries the time of its book's last change (for a quiet book,
possibly hours before it arrived) and markers carry capture's clock. See ``docs/archive-schema.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from optionstream_pipeline.deribit.instruments import InstrumentNameError, parse_option_name
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records.book import Change, Snapshot

_TS = pa.timestamp("us", tz="UTC")
_TEXT = pa.dictionary(pa.int32(), pa.string())

# name, type, what it means: the one definition of the table (docs/archive-schema.md shows it).
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("exchange", _TEXT, "deribit"),
    ("symbol", _TEXT, "the instrument, e.g. BTC-27JUN25-100000-C"),
    ("timestamp", _TS, "the exchange's time of the update; for disconnect and unsubscribed markers, capture's clock"),
    ("local_timestamp", _TS, "when capture received the frame (or wrote the marker), capture host clock"),
    ("book_time", _TS, "timestamp, or the partition's latest book_time when later: never goes back in a partition"),
    ("is_snapshot", pa.bool_(), "the row belongs to a snapshot (the book restarts at its first row)"),
    ("side", _TEXT, "bid or ask; null on a row without a level"),
    ("price", pa.float64(), "the level's price in BTC; null on a row without a level"),
    ("amount", pa.float64(), "the level's new size in contracts, 0 when it goes; null on a row without a level"),
    ("action", _TEXT, "Deribit's action: new, change or delete; null on a row without a level"),
    ("level", pa.int16(), "position of the level within its side of the record (0 first); null without a level"),
    ("record_type", _TEXT, "snapshot, change, gap, disconnect or unsubscribed"),
    ("reason", _TEXT, "why the snapshot or marker was written (see the record schema); null on changes"),
    ("change_id", pa.int64(), "Deribit's change_id; null on disconnect and unsubscribed"),
    ("prev_change_id", pa.int64(), "the change_id this change continues (a gap: what Deribit sent); else null"),
    ("expected_prev_change_id", pa.int64(), "on a gap, the change_id continuity needed; else null"),
    ("interval", _TEXT, "the Deribit book channel captured: 100ms, agg2 or raw"),
    ("capture_id", _TEXT, "the capture session that wrote the record"),
    ("capture_connection", pa.int16(), "its WebSocket connection; null on markers capture wrote itself"),
    ("kafka_partition", pa.int32(), "the record's Kafka partition"),
    ("kafka_offset", pa.int64(), "the record's Kafka offset: with the partition (and incarnation), its identity"),
    ("topic_incarnation", pa.int32(), "0, then 1, 2, ... each time the topic was found deleted and recreated"),
    ("expiry", pa.timestamp("ms", tz="UTC"), "the option's expiry (08:00 UTC), from its name"),
    ("strike", pa.float64(), "the option's strike, from its name"),
    ("option_type", _TEXT, "call or put, from its name"),
)
LEVEL_COLUMNS = ("side", "price", "amount", "action", "level")  # per level; the others are per record
RECORD_COLUMNS = tuple(name for name, _, _ in COLUMNS if name not in LEVEL_COLUMNS)
ARCHIVE_SCHEMA = pa.schema([pa.field(name, kind, metadata={"description": doc}) for name, kind, doc in COLUMNS])
SORT_KEYS = [("symbol", "ascending"), ("kafka_offset", "ascending"), ("side", "ascending"), ("level", "ascending")]


@dataclass(frozen=True, slots=True)
class _Instrument:
    expiry_ms: int | None
    strike: float | None
    option_type: str | None


@lru_cache(maxsize=65_536)
def instrument_info(name: str) -> _Instrument:
    """Expiry, strike and type from an option's name (nulls for a name that is not one), cached."""
    try:
        parsed = parse_option_name(name)
    except InstrumentNameError:
        return _Instrument(None, None, None)
    return _Instrument(parsed.expiration_timestamp_ms, parsed.strike, parsed.option_type)


def record_time_us(message: TopicRecord) -> int:
    """A record's own time: its Kafka timestamp (the exchange's for book events, capture's for markers)."""
    return message.timestamp_ms * 1000


def book_times(messages: Sequence[TopicRecord], previous_us: int) -> list[int]:
    """The ``book_time`` of each message, continuing from the partition's latest before them."""
    times = []
    latest = previous_us
    for message in messages:
        latest = max(latest, record_time_us(message))
        times.append(latest)
    return times


_BOOK_TYPES = (Snapshot, Change)
_BID, _ASK = ("bid",), ("ask",)
_NO_LEVEL = (None, None, None)


def explode(messages: Sequence[TopicRecord], book_time_us: Sequence[int], incarnation: int) -> pa.Table:
    """The rows of these records (all of one partition), in record order, levels in record order.

    Columnar: the per-record values are gathered once per record and repeated for its rows by
    Arrow (``take``); only the level values are gathered per level.
    """
    records = [message.record for message in messages]
    flat: list[tuple] = []  # every level of every record, in order; NO_LEVEL for a record without one
    sides: list[str | None] = []
    levels: list[int | None] = []
    rows_of: list[int] = []
    for record in records:
        if type(record) in _BOOK_TYPES:
            bids, asks = record.bids, record.asks
            if bids or asks:
                flat += bids
                flat += asks
                sides += _BID * len(bids)
                sides += _ASK * len(asks)
                levels += range(len(bids))
                levels += range(len(asks))
                rows_of.append(len(bids) + len(asks))
                continue
        flat.append(_NO_LEVEL)  # one row without a level, so that every record is in the table
        sides.append(None)
        levels.append(None)
        rows_of.append(1)
    per_level = {
        "side": sides,
        "price": [level[1] for level in flat],
        "amount": [level[2] for level in flat],
        "action": [level[0] for level in flat],
        "level": levels,
    }
    symbols = pa.array([record.instrument for record in records], pa.string()).dictionary_encode()
    infos = [instrument_info(name) for name in symbols.dictionary.to_pylist()]  # once per instrument, not record
    types = [record.type for record in records]
    per_record = {
        "exchange": [record.exchange for record in records],
        "symbol": symbols,
        "timestamp": [message.timestamp_ms * 1000 for message in messages],
        "local_timestamp": [record.local_timestamp_us for record in records],
        "book_time": book_time_us,
        "is_snapshot": [kind == "snapshot" for kind in types],
        "record_type": types,
        "reason": [getattr(record, "reason", None) for record in records],
        "change_id": [getattr(record, "change_id", None) for record in records],
        "prev_change_id": [getattr(record, "prev_change_id", None) for record in records],
        "expected_prev_change_id": [getattr(record, "expected_prev_change_id", None) for record in records],
        "interval": [record.interval for record in records],
        "capture_id": [record.capture.id for record in records],
        "capture_connection": [record.capture.connection for record in records],
        "kafka_partition": [message.partition for message in messages],
        "kafka_offset": [message.offset for message in messages],
        "topic_incarnation": [incarnation] * len(records),
    }
    by_instrument = {  # per instrument, then taken per record through the symbol's dictionary indices
        "expiry": [info.expiry_ms for info in infos],
        "strike": [info.strike for info in infos],
        "option_type": [info.option_type for info in infos],
    }
    offsets = pa.array([0, *itertools.accumulate(rows_of)], pa.int32())
    parent = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, pa.nulls(len(sides))))
    arrays = []
    for name, kind, _ in COLUMNS:
        if name in LEVEL_COLUMNS:
            array = pa.array(per_level[name], type=_plain(kind))
            arrays.append(array.dictionary_encode() if pa.types.is_dictionary(kind) else array)
            continue
        if name in by_instrument:
            array = pa.array(by_instrument[name], type=_plain(kind)).take(symbols.indices)
        else:
            array = per_record[name]
            array = array if isinstance(array, pa.Array) else pa.array(array, type=_plain(kind))
        if pa.types.is_dictionary(kind) and not pa.types.is_dictionary(array.type):  # repeat indices, not strings
            array = array.dictionary_encode()
        arrays.append(array.take(parent))
    return pa.Table.from_arrays(arrays, schema=ARCHIVE_SCHEMA)


def session_ends(table: pa.Table, time_column: str = "book_time") -> dict[str, int]:
    """The latest ``book_time`` (µs) of each capture session in ``table``: what a file's footer keeps so
    that the book at T can tell a session that ended from one still writing without reading rows."""
    ends = pa.table({"capture_id": table["capture_id"].cast(pa.string()), "time": table[time_column]})
    grouped = ends.group_by("capture_id").aggregate([("time", "max")])
    times = grouped["time_max"].cast(pa.int64()).to_pylist()
    return dict(zip(grouped["capture_id"].to_pylist(), times, strict=True))


def _plain(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind
