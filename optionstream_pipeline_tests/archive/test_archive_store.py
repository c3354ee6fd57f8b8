"""The archive's files on disk: names, atomic writes, what a dead run leaves, one writer, foreign files."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
from optionstream_pipeline.archive.progress import Fingerprint
from optionstream_pipeline.archive.schema import ARCHIVE_SCHEMA
from optionstream_pipeline.archive.store import ArchiveError, ArchiveStore, FileState, PartitionBusy

HOUR = 1_764_576_000_000_000  # 2025-12-01 08:00 UTC, µs
STATE = FileState(HOUR + 5, Fingerprint(9, 1, "k", 1))


def file(first: int, last: int, partition: int = 3, incarnation: int = 0) -> ArchiveFile:
    return ArchiveFile("orderbook.deribit.options", partition, incarnation, first, last, HOUR)


def test_a_name_says_what_the_file_holds_and_parses_back() -> None:
    one = file(0, 499)
    assert one.path == (
        "book/date=2025-12-01/hour=08/orderbook.deribit.options+3+0+00000000000000000000-00000000000000000499.parquet"
    )
    assert ArchiveFile.parse(one.path) == one
    assert one.records == 500
    assert ArchiveFile.parse("book/date=2025-12-01/hour=08/.x.parquet.tmp") is None
    assert ArchiveFile.parse("book/date=2025-12-01/hour=08/notes.parquet") is None
    assert hour_of(HOUR + 3_599_999_999) == HOUR and hour_of(HOUR + 3_600_000_000) == HOUR + 3_600_000_000


def test_covers_is_about_the_same_partition_and_incarnation() -> None:
    merged = file(0, 999)
    assert merged.covers(file(0, 499)) and merged.covers(file(500, 999))
    assert not merged.covers(merged)
    assert not merged.covers(file(500, 1000))
    assert not merged.covers(file(0, 499, partition=4)) and not merged.covers(file(0, 499, incarnation=1))


def test_writes_are_whole_and_a_dead_runs_leftovers_go(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    store.write(file(0, 0), ARCHIVE_SCHEMA.empty_table(), STATE)
    assert store.files() == [file(0, 0)]
    assert store.file_state(file(0, 0)) == STATE
    leftover = tmp_path / "book/date=2025-12-01/hour=08/.orderbook.deribit.options+3+0+x.parquet.tmp"
    leftover.write_bytes(b"half a file")
    other_partition = tmp_path / "book/date=2025-12-01/hour=08/.orderbook.deribit.options+4+0+x.parquet.tmp"
    other_partition.write_bytes(b"another run's, still writing")
    assert store.remove_temporaries("orderbook.deribit.options", 3) == [leftover.relative_to(tmp_path).as_posix()]
    assert not leftover.exists() and other_partition.exists()
    assert store.files() == [file(0, 0)]


def test_files_a_compaction_covered_are_not_live_and_removed_next_time(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    for one in (file(0, 4), file(5, 9), file(0, 9), file(10, 12)):
        store.write(one, ARCHIVE_SCHEMA.empty_table(), STATE)
    assert store.live_files() == [file(0, 9), file(10, 12)]
    assert store.archived("orderbook.deribit.options", 3).next_offset == 13
    assert store.remove_covered("orderbook.deribit.options", 3) == [file(0, 4), file(5, 9)]
    assert store.files() == [file(0, 9), file(10, 12)]


def _hold(root: str, started, release) -> None:
    with ArchiveStore(root).partition_lock("t", 0):
        started.set()
        release.wait(30)


def test_two_runs_of_one_partition_cannot_both_write(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path), started, release))
    holder.start()
    try:
        assert started.wait(30)
        store = ArchiveStore(tmp_path)
        busy = rf"t\+0 is being archived by another run \(pid {holder.pid}\)"
        with pytest.raises(PartitionBusy, match=busy), store.partition_lock("t", 0):
            pass
        with store.partition_lock("t", 1):  # another partition: free
            pass
    finally:
        release.set()
        holder.join(30)
    with ArchiveStore(tmp_path).partition_lock("t", 0):  # released when its holder ended
        pass


def test_a_foreign_or_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    foreign = file(0, 9)
    path = tmp_path / foreign.path
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), path)
    with pytest.raises(ArchiveError, match=r"\+3\+0\+0+-0+9\.parquet: not an OptionStream archive file"):
        store.archived("orderbook.deribit.options", 3)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ArchiveError, match=r"cannot be read as a Parquet file"):
        store.archived("orderbook.deribit.options", 3)


def test_the_schema_documentation_shows_every_column_as_declared() -> None:
    from optionstream_pipeline.archive.schema import COLUMNS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "archive-schema.md").read_text()
    for name, _, meaning in COLUMNS:
        assert f"| `{name}` |" in doc and meaning in doc, name
    from optionstream_pipeline.archive.ticker_schema import COLUMNS as TICKER_COLUMNS

    tickers = doc[doc.index("## The ticker table") :]
    for name, _, meaning, _ in TICKER_COLUMNS:
        assert f"| `{name}` |" in tickers and meaning in tickers, name
