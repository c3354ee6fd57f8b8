"""Runs whose worker is gone: STARTED in Dagster's storage, silent longer than ``heartbeat_stale_s``.

When the whole ``dagster dev`` tree is killed, its runs stay STARTED forever (the default run
launcher cannot see that their workers died). The capture supervisor and the archive schedule both
mark such runs failed, so that they stop blocking a replacement. A run's heartbeat is its newest
event: the capture op observes the topic every few seconds; the archive logs its progress.
"""

import logging

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from optionstream_pipeline.config import OrchestrationSettings
from optionstream_pipeline.orchestration.sensors import policy

RECENT_RUNS = 25


def last_heartbeat(instance: DagsterInstance, run: DagsterRun, fallback: float) -> float:
    """Time of the run's newest event (or ``fallback``, its start, when it has none yet)."""
    records = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
    return max(records[0].timestamp, fallback) if records else fallback


def fail_dead_runs(
    instance: DagsterInstance,
    job_name: str,
    settings: OrchestrationSettings,
    now: float,
    what: str,
    then: str,
    log: logging.Logger | logging.LoggerAdapter,
) -> list[str]:
    """Mark STARTED runs of ``job_name`` without a recent event as failed; returns their ids.

    ``what`` names the run in the message ("capture run"), ``then`` says what happens next.
    """
    failed = []
    records = instance.get_run_records(
        filters=RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.STARTED]), limit=RECENT_RUNS
    )
    for record in records:
        run = record.dagster_run
        heartbeat = last_heartbeat(instance, run, record.start_time or record.create_timestamp.timestamp())
        if not policy.is_dead(heartbeat, now, settings):
            continue
        message = (
            f"No heartbeat from {what} {run.run_id[:8]} for {now - heartbeat:.0f} s "
            f"(limit orchestration.heartbeat_stale_s = {settings.heartbeat_stale_s:g} s): its worker is gone. {then}"
        )
        log.warning(message)
        instance.report_run_failed(run, message=message)
        failed.append(run.run_id)
    return failed
