"""One Deribit WebSocket connection: the thin I/O shell around the pure protocol code.

A connection carries one shard of the subscription table's books and keeps them subscribed through
anything the network or the exchange does: it says hello, authenticates when credentials exist,
asks for heartbeats and answers every ``test_request``, subscribes in batches and reports each
rejected channel, probes and then drops a silent connection, waits out maintenance, and reconnects
with exponential backoff and jitter, resubscribing everything. Book notifications go straight to the sink's hot path.

Which books it carries, and which the exchange confirmed or refused, live in the engine's
:class:`~optionstream_pipeline.capture.subscriptions.SubscriptionTable`: the connection reads its
shard there and writes what its sessions learn back, so no second copy of those facts exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec
from pydantic import SecretStr

from optionstream_pipeline import __version__
from optionstream_pipeline.capture.frames import (
    BookData,
    decode_book_notification,
    decode_ticker_notification,
    is_ticker_frame,
    level_problem,
)
from optionstream_pipeline.capture.protocol import Backoff, batched, rejected_channels
from optionstream_pipeline.capture.stats import ConnectionCounters
from optionstream_pipeline.capture.subscriptions import SubscriptionTable
from optionstream_pipeline.capture.transport import CertificateRefused, Transport, TransportError, open_transport
from optionstream_pipeline.config import DeribitSettings
from optionstream_pipeline.deribit.protocol import (
    INSTRUMENT_STATE_CHANNEL,
    PLATFORM_STATE_CHANNEL,
    RETRYABLE_ERRORS,
    ErrorCode,
    book_channel,
    split_channel,
    ticker_channel,
)
from optionstream_pipeline.deribit.rpc import RpcError, encode_request, error_from_reply
from optionstream_pipeline.records.book import encode_capture_meta
from optionstream_pipeline.records.ticker import decode_ticker_data

log = logging.getLogger(__name__)

_decode = msgspec.json.decode
HEALTHY_SESSION_S = 30.0  # a session that lasted this long resets the reconnect backoff
_decode_book = decode_book_notification
_decode_ticker = decode_ticker_notification
_is_ticker = is_ticker_frame
_level_problem = level_problem
_DecodeError = msgspec.DecodeError


class BookSink(Protocol):
    """What a connection hands its data to (the capture engine)."""

    def on_book(self, data: BookData, local_timestamp_us: int, capture: msgspec.Raw) -> bool:
        """Take one book notification; ``False`` asks the connection to wait for :meth:`wait_for_capacity`."""

    def on_ticker(
        self, instrument: str, timestamp_ms: int, data: msgspec.Raw, local_timestamp_us: int, capture: msgspec.Raw
    ) -> bool:
        """Take one ticker notification (``data``: Deribit's object, its bytes); ``False`` as for books."""

    async def wait_for_capacity(self) -> None: ...

    reading_paused: int  # > 0 while back-pressure holds reading: silence is then ours, not the server's

    def on_subscribed(self, instruments: list[str], connection: DeribitConnection) -> None: ...

    def on_rejected(self, channels: list[str], connection: DeribitConnection, reason: str) -> None: ...

    def on_disconnected(self, instruments: list[str], connection: DeribitConnection, reason: str) -> None: ...

    def on_resync(self, instruments: list[str], connection: DeribitConnection, reason: str) -> None:
        """The connection is about to resubscribe these books for fresh snapshots."""

    def on_instrument_state(self, data: dict[str, Any]) -> None: ...

    def on_malformed(self, frame: bytes, error: str, connection: DeribitConnection) -> None:
        """A frame that is not JSON, or not one Deribit sends."""

    def on_malformed_book(
        self, instrument: str, frame: bytes, error: str, connection: DeribitConnection, data: BookData | None
    ) -> None:
        """A book notification of ``instrument`` that cannot be a record (``data``: what could be read)."""


class ConnectionLost(Exception):
    """The session ended; the reason says why, for logs and markers."""


class _BadBook(Exception):
    """A book notification the typed decoder refused (a field missing or of the wrong type)."""

    def __init__(self, channel: str, error: str) -> None:
        super().__init__(error)
        self.channel = channel


class DeribitConnection:
    """One WebSocket session at a time, re-established until :meth:`stop`."""

    def __init__(
        self,
        index: int,
        settings: DeribitSettings,
        interval: str,
        sink: BookSink,
        table: SubscriptionTable,
        capture_id: str,
        credentials: tuple[str, SecretStr] | None = None,
        follow_instrument_state: bool = False,
        ticker_interval: str | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.interval = interval
        self.ticker_interval = ticker_interval  # None: no tickers
        self.sink = sink
        self.credentials = credentials
        self.follow_instrument_state = follow_instrument_state
        self.table = table
        self.capture_raw = encode_capture_meta(capture_id, index)
        self.counters = ConnectionCounters()
        self.connected = False
        self.maintenance = False
        self.last_frame_monotonic = 0.0
        self._transport: Transport | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._next_id = 1
        self._backoff = Backoff(settings.reconnect)
        self._stopping = asyncio.Event()
        self._session_tasks: set[asyncio.Task[Any]] = set()

    # -- public, called on the event loop ----------------------------------------------------

    def subscribe(self, instruments: Iterable[str]) -> None:
        """Books newly placed on this shard; a session not up yet subscribes them when it starts."""
        if self.connected:
            self._spawn(self._subscribe(sorted(instruments)))

    def unsubscribe(self, instruments: Iterable[str]) -> None:
        """Books no longer followed here (already gone from the table)."""
        if self.connected:
            self._spawn(self._unsubscribe(sorted(instruments)))

    def resync(self, instruments: Iterable[str], reason: str) -> None:
        """Unsubscribe and subscribe these books, for fresh snapshots; the others keep flowing."""
        if not self.connected:
            return  # the next session subscribes them afresh anyway
        wanted = self.table.resyncing(self.index, instruments)
        if wanted:
            self.sink.on_resync(wanted, self, reason)
            self._spawn(self._resubscribe(wanted))

    async def stop(self) -> None:
        self._stopping.set()
        transport = self._transport
        if transport is not None:
            await transport.close()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until :meth:`stop`.

        A refused TLS certificate is retried with the same backoff, not fatal, and logged as an ERROR
        on every attempt (a lost connection is a warning). It is never silent and never a fallback to
        an unverified connection, but it is not necessarily permanent either: Deribit renews and
        rotates certificates, an intercepting proxy goes away, an operator fixes the CA file (read
        again at each attempt). The engine stops itself only when it cannot go on by itself (Kafka);
        every Deribit-side failure costs a session and is retried, so capture resumes the moment the
        exchange verifies again, and under Dagster a fatal stop would only be relaunched by the
        supervisor. Meanwhile ``tls_refused`` counts the refusals and the freshness check fails.
        """
        while not self._stopping.is_set():
            began = time.monotonic()
            refused_before = self.counters.tls_refused
            reason = await self._run_session()
            if self._stopping.is_set():
                break
            if time.monotonic() - began >= HEALTHY_SESSION_S:
                self._backoff.reset()  # a flapping server keeps backing off; a long healthy session starts over
            delay = self._backoff.next_delay_s()
            if self.counters.tls_refused > refused_before:
                log.error("connection %d: %s; retrying in %.2f s", self.index, reason, delay)
            else:
                log.warning("connection %d lost (%s); reconnecting in %.2f s", self.index, reason, delay)
            self.counters.last_error = reason
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    # -- one session --------------------------------------------------------------------------

    async def _run_session(self) -> str:
        reason = "closed"
        opening = asyncio.create_task(
            open_transport(
                self.settings.transport,
                self.settings.websocket_url,
                self._on_frame,
                self.sink.wait_for_capacity,
                self.settings.request_timeout_s,
                self.settings.tls_ca_file,
            )
        )
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not opening.done():  # stop() came while connecting: abandon the handshake
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            return self._end_session("capture stopped")
        try:
            transport = opening.result()
        except CertificateRefused as exc:
            self.counters.tls_refused += 1
            return self._end_session(str(exc))
        except TransportError as exc:
            return self._end_session(str(exc))
        if self._stopping.is_set():
            await transport.close()
            return self._end_session("capture stopped")
        self._transport = transport
        self.last_frame_monotonic = time.monotonic()
        closed = asyncio.create_task(transport.wait_closed(), name=f"deribit-closed-{self.index}")
        starter = asyncio.create_task(self._start_session(), name=f"deribit-start-{self.index}")
        watchdog = asyncio.create_task(self._watchdog(transport), name=f"deribit-watchdog-{self.index}")
        try:
            await asyncio.wait({closed, starter}, return_when=asyncio.FIRST_COMPLETED)
            if starter.done() and starter.exception() is not None:
                raise starter.exception()
            reason = await closed
        except (ConnectionLost, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            transport.abort()
        except RpcError as exc:
            reason = str(exc)
            self._count_error(exc.code)
            transport.abort()
        except Exception as exc:  # a bug must cost one session, not the shard for good
            log.exception("connection %d: session failed", self.index)
            reason = f"{type(exc).__name__}: {exc}"
            transport.abort()
        finally:
            for task in (starter, watchdog, closed):
                task.cancel()
            await asyncio.gather(starter, watchdog, closed, return_exceptions=True)
        return self._end_session(reason)

    async def _start_session(self) -> None:
        counters = self.counters
        if counters.connects:
            counters.reconnects += 1
        counters.connects += 1
        await self.request("public/hello", {"client_name": "optionstream", "client_version": __version__})
        if self.credentials is not None:
            client_id, secret = self.credentials
            await self.request(
                "public/auth",
                {
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret.get_secret_value(),
                },
            )
        await self.request("public/set_heartbeat", {"interval": self.settings.heartbeat_interval_s})
        self.connected = True
        extra = [PLATFORM_STATE_CHANNEL] + ([INSTRUMENT_STATE_CHANNEL] if self.follow_instrument_state else [])
        await self._request_with_retry("public/subscribe", {"channels": extra})
        await self._subscribe(self.table.members(self.index))
        on_shard = [self.table.get(name) for name in self.table.members(self.index)]
        log.info(
            "connection %d: %d book channels subscribed, %d rejected",
            self.index,
            sum(1 for entry in on_shard if entry is not None and entry.subscribed),
            sum(1 for entry in on_shard if entry is not None and entry.rejected),
        )

    def _end_session(self, reason: str) -> str:
        """Forget the session; mark its books stale downstream. Returns the reason, in words."""
        if self._stopping.is_set():
            reason = "capture stopped"
        self.connected = False
        self._transport = None
        for task in self._session_tasks:
            task.cancel()
        self._session_tasks.clear()
        self._fail_pending("connection closed")
        lost = self.table.connection_lost(self.index)
        if lost:
            self.sink.on_disconnected(lost, self, reason)
        return reason

    def _fail_pending(self, why: str) -> None:
        for method, future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"{method} unanswered: {why}"))
        self._pending.clear()

    # -- receiving ----------------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> bool:
        """The hot path, called by the transport for every frame; ``False`` asks it to pause reading.

        Book frames are decoded by a typed decoder that reads only what capture needs, and their
        levels checked; any frame the decoder does not fit (replies, heartbeats, other channels,
        garbage) fails fast and takes the slow path.
        """
        local_us = time.time_ns() // 1000
        self.last_frame_monotonic = time.monotonic()
        if _is_ticker(frame):
            return self._on_ticker_frame(frame, local_us)
        try:
            notification = _decode_book(frame)
        except _DecodeError as exc:
            self._on_other_frame(frame, str(exc))
            return True
        if notification.method == "subscription" and notification.params.channel.startswith("book."):
            data = notification.params.data
            problem = _level_problem(data)
            if problem is None:
                return self.sink.on_book(data, local_us, self.capture_raw)
            self.sink.on_malformed_book(data.instrument_name, frame, problem, self, data)
            return True
        self._on_other_frame(frame, "")
        return True

    def _on_ticker_frame(self, frame: bytes, local_us: int) -> bool:
        try:
            notification = _decode_ticker(frame)
        except _DecodeError:
            self._on_other_frame(frame, "")
            return True
        if notification.method != "subscription" or not notification.params.channel.startswith("ticker."):
            self._on_other_frame(frame, "")
            return True
        return self._on_ticker(notification.params.data, frame, local_us)

    def _on_ticker(self, data: msgspec.Raw, frame: bytes, local_us: int) -> bool:
        """Deribit's ticker object is checked against the typed view before its bytes become a record."""
        try:
            ticker = decode_ticker_data(data)
        except _DecodeError as exc:
            self.sink.on_malformed(frame, f"ticker notification: {exc}", self)
            return True
        return self.sink.on_ticker(ticker.instrument_name, ticker.timestamp, data, local_us, self.capture_raw)

    def _on_other_frame(self, frame: bytes, book_error: str) -> None:
        """``book_error``: why the typed book decoder refused the frame, should it be a book frame."""
        try:
            message = _decode(frame)
            if not isinstance(message, dict):
                raise TypeError(f"a JSON {type(message).__name__}, not an object")
            self._on_control(message, book_error)
        except _BadBook as exc:
            parts = split_channel(exc.channel)
            if parts is None:
                self.sink.on_malformed(frame, f"book notification on {exc.channel!r}: {exc}", self)
            else:
                self.sink.on_malformed_book(parts[1], frame, str(exc), self, None)
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError) as exc:
            self.sink.on_malformed(frame, f"{type(exc).__name__}: {exc}", self)

    def _on_control(self, message: dict[str, Any], book_error: str) -> None:
        request_id = message.get("id")
        if request_id is not None:
            self._resolve(request_id, message)
            return
        method = message.get("method")
        if method == "heartbeat":
            if message["params"].get("type") == "test_request":
                self._send(encode_request(self._take_id(), "public/test"))
                self.counters.heartbeats_answered += 1
            return
        if method == "subscription":
            channel = message["params"]["channel"]
            if channel.startswith("book."):  # a book frame the typed decoder refused: say which field
                raise _BadBook(channel, book_error)
            if channel.startswith("ticker."):  # fields in an unusual order: the same checks, a little later
                data = msgspec.Raw(msgspec.json.encode(message["params"]["data"]))
                self._on_ticker(data, msgspec.json.encode(message), time.time_ns() // 1000)
                return
            self._on_notification(channel, message["params"]["data"])
            return
        if "error" in message:
            error = error_from_reply(message)
            self.counters.errors_without_id += 1
            self._count_error(error.code)
            log.warning("connection %d: error without id from Deribit: %s", self.index, error)
            return
        log.debug("connection %d: ignored frame %.200r", self.index, message)

    def _on_notification(self, channel: str, data: dict[str, Any]) -> None:
        if channel == PLATFORM_STATE_CHANNEL:
            self._on_platform_state(data)
        elif channel == INSTRUMENT_STATE_CHANNEL:
            self.sink.on_instrument_state(data)

    def _on_platform_state(self, data: dict[str, Any]) -> None:
        locked = bool(data.get("locked"))
        if locked and not self.maintenance:
            log.warning("connection %d: Deribit platform locked (maintenance); waiting", self.index)
        elif self.maintenance and not locked:
            # Books may have moved while the platform was locked: take fresh snapshots of all.
            log.warning("connection %d: Deribit platform unlocked; resubscribing every book", self.index)
            self.resync(self.table.members(self.index), "platform unlocked after maintenance")
        self.maintenance = locked

    def _resolve(self, request_id: int, message: dict[str, Any]) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return  # an answer to a heartbeat public/test, or to a request that already timed out
        method, future = entry
        if future.done():
            return
        if "error" in message:
            future.set_exception(error_from_reply(message, method))
        else:
            future.set_result(message.get("result"))

    # -- requests -----------------------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one JSON-RPC request and wait for its answer (bounded by ``request_timeout_s``)."""
        request_id = self._take_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        self._send(encode_request(request_id, method, params))
        try:
            return await asyncio.wait_for(future, timeout=self.settings.request_timeout_s)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise ConnectionLost(f"{method} unanswered within {self.settings.request_timeout_s} s") from None

    async def _request_with_retry(self, method: str, params: dict[str, Any]) -> Any:
        """Retry what Deribit asks to retry (rate limit, maintenance, busy) with backoff."""
        backoff = Backoff(self.settings.reconnect)
        while True:
            try:
                return await self.request(method, params)
            except RpcError as exc:
                if exc.code not in RETRYABLE_ERRORS:
                    raise
                self._count_error(exc.code)
                if exc.code == ErrorCode.TOO_MANY_REQUESTS:
                    self.counters.rate_limited += 1
                delay = backoff.next_delay_s()
                log.warning("connection %d: %s; retrying in %.2f s", self.index, exc, delay)
                await asyncio.sleep(delay)

    def _send(self, frame: bytes) -> None:
        transport = self._transport
        if transport is None:
            raise ConnectionLost("not connected")
        transport.send(frame)

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- subscriptions ------------------------------------------------------------------------

    def _channels(self, instruments: list[str], with_tickers: bool = True) -> list[str]:
        """Each instrument's book channel, then its ticker channel when tickers are captured."""
        channels = []
        for name in instruments:
            channels.append(book_channel(name, self.interval))
            if with_tickers and self.ticker_interval is not None:
                channels.append(ticker_channel(name, self.ticker_interval))
        return channels

    async def _subscribe(self, instruments: list[str], with_tickers: bool = True) -> None:
        mine = [name for name in instruments if self.table.shard_of(name) == self.index]
        channels = self._channels(mine, with_tickers)
        for batch in batched(channels, self.settings.subscribe_batch_size):
            try:
                result = await self._request_with_retry("public/subscribe", {"channels": batch})
            except RpcError as exc:
                self.table.reject(self.index, _book_names(batch), str(exc))
                self.sink.on_rejected(batch, self, str(exc))
                continue
            refused = rejected_channels(batch, result)
            accepted = _book_names(channel for channel in batch if channel not in refused)
            removed_meanwhile = self.table.confirm(self.index, accepted)
            if removed_meanwhile:  # unsubscribe() ran while this subscribe was in flight: undo it
                self._spawn(self._unsubscribe(removed_meanwhile))
            self.sink.on_subscribed(accepted, self)
            if refused:
                reason = "left out of the subscribe result by Deribit"
                self.table.reject(self.index, _book_names(refused), reason)
                self.sink.on_rejected(refused, self, reason)

    async def _unsubscribe(self, instruments: list[str], with_tickers: bool = True) -> None:
        self.table.unsubscribing(self.index, instruments)  # no disconnect marker for a book we are leaving
        channels = self._channels(instruments, with_tickers)
        for batch in batched(channels, self.settings.subscribe_batch_size):
            await self._request_with_retry("public/unsubscribe", {"channels": batch})

    async def _resubscribe(self, instruments: list[str]) -> None:
        """Books only: a ticker has no continuity to restore."""
        await self._unsubscribe(instruments, with_tickers=False)
        await self._subscribe(instruments, with_tickers=False)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._session_tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._session_tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        transport = self._transport
        if error is not None and transport is not None:
            # An unanswered or failed (un)subscribe leaves the subscription set uncertain: start over,
            # and the reconnect resubscribes everything. (After a close, transport is None: nothing to do.)
            log.error("connection %d: subscription change failed (%s); reconnecting", self.index, error)
            transport.abort()

    # -- liveness -----------------------------------------------------------------------------

    async def _watchdog(self, transport: Transport) -> None:
        """Probe a silent connection with ``public/test``, and drop it when it stays silent."""
        stale_after = self.settings.stale_after_s
        probe_after = stale_after / 2
        probed = False
        while True:
            await asyncio.sleep(min(1.0, probe_after / 2))
            if self.sink.reading_paused:
                self.last_frame_monotonic = time.monotonic()
                continue
            silent_for = time.monotonic() - self.last_frame_monotonic
            if silent_for >= stale_after:
                self.counters.stale_disconnects += 1
                log.warning("connection %d: no frame for %.1f s; dropping it", self.index, silent_for)
                transport.abort()
                return
            if silent_for >= probe_after and not probed:
                probed = True
                self.counters.probes_sent += 1
                self._send(encode_request(self._take_id(), "public/test"))
            elif silent_for < probe_after:
                probed = False

    def _count_error(self, code: int) -> None:
        self.counters.errors_by_code[code] = self.counters.errors_by_code.get(code, 0) + 1


def _book_names(channels: Iterable[str]) -> list[str]:
    """``book.NAME.interval`` -> ``NAME`` (instrument names contain no dots); ticker channels left out:
    the subscription table follows books, and a refused ticker is reported, not a refused book."""
    return [channel.split(".")[1] for channel in channels if channel.startswith("book.")]
