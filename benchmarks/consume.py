"""The book consumer against a bare consume of the same records.

    python benchmarks/consume.py [--messages 1000000] [--instruments 1100] [--repeat 5]

The topic is :mod:`archive`'s (this folder's ``archive.py``): what capture writes, for a simulated
chain of ``--instruments`` options, produced once into a 12-partition topic on the embedded broker.
Each phase runs in a fresh subprocess and reads every partition from its first record to its end:

- ``raw``: a bare confluent-kafka consumer (assign, ``consume``, touch each value; no decode): **the
  bare consume** the target is set against;
- ``reader``: the shared ``TopicReader``, records decoded (and so validated), no books: what reading
  the records at all costs in Python;
- ``consumer``: ``BookConsumer`` from the earliest record, every book rebuilt and every update handed
  out (the loop touches each update's book), as a user's code would see them.

Orders alternate across ``--repeat``. The ratio is each phase's records/s over raw's, in the same run;
the target is judged on the median of the repetitions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import archive as topic_of

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("raw", "reader", "consumer")


def phase_consumer(bootstrap: str, messages: int) -> dict[str, Any]:
    from optionstream_pipeline.consume.consumer import BookConsumer

    updates = reliable = 0
    with BookConsumer(bootstrap, topic_of.TOPIC, "earliest") as consumer:
        builder = consumer.builder
        while builder.records_applied < messages:
            for update in consumer.updates(0.1):
                updates += 1
                reliable += update.book.why is None
        books = len(consumer.books)
    return {"messages": builder.records_applied, "updates": updates, "reliable": reliable, "books": books}


PHASE_MODULES = {
    "raw": "confluent_kafka",
    "reader": "optionstream_pipeline.kafka.reader",
    "consumer": "optionstream_pipeline.consume.consumer",
}
"""What each phase imports, imported before its clocks start: the figures are reading, not start-up."""


def run_phase(phase: str, bootstrap: str, messages: int) -> None:
    importlib.import_module(PHASE_MODULES[phase])
    partitions = list(range(topic_of.PARTITIONS))
    began_cpu, began = topic_of.cpu_s(), time.perf_counter()
    if phase == "raw":
        result = topic_of.phase_raw(bootstrap, topic_of.TOPIC, partitions)
    elif phase == "reader":
        result = topic_of.phase_reader(bootstrap, topic_of.TOPIC, partitions)
    else:
        result = phase_consumer(bootstrap, messages)
    result.update(seconds=time.perf_counter() - began, cpu_s=topic_of.cpu_s() - began_cpu, rss_mb=topic_of.rss_mb())
    print(json.dumps(result))


def spawn(phase: str, bootstrap: str, messages: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--bootstrap", bootstrap, "--messages", str(messages)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=1100)
    parser.add_argument("--hours", type=int, default=1, help="hours of book time the topic spans")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return run_phase(args.phase, args.bootstrap, args.messages)

    from optionstream_pipeline.kafka.broker import EmbeddedBroker

    print(f"# the book consumer vs a bare consume: {args.messages:,} records, {args.instruments} instruments, "
          f"{topic_of.PARTITIONS} partitions, {os.cpu_count()} cores", flush=True)  # fmt: skip
    runs: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker:
        topic = topic_of.produce_topic(broker.bootstrap, args.instruments, args.messages, args.hours)
        print(f"  topic: {topic['messages']:,} records, {topic['value_bytes'] / topic['messages']:.0f} JSON "
              f"bytes/record, produced in {topic['seconds']:.0f} s\n", flush=True)  # fmt: skip
        print("| run | phase | records/s | CPU µs/record | RSS MB | / raw | / reader |")
        print("|---|---|---|---|---|---|---|")
        for repetition in range(args.repeat):
            order = PHASES if repetition % 2 == 0 else PHASES[::-1]
            results = {phase: spawn(phase, broker.bootstrap, topic["messages"]) for phase in order}
            for phase in PHASES:
                result = results[phase]
                if result["messages"] != topic["messages"]:
                    raise RuntimeError(f"{phase} read {result['messages']:,} of {topic['messages']:,} records")
                rate = result["messages"] / result["seconds"]
                result.update(phase=phase, run=repetition + 1, rate=rate)
                raw, reader = (results[p]["messages"] / results[p]["seconds"] for p in ("raw", "reader"))
                cpu_us = result["cpu_s"] / result["messages"] * 1e6
                print(f"| {repetition + 1} | {phase} | {rate:,.0f} | {cpu_us:.1f} | {result['rss_mb']:.0f} | "
                      f"{rate / raw:.2f} | {rate / reader:.2f} |", flush=True)  # fmt: skip
                runs.append(result)
    consumer = [r for r in runs if r["phase"] == "consumer"]
    ratios = [
        r["rate"] / next(x["rate"] for x in runs if x["phase"] == "raw" and x["run"] == r["run"]) for r in consumer
    ]
    median = statistics.median(ratios)
    print(f"\nconsumer / bare consume: {', '.join(f'{x:.2f}' for x in ratios)}, median {median:.2f} (target at "
          f"least 0.5: {'met' if median >= 0.5 else 'MISSED'}); books at the end: {consumer[-1]['books']:,}, "
          f"updates handed out: {consumer[-1]['updates']:,}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"topic": topic, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
