"""Simulator -> capture -> Kafka -> a consumer that rebuilds every book equal to the exchange's truth."""

from __future__ import annotations

import pytest

from optionstream_pipeline_tests.capture.conftest import (
    by_instrument,
    capture_settings,
    check_books_against_truth,
    check_record_envelope,
    running_capture,
    settle_and_read,
    wait_subscribed,
)
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until


@pytest.mark.parametrize("transport", ["websockets", "picows"])
def test_every_book_rebuilt_from_kafka_equals_the_truth(simulator, kafka_bootstrap, kafka_topic, transport) -> None:
    sim = simulator(max_instruments=40, events_per_second=400)
    instruments = sim.market.instruments()[:24]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.transport": transport})
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        wait_until(lambda: capture.engine.stats().messages_in >= 1500, 30, message="1500 book messages in")
        records = settle_and_read(sim, reader, instruments)
        final = capture.stop()

    check_record_envelope(records)
    compared = check_books_against_truth(records, sim)
    assert compared >= 1000
    streams = by_instrument(records)
    assert set(streams) == set(instruments)
    for name, stream in streams.items():
        assert stream[0].type == "snapshot" and stream[0].reason == "subscribe", name
        body = [r for r in stream if r.type in ("snapshot", "change")]
        assert all(r.type == "change" for r in body[1:]), f"{name} was resynced without cause"
    assert final.gaps == final.resyncs == final.reconnects == 0
    assert final.delivery_failed == 0
    assert final.delivered == final.messages_out
    # On stop, capture says that the books are no longer maintained.
    assert final.markers == len(instruments)


def test_subscriptions_follow_the_universe_without_reconnecting(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=30)
    names = sim.market.instruments()
    first, later = names[:10], names[5:20]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, first) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, 10)
        capture.engine.set_instruments(later)
        wait_until(
            lambda: (
                {c for s in sim.sessions() for c in s.channels if c.startswith("book.")}
                == {f"book.{n}.100ms" for n in later}
            ),
            20,
            message="the simulator sees exactly the new subscription set",
        )
        # Markers and the added books' snapshots come in any order: wait for both.
        reader.read_until(
            lambda rs: (
                {r.key for r in rs if r.record.type == "unsubscribed"} == set(first) - set(later)
                and {r.key for r in rs if r.record.type == "snapshot"} >= set(later) - set(first)
            ),
            20,
            "an unsubscribed marker for every removed instrument and a snapshot for every added one",
        )
        assert capture.engine.stats().reconnects == 0
