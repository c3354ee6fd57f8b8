"""Asset checks on the Kafka topic asset: freshness, gap rate and coverage.

Each check reads the latest capture observations from Dagster's event log and applies a rule from
:mod:`.health`; thresholds come from ``orchestration.checks``. They run on the
``capture_health_checks`` schedule and can be executed from the asset's Checks tab at any time.
"""

import math
import time

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from optionstream_pipeline.config import Settings
from optionstream_pipeline.discovery.source import UniverseFileSource
from optionstream_pipeline.orchestration.assets.capture import health
from optionstream_pipeline.orchestration.assets.capture.topic import TOPIC_ASSET_KEY
from optionstream_pipeline.orchestration.assets.metadata import check_result
from optionstream_pipeline.orchestration.resources import OptionStreamSettings

MAX_OBSERVATIONS = 500


def latest_observations(context: AssetCheckExecutionContext, settings: Settings) -> list[health.Observed]:
    """Newest first, enough to cover the gap-rate window."""
    orchestration = settings.orchestration
    wanted = math.ceil(orchestration.checks.window_s / orchestration.observation_interval_s) + 2
    result = context.instance.fetch_observations(TOPIC_ASSET_KEY, limit=min(MAX_OBSERVATIONS, wanted))
    observed = []
    for record in result.records:
        observation = record.asset_observation
        if observation is not None:
            values = {key: entry.value for key, entry in observation.metadata.items()}
            observed.append(health.Observed(record.timestamp, values))
    return observed


@asset_check(
    asset=TOPIC_ASSET_KEY,
    name="capture_freshness",
    description="The newest captured book update is at most orchestration.checks.max_update_age_s old.",
)
def capture_freshness(context: AssetCheckExecutionContext, optionstream: OptionStreamSettings) -> AssetCheckResult:
    settings = optionstream.settings()
    verdict = health.freshness(
        latest_observations(context, settings), time.time(), settings.orchestration.checks.max_update_age_s
    )
    return check_result(verdict, AssetCheckSeverity.ERROR)


@asset_check(
    asset=TOPIC_ASSET_KEY,
    name="gap_rate",
    description="change_id gaps per book message over orchestration.checks.window_s stay below max_gap_rate.",
)
def gap_rate(context: AssetCheckExecutionContext, optionstream: OptionStreamSettings) -> AssetCheckResult:
    settings = optionstream.settings()
    checks = settings.orchestration.checks
    verdict = health.gap_rate(latest_observations(context, settings), time.time(), checks.max_gap_rate, checks.window_s)
    return check_result(verdict, AssetCheckSeverity.WARN)


@asset_check(
    asset=TOPIC_ASSET_KEY,
    name="coverage",
    description="Every instrument of the universe is followed and has book data (min_coverage of them).",
)
def coverage(context: AssetCheckExecutionContext, optionstream: OptionStreamSettings) -> AssetCheckResult:
    settings = optionstream.settings()
    universe = None  # an explicit list, or auto before discovery wrote a universe: the followed set
    source = UniverseFileSource(settings.discovery.universe_path)
    if settings.deribit.instruments == "auto" and source.exists():
        universe = source()
    verdict = health.coverage(
        latest_observations(context, settings), universe, settings.orchestration.checks.min_coverage
    )
    return check_result(verdict, AssetCheckSeverity.WARN)


capture_health_checks = [capture_freshness, gap_rate, coverage]
