"""DuckDB's book at T against the book rebuilt by replaying the topic up to T, on the archive scenario
(gaps, resyncs, dropped connections, a capture session killed without markers)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.query.database import NoArchive, archive_span, check_time, open_archive
from optionstream_pipeline.records.book import Change, Snapshot
from optionstream_pipeline.records.ticker import TickerData
from optionstream_pipeline_tests.archive.scenario import ArchivedRun
from optionstream_pipeline_tests.support.books import US, Replay, archive_books_at
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

pytestmark = pytest.mark.slow


def interesting_times(records: list[TopicRecord], replay: Replay, count: int, seed: int = 5) -> list[datetime]:
    """Random times over the archive, and times just after each gap, resync, reconnect and session end."""
    times = replay.times
    rng = random.Random(seed)
    picked = [times[0] + (times[-1] - times[0]) * rng.random() for _ in range(count)]
    for time, *_, record in replay.stream:
        kind = record.record.type
        if kind in ("gap", "disconnect") or (kind == "snapshot" and record.record.reason != "subscribe"):
            picked += [time, time + US]
    picked += [end + US for end in replay.session_end.values()]
    return sorted(moment for moment in picked if times[0] <= moment <= times[-1])


def test_the_book_at_any_time_equals_the_replayed_topic_and_both_agree_on_reliability(
    archived_run: ArchivedRun,
) -> None:
    replay = Replay.of_partitions(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    moments = interesting_times(archived_run.records, replay, 200)
    assert len(moments) >= 200
    unreliable = reliable = 0
    reasons: set[str] = set()
    for moment in moments:
        expected = replay.books_at(moment)
        actual = archive_books_at(connection, moment)
        assert actual == expected, f"at {moment}"  # books, and whether and why they are reliable
        reliable += sum(1 for state in expected.values() if state[0])
        unreliable += sum(1 for state in expected.values() if not state[0])
        reasons |= {state[1] for state in expected.values() if state[1]}
    assert reliable > 1000 and unreliable > 20  # the scenario tried both, often
    # "gap" too when a time falls between a gap and its resync snapshot (they can share a book_time);
    # "capture" (the killed session) when a book changed before the next session's snapshot of it.
    assert "disconnect" in reasons


def test_one_book_at_a_time_by_level_and_depth(archived_run: ArchivedRun) -> None:
    replay = Replay.of_partitions(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    moment = first + (last - first) / 3
    name, (reliable, _, bids, asks) = next((n, s) for n, s in replay.books_at(moment).items() if len(s[2]) >= 3)
    rows = connection.execute("SELECT side, level, price, amount, reliable FROM book_at(?, ?, depth := 2)",
                              [name, moment]).fetchall()  # fmt: skip
    assert rows == [("bid", 0, *bids[0], reliable), ("bid", 1, *bids[1], reliable)] + [
        ("ask", index, *level, reliable) for index, level in enumerate(asks[:2])
    ]


def latest_tickers_at(records: list[TopicRecord], moment: datetime) -> dict[str, TickerData]:
    """Each instrument's latest ticker at or before ``moment`` by ticker_time (the running maximum of the
    exchange times in its partition), replayed from the ticker topic in Python."""
    latest: dict[str, tuple[int, int, TickerData]] = {}
    running: dict[int, int] = {}
    limit = int(moment.timestamp() * 1_000_000)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        time_us = running[record.partition] = max(running.get(record.partition, 0), record.timestamp_ms * 1000)
        if time_us <= limit and limit - time_us <= 3_600_000_000:
            candidate = (time_us, record.offset, record.record.ticker)
            latest[record.key] = max(latest.get(record.key, (0, -1, None)), candidate, key=lambda entry: entry[:2])
    return {name: ticker for name, (_, _, ticker) in latest.items()}


def test_the_chain_of_one_expiry_shows_books_beside_their_latest_ticker_by_strike(
    archived_run: ArchivedRun, kafka_bootstrap: str
) -> None:
    replay = Replay.of_partitions(archived_run.records)
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    ticker_topic = archived_run.settings.kafka.ticker_topic
    archived = sum(r.records for one_pass in archived_run.passes for r in one_pass if r.topic == ticker_topic)
    with TopicLog(kafka_bootstrap, ticker_topic, records="ticker") as log:  # every archived one, no fewer
        ticker_records = log.read_until(lambda rs: len(rs) >= archived, 30, "every archived ticker record")
    first, last = archive_span(connection)
    expiries = Counter(name.split("-")[1] for name in {r.record.instrument for r in archived_run.records})
    expiry = expiries.most_common(1)[0][0]  # the one with the most strikes
    date = datetime.strptime(expiry, "%d%b%y").date()
    checked_tickers = 0
    for moment in (first + (last - first) * share for share in (0.3, 0.6, 0.95)):
        books = replay.books_at(moment)
        tickers = latest_tickers_at(ticker_records, moment)
        relation = connection.execute("SELECT * FROM chain_at(?, ?)", [date, moment])
        columns = [column[0] for column in relation.description]
        chain = [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]
        names = {name for name in books if name.split("-")[1] == expiry}
        assert len(chain) == len({name.split("-")[2] for name in names})
        for row in chain:
            for side, suffix in (("call", "C"), ("put", "P")):
                name = f"BTC-{expiry}-{row['strike']:g}-{suffix}"
                book = books.get(name)
                if book is None:
                    assert row[f"{side}_bid"] is None and row[f"{side}_reliable"] is None
                    continue
                reliable, _, bids, asks = book[:4]
                assert (row[f"{side}_bid"], row[f"{side}_bid_size"]) == (bids[0] if bids else (None, None)), name
                assert (row[f"{side}_ask"], row[f"{side}_ask_size"]) == (asks[0] if asks else (None, None)), name
                assert row[f"{side}_reliable"] == reliable, name
                ticker = tickers.get(name)
                shown = tuple(row[f"{side}_{field}"] for field in ("bid_iv", "ask_iv", "mark", "mark_iv", "delta"))
                if ticker is None:
                    assert shown == (None,) * 5, name
                    continue
                assert shown == (ticker.bid_iv, ticker.ask_iv, ticker.mark_price, ticker.mark_iv, ticker.greeks.delta)
                checked_tickers += 1
        smile = connection.execute("SELECT * FROM smile_at(?, ?)", [date, moment]).fetchall()
        expected = sorted(
            {float(name.split("-")[2]) for name, ticker in tickers.items() if name.split("-")[1] == expiry}
        )
        assert [row[0] for row in smile] == expected
        for strike, call_mark_iv, *_, put_mark_iv, _, _, put_delta, underlying, _ in smile:
            call, put = tickers.get(f"BTC-{expiry}-{strike:g}-C"), tickers.get(f"BTC-{expiry}-{strike:g}-P")
            assert call_mark_iv == (call.mark_iv if call else None)
            assert (put_mark_iv, put_delta) == ((put.mark_iv, put.greeks.delta) if put else (None, None))
            assert underlying is not None
    assert checked_tickers >= 3 * expiries[expiry] // 2


def test_updates_between_two_times_are_the_rows_in_stream_order(archived_run: ArchivedRun) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    name = archived_run.records[0].record.instrument
    start, stop = first + (last - first) / 4, first + (last - first) / 2
    rows = connection.execute("SELECT book_time, kafka_offset, record_type FROM updates_between(?, ?, ?)",
                              [name, start, stop]).fetchall()  # fmt: skip
    expected = []
    for time, *_, record in Replay.of_partitions(archived_run.records).stream:
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
