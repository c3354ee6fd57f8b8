"""Jobs: the long-running capture, instrument discovery, and the capture health checks.

Every run carries the ``optionstream/role`` tag; the instance's ``tag_concurrency_limits`` allow
one ``capture`` run at a time, so two racing supervisor ticks can never start two captures.
"""

from dagster import AssetSelection, define_asset_job, in_process_executor, job

from optionstream_pipeline.orchestration.assets import TOPIC_ASSET_KEY, UNIVERSE_ASSET_KEY
from optionstream_pipeline.orchestration.ops.capture import capture_order_books

ROLE_TAG = "optionstream/role"
CAPTURE_ROLE = "capture"
CAPTURE_JOB_NAME = "deribit_capture"
DISCOVERY_JOB_NAME = "discover_instruments"
HEALTH_CHECKS_JOB_NAME = "capture_health_checks"


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
