"""The archive assets: the book topic's table and the ticker topic's, one partition key per Kafka
partition (the two topics have the same partitions), each archived on its own.

A materialization of key ``"3"`` runs :class:`~optionstream_pipeline.archive.partition.PartitionArchiver`
for Kafka partition 3: from where the archive ended to the end of the partition, exactly once. Keys
run in separate runs (the schedule launches one per key), so partitions archive in parallel and a
failing one holds back no other. The metadata says what the run wrote and what the partition holds.
"""

import time

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    TableColumn,
    TableSchema,
    asset,
)

from optionstream_pipeline.archive.partition import PartitionReport
from optionstream_pipeline.archive.run import archive_store, archived_tables, archiver
from optionstream_pipeline.archive.tables import BOOK, TICKER, Table
from optionstream_pipeline.config import Settings
from optionstream_pipeline.orchestration.assets.capture.topic import TOPIC_ASSET_KEY
from optionstream_pipeline.orchestration.resources import OptionStreamSettings

ARCHIVE_ASSET_KEY = AssetKey(["archive", "deribit_option_books"])
TICKER_ARCHIVE_ASSET_KEY = AssetKey(["archive", "deribit_option_tickers"])
PROGRESS_EVERY_S = 10.0
DESCRIPTIONS = {
    BOOK.name: "The book topic in Parquet (archive.path/book), exactly once: one row per price-level update, "
    "Hive-partitioned by date and hour. One partition key per Kafka partition; see docs/archive-schema.md.",
    TICKER.name: "The ticker topic in Parquet (archive.path/ticker), exactly once: one row per Deribit ticker "
    "(IVs, mark, greeks, underlying), Tardis options_chain columns; see docs/archive-schema.md.",
}


def column_schema(table: Table) -> TableSchema:
    """The table's columns as the Dagster UI shows them, from the Parquet schema's own descriptions."""
    return TableSchema(
        columns=[
            TableColumn(
                field.name,
                str(field.type.value_type if pa.types.is_dictionary(field.type) else field.type),
                description=field.metadata[b"description"].decode(),
            )
            for field in table.schema
        ]
    )


def kafka_partitions(partitions: int) -> StaticPartitionsDefinition:
    """One key per partition of the topic, from ``kafka.partitions``."""
    return StaticPartitionsDefinition([str(partition) for partition in range(partitions)])


def build_archive_asset(partitions: int, table: Table = BOOK) -> AssetsDefinition:
    """The archive asset of one table (``BOOK``: ``archive/deribit_option_books``; ``TICKER``: ``.._tickers``)."""

    @asset(
        key=ARCHIVE_ASSET_KEY if table is BOOK else TICKER_ARCHIVE_ASSET_KEY,
        partitions_def=kafka_partitions(partitions),
        deps=[TOPIC_ASSET_KEY],
        group_name="archive",
        kinds={"parquet"},
        description=DESCRIPTIONS[table.name],
    )
    def archive_asset(context: AssetExecutionContext, optionstream: OptionStreamSettings) -> MaterializeResult:
        settings = optionstream.settings()
        if table not in archived_tables(settings):
            context.log.info(f"{settings.kafka.ticker_topic} does not exist yet: nothing to archive")
            return MaterializeResult(metadata={"plan": MetadataValue.text("the ticker topic does not exist yet")})
        report = archiver(settings, int(context.partition_key), ProgressLog(context), table).run()
        context.log.info(
            f"{report.topic} partition {report.partition}: {report.records} records, {report.rows} rows in "
            f"{len(report.files)} files; {report.plan}"
        )
        if report.hole is not None:
            context.log.error(f"{report.topic} partition {report.partition}: {report.plan}")
        return MaterializeResult(metadata=archive_metadata(report, settings, table))

    return archive_asset


class ProgressLog:
    """Says how far the run is, every PROGRESS_EVERY_S: for people, and as the run's heartbeat."""

    def __init__(self, context: AssetExecutionContext) -> None:
        self.context = context
        self.said_at = time.monotonic()

    def __call__(self, report: PartitionReport) -> None:
        if time.monotonic() - self.said_at >= PROGRESS_EVERY_S:
            self.said_at = time.monotonic()
            lag = f"{report.lag:,} to go" if report.lag is not None else "end not known yet"
            self.context.log.info(f"partition {report.partition}: {report.records:,} records archived, {lag}")


def archive_metadata(report: PartitionReport, settings: Settings, table: Table = BOOK) -> dict[str, MetadataValue]:
    store = archive_store(settings)
    held = store.live_files(report.topic, report.partition)
    total_rows = sum(store.footer(file).num_rows for file in held)
    metadata: dict[str, MetadataValue] = {
        "dagster/row_count": MetadataValue.int(total_rows),
        "dagster/column_schema": MetadataValue.table_schema(column_schema(table)),
        "rows": MetadataValue.int(report.rows),
        "records": MetadataValue.int(report.records),
        "files": MetadataValue.int(len(report.files)),
        "bytes": MetadataValue.int(report.bytes),
        "files_held": MetadataValue.int(len(held)),
        "files_compacted": MetadataValue.int(report.compacted),
        "checkpoints_written": MetadataValue.int(report.checkpoints),
        "incarnation": MetadataValue.int(report.incarnation),
        "plan": MetadataValue.text(report.plan),
        "duration_s": MetadataValue.float(round(report.duration_s, 3)),
        "path": MetadataValue.path(f"{store.location}/{table.name}"),
    }
    if report.first_offset is not None:
        metadata["first_offset"] = MetadataValue.int(report.first_offset)
        metadata["last_offset"] = MetadataValue.int(report.last_offset)
    if report.lag is not None:
        metadata["lag"] = MetadataValue.int(report.lag)
    if report.hole is not None:
        metadata["hole"] = MetadataValue.text(f"offsets {report.hole[0]} to {report.hole[1]} removed unread")
    return metadata
