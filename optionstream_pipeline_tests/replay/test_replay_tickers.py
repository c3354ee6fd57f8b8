"""Tickers in the replay: a small archive with ticker files (written here in the ticker table's layout
and schema, as the archive will write them), served by the replay's server to a plain client."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import connect

from optionstream_pipeline.archive.layout import ArchiveFile, hour_directory, hour_of
from optionstream_pipeline.archive.ticker_schema import explode
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records import book
from optionstream_pipeline.records.ticker import decode_ticker, encode_ticker
from optionstream_pipeline.replay.loading import open_replay
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline_tests.support.books import T0, Stream, as_time

X, Y = "BTC-27JUN25-100000-C", "BTC-27JUN25-100000-P"
START, STOP = as_time(T0 * 1000), as_time(T0 * 1000) + timedelta(seconds=2)


def ticker(name: str, at: int, offset: int, mark: float) -> TopicRecord:
    data = {"instrument_name": name, "timestamp": T0 + at, "mark_price": mark, "index_price": 100_500.0,
            "best_bid_price": 0.01, "greeks": {"delta": 0.5}, "stats": {"volume": 1.0}}  # fmt: skip
    value = encode_ticker(name, "100ms", T0 + at, (T0 + at) * 1000, msgspec.Raw(msgspec.json.encode(data)),
                          book.encode_capture_meta("a", 0))  # fmt: skip
    return TopicRecord(0, offset, T0 + at, name, value, decode_ticker(value))


def write_tickers(root: Path, records: list[TopicRecord]) -> None:
    """One ticker file, as ``<archive>/ticker/date=/hour=/<topic>+<partition>+<incarnation>+<first>-<last>.parquet``."""
    times = [record.timestamp_ms * 1000 for record in records]
    file = ArchiveFile("tickers", 0, 0, records[0].offset, records[-1].offset, hour_of(times[0]))
    path = root / hour_directory(file.hour_start_us, "ticker") / file.name
    path.parent.mkdir(parents=True)
    pq.write_table(explode(records, times, 0), path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tickers")
    stream = Stream()
    stream.snapshot(X, -10, 10, bids=[("new", 0.01, 1.0)], asks=[("new", 0.03, 2.0)])
    stream.change(X, 100, 12, 10, bids=[("change", 0.01, 3.0)])
    stream.snapshot(Y, 200, 50, asks=[("new", 0.04, 1.0)])
    stream.change(X, 300, 14, 12, asks=[("delete", 0.03, 0.0)])
    stream.archive(root)
    write_tickers(root, [ticker(X, 50, 0, 0.021), ticker(Y, 150, 1, 0.041), ticker(X, 300, 2, 0.022)])
    return root


def test_tickers_interleave_with_books_on_one_clock(archive: Path) -> None:
    source = open_replay(archive, START, STOP, speed=None)
    assert source.accepts(f"ticker.{X}.100ms") and not source.accepts(f"ticker.{X}.raw")
    with SimulatorThread(SimulatorSettings(control_methods=False), source=source) as server, connect(server.url) as ws:
        channels = [f"book.{X}.100ms", f"book.{Y}.100ms", f"ticker.{X}.100ms", f"ticker.{Y}.100ms"]
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": channels}}))
        assert json.loads(ws.recv(timeout=10))["result"] == channels
        seen, first_ticker = [], None
        while len(seen) < 7:
            message = json.loads(ws.recv(timeout=10))
            data = message["params"]["data"]
            if first_ticker is None and message["params"]["channel"].startswith("ticker."):
                first_ticker = data
            seen.append((message["params"]["channel"], data.get("type"), data.get("change_id"), data.get("mark_price")))
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "public/get_index_price",
                            "params": {"index_name": "btc_usd"}}))  # fmt: skip
        assert json.loads(ws.recv(timeout=10))["result"]["index_price"] == 100_500.0
    assert first_ticker["instrument_name"] == X and first_ticker["timestamp"] == T0 + 50
    assert first_ticker["greeks"]["delta"] == 0.5 and first_ticker["stats"]["volume"] == 1.0
    assert first_ticker["best_bid_price"] == 0.01 and first_ticker["best_ask_price"] is None  # Deribit's null kept
    assert seen == [
        (f"book.{X}.100ms", "snapshot", 10, None),  # the book at START
        (f"ticker.{X}.100ms", None, None, 0.021),  # 50 ms
        (f"book.{X}.100ms", "change", 12, None),  # 100 ms
        (f"ticker.{Y}.100ms", None, None, 0.041),  # 150 ms
        (f"book.{Y}.100ms", "snapshot", 50, None),  # 200 ms
        (f"book.{X}.100ms", "change", 14, None),  # 300 ms: the book before the ticker of the same time
        (f"ticker.{X}.100ms", None, None, 0.022),
    ]


def test_an_archive_without_ticker_files_accepts_no_ticker_channel(tmp_path: Path) -> None:
    stream = Stream()
    stream.snapshot(X, 0, 10, bids=[("new", 0.01, 1.0)])
    stream.change(X, 500, 12, 10, bids=[("change", 0.01, 3.0)])
    stream.archive(tmp_path)
    source = open_replay(tmp_path, START, STOP, speed=None)
    assert source.accepts(f"book.{X}.100ms") and not source.accepts(f"ticker.{X}.100ms")
