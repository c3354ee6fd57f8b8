"""Book checkpoints: the state of every book of a partition at each hour boundary, derived from the archive.

Without them, the book of an instrument at T needs every row since its last snapshot, which for a
quiet book may be days back. With them, the book at T is the checkpoint at the start of T's hour plus
the rows of that hour up to T: never more than about an hour of data (as Tardis' book snapshots).

**What a checkpoint holds**, in the archive's own schema, for each instrument of the partition (and
topic incarnation) seen before the boundary, the rows that, read in place of all its earlier rows,
give the same book at any later time (the rules are :func:`state_sql`'s):

- its book, as the snapshot it started from: that snapshot's columns (the last snapshot, unless an
  ``unsubscribed`` marker came after it), with one row per level alive at the boundary, ``amount``
  its size then; a book with no level left keeps one row without a level;
- its last record, without levels, when that is not the snapshot (a change, a gap, a disconnect or
  an ``unsubscribed`` marker): what the book's reliability is judged on;
- its last change since the snapshot, without levels, when that is not the last record (a marker
  came after it): the book's ``change_id`` and exchange time, which a consumer continues from.

The rows keep their record's ``book_time``, incarnation and Kafka offset, so stream order holds
across a checkpoint and the rows after it.

**When**: the checkpoint at boundary B is written once the partition's archive holds a record with
``book_time`` at or after B: ``book_time`` never goes back within a partition, so the hour before B
is then closed. An incarnation the topic has since replaced gets one more, at the hour after its
last record. Every boundary gets one, empty hours included (then it equals the one before).

**Derived**: ``checkpoints/`` can always be rebuilt from ``book/`` (remove it; the next archive run
writes it again), and each checkpoint's footer says what it was derived from. It is built in DuckDB
with the same SQL as the book at T (:mod:`optionstream_pipeline.query.database`), so the two agree by
construction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime

import pyarrow as pa

from optionstream_pipeline.archive.layout import US_PER_HOUR, ArchiveFile, CheckpointFile, hour_of
from optionstream_pipeline.archive.schema import ARCHIVE_SCHEMA, COLUMNS, LEVEL_COLUMNS, RECORD_COLUMNS
from optionstream_pipeline.archive.store import ArchiveStore, sorted_rows

log = logging.getLogger(__name__)

# Stream order as one number: book_time, then topic incarnation, then Kafka offset (HUGEINT: 128 bits).
STREAM_ORDER = "((epoch_us(book_time)::HUGEINT << 64) + (topic_incarnation::HUGEINT << 48) + kafka_offset)"
COLUMN_LIST = ", ".join(f'"{name}"' for name, _, _ in COLUMNS)


def state_sql(source: str) -> str:
    """SQL giving the checkpoint rows (the module's docstring) of the archive rows ``source`` selects.

    ``source`` is any query with the archive's columns; its rows may themselves be checkpoint rows.
    Levels of a record apply in order (a level later in the same record wins).
    """
    record = "{" + ", ".join(f"'{name}': \"{name}\"" for name in RECORD_COLUMNS) + "}"
    alive_levels = {
        "side": "a.side",
        "price": "a.price",
        "amount": "a.amount",
        "action": "'new'",
        "level": "a.position::SMALLINT",
    }
    return f"""
WITH records AS (SELECT *, {STREAM_ORDER} AS seq FROM ({source})),
marks AS (
    SELECT symbol, max(seq) AS last_seq, arg_max({record}, seq) AS last,
           max(seq) FILTER (WHERE record_type = 'snapshot') AS snapshot_seq,
           arg_max({record}, seq) FILTER (WHERE record_type = 'snapshot') AS snapshot,
           max(seq) FILTER (WHERE record_type = 'change') AS change_seq,
           arg_max({record}, seq) FILTER (WHERE record_type = 'change') AS change,
           max(seq) FILTER (WHERE record_type = 'unsubscribed') AS unsubscribed_seq
    FROM records GROUP BY symbol
),
started AS (  -- a snapshot from before the instrument was last unsubscribed starts no book
    SELECT symbol, last_seq, last, change_seq, change,
           CASE WHEN unsubscribed_seq IS NULL OR snapshot_seq > unsubscribed_seq THEN snapshot_seq END AS snapshot_seq,
           CASE WHEN unsubscribed_seq IS NULL OR snapshot_seq > unsubscribed_seq THEN snapshot END AS snapshot
    FROM marks
),
books AS (  -- the last change counts only when it changed the current book
    SELECT symbol, last_seq, last, snapshot_seq, snapshot,
           CASE WHEN change_seq > snapshot_seq THEN change_seq END AS change_seq,
           CASE WHEN change_seq > snapshot_seq THEN change END AS change
    FROM started
),
levels AS (
    SELECT r.symbol, r.side, r.price, arg_max(r.amount, {{'s': r.seq, 'l': r.level}}) AS amount
    FROM records r JOIN books b ON r.symbol = b.symbol
    WHERE b.snapshot_seq IS NOT NULL AND r.seq >= b.snapshot_seq AND r.side IS NOT NULL
    GROUP BY ALL
),
alive AS (
    SELECT *, row_number() OVER (PARTITION BY symbol, side
                                 ORDER BY CASE WHEN side = 'bid' THEN -price ELSE price END) - 1 AS position
    FROM levels WHERE amount > 0
)
SELECT {_select("b.snapshot", alive_levels)} FROM books b JOIN alive a ON a.symbol = b.symbol
UNION ALL
SELECT {_select("b.snapshot")} FROM books b
WHERE b.snapshot_seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM alive a WHERE a.symbol = b.symbol)
UNION ALL
SELECT {_select("b.last")} FROM books b WHERE b.snapshot_seq IS NULL OR b.last_seq <> b.snapshot_seq
UNION ALL
SELECT {_select("b.change")} FROM books b WHERE b.change_seq IS NOT NULL AND b.change_seq <> b.last_seq
"""


def _select(head: str, levels: dict[str, str] | None = None) -> str:
    """The archive's columns: the record's from the struct ``head``, the level's from ``levels`` (or null)."""
    items = []
    for name, _, _ in COLUMNS:
        if name in LEVEL_COLUMNS:
            items.append(f'{levels[name] if levels else "NULL"} AS "{name}"')
        else:
            items.append(f'{head}."{name}" AS "{name}"')
    return ", ".join(items)


def build_checkpoints(store: ArchiveStore, topic: str, partition: int) -> list[CheckpointFile]:
    """Write the checkpoints one partition is missing (the caller holds its lock); returns them.

    Each continues from the latest checkpoint there is (or the incarnation's first hour) with the
    rows of the hour before it, so a run writes only the hours closed since the last.
    """
    by_incarnation: dict[int, list[ArchiveFile]] = defaultdict(list)
    for file in store.live_files(topic, partition):
        by_incarnation[file.incarnation].append(file)
    if not by_incarnation:
        return []
    newest = max(by_incarnation)
    written = []
    for incarnation, files in sorted(by_incarnation.items()):
        last_time = store.file_state(max(files, key=lambda f: f.last_offset)).book_time_us
        # The newest incarnation's last hour is still open; a replaced one's is closed.
        limit = hour_of(last_time) + (0 if incarnation == newest else US_PER_HOUR)
        existing = store.checkpoints(topic, partition, incarnation)
        previous = existing[-1] if existing else None
        boundary = (previous.boundary_us if previous else min(f.hour_start_us for f in files)) + US_PER_HOUR
        while boundary <= limit:
            hour = [file for file in files if file.hour_start_us == boundary - US_PER_HOUR]
            checkpoint = CheckpointFile(topic, partition, incarnation, boundary)
            table = derive_checkpoint(store, previous, hour)
            derived = {
                "kind": "checkpoint",
                "boundary": datetime.fromtimestamp(boundary / 1_000_000, UTC).isoformat(),
                "from": [file.path for file in ([previous] if previous else []) + hour],
            }
            store.write_checkpoint(checkpoint, table, derived)
            log.info("%s: %d books", checkpoint.path, len(set(table["symbol"].to_pylist())))
            written.append(checkpoint)
            previous, boundary = checkpoint, boundary + US_PER_HOUR
    return written


def derive_checkpoint(store: ArchiveStore, previous: CheckpointFile | None, hour: list[ArchiveFile]) -> pa.Table:
    """The checkpoint after ``hour``'s files, continuing from ``previous`` (pure but for reading)."""
    paths = [store.path(file) for file in ([previous] if previous else []) + hour]
    if not paths:
        return ARCHIVE_SCHEMA.empty_table()
    files = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
    source = f"SELECT {COLUMN_LIST} FROM read_parquet([{files}], hive_partitioning = false)"
    with store.duckdb() as connection:
        table = connection.sql(state_sql(source)).to_arrow_table()
    return sorted_rows(table.cast(ARCHIVE_SCHEMA))
