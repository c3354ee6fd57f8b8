"""DuckDB's book at T against the book rebuilt by replaying the topic up to T, on the archive scenario
(gaps, resyncs, dropped connections, a capture session killed without markers)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from optionstream_pipeline.consume.books import BookBuilder
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.query.database import NoArchive, archive_span, check_time, open_archive
from optionstream_pipeline.records.book import Change, Snapshot
from optionstream_pipeline_tests.archive.scenario import ArchivedRun

pytestmark = pytest.mark.slow
US = timedelta(microseconds=1)


class Replay:
    """The reference: the topic's records in stream order, replayed by the consumer's BookBuilder."""

    def __init__(self, records: list[TopicRecord]) -> None:
        self.stream: list[tuple[datetime, TopicRecord]] = []
        by_partition: dict[int, list[TopicRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        for partition_records in by_partition.values():
            latest = 0
            for record in sorted(partition_records, key=lambda r: r.offset):
                latest = max(latest, record.timestamp_ms * 1000)  # book_time: never back in a partition
                self.stream.append((_time(latest), record))
        self.stream.sort(key=lambda item: (item[0], item[1].partition, item[1].offset))
        self.session_end: dict[str, datetime] = {}
        for time, record in self.stream:
            self.session_end[record.record.capture.id] = time

    def books_at(self, moment: datetime) -> dict[str, tuple[bool, list, list]]:
        builder = BookBuilder(strict=False)
        last_session: dict[str, str] = {}
        last_kind: dict[str, str] = {}
        for time, record in self.stream:
            if time > moment:
                break
            builder.apply(record.record)
            last_session[record.record.instrument] = record.record.capture.id
            last_kind[record.record.instrument] = record.record.type
        # Followed (a record, and not unsubscribed last) but no snapshot yet: a book waiting for one.
        books = {name: (False, [], []) for name, kind in last_kind.items() if kind != "unsubscribed"}
        for name, book in builder.books.items():
            alive = moment <= self.session_end[last_session[name]]
            bids = sorted(((p, a) for p, a in book.bids.items() if a > 0), reverse=True)
            asks = sorted((p, a) for p, a in book.asks.items() if a > 0)
            books[name] = (book.valid and alive, bids, asks)
        return books


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC) + us % 1_000_000 * US


def archive_books_at(connection, moment: datetime) -> dict[str, tuple[bool, list, list]]:
    rows = connection.execute("SELECT symbol, reliable, bids, asks FROM books_at(?)", [moment]).fetchall()
    return {
        symbol: (reliable, [(b["price"], b["amount"]) for b in bids], [(a["price"], a["amount"]) for a in asks])
        for symbol, reliable, bids, asks in rows
    }


def interesting_times(records: list[TopicRecord], replay: Replay, count: int, seed: int = 5) -> list[datetime]:
    """Random times over the archive, and times just after each gap, resync, reconnect and session end."""
    times = [time for time, _ in replay.stream]
    rng = random.Random(seed)
    picked = [times[0] + (times[-1] - times[0]) * rng.random() for _ in range(count)]
    for time, record in replay.stream:
        kind = record.record.type
        if kind in ("gap", "disconnect") or (kind == "snapshot" and record.record.reason != "subscribe"):
            picked += [time, time + US]
    picked += [end + US for end in replay.session_end.values()]
    return sorted(moment for moment in picked if times[0] <= moment <= times[-1])


def test_the_book_at_any_time_equals_the_replayed_topic_and_both_agree_on_reliability(
    archived_run: ArchivedRun,
) -> None:
    replay = Replay(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    moments = interesting_times(archived_run.records, replay, 200)
    assert len(moments) >= 200
    unreliable = reliable = 0
    reasons: set[str] = set()
    for moment in moments:
        expected = replay.books_at(moment)
        actual = archive_books_at(connection, moment)
        assert actual == expected, f"at {moment}"
        reliable += sum(1 for state in expected.values() if state[0])
        unreliable += sum(1 for state in expected.values() if not state[0])
        reasons |= {row[0].split(":")[0].split(" ")[0] for row in connection.execute(
            "SELECT why FROM books_at(?) WHERE NOT reliable", [moment]).fetchall()}  # fmt: skip
    assert reliable > 1000 and unreliable > 20  # the scenario tried both, often
    # ("gap" too when a time falls between a gap and its resync snapshot, which can share a book_time)
    assert {"disconnect", "capture"} <= reasons  # "capture session ... ended at ... without markers"


def test_one_book_at_a_time_by_level_and_depth(archived_run: ArchivedRun) -> None:
    replay = Replay(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    moment = first + (last - first) / 3
    name, (reliable, bids, asks) = next((n, s) for n, s in replay.books_at(moment).items() if len(s[1]) >= 3)
    rows = connection.execute("SELECT side, level, price, amount, reliable FROM book_at(?, ?, depth := 2)",
                              [name, moment]).fetchall()  # fmt: skip
    assert rows == [("bid", 0, *bids[0], reliable), ("bid", 1, *bids[1], reliable)] + [
        ("ask", index, *level, reliable) for index, level in enumerate(asks[:2])
    ]


def test_the_chain_of_one_expiry_shows_calls_and_puts_by_strike(archived_run: ArchivedRun) -> None:
    replay = Replay(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    moment = first + (last - first) / 2
    books = replay.books_at(moment)
    expiry = next(r.record.instrument.split("-")[1] for r in archived_run.records)
    date = datetime.strptime(expiry, "%d%b%y").date()
    chain = connection.execute("SELECT * FROM chain_at(?, ?)", [date, moment]).fetchall()
    names = {name for name in books if name.split("-")[1] == expiry}
    assert len(chain) == len({name.split("-")[2] for name in names})
    for strike, call_bid, call_bid_size, call_ask, _, call_reliable, put_bid, *_, put_reliable in chain:
        call = books.get(f"BTC-{expiry}-{strike:g}-C")
        if call is not None:
            assert (call_bid, call_bid_size) == (call[1][0] if call[1] else (None, None))
            assert call_ask == (call[2][0][0] if call[2] else None)
            assert call_reliable == call[0]
        put = books.get(f"BTC-{expiry}-{strike:g}-P")
        if put is not None:
            assert put_bid == (put[1][0][0] if put[1] else None) and put_reliable == put[0]


def test_updates_between_two_times_are_the_rows_in_stream_order(archived_run: ArchivedRun) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    name = archived_run.records[0].record.instrument
    start, stop = first + (last - first) / 4, first + (last - first) / 2
    rows = connection.execute("SELECT book_time, kafka_offset, record_type FROM updates_between(?, ?, ?)",
                              [name, start, stop]).fetchall()  # fmt: skip
    expected = []
    for time, record in Replay(archived_run.records).stream:
        if record.record.instrument == name and start <= time < stop:
            expected += [(time, record.offset)] * _levels(record)  # one row per level
    assert expected and [(row[0], row[1]) for row in rows] == expected


def _levels(record: TopicRecord) -> int:
    value = record.record
    return len(value.bids) + len(value.asks) if isinstance(value, Snapshot | Change) else 1


def test_a_time_with_no_data_and_an_empty_archive_are_named(archived_run: ArchivedRun, tmp_path: Path) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, _ = archive_span(connection)
    check_time(connection, first)
    with pytest.raises(NoArchive, match=r"no archived data at 2001-01-01 00:00:00.000000 UTC: the archive spans"):
        check_time(connection, datetime(2001, 1, 1, tzinfo=UTC))
    with pytest.raises(NoArchive, match=r"the archive at .* has no file yet: run `optionstream archive` first"):
        open_archive(tmp_path)
