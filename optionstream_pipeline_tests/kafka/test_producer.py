"""The record producer's delivery accounting against the real broker: with librdkafka reporting only
failures, handed over = delivered + failed + in flight, exactly, whatever happens to the records, and
delivered never goes back; delivery latency comes from librdkafka's statistics."""

from __future__ import annotations

import threading
from typing import Any

from optionstream_pipeline.config import settings_from_mapping
from optionstream_pipeline.kafka.producer import Accounting, RecordProducer, delivery_latency_ms
from optionstream_pipeline.records import book
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until


def producer(bootstrap: str, topic: str, **librdkafka: Any) -> RecordProducer:
    kafka = {"brokers": [bootstrap], "topic": topic, "batch_timeout_ms": 5, "librdkafka": librdkafka}
    return RecordProducer(settings_from_mapping({"kafka": kafka}).kafka)


def adds_up(accounting: Accounting) -> bool:
    return accounting.handed_over == accounting.delivered + accounting.failed + accounting.in_flight


def settled(records: RecordProducer) -> Accounting:
    """Drain until nothing is in flight; the accounting then."""
    wait_until(lambda: records.drain(0.05) and records.accounting.in_flight == 0, 30, message="every record settled")
    return records.accounting


def test_every_record_delivered_is_counted_delivered(kafka_bootstrap, kafka_topic) -> None:
    records = producer(kafka_bootstrap, kafka_topic)
    for number in range(500):
        name = f"BTC-27JUN25-{number % 7 + 1}0000-C"
        value = book.encode_marker(
            "disconnect", name, "100ms", number, f"number {number}", book.encode_capture_meta("t")
        )
        assert records.offer(name, value, 1_700_000_000_000 + number)
    final = settled(records)
    assert final == Accounting(handed_over=500, delivered=500, failed=0, in_flight=0)
    with TopicLog(kafka_bootstrap, kafka_topic) as log:
        read = log.read_until(lambda rs: len(rs) >= 500, 30, "500 records")
    assert sorted(record.record.reason for record in read) == sorted(f"number {n}" for n in range(500))
    records.close()


def test_a_record_refused_outright_is_failed_not_delivered(kafka_bootstrap, kafka_topic) -> None:
    records = producer(kafka_bootstrap, kafka_topic, **{"message.max.bytes": 2000})
    assert records.offer("BTC-A", b"x" * 10, 1)
    assert records.offer("BTC-A", b"x" * 5000, 2)  # too large: librdkafka refuses it at once
    assert records.offer("BTC-A", b"x" * 10, 3)
    assert settled(records) == Accounting(handed_over=3, delivered=2, failed=1, in_flight=0)
    assert "too large" in records.last_error.lower()
    records.close()


def test_records_failed_in_delivery_during_an_outage_are_failed_and_the_rest_delivered(proxied_broker) -> None:
    proxy, bootstrap = proxied_broker
    records = producer(bootstrap, "outage-accounting", **{"message.timeout.ms": 2000})
    for number in range(100):
        records.offer("BTC-A", b"before", number)
    assert settled(records).delivered == 100
    proxy.block()
    for number in range(50):
        records.offer("BTC-B", b"during", number)
    looks: list[Accounting] = []

    def failed_in_delivery() -> bool:
        records.drain(0.05)
        looks.append(records.accounting)
        return records.accounting.failed == 50

    wait_until(failed_in_delivery, 30, message="the records of the outage timed out")
    proxy.unblock()
    assert settled(records) == Accounting(handed_over=150, delivered=100, failed=50, in_flight=0)
    assert all(adds_up(look) for look in looks)
    assert [look.delivered for look in looks] == [100] * len(looks)  # none counted delivered meanwhile
    records.close()


def test_delivered_never_goes_back_when_read_from_another_thread(kafka_bootstrap, kafka_topic) -> None:
    records = producer(kafka_bootstrap, kafka_topic)
    looks: list[Accounting] = []
    done = threading.Event()

    def watch() -> None:  # as the metrics endpoint and the Dagster observations read it
        while not done.is_set():
            look = records.accounting
            if not looks or look is not looks[-1]:
                looks.append(look)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for number in range(20_000):
        while not records.offer("BTC-A", b"%d" % number, number):
            records.drain(0.01)
        if number % 100 == 0:
            records.drain(0)
    final = settled(records)
    done.set()
    watcher.join()
    assert final.delivered == 20_000 and len(looks) > 1
    assert all(adds_up(look) for look in looks)
    delivered = [look.delivered for look in looks]
    assert delivered == sorted(delivered)
    records.close()


def test_undelivered_at_close_stay_in_flight(proxied_broker) -> None:
    proxy, bootstrap = proxied_broker
    records = producer(bootstrap, "close-accounting")
    records.offer("BTC-A", b"first", 1)
    assert settled(records).delivered == 1
    proxy.block()
    records.offer("BTC-A", b"second", 2)
    assert records.close(timeout_s=1.0) == 1
    assert records.accounting == Accounting(handed_over=2, delivered=1, failed=0, in_flight=1)
    proxy.unblock()


def test_delivery_latency_comes_from_librdkafkas_statistics(kafka_bootstrap, kafka_topic) -> None:
    records = producer(kafka_bootstrap, kafka_topic)  # statistics every 5 s
    offered = 0

    def latency_reported() -> bool:
        nonlocal offered
        for _ in range(50):
            records.offer("BTC-A", b"x", offered)
            offered += 1
        records.drain(0.05)
        return records.stats.delivery_p99_ms is not None

    wait_until(latency_reported, 30, message="a statistics report with delivery latency")
    stats = records.stats
    assert 0 < stats.delivery_p50_ms <= stats.delivery_p99_ms < 5_000
    records.close()


def test_delivery_latency_sums_the_stages_of_the_slowest_broker() -> None:
    def broker(queue_us: int, request_us: int, rtt_us: int, count: int = 10) -> dict:
        window = {"cnt": count}
        return {
            "int_latency": window | {"p50": queue_us, "p99": 2 * queue_us},
            "outbuf_latency": window | {"p50": request_us, "p99": 2 * request_us},
            "rtt": window | {"p50": rtt_us, "p99": 2 * rtt_us},
        }

    brokers = {"a:9092/1": broker(1000, 200, 300), "b:9092/2": broker(4000, 500, 500), "b/bootstrap": {}}
    assert delivery_latency_ms(brokers, "p50") == 5.0
    assert delivery_latency_ms(brokers, "p99") == 10.0
    assert delivery_latency_ms({"idle": broker(1000, 1, 1, count=0)}, "p50") is None
