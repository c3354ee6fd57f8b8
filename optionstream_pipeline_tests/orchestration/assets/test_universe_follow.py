"""Discovery and a running capture, together: the simulator lists a new expiry and expires another,
the discovery asset is materialized, and the running engine follows the new universe without a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from optionstream_pipeline.capture.engine import CaptureEngine, EngineThread
from optionstream_pipeline.discovery.source import UniverseFileSource
from optionstream_pipeline.orchestration.assets import UNIVERSE_ASSET_KEY, btc_option_universe
from optionstream_pipeline.orchestration.resources import OptionStreamSettings
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.orchestration.support import capture_overrides, settings_resource
from optionstream_pipeline_tests.support.waiting import wait_until


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorSettings(max_instruments=40, events_per_second=200)) as sim:
        yield sim


def discover(optionstream: OptionStreamSettings, instance: DagsterInstance) -> dict[str, object]:
    result = materialize([btc_option_universe], resources={"optionstream": optionstream}, instance=instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node(btc_option_universe.op.name)
    assert materialization.asset_key == UNIVERSE_ASSET_KEY
    return {key: entry.value for key, entry in materialization.metadata.items()}


def subscribed(engine: CaptureEngine) -> set[str]:
    return {entry.name for entry in engine.table.instruments() if entry.subscribed}


def simulator_books(sim: SimulatorThread) -> set[str]:
    return {c.split(".")[1] for info in sim.sessions() for c in info.channels if c.startswith("book.")}


def names(events: list[str], state: str) -> set[str]:
    return {event.split(" ", 1)[1] for event in events if event.startswith(state + " ")}


def test_universe_asset_reports_what_it_wrote(simulator: SimulatorThread, tmp_path: Path) -> None:
    universe = tmp_path / "universe"
    optionstream = settings_resource(**capture_overrides(simulator.url, "127.0.0.1:9", "unused", universe))
    with DagsterInstance.ephemeral() as instance:
        metadata = discover(optionstream, instance)
    assert metadata["dagster/row_count"] == metadata["added_count"] == len(UniverseFileSource(universe)())
    assert metadata["listed"] == 40
    assert metadata["expired_count"] == 0
    assert "| BTC-" in metadata["added"]
    # The strike band is centred on Deribit's index price, and the metadata says where it came from.
    assert metadata["underlying_source"] == "index price (public/get_index_price)"
    assert Path(metadata["history"]).exists()


def test_running_capture_follows_new_and_expired_instruments(
    simulator: SimulatorThread, kafka_bootstrap: str, tmp_path: Path
) -> None:
    universe_path = tmp_path / "universe"
    overrides = capture_overrides(simulator.url, kafka_bootstrap, f"test-follow-{uuid.uuid4().hex[:8]}", universe_path)
    optionstream = settings_resource(**overrides, **{"discovery.filters.strike_band": None})
    source = UniverseFileSource(universe_path)
    with DagsterInstance.ephemeral() as instance:
        discover(optionstream, instance)
        first = set(source())
        engine = CaptureEngine(optionstream.settings(), instrument_source=source, source_refresh_s=0.2)
        with EngineThread(engine):
            wait_until(lambda: subscribed(engine) == first, 30, message="the first universe subscribed")

            expired = names(simulator.lifecycle.roll_expiry(), "closed")
            created = names(simulator.lifecycle.create_expiry(), "created")
            assert expired and created
            metadata = discover(optionstream, instance)
            assert metadata["expired_count"] == len(expired)
            assert metadata["added_count"] == len(created)
            second = set(source())
            assert created <= second and not expired & second

            wait_until(lambda: subscribed(engine) == second, 30, message="the new universe subscribed, expired dropped")
            wait_until(lambda: simulator_books(simulator) == second, 10, message="the exchange sees the same set")
            assert engine.stats().reconnects == 0  # followed without reconnecting
