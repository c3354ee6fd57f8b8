"""Discovery filters: tolerant parsing of instrument objects and each filter rule, without Dagster."""

from __future__ import annotations

from datetime import UTC, date, datetime

from optionstream_pipeline.config import DiscoveryFilters
from optionstream_pipeline.deribit.instruments import format_option_name
from optionstream_pipeline.discovery.filters import Listing, parse_listing, select_instruments
from optionstream_pipeline.discovery.underlying import estimate_from_strikes

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def listing(expiry: date, strike: float, kind: str = "call") -> Listing:
    name = format_option_name("BTC", expiry, strike, kind)
    moment = datetime(expiry.year, expiry.month, expiry.day, 8, tzinfo=UTC)
    return Listing(name, int(moment.timestamp() * 1000), strike, kind)


def chain() -> list[Listing]:
    expiries = [date(2026, 1, 6), date(2026, 1, 30), date(2026, 6, 26), date(2027, 12, 31)]
    strikes = [50_000, 90_000, 100_000, 110_000, 200_000]
    return [listing(e, s, k) for e in expiries for s in strikes for k in ("call", "put")]


def test_parse_listing_reads_a_real_object() -> None:
    item = {
        "instrument_name": "BTC-9MAY25-70000-C",
        "kind": "option",
        "expiration_timestamp": 1746777600000,
        "strike": 70000.0,
        "option_type": "call",
        "some_field_from_2030": {"nested": True},
    }
    assert parse_listing(item) == Listing("BTC-9MAY25-70000-C", 1746777600000, 70000.0, "call")


def test_parse_listing_falls_back_to_the_name_when_fields_are_missing() -> None:
    parsed = parse_listing({"instrument_name": "BTC-9MAY25-70000-P"})
    assert parsed is not None
    assert parsed.strike == 70000.0
    assert parsed.option_type == "put"
    assert parsed.expiration_ms == 1746777600000  # 08:00 UTC


def test_parse_listing_skips_what_is_not_an_option() -> None:
    assert parse_listing({"instrument_name": "BTC-PERPETUAL", "kind": "future"}) is None
    assert parse_listing({"instrument_name": "not-a-name"}) is None
    assert parse_listing({"kind": "option"}) is None


def test_expiry_window() -> None:
    rules = DiscoveryFilters(min_days_to_expiry=1, max_days_to_expiry=200, strike_band=None)
    selection = select_instruments(chain(), rules, 100_000, NOW_MS)
    expiries = {item.name.split("-")[1] for item in selection.selected}
    assert expiries == {"30JAN26", "26JUN26"}
    assert selection.dropped["outside the expiry window"] == 20


def test_strike_band_around_the_underlying() -> None:
    rules = DiscoveryFilters(strike_band=0.15, max_days_to_expiry=3650)
    selection = select_instruments(chain(), rules, 100_000, NOW_MS)
    assert {item.strike for item in selection.selected} == {90_000, 100_000, 110_000}
    assert selection.dropped["outside the strike band"] == 16


def test_no_underlying_means_no_band_and_says_so() -> None:
    selection = select_instruments(chain(), DiscoveryFilters(strike_band=0.1, max_days_to_expiry=3650), None, NOW_MS)
    assert len(selection.selected) == 40
    assert selection.strike_band_applied is False


def test_cap_keeps_nearest_expiries_and_nearest_the_money_first() -> None:
    rules = DiscoveryFilters(strike_band=None, max_instruments=4, max_days_to_expiry=3650)
    selection = select_instruments(chain(), rules, 100_000, NOW_MS)
    assert selection.names == [
        "BTC-6JAN26-100000-C",
        "BTC-6JAN26-100000-P",
        "BTC-6JAN26-110000-C",
        "BTC-6JAN26-110000-P",
    ]
    assert selection.dropped["over max_instruments"] == 36


def test_include_bypasses_filters_and_exclude_removes() -> None:
    far = "BTC-31DEC27-200000-C"
    excluded = "BTC-6JAN26-100000-C"
    rules = DiscoveryFilters(
        max_days_to_expiry=30, strike_band=0.15, include=[far, "BTC-1JAN30-1000-C"], exclude=[excluded]
    )
    selection = select_instruments(chain(), rules, 100_000, NOW_MS)
    assert far in selection.names
    assert excluded not in selection.names
    assert selection.dropped["excluded"] == 1
    assert selection.missing_includes == ["BTC-1JAN30-1000-C"]


def test_included_names_win_the_cap() -> None:
    far = "BTC-31DEC27-200000-P"
    rules = DiscoveryFilters(strike_band=None, max_instruments=2, max_days_to_expiry=3650, include=[far])
    assert far in select_instruments(chain(), rules, 100_000, NOW_MS).names


def test_already_expired_listings_are_ignored() -> None:
    old = listing(date(2026, 1, 1), 100_000)
    assert select_instruments([old], DiscoveryFilters(strike_band=None), 100_000, NOW_MS).selected == []


def test_underlying_estimate_is_the_middle_strike_of_the_nearest_expiry() -> None:
    assert estimate_from_strikes(chain()) == 100_000
    assert estimate_from_strikes([]) is None
