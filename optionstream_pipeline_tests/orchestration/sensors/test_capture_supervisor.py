"""The capture supervisor sensor, tick by tick, on an ephemeral instance with fake run states.

Time is moved by replacing the module's ``clock``: the sensor itself never sleeps or blocks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_sensor_context

from optionstream_pipeline.orchestration.jobs import CAPTURE_JOB_NAME, DISCOVERY_JOB_NAME, ROLE_TAG, capture_job
from optionstream_pipeline.orchestration.resources import OptionStreamSettings
from optionstream_pipeline.orchestration.sensors import capture_supervisor as supervisor_module
from optionstream_pipeline.orchestration.sensors.capture_supervisor import REPLACES_TAG, build_capture_supervisor
from optionstream_pipeline_tests.orchestration.support import settings_resource

SENSOR = build_capture_supervisor()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


@pytest.fixture
def optionstream(tmp_path: Path) -> OptionStreamSettings:
    return settings_resource(
        **{
            "deribit.instruments": ["BTC-26JUN26-100000-C"],
            "discovery.universe_path": str(tmp_path / "universe"),
            "orchestration.heartbeat_stale_s": 60,
            "orchestration.failure_backoff_s": 30,
            "orchestration.max_backoff_s": 600,
            "orchestration.backoff_after_failures": 2,
        }
    )


def tick(instance: DagsterInstance, optionstream: OptionStreamSettings, now: float, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(supervisor_module, "clock", lambda: now)
    context = build_sensor_context(instance=instance, resources={"optionstream": optionstream})
    return SENSOR.evaluate_tick(context)


def capture_run(instance: DagsterInstance, status: DagsterRunStatus) -> DagsterRun:
    return instance.create_run_for_job(job_def=capture_job, status=status, tags={ROLE_TAG: "capture"})


def failed_run(instance: DagsterInstance) -> DagsterRun:
    run = capture_run(instance, DagsterRunStatus.STARTED)
    instance.report_run_failed(run, message="boom")
    return run


def test_no_run_launches_one(instance, optionstream, monkeypatch) -> None:
    result = tick(instance, optionstream, time.time(), monkeypatch)
    assert result.skip_message is None
    [request] = result.run_requests
    assert request.job_name == CAPTURE_JOB_NAME
    assert request.run_key is None  # a fixed key would block every relaunch
    assert request.tags[ROLE_TAG] == "capture"


@pytest.mark.parametrize(
    "status",
    [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING],
)
def test_live_run_skips(instance, optionstream, monkeypatch, status) -> None:
    run = capture_run(instance, status)
    result = tick(instance, optionstream, time.time(), monkeypatch)
    assert not result.run_requests
    assert run.run_id[:8] in result.skip_message


def test_started_run_with_a_fresh_heartbeat_is_left_alone(instance, optionstream, monkeypatch) -> None:
    run = capture_run(instance, DagsterRunStatus.STARTED)
    instance.report_engine_event("observation", run)
    result = tick(instance, optionstream, time.time() + 5, monkeypatch)
    assert not result.run_requests
    assert "is running" in result.skip_message and "last heartbeat" in result.skip_message
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED


def test_started_run_with_a_stale_heartbeat_is_failed_and_replaced(instance, optionstream, monkeypatch) -> None:
    run = capture_run(instance, DagsterRunStatus.STARTED)
    instance.report_engine_event("last observation before the crash", run)
    result = tick(instance, optionstream, time.time() + 61, monkeypatch)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    [request] = result.run_requests
    assert request.job_name == CAPTURE_JOB_NAME
    assert request.tags[REPLACES_TAG] == run.run_id
    failure = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records[0]
    assert "No heartbeat" in failure.event_log_entry.dagster_event.message


def test_one_failure_relaunches_at_once(instance, optionstream, monkeypatch) -> None:
    failed_run(instance)
    result = tick(instance, optionstream, time.time(), monkeypatch)
    assert len(result.run_requests) == 1


def test_repeated_failures_back_off_exponentially_from_the_last_failure(instance, optionstream, monkeypatch) -> None:
    for _ in range(3):
        failed_run(instance)
    ended = instance.get_run_records(limit=1)[0].end_time
    # 3 failures, backoff after 2: 30 s * 2**(3-2) = 60 s after the last failure ended.
    result = tick(instance, optionstream, ended + 10, monkeypatch)
    assert not result.run_requests
    assert "failed 3 times in a row" in result.skip_message
    assert "Waiting 60 s" in result.skip_message and "50 s left" in result.skip_message
    assert len(tick(instance, optionstream, ended + 61, monkeypatch).run_requests) == 1


def test_backoff_is_capped(instance, optionstream, monkeypatch) -> None:
    for _ in range(12):
        failed_run(instance)
    ended = instance.get_run_records(limit=1)[0].end_time
    assert "Waiting 600 s" in tick(instance, optionstream, ended + 1, monkeypatch).skip_message


def test_a_clean_end_resets_the_failure_count(instance, optionstream, monkeypatch) -> None:
    for _ in range(3):
        failed_run(instance)
    recycled = capture_run(instance, DagsterRunStatus.STARTED)
    instance.report_run_canceled(recycled)
    assert len(tick(instance, optionstream, time.time(), monkeypatch).run_requests) == 1


def test_missing_universe_requests_one_discovery_run(instance, tmp_path, monkeypatch) -> None:
    optionstream = settings_resource(
        **{"deribit.instruments": "auto", "discovery.universe_path": str(tmp_path / "universe")}
    )
    result = tick(instance, optionstream, time.time(), monkeypatch)
    assert sorted(request.job_name for request in result.run_requests) == [CAPTURE_JOB_NAME, DISCOVERY_JOB_NAME]
