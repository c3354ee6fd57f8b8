"""What ``instruments: auto`` follows: the discovery universe once it exists, the live chain before."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.server import serve

from optionstream_pipeline.capture.engine import EngineThread
from optionstream_pipeline.capture.stats import rates, status_line
from optionstream_pipeline.capture.universe import AutoUniverse, build_engine
from optionstream_pipeline.config import Settings
from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.source import UniverseFileSource
from optionstream_pipeline.discovery.store import UniverseStore
from optionstream_pipeline.orchestration.assets.capture.health import Observed, coverage
from optionstream_pipeline.orchestration.ops.observation import observation_values
from optionstream_pipeline_tests.capture.conftest import capture_settings
from optionstream_pipeline_tests.support.waiting import wait_until

UNIVERSE = ["BTC-26JUN26-90000-C", "BTC-26JUN26-100000-C"]
CHAIN = ["BTC-26JUN26-80000-P", *UNIVERSE]


class FakeChain:
    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_universe(root: Path) -> None:
    listings = [Listing(name, 1_800_000_000_000, 1.0, "call") for name in UNIVERSE]
    UniverseStore(root).write("run-1", listings, set(UNIVERSE))


def test_build_engine_follows_the_universe_or_an_explicit_list(tmp_path: Path) -> None:
    auto = Settings().replace(**{"deribit.instruments": "auto", "discovery.universe_path": str(tmp_path)})
    source = build_engine(auto)._source
    assert isinstance(source, AutoUniverse)
    assert source.universe.path == UniverseFileSource(tmp_path).path
    explicit = Settings().replace(**{"deribit.instruments": ["BTC-26JUN26-100000-C"]})
    engine = build_engine(explicit)
    assert engine._source is None and engine._initial == {"BTC-26JUN26-100000-C"}


def test_the_live_chain_until_discovery_writes_a_universe_then_the_universe(tmp_path: Path, caplog) -> None:
    chain, clock = FakeChain(CHAIN), Clock()
    source = AutoUniverse(UniverseFileSource(tmp_path), chain, refresh_s=600, clock=clock)
    caplog.set_level(logging.INFO)
    assert source() == CHAIN and source.following == "live chain"
    clock.now = 300
    assert source() == CHAIN and chain.calls == 1  # the listing is asked for at most every refresh_s
    clock.now = 601
    assert source() == CHAIN and chain.calls == 2
    write_universe(tmp_path)
    assert source() == UNIVERSE and source.following == "universe"
    assert chain.calls == 2
    assert sum("following the discovery universe" in message for message in caplog.messages) == 1


def test_a_failed_or_empty_listing_raises_and_is_retried_with_backoff(tmp_path: Path, caplog) -> None:
    chain, clock = FakeChain(OSError("unreachable"), [], [], CHAIN), Clock()
    source = AutoUniverse(UniverseFileSource(tmp_path), chain, refresh_s=600, retry_s=15, clock=clock)
    with pytest.raises(OSError, match="unreachable"):
        source()
    clock.now = 14
    assert source() == [] and chain.calls == 1  # still backing off: nothing asked, nothing followed yet
    clock.now = 15
    with pytest.raises(LookupError, match="Deribit lists no options"):
        source()
    clock.now = 15 + 29
    source()
    assert chain.calls == 2
    clock.now = 15 + 30  # the wait doubled
    with pytest.raises(LookupError):
        source()
    clock.now = 45 + 60
    assert source() == CHAIN and chain.calls == 4
    assert [m for m in caplog.messages if "live chain unavailable" in m] == [
        "live chain unavailable; asking Deribit again in 15 s",
        "live chain unavailable; asking Deribit again in 30 s",
        "live chain unavailable; asking Deribit again in 60 s",
    ]


@pytest.fixture
def deribit_listing_nothing() -> Iterator[str]:
    """A Deribit that answers every request, ``public/get_instruments`` with no option at all."""

    async def answer(connection) -> None:
        async for frame in connection:
            request = msgspec.json.decode(frame)
            await connection.send(msgspec.json.encode({"jsonrpc": "2.0", "id": request.get("id"), "result": []}))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        return await serve(answer, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/api/v2"
    server.close()
    asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_auto_with_an_empty_listing_warns_and_shows_in_status_metrics_and_coverage(
    deribit_listing_nothing: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, caplog
) -> None:
    settings = capture_settings(
        deribit_listing_nothing,
        kafka_bootstrap,
        kafka_topic,
        **{"deribit.instruments": "auto", "discovery.universe_path": str(tmp_path / "no-universe")},
    )
    caplog.set_level(logging.WARNING)
    with EngineThread(build_engine(settings)) as capture:
        stats = wait_until(lambda: (s := capture.engine.stats()).source_failures and s, 10, message="a failed read")
        body = urllib.request.urlopen(f"http://127.0.0.1:{capture.engine.metrics_port}/metrics", timeout=5).read()
    assert (stats.instruments, stats.connections) == (0, 0)
    assert "Deribit lists no options" in stats.source_problem
    assert any(r.levelno == logging.WARNING and "live chain unavailable" in r.getMessage() for r in caplog.records)
    assert any("instrument source failed (Deribit lists no options" in r.getMessage() for r in caplog.records)
    assert "NO INSTRUMENTS (instrument source failed (Deribit lists no options" in status_line(
        stats, rates(stats, stats)
    )
    text = body.decode()
    assert re.search(r"^optionstream_capture_source_failures_total [1-9]", text, re.MULTILINE), text
    assert "optionstream_capture_instruments 0.0" in text
    values = observation_values(stats, None, capture.engine.instruments, kafka_topic)
    verdict = coverage([Observed(stats.taken_at, values)], None, 1.0)
    assert not verdict.passed
    assert "capture follows no instrument: its instrument source failed or listed nothing" in verdict.description
