"""What the archive tests share: the rows a record must become (written out from the record schema,
not from the archive's code), the archive's rows in the same order, and a topic's worth of records."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec
from confluent_kafka import Producer

from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.deribit.instruments import parse_option_name
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records.book import (
    Change,
    Gap,
    Snapshot,
    encode_capture_meta,
    encode_change,
    encode_marker,
    encode_snapshot,
)

NAMES = [f"BTC-27JUN25-{strike}-{kind}" for strike in range(60_000, 110_000, 5_000) for kind in "CP"]
START_MS = 1_764_576_000_000 - 1_800_000  # half an hour before an hour boundary: files split there


def archive_rows(store: ArchiveStore, topic: str | None = None) -> list[dict]:
    rows = [row for file in store.live_files(topic) for row in store.read(file).to_pylist()]
    return sorted(
        rows, key=lambda row: (row["kafka_partition"], row["kafka_offset"], row["side"] or "", row["level"] or 0)
    )


def expected_rows(message: TopicRecord, incarnation: int = 0) -> list[dict]:
    """The rows one record must become, written out from the record schema (not from the archive code)."""
    record = message.record
    name = parse_option_name(record.instrument)
    base = {
        "exchange": "deribit",
        "symbol": record.instrument,
        "timestamp": _time(message.timestamp_ms * 1000),
        "local_timestamp": _time(record.local_timestamp_us),
        "is_snapshot": isinstance(record, Snapshot),
        "record_type": record.type,
        "reason": getattr(record, "reason", None),
        "change_id": getattr(record, "change_id", None),
        "prev_change_id": record.prev_change_id if isinstance(record, Change | Gap) else None,
        "expected_prev_change_id": record.expected_prev_change_id if isinstance(record, Gap) else None,
        "interval": record.interval,
        "capture_id": record.capture.id,
        "capture_connection": record.capture.connection,
        "kafka_partition": message.partition,
        "kafka_offset": message.offset,
        "topic_incarnation": incarnation,
        "expiry": datetime.fromtimestamp(name.expiration_timestamp_ms / 1000, UTC),
        "strike": name.strike,
        "option_type": name.option_type,
    }
    no_level = {"side": None, "price": None, "amount": None, "action": None, "level": None}
    if not isinstance(record, Snapshot | Change) or not (record.bids or record.asks):
        return [{**base, **no_level}]
    rows = []
    for side, levels in (("ask", record.asks), ("bid", record.bids)):  # the archive's sort order
        for index, (action, price, amount) in enumerate(levels):
            rows.append({**base, "side": side, "price": price, "amount": amount, "action": action, "level": index})
    return rows


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def topic_values(count: int) -> list[tuple[str, bytes, int]]:
    """``(key, value, timestamp)`` of snapshots, changes continuing them and some disconnects, spread
    over two hours of book time (so files split at an hour boundary)."""
    capture = encode_capture_meta("crash-test", 0)
    last: dict[str, int] = {}
    rng = random.Random(7)
    values = []
    for index in range(count):
        name = NAMES[index % len(NAMES)]
        time_ms = START_MS + index * (7_200_000 // count)
        change_id = 1_000 + index
        levels = msgspec.Raw(msgspec.json.encode([["new", 0.001 * rng.randint(1, 90), float(rng.randint(0, 40))]]))
        if name not in last:
            value = encode_snapshot(
                name, "100ms", time_ms, time_ms * 1000, change_id, levels, levels, capture, "subscribe"
            )
            last[name] = change_id
        elif index % 997 == 0:
            value = encode_marker("disconnect", name, "100ms", time_ms * 1000 + 5, "connection dropped", capture)
            del last[name]
        else:
            value = encode_change(
                name, "100ms", time_ms, time_ms * 1000, change_id, last[name], levels, msgspec.Raw(b"[]"), capture
            )
            last[name] = change_id
        values.append((name, value, time_ms))
    return values


def produce(bootstrap: str, topic: str, values: list[tuple[str, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value, timestamp in values:
        producer.produce(topic, value, key, timestamp=timestamp)
    assert producer.flush(30) == 0
