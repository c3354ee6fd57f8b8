"""The ticker record: the Kafka message value of the ticker topic, one JSON object per Deribit ticker.

Deribit's ``ticker.{instrument}.{interval}`` notification carries, for an option, the exchange's
own top of book (price, size and implied volatility of the best bid and ask), the mark price and
mark IV, the greeks, the underlying index and its price, the index price and open interest. The
record keeps that object as Deribit sent it (``ticker``: its bytes spliced verbatim, as the book
record's levels are), so that every field and every null arrives as the exchange sent it, fields
added by Deribit later included; beside it, like tardis-node's normalized types, the exchange
timestamp and the local receive timestamp, and the capture session.

The published contract is ``optionstream_pipeline/schemas/ticker-record.schema.json`` (a test
checks that these structs and the schema agree field by field) and ``docs/message-schema.md``.
:class:`TickerData` is the typed view of the fields OptionStream reads (every one may be null);
a field it does not know is ignored, never refused.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

import msgspec

from optionstream_pipeline.records.book import EXCHANGE, SCHEMA_VERSION, CaptureMeta, RecordError

TickerInterval = Literal["100ms", "agg2", "raw"]
Number = float | None

Data = TypeVar("Data")


class Greeks(msgspec.Struct, gc=False):
    delta: Number = None
    gamma: Number = None
    vega: Number = None
    theta: Number = None
    rho: Number = None


class Stats(msgspec.Struct, gc=False):
    """24-hour statistics; Deribit sends nulls while an option has not traded."""

    volume: Number = None
    volume_usd: Number = None
    price_change: Number = None
    low: Number = None
    high: Number = None


class TickerData(msgspec.Struct, gc=False):
    """The ``data`` object of an option ticker notification, typed (Deribit's own names and units).

    Prices are in the option's currency (BTC), amounts in contracts, IVs in percent; ``timestamp``
    is the exchange's time in ms. ``instrument_name`` and ``timestamp`` are always there.
    """

    instrument_name: str
    timestamp: Annotated[int, msgspec.Meta(ge=0)]
    state: str | None = None
    best_bid_price: Number = None
    best_bid_amount: Number = None
    bid_iv: Number = None
    best_ask_price: Number = None
    best_ask_amount: Number = None
    ask_iv: Number = None
    mark_price: Number = None
    mark_iv: Number = None
    last_price: Number = None
    open_interest: Number = None
    settlement_price: Number = None
    min_price: Number = None
    max_price: Number = None
    interest_rate: Number = None
    index_price: Number = None
    estimated_delivery_price: Number = None
    underlying_index: str | None = None
    underlying_price: Number = None
    greeks: Greeks | None = None
    stats: Stats | None = None


class TickerRecord(msgspec.Struct, Generic[Data], tag_field="type", tag="ticker", forbid_unknown_fields=True, gc=False):
    v: int
    exchange: Literal["deribit"]
    instrument: str
    interval: TickerInterval
    exchange_timestamp_ms: int  # Deribit's timestamp of the ticker (ms since the epoch, UTC)
    local_timestamp_us: int  # when capture received the frame (µs since the epoch, UTC, capture host clock)
    ticker: Data
    capture: CaptureMeta

    @property
    def type(self) -> str:
        return "ticker"


_decode = msgspec.json.Decoder(TickerRecord[TickerData]).decode
_encode = msgspec.json.Encoder().encode
decode_ticker_data = msgspec.json.Decoder(TickerData).decode
"""Decode (and type-check) Deribit's ticker ``data`` bytes; raises ``msgspec.DecodeError``."""


def decode_ticker(value: bytes) -> TickerRecord[TickerData]:
    """Decode and check one ticker record; raises :class:`RecordError` naming what is wrong."""
    try:
        record = _decode(value)
    except msgspec.DecodeError as exc:
        raise RecordError(f"not a valid ticker record: {exc}") from None
    if record.v != SCHEMA_VERSION:
        raise RecordError(
            f"ticker record schema version {record.v!r} is not supported: this OptionStream reads version "
            f"{SCHEMA_VERSION} (upgrade the consumer to read newer records)"
        )
    return record


def encode_ticker(
    instrument: str,
    interval: str,
    exchange_timestamp_ms: int,
    local_timestamp_us: int,
    ticker: msgspec.Raw,
    capture: msgspec.Raw,
) -> bytes:
    """The capture side: ``ticker`` is Deribit's ``data`` object, its bytes as received."""
    return _encode(
        TickerRecord(
            SCHEMA_VERSION, EXCHANGE, instrument, interval, exchange_timestamp_ms, local_timestamp_us, ticker, capture
        )
    )


def deribit_ticker(data: TickerData) -> dict:
    """Deribit's ``data`` object for a typed ticker (what a replay sends): every known field, nulls kept."""
    return msgspec.to_builtins(data)
