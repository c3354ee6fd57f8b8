"""The top of book through time and the unreliable intervals, against the replayed topic.

On the synthetic archive (:mod:`optionstream_pipeline_tests.archive.synthetic`): hours with
checkpoints, gaps, disconnects, unsubscribes, a killed capture session and a replaced incarnation.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import duckdb
import pytest

from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.archive.synthetic import NAMES, Archive
from optionstream_pipeline_tests.support.books import US, Book

START = "2025-12-01 08:20:00+00"  # before and after the killed session, across three hour boundaries
STOP = "2025-12-01 11:50:00+00"


@pytest.fixture(scope="module")
def connection(synthetic_archive: Archive) -> duckdb.DuckDBPyConnection:
    return open_archive(synthetic_archive.root, ":memory:")


def expected_top(state: Book | None) -> tuple:
    """(bid, bid size, ask, ask size, reliable) of the replayed book; no book is not reliable."""
    if state is None:
        return (None, None, None, None, False)
    reliable, _, bids, asks = state
    bid = bids[0] if bids else (None, None)
    ask = asks[0] if asks else (None, None)
    return (*bid, *ask, reliable)


def top_rows(connection, instrument: str, start, stop, every_ms: int | None = None) -> list[dict]:
    relation = connection.sql(
        "SELECT * FROM top_of_book($1, $2::TIMESTAMPTZ, $3::TIMESTAMPTZ, every_ms := $4)",
        params=[instrument, start, stop, every_ms],
    )
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def check_derived(row: dict) -> None:
    if row["bid_price"] is None or row["ask_price"] is None:
        assert row["mid"] is None and row["spread"] is None
    else:
        assert row["mid"] == pytest.approx((row["bid_price"] + row["ask_price"]) / 2)
        assert row["spread"] == pytest.approx(row["ask_price"] - row["bid_price"])


def test_the_resampled_top_of_book_is_the_book_as_it_stood_at_each_instant(
    synthetic_archive: Archive, connection
) -> None:
    replay, kinds = synthetic_archive.replay, set()
    for instrument in NAMES[:4]:  # two per partition
        rows = top_rows(connection, instrument, START, STOP, every_ms=37_000)
        moments = [row["book_time"] for row in rows]
        assert moments[0] == datetime.fromisoformat(START) and len(rows) == 3.5 * 3600 // 37 + 1
        assert all(b - a == timedelta(seconds=37) for a, b in itertools.pairwise(moments))
        for row in rows:
            state = replay.books_at(row["book_time"]).get(instrument)
            actual = (row["bid_price"], row["bid_amount"], row["ask_price"], row["ask_amount"], row["reliable"])
            assert actual == expected_top(state), f"{instrument} at {row['book_time']}"
            assert (row["why"] is None) == row["reliable"]
            assert row["as_of"] is None or row["as_of"] <= row["book_time"]
            check_derived(row)
            kinds.add(state[1] if state else "no book")
    assert {None, "gap", "disconnect", "capture", "no book"} <= kinds


def test_the_raw_top_of_book_has_a_row_per_record_and_the_book_after_each(
    synthetic_archive: Archive, connection
) -> None:
    replay = synthetic_archive.replay
    start, stop = datetime.fromisoformat(START), datetime.fromisoformat(STOP)
    for instrument in NAMES[4:]:
        rows = top_rows(connection, instrument, start, stop)
        records = [
            item for item in replay.stream if item[3].record.instrument == instrument and start <= item[0] < stop
        ]
        assert [row["book_time"] for row in rows] == [time for time, *_ in records]
        assert [row["change_id"] for row in rows] == [
            getattr(record.record, "change_id", None) for *_, record in records
        ]
        last_of_instant = [row for row, after in zip(rows, [*rows[1:], None], strict=True)
                           if after is None or after["book_time"] != row["book_time"]]  # fmt: skip
        for row in last_of_instant:
            state = replay.books_at(row["book_time"]).get(instrument)
            actual = (row["bid_price"], row["bid_amount"], row["ask_price"], row["ask_amount"], row["reliable"])
            assert actual == expected_top(state), f"{instrument} at {row['book_time']}"
            check_derived(row)


def intervals(connection, start, stop, instrument: str | None = None) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for symbol, since, until, why, seconds, continues in connection.execute(
        "SELECT * FROM unreliable_intervals(?::TIMESTAMPTZ, ?::TIMESTAMPTZ, instrument := ?)", [start, stop, instrument]
    ).fetchall():
        assert seconds == pytest.approx((until - since).total_seconds())
        found.setdefault(symbol, []).append((since, until, why, continues))
    return found


def test_an_instant_is_in_an_unreliable_interval_exactly_when_its_book_is_unreliable(
    synthetic_archive: Archive, connection
) -> None:
    replay = synthetic_archive.replay
    first, last = replay.times[0], replay.times[-1]
    stop = last + timedelta(minutes=5)
    found = intervals(connection, first, stop)
    edges = [t for spans in found.values() for since, until, *_ in spans for t in (since - US, since, until - US)]
    rng = random.Random(11)
    moments = sorted(edges + [first + (last - first) * rng.random() for _ in range(150)])
    causes = set()
    for moment in moments:
        books = replay.books_at(moment)
        for instrument in NAMES:
            inside = [span for span in found.get(instrument, []) if span[0] <= moment < span[1]]
            state = books.get(instrument)
            assert bool(inside) == (state is not None and not state[0]), f"{instrument} at {moment}"
            if inside and inside[0][0] == moment:  # where it starts, it names why
                causes.add(inside[0][2].split(" ")[0].rstrip(":"))
                assert inside[0][2].split(" ")[0].rstrip(":") == state[1]
    assert causes == {"waiting", "gap", "disconnect", "capture"}
    # Capture session b wrote the archive's last record: its books stay unreliable past the window's end.
    assert all(spans[-1][3] for spans in found.values() if spans[-1][1] == stop)
    assert any(spans[-1][1] == stop for spans in found.values())


def test_intervals_of_a_window_are_those_of_the_whole_archive_cut_to_it(synthetic_archive: Archive, connection) -> None:
    replay = synthetic_archive.replay
    whole = intervals(connection, replay.times[0], replay.times[-1] + US)
    start, stop = datetime.fromisoformat(START), datetime.fromisoformat(STOP)
    for instrument in NAMES:
        expected = [(max(since, start), min(until, stop)) for since, until, *_ in whole.get(instrument, [])
                    if since < stop and until > start]  # fmt: skip
        window = intervals(connection, start, stop, instrument).get(instrument, [])
        assert [(since, until) for since, until, *_ in window] == expected, instrument
