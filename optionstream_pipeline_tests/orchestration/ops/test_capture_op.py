"""The capture op in process: observations with growing counters, data in Kafka, a clean recycle."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from optionstream_pipeline.discovery.filters import parse_listing
from optionstream_pipeline.discovery.store import UniverseStore
from optionstream_pipeline.orchestration.assets import TOPIC_ASSET_KEY
from optionstream_pipeline.orchestration.jobs import capture_job
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.orchestration.support import capture_overrides, settings_resource
from optionstream_pipeline_tests.support.kafka_reading import TopicLog
from optionstream_pipeline_tests.support.waiting import wait_until

TEXT_KEYS = {"capture_id", "interval", "topic", "instruments_without_data"}


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorSettings(max_instruments=12, events_per_second=300)) as sim:
        yield sim


def seed_universe(simulator: SimulatorThread, universe: Path) -> None:
    listings = [parse_listing(item) for item in simulator.market.instruments_json()]
    UniverseStore(universe).write("seed", listings, {item.name for item in listings})


def test_capture_observes_and_recycles_to_success(
    simulator: SimulatorThread, kafka_bootstrap: str, tmp_path: Path
) -> None:
    universe = tmp_path / "universe"
    seed_universe(simulator, universe)
    topic = f"test-capture-op-{uuid.uuid4().hex[:8]}"
    optionstream = settings_resource(
        **capture_overrides(simulator.url, kafka_bootstrap, topic, universe),
        **{"orchestration.observation_interval_s": 1, "orchestration.recycle_after_s": 10},
    )
    with DagsterInstance.ephemeral() as instance:
        result = capture_job.execute_in_process(instance=instance, resources={"optionstream": optionstream})
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
        observations = [
            record.asset_observation
            for record in reversed(instance.fetch_observations(TOPIC_ASSET_KEY, limit=100).records)
        ]
    assert len(observations) >= 8
    counts = [obs.metadata["messages_in"].value for obs in observations]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    last = {key: entry.value for key, entry in observations[-1].metadata.items()}
    assert last["instruments"] == last["instruments_subscribed"] == last["instruments_with_data"] == 12
    assert last["instruments_without_data"] == "none"
    assert last["topic"] == topic
    for key in (
        "messages_in_per_s",
        "delivered",
        "gaps",
        "resyncs",
        "reconnects",
        "rejected_channels",
        "delivery_p99_ms",
        "oldest_update_age_s",
        "instruments_live",
    ):
        assert isinstance(last[key], int | float), key
    # Numbers only, apart from a few labels: nothing from the environment (no secrets, no URLs).
    assert {key for key, value in last.items() if isinstance(value, str)} == TEXT_KEYS
    with TopicLog(kafka_bootstrap, topic) as reader:
        books_delivered = last["delivered"] - last["tickers_out"]  # at least: some tickers may still be in flight
        reader.read_until(lambda records: len(records) >= books_delivered, 30, "every delivered book record")


def test_a_run_declared_dead_stops_capturing(simulator: SimulatorThread, kafka_bootstrap: str, tmp_path: Path) -> None:
    """If the supervisor marks a live run failed (stale-looking heartbeat), the run stops by itself."""
    universe = tmp_path / "universe"
    seed_universe(simulator, universe)
    optionstream = settings_resource(
        **capture_overrides(simulator.url, kafka_bootstrap, f"test-zombie-{uuid.uuid4().hex[:8]}", universe),
        **{"orchestration.observation_interval_s": 0.5, "orchestration.recycle_after_s": None},
    )
    with DagsterInstance.ephemeral() as instance:

        def declare_dead() -> None:
            wait_until(lambda: instance.fetch_observations(TOPIC_ASSET_KEY, limit=2).records, 30, 0.05)
            [record] = instance.get_run_records(limit=1)
            instance.report_run_failed(record.dagster_run, message="declared dead by a test")

        helper = threading.Thread(target=declare_dead, daemon=True)
        helper.start()
        result = capture_job.execute_in_process(
            instance=instance, resources={"optionstream": optionstream}, raise_on_error=False
        )
        helper.join(5)
    assert not result.success
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert "stopping so that only its replacement captures" in str(failure.step_failure_data.error)
