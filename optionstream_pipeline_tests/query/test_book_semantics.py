"""What the book at T is, case by case, on small archives written directly (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from optionstream_pipeline.archive.layout import ArchiveFile
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.support.books import T0, Stream

X, Y = "BTC-27JUN25-100000-C", "BTC-27JUN25-100000-P"


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(T0 / 1000, UTC) + timedelta(milliseconds=ms)


def books(connection, ms: int) -> dict[str, tuple]:
    rows = connection.execute("SELECT symbol, reliable, why, bids, asks FROM books_at(?)", [at(ms)]).fetchall()
    return {
        name: (reliable, why, [(b["price"], b["amount"]) for b in bids], [(a["price"], a["amount"]) for a in asks])
        for name, reliable, why, bids, asks in rows
    }


def test_changes_apply_to_the_last_snapshot_in_stream_order(tmp_path: Path) -> None:
    stream = Stream()
    stream.snapshot(X, 0, 10, bids=[("new", 0.01, 1.0), ("new", 0.02, 2.0)], asks=[("new", 0.03, 3.0)])
    stream.change(X, 10, 12, 10, bids=[("change", 0.02, 5.0)], asks=[("new", 0.04, 1.0)])
    stream.change(X, 20, 15, 12, bids=[("delete", 0.01, 0.0)])
    connection = stream.archive(tmp_path)
    assert books(connection, 0)[X] == (True, None, [(0.02, 2.0), (0.01, 1.0)], [(0.03, 3.0)])
    assert books(connection, 15)[X] == (True, None, [(0.02, 5.0), (0.01, 1.0)], [(0.03, 3.0), (0.04, 1.0)])
    assert books(connection, 20)[X] == (True, None, [(0.02, 5.0)], [(0.03, 3.0), (0.04, 1.0)])


def test_a_gap_makes_the_book_unreliable_until_its_resync_snapshot(tmp_path: Path) -> None:
    stream = Stream()
    stream.snapshot(X, 0, 10, bids=[("new", 0.01, 1.0)])
    stream.gap(X, 10, 14, 12, 10)
    stream.snapshot(X, 30, 20, bids=[("new", 0.015, 4.0)])
    stream.change(X, 40, 21, 20, asks=[("new", 0.03, 1.0)])  # keeps the partition's time going
    connection = stream.archive(tmp_path)
    assert books(connection, 20)[X] == (False, "gap: change_id gap", [(0.01, 1.0)], [])
    assert books(connection, 30)[X] == (True, None, [(0.015, 4.0)], [])


def test_a_marker_before_any_snapshot_is_a_book_waiting_for_it(tmp_path: Path) -> None:
    stream = Stream()
    stream.snapshot(X, 0, 10, bids=[("new", 0.01, 1.0)])
    stream.marker("unsubscribed", X, 5, "left the universe")
    stream.marker("disconnect", X, 10, "connection dropped")  # followed again, dropped before its snapshot
    stream.marker("disconnect", Y, 10, "connection dropped")  # never had one
    stream.snapshot(Y, 30, 11, asks=[("new", 0.03, 2.0)])
    connection = stream.archive(tmp_path)
    state = books(connection, 20)
    assert state[X] == (False, "waiting for the first snapshot", [], [])  # not the book from before
    assert state[Y] == (False, "waiting for the first snapshot", [], [])
    assert X not in books(connection, 7)  # unsubscribed: no book
    assert books(connection, 30)[Y] == (True, None, [], [(0.03, 2.0)])


def test_a_session_that_ended_without_markers_leaves_its_books_unreliable(tmp_path: Path) -> None:
    stream = Stream()
    stream.snapshot(X, 0, 10, bids=[("new", 0.01, 1.0)], session="a")
    stream.snapshot(Y, 5, 11, bids=[("new", 0.02, 1.0)], session="a")
    stream.change(Y, 50, 12, 11, bids=[("change", 0.02, 2.0)], session="a")  # session a's last record
    stream.snapshot(Y, 100, 30, bids=[("new", 0.02, 3.0)], session="b")  # a new session, no marker from a
    stream.snapshot(X, 200, 31, bids=[("new", 0.01, 9.0)], session="b")
    connection = stream.archive(tmp_path)
    assert books(connection, 40)[X][0] is True  # session a still writing (Y's change at 50)
    state = books(connection, 60)
    for name in (X, Y):
        reliable, why = state[name][:2]
        assert not reliable and why == "capture session a ended at 2025-12-01 08:00:00.05+00 without markers"
    state = books(connection, 150)
    assert state[Y][:3] == (True, None, [(0.02, 3.0)])  # its new session's snapshot
    assert state[X][0] is False
    assert books(connection, 200)[X] == (True, None, [(0.01, 9.0)], [])


def test_files_a_compaction_merged_but_has_not_removed_yet_are_read_once(tmp_path: Path) -> None:
    """As a crash between the merged file and the removal of its inputs leaves them."""
    stream = Stream()
    for n in range(30):
        stream.change(X, n, 100 + n, 99 + n, bids=[("new", 0.01, float(n + 1))])
    store = ArchiveStore(tmp_path)
    stream.write(store, per_file=10, checkpoints=False)  # 0-9, 10-19, 20-29
    inputs = store.files("t", 0)
    merged = ArchiveFile("t", 0, 0, 0, 19, inputs[0].hour_start_us)
    store.write(merged, pa.concat_tables([store.read(f) for f in inputs[:2]]), store.file_state(inputs[1]))
    also = ArchiveFile("t", 0, 0, 5, 9, inputs[0].hour_start_us)  # (a range inside another, never one's own)
    store.write(also, store.read(inputs[0]).slice(5, 5), store.file_state(inputs[0]))
    connection = open_archive(tmp_path, ":memory:")
    flags = dict(connection.execute("SELECT first_offset || '-' || last_offset, replaced FROM book_files").fetchall())
    assert flags == {"0-9": True, "5-9": True, "10-19": True, "0-19": False, "20-29": False}
    offsets = [row[0] for row in connection.execute("SELECT kafka_offset FROM book ORDER BY 1").fetchall()]
    assert offsets == list(range(30))
