"""Jobs: the long-running capture, instrument discovery, the capture health checks, and the archive.

Every run carries the ``optionstream/role`` tag; the instance's ``tag_concurrency_limits`` allow
one ``capture`` run at a time, so two racing supervisor ticks can never start two captures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import (
    AssetSelection,
    PartitionsDefinition,
    define_asset_job,
    in_process_executor,
    job,
)

from optionstream_pipeline.orchestration.assets import (
    ARCHIVE_ASSET_KEY,
    TICKER_ARCHIVE_ASSET_KEY,
    TOPIC_ASSET_KEY,
    UNIVERSE_ASSET_KEY,
)
from optionstream_pipeline.orchestration.ops.capture import capture_order_books

if TYPE_CHECKING:  # not exported by Dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

ROLE_TAG = "optionstream/role"
CAPTURE_ROLE = "capture"
CAPTURE_JOB_NAME = "deribit_capture"
DISCOVERY_JOB_NAME = "discover_instruments"
HEALTH_CHECKS_JOB_NAME = "capture_health_checks"
ARCHIVE_JOB_NAME = "archive_topic"
ARCHIVE_ROLE = "archive"


@job(
    name=CAPTURE_JOB_NAME,
    tags={ROLE_TAG: CAPTURE_ROLE},
    executor_def=in_process_executor,
    description="Capture Deribit BTC option books into Kafka; long-running, kept alive by the "
    "capture_supervisor sensor (exactly one live run).",
)
def deribit_capture() -> None:
    capture_order_books()


capture_job = deribit_capture

discovery_job = define_asset_job(
    DISCOVERY_JOB_NAME,
    selection=AssetSelection.assets(UNIVERSE_ASSET_KEY),
    tags={ROLE_TAG: "discovery"},
    executor_def=in_process_executor,
    description="List Deribit's BTC options and publish the filtered capture universe.",
)

health_checks_job = define_asset_job(
    HEALTH_CHECKS_JOB_NAME,
    selection=AssetSelection.checks_for_assets(TOPIC_ASSET_KEY),
    tags={ROLE_TAG: "health"},
    executor_def=in_process_executor,
    description="Evaluate the capture health checks (freshness, gap rate, coverage) from the latest observations.",
)


def build_archive_job(partitions_def: PartitionsDefinition, tickers: bool = True) -> UnresolvedAssetJobDefinition:
    """One run archives one Kafka partition (its partition key) of the book topic, then of the ticker
    topic when tickers are captured; the schedule launches one run per key."""
    keys = [ARCHIVE_ASSET_KEY, TICKER_ARCHIVE_ASSET_KEY] if tickers else [ARCHIVE_ASSET_KEY]
    return define_asset_job(
        ARCHIVE_JOB_NAME,
        selection=AssetSelection.assets(*keys),
        partitions_def=partitions_def,
        tags={ROLE_TAG: ARCHIVE_ROLE},
        executor_def=in_process_executor,
        description="Archive one Kafka partition of the book (and ticker) topic to Parquet, exactly once.",
    )
