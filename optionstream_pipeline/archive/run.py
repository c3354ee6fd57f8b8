"""Archive the whole topic: every partition once (``archive_topic``), or again and again (``follow``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from optionstream_pipeline.archive.partition import PartitionArchiver, PartitionReport, Progress
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.archive.tables import BOOK, TICKER, Table
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.admin import topic_partitions
from optionstream_pipeline.kafka.producer import producer_config

log = logging.getLogger(__name__)


def archive_store(settings: Settings) -> ArchiveStore:
    return ArchiveStore(settings.archive.path, settings.archive.row_group_rows, settings.archive.lease_s)


def archiver(
    settings: Settings, partition: int, progress: Progress | None = None, table: Table = BOOK
) -> PartitionArchiver:
    """The archiver of one partition of the configured book (or ticker) topic, with the configured connection."""
    connection = producer_config(settings.kafka, settings.kafka_secrets())
    topic = settings.kafka.topic if table is BOOK else settings.kafka.ticker_topic
    return PartitionArchiver(archive_store(settings), connection, topic, partition, settings.archive, progress, table)


def archive_topic(
    settings: Settings, partitions: Iterable[int] | None = None, progress: Progress | None = None
) -> list[PartitionReport]:
    """One pass: each partition from where the archive ended to its end, one after the other; the
    ticker topic's partition of the same number after the book topic's, when tickers are captured."""
    if partitions is None:
        connection = producer_config(settings.kafka, settings.kafka_secrets())
        partitions = topic_partitions(connection, settings.kafka.topic, settings.kafka.admin_timeout_s)
    tables = archived_tables(settings)
    return [archiver(settings, partition, progress, table).run() for partition in partitions for table in tables]


def archived_tables(settings: Settings) -> list[Table]:
    """The book table, and the ticker table once its topic exists (capture creates it when
    ``deribit.tickers`` is on): an archive of books captured without tickers is not held up."""
    if not settings.deribit.tickers:
        return [BOOK]
    connection = producer_config(settings.kafka, settings.kafka_secrets())
    try:
        topic_partitions(connection, settings.kafka.ticker_topic, settings.kafka.admin_timeout_s)
    except LookupError:
        log.info("ticker topic %s does not exist (yet): archiving books only", settings.kafka.ticker_topic)
        return [BOOK]
    return [BOOK, TICKER]


def follow(
    settings: Settings,
    stop: threading.Event,
    partitions: Iterable[int] | None = None,
    progress: Progress | None = None,
) -> int:
    """Pass after pass, ``archive.follow_interval_s`` apart, until ``stop``; returns the passes made."""
    passes = 0
    while not stop.is_set():
        archive_topic(settings, partitions, progress)
        passes += 1
        stop.wait(settings.archive.follow_interval_s)
    return passes
