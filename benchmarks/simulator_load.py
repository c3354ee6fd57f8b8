"""How fast the simulator's load mode serves, so capture benchmarks know it is not the bottleneck.

    python benchmarks/simulator_load.py [--instruments 1100] [--rates 15000,30000,45000] [--seconds 5]

The simulator runs in its own process; one websockets client (this process) subscribes to every
book, counts messages and checks the ``prev_change_id`` chain. The ratio is delivered / offered,
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

from optionstream_pipeline.simulator.load import measure_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1100)
    parser.add_argument("--rates", default="15000,30000,45000")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print("| offered msg/s | delivered msg/s | delivered / offered | gaps |")
    print("|---|---|---|---|")
    for rate in (int(r) for r in args.rates.split(",")):
        command = [sys.executable, "-m", "optionstream_pipeline.cli", "--log-level", "WARNING", "simulate",
                   "--port", "0", "--no-rate-limits", "--load-instruments", str(args.instruments),
                   "--load-rate", str(rate)]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            url = process.stdout.readline().strip()
            report = asyncio.run(measure_throughput(url, seconds=args.seconds))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        achieved = report["messages_per_s"]
        print(f"| {rate:,} | {achieved:,.0f} | {achieved / rate:.2f} | {report['gaps']} |", flush=True)


if __name__ == "__main__":
    main()
