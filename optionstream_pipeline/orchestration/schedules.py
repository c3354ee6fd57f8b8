"""Schedules: discovery every 10 minutes and health checks every 5 (crons from the config).

Both start RUNNING: a fresh deployment discovers instruments and checks capture health without
anyone switching them on in the UI.
"""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from optionstream_pipeline.config import Settings
from optionstream_pipeline.orchestration.jobs import discovery_job, health_checks_job


def build_schedules(settings: Settings) -> list[ScheduleDefinition]:
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
    ]
