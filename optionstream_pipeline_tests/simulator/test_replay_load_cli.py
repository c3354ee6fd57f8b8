"""Replay of the real recording, load mode, and the ``simulate`` command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from optionstream_pipeline.simulator import parse_ws_log
from optionstream_pipeline.simulator.load import LoadSource, measure_throughput
from optionstream_pipeline_tests.simulator.conftest import RpcClient, rebuild, run
from optionstream_pipeline_tests.support.fixtures import RECORDING
from optionstream_pipeline_tests.support.waiting import async_wait_until


def recorded_subscription_lines() -> tuple[list[str], list[str]]:
    """(channels the recording subscribed, every recorded subscription frame's exact text, in order)."""
    lines = RECORDING.read_text(encoding="utf-8").splitlines()
    request = msgspec.json.decode(lines[1].split(": ", 1)[1])
    frames = [line.split(": ", 1)[1] for line in lines[2:] if '"method":"subscription"' in line]
    return request["params"]["channels"], frames


def test_parse_ws_log_reads_the_fixture() -> None:
    recording = parse_ws_log(RECORDING)
    assert recording.url == "wss://www.deribit.com/ws/api/v2"
    assert len(recording.sent) == 1 and len(recording.received) == 136
    assert len(recording.subscription_frames) == 135
    assert all(f.channel.startswith(("book.", "ticker.")) for f in recording.subscription_frames)


def test_replay_sends_the_recorded_frames_unchanged_and_in_order(simulator) -> None:
    sim = simulator(replay_path=str(RECORDING), replay_speed=None)
    requested, frames = recorded_subscription_lines()

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            result = await client.result("public/subscribe", {"channels": requested})
            present = {msgspec.json.decode(f)["params"]["channel"] for f in frames}
            assert set(result) == present and result == [c for c in requested if c in present]
            assert not any(c.startswith("trades.") for c in result)  # none recorded: left out
            await async_wait_until(lambda: len(client.frames) >= 1 + len(frames), 10)
            assert client.frames[1:] == frames

    run(scenario())


def test_replay_keeps_timing_and_filters_by_subscription(simulator) -> None:
    speed = 30.0
    sim = simulator(replay_path=str(RECORDING), replay_speed=speed)
    _, frames = recorded_subscription_lines()
    channel = "book.BTC-24SEP21-8000-P.raw"
    wanted = [f for f in frames if f'"channel":"{channel}"' in f]
    span = parse_ws_log(RECORDING).subscription_frames
    expected_s = (span[-1].received_s - span[0].received_s) / speed

    async def scenario() -> None:
        async with RpcClient(sim.url) as client:
            started = time.monotonic()
            assert await client.result("public/subscribe", {"channels": [channel]}) == [channel]
            await async_wait_until(lambda: len(client.frames) >= 1 + len(wanted), 10)
            assert client.frames[1:] == wanted
            last_due = next(f.received_s for f in reversed(span) if f.channel == channel) - span[0].received_s
            assert time.monotonic() - started >= 0.9 * last_due / speed
            assert expected_s > 0.5
            rebuild(client.data(channel))

    run(scenario())


def test_load_mode_chains_without_gaps_at_the_requested_rate(simulator) -> None:
    sim = simulator(load_instruments=50, load_rate=4000, raw_requires_auth=False, max_instruments=None)
    report = asyncio.run(measure_throughput(sim.url, seconds=1.0))
    assert report["instruments"] == 50 and report["gaps"] == 0
    assert report["messages"] > 0
    # Throughput itself is measured in benchmarks/simulator_load.py, not asserted here.


def test_load_books_stay_valid_and_match_ground_truth() -> None:
    source = LoadSource(4, 1000, 0.0)

    class Subscriber:
        def __init__(self) -> None:
            self.frames: list[bytes] = []

        def deliver(self, channel: str, payload: bytes) -> None:
            self.frames.append(payload)

    subscriber = Subscriber()
    name = source.names()[0]
    snapshot = source._by_name[name].snapshot()
    source._emit({f"book.{name}.raw": {subscriber: None}}, 200, 1_000)
    messages = [msgspec.json.decode(f)["params"]["data"] for f in subscriber.frames]
    assert len(messages) == 50 and all(m["type"] == "change" for m in messages)
    change_id, bids, asks = rebuild([snapshot, *messages])
    truth = source.book(name)
    assert (change_id, bids, asks) == (truth.change_id, truth.bids, truth.asks)
    assert max(bids) < min(asks)


@pytest.mark.timeout(30)
def test_simulate_command_prints_the_url_and_exits_0_on_sigterm(tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "optionstream_pipeline.simulator.cli",
        "simulate",
        "--port",
        "0",
        "--instruments",
        "6",
        "--testnet",
        "--client-id",
        "demo",
        "--client-secret-env",
        "SIM_TEST_SECRET",
    ]
    env = {**os.environ, "SIM_TEST_SECRET": "from-env"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws/api/v2")

        async def scenario() -> None:
            async with RpcClient(url) as client:
                assert (await client.request("public/test"))["testnet"] is True
                auth = await client.result(
                    "public/auth",
                    {"grant_type": "client_credentials", "client_id": "demo", "client_secret": "from-env"},
                )
                assert auth["access_token"]

        run(scenario())
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
