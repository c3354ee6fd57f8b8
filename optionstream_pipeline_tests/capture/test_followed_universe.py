"""What ``instruments: auto`` follows: the discovery universe once it exists, the live chain before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from optionstream_pipeline.capture.universe import AutoUniverse, build_engine
from optionstream_pipeline.config import Settings
from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.source import UniverseFileSource
from optionstream_pipeline.discovery.store import UniverseStore

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
