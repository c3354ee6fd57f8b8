"""Archive the whole topic: every partition once (``archive_topic``), or again and again (``follow``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from optionstream_pipeline.archive.partition import PartitionArchiver, PartitionReport, Progress
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.config import Settings
from optionstream_pipeline.kafka.admin import topic_partitions
from optionstream_pipeline.kafka.producer import producer_config

log = logging.getLogger(__name__)


def archive_store(settings: Settings) -> ArchiveStore:
    return ArchiveStore(settings.archive.path, settings.archive.row_group_rows, settings.archive.lease_s)


def archiver(settings: Settings, partition: int, progress: Progress | None = None) -> PartitionArchiver:
    """The archiver of one partition of the configured topic, with the configured connection."""
    connection = producer_config(settings.kafka, settings.kafka_secrets())
    return PartitionArchiver(
        archive_store(settings), connection, settings.kafka.topic, partition, settings.archive, progress
    )


def archive_topic(
    settings: Settings, partitions: Iterable[int] | None = None, progress: Progress | None = None
) -> list[PartitionReport]:
    """One pass: each partition from where the archive ended to its end, one after the other."""
    if partitions is None:
        connection = producer_config(settings.kafka, settings.kafka_secrets())
        partitions = topic_partitions(connection, settings.kafka.topic, settings.kafka.admin_timeout_s)
    return [archiver(settings, partition, progress).run() for partition in partitions]


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
