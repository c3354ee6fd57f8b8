"""The book consumer and values that are not book records: counted and logged, and nothing around
them is lost (each record is decoded only when its update is handed out)."""

from __future__ import annotations

import logging

import msgspec
from confluent_kafka import Producer

from optionstream_pipeline.consume.consumer import BookConsumer
from optionstream_pipeline.records.book import encode_capture_meta, encode_change, encode_snapshot
from optionstream_pipeline_tests.support.waiting import wait_until

CAPTURE = encode_capture_meta("test", 0)
NAME = "BTC-27JUN25-60000-C"


def levels(*entries: tuple[str, float, float]) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode([list(entry) for entry in entries]))


def test_a_value_that_is_no_book_record_is_counted_and_the_book_goes_on(
    kafka_bootstrap: str, kafka_topic: str, caplog
) -> None:
    values = [
        encode_snapshot(
            NAME, "100ms", 1, 2, 10, levels(("new", 0.1, 5.0)), levels(("new", 0.2, 3.0)), CAPTURE, "subscribe"
        ),
        b'{"hello": "from another producer"}',
        encode_change(NAME, "100ms", 3, 4, 11, 10, levels(("change", 0.1, 7.0)), levels(), CAPTURE),
        b"not even JSON",
        encode_change(NAME, "100ms", 5, 6, 12, 11, levels(), levels(("new", 0.15, 1.0)), CAPTURE),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in values:
        producer.produce(kafka_topic, value, NAME, partition=1)
    assert producer.flush(30) == 0

    handed_out: list[tuple[int, int | None, dict[float, float], dict[float, float]]] = []
    with caplog.at_level(logging.ERROR), BookConsumer(kafka_bootstrap, kafka_topic, "earliest") as consumer:

        def all_read() -> bool:
            for update in consumer.updates(0.05):
                book = update.book
                handed_out.append((update.offset, book.change_id, dict(book.bids), dict(book.asks)))
            return consumer.positions().get(1) == len(values)

        wait_until(all_read, timeout=30, message="every value read")
        assert consumer.bad_records == 2
        assert consumer.books[NAME].reliable
    assert handed_out == [
        (0, 10, {0.1: 5.0}, {0.2: 3.0}),
        (2, 11, {0.1: 7.0}, {0.2: 3.0}),
        (4, 12, {0.1: 7.0}, {0.2: 3.0, 0.15: 1.0}),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"{kafka_topic} partition 1 offset 1: not a valid book record" in e for e in errors), errors
    assert any(f"{kafka_topic} partition 1 offset 3: not a valid book record" in e for e in errors), errors
