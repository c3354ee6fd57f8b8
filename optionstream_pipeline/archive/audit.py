"""Audits of one partition's archive: what the archive asset's checks report (no Dagster here).

- :func:`offset_continuity`: each topic incarnation's files follow each other offset after offset.
  A range no file holds is named: removed by Kafka's retention before the archive read it (a hole
  the archive recorded when it found it), or missing for no known reason. Either fails, for as long
  as the archive lacks those records.
- :func:`change_id_continuity`: every ``change`` continues its book: its ``prev_change_id`` is the
  ``change_id`` of the instrument's record before it, a snapshot or a change. A marker (gap,
  disconnect, unsubscribed) says why a book broke; the next record after one must be a snapshot.
- :func:`compaction_state`: no closed hour still has files that compaction would merge, so that
  a closed hour holds as few files as its records need (one per ``archive.compacted_records_per_file``).

The same shape as the capture health rules: each returns a :class:`Verdict` with the figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optionstream_pipeline.archive.compaction import closed_hours, plan_compaction
from optionstream_pipeline.archive.layout import US_PER_HOUR, ArchiveFile
from optionstream_pipeline.archive.store import ArchiveStore

CONTINUITY_HOURS = 24  # change_id continuity is checked over the partition's last day of book_time
SHOWN = 5  # examples named in a description


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    values: dict[str, int | float | str] = field(default_factory=dict)


def offset_continuity(partition: int, files: list[ArchiveFile], holes: Iterable[dict[str, Any]]) -> Verdict:
    """Files of one partition (live ones) against the holes recorded for it (pure)."""
    recorded = sorted((hole["incarnation"], hole["first_offset"], hole["last_offset"]) for hole in holes)
    problems = [f"partition {partition} (incarnation {incarnation}): {_offsets(first, last)} removed by Kafka's "
                f"retention before the archive read them" for incarnation, first, last in recorded]  # fmt: skip
    known = {(incarnation, first) for incarnation, first, _ in recorded}
    ordered = sorted(files, key=lambda f: (f.incarnation, f.first_offset))
    for incarnation, group in itertools.groupby(ordered, key=lambda f: f.incarnation):
        for before, after in itertools.pairwise(group):
            expected = before.last_offset + 1
            if after.first_offset < expected:
                problems.append(f"{before.path} and {after.path} overlap at offsets {after.first_offset}-"
                                f"{min(before.last_offset, after.last_offset)}")  # fmt: skip
            elif after.first_offset > expected and (incarnation, expected) not in known:
                problems.append(f"partition {partition} (incarnation {incarnation}): "
                                f"{_offsets(expected, after.first_offset - 1)} in no archive file")  # fmt: skip
    values: dict[str, int | float | str] = {
        "files": len(files),
        "incarnations": len({file.incarnation for file in files}),
        "records": sum(file.records for file in files),
        "records_removed_unread": sum(last - first + 1 for _, first, last in recorded),
    }
    if files:
        newest = max(file.incarnation for file in files)
        current = [file for file in files if file.incarnation == newest]
        values["first_offset"] = min(file.first_offset for file in current)
        values["last_offset"] = max(file.last_offset for file in current)
    if problems:
        return Verdict(False, _listed(problems), values)
    if not files:
        return Verdict(True, f"partition {partition} has no archived record yet", values)
    return Verdict(True, f"partition {partition}: {values['records']:,} records, no offset missing", values)


# One row per record of the files read (a record's rows share its offset), in stream order per instrument.
_BREAKS = """
WITH records AS (
    SELECT symbol, topic_incarnation, kafka_offset, any_value(record_type) AS record_type,
           any_value(change_id) AS change_id, any_value(prev_change_id) AS prev_change_id
    FROM read_parquet($files, hive_partitioning = false) GROUP BY ALL
),
paired AS (
    SELECT *, lag(record_type) OVER earlier AS before_type, lag(change_id) OVER earlier AS before_change_id
    FROM records WINDOW earlier AS (PARTITION BY symbol, topic_incarnation ORDER BY kafka_offset)
)
SELECT count(*) AS records, count(DISTINCT symbol) AS instruments,
       count(*) FILTER (WHERE record_type = 'gap') AS gaps,
       list({'symbol': symbol, 'offset': kafka_offset, 'prev': prev_change_id, 'before_type': before_type,
             'before': before_change_id} ORDER BY kafka_offset)
           FILTER (WHERE record_type = 'change' AND before_type IS NOT NULL
                   AND (before_type NOT IN ('snapshot', 'change') OR prev_change_id <> before_change_id)) AS breaks
FROM paired
"""


def change_id_continuity(store: ArchiveStore, partition: int, files: list[ArchiveFile]) -> Verdict:
    """Over the files of the partition's last :data:`CONTINUITY_HOURS` hours of ``book_time``."""
    if not files:
        return Verdict(True, f"partition {partition} has no archived record yet")
    newest = max(file.hour_start_us for file in files)
    since = newest - (CONTINUITY_HOURS - 1) * US_PER_HOUR
    recent = [store.path(file) for file in files if file.hour_start_us >= since]
    with store.duckdb() as connection:
        [(records, instruments, gaps, breaks)] = connection.execute(_BREAKS, {"files": recent}).fetchall()
    breaks = breaks or []
    values: dict[str, int | float | str] = {
        "records_checked": records,
        "instruments": instruments,
        "gap_markers": gaps,
        "breaks": len(breaks),
        "since": datetime.fromtimestamp(since / 1_000_000, UTC).isoformat(),
    }
    if breaks:
        described = [f"{b['symbol']} at offset {b['offset']}: a change continuing change_id {b['prev']} "
                     f"after {_before(b)}" for b in breaks]  # fmt: skip
        return Verdict(False, f"partition {partition}: {len(breaks)} changes do not continue their book: "
                       + _listed(described), values)  # fmt: skip
    return Verdict(True, f"partition {partition}: {records:,} records of {instruments} instruments continue "
                   f"their books ({gaps} gaps, each marked)", values)  # fmt: skip


def compaction_state(partition: int, files: list[ArchiveFile], open_hour_us: int | None, limit: int) -> Verdict:
    """Closed hours against compaction's plan for them (pure)."""
    per_hour = {key: len(group) for key, group in closed_hours(files, open_hour_us).items()}
    values: dict[str, int | float | str] = {
        "closed_hours": len(per_hour),
        "max_files_per_closed_hour": max(per_hour.values(), default=0),
        "files_in_closed_hours": sum(per_hour.values()),
    }
    pending = plan_compaction(files, open_hour_us, limit)
    if pending:
        named = [f"{len(merge.inputs)} files in {merge.output.directory}" for merge in pending]
        return Verdict(False, f"partition {partition}: closed hours not compacted yet: {_listed(named)}", values)
    return Verdict(True, f"partition {partition}: {len(per_hour)} closed hours, at most "
                   f"{values['max_files_per_closed_hour']} files each", values)  # fmt: skip


def _offsets(first: int, last: int) -> str:
    return f"offset {first}" if first == last else f"offsets {first}-{last}"


def _before(broken: dict[str, Any]) -> str:
    if broken["before_type"] in ("snapshot", "change"):
        return f"the book was at {broken['before']}"
    return f"a {broken['before_type']} marker"


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:SHOWN])
    return shown + (f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
