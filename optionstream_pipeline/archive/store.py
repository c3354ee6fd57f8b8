"""The archive's files: atomic writes, the files a partition holds, and one writer per partition.

A file is put in place whole or not at all (:mod:`optionstream_pipeline.archive.storage` says how,
on a local directory and on object storage): a reader, and the next run, see the whole file or
nothing. A crash leaves at most a temporary file (local only), which the next run of that partition
removes.

Two runs of one partition at once cannot both write: each holds the partition's exclusive lock
(``_locks/<topic>+<partition>.lock``: a ``flock`` locally, a lease on object storage) while it runs;
the second is refused, naming the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from optionstream_pipeline.archive import storage
from optionstream_pipeline.archive.faults import crash_point
from optionstream_pipeline.archive.layout import CHECKPOINTS, TABLES, TEMPORARY_PREFIX, ArchiveFile, CheckpointFile
from optionstream_pipeline.archive.progress import Archived, Fingerprint
from optionstream_pipeline.archive.schema import session_ends
from optionstream_pipeline.archive.tables import BOOK, BY_NAME, Table

FORMAT_KEY = b"optionstream.archive"
FORMAT_VERSION = b"1"
STATE_KEY = b"optionstream.state"  # JSON: the partition's book_time and last record, as of this file
SESSIONS_KEY = b"optionstream.sessions"  # JSON: {capture id: its latest book_time (µs) in this file}
DERIVED_KEY = b"optionstream.derived"  # JSON, on a checkpoint: what it was derived from
LOCKS = "_locks"
HOLES = "holes"


class ArchiveError(RuntimeError):
    """The archive cannot be used as it is; the message names the file and what is wrong."""


class PartitionBusy(ArchiveError):
    """Another run holds the partition."""


@dataclass(frozen=True)
class FileState:
    """What a file's footer says about the partition after its last record."""

    book_time_us: int
    last: Fingerprint

    def to_json(self) -> bytes:
        return json.dumps({"book_time_us": self.book_time_us, "last": dataclasses.asdict(self.last)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FileState:
        value = json.loads(data)
        return cls(int(value["book_time_us"]), Fingerprint(**value["last"]))


class ArchiveStore:
    """The archive under one location: a local directory or ``s3://bucket/prefix``."""

    def __init__(
        self, root: str | Path, row_group_rows: int = 131_072, lease_s: float = storage.DEFAULT_LEASE_S
    ) -> None:
        self.storage = storage.storage_for(root, lease_s)
        self.location = self.storage.location
        self.row_group_rows = row_group_rows
        self.table_of: dict[str, str] = {}  # topic -> its table, once an archiver said: one listing, not two

    # -- reading ------------------------------------------------------------------------------

    def files(self, topic: str | None = None, partition: int | None = None) -> list[ArchiveFile]:
        """Every archive file of every table (of one topic and partition), by offset; temporary files left out."""
        found = []
        tables = [self.table_of[topic]] if topic in self.table_of else TABLES
        for path in (path for table in tables for path in self.storage.list(table)):
            file = ArchiveFile.parse(path)
            if file is None:
                continue
            if (topic is None or file.topic == topic) and (partition is None or file.partition == partition):
                found.append(file)
        return sorted(found, key=lambda f: (f.topic, f.partition, f.incarnation, f.first_offset, -f.last_offset))

    def live_files(self, topic: str | None = None, partition: int | None = None) -> list[ArchiveFile]:
        """:meth:`files` without those another file covers (inputs of a compaction not yet removed)."""
        files = self.files(topic, partition)
        return [file for file in files if not any(other.covers(file) for other in files)]

    def archived(self, topic: str, partition: int) -> Archived | None:
        """The partition's progress: its newest incarnation and last file, or ``None`` if it has none."""
        files = self.live_files(topic, partition)
        if not files:
            return None
        newest = max(files, key=lambda f: (f.incarnation, f.last_offset))
        state = self.file_state(newest)
        return Archived(newest.incarnation, newest.last_offset + 1, state.last, state.book_time_us)

    def file_state(self, file: ArchiveFile) -> FileState:
        metadata = self.footer(file).metadata or {}
        if metadata.get(FORMAT_KEY) != FORMAT_VERSION or STATE_KEY not in metadata:
            raise ArchiveError(f"{self.path(file)}: not an OptionStream archive file (no {FORMAT_KEY.decode()})")
        return FileState.from_json(metadata[STATE_KEY])

    def read(self, file: ArchiveFile | CheckpointFile) -> pa.Table:
        try:
            return pq.read_table(
                self.storage.arrow_path(file.path), schema=_table_of(file).schema, filesystem=self.storage.arrow
            )
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveError(f"{self.path(file)}: cannot be read as an archive file: {exc}") from None

    def footer(self, file: ArchiveFile | CheckpointFile) -> pq.FileMetaData:
        try:
            return pq.read_metadata(self.storage.arrow_path(file.path), filesystem=self.storage.arrow)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveError(f"{self.path(file)}: cannot be read as a Parquet file: {exc}") from None

    def path(self, file: ArchiveFile | CheckpointFile) -> str:
        """Where the file is, for DuckDB (on a connection from :meth:`duckdb`) and for messages."""
        return self.storage.uri(file.path)

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection, in UTC, that can read the archive's files."""
        connection = duckdb.connect()
        connection.execute("SET TimeZone = 'UTC'")
        self.storage.register(connection)
        return connection

    # -- writing ------------------------------------------------------------------------------

    def write(self, file: ArchiveFile, table: pa.Table, state: FileState) -> int:
        """Write ``file`` atomically, rows sorted for per-instrument scans; returns its size in bytes."""
        spec = _table_of(file)
        metadata = {
            FORMAT_KEY: FORMAT_VERSION,
            STATE_KEY: state.to_json(),
            SESSIONS_KEY: json.dumps(session_ends(table, spec.time_column)).encode(),
        }
        return self._write_parquet(file.path, sorted_rows(table, spec), metadata, spec, crash_points=True)

    def _write_parquet(
        self, path: str, table: pa.Table, metadata: dict[bytes, bytes], spec: Table, crash_points: bool = False
    ) -> int:
        table = table.replace_schema_metadata({**(spec.schema.metadata or {}), **metadata})
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            compression="zstd",
            row_group_size=self.row_group_rows,
            use_dictionary=spec.dictionary_columns,
            column_encoding=spec.delta_encoded,
            write_statistics=True,
        )
        data = sink.getvalue().to_pybytes()
        self._put(path, data, crash_points)
        return len(data)

    def _put(self, path: str, data: bytes, crash_points: bool = False) -> None:
        try:
            self.storage.put(path, data, crash_point if crash_points else None)
        except storage.LeaseLost as exc:
            raise PartitionBusy(f"stopped before writing {path}: {exc}") from None

    def remove(self, file: ArchiveFile) -> None:
        self.storage.remove(file.path)

    def remove_temporaries(self, topic: str, partition: int) -> list[str]:
        """The leftovers of runs that died mid-write (the caller holds the partition's lock)."""
        prefix = f"{TEMPORARY_PREFIX}{topic}+{partition}+"
        leftovers = [
            path
            for table in ((self.table_of[topic],) if topic in self.table_of else TABLES) + (CHECKPOINTS,)
            for path in self.storage.list(table)
            if path.rpartition("/")[2].startswith(prefix) and path.endswith(".tmp")
        ]
        for path in leftovers:
            self.storage.remove(path)
        return leftovers

    def remove_covered(self, topic: str, partition: int) -> list[ArchiveFile]:
        """Files another file covers: what a compaction that died before its clean-up left."""
        files = self.files(topic, partition)
        covered = [file for file in files if any(other.covers(file) for other in files)]
        for file in covered:
            self.remove(file)
        return covered

    # -- checkpoints (derived) -----------------------------------------------------------------

    def checkpoints(self, topic: str, partition: int, incarnation: int) -> list[CheckpointFile]:
        """The checkpoints of one partition's incarnation, by boundary."""
        found = []
        for path in self.storage.list(CHECKPOINTS):
            checkpoint = CheckpointFile.parse(path)
            if checkpoint is not None and (checkpoint.topic, checkpoint.partition, checkpoint.incarnation) == (
                topic,
                partition,
                incarnation,
            ):
                found.append(checkpoint)
        return sorted(found, key=lambda c: c.boundary_us)

    def write_checkpoint(self, checkpoint: CheckpointFile, table: pa.Table, derived: dict[str, Any]) -> int:
        """Write a checkpoint atomically; ``derived`` (kept in its footer) says what it came from."""
        metadata = {FORMAT_KEY: FORMAT_VERSION, DERIVED_KEY: json.dumps(derived).encode()}
        return self._write_parquet(checkpoint.path, table, metadata, BOOK)

    # -- holes --------------------------------------------------------------------------------

    def record_hole(self, topic: str, partition: int, incarnation: int, first: int, last: int, why: str) -> str:
        path = f"{HOLES}/{topic}+{partition}+{incarnation}+{first}-{last}.json"
        document = {"topic": topic, "partition": partition, "incarnation": incarnation, "first_offset": first,
                    "last_offset": last, "why": why}  # fmt: skip
        self._put(path, json.dumps(document, indent=1).encode())
        return self.storage.uri(path)

    def holes(self) -> list[dict[str, Any]]:
        return [
            json.loads(self.storage.read_bytes(path)) for path in self.storage.list(HOLES) if path.endswith(".json")
        ]

    # -- one writer per partition -------------------------------------------------------------

    @contextlib.contextmanager
    def partition_lock(self, topic: str, partition: int) -> Iterator[None]:
        name = f"{topic}+{partition}"
        with contextlib.ExitStack() as held_lock:
            try:
                held_lock.enter_context(self.storage.lock(f"{LOCKS}/{name}.lock"))
            except storage.LockHeld as held:
                raise PartitionBusy(f"{name} is being archived by another run ({held.holder})") from None
            yield


def sorted_rows(table: pa.Table, spec: Table = BOOK) -> pa.Table:
    """The rows by instrument, then Kafka offset (then, in the book table, side and level: Arrow sorts
    no dictionary column, so the keys are sorted as plain values), with one dictionary per column."""
    keys = pa.table(
        {name: table[name].cast(pa.string()) if pa.types.is_dictionary(table[name].type) else table[name]
         for name, _ in spec.sort_keys}
    )  # fmt: skip
    return table.take(pc.sort_indices(keys, sort_keys=spec.sort_keys)).unify_dictionaries().combine_chunks()


def _table_of(file: ArchiveFile | CheckpointFile) -> Table:
    """A checkpoint holds book rows; an archive file, its directory's table's."""
    return BY_NAME[file.table] if isinstance(file, ArchiveFile) else BOOK
