"""The round trip: a capture run is archived, replayed through ``optionstream replay`` into a second
capture writing a second topic, and the second topic holds what the first held from the replay's
start on: each book's snapshot at the start, then the same changes (change_ids, prev_change_ids,
levels) and the same tickers, in the same order per instrument, on the same partition.

The first capture runs the simulator's market in two stretches with a pause between them; the replay
starts inside the pause, so that which records follow its start is plain from their exchange time.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import yaml

from optionstream_pipeline.archive.run import archive_topic
from optionstream_pipeline.consume.books import BookBuilder
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline_tests.capture.conftest import (
    capture_settings,
    running_capture,
    settle_and_read,
    ticker_topic_of,
    wait_subscribed,
)
from optionstream_pipeline_tests.support.books import as_time
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.replay_server import ReplayServer
from optionstream_pipeline_tests.support.waiting import wait_until

INSTRUMENTS = 12
STRETCH_CHANGES = 250  # book changes in each stretch of the first capture
DEADLINE_S = 30.0
BOOK_EVENTS = ("snapshot", "change")


def by_instrument(records: list[TopicRecord]) -> dict[str, list[TopicRecord]]:
    """The records of each instrument in topic order (one partition per instrument: its order)."""
    grouped: dict[str, list[TopicRecord]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record)
    return grouped


def book_events(records: list[TopicRecord]) -> list[TopicRecord]:
    return [record for record in records if record.record.type in BOOK_EVENTS]


def changes(records: list[TopicRecord]) -> int:
    return sum(record.record.type == "change" for record in records)


def received(stats) -> int:
    """Book and ticker notifications a capture received."""
    return stats.messages_in + stats.tickers_in


def capture_until_settled(sim, capture, book_log: TopicLog, ticker_log: TopicLog, instruments: list[str]):
    """Let the market run for another :data:`STRETCH_CHANGES` changes, freeze it, and read both topics
    until every book is at its final change and every ticker capture received has been read."""
    wanted = changes(book_log.records) + STRETCH_CHANGES
    book_log.read_until(lambda rs: changes(rs) >= wanted, DEADLINE_S, f"{wanted} book changes")
    books = settle_and_read(sim, book_log, instruments)
    received = capture.engine.stats().tickers_in
    tickers = ticker_log.read_until(lambda rs: len(rs) >= received, DEADLINE_S, f"{received} tickers")
    return list(books), list(tickers)


def test_a_capture_of_the_replay_equals_the_capture_it_replays(
    simulator, kafka_bootstrap, kafka_topic, tmp_path: Path
) -> None:
    sim = simulator(max_instruments=30, events_per_second=300)
    instruments = sim.market.instruments()[:INSTRUMENTS]
    first = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"archive.path": str(tmp_path / "archive")})
    with (
        running_capture(first, instruments) as capture,
        TopicLog(kafka_bootstrap, kafka_topic) as book_log,
        TopicLog(kafka_bootstrap, ticker_topic_of(kafka_topic), records="ticker") as ticker_log,
    ):
        wait_subscribed(capture, len(instruments))
        before, _ = capture_until_settled(sim, capture, book_log, ticker_log, instruments)
        sim.market.resume()
        books, tickers = capture_until_settled(sim, capture, book_log, ticker_log, instruments)
        # Archived while capture runs: the window ends before capture's stop markers.
        archive_topic(first)

    # The replay starts inside the pause: after every record of the first stretch, before the second.
    paused_at = max(record.record.exchange_timestamp_ms for record in book_events(before))
    resumed_at = min(r.record.exchange_timestamp_ms for r in books if r.record.exchange_timestamp_ms > paused_at)
    start = as_time((paused_at + resumed_at) * 500)  # µs
    stop = as_time(max(record.record.exchange_timestamp_ms for record in books) * 1000) + timedelta(seconds=1)
    config = tmp_path / "replay.yaml"
    config.write_text(yaml.safe_dump({"archive": {"path": str(tmp_path / "archive")}}))
    window = ["--from", start.isoformat(), "--to", stop.isoformat(), "--as-fast-as-possible", "--start-delay", "2"]

    replayed_topic = f"{kafka_topic}.replayed"
    expected_books = {name: sum(1 for r in rs if r.timestamp_ms > paused_at) + 1
                      for name, rs in by_instrument(book_events(books)).items()}  # fmt: skip
    expected_tickers = sum(1 for record in tickers if record.timestamp_ms > paused_at)
    with ReplayServer(str(config), *window) as replay:
        second = capture_settings(replay.url, kafka_bootstrap, replayed_topic)
        with running_capture(second, instruments) as again:
            wait_subscribed(again, len(instruments))
            with (
                TopicLog(kafka_bootstrap, replayed_topic) as replayed_book_log,
                TopicLog(kafka_bootstrap, ticker_topic_of(replayed_topic), records="ticker") as replayed_ticker_log,
            ):
                replayed_books = replayed_book_log.read_until(
                    lambda rs: len(book_events(rs)) >= sum(expected_books.values()), DEADLINE_S, "every book replayed"
                )
                replayed_tickers = replayed_ticker_log.read_until(
                    lambda rs: len(rs) >= expected_tickers, DEADLINE_S, "every ticker replayed"
                )
                replay.wait_for("replay finished")
                sent = sum(expected_books.values()) + expected_tickers
                wait_until(lambda: received(again.engine.stats()) >= sent, DEADLINE_S, message=f"{sent} received")
                assert received(again.stop()) == sent, "the replay sent more than the window holds"

    check_books(books, replayed_books, paused_at)
    check_tickers(tickers, replayed_tickers, paused_at)


def check_books(original: list[TopicRecord], replayed: list[TopicRecord], paused_at: int) -> None:
    """Each book's first replayed record is its snapshot at the start (the original's book then, with
    its change_id and time); every one after it is the original's record after the start."""
    at_start = BookBuilder(strict=True)
    for record in original:
        if record.record.exchange_timestamp_ms <= paused_at:
            at_start.apply(record.record)
    after = {name: [r for r in rs if r.timestamp_ms > paused_at] for name, rs in by_instrument(original).items()}
    replayed_by_instrument = by_instrument(replayed)
    assert sorted(replayed_by_instrument) == sorted(after)
    for name, records in replayed_by_instrument.items():
        snapshot, *rest = records
        book = at_start.books[name]
        assert snapshot.record.type == "snapshot", name
        assert (snapshot.record.change_id, snapshot.record.exchange_timestamp_ms) == (
            book.change_id,
            book.exchange_timestamp_ms,
        ), name
        rebuilt = BookBuilder(strict=True).apply(snapshot.record)
        assert (rebuilt.bids, rebuilt.asks) == (book.bids, book.asks), name
        assert [event(r) for r in rest] == [event(r) for r in after[name]], name
        assert {r.partition for r in records} == {r.partition for r in after[name]}, name


def event(record: TopicRecord) -> tuple:
    """What the exchange said in a book record (not when capture received it, nor which session)."""
    r = record.record
    return r.type, r.change_id, r.prev_change_id, r.exchange_timestamp_ms, r.bids, r.asks, record.timestamp_ms


def check_tickers(original: list[TopicRecord], replayed: list[TopicRecord], paused_at: int) -> None:
    """The replayed tickers are the original's after the start: the same Deribit fields, in order."""
    after = by_instrument([record for record in original if record.timestamp_ms > paused_at])
    replayed_by_instrument = by_instrument(replayed)
    assert sorted(replayed_by_instrument) == sorted(after)
    for name, records in replayed_by_instrument.items():
        assert [ticker(r) for r in records] == [ticker(r) for r in after[name]], name


def ticker(record: TopicRecord) -> tuple:
    r = record.record
    return r.interval, r.exchange_timestamp_ms, r.ticker, record.timestamp_ms, record.partition
