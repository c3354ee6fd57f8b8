"""The archive scenario (``scenario.py``: gaps, dropped connections, a killed capture session, archive
passes while capture runs): the Parquet rows are the topic's records, exploded, exactly."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from optionstream_pipeline.archive.layout import hour_of
from optionstream_pipeline.archive.run import archive_topic
from optionstream_pipeline.archive.schema import ARCHIVE_SCHEMA, COLUMNS
from optionstream_pipeline.archive.ticker_schema import COLUMNS as TICKER_COLUMNS
from optionstream_pipeline.deribit.instruments import parse_option_name
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline_tests.archive.conftest import archive_rows, expected_rows
from optionstream_pipeline_tests.archive.scenario import PARTITIONS, ArchivedRun
from optionstream_pipeline_tests.support.kafka_reading import TopicLog

pytestmark = pytest.mark.slow


def test_the_archive_holds_exactly_the_topic_exploded(archived_run: ArchivedRun) -> None:
    records = archived_run.records
    kinds = {r.record.type for r in records}
    assert {"snapshot", "change", "gap", "disconnect"} <= kinds  # the scenario has what it should
    assert len({r.record.capture.id for r in records}) == 3
    expected = [
        row for message in sorted(records, key=lambda r: (r.partition, r.offset)) for row in expected_rows(message)
    ]
    actual = [
        {key: value for key, value in row.items() if key != "book_time"}
        for row in archive_rows(archived_run.store, archived_run.settings.kafka.topic)
    ]
    assert len(actual) == len(expected)
    assert actual == expected  # every column of every row, in order


def test_every_column_is_declared_once_with_its_meaning(archived_run: ArchivedRun) -> None:
    file = archived_run.store.live_files(archived_run.settings.kafka.topic)[0]
    schema = pq.read_schema(archived_run.store.path(file))
    assert [field.name for field in schema] == [name for name, _, _ in COLUMNS]
    for field in schema:
        assert field.type == ARCHIVE_SCHEMA.field(field.name).type, field.name
        assert field.metadata[b"description"], field.name
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("symbol").type).startswith("dictionary<values=string")


def test_files_are_zstd_with_dictionary_strings_and_delta_encoded_numbers(archived_run: ArchivedRun) -> None:
    for file in archived_run.store.live_files(archived_run.settings.kafka.topic):
        metadata = pq.read_metadata(archived_run.store.path(file))
        for index, field in enumerate(ARCHIVE_SCHEMA):
            chunk = metadata.row_group(0).column(index)
            assert chunk.compression == "ZSTD", field.name
            if pa.types.is_dictionary(field.type):
                assert "RLE_DICTIONARY" in chunk.encodings, field.name
            elif pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type):
                assert "DELTA_BINARY_PACKED" in chunk.encodings, field.name
            assert chunk.is_stats_set, field.name  # min/max per row group: what DuckDB prunes by


def test_book_time_never_goes_back_and_decides_the_hour(archived_run: ArchivedRun) -> None:
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for row in archive_rows(archived_run.store, archived_run.settings.kafka.topic):
        by_partition[row["kafka_partition"]].append(row)
    for partition, rows in by_partition.items():
        times = [row["book_time"] for row in rows]
        assert times == sorted(times), f"partition {partition}"
        for row in rows:
            assert row["book_time"] >= row["timestamp"]
    for file in archived_run.store.live_files(archived_run.settings.kafka.topic):
        table = archived_run.store.read(file)
        hours = {hour_of(int(time.timestamp() * 1_000_000)) for time in table["book_time"].to_pylist()}
        assert hours == {file.hour_start_us}, file.path


def test_files_cover_each_partition_from_offset_zero_without_hole_or_overlap(archived_run: ArchivedRun) -> None:
    store = archived_run.store
    for partition in range(PARTITIONS):
        files = store.live_files(archived_run.settings.kafka.topic, partition)
        assert files and files[0].first_offset == 0
        for before, after in itertools.pairwise(files):
            assert after.first_offset == before.last_offset + 1, (before.name, after.name)
        for file in files:
            offsets = store.read(file)["kafka_offset"].to_pylist()
            assert (min(offsets), max(offsets)) == (file.first_offset, file.last_offset)
            assert len(set(offsets)) == file.records  # every record of the range, none twice
            assert file.records <= 400  # archive.max_records_per_file
        topic_last = max(r.offset for r in archived_run.records if r.partition == partition)
        assert files[-1].last_offset == topic_last
    assert all(not path.name.endswith(".tmp") for path in Path(store.location).rglob("*"))


def test_rows_are_sorted_by_instrument_then_offset_within_each_file(archived_run: ArchivedRun) -> None:
    for file in archived_run.store.live_files(archived_run.settings.kafka.topic):
        rows = archived_run.store.read(file).select(["symbol", "kafka_offset"]).to_pylist()
        keys = [(row["symbol"], row["kafka_offset"]) for row in rows]
        assert keys == sorted(keys), file.path


def test_a_pass_with_nothing_new_writes_nothing_and_the_group_shows_the_lag(archived_run: ArchivedRun) -> None:
    settings = archived_run.settings
    before = archived_run.store.files()
    again = archive_topic(settings)
    assert archived_run.store.files() == before
    assert [report.records for report in again] == [0] * PARTITIONS * 2  # the book and the ticker topic
    assert all(report.plan == "continuing" and report.lag == 0 for report in again)
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers[0], "group.id": settings.archive.group_id})
    try:
        committed = consumer.committed([TopicPartition(settings.kafka.topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        consumer.close()
    store = archived_run.store
    for partition in committed:
        assert partition.offset == store.archived(settings.kafka.topic, partition.partition).next_offset
    # The passes while and after capture ran: each archived part of the topic, together all of it.
    books = [report for one_pass in archived_run.passes for report in one_pass if report.topic == settings.kafka.topic]
    assert sum(report.records for report in books) == len(archived_run.records)


# -- the ticker table: the ticker topic, one row per record, with the same exactly-once rules -------


def expected_ticker_row(message: TopicRecord, incarnation: int = 0) -> dict:
    """The row a ticker record must become, written out from the record schema (not from the archive code)."""
    record = message.record
    data = msgspec.json.decode(message.value)["ticker"]
    greeks, stats = data.get("greeks") or {}, data.get("stats") or {}
    name = parse_option_name(record.instrument)
    return {
        "exchange": "deribit",
        "symbol": record.instrument,
        "timestamp": datetime.fromtimestamp(data["timestamp"] / 1000, UTC),
        "local_timestamp": datetime.fromtimestamp(record.local_timestamp_us / 1e6, UTC),
        "type": name.option_type,
        "strike": name.strike,
        "expiration": datetime.fromtimestamp(name.expiration_timestamp_ms / 1000, UTC),
        "open_interest": data.get("open_interest"),
        "last_price": data.get("last_price"),
        "bid_price": data.get("best_bid_price"),
        "bid_amount": data.get("best_bid_amount"),
        "bid_iv": data.get("bid_iv"),
        "ask_price": data.get("best_ask_price"),
        "ask_amount": data.get("best_ask_amount"),
        "ask_iv": data.get("ask_iv"),
        "mark_price": data.get("mark_price"),
        "mark_iv": data.get("mark_iv"),
        "underlying_index": data.get("underlying_index"),
        "underlying_price": data.get("underlying_price"),
        **{greek: greeks.get(greek) for greek in ("delta", "gamma", "vega", "theta", "rho")},
        "index_price": data.get("index_price"),
        "estimated_delivery_price": data.get("estimated_delivery_price"),
        "settlement_price": data.get("settlement_price"),
        "interest_rate": data.get("interest_rate"),
        "min_price": data.get("min_price"),
        "max_price": data.get("max_price"),
        "state": data.get("state"),
        **{stat: stats.get(stat) for stat in ("volume", "volume_usd", "price_change", "low", "high")},
        "interval": record.interval,
        "capture_id": record.capture.id,
        "capture_connection": record.capture.connection,
        "kafka_partition": message.partition,
        "kafka_offset": message.offset,
        "topic_incarnation": incarnation,
    }


def test_the_ticker_archive_holds_exactly_the_ticker_topic(archived_run: ArchivedRun, kafka_bootstrap) -> None:
    settings = archived_run.settings
    ticker_topic = settings.kafka.ticker_topic
    tickers = [r for one_pass in archived_run.passes for r in one_pass if r.topic == ticker_topic]
    archived = sum(report.records for report in tickers)
    with TopicLog(kafka_bootstrap, ticker_topic, records="ticker") as log:
        records = log.read_until(lambda rs: len(rs) >= archived, 30, "the archived ticker records")
    assert len({r.record.capture.id for r in records}) == 3  # every session, the killed one too
    expected = [expected_ticker_row(message) for message in sorted(records, key=lambda r: (r.partition, r.offset))]
    store = archived_run.store
    rows = [row for file in store.live_files(ticker_topic) for row in store.read(file).to_pylist()]
    actual = sorted(
        ({key: value for key, value in row.items() if key != "ticker_time"} for row in rows),
        key=lambda row: (row["kafka_partition"], row["kafka_offset"]),
    )
    assert len(actual) == len(expected) == archived
    assert actual == expected  # every column of every row
    assert all(file.path.startswith("ticker/date=") for file in store.live_files(ticker_topic))
    schema = pq.read_schema(store.path(store.live_files(ticker_topic)[0]))
    assert [field.name for field in schema] == [name for name, _, _, _ in TICKER_COLUMNS]
    assert all(field.metadata[b"description"] for field in schema)


def test_ticker_time_never_goes_back_and_decides_the_hour(archived_run: ArchivedRun) -> None:
    store, topic = archived_run.store, archived_run.settings.kafka.ticker_topic
    for partition in range(PARTITIONS):
        files = store.live_files(topic, partition)
        assert files and files[0].first_offset == 0
        for before, after in itertools.pairwise(files):
            assert after.first_offset == before.last_offset + 1, (before.name, after.name)
        times = [t for file in files for t in store.read(file).sort_by("kafka_offset")["ticker_time"].to_pylist()]
        assert times == sorted(times), f"partition {partition}"
        for file in files:
            hours = {hour_of(int(t.timestamp() * 1_000_000)) for t in store.read(file)["ticker_time"].to_pylist()}
            assert hours == {file.hour_start_us}, file.path
