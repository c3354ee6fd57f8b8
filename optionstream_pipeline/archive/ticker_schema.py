"""The archive's ticker table: one row per ticker record, modelled on Tardis' ``options_chain``.

Tardis' columns (``exchange, symbol, timestamp, local_timestamp, type, strike_price, expiration,
open_interest, last_price, bid_price, bid_amount, bid_iv, ask_price, ask_amount, ask_iv, mark_price,
mark_iv, underlying_index, underlying_price, delta, gamma, vega, theta, rho``; ``strike`` here, as in
the book table), then the rest of Deribit's ticker, so that a row gives back the whole ticker (a
replay sends it), and where the record is in Kafka. Nulls are Deribit's nulls.

``ticker_time`` is the table's time axis, as ``book_time`` is the book table's: the ticker's own time,
or the latest ``ticker_time`` before it in its Kafka partition when that is later, so it never goes
back within a partition and files, hours and compaction split the stream at clean offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from optionstream_pipeline.archive.schema import instrument_info
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records.ticker import Greeks, Stats, TickerData

_TS = pa.timestamp("us", tz="UTC")
_TEXT = pa.dictionary(pa.int32(), pa.string())
_F = pa.float64()

# name, type, what it means, where it comes from in the record ("ticker.x", "ticker.greeks.x", ...).
COLUMNS: tuple[tuple[str, pa.DataType, str, str], ...] = (
    ("exchange", _TEXT, "deribit", "exchange"),
    ("symbol", _TEXT, "the instrument, e.g. BTC-27JUN25-100000-C", "instrument"),
    ("timestamp", _TS, "the exchange's time of the ticker", "exchange_timestamp_ms"),
    ("local_timestamp", _TS, "when capture received the frame, capture host clock", "local_timestamp_us"),
    ("ticker_time", _TS, "timestamp, or the partition's latest ticker_time when later: never goes back", ""),
    ("type", _TEXT, "call or put, from the name", ""),
    ("strike", _F, "the option's strike, from its name", ""),
    ("expiration", pa.timestamp("ms", tz="UTC"), "the option's expiry (08:00 UTC), from its name", ""),
    ("open_interest", _F, "open interest, in contracts", "ticker.open_interest"),
    ("last_price", _F, "the last trade's price (BTC); null before any trade", "ticker.last_price"),
    ("bid_price", _F, "best bid price (BTC); 0 with an empty bid side", "ticker.best_bid_price"),
    ("bid_amount", _F, "best bid size, in contracts", "ticker.best_bid_amount"),
    ("bid_iv", _F, "implied volatility of the best bid, percent", "ticker.bid_iv"),
    ("ask_price", _F, "best ask price (BTC); 0 with an empty ask side", "ticker.best_ask_price"),
    ("ask_amount", _F, "best ask size, in contracts", "ticker.best_ask_amount"),
    ("ask_iv", _F, "implied volatility of the best ask, percent", "ticker.ask_iv"),
    ("mark_price", _F, "Deribit's mark price (BTC)", "ticker.mark_price"),
    ("mark_iv", _F, "implied volatility of the mark price, percent", "ticker.mark_iv"),
    ("underlying_index", _TEXT, "the underlying (a future, or SYN. for a synthetic one)", "ticker.underlying_index"),
    ("underlying_price", _F, "the underlying's price (USD)", "ticker.underlying_price"),
    ("delta", _F, "delta", "ticker.greeks.delta"),
    ("gamma", _F, "gamma", "ticker.greeks.gamma"),
    ("vega", _F, "vega", "ticker.greeks.vega"),
    ("theta", _F, "theta", "ticker.greeks.theta"),
    ("rho", _F, "rho", "ticker.greeks.rho"),
    ("index_price", _F, "the BTC index price (USD)", "ticker.index_price"),
    ("estimated_delivery_price", _F, "Deribit's estimated delivery price (USD)", "ticker.estimated_delivery_price"),
    ("settlement_price", _F, "the last settlement price (BTC)", "ticker.settlement_price"),
    ("interest_rate", _F, "the interest rate Deribit prices with", "ticker.interest_rate"),
    ("min_price", _F, "the lowest price an order may have now (BTC)", "ticker.min_price"),
    ("max_price", _F, "the highest price an order may have now (BTC)", "ticker.max_price"),
    ("state", _TEXT, "the instrument's state (open, closed)", "ticker.state"),
    ("volume", _F, "24 h volume, contracts", "ticker.stats.volume"),
    ("volume_usd", _F, "24 h volume, USD", "ticker.stats.volume_usd"),
    ("price_change", _F, "24 h price change, percent", "ticker.stats.price_change"),
    ("low", _F, "24 h low (BTC)", "ticker.stats.low"),
    ("high", _F, "24 h high (BTC)", "ticker.stats.high"),
    ("interval", _TEXT, "the Deribit ticker channel captured: 100ms, agg2 or raw", "interval"),
    ("capture_id", _TEXT, "the capture session that wrote the record", "capture.id"),
    ("capture_connection", pa.int16(), "its WebSocket connection", "capture.connection"),
    ("kafka_partition", pa.int32(), "the record's Kafka partition", ""),
    ("kafka_offset", pa.int64(), "the record's Kafka offset: with the partition (and incarnation), its identity", ""),
    ("topic_incarnation", pa.int32(), "0, then 1, 2, ... each time the topic was found deleted and recreated", ""),
)
TICKER_SCHEMA = pa.schema([pa.field(name, kind, metadata={"description": doc}) for name, kind, doc, _ in COLUMNS])
SORT_KEYS = [("symbol", "ascending"), ("kafka_offset", "ascending")]
TIME_COLUMN = "ticker_time"

_FIELDS = {name: source.split(".") for name, _, _, source in COLUMNS if source.startswith("ticker.")}
_GREEKS = Greeks()
_STATS = Stats()


def explode(messages: Sequence[TopicRecord], ticker_time_us: Sequence[int], incarnation: int) -> pa.Table:
    """The rows of these ticker records (all of one partition), in record order: one per record."""
    records = [message.record for message in messages]
    tickers: list[TickerData] = [record.ticker for record in records]
    greeks = [ticker.greeks or _GREEKS for ticker in tickers]
    stats = [ticker.stats or _STATS for ticker in tickers]
    symbols = pa.array([record.instrument for record in records], pa.string()).dictionary_encode()
    infos = [instrument_info(name) for name in symbols.dictionary.to_pylist()]
    columns = {
        "exchange": [record.exchange for record in records],
        "symbol": symbols,
        "timestamp": [record.exchange_timestamp_ms * 1000 for record in records],
        "local_timestamp": [record.local_timestamp_us for record in records],
        "ticker_time": ticker_time_us,
        "type": pa.array([info.option_type for info in infos], pa.string()).take(symbols.indices),
        "strike": pa.array([info.strike for info in infos], _F).take(symbols.indices),
        "expiration": pa.array([info.expiry_ms for info in infos], pa.timestamp("ms", tz="UTC")).take(symbols.indices),
        "interval": [record.interval for record in records],
        "capture_id": [record.capture.id for record in records],
        "capture_connection": [record.capture.connection for record in records],
        "kafka_partition": [message.partition for message in messages],
        "kafka_offset": [message.offset for message in messages],
        "topic_incarnation": [incarnation] * len(records),
    }
    for name, path in _FIELDS.items():
        if len(path) == 2:
            columns[name] = [getattr(ticker, path[1]) for ticker in tickers]
        else:
            nested = greeks if path[1] == "greeks" else stats
            columns[name] = [getattr(value, path[2]) for value in nested]
    arrays = []
    for name, kind, _, _ in COLUMNS:
        array = columns[name]
        if not isinstance(array, pa.Array):
            array = pa.array(array, type=kind.value_type if pa.types.is_dictionary(kind) else kind)
        if pa.types.is_dictionary(kind) and not pa.types.is_dictionary(array.type):
            array = array.dictionary_encode()
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=TICKER_SCHEMA)


DERIBIT_COLUMNS = tuple(_FIELDS)
"""The columns that hold Deribit's ticker fields (``symbol`` and ``timestamp`` aside): what
:func:`ticker_data` reads."""


def ticker_data(row: dict, timestamp_ms: int) -> TickerData:
    """Deribit's ticker back from one row of the table (``row``: ``symbol`` and the
    :data:`DERIBIT_COLUMNS` -> Python values; ``timestamp_ms``: its ``timestamp``)."""
    top = {name: row[name] for name, path in _FIELDS.items() if len(path) == 2}
    return TickerData(
        instrument_name=row["symbol"],
        timestamp=timestamp_ms,
        greeks=Greeks(**{path[2]: row[name] for name, path in _FIELDS.items() if path[1] == "greeks"}),
        stats=Stats(**{path[2]: row[name] for name, path in _FIELDS.items() if path[1] == "stats"}),
        **{_FIELDS[name][1]: value for name, value in top.items()},
    )
