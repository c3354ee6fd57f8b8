"""Load mode: N instruments at M book messages per second from pre-encoded frames.

A benchmark must measure the client, not the simulator, so each message is spliced from pre-encoded
byte pieces (channel head, then timestamp / prev_change_id / change_id as decimal text, then one of
a fixed set of level-change tails).  Each instrument's book has five bid and five ask levels whose
amounts toggle between two values, so every message is a real ``change`` and a client applying them
always holds a valid book.  ``change_id`` comes from one shared counter and ``prev_change_id`` always
equals the previous message's ``change_id`` of that instrument: no gaps.  The ``100ms`` and ``raw``
channels of an instrument carry the same messages (load mode ignores the 10/s cap of ``100ms``).
"""

from __future__ import annotations

import msgspec

from optionstream_pipeline.deribit.protocol import split_channel
from optionstream_pipeline.simulator.market import BookState
from optionstream_pipeline.simulator.universe import Universe, UniverseSettings

LEVELS = 5
LOAD_UNDERLYING = 100_000.0
INTERVALS = ("100ms", "raw")
_PREV = b',"prev_change_id":'


class _LoadBook:
    __slots__ = (
        "alt",
        "amounts",
        "ask_prices",
        "base",
        "bid_prices",
        "change_id",
        "channels",
        "heads",
        "name",
        "name_part",
        "tails",
        "timestamp_ms",
        "variant",
    )

    def __init__(self, name: str, index: int, change_id: int, timestamp_ms: int) -> None:
        self.name = name
        step = 0.0005
        mid = 0.01 + 0.0005 * (index % 40)
        self.bid_prices = [round(mid - step * (k + 1), 4) for k in range(LEVELS)]
        self.ask_prices = [round(mid + step * (k + 1), 4) for k in range(LEVELS)]
        self.base = [round(1.0 + (index * 7 + k * 3) % 50, 1) for k in range(2 * LEVELS)]
        self.alt = [round(a + 0.5, 1) for a in self.base]
        self.amounts = list(self.base)
        self.change_id = change_id
        self.timestamp_ms = timestamp_ms
        self.variant = 0
        self.channels = {interval: f"book.{name}.{interval}" for interval in INTERVALS}
        self.heads = {
            interval: (
                b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"'
                + channel.encode()
                + b'","data":{"type":"change","timestamp":'
            )
            for interval, channel in self.channels.items()
        }
        self.name_part = b',"instrument_name":"' + name.encode() + b'","change_id":'
        self.tails = [self._tail(j) for j in range(4 * LEVELS)]

    def _level(self, variant: int) -> tuple[int, float]:
        level = variant % (2 * LEVELS)
        return level, self.alt[level] if variant < 2 * LEVELS else self.base[level]

    def _tail(self, variant: int) -> bytes:
        level, amount = self._level(variant)
        entry = msgspec.json.encode([["change", self._price(level), amount]])
        bids, asks = (entry, b"[]") if level < LEVELS else (b"[]", entry)
        return b',"bids":' + bids + b',"asks":' + asks + b"}}}"

    def _price(self, level: int) -> float:
        return self.bid_prices[level] if level < LEVELS else self.ask_prices[level - LEVELS]

    def state(self) -> BookState:
        bids = {self.bid_prices[k]: self.amounts[k] for k in range(LEVELS)}
        asks = {self.ask_prices[k]: self.amounts[LEVELS + k] for k in range(LEVELS)}
        return BookState(self.change_id, self.timestamp_ms, bids, asks)

    def snapshot(self) -> dict:
        state = self.state()
        return {
            "type": "snapshot",
            "timestamp": state.timestamp_ms,
            "instrument_name": self.name,
            "change_id": state.change_id,
            "bids": [["new", p, a] for p, a in sorted(state.bids.items(), reverse=True)],
            "asks": [["new", p, a] for p, a in sorted(state.asks.items())],
        }


class LoadSource:
    """The load-mode data source; ``rate`` messages per second over all instruments, round-robin."""

    def __init__(
        self,
        instruments: int,
        rate: float,
        now_s: float,
        raw_requires_auth: bool = True,
        first_change_id: int = 40_000_000_000,
    ) -> None:
        self.raw_requires_auth = raw_requires_auth
        self.rate = float(rate)
        self.universe = Universe(UniverseSettings(max_instruments=instruments))
        self.universe.populate(now_s, LOAD_UNDERLYING)
        names = list(self.universe.live)
        self._change_id = first_change_id
        self.books = [_LoadBook(name, i, first_change_id - i, int(now_s * 1000)) for i, name in enumerate(names)]
        self._by_name = {book.name: book for book in self.books}
        self._started_s = now_s
        self._emitted = 0
        self._next = 0

    @property
    def emitted(self) -> int:
        return self._emitted

    def names(self) -> list[str]:
        return [book.name for book in self.books]

    def book(self, instrument: str) -> BookState:
        """Ground truth: the book after the last message of ``instrument``."""
        return self._by_name[instrument].state()

    def accepts(self, channel: str) -> bool:
        parts = split_channel(channel)
        return parts is not None and parts[0] == "book" and parts[2] in INTERVALS and parts[1] in self._by_name

    def on_subscribed(self, exchange, session, channel: str, now_s: float) -> None:
        book = self._by_name[channel.split(".")[1]]
        session.send(exchange.encode_notification(channel, book.snapshot()))

    def advance(self, exchange, now_s: float, halted: bool) -> None:
        if halted or not self.books:
            self._started_s, self._emitted = now_s, 0
            return
        due = int((now_s - self._started_s) * self.rate) - self._emitted
        if due > self.rate * 0.25:  # fell behind (paused loop): do not burst, move the origin
            self._started_s = now_s - (self._emitted + self.rate * 0.25) / self.rate
            due = int(self.rate * 0.25)
        if due > 0:
            self._emit(exchange.subscribers, due, int(now_s * 1000))

    def _emit(self, subscribers: dict, count: int, now_ms: int) -> None:
        books, n = self.books, len(self.books)
        index = self._next
        ts = str(now_ms).encode()
        change_id = self._change_id
        for _ in range(count):
            book = books[index]
            index = index + 1 if index + 1 < n else 0
            prev = book.change_id
            change_id += 1
            book.change_id, book.timestamp_ms = change_id, now_ms
            variant = book.variant
            book.variant = variant + 1 if variant + 1 < 4 * LEVELS else 0
            level, amount = book._level(variant)
            book.amounts[level] = amount
            for interval, channel in book.channels.items():
                sessions = subscribers.get(channel)
                if sessions:
                    payload = b"".join(
                        (
                            book.heads[interval],
                            ts,
                            _PREV,
                            str(prev).encode(),
                            book.name_part,
                            str(change_id).encode(),
                            book.tails[variant],
                        )
                    )
                    for session in sessions:
                        session.deliver(channel, payload)
        self._change_id = change_id
        self._next = index
        self._emitted += count

    def instruments_json(self, currency: str, expired: bool) -> list[dict]:
        return self.universe.instruments_json(expired) if currency in ("BTC", "any") else []

    def index_price(self) -> float | None:
        return LOAD_UNDERLYING

    def time_ms(self, now_s: float) -> int:
        return int(now_s * 1000)


async def measure_throughput(url: str, seconds: float = 5.0, interval: str = "100ms", batch: int = 200) -> dict:
    """Subscribe to every book of a load-mode simulator at ``url`` and count what arrives.

    Returns messages/s over ``seconds`` (after the snapshots) and the number of ``prev_change_id``
    gaps seen, so a run checks the chain as well as the rate.  Used by the benchmark test and by hand:
    ``python -c "import asyncio; from optionstream_pipeline.simulator.load import measure_throughput;
    print(asyncio.run(measure_throughput('ws://127.0.0.1:8765/ws/api/v2')))"``.
    """
    import asyncio
    import time

    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send(
            msgspec.json.encode(
                {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "public/get_instruments",
                    "params": {"currency": "BTC", "kind": "option"},
                }
            )
        )
        names = [i["instrument_name"] for i in await _reply(ws, 0)]
        channels = [f"book.{name}.{interval}" for name in names]
        for start in range(0, len(channels), batch):
            await ws.send(
                msgspec.json.encode(
                    {
                        "jsonrpc": "2.0",
                        "id": 1 + start,
                        "method": "public/subscribe",
                        "params": {"channels": channels[start : start + batch]},
                    }
                )
            )
        last: dict[str, int] = {}
        count = gaps = 0
        began = time.perf_counter()
        deadline = began + seconds
        while (now := time.perf_counter()) < deadline:
            try:
                message = msgspec.json.decode(await asyncio.wait_for(ws.recv(), deadline - now))
            except TimeoutError:
                break
            data = message.get("params", {}).get("data") if message.get("method") == "subscription" else None
            if data is None:
                continue
            name = data["instrument_name"]
            if "prev_change_id" in data:
                count += 1
                gaps += last.get(name) != data["prev_change_id"]
            last[name] = data["change_id"]
        elapsed = time.perf_counter() - began
        # Drain before closing: a client that stops reading never sees the server's close frame.
        await ws.send(
            msgspec.json.encode({"jsonrpc": "2.0", "id": -1, "method": "public/unsubscribe_all", "params": {}})
        )
        await _reply(ws, -1)
    return {
        "instruments": len(names),
        "messages": count,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(count / elapsed),
        "gaps": gaps,
    }


async def _reply(ws, request_id: int):
    while True:
        message = msgspec.json.decode(await ws.recv())
        if message.get("id") == request_id:
            return message["result"]
