"""Which files a compaction merges (pure), and a compaction on disk: the same rows, in fewer files."""

from __future__ import annotations

from pathlib import Path

from optionstream_pipeline.archive.compaction import compact_partition, plan_compaction
from optionstream_pipeline.archive.layout import ArchiveFile
from optionstream_pipeline.archive.progress import Fingerprint
from optionstream_pipeline.archive.schema import book_times, explode
from optionstream_pipeline.archive.store import ArchiveStore, FileState
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records.book import decode_record
from optionstream_pipeline_tests.archive.conftest import archive_rows, topic_values

H = 3_600_000_000
H0 = 1_764_576_000_000_000  # an hour start, µs


def file(first: int, last: int, hour: int = 0, incarnation: int = 0) -> ArchiveFile:
    return ArchiveFile("t", 0, incarnation, first, last, H0 + hour * H)


def test_only_closed_hours_merge_and_only_consecutive_whole_files_within_the_limit() -> None:
    files = [file(0, 9), file(10, 19), file(20, 29), file(30, 39, hour=1), file(40, 49, hour=1)]
    [merge] = plan_compaction(files, open_hour_us=H0 + H, limit=1000)  # hour 1 is still being written
    assert (merge.inputs, merge.output) == (files[:3], file(0, 29))
    merges = plan_compaction(files[:3], open_hour_us=H0 + 2 * H, limit=20)
    assert [(m.inputs, m.output) for m in merges] == [(files[:2], file(0, 19))]  # the third does not fit
    assert plan_compaction([file(0, 9), file(20, 29)], H0 + H, 1000) == []  # a hole between: never across it
    assert plan_compaction([file(0, 99)], H0 + H, 1000) == []  # one file is left as it is


def test_an_older_incarnation_is_closed_whole() -> None:
    old = [file(0, 9, hour=5), file(10, 19, hour=5)]
    new = [file(0, 4, hour=5, incarnation=1), file(5, 9, hour=5, incarnation=1)]
    [merge] = plan_compaction(old + new, open_hour_us=H0 + 5 * H, limit=1000)
    assert merge.output == file(0, 19, hour=5)  # the new incarnation's hour 5 is still open


def test_a_compaction_keeps_every_row_and_leaves_one_file_per_closed_hour(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    messages = [
        TopicRecord(0, offset, timestamp, key, value, decode_record(value))
        for offset, (key, value, timestamp) in enumerate(topic_values(3_000))
    ]
    times = book_times(messages, 0)
    for start in range(0, len(messages), 100):  # as runs every few minutes would leave them
        chunk, chunk_times = messages[start : start + 100], times[start : start + 100]
        hours = {t - t % H for t in chunk_times}
        for hour in sorted(hours):
            part = [m for m, t in zip(chunk, chunk_times, strict=True) if t - t % H == hour]
            part_times = [t for t in chunk_times if t - t % H == hour]
            target = ArchiveFile("t", 0, 0, part[0].offset, part[-1].offset, hour)
            store.write(target, explode(part, part_times, 0), FileState(part_times[-1], Fingerprint.of(part[-1])))
    before = archive_rows(store)
    closed = sorted({f.hour_start_us for f in store.files()})[:-1]
    merges = compact_partition(store, "t", 0, limit=10_000)
    assert merges and archive_rows(store) == before
    for hour in closed:
        assert len([f for f in store.files() if f.hour_start_us == hour]) == 1
    assert len([f for f in store.files() if f.hour_start_us not in closed]) > 1  # the open hour is left
    assert compact_partition(store, "t", 0, limit=10_000) == []  # nothing more to do
