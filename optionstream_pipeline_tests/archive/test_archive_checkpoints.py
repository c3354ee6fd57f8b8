"""Book checkpoints on a synthetic archive of several hours: the book at T read from the checkpoint of
T's hour and that hour's rows equals the replayed topic, even with every earlier hour removed.

The archive is :mod:`optionstream_pipeline_tests.archive.synthetic`'s: what checkpoints must carry
across an hour boundary, all of it.
"""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from optionstream_pipeline.archive.checkpoints import build_checkpoints
from optionstream_pipeline.archive.layout import US_PER_HOUR, CheckpointFile
from optionstream_pipeline.archive.store import DERIVED_KEY, ArchiveStore
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.archive.synthetic import NAMES, Archive
from optionstream_pipeline_tests.support.books import T0, US, archive_books_at, as_time


@pytest.fixture
def archive(synthetic_archive: Archive) -> Archive:
    return synthetic_archive


def boundary_times(archive: Archive) -> list[datetime]:
    """Around each hour boundary: the last instant before it, the boundary, the instant after."""
    first, last = archive.replay.times[0], archive.replay.times[-1]
    moments = []
    boundary = first.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while boundary <= last:
        moments += [boundary - US, boundary, boundary + US]
        boundary += timedelta(hours=1)
    return moments


def sample_times(archive: Archive, count: int) -> list[datetime]:
    times = archive.replay.times
    rng = random.Random(3)
    return sorted(times[0] + (times[-1] - times[0]) * rng.random() for _ in range(count))


def test_every_closed_hour_of_every_partition_has_its_checkpoint_marked_derived(archive: Archive) -> None:
    store = ArchiveStore(archive.root)
    hour = 1_764_576_000_000_000  # 08:00, in µs
    found = {(c.partition, c.incarnation, (c.boundary_us - hour) // US_PER_HOUR)
             for inc in (0, 1) for p in (0, 1) for c in store.checkpoints("t", p, inc)}  # fmt: skip
    # partition 0: 09:00 to 12:00 (11:00 too, after an empty hour); 12:00-13:00 is still open.
    # partition 1: incarnation 0 up to the hour after its last record; incarnation 1 until its open hour.
    assert found == {(0, 0, h) for h in (1, 2, 3, 4)} | {(1, 0, 1), (1, 0, 2)} | {(1, 1, 2), (1, 1, 3)}
    checkpoint = CheckpointFile("t", 0, 0, hour + 3 * US_PER_HOUR)
    metadata = pq.read_metadata(store.path(checkpoint)).metadata
    assert b'"kind": "checkpoint"' in metadata[DERIVED_KEY]


def test_the_book_at_any_time_equals_the_replayed_topic_across_hours(archive: Archive) -> None:
    connection = open_archive(archive.root, ":memory:")
    moments = sample_times(archive, 120) + boundary_times(archive)
    moments += [as_time((T0 + archive.killed_at_ms) * 1000) + US * n for n in (-1, 1, 10**6)]
    reasons: set[str] = set()
    for moment in moments:
        expected = archive.replay.books_at(moment)
        assert archive_books_at(connection, moment) == expected, f"at {moment}"
        reasons |= {state[1] for state in expected.values() if state[1]}
    assert reasons == {"waiting", "gap", "disconnect", "capture"}


def test_one_instrument_at_any_time_equals_its_book_in_the_whole_chain(archive: Archive) -> None:
    """One instrument's book reads only the partitions that hold it: the same book as in the chain's."""
    connection = open_archive(archive.root, ":memory:")
    for moment in sample_times(archive, 30) + boundary_times(archive):
        chain = archive_books_at(connection, moment)
        for name in NAMES:
            one = {name: chain[name]} if name in chain else {}
            assert archive_books_at(connection, moment, name) == one, f"{name} at {moment}"


def test_the_book_at_t_needs_no_row_before_the_checkpoint_it_starts_from(archive: Archive, tmp_path: Path) -> None:
    """As when old days of the archive are removed to save space: the books stay whole."""
    shutil.copytree(archive.root, tmp_path / "archive")
    store = ArchiveStore(tmp_path / "archive")
    kept = len(store.files())
    for partition, incarnation in ((0, 0), (1, 0), (1, 1)):
        latest = store.checkpoints("t", partition, incarnation)[-1].boundary_us
        for file in store.files("t", partition):
            if file.incarnation == incarnation and file.hour_start_us < latest:
                store.remove(file)  # every row the latest checkpoint holds: gone
                kept -= 1
    assert 0 < kept < len(archive.replay.stream) / 40 / 4  # (files of 40 records)
    last = archive.replay.times[-1]
    hour = last.replace(minute=0, second=0, microsecond=0)  # partition 0's last checkpoint
    connection = open_archive(tmp_path / "archive", ":memory:")
    for moment in [hour, *(hour + (last - hour) * n / 10 for n in range(1, 11))]:
        assert archive_books_at(connection, moment) == archive.replay.books_at(moment), f"at {moment}"


def test_checkpoints_rebuilt_from_scratch_equal_those_written_run_after_run(archive: Archive, tmp_path: Path) -> None:
    shutil.copytree(archive.root, tmp_path / "archive")
    shutil.rmtree(tmp_path / "archive" / "checkpoints")
    store, original = ArchiveStore(tmp_path / "archive"), ArchiveStore(archive.root)
    rebuilt = build_checkpoints(store, "t", 0) + build_checkpoints(store, "t", 1)
    assert sorted(rebuilt) == sorted(c for p in (0, 1) for i in (0, 1) for c in original.checkpoints("t", p, i))
    for checkpoint in rebuilt:
        rows = pq.read_table(store.path(checkpoint)).to_pylist()
        assert rows and rows == pq.read_table(original.path(checkpoint)).to_pylist()
