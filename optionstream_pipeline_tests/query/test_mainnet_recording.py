"""The real mainnet recording (2021-07-22) through capture and archive: the chain at T shows the
recording's own ticker values beside the books rebuilt from its own book messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from optionstream_pipeline.archive.run import archive_topic
from optionstream_pipeline.deribit.instruments import parse_option_name
from optionstream_pipeline.query.database import open_archive
from optionstream_pipeline_tests.capture.conftest import capture_settings, running_capture, ticker_topic_of
from optionstream_pipeline_tests.support.fixtures import RECORDING, recorded_book_messages, recorded_ticker_messages
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

API_KEY, API_SECRET = "replay-client", "replay-secret"


def test_the_recordings_tickers_reach_the_chain_at_t(
    simulator, kafka_bootstrap, kafka_topic, monkeypatch, tmp_path: Path
) -> None:
    tickers = [m for m in recorded_ticker_messages() if m["instrument_name"].startswith("BTC-")]
    books = [m for m in recorded_book_messages() if m["instrument_name"].startswith("BTC-")]
    instruments = sorted({m["instrument_name"] for m in tickers})
    monkeypatch.setenv("DERIBIT_CLIENT_ID", API_KEY)  # the recording's channels are raw: they need credentials
    monkeypatch.setenv("DERIBIT_CLIENT_SECRET", API_SECRET)
    sim = simulator(replay_path=str(RECORDING), replay_speed=None, client_id=API_KEY, client_secret=API_SECRET)
    settings = capture_settings(
        sim.url,
        kafka_bootstrap,
        kafka_topic,
        **{"deribit.ticker_interval": "raw", "archive.path": str(tmp_path / "archive")},
    )
    with (
        running_capture(settings, instruments),
        TopicLog(kafka_bootstrap, kafka_topic) as book_log,
        TopicLog(kafka_bootstrap, ticker_topic_of(kafka_topic), records="ticker") as ticker_log,
    ):
        received = ticker_log.read_until(lambda rs: len(rs) >= len(tickers), 30, "every recorded BTC ticker")
        book_log.read_until(
            lambda rs: sum(1 for r in rs if r.record.type in ("snapshot", "change")) >= len(books),
            30,
            "every recorded BTC book message",
        )
        # Archived while capture runs: its stop markers carry today's clock, years after the recording,
        # and the archive would then write a checkpoint for every hour in between.
        archive_topic(settings)
    # Deribit's own objects, as recorded, in the recording's order per instrument.
    for name in instruments:
        sent = [m for m in tickers if m["instrument_name"] == name]
        assert [r.record.ticker.mark_iv for r in received if r.key == name] == [m["mark_iv"] for m in sent], name

    connection = open_archive(settings.archive.path, ":memory:")
    moment = datetime.fromtimestamp(max(m["timestamp"] for m in tickers + books) / 1000, UTC)
    checked = 0
    for expiry in sorted({parse_option_name(name).expiry for name in instruments}):
        relation = connection.execute("SELECT * FROM chain_at(?, ?)", [expiry, moment])
        columns = [column[0] for column in relation.description]
        for row in (dict(zip(columns, values, strict=True)) for values in relation.fetchall()):
            for side, suffix in (("call", "C"), ("put", "P")):
                name = f"BTC-{expiry:%-d%b%y}-{row['strike']:g}-{suffix}".upper()
                recorded = [m for m in tickers if m["instrument_name"] == name]
                if not recorded:
                    continue
                last = recorded[-1]
                shown = tuple(row[f"{side}_{field}"] for field in ("bid_iv", "ask_iv", "mark", "mark_iv", "delta"))
                assert shown == (
                    last["bid_iv"],
                    last["ask_iv"],
                    last["mark_price"],
                    last["mark_iv"],
                    last["greeks"]["delta"],
                ), name
                assert row["underlying_price"] is not None
                checked += 1
    assert checked == len(instruments)
