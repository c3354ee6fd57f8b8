"""Schedules: discovery every 10 minutes, health checks every 5, the archive every 5 (crons from the config).

All start RUNNING: a fresh deployment discovers instruments, checks capture health and archives the
topic without anyone switching them on in the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from optionstream_pipeline.config import Settings
from optionstream_pipeline.orchestration.jobs import ARCHIVE_JOB_NAME, discovery_job, health_checks_job
from optionstream_pipeline.orchestration.sensors.runs import fail_dead_runs

if TYPE_CHECKING:  # not exported by Dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

ARCHIVE_SCHEDULE_NAME = "archive_schedule"
clock: Callable[[], float] = time.time  # replaced in tests to move time
LIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def build_schedules(settings: Settings, archive_job: UnresolvedAssetJobDefinition) -> list[ScheduleDefinition]:
    return [
        ScheduleDefinition(
            name="discover_instruments_schedule",
            job=discovery_job,
            cron_schedule=settings.discovery.schedule_cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            description="Refresh the capture universe from Deribit's listing (discovery.schedule_cron).",
        ),
        ScheduleDefinition(
            name="capture_health_checks_schedule",
            job=health_checks_job,
            cron_schedule=settings.orchestration.checks.cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            description="Evaluate capture freshness, gap rate and coverage (orchestration.checks.cron).",
        ),
        build_archive_schedule(settings, archive_job),
    ]


def build_archive_schedule(settings: Settings, archive_job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    keys = archive_job.partitions_def.get_partition_keys()

    @schedule(
        name=ARCHIVE_SCHEDULE_NAME,
        job=archive_job,
        cron_schedule=settings.orchestration.archive_cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Archive every Kafka partition of the topic, one run per partition "
        "(orchestration.archive_cron); a partition whose previous run is still going is left to it, "
        "and a run whose worker is gone (no event for orchestration.heartbeat_stale_s) is marked failed.",
    )
    def archive_every_partition(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        fail_dead_runs(
            context.instance,
            ARCHIVE_JOB_NAME,
            settings.orchestration,
            clock(),
            "archive run",
            "Marked failed by the archive schedule; its partition is archived again (exactly once).",
            context.log,
        )
        busy = archiving_now(context)
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        requests = [RunRequest(run_key=f"{tick}/{key}", partition_key=key) for key in keys if key not in busy]
        if not requests:
            return SkipReason(f"every partition is still being archived by the previous runs: {', '.join(busy)}")
        return requests

    return archive_every_partition


def archiving_now(context: ScheduleEvaluationContext) -> list[str]:
    """Partition keys with a live archive run (one query on Dagster's own storage)."""
    records = context.instance.get_run_records(filters=RunsFilter(job_name=ARCHIVE_JOB_NAME, statuses=LIVE))
    return sorted({record.dagster_run.tags.get("dagster/partition", "") for record in records} - {""})
