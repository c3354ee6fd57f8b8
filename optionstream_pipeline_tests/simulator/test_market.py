"""The book process and the ground truth, without sockets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from optionstream_pipeline.deribit.instruments import is_on_tick_grid
from optionstream_pipeline.simulator.market import (
    BookState,
    Market,
    MarketSettings,
    apply_book_message,
    ceil_to_tick,
    diff_side,
    floor_to_tick,
)
from optionstream_pipeline.simulator.universe import UniverseSettings

START = datetime(2025, 5, 8, 12, tzinfo=UTC).timestamp()


def small_market(instruments: int = 16, rate: float = 2000.0, seed: int = 3) -> Market:
    settings = MarketSettings(
        seed=seed, events_per_second=rate, history_size=5000, universe=UniverseSettings(max_instruments=instruments)
    )
    return Market(settings, START)


def run_market(market: Market, seconds: float, step: float = 0.01) -> tuple[list, list]:
    """Advance in ``step`` ticks with a flush every 100 ms; returns (raw updates, 100ms updates)."""
    raw, hundred = [], []
    now = START
    for tick in range(int(seconds / step)):
        now += step
        raw += market.advance(now)
        if tick % 10 == 9:
            hundred += market.flush(now)
    return raw, hundred


def test_full_size_market_has_realistic_books() -> None:
    market = Market(MarketSettings(seed=5), START)
    names = market.instruments()
    assert 700 <= len(names) <= 1100
    books = [market.book(n, "raw") for n in names]
    assert any(not b.bids and b.asks for b in books), "deep OTM books without bids"
    assert any(not b.bids and not b.asks for b in books), "fully empty books"
    assert sum(1 for b in books if b.bids and b.asks) > len(books) / 2


def test_prices_on_grid_bids_below_asks_amounts_one_decimal() -> None:
    market = small_market()
    raw, _ = run_market(market, 3.0)
    assert len(raw) > 3000
    for name in market.instruments():
        for interval in ("raw", "100ms"):
            book = market.book(name, interval)
            for price, amount in [*book.bids.items(), *book.asks.items()]:
                assert is_on_tick_grid(price) and price >= 0.0001, price
                assert amount > 0 and round(amount, 1) == amount, amount
            if book.bids and book.asks:
                assert max(book.bids) < min(book.asks)


def test_tick_rounding_helpers_respect_the_step_at_0_005() -> None:
    assert floor_to_tick(0.0052) == 0.005 and ceil_to_tick(0.00501) == 0.0055
    assert floor_to_tick(0.00493) == 0.0049 and ceil_to_tick(0.00493) == 0.005
    assert all(is_on_tick_grid(f(p)) for f in (floor_to_tick, ceil_to_tick) for p in (0.0001, 0.0049, 0.0123, 0.2))


def test_one_shared_change_id_counter_across_books() -> None:
    market = small_market()
    raw, _ = run_market(market, 1.0)
    ids = [data["change_id"] for _, _, data in raw]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    per_book: dict[str, list[int]] = {}
    for name, _, data in raw:
        per_book.setdefault(name, []).append(data["change_id"])
    gaps = [b - a for seq in per_book.values() for a, b in itertools.pairwise(seq)]
    assert any(gap > 1 for gap in gaps), "per-instrument change_ids must not be consecutive"


def test_raw_messages_replay_to_the_ground_truth_at_every_change_id() -> None:
    market = small_market(instruments=6, rate=600)
    snapshots = {n: market.snapshot(n, "raw") for n in market.instruments()}
    raw, _ = run_market(market, 2.0)
    states = {n: apply_book_message(None, s) for n, s in snapshots.items()}
    touched = 0
    for name, interval, data in raw:
        assert interval == "raw"
        assert data["prev_change_id"] == states[name].change_id
        assert len(data["bids"]) + len(data["asks"]) >= 1
        states[name] = apply_book_message(states[name], data)
        truth = market.book_at(name, "raw", data["change_id"])
        assert (truth.bids, truth.asks) == (states[name].bids, states[name].asks)
        touched += len(data["bids"]) + len(data["asks"]) > 1
    assert touched, "some events touch several levels"
    for name, state in states.items():
        assert market.book(name, "raw") == state


def test_100ms_net_diffs_rebuild_the_published_truth_at_every_change_id() -> None:
    market = small_market(instruments=6, rate=600)
    snapshots = {n: market.snapshot(n, "100ms") for n in market.instruments()}
    raw, hundred = run_market(market, 3.0)
    assert len(hundred) < len(raw), "100ms messages net several events"
    states = {n: apply_book_message(None, s) for n, s in snapshots.items()}
    actions = set()
    for name, interval, data in hundred:
        assert interval == "100ms" and data["type"] == "change"
        assert data["prev_change_id"] == states[name].change_id
        before = states[name]
        states[name] = apply_book_message(before, data)
        truth = market.book_at(name, "100ms", data["change_id"])
        assert truth == states[name]
        # The published state equals the raw state at that change_id (a net diff of the events between).
        assert market.book_at(name, "raw", data["change_id"]) == truth
        for side, old in (("bids", before.bids), ("asks", before.asks)):
            for action, price, amount in data[side]:
                actions.add(action)
                assert (action == "new") == (price not in old)
                assert action != "delete" or amount == 0.0
    assert actions == {"new", "change", "delete"}
    for name, state in states.items():
        assert market.book(name, "100ms") == state


def test_pause_freezes_books_and_settles_after_a_flush() -> None:
    market = small_market()
    run_market(market, 0.5)
    market.advance(START + 0.55)
    market.pause()
    assert not market.is_settled() or not market._dirty
    assert market.advance(START + 2.0) == []
    market.flush(START + 2.0)
    assert market.is_settled()
    for name in market.instruments():
        raw, published = market.book(name, "raw"), market.book(name, "100ms")
        assert (raw.bids, raw.asks) == (published.bids, published.asks)
    market.resume()
    assert market.advance(START + 2.5)


def test_history_is_bounded_and_book_at_says_none_beyond_it() -> None:
    settings = MarketSettings(
        seed=2, events_per_second=2000, history_size=8, universe=UniverseSettings(max_instruments=2)
    )
    market = Market(settings, START)
    name = market.instruments()[0]
    first = market.book(name, "raw").change_id
    run_market(market, 1.0)
    assert market.book_at(name, "raw", first) is None
    latest = market.book(name, "raw")
    assert market.book_at(name, "raw", latest.change_id) == latest
    assert market.book_at(name, "raw", latest.change_id + 10**6) == latest


def test_same_seed_same_market() -> None:
    first, second = small_market(seed=9), small_market(seed=9)
    assert run_market(first, 0.5) == run_market(second, 0.5)


def test_ticker_top_of_book_equals_the_book_and_has_greeks() -> None:
    market = small_market()
    run_market(market, 0.5)
    for name in market.instruments():
        for interval in ("raw", "100ms"):
            ticker = market.ticker(name, interval)
            book = market.book(name, interval)
            assert (ticker["best_bid_price"], ticker["best_bid_amount"]) == (book.best_bid or (0.0, 0.0))
            assert (ticker["best_ask_price"], ticker["best_ask_amount"]) == (book.best_ask or (0.0, 0.0))
            assert set(ticker["greeks"]) == {"delta", "gamma", "vega", "theta", "rho"}
            assert ticker["mark_price"] > 0 and ticker["mark_iv"] > 0 and ticker["instrument_name"] == name
            if book.bids:
                assert ticker["bid_iv"] <= ticker["mark_iv"] + 200


def test_lifecycle_stops_books_and_keeps_their_last_truth() -> None:
    market = small_market()
    victim = market.instruments()[0]
    events = market.expire_instrument(victim, START + 1)
    assert [e.state for e in events] == ["closed", "settled"]
    assert victim not in market.instruments()
    assert all(name != victim for name, _, _ in run_market(market, 0.5)[0])
    assert isinstance(market.book(victim, "raw"), BookState)
    created = market.create_expiry(START + 1)
    assert created and all(market.is_live(e.instrument_name) for e in created)


def test_diff_side_orders_and_labels_levels() -> None:
    old = {0.01: 1.0, 0.02: 2.0, 0.03: 3.0}
    new = {0.02: 2.5, 0.03: 3.0, 0.04: 4.0}
    assert diff_side(old, new, descending=True) == [["new", 0.04, 4.0], ["change", 0.02, 2.5], ["delete", 0.01, 0.0]]
