"""The ticker record against its published contract: the typed view and the JSON Schema agree field by
field, Deribit's object travels verbatim (unknown fields and nulls included), and foreign records are refused."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import msgspec
import pytest

from optionstream_pipeline.records.book import RecordError, encode_capture_meta
from optionstream_pipeline.records.ticker import (
    Greeks,
    Stats,
    TickerData,
    TickerRecord,
    decode_ticker,
    deribit_ticker,
    encode_ticker,
)
from optionstream_pipeline.simulator.replay import parse_ws_log

SCHEMA = json.loads(resources.files("optionstream_pipeline.schemas").joinpath("ticker-record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
RECORDING = Path(__file__).parents[3] / "shared/fixtures/deribit/recorded_mainnet_2021-07-22.ws.log"
CAPTURE = encode_capture_meta("5f0c3a9e71b2", 2)


def recorded_tickers() -> list[bytes]:
    """The ``data`` objects of the real mainnet ticker frames, as bytes exactly as received."""
    frames = parse_ws_log(RECORDING).subscription_frames
    return [
        msgspec.json.encode(json.loads(frame.text)["params"]["data"])
        for frame in frames
        if frame.channel.startswith("ticker.")
    ]


def record_of(data: bytes) -> bytes:
    ticker = msgspec.json.decode(data)
    return encode_ticker(
        ticker["instrument_name"], "raw", ticker["timestamp"], 1626993723804855, msgspec.Raw(data), CAPTURE
    )


def _struct_fields(cls: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    info = msgspec.inspect.type_info(cls)
    return {f.encode_name for f in info.fields}, {f.encode_name for f in info.fields if f.required}


def _json_type(info: msgspec.inspect.Type) -> list[str]:
    inspect = msgspec.inspect
    members = info.types if isinstance(info, inspect.UnionType) else (info,)
    names = {
        inspect.FloatType: "number",
        inspect.IntType: "integer",
        inspect.StrType: "string",
        inspect.NoneType: "null",
        inspect.StructType: "object",
        inspect.LiteralType: "enum",
    }
    return sorted(names[type(member)] for member in members)


@pytest.mark.parametrize(
    ("cls", "node"),
    [
        (TickerRecord, SCHEMA),
        (TickerData, SCHEMA["properties"]["ticker"]),
        (Greeks, SCHEMA["properties"]["ticker"]["properties"]["greeks"]),
        (Stats, SCHEMA["properties"]["ticker"]["properties"]["stats"]),
    ],
)
def test_typed_view_and_schema_agree_on_fields_types_and_required_keys(cls, node) -> None:
    names, required = _struct_fields(cls)
    if cls is TickerRecord:
        names, required = names | {"type"}, required | {"type"}
    assert set(node["properties"]) == names
    assert set(node["required"]) == required
    info = msgspec.inspect.type_info(TickerRecord[TickerData] if cls is TickerRecord else cls)
    for field in info.fields:
        published = node["properties"][field.encode_name]
        declared = _json_type(field.type)
        if "type" in published:  # constants and enums are checked by the encoding test
            shown = published["type"] if isinstance(published["type"], list) else [published["type"]]
            assert declared == sorted(shown), field.encode_name
    # The record itself is closed; Deribit's object is open: a field Deribit adds later is kept.
    assert node["additionalProperties"] is (cls is not TickerRecord)


def test_every_recorded_mainnet_ticker_becomes_a_valid_record_carrying_it_verbatim() -> None:
    tickers = recorded_tickers()
    assert len(tickers) == 89
    for data in tickers:
        value = record_of(data)
        VALIDATOR.validate(json.loads(value))
        record = decode_ticker(value)
        assert json.loads(value)["ticker"] == json.loads(data)  # every field, as sent
        assert value.find(data) > 0  # the exchange's bytes, spliced
        ticker = record.ticker
        assert ticker.instrument_name == record.instrument
        assert ticker.timestamp == record.exchange_timestamp_ms
        assert isinstance(ticker.greeks, Greeks) and ticker.greeks.delta is not None
        assert deribit_ticker(ticker) == json.loads(data) | {"stats": {**json.loads(data)["stats"], "volume_usd": None}}


def test_the_typed_view_reads_deribits_values_and_nulls() -> None:
    data = json.loads(recorded_tickers()[0])
    record = decode_ticker(record_of(msgspec.json.encode(data)))
    ticker = record.ticker
    assert (ticker.best_bid_price, ticker.best_bid_amount, ticker.bid_iv) == (0.0015, 4714.0, 115.62)
    assert (ticker.best_ask_price, ticker.best_ask_amount) == (0.0025, 873.0)
    assert (ticker.mark_price, ticker.mark_iv) == (0.001972, 120.74)
    assert (ticker.underlying_index, ticker.underlying_price, ticker.index_price) == ("ETH-30JUL21", 2003.61, 2006.72)
    assert ticker.greeks == Greeks(delta=0.03127, gamma=0.0002, vega=0.20072, theta=-1.64029, rho=0.01188)
    assert ticker.open_interest == 12685.0
    nulls = {**data, "last_price": None, "stats": {"volume": None, "price_change": None, "low": None, "high": None}}
    again = decode_ticker(record_of(msgspec.json.encode(nulls))).ticker
    assert again.last_price is None and again.stats == Stats()


def test_a_field_deribit_adds_later_is_kept_and_ignored_by_the_typed_view() -> None:
    data = {**json.loads(recorded_tickers()[0]), "combo_state": "active"}
    value = record_of(msgspec.json.encode(data))
    VALIDATOR.validate(json.loads(value))
    assert json.loads(value)["ticker"]["combo_state"] == "active"
    assert decode_ticker(value).ticker.mark_iv == 120.74


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"v": 2}, r"ticker record schema version 2 is not supported"),
        ({"type": "change"}, r"Invalid value 'change'"),
        ({"extra": 1}, r"Object contains unknown field `extra`"),
        ({"ticker": {"instrument_name": "X", "timestamp": 1, "mark_iv": "high"}}, r"Expected `float \| null`"),
        ({"ticker": {"timestamp": 1}}, r"missing required field `instrument_name`"),
    ],
)
def test_a_bad_or_foreign_ticker_record_is_refused_naming_the_problem(change: dict, expected: str) -> None:
    value = {**json.loads(record_of(recorded_tickers()[0])), **change}
    with pytest.raises(RecordError, match=expected):
        decode_ticker(json.dumps(value).encode())
