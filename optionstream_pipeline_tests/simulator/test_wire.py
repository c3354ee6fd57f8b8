"""The simulator over a real WebSocket, driven by a plain JSON-RPC client."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec

from optionstream_pipeline.simulator import RateLimits
from optionstream_pipeline_tests.simulator.conftest import RpcClient, rebuild, run
from optionstream_pipeline_tests.support.waiting import async_wait_until

BOOK_KEYS = ["type", "timestamp", "prev_change_id", "instrument_name", "change_id", "bids", "asks"]


def test_100ms_books_rebuilt_by_a_client_equal_the_ground_truth(simulator) -> None:
    sim = simulator(max_instruments=8, events_per_second=400)
    names = sim.market.instruments()[:4]
    channels = [f"book.{n}.100ms" for n in names]

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            assert (await client.result("public/hello", {"client_name": "t", "client_version": "0"}))["version"]
            assert await client.result("public/subscribe", {"channels": channels}) == channels
            for channel in channels:
                await client.wait_data(channel, 6)
            sim.market.pause()
            await async_wait_until(sim.market.is_settled, 5)
            finals = {n: sim.market.book(n, "100ms") for n in names}
            await async_wait_until(
                lambda: all(client.data(f"book.{n}.100ms")[-1]["change_id"] == finals[n].change_id for n in names),
                5,
                message="client caught up",
            )
            for name in names:
                messages = client.data(f"book.{name}.100ms")
                assert messages[0]["type"] == "snapshot" and "prev_change_id" not in messages[0]
                assert all(list(m.keys()) == BOOK_KEYS for m in messages[1:])
                change_id, bids, asks = rebuild(messages)
                assert (change_id, bids, asks) == (finals[name].change_id, finals[name].bids, finals[name].asks)
            frame = next(f for f in client.frames if '"change"' in f)
            assert frame.startswith('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.')

    run(scenario())


def test_raw_needs_auth_then_every_event_chains(simulator) -> None:
    sim = simulator(max_instruments=4, events_per_second=300, client_id="me", client_secret="pw")
    name = sim.market.instruments()[0]
    channel = f"book.{name}.raw"

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            assert (await client.request("public/subscribe", {"channels": [channel]}))["error"]["code"] == 13778
            auth = await client.result(
                "public/auth", {"grant_type": "client_credentials", "client_id": "me", "client_secret": "pw"}
            )
            assert auth["token_type"] == "bearer"
            assert await client.result("public/subscribe", {"channels": [channel]}) == [channel]
            messages = await client.wait_data(channel, 15)
            rebuild(messages)
            for data in messages[1:]:
                truth = sim.market.book_at(name, "raw", data["change_id"])
                assert truth is not None and truth.change_id == data["change_id"]
            assert any(s.authed for s in sim.sessions())

    run(scenario())


def test_two_subscribers_get_identical_frames_and_tickers_match_books(simulator) -> None:
    sim = simulator(max_instruments=4, events_per_second=300)
    name = sim.market.instruments()[1]
    channels = [f"book.{name}.100ms", f"ticker.{name}.100ms"]

    async def scenario() -> None:
        async with RpcClient(sim.url) as first, RpcClient(sim.url) as second:
            await first.result("public/subscribe", {"channels": channels})
            await second.result("public/subscribe", {"channels": channels})
            await first.wait_data(channels[0], 5)
            await second.wait_data(channels[0], 5)
            common = [f for f in first.frames if '"change"' in f]
            assert common[:3] == [f for f in second.frames if '"change"' in f][:3]
            tickers = await first.wait_data(channels[1], 3)
            ticker = tickers[-1]
            for key in (
                "best_bid_price",
                "best_ask_price",
                "bid_iv",
                "ask_iv",
                "mark_iv",
                "mark_price",
                "greeks",
                "underlying_index",
                "underlying_price",
                "index_price",
                "open_interest",
                "stats",
                "state",
                "timestamp",
                "instrument_name",
            ):
                assert key in ticker

    run(scenario())


def test_protocol_errors_over_the_wire(simulator) -> None:
    sim = simulator(min_heartbeat_interval_s=10)

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            await client.ws.send("{broken")
            await async_wait_until(lambda: client.messages, 5)
            assert client.messages[0]["error"]["code"] == -32700 and "id" not in client.messages[0]
            big = msgspec.json.encode(
                {"jsonrpc": "2.0", "id": 77, "method": "public/subscribe", "params": {"channels": ["x" * 40_000]}}
            ).decode()
            await client.ws.send(big)
            reply = await async_wait_until(lambda: client.reply(77), 5)
            assert reply["error"]["code"] == -32600
            assert (await client.request("public/nope"))["error"]["code"] == -32601
            reply = await client.request("public/set_heartbeat", {"interval": 5})
            assert reply["error"]["code"] == -32602
            assert await client.result("public/test") == {"version": "1.2.26"}

    run(scenario())


def test_heartbeat_closes_only_the_client_that_ignores_test_requests(simulator) -> None:
    sim = simulator(min_heartbeat_interval_s=0.2)

    async def answer(client: RpcClient) -> None:
        answered = 0
        while not client.closed.is_set():
            pending = sum(1 for m in client.messages if m and m.get("params", {}).get("type") == "test_request")
            while answered < pending:
                await client.send("public/test")
                answered += 1
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        async with RpcClient(sim.url) as good, RpcClient(sim.url) as silent:
            assert await good.result("public/set_heartbeat", {"interval": 0.2}) == "ok"
            assert await silent.result("public/set_heartbeat", {"interval": 0.2}) == "ok"
            responder = asyncio.create_task(answer(good))
            await asyncio.wait_for(silent.closed.wait(), 3)
            kinds = [m["params"]["type"] for m in silent.messages if m.get("method") == "heartbeat"]
            assert kinds[:2] == ["heartbeat", "test_request"]
            await async_wait_until(lambda: sum(m.get("method") == "heartbeat" for m in good.messages) >= 6, 5)
            assert not good.closed.is_set()
            assert [s.heartbeat_interval for s in sim.sessions()] == [0.2]
            responder.cancel()

    run(scenario())


def test_get_instruments_and_its_own_rate_limit(simulator) -> None:
    sim = simulator(max_instruments=10, rate_limits=RateLimits(get_instruments_burst=2, get_instruments_per_s=0.01))

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            params = {"currency": "BTC", "kind": "option", "expired": False}
            instruments = await client.result("public/get_instruments", params)
            assert sorted(i["instrument_name"] for i in instruments) == sorted(sim.market.instruments())
            assert {
                "tick_size_steps",
                "instrument_id",
                "settlement_period",
                "creation_timestamp",
                "expiration_timestamp",
            } <= instruments[0].keys()
            await client.result("public/get_instruments", params)
            refused = await client.request("public/get_instruments", params)
            assert refused["error"] == {"message": "too_many_requests", "code": 10028}

    run(scenario())


def test_subscribe_rate_limit(simulator) -> None:
    sim = simulator(rate_limits=RateLimits(subscribe_burst=3, subscribe_per_s=0.01))

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            replies = [await client.request("public/subscribe", {"channels": ["platform_state"]}) for _ in range(4)]
            assert ["error" in r for r in replies] == [False, False, False, True]
            assert replies[3]["error"]["code"] == 10028

    run(scenario())


def test_instrument_lifecycle_is_announced_and_books_stop(simulator) -> None:
    sim = simulator(max_instruments=6, events_per_second=600)
    victim, other = sim.market.instruments()[:2]
    channels = ["instrument.state.option.BTC", f"book.{victim}.100ms", f"book.{other}.100ms"]

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            assert await client.result("public/subscribe", {"channels": channels}) == channels
            await client.wait_data(channels[1], 2)
            sim.lifecycle.expire_instrument(victim)
            states = await client.wait_data(channels[0], 2)
            assert [(s["state"], s["instrument_name"]) for s in states] == [("closed", victim), ("settled", victim)]
            assert set(states[0]) == {"timestamp", "state", "instrument_name"}
            seen = len(client.data(channels[1]))
            await client.wait_data(channels[2], len(client.data(channels[2])) + 5)
            assert len(client.data(channels[1])) == seen
            live = await client.result("public/get_instruments", {"currency": "BTC", "kind": "option"})
            assert victim not in {i["instrument_name"] for i in live}
            expired = await client.result("public/get_instruments", {"currency": "BTC", "expired": True})
            assert victim in {i["instrument_name"] for i in expired}
            created = sim.lifecycle.create_expiry()
            assert created
            await client.wait_data(channels[0], 2 + len(created))
            assert client.data(channels[0])[-1]["state"] == "created"

    run(scenario())


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_real_expiry_time_passing_expires_and_lists(simulator) -> None:
    clock = FakeClock(datetime(2025, 5, 9, 7, 59, 58, tzinfo=UTC).timestamp())
    sim = simulator(max_instruments=20, clock=clock, roll_interval_s=0.05)
    expiring = [n for n in sim.market.instruments() if "-9MAY25-" in n]
    assert expiring

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            await client.result("public/subscribe", {"channels": ["instrument.state.option.BTC"]})
            clock.now += 3  # 08:00:01
            events = await client.wait_data("instrument.state.option.BTC", 2 * len(expiring))
            assert {e["instrument_name"] for e in events if e["state"] == "closed"} == set(expiring)
            assert not set(expiring) & set(sim.market.instruments())

    run(scenario())


def test_accelerated_lifecycle(simulator) -> None:
    sim = simulator(max_instruments=10, lifecycle_interval_s=0.2)

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            await client.result("public/subscribe", {"channels": ["instrument.state.option.BTC"]})
            await async_wait_until(
                lambda: (
                    {e["state"] for e in client.data("instrument.state.option.BTC")} >= {"closed", "settled", "created"}
                ),
                5,
            )

    run(scenario())


def test_ticker_raw_and_platform_state_channels_are_subscribable(simulator) -> None:
    sim = simulator(max_instruments=4)
    name = sim.market.instruments()[0]
    channels = [f"ticker.{name}.raw", "platform_state", "book.nope.100ms", f"book.{name}.agg9"]

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            assert await client.result("public/subscribe", {"channels": channels}) == channels[:2]
            assert (await client.wait_data(channels[0]))[0]["instrument_name"] == name
            assert await client.result("public/unsubscribe", {"channels": channels}) == channels[:2]
            assert await client.result("public/unsubscribe_all") == "ok"

    run(scenario())


def test_time_stamps_are_microseconds_and_testnet_flag(simulator) -> None:
    sim = simulator(testnet=True)

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            reply = await client.request("public/test")
            assert reply["testnet"] is True
            assert abs(reply["usIn"] / 1e6 - time.time()) < 5
            assert reply["usDiff"] == reply["usOut"] - reply["usIn"]

    run(scenario())
