"""Asset checks on the archive, per Kafka partition (the asset's own partition keys).

They run in every archive run, after its partition is archived, and from the asset's Checks tab at
any time; the rules are :mod:`optionstream_pipeline.archive.audit`'s:

- ``offset_continuity`` (error): no offset of the partition is missing between its files; a range
  Kafka's retention removed before the archive read it fails the check, naming partition and range;
- ``change_id_continuity`` (warning): every change over the partition's last day continues its
  book, except where a marker says why it broke;
- ``closed_hours_compacted`` (warning): no closed hour still has files compaction would merge.

Partitioned asset checks are a preview feature of Dagster (1.13, pinned in ``pyproject.toml``); its
warning is silenced here, where the choice is made, rather than shown on every load.
"""

import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    PreviewWarning,
    StaticPartitionsDefinition,
    asset_check,
)

from optionstream_pipeline.archive import audit
from optionstream_pipeline.archive.compaction import open_hour
from optionstream_pipeline.archive.layout import ArchiveFile
from optionstream_pipeline.archive.run import archive_store
from optionstream_pipeline.archive.store import ArchiveStore
from optionstream_pipeline.config import Settings
from optionstream_pipeline.orchestration.assets.archive.asset import ARCHIVE_ASSET_KEY, kafka_partitions
from optionstream_pipeline.orchestration.assets.metadata import check_result
from optionstream_pipeline.orchestration.resources import OptionStreamSettings


def _archived(
    context: AssetCheckExecutionContext, optionstream: OptionStreamSettings
) -> tuple[Settings, int, ArchiveStore, list[ArchiveFile]]:
    """The check's Kafka partition (its partition key) and the archive's live files of it."""
    settings = optionstream.settings()
    partition = int(context.partition_key)
    store = archive_store(settings)
    return settings, partition, store, store.live_files(settings.kafka.topic, partition)


def build_archive_checks(partitions: int) -> list[AssetChecksDefinition]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PreviewWarning)
        return _build_checks(kafka_partitions(partitions))


def _build_checks(keys: StaticPartitionsDefinition) -> list[AssetChecksDefinition]:

    @asset_check(
        asset=ARCHIVE_ASSET_KEY,
        name="offset_continuity",
        partitions_def=keys,
        description="Every offset of the Kafka partition is in one archive file; a range Kafka's retention "
        "removed before the archive read it fails the check, named.",
    )
    def offset_continuity(context: AssetCheckExecutionContext, optionstream: OptionStreamSettings) -> AssetCheckResult:
        settings, partition, store, files = _archived(context, optionstream)
        topic = settings.kafka.topic
        holes = [hole for hole in store.holes() if hole["topic"] == topic and hole["partition"] == partition]
        verdict = audit.offset_continuity(partition, files, holes)
        return check_result(verdict, AssetCheckSeverity.ERROR)

    @asset_check(
        asset=ARCHIVE_ASSET_KEY,
        name="change_id_continuity",
        partitions_def=keys,
        description="Over the partition's last day, every change continues its book's change_id, except "
        "after a marker (gap, disconnect, unsubscribed) saying why the book broke.",
    )
    def change_id_continuity(
        context: AssetCheckExecutionContext, optionstream: OptionStreamSettings
    ) -> AssetCheckResult:
        _, partition, store, files = _archived(context, optionstream)
        return check_result(audit.change_id_continuity(store, partition, files), AssetCheckSeverity.WARN)

    @asset_check(
        asset=ARCHIVE_ASSET_KEY,
        name="closed_hours_compacted",
        partitions_def=keys,
        description="No closed hour of the partition still has files compaction would merge "
        "(archive.compacted_records_per_file records per file).",
    )
    def closed_hours_compacted(
        context: AssetCheckExecutionContext, optionstream: OptionStreamSettings
    ) -> AssetCheckResult:
        settings, partition, store, files = _archived(context, optionstream)
        limit = settings.archive.compacted_records_per_file
        verdict = audit.compaction_state(partition, files, open_hour(store, files), limit)
        return check_result(verdict, AssetCheckSeverity.WARN)

    return [offset_continuity, change_id_continuity, closed_hours_compacted]
