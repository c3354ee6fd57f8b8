"""Ticker capture: simulator -> capture -> the ticker topic, each record Deribit's ticker as it was sent,
its top of book the book's at the same change."""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources

import jsonschema
import msgspec
import pytest

from optionstream_pipeline.capture.engine import CaptureEngine
from optionstream_pipeline.deribit.protocol import split_channel
from optionstream_pipeline.simulator.server import SimulatorThread
from optionstream_pipeline_tests.capture.conftest import (
    capture_settings,
    running_capture,
    settle_and_read,
    ticker_topic_of,
    wait_subscribed,
)
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

SCHEMA = json.loads(resources.files("optionstream_pipeline.schemas").joinpath("ticker-record.schema.json").read_text())


class PublishedTickers:
    """Every ticker the simulator publishes, with the change_id of its book's update just before it
    (the simulator publishes an instrument's ticker right after its book update)."""

    def __init__(self, sim: SimulatorThread) -> None:
        self.tickers: dict[str, list[tuple[dict, int | None]]] = defaultdict(list)
        self._last_book: dict[str, int] = {}
        exchange = sim.exchange
        original = exchange.publish_payload

        def recording(channel: str, payload: bytes) -> None:
            parts = split_channel(channel)
            if parts is not None:
                kind, name, _ = parts
                data = msgspec.json.decode(payload)["params"]["data"]
                if kind == "book":
                    self._last_book[name] = data["change_id"]
                else:
                    self.tickers[name].append((data, self._last_book.get(name)))
            original(channel, payload)

        sim.call(lambda: setattr(exchange, "publish_payload", recording))


@pytest.mark.parametrize("transport", ["websockets", "picows"])
def test_ticker_records_are_deribits_tickers_and_agree_with_the_book(
    simulator, kafka_bootstrap, kafka_topic, transport
) -> None:
    sim = simulator(max_instruments=30, events_per_second=300)
    instruments = sim.market.instruments()[:16]
    published = PublishedTickers(sim)
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.transport": transport})
    ticker_topic = ticker_topic_of(kafka_topic)
    with (
        running_capture(settings, instruments) as capture,
        TopicLog(kafka_bootstrap, kafka_topic) as books,
        TopicLog(kafka_bootstrap, ticker_topic, records="ticker") as tickers,
    ):
        wait_subscribed(capture, len(instruments))
        tickers.read_until(lambda rs: len(rs) >= 600, 30, "600 ticker records")
        book_records = settle_and_read(sim, books, instruments)
        expected = {name: len(published.tickers[name]) for name in instruments}

        def all_arrived(records) -> bool:
            counts = defaultdict(int)
            for record in records:
                counts[record.key] += 1
            # one more each: the ticker the exchange sends on subscribe, not published to the others
            return all(counts[name] >= expected[name] + 1 for name in instruments)

        ticker_records = tickers.read_until(all_arrived, 30, "every published ticker")
        final = capture.stop()

    validator = jsonschema.Draft202012Validator(SCHEMA)
    by_name = defaultdict(list)
    for record in ticker_records:
        validator.validate(msgspec.json.decode(record.value))
        assert record.key == record.record.instrument == record.record.ticker.instrument_name
        assert record.timestamp_ms == record.record.exchange_timestamp_ms == record.record.ticker.timestamp
        assert record.record.interval == "100ms"
        assert record.record.capture.id == capture.engine.capture_id
        by_name[record.key].append(record)
    assert set(by_name) == set(instruments)

    # Same partition as the instrument's books: one partition number holds both.
    book_partition = {record.key: record.partition for record in book_records}
    assert all(records[0].partition == book_partition[name] for name, records in by_name.items())

    compared = 0
    for name in instruments:
        sent = [data for data, _ in published.tickers[name]]
        received = [msgspec.json.decode(record.value)["ticker"] for record in by_name[name]]
        # Deribit's objects as sent, in order, nothing lost, nothing added: after the subscribe one.
        assert received[1:] == sent, name
        for (_, change_id), record in zip(published.tickers[name], by_name[name][1:], strict=True):
            truth = sim.market.book_at(name, "100ms", change_id) if change_id is not None else None
            if truth is None:
                continue
            ticker = record.record.ticker
            assert (ticker.best_bid_price, ticker.best_bid_amount) == (truth.best_bid or (0.0, 0.0)), name
            assert (ticker.best_ask_price, ticker.best_ask_amount) == (truth.best_ask or (0.0, 0.0)), name
            compared += 1
    assert compared >= 300
    assert final.tickers_in == len(ticker_records)
    assert final.delivery_failed == 0
    assert final.delivered == final.messages_out


def test_tickers_off_subscribes_no_ticker_channel(simulator, kafka_bootstrap, kafka_topic) -> None:
    sim = simulator(max_instruments=10)
    instruments = sim.market.instruments()[:4]
    settings = capture_settings(sim.url, kafka_bootstrap, kafka_topic, **{"deribit.tickers": False})
    with running_capture(settings, instruments) as capture:
        wait_subscribed(capture, len(instruments))
        channels = {channel for session in sim.sessions() for channel in session.channels}
        assert {f"book.{name}.100ms" for name in instruments} <= channels
        assert not [channel for channel in channels if channel.startswith("ticker.")]


def test_raw_tickers_without_credentials_are_refused_by_name(kafka_bootstrap, kafka_topic) -> None:
    settings = capture_settings(
        "ws://127.0.0.1:9/ws/api/v2", kafka_bootstrap, kafka_topic, **{"deribit.ticker_interval": "raw"}
    )
    with pytest.raises(ValueError, match=r"deribit\.ticker_interval: raw tickers need Deribit API credentials"):
        CaptureEngine(settings)
