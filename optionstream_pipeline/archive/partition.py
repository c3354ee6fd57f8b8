"""Archive one Kafka partition: from where the archive ended to the end of the partition, exactly once.

One run: take the partition's lock, remove what a dead run left (temporary files, the inputs of a
compaction it finished), read the archive's progress from its files, probe Kafka there and
:func:`~optionstream_pipeline.archive.progress.plan`, then read to the end of the partition through
the shared :class:`~optionstream_pipeline.kafka.reader.TopicReader`, explode the records into rows
and write files; last, merge the small files of the hours now closed
(:mod:`~optionstream_pipeline.archive.compaction`) and write their book checkpoints
(:mod:`~optionstream_pipeline.archive.checkpoints`). A file ends where the hour of ``book_time`` changes, after
``archive.max_records_per_file`` records, or where the run ends: boundaries come from the records,
never from the wall clock, and each file is in place whole or not at all. Only then are the consumer
group's offsets committed, and only so that Kafka UI shows the archive's lag: progress is never read
back from the group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from optionstream_pipeline.archive.checkpoints import build_checkpoints
from optionstream_pipeline.archive.compaction import compact_partition
from optionstream_pipeline.archive.faults import BEFORE_COMMIT, crash_point
from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
from optionstream_pipeline.archive.progress import Fingerprint, Plan, Probe, plan
from optionstream_pipeline.archive.schema import book_times
from optionstream_pipeline.archive.store import ArchiveStore, FileState
from optionstream_pipeline.archive.tables import BOOK, Explode, Table
from optionstream_pipeline.config import ArchiveSettings
from optionstream_pipeline.kafka.reader import BEGINNING, TopicReader, TopicRecord

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 30.0


@dataclass
class PartitionReport:
    """What one run of one partition did (the Dagster asset turns it into metadata)."""

    topic: str
    partition: int
    incarnation: int = 0
    files: list[ArchiveFile] = field(default_factory=list)
    records: int = 0
    rows: int = 0
    bytes: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    end_offset: int | None = None  # the partition's end, as the latest fetch reported it
    read_offset: int | None = None  # the last offset read so far
    hole: tuple[int, int] | None = None
    new_incarnation: bool = False
    compacted: int = 0  # files of closed hours merged into larger ones
    checkpoints: int = 0  # book checkpoints written, one per hour boundary newly closed
    plan: str = ""
    duration_s: float = 0.0

    @property
    def lag(self) -> int | None:
        """Records in the partition not read yet (after the run: not archived yet)."""
        if self.end_offset is None:
            return None
        done = self.read_offset + 1 if self.read_offset is not None else self.end_offset
        return max(0, self.end_offset - done)


Progress = Callable[[PartitionReport], None]


class PartitionArchiver:
    """Archives one partition of ``topic`` into ``store``, into ``table`` (the book topic into ``book``,
    the ticker topic into ``ticker``)."""

    def __init__(
        self,
        store: ArchiveStore,
        connection: str | Mapping[str, Any],
        topic: str,
        partition: int,
        settings: ArchiveSettings,
        progress: Progress | None = None,
        table: Table = BOOK,
    ) -> None:
        self.table = table
        self.store = store
        store.table_of[topic] = table.name
        self.connection = connection
        self.topic = topic
        self.partition = partition
        self.settings = settings
        self.progress = progress

    def run(self) -> PartitionReport:
        began = time.monotonic()
        report = PartitionReport(self.topic, self.partition)
        with self.store.partition_lock(self.topic, self.partition):
            for leftover in self.store.remove_temporaries(self.topic, self.partition):
                log.warning("removed %s, left by a run that died while writing it", leftover)
            self.store.remove_covered(self.topic, self.partition)
            with TopicReader(
                self.connection,
                self.topic,
                {self.partition: BEGINNING},
                group_id=self.settings.group_id,
                records=self.table.name,
            ) as reader:
                decided = self._plan(reader)
                report.incarnation, report.plan, report.hole = decided.incarnation, decided.why, decided.hole
                report.new_incarnation = decided.incarnation > 0 and decided.start_offset is None
                if decided.hole is not None:
                    self.store.record_hole(self.topic, self.partition, decided.incarnation, *decided.hole, decided.why)
                    log.error("%s partition %d: %s", self.topic, self.partition, decided.why)
                elif report.new_incarnation:
                    log.warning("%s partition %d: %s", self.topic, self.partition, decided.why)
                self._archive(reader, decided, report)
                report.end_offset = reader.end_offset(self.partition)
                if report.last_offset is not None:
                    crash_point(BEFORE_COMMIT)
                    reader.commit({self.partition: report.last_offset + 1})
            merges = compact_partition(self.store, self.topic, self.partition, self.settings.compacted_records_per_file)
            report.compacted = sum(len(merge.inputs) for merge in merges)
            if self.table.checkpoints:
                report.checkpoints = len(build_checkpoints(self.store, self.topic, self.partition))
        report.duration_s = time.monotonic() - began
        return report

    # -- where to start -------------------------------------------------------------------------

    def _plan(self, reader: TopicReader) -> Plan:
        archived = self.store.archived(self.topic, self.partition)
        if archived is None:
            return plan(None, None)
        reader.seek(self.partition, archived.last.offset)
        first = self._first_record(reader, archived.last.offset)
        decided = plan(archived, Probe(first, reader.end_offset(self.partition)))
        # The probe read on: go back to where the plan says (after the archived record, or from the start).
        start = decided.start_offset + 1 if decided.skip_first else decided.start_offset
        reader.seek(self.partition, BEGINNING if start is None else start)
        return decided

    def _first_record(self, reader: TopicReader, offset: int) -> TopicRecord | None:
        """The first record from ``offset`` on, or ``None`` when the partition ends first: at its end,
        or, past it, when the fetch reports an end before ``offset`` (a broker may then send neither
        records nor an end-of-partition event)."""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            batch = reader.poll()
            if batch:
                return batch[0]
            if reader.at_end(self.partition) or 0 <= reader.end_offset(self.partition) <= offset:
                return None
        raise TimeoutError(f"{self.topic} partition {self.partition}: no answer from offset {offset} "
                           f"within {PROBE_TIMEOUT_S:g} s")  # fmt: skip

    # -- reading and writing --------------------------------------------------------------------

    def _archive(self, reader: TopicReader, decided: Plan, report: PartitionReport) -> None:
        chunk = _Chunk(decided.incarnation, decided.book_time_us, self.table.explode)
        for batch in reader.batches_to_end(self.settings.read_timeout_s):
            position = 0
            while position < len(batch):
                taken = chunk.take(batch, position, self.settings.max_records_per_file)
                position += taken
                if position < len(batch) or chunk.full(self.settings.max_records_per_file):
                    self._flush(chunk, report)
                    chunk = chunk.next()
            report.read_offset = batch[-1].offset
            report.end_offset = reader.end_offset(self.partition)
            if self.progress is not None:
                self.progress(report)
        self._flush(chunk, report)

    def _flush(self, chunk: _Chunk, report: PartitionReport) -> None:
        if chunk.first is None or chunk.last is None:
            return
        first, last = chunk.first, chunk.last
        file = ArchiveFile(
            self.topic, self.partition, chunk.incarnation, first.offset, last.offset, chunk.hour_us, self.table.name
        )
        table = pa.concat_tables(chunk.tables)
        size = self.store.write(file, table, FileState(chunk.book_time_us, Fingerprint.of(last)))
        report.files.append(file)
        report.records += chunk.records
        report.rows += table.num_rows
        report.bytes += size
        report.first_offset = first.offset if report.first_offset is None else report.first_offset
        report.last_offset = last.offset
        log.info("%s: %d records, %d rows, %d bytes", file.path, chunk.records, table.num_rows, size)


@dataclass
class _Chunk:
    """The file being gathered: one hour of book_time, at most N records.

    It keeps the records' rows (Arrow tables) and its first and last record, never the decoded
    records themselves: a file holds up to ``archive.max_records_per_file`` of them, and keeping
    them alive made the garbage collector walk every one of their level lists again and again
    (a fifth of the archive's CPU).
    """

    incarnation: int
    book_time_us: int  # the partition's latest book_time (ticker_time), after the chunk's records
    explode: Explode
    hour_us: int | None = None
    records: int = 0
    first: TopicRecord | None = None
    last: TopicRecord | None = None
    tables: list[pa.Table] = field(default_factory=list)

    def take(self, batch: list[TopicRecord], start: int, limit: int) -> int:
        """Add records of ``batch`` from ``start`` while they fit; returns how many were added."""
        times = book_times(batch[start:], self.book_time_us)
        room = limit - self.records
        count = 0
        for time_us in times[:room]:
            hour = hour_of(time_us)
            if self.hour_us is None:
                self.hour_us = hour
            elif hour != self.hour_us:
                break
            count += 1
        if count:
            taken = batch[start : start + count]
            if self.first is None:
                self.first = taken[0]
            self.last = taken[-1]
            self.records += count
            self.tables.append(self.explode(taken, times[:count], self.incarnation))
            self.book_time_us = times[count - 1]
        return count

    def full(self, limit: int) -> bool:
        return self.records >= limit

    def next(self) -> _Chunk:
        return _Chunk(self.incarnation, self.book_time_us, self.explode)
