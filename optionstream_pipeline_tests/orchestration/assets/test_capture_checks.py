"""The asset checks on the Kafka topic asset, executed by Dagster against stored observations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetCheckSeverity, AssetObservation, DagsterInstance, Definitions

from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.store import UniverseStore
from optionstream_pipeline.orchestration.assets import TOPIC_ASSET_KEY, capture_health_checks, deribit_option_books
from optionstream_pipeline.orchestration.jobs import HEALTH_CHECKS_JOB_NAME, health_checks_job
from optionstream_pipeline_tests.orchestration.support import settings_resource

NAMES = ["BTC-26JUN26-90000-C", "BTC-26JUN26-100000-C"]


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def run_checks(instance: DagsterInstance, universe: Path) -> dict[str, tuple[bool, AssetCheckSeverity, str]]:
    optionstream = settings_resource(**{"deribit.instruments": "auto", "discovery.universe_path": str(universe)})
    defs = Definitions(
        assets=[deribit_option_books],
        asset_checks=capture_health_checks,
        jobs=[health_checks_job],
        resources={"optionstream": optionstream},
    )
    result = defs.resolve_job_def(HEALTH_CHECKS_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    return {
        evaluation.check_name: (evaluation.passed, evaluation.severity, evaluation.description)
        for evaluation in result.get_asset_check_evaluations()
    }


def observe(instance: DagsterInstance, **values: object) -> None:
    instance.report_runless_asset_event(AssetObservation(asset_key=TOPIC_ASSET_KEY, metadata=values))


def write_universe(path: Path) -> None:
    listings = [Listing(name, 1_800_000_000_000, 1.0, "call") for name in NAMES]
    UniverseStore(path).write("run-1", listings, set(NAMES))


def test_healthy_capture_passes_every_check(instance: DagsterInstance, tmp_path: Path) -> None:
    write_universe(tmp_path)
    for messages in (1000, 2000):
        observe(
            instance,
            capture_id="c1",
            messages_in=messages,
            gaps=0,
            instruments=2,
            instruments_with_data=2,
            newest_update_age_s=0.5,
            instruments_without_data="none",
        )
    results = run_checks(instance, tmp_path)
    assert {name: passed for name, (passed, _, _) in results.items()} == {
        "capture_freshness": True,
        "gap_rate": True,
        "coverage": True,
    }


def test_no_observation_fails_freshness_with_error_severity(instance: DagsterInstance, tmp_path: Path) -> None:
    write_universe(tmp_path)
    passed, severity, description = run_checks(instance, tmp_path)["capture_freshness"]
    assert not passed
    assert severity == AssetCheckSeverity.ERROR
    assert "no capture observation yet" in description


def test_gaps_and_missing_books_fail_with_warnings(instance: DagsterInstance, tmp_path: Path) -> None:
    write_universe(tmp_path)
    observe(
        instance,
        capture_id="c1",
        messages_in=1000,
        gaps=0,
        instruments=2,
        instruments_with_data=1,
        newest_update_age_s=0.5,
        instruments_without_data=NAMES[1],
    )
    time.sleep(0.01)  # distinct timestamps
    observe(
        instance,
        capture_id="c1",
        messages_in=2000,
        gaps=50,
        instruments=2,
        instruments_with_data=1,
        newest_update_age_s=0.5,
        instruments_without_data=NAMES[1],
    )
    results = run_checks(instance, tmp_path)
    assert results["gap_rate"][:2] == (False, AssetCheckSeverity.WARN)
    assert results["coverage"][:2] == (False, AssetCheckSeverity.WARN)
    assert NAMES[1] in results["coverage"][2]
