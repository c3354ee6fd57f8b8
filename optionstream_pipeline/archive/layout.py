"""Where each archive file lives and what its name says: the archive's only bookkeeping.

``<table>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<incarnation>+<first offset>-<last offset>.parquet``

``<table>`` is ``book`` for the book topic, ``ticker`` for the ticker topic: one schema per directory.

The directory is the UTC date and hour of the file's rows' ``book_time`` (Hive partitioning, which
DuckDB turns into ``date`` and ``hour`` columns that prune). The name says which Kafka records the
file holds, all of them, each exactly once: topic, partition, topic incarnation, and the first and
last offset (zero-padded, so names sort by offset). Progress is read from these names, never kept
elsewhere, so no crash can leave the bookkeeping and the data disagreeing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

TABLE = "book"
TICKER_TABLE = "ticker"
TABLES = (TABLE, TICKER_TABLE)
CHECKPOINTS = "checkpoints"  # derived from TABLE: the state of every book at each hour's start
SUFFIX = ".parquet"
TEMPORARY_PREFIX = "."  # a file being written: ".<name>.tmp", never read, removed by the next run
OFFSET_DIGITS = 20
_NAME = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<incarnation>\d+)\+(?P<first>\d+)-(?P<last>\d+)\.parquet$"
)
_CHECKPOINT_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<incarnation>\d+)\.parquet$")
_HOUR_DIR = re.compile(r"date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})$")
US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True, order=True, slots=True)
class ArchiveFile:
    """One Parquet file of the archive, as its path says."""

    topic: str
    partition: int
    incarnation: int
    first_offset: int
    last_offset: int
    hour_start_us: int  # the UTC hour of its rows' book_time (ticker_time), µs since the epoch
    table: str = TABLE  # the directory, and with it the schema: book or ticker

    @property
    def name(self) -> str:
        return (
            f"{self.topic}+{self.partition}+{self.incarnation}+"
            f"{self.first_offset:0{OFFSET_DIGITS}d}-{self.last_offset:0{OFFSET_DIGITS}d}{SUFFIX}"
        )

    @property
    def directory(self) -> str:
        return hour_directory(self.hour_start_us, self.table)

    @property
    def path(self) -> str:
        """Relative to the archive root."""
        return f"{self.directory}/{self.name}"

    @property
    def records(self) -> int:
        return self.last_offset - self.first_offset + 1

    def covers(self, other: ArchiveFile) -> bool:
        """Whether this file holds every record of ``other`` (a compacted file and its inputs)."""
        return (
            (self.topic, self.partition, self.incarnation) == (other.topic, other.partition, other.incarnation)
            and self.first_offset <= other.first_offset
            and other.last_offset <= self.last_offset
            and self != other
        )

    @classmethod
    def parse(cls, path: str) -> ArchiveFile | None:
        """The file a relative path names, or ``None`` for anything else (temporary, foreign)."""
        parsed = _parse(path, _NAME)
        if parsed is None:
            return None
        n, hour_start_us = parsed
        table = path.partition("/")[0]
        if table not in TABLES:
            return None
        return cls(
            n["topic"],
            int(n["partition"]),
            int(n["incarnation"]),
            int(n["first"]),
            int(n["last"]),
            hour_start_us,
            table,
        )


@dataclass(frozen=True, order=True, slots=True)
class CheckpointFile:
    """The checkpoint of one partition and incarnation at one hour boundary: the state of each of its
    books from its records with ``book_time`` before the boundary.

    ``checkpoints/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<incarnation>.parquet``
    """

    topic: str
    partition: int
    incarnation: int
    boundary_us: int  # the start of the hour it opens, µs since the epoch

    @property
    def path(self) -> str:
        directory = hour_directory(self.boundary_us, CHECKPOINTS)
        return f"{directory}/{self.topic}+{self.partition}+{self.incarnation}{SUFFIX}"

    @classmethod
    def parse(cls, path: str) -> CheckpointFile | None:
        parsed = _parse(path, _CHECKPOINT_NAME)
        if parsed is None:
            return None
        n, boundary_us = parsed
        return cls(n["topic"], int(n["partition"]), int(n["incarnation"]), boundary_us)


def _parse(path: str, pattern: re.Pattern[str]) -> tuple[re.Match[str], int] | None:
    """The name's fields and the hour its directory says, or ``None`` when either does not match."""
    directory, _, name = path.rpartition("/")
    name_match, dir_match = pattern.match(name), _HOUR_DIR.search(directory)
    if name_match is None or dir_match is None:
        return None
    return name_match, _hour_start_us(dir_match)


def _hour_start_us(match: re.Match[str]) -> int:
    hour = datetime.strptime(f"{match['date']} {match['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(hour.timestamp()) * 1_000_000


def hour_of(time_us: int) -> int:
    """The start of the UTC hour holding ``time_us`` (µs since the epoch)."""
    return time_us - time_us % US_PER_HOUR


def hour_directory(hour_start_us: int, table: str = TABLE) -> str:
    moment = datetime.fromtimestamp(hour_start_us / 1_000_000, UTC)
    return f"{table}/date={moment:%Y-%m-%d}/hour={moment:%H}"


def temporary_path(path: str) -> str:
    """Where the file at ``path`` is written before it is renamed into place (same directory)."""
    directory, _, name = path.rpartition("/")
    return f"{directory}/{TEMPORARY_PREFIX}{name}.tmp"
