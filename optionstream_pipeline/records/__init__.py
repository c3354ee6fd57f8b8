"""The records OptionStream publishes, as typed msgspec structs: encoded by capture, decoded by every consumer.

:mod:`.book` is the book record of the live topic (schema ``schemas/book-record.schema.json``).
"""

from optionstream_pipeline.records.book import (
    RECORD_TYPES,
    SCHEMA_VERSION,
    SNAPSHOT_REASONS,
    BookRecord,
    CaptureMeta,
    Change,
    Disconnect,
    Gap,
    Level,
    RecordError,
    Snapshot,
    Unsubscribed,
    decode_record,
)

__all__ = [
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "SNAPSHOT_REASONS",
    "BookRecord",
    "CaptureMeta",
    "Change",
    "Disconnect",
    "Gap",
    "Level",
    "RecordError",
    "Snapshot",
    "Unsubscribed",
    "decode_record",
]
