"""The replay's pure core: archive rows in, Deribit frames out, on a clock the test moves by hand.

The Exchange and Sessions are the simulator's own (no sockets): a test subscribes through JSON-RPC
frames, as a client would, and reads each session's outbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from optionstream_pipeline.archive.ticker_schema import DERIBIT_COLUMNS
from optionstream_pipeline.replay.source import (
    HIGH_WATER,
    ArchiveSource,
    ListFeed,
    SeedBook,
    book_events,
    epoch_us,
    merged,
    ticker_events,
)
from optionstream_pipeline.simulator.exchange import Exchange
from optionstream_pipeline.simulator.settings import SimulatorSettings

T1 = datetime(2025, 12, 1, 8, 0, tzinfo=UTC)
T2 = T1 + timedelta(seconds=10)
X, Y = "BTC-27JUN25-100000-C", "BTC-27JUN25-100000-P"
BOOK_X, BOOK_Y, TICKER_X = f"book.{X}.100ms", f"book.{Y}.100ms", f"ticker.{X}.100ms"


class FakeIO:
    def wake(self) -> None: ...
    def abort(self) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


def at(ms: int) -> datetime:
    return T1 + timedelta(milliseconds=ms)


def us(ms: int) -> int:
    return epoch_us(at(ms))


class Rows:
    """The book table's rows of one partition, as the replay reads them (``loading.BOOK_COLUMNS``), in
    offset order."""

    def __init__(self, partition: int = 0) -> None:
        self.partition, self.offset, self.rows = partition, 0, []

    def record(self, kind: str, name: str, ms: int, change_id=None, prev=None, bids=(), asks=(), session="a") -> None:
        base = {"symbol": name, "interval": "100ms", "record_type": kind, "book_time_us": us(ms),
                "timestamp_us": us(ms), "change_id": change_id, "prev_change_id": prev, "capture_id": session,
                "topic_incarnation": 0, "kafka_partition": self.partition, "kafka_offset": self.offset}  # fmt: skip
        levels = [("bid", i, v) for i, v in enumerate(bids)] + [("ask", i, v) for i, v in enumerate(asks)]
        for side, level, (action, price, amount) in levels:
            self.rows.append(base | {"side": side, "level": level, "action": action, "price": price, "amount": amount})
        if not levels:
            self.rows.append(base | {"side": None, "level": None, "action": None, "price": None, "amount": None})
        self.offset += 1


def ticker_row(name: str, ms: int, offset: int, index: float = 100_000.0) -> dict:
    """A ticker table row as the replay reads it (``loading.TICKER_COLUMNS``): Deribit's nulls but two."""
    row = dict.fromkeys(DERIBIT_COLUMNS)
    where = {"topic_incarnation": 0, "kafka_partition": 0, "kafka_offset": offset}
    return row | where | {"symbol": name, "interval": "100ms", "timestamp_us": us(ms), "ticker_time_us": us(ms),
                          "mark_price": 0.02, "index_price": index}  # fmt: skip


T1_MS = int(T1.timestamp() * 1000) - 5  # the seeded book's last change, 5 ms before T1
SEED_X = SeedBook(X, "100ms", True, 10, T1_MS, [(0.02, 2.0), (0.01, 1.0)], [(0.03, 3.0)], "a")


def replay(
    rows: Rows | list, tickers=(), seeds=(SEED_X,), speed: float | None = 1.0, channels=None, delay=0.0, ends=None
):
    """An Exchange serving an ArchiveSource of these rows (the clock: the ``now`` the test passes)."""
    records = list(book_events(rows.rows if isinstance(rows, Rows) else rows))
    events = list(merged(records, ticker_events(tickers)))
    if channels is None:
        channels = {e.channel for e in events}
    source = ArchiveSource(ListFeed(events), T1, T2, seeds, channels, speed, delay, ends)
    exchange = Exchange(SimulatorSettings(control_methods=False, clock=lambda: 0.0), source, 0.0)
    return exchange, source


def connect(exchange: Exchange):
    return exchange.open_session(FakeIO(), "test", 0.0)


def rpc(request_id: int, method: str, params: dict) -> bytes:
    return msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def request(exchange: Exchange, session, method: str, now: float = 0.0, **params):
    exchange.handle_frame(session, rpc(1, method, params), now)
    return received(session)[0]["result"]


def subscribe(exchange: Exchange, session, *channels: str, now: float = 0.0) -> list[str]:
    exchange.handle_frame(session, rpc(7, "public/subscribe", {"channels": list(channels)}), now)
    frames = list(session.outbox)
    session.outbox.clear()
    reply = msgspec.json.decode(frames[0])
    for frame in frames[1:]:
        session.outbox.append(frame)  # the notifications after the reply stay for received()
    return reply["result"]


def received(session) -> list[dict]:
    frames = [msgspec.json.decode(frame) for frame in session.outbox]
    session.outbox.clear()
    return frames


def notifications(session) -> list[tuple[str, dict]]:
    frames = received(session)
    return [(f["params"]["channel"], f["params"]["data"]) for f in frames if f.get("method") == "subscription"]


def summary(session) -> list[tuple]:
    """(channel, type, change_id, prev_change_id) of each notification, tickers as (channel, timestamp)."""
    out = []
    for channel, data in notifications(session):
        if channel.startswith("ticker."):
            out.append((channel, data["timestamp"]))
        else:
            out.append((channel, data["type"], data["change_id"], data.get("prev_change_id")))
    return out


def test_snapshot_at_the_start_then_changes_with_their_original_ids_and_levels() -> None:
    rows = Rows()
    rows.record("change", X, 100, 12, 10, bids=[("change", 0.02, 5.0), ("new", 0.015, 1.0)], asks=[("delete", 0.03, 0)])
    rows.record("change", X, 200, 15, 12, asks=[("new", 0.04, 1.0)])
    exchange, _ = replay(rows)
    session = connect(exchange)
    assert subscribe(exchange, session, BOOK_X) == [BOOK_X]
    [(channel, snapshot)] = notifications(session)
    assert (channel, snapshot) == (BOOK_X, {"type": "snapshot", "timestamp": T1_MS, "instrument_name": X,
        "change_id": 10, "bids": [["new", 0.02, 2.0], ["new", 0.01, 1.0]], "asks": [["new", 0.03, 3.0]]})  # fmt: skip
    exchange.advance(0.25)
    changes = [data for _, data in notifications(session)]
    bids, asks = [["change", 0.02, 5.0], ["new", 0.015, 1.0]], [["delete", 0.03, 0]]
    assert changes[0] == {"type": "change", "timestamp": T1_MS + 105, "prev_change_id": 10, "instrument_name": X,
                          "change_id": 12, "bids": bids, "asks": asks}  # fmt: skip
    assert [(c["change_id"], c["prev_change_id"]) for c in changes] == [(12, 10), (15, 12)]


def test_order_across_instruments_partitions_and_tables() -> None:
    p0, p1 = Rows(0), Rows(1)
    p0.record("change", X, 100, 12, 10, bids=[("new", 0.011, 1.0)])
    p1.record("snapshot", Y, 100, 50, asks=[("new", 0.05, 1.0)])
    p0.record("change", X, 300, 13, 12, bids=[("new", 0.012, 1.0)])
    p1.record("change", Y, 200, 51, 50, asks=[("new", 0.06, 1.0)])
    stream = sorted(p0.rows + p1.rows, key=lambda r: (r["book_time_us"], r["kafka_partition"], r["kafka_offset"]))
    exchange, _ = replay(stream, tickers=[ticker_row(X, 150, 0), ticker_row(X, 300, 1)])
    session = connect(exchange)
    subscribe(exchange, session, BOOK_X, BOOK_Y, TICKER_X)
    exchange.advance(1.0)
    assert summary(session) == [
        (BOOK_X, "snapshot", 10, None),
        (BOOK_X, "change", 12, 10),
        (BOOK_Y, "snapshot", 50, None),  # partition 1 after partition 0 at the same time
        (TICKER_X, T1_MS + 5 + 150),
        (BOOK_Y, "change", 51, 50),
        (BOOK_X, "change", 13, 12),  # a book record before a ticker of the same time
        (TICKER_X, T1_MS + 5 + 300),
    ]


def test_a_ticker_is_deribits_ticker_object_and_feeds_the_index() -> None:
    exchange, source = replay(Rows(), tickers=[ticker_row(X, 100, 0, index=101_234.5)], seeds=())
    session = connect(exchange)
    assert source.index_price() is None
    subscribe(exchange, session, TICKER_X)
    exchange.advance(1.0)
    [(_, data)] = notifications(session)
    assert data["instrument_name"] == X and data["mark_price"] == 0.02 and data["index_price"] == 101_234.5
    assert set(data["greeks"]) == {"delta", "gamma", "vega", "theta", "rho"} and "stats" in data
    assert source.index_price() == 101_234.5


def test_a_resync_snapshot_is_sent_and_markers_are_not() -> None:
    rows = Rows()
    rows.record("gap", X, 100, 20, 18)
    rows.record("change", X, 120, 21, 20, bids=[("new", 0.019, 1.0)])  # after the gap: held back
    rows.record("snapshot", X, 150, 22, bids=[("new", 0.018, 4.0)])
    rows.record("change", X, 200, 23, 22, bids=[("change", 0.018, 5.0)])
    rows.record("disconnect", X, 250)
    rows.record("snapshot", X, 300, 30, asks=[("new", 0.05, 1.0)])
    rows.record("unsubscribed", X, 400)
    exchange, source = replay(rows)
    session = connect(exchange)
    subscribe(exchange, session, BOOK_X)
    exchange.advance(1.0)
    assert summary(session) == [
        (BOOK_X, "snapshot", 10, None),
        (BOOK_X, "snapshot", 22, None),
        (BOOK_X, "change", 23, 22),
        (BOOK_X, "snapshot", 30, None),
    ]
    assert (source.played.markers, source.played.held_back) == (3, 1)


def test_a_book_without_a_snapshot_sends_nothing_until_its_next_snapshot() -> None:
    rows = Rows()
    rows.record("change", Y, 100, 41, 40, asks=[("new", 0.05, 1.0)])
    rows.record("snapshot", Y, 200, 42, asks=[("new", 0.06, 1.0)])
    rows.record("change", Y, 300, 43, 42, asks=[("new", 0.07, 1.0)])
    unreliable = SeedBook(Y, "100ms", False, 40, 0, [], [(0.05, 9.0)])  # e.g. after a gap, before T1
    exchange, _ = replay(rows, seeds=(unreliable,))
    early, late = connect(exchange), connect(exchange)
    subscribe(exchange, early, BOOK_Y)
    assert notifications(early) == []  # no snapshot: the book is not reliable at T1
    exchange.advance(0.15)
    subscribe(exchange, late, BOOK_Y, now=0.15)
    assert notifications(early) == notifications(late) == []  # its change is held back
    exchange.advance(0.35)
    assert summary(early) == summary(late) == [(BOOK_Y, "snapshot", 42, None), (BOOK_Y, "change", 43, 42)]


def test_a_capture_session_killed_without_markers_leaves_its_books_unknown_after_its_last_record() -> None:
    rows = Rows()
    rows.record("change", X, 100, 12, 10, bids=[("change", 0.02, 7.0)])
    rows.record("snapshot", Y, 150, 50, asks=[("new", 0.05, 1.0)])  # session a's last record: then it is killed
    rows.record("snapshot", Y, 400, 60, asks=[("new", 0.06, 1.0)], session="b")  # the next session: Y only
    exchange, source = replay(rows, ends={"a": epoch_us(at(150)), "b": epoch_us(at(400))})
    early, late = connect(exchange), connect(exchange)
    subscribe(exchange, early, BOOK_X, BOOK_Y)
    exchange.advance(0.3)  # the clock stands past session a's last record
    subscribe(exchange, late, BOOK_X, BOOK_Y, now=0.3)
    assert notifications(late) == []  # neither book is known now: books_at calls both unreliable
    exchange.advance(0.4)  # the clock at session b's snapshot
    expected = [(BOOK_X, "snapshot", 10, None), (BOOK_X, "change", 12, 10), (BOOK_Y, "snapshot", 50, None)]
    assert summary(early) == [*expected, (BOOK_Y, "snapshot", 60, None)]
    assert summary(late) == [(BOOK_Y, "snapshot", 60, None)]  # Y known again from session b's snapshot
    assert source.played.sessions_ended == 1
    exchange.advance(0.6)  # session b's last record passed too: it ended without markers as well
    subscribe(exchange, connect(exchange), BOOK_Y, now=0.6)
    assert source.played.sessions_ended == 2 and not source.books[BOOK_Y].synced


def test_speed_plays_exchange_time_faster_on_the_clock_passed_in() -> None:
    rows = Rows()
    rows.record("change", X, 1000, 12, 10, bids=[("new", 0.011, 1.0)])
    rows.record("change", X, 4000, 13, 12, bids=[("new", 0.012, 1.0)])
    exchange, source = replay(rows, speed=2.0)
    session = connect(exchange)
    exchange.advance(100.0)
    assert source.started_s is None  # the clock waits for the first subscription
    subscribe(exchange, session, BOOK_X, now=100.0)
    received(session)
    exchange.advance(100.49)
    assert summary(session) == []
    exchange.advance(100.51)  # 1.02 s of exchange time played
    assert summary(session) == [(BOOK_X, "change", 12, 10)]
    exchange.advance(101.99)
    assert summary(session) == []
    exchange.advance(102.01)
    assert summary(session) == [(BOOK_X, "change", 13, 12)]
    assert not source.finished
    exchange.advance(105.01)  # T2 = T1 + 10 s reached
    assert source.finished


def test_as_fast_as_possible_sends_without_waiting_but_waits_for_a_slow_reader() -> None:
    rows = Rows()
    for n in range(HIGH_WATER + 500):
        rows.record("change", X, 1 + n, 11 + n, 10 + n, bids=[("change", 0.02, float(n))])
    exchange, source = replay(rows, speed=None)
    session = connect(exchange)
    subscribe(exchange, session, BOOK_X)
    exchange.advance(0.0)
    assert len(session.outbox) == HIGH_WATER  # the snapshot and changes up to the high-water mark
    assert not source.finished
    frames = received(session)
    exchange.advance(0.0)
    frames += received(session)
    ids = [f["params"]["data"]["change_id"] for f in frames]
    assert ids == [10, *range(11, 11 + HIGH_WATER + 500)]
    assert source.finished and source.position_us == source.stop_us


def test_two_sessions_stay_in_step_and_a_late_joiner_gets_the_book_as_it_stands() -> None:
    rows = Rows()
    rows.record("change", X, 1000, 12, 10, bids=[("change", 0.02, 7.0)])
    rows.record("change", X, 2000, 13, 12, asks=[("new", 0.04, 1.0)])
    exchange, _ = replay(rows)
    first, second, late = connect(exchange), connect(exchange), connect(exchange)
    subscribe(exchange, first, BOOK_X, now=10.0)
    subscribe(exchange, second, BOOK_X, now=10.5)  # the clock is already running: in step with the first
    exchange.advance(11.5)
    expected = [(BOOK_X, "snapshot", 10, None), (BOOK_X, "change", 12, 10)]
    assert summary(first) == expected and summary(second) == expected
    subscribe(exchange, late, BOOK_X, now=11.5)
    [(_, snapshot)] = notifications(late)
    assert snapshot["change_id"] == 12 and snapshot["bids"] == [["new", 0.02, 7.0], ["new", 0.01, 1.0]]
    exchange.advance(12.5)
    assert summary(first) == summary(second) == summary(late) == [(BOOK_X, "change", 13, 12)]


def test_subscriptions_within_the_start_delay_all_get_the_books_at_the_start() -> None:
    rows = Rows()
    rows.record("change", X, 100, 12, 10, bids=[("change", 0.02, 7.0)])
    exchange, source = replay(rows, delay=1.0)
    first, second = connect(exchange), connect(exchange)
    subscribe(exchange, first, BOOK_X, now=5.0)
    exchange.advance(5.9)
    subscribe(exchange, second, BOOK_X, now=5.9)  # the clock has not started: the book at T1 still
    assert source.clock_us(5.9) == source.start_us
    assert summary(first) == summary(second) == [(BOOK_X, "snapshot", 10, None)]
    exchange.advance(6.05)
    assert summary(first) == summary(second) == []
    exchange.advance(6.11)  # 1 s after the first subscription, then 100 ms of exchange time
    assert summary(first) == summary(second) == [(BOOK_X, "change", 12, 10)]


def test_unsubscribe_stops_delivery() -> None:
    rows = Rows()
    rows.record("change", X, 1000, 12, 10, bids=[("change", 0.02, 7.0)])
    rows.record("change", X, 2000, 13, 12, asks=[("new", 0.04, 1.0)])
    exchange, _ = replay(rows)
    session = connect(exchange)
    subscribe(exchange, session, BOOK_X)
    exchange.advance(1.5)
    assert [s[2] for s in summary(session)] == [10, 12]
    assert request(exchange, session, "public/unsubscribe", 1.5, channels=[BOOK_X]) == [BOOK_X]
    exchange.advance(5.0)
    assert summary(session) == []


def test_only_the_windows_channels_are_accepted() -> None:
    exchange, _ = replay(Rows(), channels={BOOK_Y})
    session = connect(exchange)
    unknown = ["book.BTC-27JUN25-1-C.100ms", f"book.{X}.raw", f"ticker.{Y}.100ms", f"book.{X}.agg2"]
    assert subscribe(exchange, session, BOOK_X, *unknown, BOOK_Y) == [BOOK_X, BOOK_Y]  # X: in the book at T1


def test_get_instruments_lists_the_windows_options_as_of_the_start() -> None:
    exchange, source = replay(Rows(), channels={BOOK_Y, f"ticker.{Y}.100ms"})
    session = connect(exchange)
    active = request(exchange, session, "public/get_instruments", currency="BTC", kind="option")
    assert [i["instrument_name"] for i in active] == [X, Y]  # X: in the book at T1; Y: in the window
    assert all(i["is_active"] and i["kind"] == "option" and i["base_currency"] == "BTC" for i in active)
    assert active[0]["strike"] == 100_000.0 and active[0]["option_type"] == "call"
    assert active[0]["expiration_timestamp"] == int(datetime(2025, 6, 27, 8, tzinfo=UTC).timestamp() * 1000)
    assert all(i["creation_timestamp"] < source.start_us // 1000 for i in active)
    assert request(exchange, session, "public/get_instruments", currency="BTC", kind="option", expired=True) == []
    assert request(exchange, session, "public/get_instruments", currency="ETH") == []
    assert request(exchange, session, "public/get_instruments", currency="BTC", kind="future") == []


def test_heartbeats_and_test_requests_as_deribit() -> None:
    exchange, _ = replay(Rows())
    session = connect(exchange)
    assert request(exchange, session, "public/hello", client_name="strategy")["version"]
    assert request(exchange, session, "public/set_heartbeat", 0.0, interval=10) == "ok"
    exchange.advance(10.5)
    assert [f["params"]["type"] for f in received(session)] == ["heartbeat", "test_request"]
    assert request(exchange, session, "public/test", 11.0)["version"]


def test_a_speed_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="speed must be above 0"):
        ArchiveSource(ListFeed([]), T1, T2, (), (), speed=0)


def test_get_time_is_the_replay_clock() -> None:
    rows = Rows()
    rows.record("change", X, 100, 12, 10, bids=[("change", 0.02, 7.0)])
    exchange, _ = replay(rows, speed=10.0)
    session = connect(exchange)
    start_ms = int(T1.timestamp() * 1000)
    assert request(exchange, session, "public/get_time", 50.0) == start_ms  # stands at T1 until it starts
    subscribe(exchange, session, BOOK_X, now=50.0)
    exchange.advance(50.25)
    assert summary(session) == [(BOOK_X, "snapshot", 10, None), (BOOK_X, "change", 12, 10)]
    assert request(exchange, session, "public/get_time", 50.25) == start_ms + 2_500  # 10x real time
