"""The option universe: the real chains' shape, rolling with an injected clock, scaling."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from optionstream_pipeline.deribit.instruments import parse_option_name
from optionstream_pipeline.simulator.universe import (
    Universe,
    UniverseSettings,
    expiry_schedule,
    strike_step,
)
from optionstream_pipeline_tests.support.fixtures import DERIBIT_FIXTURES as FIXTURES


def at(year: int, month: int, day: int, hour: int = 12) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def fixture_btc(name: str) -> list[dict]:
    return [i for i in json.loads((FIXTURES / name).read_text()) if i["base_currency"] == "BTC"]


@pytest.mark.parametrize(
    ("fixture", "now"),
    [("deribit.option.2025-05-08.json", at(2025, 5, 8)), ("deribit.option.2024-03-01.json", at(2024, 3, 1))],
)
def test_schedule_and_periods_match_the_real_chain_of_that_day(fixture: str, now: float) -> None:
    real = {(i["expiration_timestamp"], i["settlement_period"]) for i in fixture_btc(fixture)}
    universe = Universe(UniverseSettings())
    universe.populate(now, 60_000.0)
    ours = {(i.expiration_timestamp_ms, i.settlement_period) for i in universe.live.values()}
    assert ours == real
    assert 700 <= len(universe.live) <= 1100


def test_instrument_objects_have_the_real_fields_and_types() -> None:
    real = fixture_btc("deribit.option.2025-05-08.json")[0]
    universe = Universe(UniverseSettings())
    universe.populate(at(2025, 5, 8), 97_000.0)
    ours = universe.instruments_json()
    assert len({i["instrument_id"] for i in ours}) == len(ours)
    for obj in ours[:50]:
        assert obj.keys() == real.keys()
        assert {k: type(v) for k, v in obj.items()} == {k: type(v) for k, v in real.items()}
        assert parse_option_name(obj["instrument_name"]).expiration_timestamp_ms == obj["expiration_timestamp"]
        assert obj["creation_timestamp"] < obj["expiration_timestamp"]
        assert obj["tick_size_steps"] == [{"above_price": 0.005, "tick_size": 0.0005}]


def test_every_expiry_is_at_0800_utc_and_has_calls_and_puts() -> None:
    universe = Universe(UniverseSettings())
    universe.populate(at(2025, 11, 3, 7), 110_000.0)
    by_expiry: dict[date, set[str]] = {}
    for instrument in universe.live.values():
        moment = datetime.fromtimestamp(instrument.expiration_timestamp_ms / 1000, UTC)
        assert (moment.hour, moment.minute) == (8, 0)
        by_expiry.setdefault(instrument.expiry, set()).add(instrument.option_type)
    assert all(types == {"call", "put"} for types in by_expiry.values())
    # Before 08:00 today's expiry is still listed.
    assert date(2025, 11, 3) in by_expiry


def test_longer_tenors_have_wider_strike_spacing() -> None:
    steps = [strike_step(100_000.0, days) for days in (1, 7, 30, 90, 300)]
    assert steps == sorted(steps) and steps[0] < steps[-1]


def test_rolling_past_0800_expires_the_nearest_daily_and_lists_a_new_one() -> None:
    universe = Universe(UniverseSettings())
    universe.populate(at(2025, 5, 8), 97_000.0)
    nearest = universe.nearest_expiry()
    assert nearest == date(2025, 5, 9)
    assert universe.roll(at(2025, 5, 9, 7), 97_000.0) == []  # nothing due before 08:00
    events = universe.roll(at(2025, 5, 9, 8) + 1, 97_000.0)
    expired = {e.instrument_name for e in events if e.state == "closed"}
    created = {e.instrument_name for e in events if e.state == "created"}
    assert expired and all(parse_option_name(n).expiry == nearest for n in expired)
    assert {e.instrument_name for e in events if e.state == "settled"} == expired
    assert created and {parse_option_name(n).expiry for n in created} == {date(2025, 5, 12)}
    live_names = {i["instrument_name"] for i in universe.instruments_json(expired=False)}
    assert not expired & live_names and created <= live_names
    assert {i["instrument_name"] for i in universe.instruments_json(expired=True)} == expired
    assert all(not i["is_active"] for i in universe.instruments_json(expired=True))


def test_max_instruments_scales_down_to_near_the_money_of_near_expiries() -> None:
    universe = Universe(UniverseSettings(max_instruments=10))
    universe.populate(at(2025, 5, 8), 97_000.0)
    assert len(universe.live) == 10
    assert all(abs(i.strike - 97_000) <= 2_000 for i in universe.live.values())
    universe.roll(at(2025, 5, 10, 9), 97_000.0)
    assert len(universe.live) <= 10


def test_explicit_instruments_stay_live_even_when_historical() -> None:
    names = ("BTC-24SEP21-8000-P", "BTC-31DEC21-34000-P")
    universe = Universe(UniverseSettings(instruments=names))
    universe.populate(at(2025, 5, 8), 97_000.0)
    assert tuple(universe.live) == names
    assert universe.roll(at(2025, 6, 1), 97_000.0) == []
    assert [e.state for e in universe.expire(names[0], at(2025, 6, 1))] == ["closed", "settled"]
    assert tuple(universe.live) == names[1:]


def test_manual_roll_and_create_expiry() -> None:
    universe = Universe(UniverseSettings(max_instruments=20))
    now = at(2025, 5, 8)
    universe.populate(now, 97_000.0)
    nearest = universe.nearest_expiry()
    listed_before = {i.expiry for i in universe.live.values()}
    events = universe.roll_nearest_expiry(now)
    assert events and nearest not in {i.expiry for i in universe.live.values()}
    assert universe.roll(now + 1, 97_000.0) == []  # a rolled expiry is not listed again
    created = universe.create_expiry(now, 97_000.0)
    assert created and all(e.state == "created" for e in created)
    (new_expiry,) = {parse_option_name(e.instrument_name).expiry for e in created}
    assert new_expiry not in listed_before and new_expiry > date(2025, 5, 8)
    explicit = universe.create_expiry(now, 97_000.0, date(2025, 8, 1))
    assert {parse_option_name(e.instrument_name).expiry for e in explicit} == {date(2025, 8, 1)}


def test_schedule_is_strictly_in_the_future() -> None:
    for hour in (0, 7, 8, 9, 23):
        now = at(2025, 5, 9, hour)
        first = expiry_schedule(now, UniverseSettings())[0]
        assert datetime(first.year, first.month, first.day, 8, tzinfo=UTC).timestamp() > now
