"""Kafka unreachable for 30 s: nothing accepted before or during the outage is lost, order holds."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Mapping

import pytest

from optionstream_pipeline.capture.metrics import PREFIX
from optionstream_pipeline.orchestration.ops.observation import observation_values
from optionstream_pipeline_tests.capture.conftest import (
    by_instrument,
    capture_settings,
    check_books_against_truth,
    running_capture,
    settle_and_read,
    ticker_topic_of,
    wait_subscribed,
)
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

OUTAGE_S = 30
# After reading pauses, the frames the WebSocket library already read off the socket still arrive
# (websockets hands over one at a time; picows parses a whole socket read): they wait in overflow.
MAX_FRAMES_OF_ONE_READ = 200


@pytest.mark.slow
def adds_up(values: Mapping[str, float]) -> bool:
    """Every record handed to Kafka is delivered, failed or in flight, in one look."""
    handed_over = values["messages_out"]
    return handed_over == values["delivered"] + values["delivery_failed"] + values["in_flight"]


def scraped_metrics(port: int) -> dict[str, float]:
    """The Prometheus endpoint's capture counters and gauges, by stats name."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = {}
    for line in body.splitlines():
        if line.startswith(PREFIX + "_") and "{" not in line:
            name, value = line.split()
            found[name.removeprefix(PREFIX + "_").removesuffix("_total")] = float(value)
    return found


def test_thirty_second_broker_outage_loses_nothing(simulator, proxied_broker) -> None:
    proxy, bootstrap = proxied_broker
    topic = "outage-books"
    sim = simulator(max_instruments=16, events_per_second=200)
    instruments = sim.market.instruments()[:12]
    settings = capture_settings(sim.url, bootstrap, topic)
    with running_capture(settings, instruments) as capture:
        engine = capture.engine
        wait_subscribed(capture, len(instruments))
        wait_until(lambda: engine.stats().delivered >= 300, 20, message="300 records delivered before the outage")

        proxy.block()
        outage_ends = time.monotonic() + OUTAGE_S
        accepted_at_block = engine.stats().messages_out
        wait_until(
            lambda: engine.stats().messages_out >= accepted_at_block + 1000,
            OUTAGE_S,
            message="capture keeps accepting books while Kafka is unreachable",
        )
        delivered_during = engine.stats().delivered
        during = [engine.stats()]
        wait_until(lambda: during.append(engine.stats()) or time.monotonic() >= outage_ends, OUTAGE_S + 1,
                   interval=0.5, message="outage over")  # fmt: skip
        assert all(adds_up(vars(stats)) for stats in during), "accepted = delivered + failed + in flight + waiting"
        assert during[-1].in_flight + during[-1].waiting_in_overflow >= 1000  # held, not lost
        assert engine.stats().delivered - delivered_during < 50, "deliveries went through a blocked network"
        proxy.unblock()

        sim.market.pause()
        wait_until(
            lambda: (s := engine.stats()).delivered + s.delivery_failed == s.messages_out and s.in_flight == 0,
            120,
            message="every accepted record acknowledged after the outage",
        )
        settled = engine.stats()
        assert adds_up(vars(settled))
        assert adds_up(scraped_metrics(engine.metrics_port))
        assert adds_up(observation_values(settled, during[0], instruments, topic))
        with (
            TopicLog(bootstrap, topic) as reader,
            TopicLog(bootstrap, ticker_topic_of(topic), records="ticker") as ticker_reader,
        ):
            records = settle_and_read(sim, reader, instruments, timeout=60)
            stats = engine.stats()
            accepted_books = stats.messages_out - stats.tickers_out
            records = reader.read_until(lambda rs: len(rs) >= accepted_books, 30, "every accepted book record")
            tickers = ticker_reader.read_until(
                lambda rs: len(rs) >= stats.tickers_out, 30, "every accepted ticker record"
            )
        final = capture.stop()

    assert final.delivery_failed == 0
    book_records = [r for r in records if r.record.type in ("snapshot", "change")]
    assert len(records) == final.messages_out - final.tickers_out - len(instruments)  # stop markers: after the read
    assert len(tickers) == final.tickers_out > 0
    assert len({r.value for r in tickers}) == len(tickers), "duplicate tickers"
    assert len({(r.key, r.record.change_id) for r in book_records}) == len(book_records), "duplicates"
    for name, stream in by_instrument(records).items():
        ids = [r.change_id for r in stream if r.type in ("snapshot", "change")]
        assert ids == sorted(ids), f"{name} out of order"
    check_books_against_truth(records, sim)  # strict: every change continues the one before


def test_a_full_producer_queue_pauses_reading_instead_of_dropping(simulator, proxied_broker) -> None:
    proxy, bootstrap = proxied_broker
    topic = "backpressure-books"
    sim = simulator(max_instruments=16, events_per_second=400)
    instruments = sim.market.instruments()[:12]
    settings = capture_settings(sim.url, bootstrap, topic, **{"kafka.queue_max_messages": 1000})
    with running_capture(settings, instruments) as capture:
        engine = capture.engine
        wait_subscribed(capture, len(instruments))
        wait_until(lambda: engine.stats().delivered >= 100, 20, message="deliveries before the outage")
        proxy.block()
        wait_until(lambda: engine.stats().backpressure_pauses >= 1, 30, message="the full queue paused reading")
        paused = engine.stats()
        # Reading stopped: while every book changes again on the exchange, capture takes in nothing more.
        before = {name: sim.market.book(name, "100ms").change_id for name in instruments}
        wait_until(lambda: all(sim.market.book(n, "100ms").change_id != before[n] for n in instruments), 30,
                   message="every book changed again on the exchange")  # fmt: skip
        held = engine.stats()
        assert held.waiting_in_overflow == paused.waiting_in_overflow <= MAX_FRAMES_OF_ONE_READ
        assert held.messages_in == paused.messages_in
        proxy.unblock()
        sim.market.pause()
        with TopicLog(bootstrap, topic) as reader:
            records = settle_and_read(sim, reader, instruments, timeout=60)
        final = capture.stop()
    assert final.delivery_failed == 0 and final.gaps == 0
    check_books_against_truth(records, sim)
