"""The one Definitions object: it loads, names what the UI shows, and the CLI validates it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DefaultScheduleStatus, DefaultSensorStatus, Definitions

from optionstream_pipeline.orchestration.assets import ARCHIVE_ASSET_KEY, TOPIC_ASSET_KEY, UNIVERSE_ASSET_KEY
from optionstream_pipeline.orchestration.definitions import defs
from optionstream_pipeline.orchestration.jobs import (
    ARCHIVE_JOB_NAME,
    CAPTURE_JOB_NAME,
    DISCOVERY_JOB_NAME,
    HEALTH_CHECKS_JOB_NAME,
    ROLE_TAG,
)
from optionstream_pipeline.orchestration.resources import DEMO_OVERRIDES, deployment_name, resources_for
from optionstream_pipeline.orchestration.schedules import ARCHIVE_SCHEDULE_NAME
from optionstream_pipeline.orchestration.sensors import SENSOR_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_definitions_load() -> None:
    Definitions.validate_loadable(defs)


def test_capture_job_is_one_tagged_in_process_op() -> None:
    job = defs.resolve_job_def(CAPTURE_JOB_NAME)
    assert job.tags[ROLE_TAG] == "capture"
    assert job.executor_def.name == "in_process"
    assert [node.name for node in job.nodes] == ["capture_order_books"]


def test_sensor_and_schedules_run_out_of_the_box() -> None:
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert {target.job_name for target in sensor.targets} == {CAPTURE_JOB_NAME, DISCOVERY_JOB_NAME}
    discovery = defs.resolve_schedule_def("discover_instruments_schedule")
    assert discovery.cron_schedule == "*/10 * * * *"
    assert discovery.job_name == DISCOVERY_JOB_NAME
    checks = defs.resolve_schedule_def("capture_health_checks_schedule")
    assert checks.job_name == HEALTH_CHECKS_JOB_NAME
    for schedule in (discovery, checks):
        assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_assets_and_checks() -> None:
    graph = defs.resolve_asset_graph()
    topic = graph.get(TOPIC_ASSET_KEY)
    assert not topic.is_materializable  # external: the capture engine writes it, Dagster observes it
    assert "kafka" in topic.kinds
    assert UNIVERSE_ASSET_KEY in topic.parent_keys
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == TOPIC_ASSET_KEY}
    assert checks == {"capture_freshness", "gap_rate", "coverage"}


def test_resources_by_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIONSTREAM_DEPLOYMENT", "demo")
    assert deployment_name() == "demo"
    assert resources_for()["optionstream"].overrides == DEMO_OVERRIDES
    monkeypatch.setenv("OPTIONSTREAM_DEPLOYMENT", "prod")
    with pytest.raises(ValueError, match="allowed: production, demo"):
        deployment_name()


def test_demo_instance_limits_capture_runs_to_one(tmp_path: Path) -> None:
    text = (REPO_ROOT / "config" / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text(text)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": ROLE_TAG, "value": "capture", "limit": 1} in limits
        assert {"key": ROLE_TAG, "value": "archive", "limit": 3} in limits
        assert instance.run_monitoring_enabled
    assert yaml.safe_load(text)["run_monitoring"]["enabled"] is True


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location optionstream" in result.stdout + result.stderr


def test_the_archive_has_one_partition_key_per_kafka_partition_and_runs_every_five_minutes() -> None:
    graph = defs.resolve_asset_graph()
    archive = graph.get(ARCHIVE_ASSET_KEY)
    assert archive.is_materializable
    assert archive.partitions_def.get_partition_keys() == [str(p) for p in range(12)]  # kafka.partitions
    assert TOPIC_ASSET_KEY in archive.parent_keys
    job = defs.resolve_job_def(ARCHIVE_JOB_NAME)
    assert job.tags[ROLE_TAG] == "archive" and job.executor_def.name == "in_process"
    schedule = defs.resolve_schedule_def(ARCHIVE_SCHEDULE_NAME)
    assert (schedule.cron_schedule, schedule.job_name) == ("*/5 * * * *", ARCHIVE_JOB_NAME)
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
