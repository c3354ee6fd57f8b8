"""The live web view: the books of a :class:`BookConsumer`, pushed to browsers over a WebSocket.

One consumer thread applies the topic's records; each browser has a sender that, at most
:data:`SEND_HZ` times a second, sends the latest state of what it watches (one book's ladder, or
one expiry's chain) when it changed. A slow browser only gets fewer, later states: the consumer
never waits for it. The page, its script and its styles are files of this package (``static/``):
no build step, no CDN, works offline.

Messages, as JSON: the server sends ``instruments`` (on connect and when the set changes), ``book``
(the watched instrument: its ladder to :data:`LADDER_DEPTH` levels) and ``chain`` (every strike of
the watched expiry, calls and puts); the browser sends ``{"watch": "<instrument>"}`` or
``{"chain": "<YYYY-MM-DD>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from confluent_kafka import KafkaException
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from optionstream_pipeline.consume.books import OrderBook
from optionstream_pipeline.consume.consumer import BookConsumer
from optionstream_pipeline.consume.view import Activity, TopOfBook, chain_order, option_of, top_of_book

log = logging.getLogger(__name__)

SEND_HZ = 10
LADDER_DEPTH = 20
RATES_EVERY_S = 1.0
RETRY_S = 2.0
STATIC = resources.files("optionstream_pipeline.consume.web") / "static"


class LiveBooks:
    """The consumer's books, read by the web senders under one lock.

    ``open_consumer`` is called in the consumer thread, again every :data:`RETRY_S` while it fails
    (the topic does not exist yet, as before capture first ran; the broker is not up yet): the page
    says what it waits for. The thread fetches from Kafka outside the lock and applies a batch
    inside it, so a reader waits at most one batch; ``version`` counts the batches applied (and the
    rates' updates), ``instrument_version`` the changes to the set of instruments.
    """

    def __init__(
        self, open_consumer: Callable[[], BookConsumer], topic: str, consumer: BookConsumer | None = None
    ) -> None:
        self.open_consumer = open_consumer
        self.topic = topic
        self.consumer = consumer  # one opened already, if any
        self.lock = threading.Lock()
        self.version = 0
        self.instrument_version = 0
        self.listed: set[str] = set()  # the instruments the browsers were last told of
        self.activity = Activity()
        self.rates: dict[str, float] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-books", daemon=True)

    @property
    def books(self) -> dict[str, OrderBook]:
        return {} if self.consumer is None else self.consumer.books

    def start(self) -> LiveBooks:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.consumer is not None:
            self.consumer.close()

    def _run(self) -> None:
        try:
            if self._open():
                self._follow(self.consumer)
        except Exception as exc:  # shown on the page, not only in a log
            log.exception("the live view's consumer stopped")
            self.error = f"the consumer stopped: {exc}"

    def _open(self) -> bool:
        while self.consumer is None and not self._stop.is_set():
            try:
                self.consumer = self.open_consumer()
            except KafkaException as exc:
                self.error = f"waiting for the topic {self.topic}: {exc.args[0].str() if exc.args else exc}"
                self._stop.wait(RETRY_S)
                continue
            self.error = None
        return self.consumer is not None

    def _follow(self, consumer: BookConsumer) -> None:
        rates_at = time.monotonic()
        while not self._stop.is_set():
            consumer.fetch(0.1)
            with self.lock:
                applied = listed = False
                for update in consumer.updates(0):
                    name, applied = update.book.instrument, True
                    if update.record.type == "unsubscribed":
                        self.listed.discard(name)
                        listed = True
                        continue
                    if name not in self.listed:
                        self.listed.add(name)
                        listed = True
                    self.activity.count(name)
                if applied:
                    self.version += 1
                if listed:
                    self.instrument_version += 1
                if time.monotonic() - rates_at >= RATES_EVERY_S:
                    rates_at = time.monotonic()
                    self.rates = dict(self.activity.rates(rates_at))
                    self.version += 1  # ages and rates moved: worth a send

    # -- what a browser is sent (call with the lock held) -----------------------------------

    def instruments(self) -> list[dict[str, Any]]:
        lines = sorted((self._line(name) for name in self.books), key=chain_order)
        return [
            {"name": line.instrument, "expiry": line.expiry and line.expiry.isoformat(), "strike": line.strike,
             "type": line.option_type}
            for line in lines
        ]  # fmt: skip

    def book(self, name: str) -> dict[str, Any]:
        book = self.books.get(name)
        if book is None:
            return {"type": "book", "instrument": name, "missing": True, "why": "not followed (yet)"}
        bids, asks = book.depth(LADDER_DEPTH)
        return {
            "type": "book",
            **_top(self._line(name)),
            "bids": bids,
            "asks": asks,
        }

    def chain(self, expiry: str) -> dict[str, Any]:
        rows: dict[float, dict[str, Any]] = {}
        for name in self.books:
            option = option_of(name)
            if option is None or option.expiry.isoformat() != expiry:
                continue
            rows.setdefault(option.strike, {"strike": option.strike})[option.option_type] = _top(self._line(name))
        return {"type": "chain", "expiry": expiry, "rows": [rows[strike] for strike in sorted(rows)]}

    def _line(self, name: str) -> TopOfBook:
        return top_of_book(self.books[name], self.rates.get(name, 0.0), time.time_ns() // 1000)


def _top(line: TopOfBook) -> dict[str, Any]:
    return {
        "instrument": line.instrument,
        "bid": line.bid,
        "ask": line.ask,
        "mid": line.mid,
        "spread": line.spread,
        "change_id": line.change_id,
        "reliable": line.reliable,
        "why": line.why,
        "rate": round(line.rate, 1),
        "age_s": None if line.age_s is None else round(line.age_s, 1),
    }


@dataclass
class Watching:
    """What one browser looks at."""

    instrument: str | None = None
    expiry: str | None = None
    changed: bool = True  # a new choice: send at once, whatever the versions say


def create_app(live: LiveBooks, title: str = "OptionStream") -> Starlette:
    """The ASGI app: the page, its static files, ``/ws`` and ``/health``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        live.start()
        try:
            yield
        finally:
            await asyncio.to_thread(live.stop)

    async def page(request: Any) -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    async def health(request: Any) -> JSONResponse:
        with live.lock:
            books = len(live.books)
            reliable = sum(1 for book in live.books.values() if book.reliable)
        return JSONResponse({"books": books, "reliable": reliable, "error": live.error, "topic": live.topic})

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        watching = Watching()
        receiver = asyncio.create_task(_receive(websocket, watching))
        try:
            await _send_loop(websocket, live, watching, title, receiver)
        except (WebSocketDisconnect, OSError):
            pass  # the browser went away
        except Exception:
            log.exception("the live view's sender failed")
        finally:
            receiver.cancel()

    return Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            WebSocketRoute("/ws", socket),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        lifespan=lifespan,
    )


async def _receive(websocket: WebSocket, watching: Watching) -> None:
    while True:
        message = await websocket.receive_json()
        if isinstance(message, dict):
            if isinstance(message.get("watch"), str):
                watching.instrument, watching.changed = message["watch"], True
            if isinstance(message.get("chain"), str):
                watching.expiry, watching.changed = message["chain"], True


async def _send_loop(
    websocket: WebSocket, live: LiveBooks, watching: Watching, title: str, receiver: asyncio.Task
) -> None:
    sent_version, sent_instruments, sent_error = -1, -1, None
    await websocket.send_json({"type": "hello", "topic": live.topic, "title": title})
    while not receiver.done():
        messages = []
        with live.lock:
            if live.instrument_version != sent_instruments:
                sent_instruments = live.instrument_version
                messages.append({"type": "instruments", "instruments": live.instruments()})
            if live.version != sent_version or watching.changed:
                sent_version, watching.changed = live.version, False
                if watching.instrument:
                    messages.append(live.book(watching.instrument))
                if watching.expiry:
                    messages.append(live.chain(watching.expiry))
            if live.error != sent_error:
                sent_error = live.error
                messages.append({"type": "error", "error": live.error})
        for message in messages:
            await websocket.send_text(json.dumps(message))
        await asyncio.sleep(1 / SEND_HZ)
    receiver.result()  # a disconnect ends the loop: raise it
