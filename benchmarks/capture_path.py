"""Where capture's microseconds go on the hot path: each step of one book frame, timed alone on
frames the simulator's load mode served, beside the bare produce a forwarder does.

    python benchmarks/capture_path.py [--frames 20000] [--rounds 15]

The steps are capture's own functions, called as the hot path calls them (``DeribitConnection._on_frame``
-> ``CaptureEngine.on_book`` -> ``RecordProducer.offer``), one at a time over all the frames, best of
``--rounds`` alternated rounds (a noisy neighbour then slows every step, not one). The producer
points at a broker that is not there: produce() only queues, which is the part on capture's thread.
The sum is the Python-side cost of a frame; what librdkafka's threads spend is not in it (see
capture_throughput.py for whole-process figures).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from capture_throughput import sample_frames, start_simulator
from confluent_kafka import Producer

from optionstream_pipeline.capture.frames import decode_book_notification, is_ticker_frame, level_problem
from optionstream_pipeline.capture.subscriptions import SubscriptionTable
from optionstream_pipeline.deribit.public_api import fetch_option_names
from optionstream_pipeline.records.book import encode_capture_meta, encode_change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--instruments", type=int, default=1100)
    args = parser.parse_args()
    simulator, url = start_simulator(args.instruments, 20_000)
    try:
        names = asyncio.run(fetch_option_names(url))
        frames = asyncio.run(sample_frames(url, names, args.frames))
    finally:
        simulator.terminate()
        simulator.wait(10)
    datas = [decode_book_notification(frame).params.data for frame in frames]
    table = SubscriptionTable(per_shard=250, max_shards=10)
    table.follow(names)
    capture = encode_capture_meta("benchmark", 0)
    values = [
        encode_change(
            d.instrument_name, "100ms", d.timestamp, 1, d.change_id, d.prev_change_id, d.bids, d.asks, capture
        )
        for d in datas
    ]
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 10_000_000,
                         "linger.ms": 100, "partitioner": "murmur2_random", "log_level": 0})  # fmt: skip
    produce = producer.produce

    def clock() -> None:
        for _ in frames:
            time.time_ns() // 1000
            time.monotonic()

    def look_for_tickers() -> None:
        for frame in frames:
            is_ticker_frame(frame)

    def decode() -> None:
        for frame in frames:
            decode_book_notification(frame)

    def check_levels() -> None:
        for data in datas:
            level_problem(data)

    def continuity() -> None:
        for data in datas:  # each change continues the last: reset the books to just before it
            entry = table.get(data.instrument_name)
            entry.last_change_id = data.prev_change_id
            table.on_book(data.instrument_name, data.change_id, data.prev_change_id, 1)

    def continuity_reset_only() -> None:  # the reset above, to subtract
        for data in datas:
            table.get(data.instrument_name).last_change_id = data.prev_change_id

    def encode() -> None:
        for d in datas:
            encode_change(d.instrument_name, "100ms", d.timestamp, 1, d.change_id, d.prev_change_id, d.bids, d.asks,
                          capture)  # fmt: skip

    def produce_keyed() -> None:
        for data, value in zip(datas, values, strict=True):
            produce("bench", value, data.instrument_name, timestamp=data.timestamp)

    def produce_bare() -> None:  # what the forwarder does with each frame
        for frame in frames:
            produce("bench", frame)

    steps: dict[str, Callable[[], None]] = {
        "clock (time_ns, monotonic)": clock,
        "ticker look (is_ticker_frame)": look_for_tickers,
        "decode (typed msgspec)": decode,
        "level check": check_levels,
        "continuity (table.on_book)": continuity,
        "_reset": continuity_reset_only,
        "encode the record": encode,
        "produce keyed, timestamped": produce_keyed,
        "forwarder: produce the frame": produce_bare,
    }
    best = {name: float("inf") for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            began = time.perf_counter()
            step()
            best[name] = min(best[name], (time.perf_counter() - began) / len(frames) * 1e6)
            producer.purge()
    best["continuity (table.on_book)"] -= best.pop("_reset")
    print(f"# capture's hot path, step by step: {len(frames):,} frames, best of {args.rounds} rounds")
    print("| step | µs per frame |")
    print("|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.3f} |")
    capture_steps = sum(value for name, value in best.items() if not name.startswith("forwarder"))
    print(f"| **capture's steps, summed** | **{capture_steps:.3f}** |")


if __name__ == "__main__":
    main()
