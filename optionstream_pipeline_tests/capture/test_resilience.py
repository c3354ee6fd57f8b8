"""Capture through what Deribit and the network do: drops, gaps, stalls, bad frames, maintenance, limits."""

from __future__ import annotations

import logging

import pytest

from optionstream_pipeline.simulator.credits import RateLimits
from optionstream_pipeline_tests.capture.conftest import (
    by_instrument,
    capture_settings,
    check_books_against_truth,
    check_record_envelope,
    running_capture,
    settle_and_read,
    wait_subscribed,
    with_unchecked,
)
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until


def book_channels(sim) -> set[str]:
    return {c for s in sim.sessions() for c in s.channels if c.startswith("book.")}


def test_twenty_dropped_connections_lose_no_book(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=20, events_per_second=150)
    instruments = sim.market.instruments()[:12]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        for drop in range(1, 21):
            sim.faults.drop()
            wait_until(lambda d=drop: capture.engine.stats().reconnects == d, 20, message=f"reconnect {drop}")
            wait_subscribed(capture, len(instruments))
        records = settle_and_read(sim, reader, instruments)
        final = capture.stop()

    check_record_envelope(records)
    assert check_books_against_truth(records, sim) > 200  # every state, including right after each resync
    for name, stream in by_instrument(records).items():
        disconnects = [i for i, r in enumerate(stream) if r.type == "disconnect" and r.reason != "capture stopped"]
        assert len(disconnects) == 20, name
        for position in disconnects:  # every drop is marked, then the book restarts from a snapshot
            following = next(r for r in stream[position + 1 :] if r.type in ("snapshot", "change"))
            assert following.type == "snapshot" and following.reason == "reconnect", name
    assert final.reconnects == 20
    assert final.gaps == 0
    assert final.delivery_failed == 0


def test_a_gap_resyncs_only_its_instrument(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=20, events_per_second=300)
    instruments = sim.market.instruments()[:10]
    target = instruments[3]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        for gap in range(1, 4):
            sim.faults.skip_change(target, "100ms")
            reader.read_until(
                lambda rs, g=gap: (
                    sum(
                        1 for r in rs if r.key == target and r.record.type == "snapshot" and r.record.reason == "resync"
                    )
                    == g
                ),
                20,
                f"resync snapshot {gap} of {target}",
            )
        records = settle_and_read(sim, reader, instruments)
        final = capture.stop()

    check_books_against_truth(records, sim)
    streams = by_instrument(records)
    gaps = [r for r in streams[target] if r.type == "gap"]
    assert len(gaps) == 3
    assert all(g.prev_change_id != g.expected_prev_change_id for g in gaps)
    for name in instruments:
        if name == target:
            continue
        kinds = [r.type for r in streams[name] if r.type != "disconnect"]
        assert kinds[0] == "snapshot" and set(kinds[1:]) == {"change"}, f"{name} was interrupted"
    assert (final.gaps, final.resyncs, final.reconnects) == (3, 3, 0)


def test_heartbeats_are_answered_and_keep_the_session(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=6, min_heartbeat_interval_s=1)
    instruments = sim.market.instruments()[:4]
    settings = with_unchecked(capture_settings(sim.url, kafka_bootstrap, kafka_topic), heartbeat_interval_s=1)
    with running_capture(settings, instruments) as capture:
        wait_subscribed(capture, len(instruments))
        session_ids = {s.id for s in sim.sessions()}
        wait_until(lambda: capture.engine.stats().heartbeats_answered >= 4, 20, message="4 test_requests answered")
        assert {s.id for s in sim.sessions()} == session_ids
        assert capture.engine.stats().reconnects == 0


def test_a_stalled_connection_is_probed_then_replaced(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=6)
    instruments = sim.market.instruments()[:4]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.stale_after_s": 2})
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        sim.faults.stall()
        wait_until(lambda: capture.engine.stats().stale_disconnects == 1, 15, message="the watchdog dropped it")
        assert capture.engine.stats().probes_sent >= 1  # it asked with public/test before giving up
        wait_subscribed(capture, len(instruments))
        records = settle_and_read(sim, reader, instruments)
    check_books_against_truth(records, sim)
    assert {r.key for r in records if getattr(r.record, "reason", None) == "reconnect"} == set(instruments)


@pytest.mark.parametrize("fault", ["malformed", "error_without_id"])
def test_a_bad_frame_is_counted_and_skipped_without_disturbing_the_stream(
    simulator, kafka_bootstrap, kafka_topic, fault, caplog
) -> None:
    sim = simulator(max_instruments=8)
    instruments = sim.market.instruments()[:6]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        if fault == "malformed":
            sim.faults.malformed()
            wait_until(lambda: capture.engine.stats().malformed_frames == 1, 10, message="malformed frame counted")
        else:
            sim.faults.error(code=10028)
            wait_until(lambda: capture.engine.stats().errors_without_id == 1, 10, message="error counted")
        before = capture.engine.stats().delivered
        wait_until(lambda: capture.engine.stats().delivered > before + 20, 10, message="data still flowing")
        records = settle_and_read(sim, reader, instruments)
        stats = capture.engine.stats()
    check_books_against_truth(records, sim)
    assert (stats.reconnects, stats.gaps) == (0, 0)
    expected = "malformed frame skipped" if fault == "malformed" else "error without id from Deribit"
    assert any(expected in message for message in caplog.messages)


# Valid JSON, but not Deribit's book levels (or a field of the wrong type): never a record.
BAD_BOOKS = {
    "levels not a list": {"bids": "oops"},
    "a level of two items": {"bids": [["new", 0.0415]]},
    "a string price": {"asks": [["new", "0.0425", 3.0]]},
    "an unknown action": {"asks": [["replace", 0.0425, 3.0]]},
    "a negative amount": {"bids": [["change", 0.0415, -1.0]]},
    "an object instead of a list": {"asks": {"new": 0.0425}},
    "change_id of the wrong type": {"change_id": "33195894355"},
}


def test_a_book_frame_that_is_not_deribits_is_refused_and_only_its_instrument_resynced(
    simulator, kafka_bootstrap, kafka_topic, caplog
) -> None:
    sim = simulator(max_instruments=12, events_per_second=300)
    instruments = sim.market.instruments()[:10]
    targets = dict(zip(BAD_BOOKS, instruments, strict=False))
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with (
        caplog.at_level(logging.WARNING),
        running_capture(settings, instruments) as capture,
        TopicLog(kafka_bootstrap, kafka_topic) as reader,
    ):
        wait_subscribed(capture, len(instruments))
        reader.read_until(lambda rs: {r.key for r in rs} >= set(instruments), 20, "a snapshot of every book")
        for shape, name in targets.items():
            sim.faults.corrupt_book(name, BAD_BOOKS[shape], "100ms")
        wait_until(lambda: capture.engine.stats().malformed_frames == len(BAD_BOOKS), 20, message="all refused")
        reader.read_until(
            lambda rs: {r.key for r in rs if getattr(r.record, "reason", "") == "resync"} == set(targets.values()),
            20,
            "a resync snapshot of every instrument that sent a bad frame, and of no other",
        )
        records = settle_and_read(sim, reader, instruments)
        stats = capture.engine.stats()

    check_record_envelope(records)  # every record written is schema-valid: none carries a bad level
    assert check_books_against_truth(records, sim) > 100  # strict: each book continuous, equal to the truth
    streams = by_instrument(records)
    for shape, name in targets.items():
        kinds = [r.type for r in streams[name]]
        marker = "disconnect" if shape == "change_id of the wrong type" else "gap"
        first_marker = kinds.index(marker)
        assert kinds[first_marker + 1 :].count("snapshot") == 1, f"{name} ({shape}) resynced once"
        assert [r.reason for r in streams[name] if r.type == marker] == [
            "unreadable book frame; resyncing" if marker == "disconnect" else "malformed book frame"
        ]
    for name in set(instruments) - set(targets.values()):
        kinds = [r.type for r in streams[name]]
        assert kinds[0] == "snapshot" and set(kinds[1:]) == {"change"}, f"{name} was interrupted"
    assert (stats.malformed_frames, stats.resyncs, stats.gaps, stats.reconnects) == (
        len(BAD_BOOKS),
        len(BAD_BOOKS),
        0,
        0,
    )
    refused = [m for m in caplog.messages if "malformed frame skipped" in m]
    assert len(refused) == len(BAD_BOOKS)
    assert any("bids: Expected `array`, got `str`" in m for m in refused)
    assert any("asks: Expected `float` > 0.0" in m or "asks: Expected `float`, got `str`" in m for m in refused)
    assert any("Invalid enum value 'replace'" in m for m in refused)
    assert any("Expected `int`, got `str` - at `$.params.data.change_id`" in m for m in refused)
    assert not any("lacks a required field" in m or "missing" in m for m in refused)  # wrong type, not missing


@pytest.mark.parametrize("close_connections", [True, False], ids=["connections-closed", "platform-locked"])
def test_maintenance_is_waited_out_then_every_book_is_resubscribed(
    simulator, kafka_bootstrap, kafka_topic, close_connections
) -> None:
    sim = simulator(max_instruments=8)
    instruments = sim.market.instruments()[:6]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with running_capture(settings, instruments) as capture, TopicLog(kafka_bootstrap, kafka_topic) as reader:
        wait_subscribed(capture, len(instruments))
        sim.faults.maintenance(seconds=1.5, close_connections=close_connections)
        reason = "reconnect" if close_connections else "resync"
        reader.read_until(
            lambda rs: (
                {r.key for r in rs if getattr(r.record, "reason", None) == reason and r.record.type == "snapshot"}
                == set(instruments)
            ),
            30,
            f"a fresh snapshot ({reason}) of every book after maintenance",
        )
        records = settle_and_read(sim, reader, instruments)
        stats = capture.engine.stats()
    check_books_against_truth(records, sim)
    if close_connections:
        assert stats.reconnects >= 1
    else:
        assert stats.reconnects == 0


def test_a_rejected_channel_is_reported_and_the_rest_flow(simulator, kafka_bootstrap, kafka_topic, caplog) -> None:
    sim = simulator(max_instruments=8)
    instruments = sim.market.instruments()[:6]
    refused = instruments[2]
    sim.faults.reject_channel(f"book.{refused}.100ms")
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic)
    with caplog.at_level(logging.WARNING), running_capture(settings, instruments) as capture:
        wait_subscribed(capture, len(instruments) - 1)
        stats = capture.engine.stats()
        assert (stats.rejected_now, stats.rejected_channels) == (1, 1)
        wait_until(lambda: capture.engine.stats().instruments_live == len(instruments) - 1, 10, message="live")
    assert any(f"book.{refused}.100ms" in m and "rejected" in m for m in caplog.messages)


def test_rate_limited_subscriptions_are_retried_until_all_succeed(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=40, rate_limits=RateLimits(subscribe_burst=2, subscribe_per_s=4))
    instruments = sim.market.instruments()[:30]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.subscribe_batch_size": 5})
    with running_capture(settings, instruments) as capture:
        wait_subscribed(capture, len(instruments), timeout=30)
        stats = capture.engine.stats()
        assert book_channels(sim) == {f"book.{name}.100ms" for name in instruments}
    assert stats.rate_limited >= 1
    assert stats.rejected_now == 0
