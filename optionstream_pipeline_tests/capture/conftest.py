"""Capture against the real thing: the Deribit simulator over WebSocket and a real Kafka broker."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import jsonschema
import msgspec

from optionstream_pipeline.capture.engine import CaptureEngine, EngineThread
from optionstream_pipeline.config import DeribitSettings, Settings, settings_from_mapping
from optionstream_pipeline.consume.books import BookBuilder
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records import BookRecord
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

SCHEMA = json.loads(resources.files("optionstream_pipeline.schemas").joinpath("book-record.schema.json").read_text())


# Every capture test runs on the shipped transport (tests parametrized over both run websockets too);
# set this to "websockets" to run them all on it.
TRANSPORT = os.environ.get("OPTIONSTREAM_TEST_TRANSPORT", DeribitSettings.model_fields["transport"].default)


def ticker_topic_of(topic: str) -> str:
    """Each test's own ticker topic, beside its book topic."""
    return f"{topic}.tickers"


def capture_settings(url: str, bootstrap: str, topic: str, **overrides: Any) -> Settings:
    """Settings for a test capture: fast reconnects, no fixed metrics port, low linger."""
    data: dict[str, Any] = {
        "deribit": {
            "websocket_url": url,
            "transport": TRANSPORT,
            "reconnect": {"initial_backoff_ms": 50, "max_backoff_ms": 500, "jitter": 0.1},
            "stale_after_s": 5,
        },
        "kafka": {
            "brokers": [bootstrap],
            "topic": topic,
            "ticker_topic": ticker_topic_of(topic),
            "partitions": 4,
            "batch_timeout_ms": 5,
        },
        "capture": {"metrics": {"port": 0}, "status_interval_s": 60},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return settings_from_mapping(data)


def with_unchecked(settings: Settings, **deribit: Any) -> Settings:
    """Tests only: values below Deribit's own limits (e.g. a 1 s heartbeat), which validation refuses."""
    return settings.model_copy(update={"deribit": settings.deribit.model_copy(update=deribit)})


@contextmanager
def running_capture(settings: Settings, instruments: list[str], **engine_args: Any) -> Iterator[EngineThread]:
    thread = EngineThread(CaptureEngine(settings, instruments, **engine_args)).start()
    try:
        yield thread
    finally:
        if thread.alive:
            thread.stop()


def wait_subscribed(thread: EngineThread, count: int, timeout: float = 20) -> None:
    wait_until(
        lambda: thread.engine.stats().instruments_subscribed == count,
        timeout,
        message=f"{count} instruments subscribed",
    )


def settle_and_read(sim: SimulatorThread, reader: TopicLog, instruments: list[str], timeout: float = 30):
    """Freeze the market, then read until every instrument's last record is at the final truth."""
    sim.market.pause()
    wait_until(sim.market.is_settled, 10, message="simulator flushed its last 100ms updates")
    final = {name: sim.market.book(name, "100ms").change_id for name in instruments}

    def caught_up(records: list[TopicRecord]) -> bool:
        last: dict[str, int] = {}
        for record in records:
            if record.record.type in ("snapshot", "change"):
                last[record.key] = record.record.change_id
        return all(last.get(name) == change_id for name, change_id in final.items())

    return reader.read_until(caught_up, timeout, "every instrument at its final change_id")


def check_books_against_truth(records: list[TopicRecord], sim: SimulatorThread, interval: str = "100ms") -> int:
    """Rebuild books from the records; after every record, the book must equal the exchange's truth.

    Returns how many book states were compared (history older than the simulator keeps is skipped).
    """
    builder = BookBuilder(strict=True)
    compared = 0
    for record in records:
        book = builder.apply(record.record)
        if book is None or not book.reliable or record.record.type not in ("snapshot", "change"):
            continue
        truth = sim.market.book_at(record.key, interval, book.change_id)
        if truth is None:
            continue
        assert truth.change_id == book.change_id
        assert book.bids == truth.bids, f"{record.key} bids differ at change_id {book.change_id}"
        assert book.asks == truth.asks, f"{record.key} asks differ at change_id {book.change_id}"
        compared += 1
    for name, book in builder.books.items():
        truth = sim.market.book(name, interval)
        assert (book.change_id, book.bids, book.asks) == (truth.change_id, truth.bids, truth.asks), name
    return compared


def check_record_envelope(records: list[TopicRecord]) -> None:
    """Schema, key, Kafka timestamp, and one partition per instrument."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        validator.validate(msgspec.json.decode(record.value))
        assert record.key == record.record.instrument
        if record.record.type in ("snapshot", "change", "gap"):
            assert record.timestamp_ms == record.record.exchange_timestamp_ms
        partitions[record.key].add(record.partition)
    assert all(len(found) == 1 for found in partitions.values()), "an instrument spans partitions"


def by_instrument(records: list[TopicRecord]) -> dict[str, list[BookRecord]]:
    grouped: dict[str, list[BookRecord]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record.record)
    return grouped
