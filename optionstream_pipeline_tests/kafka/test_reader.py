"""The topic reader against the real broker: to the end of each partition, from any offset, bounded,
and loud about a value that is not a book record."""

from __future__ import annotations

import msgspec
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from optionstream_pipeline.kafka.reader import BEGINNING, TopicReader
from optionstream_pipeline.records.book import RecordError, encode_capture_meta, encode_change, encode_snapshot

CAPTURE = encode_capture_meta("test", 0)
NAMES = [f"BTC-27JUN25-{strike}-C" for strike in range(60_000, 100_000, 5_000)]


def produce(bootstrap: str, topic: str, count: int, *, partition: int | None = None, first_id: int = 1) -> list[bytes]:
    """``count`` schema-valid records, keyed by instrument (or all on one partition), in one flush."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000})
    values = []
    for index in range(count):
        name = NAMES[index % len(NAMES)]
        change_id = first_id + index
        if index < len(NAMES):
            value = encode_snapshot(
                name, "100ms", 1, 2, change_id, msgspec.Raw(b"[]"), msgspec.Raw(b"[]"), CAPTURE, "subscribe"
            )
        else:
            value = encode_change(
                name, "100ms", 1, 2, change_id, change_id - len(NAMES), msgspec.Raw(b'[["new",0.1,1.0]]'),
                msgspec.Raw(b"[]"), CAPTURE,
            )  # fmt: skip
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, value, name, **kwargs)
        values.append(value)
    assert producer.flush(30) == 0
    return values


def test_reads_every_partition_to_its_end_in_order(kafka_bootstrap: str, kafka_topic: str) -> None:
    written = produce(kafka_bootstrap, kafka_topic, 400)
    with TopicReader(kafka_bootstrap, kafka_topic) as reader:
        # BEGINNING is looked up at once (as the earliest offset), not left to librdkafka's delayed lookup
        assert reader.positions() == {0: 0, 1: 0, 2: 0, 3: 0}
        records = list(reader.read_to_end(timeout_s=30))
        assert reader.partitions == [0, 1, 2, 3]
        assert sorted(r.value for r in records) == sorted(written)
        for partition in reader.partitions:
            offsets = [r.offset for r in records if r.partition == partition]
            assert offsets == list(range(len(offsets))), f"partition {partition} read in order, from 0"
            assert reader.positions()[partition] == len(offsets)
        assert all(r.key == r.record.instrument for r in records)
        assert list(reader.read_to_end(timeout_s=10)) == []  # already at the end: returns at once


def test_one_batch_is_read_whole_where_a_watermark_would_cut_it(
    kafka_bootstrap: str, kafka_topic: str, broker_is_tansu: bool
) -> None:
    """Tansu reports the high watermark of a partition as its last batch's base offset + 1: a reader
    that stopped there would miss most of a batch. End of partition comes from the fetch itself."""
    written = produce(kafka_bootstrap, kafka_topic, 300, partition=2)
    with TopicReader(kafka_bootstrap, kafka_topic) as reader:
        records = list(reader.read_to_end(timeout_s=30))
        if broker_is_tansu:
            consumer = reader._consumer
            _, high = consumer.get_watermark_offsets(TopicPartition(kafka_topic, 2), timeout=10, cached=False)
            assert high < len(written), "the watermark this test guards against is right here: nothing to show"
    assert [r.value for r in records] == written


def test_reads_from_given_offsets_only_the_partitions_asked_for(kafka_bootstrap: str, kafka_topic: str) -> None:
    written = produce(kafka_bootstrap, kafka_topic, 200, partition=1)
    with TopicReader(kafka_bootstrap, kafka_topic, {1: 150}) as reader:
        records = list(reader.read_to_end(timeout_s=30))
        assert reader.partitions == [1]
    assert [r.offset for r in records] == list(range(150, 200))
    assert [r.value for r in records] == written[150:]


def test_records_produced_after_a_read_come_with_the_next(kafka_bootstrap: str, kafka_topic: str) -> None:
    first = produce(kafka_bootstrap, kafka_topic, 50, partition=0)
    with TopicReader(kafka_bootstrap, kafka_topic, BEGINNING) as reader:
        assert [r.value for r in reader.read_to_end(timeout_s=30)] == first
        second = produce(kafka_bootstrap, kafka_topic, 30, partition=0, first_id=1000)
        assert [r.value for r in reader.read_to_end(timeout_s=30)] == second
        assert reader.positions()[0] == 80


def test_a_value_that_is_no_book_record_is_named_and_nothing_else_is_lost(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    before = produce(kafka_bootstrap, kafka_topic, 10, partition=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(kafka_topic, b'{"hello": "from another producer"}', "x", partition=3)
    producer.flush(10)
    after = produce(kafka_bootstrap, kafka_topic, 10, partition=3, first_id=500)
    with TopicReader(kafka_bootstrap, kafka_topic, {3: BEGINNING}) as reader:
        read = []
        with pytest.raises(RecordError, match=rf"{kafka_topic} partition 3 offset 10: not a valid book record"):
            for record in reader.read_to_end(timeout_s=30):
                read.append(record.value)
        assert read == before
        assert [r.value for r in reader.read_to_end(timeout_s=30)] == after  # goes on after it


def test_an_unreachable_partition_end_times_out_naming_it(proxied_broker) -> None:
    proxy, bootstrap = proxied_broker
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("reader-stall", num_partitions=2, replication_factor=1)])["reader-stall"].result(10)
    produce(bootstrap, "reader-stall", 20)
    proxy.block()  # before the reader starts: it must not have fetched anything yet
    with TopicReader(bootstrap, "reader-stall", {0: BEGINNING, 1: BEGINNING}) as reader:
        with pytest.raises(TimeoutError, match=r"reader-stall: partitions \[0, 1\] not read to their end within 2 s"):
            list(reader.read_to_end(timeout_s=2))
        proxy.unblock()
