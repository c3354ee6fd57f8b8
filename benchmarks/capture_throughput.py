"""Capture cost per message at the full BTC chain, against the floor: clients written with the
libraries alone, measured in the same run.

    python benchmarks/capture_throughput.py [--instruments 1100] [--rates 10000,1500] [--seconds 20] [--repeat 3]

Setup: the embedded Kafka broker and the simulator's load mode (pre-encoded frames, its own
process), both on loopback. Each measurement runs in a fresh subprocess so CPU and RSS belong to
the client alone. For each WebSocket library (``websockets``, ``picows``), interleaved, the order
rotating across repetitions:

- ``receive``: the library alone, connect, subscribe, count the frames. No Kafka.
- ``forward``: **the floor**, the library alone: every frame produced unchanged, unkeyed, to Kafka
  (same producer settings, no delivery callback). No parsing. What a bare forwarder costs.
- ``transport-forward``: the same forwarder on capture's own transport class, to tell the cost of
  the transport from the cost of the engine.
- ``capture``: the real engine as shipped, every feature on (continuity check, records, markers,
  delivery accounting, tickers subscribed, metrics endpoint, stats).

The ratio that matters is capture over ``forward`` on the same library, in the same run (median of
the repetitions). At a realistic rate (1,500 msg/s) the figure that matters is capture's share of a
core: its fixed costs (polling, watchdogs, stats, wakeups) then weigh as much as the messages.

The level check (every book frame's levels validated against the record schema before its bytes
are spliced into the record) is too small to isolate by subtracting two whole-process figures, so it
is timed directly, in the same run, on frames the simulator served: decode only, against decode
and check, per message; and then as a share of capture's CPU per message.

Reported per run: client CPU µs per message (user + system of the whole process, librdkafka's
threads included, and the event-loop thread's share alone, which is where Python runs), messages
per second sustained, delivery latency p50/p99 (produce -> ack, from
librdkafka), and peak RSS. Machines here are noisy: the figure that matters is the ratio of capture
to the forwarder measured in the same run, and each pair alternates order across repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP_S = 4.0
PARTITIONS = 12
# The producer settings as shipped (config/config.yaml: 100-record batches, 100 ms linger, snappy), the
# same for every client that produces; --linger-ms overrides linger.ms for all of them.
PRODUCER_SETTINGS: dict[str, Any] = {}


# -- the two clients ------------------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def subscribe_frames(instruments: list[str]) -> list[bytes]:
    """``public/subscribe`` requests for every book, 250 channels each (as capture batches them)."""
    return [
        json.dumps({"jsonrpc": "2.0", "id": 2 + n, "method": "public/subscribe",
                    "params": {"channels": [f"book.{name}.100ms" for name in instruments[i : i + 250]]}}).encode()
        for n, i in enumerate(range(0, len(instruments), 250))
    ]  # fmt: skip


async def run_library_client(
    url: str, bootstrap: str, instruments: list[str], seconds: float, library: str, produce: bool
) -> dict[str, Any]:
    """``receive`` / ``forward``: the WebSocket library alone, no product code on the frame path
    (``forward``: each frame produced unchanged and unkeyed, no delivery callback, polled every 10 ms)."""
    from confluent_kafka import Producer

    from optionstream_pipeline.config import settings_from_mapping
    from optionstream_pipeline.kafka.admin import ensure_topic
    from optionstream_pipeline.kafka.producer import producer_config

    counter = [0]
    producer = None
    if produce:
        settings = settings_from_mapping(
            {"kafka": {"brokers": [bootstrap], "topic": "bench-floor", **PRODUCER_SETTINGS}}
        )
        config = producer_config(settings.kafka)  # the same settings as capture's, configuration only
        ensure_topic(config, settings.kafka.topic, PARTITIONS, 1)
        producer = Producer(config)
        send, topic = producer.produce, settings.kafka.topic

        def handle(frame: bytes) -> None:
            send(topic, frame)
            counter[0] += 1
    else:

        def handle(frame: bytes) -> None:
            counter[0] += 1

    shards = [instruments[i : i + 250] for i in range(0, len(instruments), 250)]
    opener = _picows_client if library == "picows" else _websockets_client
    tasks = [asyncio.create_task(opener(url, subscribe_frames(names), handle)) for names in shards]
    if producer is not None:
        tasks.append(asyncio.create_task(_poll(producer)))
    await asyncio.sleep(WARMUP_S)
    result = await measure(lambda: counter[0], seconds)
    for task in tasks:
        task.cancel()
    if producer is not None:
        producer.flush(10)
    return result


async def _websockets_client(url: str, requests: list[bytes], handle) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        for request in requests:
            await ws.send(request, text=True)
        recv = ws.recv
        while True:
            handle(await recv(decode=False))


async def _picows_client(url: str, requests: list[bytes], handle) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    class Listener(WSListener):
        def on_ws_connected(self, transport) -> None:
            for request in requests:
                transport.send(WSMsgType.TEXT, request)

        def on_ws_frame(self, transport, frame) -> None:
            handle(frame.get_payload_as_bytes())

    transport, _ = await ws_connect(Listener, url, max_frame_size=16 * 1024 * 1024)
    await transport.wait_disconnected()


async def _poll(producer) -> None:
    while True:
        producer.poll(0)
        await asyncio.sleep(0.01)


async def run_transport_forwarder(
    url: str, bootstrap: str, instruments: list[str], seconds: float, transport_kind: str
) -> dict[str, Any]:
    """Receive every frame on capture's transport class and produce it as it is: the engine's cost
    is capture over this; the transport's is this over ``forward``."""
    from confluent_kafka import Producer

    from optionstream_pipeline.capture.protocol import batched
    from optionstream_pipeline.capture.transport import open_transport
    from optionstream_pipeline.config import settings_from_mapping
    from optionstream_pipeline.deribit.rpc import encode_request
    from optionstream_pipeline.kafka.admin import ensure_topic
    from optionstream_pipeline.kafka.producer import producer_config

    settings = settings_from_mapping(
        {"kafka": {"brokers": [bootstrap], "topic": "bench-forwarded", **PRODUCER_SETTINGS}}
    )
    config = producer_config(settings.kafka)
    ensure_topic(config, settings.kafka.topic, PARTITIONS, 1)
    producer = Producer(config)
    counter = {"messages": 0}
    topic = settings.kafka.topic

    produce = producer.produce

    def forward(frame: bytes) -> bool:
        # Spread over the partitions as keyed records are, so Kafka sees the same batch shape.
        produce(topic, frame, partition=counter["messages"] % PARTITIONS)
        counter["messages"] += 1
        return True

    async def one_connection(names: list[str]) -> None:
        # The same transport classes capture uses, with the bare forward() as the frame handler.
        transport = await open_transport(transport_kind, url, forward, asyncio.sleep, 10)
        transport.send(encode_request(1, "public/hello", {"client_name": "bench"}))
        for batch in batched([f"book.{n}.100ms" for n in names], 250):
            transport.send(encode_request(2, "public/subscribe", {"channels": batch}))
        await transport.wait_closed()

    shards = [instruments[i : i + 250] for i in range(0, len(instruments), 250)]
    tasks = [asyncio.create_task(one_connection(names)) for names in shards] + [asyncio.create_task(_poll(producer))]
    await asyncio.sleep(WARMUP_S)
    result = await measure(lambda: counter["messages"], seconds)
    for task in tasks:
        task.cancel()
    producer.flush(10)
    return result


async def run_capture(
    url: str, bootstrap: str, instruments: list[str], seconds: float, transport_kind: str
) -> dict[str, Any]:
    from optionstream_pipeline.capture.engine import CaptureEngine
    from optionstream_pipeline.config import settings_from_mapping

    settings = settings_from_mapping(
        {
            "deribit": {"websocket_url": url, "instruments": instruments, "transport": transport_kind},
            "kafka": {"brokers": [bootstrap], "topic": "bench-capture", "partitions": PARTITIONS, **PRODUCER_SETTINGS},
            "capture": {"metrics": {"port": 0}},
        }
    )
    engine = CaptureEngine(settings, instruments)
    runner = asyncio.create_task(engine.run())
    await asyncio.sleep(WARMUP_S)
    result = await measure(lambda: engine.counters.messages_in, seconds)
    stats = engine.stats()
    result["p50_ms"], result["p99_ms"] = stats.delivery_p50_ms, stats.delivery_p99_ms  # librdkafka's, last 5 s
    result["gaps"] = stats.gaps
    result["delivery_failed"] = stats.delivery_failed
    engine.request_stop()
    await runner
    return result


async def measure(count, seconds: float) -> dict[str, Any]:
    start_messages, start_cpu, start_loop_cpu, start = count(), cpu_s(), time.thread_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    messages, cpu, elapsed = count() - start_messages, cpu_s() - start_cpu, time.perf_counter() - start
    loop_cpu = time.thread_time() - start_loop_cpu  # the event-loop thread alone: Python's share
    return {
        "messages": messages,
        "msg_per_s": messages / elapsed,
        "cpu_us_per_msg": cpu / messages * 1e6 if messages else None,
        "loop_cpu_us_per_msg": loop_cpu / messages * 1e6 if messages else None,
        "cpu_percent": cpu / elapsed * 100,
        "p50_ms": None,  # capture's from its stats; the forwarders take no delivery reports
        "p99_ms": None,
        "rss_mb": rss_mb(),
    }


# -- orchestration --------------------------------------------------------------------------------


def start_simulator(instruments: int, rate: int) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "optionstream_pipeline.cli", "--log-level", "WARNING", "simulate", "--port", "0",
        "--no-rate-limits", "--load-instruments", str(instruments), "--load-rate", str(rate),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = process.stdout.readline()
    match = re.search(r"ws://\S+", line)
    if not match:
        process.kill()
        raise RuntimeError(f"simulator did not print its URL: {line!r}")
    return process, match.group(0)


def run_phase(
    phase: str, transport: str, url: str, bootstrap: str, seconds: float, linger_ms: int | None
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--transport", transport, "--url", url,
               "--bootstrap", bootstrap, "--seconds", str(seconds)]  # fmt: skip
    if linger_ms is not None:
        command += ["--linger-ms", str(linger_ms)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def one_phase(args: argparse.Namespace) -> None:
    from optionstream_pipeline.deribit.public_api import fetch_option_names

    if args.linger_ms is not None:
        PRODUCER_SETTINGS["batch_timeout_ms"] = args.linger_ms
    instruments = asyncio.run(fetch_option_names(args.url))
    client = (args.url, args.bootstrap, instruments, args.seconds, args.transport)
    if args.phase in ("receive", "forward"):
        result = asyncio.run(run_library_client(*client, produce=args.phase == "forward"))
    elif args.phase == "transport-forward":
        result = asyncio.run(run_transport_forwarder(*client))
    else:
        result = asyncio.run(run_capture(*client))
    result["instruments"] = len(instruments)
    print(json.dumps(result))


async def sample_frames(url: str, instruments: list[str], count: int) -> list[bytes]:
    """``count`` book frames as the simulator serves them to capture."""
    from websockets.asyncio.client import connect

    from optionstream_pipeline.capture.protocol import batched
    from optionstream_pipeline.deribit.rpc import encode_request

    frames: list[bytes] = []
    async with connect(url, compression=None, max_size=None) as ws:
        for batch in batched([f"book.{n}.100ms" for n in instruments], 250):
            await ws.send(encode_request(2, "public/subscribe", {"channels": batch}), text=True)
        while len(frames) < count:
            frame = await ws.recv(decode=False)
            if b'"method":"subscription","params":{"channel":"book.' in frame[:100]:
                frames.append(frame)
    return frames


def time_level_check(url: str, count: int = 20_000, rounds: int = 15) -> dict[str, float]:
    """µs per frame to decode (capture's typed decoder), and to decode and check the levels."""
    from optionstream_pipeline.capture.frames import decode_book_notification, level_problem
    from optionstream_pipeline.deribit.public_api import fetch_option_names

    frames = asyncio.run(sample_frames(url, asyncio.run(fetch_option_names(url)), count))

    def decode_only() -> None:
        for frame in frames:
            decode_book_notification(frame)

    def decode_and_check() -> None:
        for frame in frames:
            level_problem(decode_book_notification(frame).params.data)

    def seconds(work) -> float:
        began = time.perf_counter()
        work()
        return time.perf_counter() - began

    # Alternated, best of each: a noisy neighbour then slows both, not one.
    timings = [(seconds(decode_only), seconds(decode_and_check)) for _ in range(rounds)]
    decode, checked = (min(column) / len(frames) * 1e6 for column in zip(*timings, strict=True))
    return {"decode_us": decode, "check_us": checked - decode, "frames": len(frames)}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


PHASES = ("receive", "forward", "transport-forward", "capture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1100)
    parser.add_argument("--rates", default="10000,1500", help="offered messages/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transports", default="websockets,picows", help="WebSocket libraries to measure")
    parser.add_argument("--linger-ms", type=int, help="linger.ms for every producing client (default: as shipped)")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="websockets", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help="an existing Kafka (e.g. Apache Kafka) instead of the embedded broker")
    args = parser.parse_args()
    if args.phase:
        one_phase(args)
        return

    from optionstream_pipeline.kafka.broker import EmbeddedBroker

    print(f"# capture against clients written with the libraries alone, {args.instruments} instruments, "
          f"{args.seconds:.0f} s per run, {args.repeat} interleaved runs, {os.cpu_count()} cores")  # fmt: skip
    print("| offered msg/s | library | client | msg/s sustained | CPU µs/msg | of which loop thread | CPU % "
          "| p50 ms | p99 ms | RSS MB | / forward |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    runs: dict[tuple[int, str], list[dict[str, dict[str, Any]]]] = {}
    checks: dict[int, dict[str, float]] = {}
    with contextlib.nullcontext(args.bootstrap) if args.bootstrap else EmbeddedBroker() as broker:
        bootstrap = broker if isinstance(broker, str) else broker.bootstrap
        for number, rate in enumerate(int(r) for r in args.rates.split(",")):
            simulator, url = start_simulator(args.instruments, rate)
            try:
                for repetition, transport in itertools.product(range(args.repeat), args.transports.split(",")):
                    order = PHASES[repetition % len(PHASES) :] + PHASES[: repetition % len(PHASES)]
                    results = {p: run_phase(p, transport, url, bootstrap, args.seconds, args.linger_ms) for p in order}
                    runs.setdefault((rate, transport), []).append(results)
                    print_run(rate, transport, results)
                if number == 0:
                    checks[rate] = time_level_check(url)
            finally:
                simulator.terminate()
                simulator.wait(10)
    print_summary(runs)
    print_level_check(checks, runs)


def print_run(rate: int, transport: str, results: dict[str, dict[str, Any]]) -> None:
    base = results["forward"]["cpu_us_per_msg"]
    for phase in PHASES:
        r = results[phase]
        ratio = r["cpu_us_per_msg"] / base if base and r["cpu_us_per_msg"] else None
        cells = [f"{rate:,}", transport, phase, f"{r['msg_per_s']:,.0f}", fmt(r["cpu_us_per_msg"], ".2f"),
                 fmt(r["loop_cpu_us_per_msg"], ".2f"), f"{r['cpu_percent']:.1f}", fmt(r["p50_ms"], ".2f"),
                 fmt(r["p99_ms"], ".2f"), f"{r['rss_mb']:.0f}", fmt(ratio, ".2f")]  # fmt: skip
        print("| " + " | ".join(cells) + " |", flush=True)


def per_message(results: dict[str, dict[str, Any]], phase: str) -> float:
    return results[phase]["cpu_us_per_msg"] or float("nan")


def print_summary(runs: dict[tuple[int, str], list[dict[str, dict[str, Any]]]]) -> None:
    """Medians over the repetitions (single runs on a shared 2-core machine swing by 20 % or more);
    each ratio is the median of the per-run ratios, both sides measured in the same repetition."""
    print("\n| offered msg/s | library | receive µs/msg | forward µs/msg (the floor) | transport-forward µs/msg "
          "| capture µs/msg | capture / forward | capture / transport-forward | capture CPU % of a core "
          "| capture RSS MB | runs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (rate, transport), repetitions in runs.items():
        median = {phase: statistics.median(per_message(r, phase) for r in repetitions) for phase in PHASES}
        floor = statistics.median(per_message(r, "capture") / per_message(r, "forward") for r in repetitions)
        engine = statistics.median(per_message(r, "capture") / per_message(r, "transport-forward") for r in repetitions)
        cpu = statistics.median(r["capture"]["cpu_percent"] for r in repetitions)
        rss = statistics.median(r["capture"]["rss_mb"] for r in repetitions)
        print(f"| {rate:,} | {transport} | {median['receive']:.2f} | {median['forward']:.2f} | "
              f"{median['transport-forward']:.2f} | {median['capture']:.2f} | {floor:.2f} | {engine:.2f} | "
              f"{cpu:.1f} | {rss:.0f} | {len(repetitions)} |")  # fmt: skip


def print_level_check(checks: dict[int, dict[str, float]], runs: dict) -> None:
    print("\n| offered msg/s | frames timed | decode µs/msg | level check µs/msg | check / decode | "
          "check / capture µs/msg (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for rate, check in checks.items():
        captures = [per_message(one, "capture") for (r, _), reps in runs.items() if r == rate for one in reps]
        share = check["check_us"] / statistics.median(captures) if captures else None
        print(f"| {rate:,} | {check['frames']:,} | {check['decode_us']:.3f} | {check['check_us']:.3f} | "
              f"{check['check_us'] / check['decode_us']:.2f} | {fmt(share and share * 100, '.1f')} % |")  # fmt: skip


if __name__ == "__main__":
    main()
