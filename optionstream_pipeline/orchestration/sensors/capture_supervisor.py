"""The capture supervisor: exactly one live capture run, at all times.

Each tick (never blocking: only reads of Dagster's own storage and one file stat):

1. A STARTED capture run whose newest event (its observations are a heartbeat) is older than
   ``orchestration.heartbeat_stale_s`` is dead: its worker vanished with the whole ``dagster dev``
   tree, and the default run launcher cannot notice. It is marked failed
   (``instance.report_run_failed``) so it stops blocking.
2. If a capture run is still live (queued, starting, started, canceling), skip and say which.
3. If the last runs failed ``backoff_after_failures`` times in a row, wait
   ``failure_backoff_s * 2**k`` (capped) from the last failure's end time, and say until when.
4. Otherwise launch one (``run_key=None``: a fixed key would block every relaunch). The instance's
   tag concurrency limit guarantees that two racing ticks cannot start two.

When capture follows the discovery universe and none exists yet, it also requests one discovery
run, so a fresh deployment does not wait up to ten minutes for the schedule.
"""

import time
from collections.abc import Callable
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from optionstream_pipeline.config import Settings
from optionstream_pipeline.discovery.source import CURRENT_FILE
from optionstream_pipeline.orchestration.jobs import (
    CAPTURE_JOB_NAME,
    CAPTURE_ROLE,
    DISCOVERY_JOB_NAME,
    ROLE_TAG,
    capture_job,
    discovery_job,
)
from optionstream_pipeline.orchestration.resources import OptionStreamSettings
from optionstream_pipeline.orchestration.sensors import policy
from optionstream_pipeline.orchestration.sensors.runs import RECENT_RUNS, fail_dead_runs, last_heartbeat

SENSOR_NAME = "capture_supervisor"
LAUNCHED_BY_TAG = "optionstream/launched_by"
REPLACES_TAG = "optionstream/replaces"
LIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
FINISHED_STATUSES = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
DISCOVERY_RETRY_S = 60.0

# Replaced in tests to move time; the sensor never sleeps.
clock: Callable[[], float] = time.time


def build_capture_supervisor(minimum_interval_seconds: int = 15) -> SensorDefinition:
    @sensor(
        name=SENSOR_NAME,
        jobs=[capture_job, discovery_job],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Keeps exactly one deribit_capture run live: launches one when none is, replaces a "
        "run whose heartbeat stopped, and backs off when runs keep failing.",
    )
    def capture_supervisor(context: SensorEvaluationContext, optionstream: OptionStreamSettings) -> SensorResult:
        return supervise(context, optionstream.settings(), clock())

    return capture_supervisor


def supervise(context: SensorEvaluationContext, settings: Settings, now: float) -> SensorResult:
    instance = context.instance
    requests = _discovery_request(instance, settings, now)
    replaced = fail_dead_runs(
        instance,
        CAPTURE_JOB_NAME,
        settings.orchestration,
        now,
        "capture run",
        "Marked failed by the capture supervisor, which starts a replacement.",
        context.log,
    )
    live = instance.get_run_records(filters=RunsFilter(job_name=CAPTURE_JOB_NAME, statuses=LIVE_STATUSES), limit=1)
    if live:
        return SensorResult(run_requests=requests, skip_reason=None if requests else _live_text(instance, live[0], now))
    finished = [
        policy.FinishedRun(record.dagster_run.run_id, record.dagster_run.status.value, record.end_time)
        for record in instance.get_run_records(
            filters=RunsFilter(job_name=CAPTURE_JOB_NAME, statuses=FINISHED_STATUSES), limit=RECENT_RUNS
        )
        if record.dagster_run.run_id not in replaced  # a run just found dead is replaced at once, no backoff
    ]
    waiting = policy.backoff_reason(finished, now, settings.orchestration)
    if waiting:
        return SensorResult(run_requests=requests, skip_reason=None if requests else waiting)
    return SensorResult(run_requests=[*requests, _capture_request(finished, replaced)])


def _capture_request(finished: list[policy.FinishedRun], replaced: list[str]) -> RunRequest:
    tags = {ROLE_TAG: CAPTURE_ROLE, LAUNCHED_BY_TAG: SENSOR_NAME}
    if replaced:
        tags[REPLACES_TAG] = ",".join(replaced)
    elif finished:
        tags[REPLACES_TAG] = finished[0].run_id
    return RunRequest(run_key=None, job_name=CAPTURE_JOB_NAME, tags=tags)


def _live_text(instance: DagsterInstance, record, now: float) -> str:
    run = record.dagster_run
    status = run.status.value
    if run.status == DagsterRunStatus.STARTED:
        beat = last_heartbeat(instance, run, record.start_time or now)
        started = record.start_time or now
        return (
            f"Capture run {run.run_id[:8]} is running (started {_ago(now - started)} ago, "
            f"last heartbeat {now - beat:.0f} s ago)."
        )
    return f"Capture run {run.run_id[:8]} is {status.lower().replace('_', ' ')}; not launching another."


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _discovery_request(instance: DagsterInstance, settings: Settings, now: float) -> list[RunRequest]:
    """One discovery run when capture follows the universe and there is none yet (a file stat only)."""
    if settings.deribit.instruments != "auto" or (Path(settings.discovery.universe_path) / CURRENT_FILE).exists():
        return []
    recent = instance.get_run_records(filters=RunsFilter(job_name=DISCOVERY_JOB_NAME), limit=1)
    if recent:
        run = recent[0].dagster_run
        if not run.is_finished or now - recent[0].create_timestamp.timestamp() < DISCOVERY_RETRY_S:
            return []
    return [RunRequest(run_key=None, job_name=DISCOVERY_JOB_NAME, tags={LAUNCHED_BY_TAG: SENSOR_NAME})]
