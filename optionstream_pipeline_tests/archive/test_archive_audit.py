"""The archive's audits (the asset checks' rules): offsets, change_id continuity, closed hours."""

from __future__ import annotations

import shutil
from pathlib import Path

from optionstream_pipeline.archive import audit
from optionstream_pipeline.archive.compaction import compact_partition, open_hour
from optionstream_pipeline.archive.layout import ArchiveFile
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline_tests.archive.synthetic import Archive
from optionstream_pipeline_tests.support.books import Stream

H = 3_600_000_000
H0 = 1_764_576_000_000_000  # an hour start, µs


def file(first: int, last: int, hour: int = 0, incarnation: int = 0) -> ArchiveFile:
    return ArchiveFile("t", 3, incarnation, first, last, H0 + hour * H)


def hole(first: int, last: int, incarnation: int = 0) -> dict:
    return {"topic": "t", "partition": 3, "incarnation": incarnation, "first_offset": first, "last_offset": last}


def test_offsets_follow_each_other_in_each_incarnation() -> None:
    files = [file(0, 99), file(100, 199, hour=1), file(0, 49, incarnation=1)]  # a recreated topic: from 0 again
    verdict = audit.offset_continuity(3, files, [])
    assert verdict.passed and verdict.description == "partition 3: 250 records, no offset missing"
    assert verdict.values["first_offset"] == 0 and verdict.values["last_offset"] == 49  # the newest incarnation's
    assert audit.offset_continuity(3, [], []).passed


def test_a_range_removed_by_retention_fails_named_and_so_does_one_missing_for_no_reason() -> None:
    verdict = audit.offset_continuity(3, [file(0, 99), file(130, 199)], [hole(100, 129)])
    assert not verdict.passed
    assert verdict.description == (
        "partition 3 (incarnation 0): offsets 100-129 removed by Kafka's retention before the archive read them"
    )
    assert verdict.values["records_removed_unread"] == 30
    unexplained = audit.offset_continuity(3, [file(0, 99), file(110, 199)], [])
    assert unexplained.description == "partition 3 (incarnation 0): offsets 100-109 in no archive file"
    one = audit.offset_continuity(3, [file(0, 99), file(101, 199)], [])
    assert one.description == "partition 3 (incarnation 0): offset 100 in no archive file"
    overlapping = audit.offset_continuity(3, [file(0, 99), file(90, 199)], [])
    assert not overlapping.passed and "overlap at offsets 90-99" in overlapping.description


def test_changes_continue_their_books_except_where_a_marker_says_why(tmp_path: Path) -> None:
    stream = Stream(3)
    stream.snapshot("BTC-27JUN25-100000-C", 0, 10, bids=[("new", 0.01, 1.0)])
    stream.change("BTC-27JUN25-100000-C", 1, 11, 10, bids=[("change", 0.01, 2.0)])
    stream.gap("BTC-27JUN25-100000-C", 2, 15, 13, 11)  # marked: no break
    stream.snapshot("BTC-27JUN25-100000-C", 3, 16, reason="resync")
    stream.change("BTC-27JUN25-100000-C", 4, 18, 17)  # does not continue 16
    stream.marker("disconnect", "BTC-27JUN25-100000-C", 5, "connection dropped")
    stream.change("BTC-27JUN25-100000-C", 6, 19, 18)  # a change after a disconnect, without a snapshot
    store = ArchiveStore(tmp_path)
    stream.write(store, topic="t", per_file=3)
    verdict = audit.change_id_continuity(store, 3, store.live_files("t", 3))
    assert not verdict.passed
    assert verdict.description == (
        "partition 3: 2 changes do not continue their book: BTC-27JUN25-100000-C at offset 4: a change continuing "
        "change_id 17 after the book was at 16; BTC-27JUN25-100000-C at offset 6: a change continuing change_id 18 "
        "after a disconnect marker"
    )
    assert (verdict.values["records_checked"], verdict.values["gap_markers"], verdict.values["breaks"]) == (7, 1, 2)


def test_the_synthetic_market_continues_every_book(synthetic_archive: Archive) -> None:
    store = ArchiveStore(synthetic_archive.root)
    for partition in (0, 1):
        verdict = audit.change_id_continuity(store, partition, store.live_files("t", partition))
        assert verdict.passed, verdict.description
        assert verdict.values["records_checked"] > 100 and verdict.values["gap_markers"] > 0


def test_closed_hours_with_files_to_merge_fail_until_compacted(synthetic_archive: Archive, tmp_path: Path) -> None:
    shutil.copytree(synthetic_archive.root, tmp_path / "archive")
    store = ArchiveStore(tmp_path / "archive")  # written 40 records a file, never compacted
    files = store.live_files("t", 0)
    verdict = audit.compaction_state(0, files, open_hour(store, files), 2_000_000)
    assert not verdict.passed and verdict.description.startswith("partition 0: closed hours not compacted yet: ")
    assert "files in book/date=2025-12-01/hour=08" in verdict.description
    compact_partition(store, "t", 0, 2_000_000)
    files = store.live_files("t", 0)
    verdict = audit.compaction_state(0, files, open_hour(store, files), 2_000_000)
    assert verdict.passed and verdict.values["max_files_per_closed_hour"] == 1
    assert verdict.values["closed_hours"] == 3  # 08, 09 and 11 (10 had no record); 12 is open
