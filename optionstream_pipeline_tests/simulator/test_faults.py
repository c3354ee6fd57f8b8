"""Each fault as a client sees it, injected from Python and from the command line."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

from optionstream_pipeline.simulator import cli
from optionstream_pipeline_tests.simulator.conftest import RpcClient, rebuild, run
from optionstream_pipeline_tests.support.waiting import async_wait_until


def book_channel(sim, index: int = 0) -> tuple[str, str]:
    name = sim.market.instruments()[index]
    return name, f"book.{name}.100ms"


async def subscribed(sim, channels: list[str]) -> RpcClient:
    client = await RpcClient(sim.url).__aenter__()
    assert await client.result("public/subscribe", {"channels": channels}) == channels
    return client


def run_cli(*argv: str, capsys=None) -> int:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_drop_closes_without_a_close_frame_and_only_the_target(simulator) -> None:
    sim = simulator()

    async def scenario() -> None:
        async with RpcClient(sim.url) as victim, RpcClient(sim.url) as bystander:
            await victim.result("public/test")
            await bystander.result("public/test")
            victim_id = next(s.id for s in sim.sessions())
            assert sim.faults.drop(session=victim_id) == [victim_id]
            await asyncio.wait_for(victim.closed.wait(), 5)
            assert victim.ws.close_code == 1006  # abnormal closure: no close frame was received
            assert await bystander.result("public/test")

    run(scenario())


def test_stall_holds_frames_then_delivers_them_without_a_gap(simulator) -> None:
    sim = simulator(events_per_second=500, max_instruments=4)
    _, channel = book_channel(sim)

    async def scenario() -> None:
        client = await subscribed(sim, [channel])
        try:
            await client.wait_data(channel, 2)
            sim.faults.stall()
            await async_wait_until(lambda: any(s.stalled and s.queued_frames >= 5 for s in sim.sessions()), 5)
            held = len(client.frames)
            await asyncio.sleep(0.2)  # nothing may arrive while stalled (a bounded check of absence)
            assert len(client.frames) == held
            sim.faults.clear()
            await client.wait_data(channel, len(client.data(channel)) + 5)
            rebuild(client.data(channel))
        finally:
            await client.__aexit__()

    run(scenario())


def test_timed_stall_ends_by_itself(simulator) -> None:
    sim = simulator(events_per_second=500, max_instruments=4)
    _, channel = book_channel(sim)

    async def scenario() -> None:
        client = await subscribed(sim, [channel])
        try:
            await client.wait_data(channel, 2)
            sim.faults.stall(seconds=0.3)
            started, before = time.monotonic(), len(client.data(channel))
            await client.wait_data(channel, before + 6)
            assert time.monotonic() - started >= 0.25
        finally:
            await client.__aexit__()

    run(scenario())


def test_skip_change_shows_the_client_exactly_one_gap(simulator) -> None:
    sim = simulator(events_per_second=800, max_instruments=3)
    name, channel = book_channel(sim)

    async def scenario() -> None:
        client = await subscribed(sim, [channel])
        try:
            await client.wait_data(channel, 2)
            sim.faults.skip_change(name, "100ms")
            await client.wait_data(channel, len(client.data(channel)) + 4)
            messages = client.data(channel)
            gaps = [b for a, b in itertools.pairwise(messages) if b["prev_change_id"] != a["change_id"]]
            assert len(gaps) == 1
            truth = sim.market.book_at(name, "100ms", gaps[0]["prev_change_id"])
            assert truth is not None and truth.change_id == gaps[0]["prev_change_id"]
        finally:
            await client.__aexit__()

    run(scenario())


def test_malformed_frame_and_error_without_id(simulator) -> None:
    sim = simulator()

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            await client.result("public/test")
            sim.faults.malformed()
            sim.faults.error(code=10028)
            await async_wait_until(lambda: len(client.frames) >= 3, 5)
            assert client.messages[1] is None
            error = client.messages[2]
            assert "id" not in error and error["error"] == {"message": "too_many_requests", "code": 10028}
            assert {"usIn", "usOut", "usDiff", "testnet"} <= error.keys()

    run(scenario())


def test_maintenance_closes_sessions_refuses_requests_then_recovers(simulator) -> None:
    sim = simulator()

    async def scenario() -> None:
        client = await subscribed(sim, ["platform_state"])
        sim.faults.maintenance(0.6)
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.data("platform_state") == [{"price_index": "btc_usd", "locked": True}]
        assert client.ws.close_code == 1012
        async with RpcClient(sim.url) as late:
            assert (await late.request("public/hello"))["error"]["code"] == 11051
            await async_wait_until(lambda: not sim.exchange.in_maintenance, 5)
            assert await late.result("public/test")

    run(scenario())


def test_maintenance_without_closing_pauses_data_and_unlocks(simulator) -> None:
    sim = simulator(events_per_second=500, max_instruments=4)
    _, channel = book_channel(sim)

    async def scenario() -> None:
        client = await subscribed(sim, [channel, "platform_state"])
        try:
            await client.wait_data(channel, 2)
            sim.faults.maintenance(0.4, close_connections=False)
            await client.wait_data("platform_state", 1)
            during = len(client.data(channel))
            states = await client.wait_data("platform_state", 2, timeout=5)
            assert [s["locked"] for s in states] == [True, False]
            assert len(client.data(channel)) <= during + 1  # at most one frame already in flight
            await client.wait_data(channel, len(client.data(channel)) + 3)
            rebuild(client.data(channel))
        finally:
            await client.__aexit__()

    run(scenario())


def test_rejected_channel_is_left_out_silently(simulator) -> None:
    sim = simulator()
    (_, first), (_, second) = book_channel(sim, 0), book_channel(sim, 1)

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            sim.faults.reject_channel(second)
            assert await client.result("public/subscribe", {"channels": [first, second]}) == [first]
            sim.faults.clear()
            assert await client.result("public/subscribe", {"channels": [second]}) == [second]

    run(scenario())


def test_slow_client_gets_frames_spaced_out(simulator) -> None:
    sim = simulator()

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            sim.faults.slow(0.05)
            started = time.monotonic()
            for _ in range(5):
                await client.result("public/test")
            assert time.monotonic() - started >= 0.2

    run(scenario())


def test_faults_from_the_command_line(simulator, capsys) -> None:
    sim = simulator()
    name, channel = book_channel(sim)

    async def scenario() -> None:
        async with RpcClient(sim.url) as victim:
            await victim.result("public/test")
            assert await asyncio.to_thread(run_cli, "simulate-control", "sessions", "--url", sim.url) == 0
            assert (
                await asyncio.to_thread(
                    run_cli, "simulate-control", "reject-channel", "--channel", channel, "--url", sim.url
                )
                == 0
            )
            assert await victim.result("public/subscribe", {"channels": [channel]}) == []
            assert await asyncio.to_thread(run_cli, "simulate-control", "drop", "--url", sim.url) == 0
            await asyncio.wait_for(victim.closed.wait(), 5)
            assert victim.ws.close_code == 1006
            assert (
                await asyncio.to_thread(
                    run_cli, "simulate-control", "expire-instrument", "--instrument", name, "--url", sim.url
                )
                == 0
            )
            assert name not in sim.market.instruments()
            assert (
                await asyncio.to_thread(run_cli, "simulate-control", "stall", "--session", "999", "--url", sim.url) == 1
            )

    run(scenario())
    printed = capsys.readouterr().out
    assert '"id": 1' in printed and f"closed {name}" in json.dumps(printed)
