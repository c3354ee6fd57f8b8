"""The archive's tables: what differs between the book table and the ticker table, in one place.

Everything else (files and their names, exactly-once progress, locks, compaction, the DuckDB views'
file handling) is one code path for both: a table is a directory with its own schema, the rule that
turns records into rows, the sort order within a file and the column of its time axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from optionstream_pipeline.archive import schema, ticker_schema
from optionstream_pipeline.archive.layout import TABLE, TICKER_TABLE
from optionstream_pipeline.kafka.reader import TopicRecord

Explode = Callable[[Sequence[TopicRecord], Sequence[int], int], pa.Table]


@dataclass(frozen=True)
class Table:
    name: str  # its directory, and the kind of record its topic holds (kafka.reader.DECODERS)
    schema: pa.Schema
    explode: Explode
    sort_keys: list[tuple[str, str]]
    time_column: str  # never goes back within a Kafka partition: files and hours split on it
    checkpoints: bool  # book states at hour boundaries (book only: a ticker is whole in itself)

    @property
    def dictionary_columns(self) -> list[str]:
        return [field.name for field in self.schema if pa.types.is_dictionary(field.type)]

    @property
    def delta_encoded(self) -> dict[str, str]:
        """Integers and timestamps rise within an instrument's rows (the sort order), so their deltas are
        small: delta encoding halves a book file against dictionaries that overflow."""
        return {
            field.name: "DELTA_BINARY_PACKED"
            for field in self.schema
            if pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)
        }


BOOK = Table(TABLE, schema.ARCHIVE_SCHEMA, schema.explode, schema.SORT_KEYS, "book_time", checkpoints=True)
TICKER = Table(
    TICKER_TABLE,
    ticker_schema.TICKER_SCHEMA,
    ticker_schema.explode,
    ticker_schema.SORT_KEYS,
    ticker_schema.TIME_COLUMN,
    checkpoints=False,
)
BY_NAME = {table.name: table for table in (BOOK, TICKER)}
