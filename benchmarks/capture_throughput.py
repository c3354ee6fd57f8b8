"""Capture cost per message at the full BTC chain, against a bare forwarder measured in the same run.

    python benchmarks/capture_throughput.py [--instruments 1100] [--rates 10000,25000] [--seconds 20]

Setup: the embedded Kafka broker and the simulator's load mode (pre-encoded frames, its own
process), both on loopback. Each measurement runs in a fresh subprocess so CPU and RSS belong to
the client alone:

- ``forwarder``: the baseline. Same connections and subscriptions as capture, then for every frame:
  receive it (websockets) and produce it unchanged to Kafka (same producer settings). No parsing.
- ``capture``: the real engine with every feature on (continuity check, records, markers,
  delivery accounting, metrics endpoint, stats).

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
# linger 5 ms (the shipped config's 100 ms trades latency for batch size); the same for both clients.
PRODUCER_SETTINGS = {"batch_size": 1000, "batch_timeout_ms": 5, "compression_type": "snappy"}


# -- the two clients ------------------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile_ms(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def run_forwarder(
    url: str, bootstrap: str, instruments: list[str], seconds: float, transport_kind: str
) -> dict[str, Any]:
    """Receive every frame and produce it as it is: the floor any capture client stands on."""
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
    latencies: list[float] = []
    config = producer_config(settings.kafka)
    ensure_topic(config, settings.kafka.topic, PARTITIONS, 1)
    config["on_delivery"] = lambda err, msg: latencies.append(msg.latency()) if err is None else None
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

    async def poll() -> None:
        while True:
            producer.poll(0)
            await asyncio.sleep(0.01)

    shards = [instruments[i : i + 250] for i in range(0, len(instruments), 250)]
    tasks = [asyncio.create_task(one_connection(names)) for names in shards] + [asyncio.create_task(poll())]
    await asyncio.sleep(WARMUP_S)
    result = await measure(lambda: counter["messages"], seconds, latencies)
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
    result = await measure(lambda: engine.counters.messages_in, seconds, engine.producer.delivery.latencies_s)
    stats = engine.stats()
    result["gaps"] = stats.gaps
    result["delivery_failed"] = stats.delivery_failed
    engine.request_stop()
    await runner
    return result


async def measure(count, seconds: float, latencies) -> dict[str, Any]:
    latencies.clear()  # only deliveries of the measured window
    start_messages, start_cpu, start_loop_cpu, start = count(), cpu_s(), time.thread_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    messages, cpu, elapsed = count() - start_messages, cpu_s() - start_cpu, time.perf_counter() - start
    loop_cpu = time.thread_time() - start_loop_cpu  # the event-loop thread alone: Python's share
    sample = list(latencies)
    return {
        "messages": messages,
        "msg_per_s": messages / elapsed,
        "cpu_us_per_msg": cpu / messages * 1e6 if messages else None,
        "loop_cpu_us_per_msg": loop_cpu / messages * 1e6 if messages else None,
        "cpu_percent": cpu / elapsed * 100,
        "p50_ms": percentile_ms(sample, 0.50),
        "p99_ms": percentile_ms(sample, 0.99),
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


def run_phase(phase: str, transport: str, url: str, bootstrap: str, seconds: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--transport", transport, "--url", url,
               "--bootstrap", bootstrap, "--seconds", str(seconds)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def one_phase(args: argparse.Namespace) -> None:
    from optionstream_pipeline.deribit.public_api import fetch_option_names

    instruments = asyncio.run(fetch_option_names(args.url))
    runner = run_forwarder if args.phase == "forwarder" else run_capture
    result = asyncio.run(runner(args.url, args.bootstrap, instruments, args.seconds, args.transport))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1100)
    parser.add_argument("--rates", default="10000,25000", help="offered messages/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--transports", default="websockets,picows", help="WebSocket transports to measure")
    parser.add_argument("--phase", choices=["forwarder", "capture"], help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="websockets", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help="an existing Kafka (e.g. Apache Kafka) instead of the embedded broker")
    args = parser.parse_args()
    if args.phase:
        one_phase(args)
        return

    from optionstream_pipeline.kafka.broker import EmbeddedBroker

    print(f"# capture vs bare forwarder, {args.instruments} instruments, {args.seconds:.0f} s per run, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print("| offered msg/s | transport | client | msg/s sustained | CPU µs/msg | of which loop thread | CPU % "
          "| p50 ms | p99 ms | RSS MB | capture / forwarder |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    checks: dict[int, dict[str, float]] = {}
    with contextlib.nullcontext(args.bootstrap) if args.bootstrap else EmbeddedBroker() as broker:
        bootstrap = broker if isinstance(broker, str) else broker.bootstrap
        for rate in (int(r) for r in args.rates.split(",")):
            simulator, url = start_simulator(args.instruments, rate)
            try:
                for repetition, transport in itertools.product(range(args.repeat), args.transports.split(",")):
                    order = ["forwarder", "capture"] if repetition % 2 == 0 else ["capture", "forwarder"]
                    results = {p: run_phase(p, transport, url, bootstrap, args.seconds) for p in order}
                    base = results["forwarder"]["cpu_us_per_msg"]
                    mine = results["capture"]["cpu_us_per_msg"]
                    if base and mine:
                        ratios.setdefault((rate, transport), []).append((base, mine, mine / base))
                    for phase in ("forwarder", "capture"):
                        r = results[phase]
                        ratio = r["cpu_us_per_msg"] / base if base and r["cpu_us_per_msg"] else None
                        cells = [f"{rate:,}", transport, phase, f"{r['msg_per_s']:,.0f}",
                                 fmt(r["cpu_us_per_msg"], ".2f"), fmt(r["loop_cpu_us_per_msg"], ".2f"),
                                 f"{r['cpu_percent']:.0f}", fmt(r["p50_ms"], ".2f"),
                                 fmt(r["p99_ms"], ".2f"), f"{r['rss_mb']:.0f}", fmt(ratio, ".2f")]  # fmt: skip
                        print("| " + " | ".join(cells) + " |", flush=True)
                checks[rate] = time_level_check(url)
            finally:
                simulator.terminate()
                simulator.wait(10)
    print_summary(ratios)
    print_level_check(checks, ratios)


def print_summary(ratios: dict[tuple[int, str], list[tuple[float, float, float]]]) -> None:
    """Medians over the repetitions: single runs on a shared 2-core machine swing by 20 % or more."""
    print("\n| offered msg/s | transport | forwarder µs/msg (median) | capture µs/msg (median) | "
          "capture / forwarder (median of runs) | runs |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for (rate, transport), runs in ratios.items():
        base, mine, ratio = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"| {rate:,} | {transport} | {base:.2f} | {mine:.2f} | {ratio:.2f} | {len(runs)} |")


def print_level_check(checks: dict[int, dict[str, float]], ratios: dict) -> None:
    print("\n| offered msg/s | frames timed | decode µs/msg | level check µs/msg | check / decode | "
          "check / capture µs/msg (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for rate, check in checks.items():
        captures = [mine for (r, _), runs in ratios.items() if r == rate for _, mine, _ in runs]
        share = check["check_us"] / statistics.median(captures) if captures else None
        print(f"| {rate:,} | {check['frames']:,} | {check['decode_us']:.3f} | {check['check_us']:.3f} | "
              f"{check['check_us'] / check['decode_us']:.2f} | {fmt(share and share * 100, '.1f')} % |")  # fmt: skip


if __name__ == "__main__":
    main()
