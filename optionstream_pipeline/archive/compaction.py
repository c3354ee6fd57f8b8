"""Compaction: once an hour of a partition is closed, its small files become one (or a few) large ones.

Runs archive each partition every few minutes, so an hour of one partition arrives as a dozen small
files. An hour is **closed** for a partition as soon as the partition's archive holds a record of a
later hour: ``book_time`` never goes back within a partition, so no record of that hour can come
after (no grace period is needed, and no late record can make a tiny file in a closed hour).

Compaction merges runs of consecutive files of a closed hour into files of at most
``archive.compacted_records_per_file`` records, each covering whole input files: it writes the merged
file (atomically, under the name of the offset range it covers), then removes its inputs. A crash
in between leaves inputs that another file covers: readers (the DuckDB views) skip them, and the next
run of the partition removes them (``ArchiveStore.remove_covered``). The rows are exactly the same
either way.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import pyarrow as pa

from optionstream_pipeline.archive.faults import COMPACTION_MID_REMOVE, COMPACTION_WRITTEN, crash_point
from optionstream_pipeline.archive.layout import ArchiveFile, hour_of
from optionstream_pipeline.archive.store import ArchiveStore

log = logging.getLogger(__name__)


@dataclass
class Compaction:
    """One merge: ``inputs`` replaced by ``output``."""

    inputs: list[ArchiveFile]
    output: ArchiveFile


def plan_compaction(files: list[ArchiveFile], open_hour_us: int | None, limit: int) -> list[Compaction]:
    """The merges to make among one partition's live files (pure).

    ``open_hour_us`` is the hour still being written in the newest incarnation (``None``: none).
    Consecutive files of one closed hour and incarnation are grouped while their records fit
    ``limit``; a group of one file is left as it is.
    """
    merges = []
    for (incarnation, hour), group in closed_hours(files, open_hour_us).items():
        batch: list[ArchiveFile] = []
        for file in [*group, None]:
            fits = file is not None and (not batch or sum(f.records for f in batch) + file.records <= limit)
            contiguous = file is not None and (not batch or file.first_offset == batch[-1].last_offset + 1)
            if fits and contiguous:
                batch.append(file)
                continue
            if len(batch) > 1:
                first, last = batch[0], batch[-1]
                output = ArchiveFile(
                    first.topic, first.partition, incarnation, first.first_offset, last.last_offset, hour, first.table
                )
                merges.append(Compaction(batch, output))
            batch = [file] if file is not None else []
    return merges


def closed_hours(files: list[ArchiveFile], open_hour_us: int | None) -> dict[tuple[int, int], list[ArchiveFile]]:
    """The files of each closed ``(incarnation, hour)``, in offset order (pure): every hour but the
    newest incarnation's from ``open_hour_us`` on (``None``: none is open)."""
    newest = max((file.incarnation for file in files), default=None)
    ordered = sorted(files, key=lambda f: (f.incarnation, f.hour_start_us, f.first_offset))
    return {
        key: list(group)
        for key, group in itertools.groupby(ordered, key=lambda f: (f.incarnation, f.hour_start_us))
        if not (key[0] == newest and open_hour_us is not None and key[1] >= open_hour_us)
    }


def open_hour(store: ArchiveStore, files: list[ArchiveFile]) -> int | None:
    """The hour the partition is still writing: that of the newest incarnation's last record."""
    if not files:
        return None
    newest = max(files, key=lambda f: (f.incarnation, f.last_offset))
    return hour_of(store.file_state(newest).book_time_us)


def compact_partition(store: ArchiveStore, topic: str, partition: int, limit: int) -> list[Compaction]:
    """Merge the closed hours of one partition (the caller holds its lock); returns what it merged."""
    files = store.live_files(topic, partition)
    merges = plan_compaction(files, open_hour(store, files), limit)
    for merge in merges:
        table = pa.concat_tables([store.read(file) for file in merge.inputs])
        store.write(merge.output, table, store.file_state(merge.inputs[-1]))
        crash_point(COMPACTION_WRITTEN)
        for file in merge.inputs:
            store.remove(file)
            crash_point(COMPACTION_MID_REMOVE)
        log.info("compacted %d files into %s", len(merge.inputs), merge.output.path)
    return merges
