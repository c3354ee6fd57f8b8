"""The Deribit side of every connection as plain state: JSON-RPC requests in, frames out.

No sockets here (the split the ``websockets`` library makes between protocol and I/O).  The socket
layer (:mod:`.server`) calls :meth:`Exchange.handle_frame` for each received frame and
:meth:`Exchange.advance` on a timer, and drains each :class:`Session`'s ``outbox``.  A session talks
back to its connection only through :class:`SessionIO` (wake / close / abort), which unit tests fake.

Published frames are encoded once per channel and the same ``bytes`` object is queued to every
subscriber.  Everything here runs on one thread (the server's event loop).
"""

from __future__ import annotations

import fnmatch
import math
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from optionstream_pipeline.deribit.protocol import (
    ERROR_MESSAGES,
    INSTRUMENT_STATE_CHANNEL,
    MAX_FRAME_BYTES,
    PLATFORM_STATE_CHANNEL,
    ErrorCode,
    split_channel,
)
from optionstream_pipeline.simulator.credits import SessionCredits
from optionstream_pipeline.simulator.market import Market
from optionstream_pipeline.simulator.settings import SimulatorSettings
from optionstream_pipeline.simulator.universe import InstrumentEvent

INVALID_CREDENTIALS = 13004
CONTROL_PREFIX = "simulator/"
HEARTBEAT = msgspec.json.encode({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}})
TEST_REQUEST = msgspec.json.encode({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})
MALFORMED_FRAME = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.'
BOOK_INTERVALS = ("100ms", "raw")


class RpcError(Exception):
    """A JSON-RPC error reply; ``message`` defaults to Deribit's text for the code."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        super().__init__(code)
        self.code = int(code)
        self.message = message or ERROR_MESSAGES.get(code, "error")
        self.data = data

    def to_json(self) -> dict:
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.data is not None:
            error["data"] = self.data
        return error


class SessionIO(Protocol):
    """What a session may ask of its connection."""

    def wake(self) -> None:
        """The outbox has new frames."""

    def abort(self) -> None:
        """Close the TCP connection now, without a close frame."""

    def close(self, code: int, reason: str) -> None:
        """Send the queued frames, then a close frame."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A read-only view of one connection, for tests waiting on "client subscribed to X"."""

    id: int
    remote: str
    channels: tuple[str, ...]
    authed: bool
    heartbeat_interval: float | None
    client_name: str | None
    connected_at: float
    is_control: bool
    stalled: bool
    queued_frames: int


class Session:
    """One connection's state: subscriptions, auth, heartbeat, credits, faults and the outbox."""

    def __init__(self, session_id: int, io: SessionIO, remote: str, now_s: float, settings: SimulatorSettings):
        self.id = session_id
        self.io = io
        self.remote = remote
        self.connected_at = now_s
        self.channels: dict[str, None] = {}
        self.authed = False
        self.client_name: str | None = None
        self.heartbeat_interval: float | None = None
        self.next_heartbeat_s = math.inf
        self.awaiting_test = False
        self.credits = SessionCredits(settings.rate_limits, now_s)
        self.outbox: deque[bytes] = deque()
        self.max_outbox = settings.max_outbox
        self.stalled_until = 0.0
        self.stall_drop = False
        self.frame_delay_s = 0.0
        self.drop_next: set[str] = set()
        self.corrupt_next: dict[str, dict[str, Any]] = {}
        self.rejected: list[str] = []
        self.is_control = False
        self.closed = False

    def send(self, payload: bytes) -> None:
        """Queue a frame; a client that lets ``max_outbox`` frames pile up is cut off, as Deribit would."""
        if self.closed or (self.stall_drop and self.stalled_until > 0):
            return
        self.outbox.append(payload)
        if len(self.outbox) > self.max_outbox:
            self.closed = True
            self.io.abort()
            return
        self.io.wake()

    def deliver(self, channel: str, payload: bytes) -> None:
        """Queue a subscription frame, unless a skip fault swallows this channel's next message or a
        corrupt fault replaces fields of its data."""
        if self.drop_next and channel in self.drop_next:
            self.drop_next.discard(channel)
            return
        if self.corrupt_next and channel in self.corrupt_next:
            frame = msgspec.json.decode(payload)
            frame["params"]["data"].update(self.corrupt_next.pop(channel))
            payload = msgspec.json.encode(frame)
        self.send(payload)

    def info(self, now_s: float) -> SessionInfo:
        return SessionInfo(
            self.id,
            self.remote,
            tuple(self.channels),
            self.authed,
            self.heartbeat_interval,
            self.client_name,
            self.connected_at,
            self.is_control,
            self.stalled_until > now_s,
            len(self.outbox),
        )


class DataSource(Protocol):
    """Where book/ticker data comes from: the random market, the load generator or a recording."""

    raw_requires_auth: bool

    def accepts(self, channel: str) -> bool:
        """Whether ``channel`` exists (unknown channels are left out of subscribe results)."""

    def on_subscribed(self, exchange: Exchange, session: Session, channel: str, now_s: float) -> None:
        """Send what follows the subscribe reply (book snapshot, first ticker)."""

    def advance(self, exchange: Exchange, now_s: float, halted: bool) -> None:
        """Publish what is due at ``now_s``; ``halted`` during maintenance."""

    def instruments_json(self, currency: str, expired: bool) -> list[dict]:
        """``get_instruments`` result for options of ``currency``."""

    def index_price(self) -> float | None:
        """The BTC index (``btc_usd``) now, or ``None`` when the source has none."""

    def time_ms(self, now_s: float) -> int:
        """The exchange's clock at real time ``now_s`` (``public/get_time``): a replay's own clock."""


class MarketSource:
    """The normal data source: :class:`Market` books and tickers on ``100ms`` and ``raw`` channels."""

    raw_requires_auth = True

    def __init__(self, market: Market, settings: SimulatorSettings, now_s: float) -> None:
        self.market = market
        self.settings = settings
        self.raw_requires_auth = settings.raw_requires_auth
        self.next_flush_s = now_s + settings.flush_interval_s
        self.next_roll_s = now_s + settings.roll_interval_s
        self.next_lifecycle_s = now_s + (settings.lifecycle_interval_s or math.inf)

    def accepts(self, channel: str) -> bool:
        parts = split_channel(channel)
        return parts is not None and parts[2] in BOOK_INTERVALS and self.market.is_live(parts[1])

    def on_subscribed(self, exchange: Exchange, session: Session, channel: str, now_s: float) -> None:
        kind, instrument, interval = split_channel(channel)  # type: ignore[misc]
        data = (
            self.market.snapshot(instrument, interval) if kind == "book" else self.market.ticker(instrument, interval)
        )
        if data is not None:
            session.send(exchange.encode_notification(channel, data))

    def advance(self, exchange: Exchange, now_s: float, halted: bool) -> None:
        self._publish_books(exchange, self.market.advance(now_s, generate=not halted))
        if now_s >= self.next_flush_s:
            self.next_flush_s = max(self.next_flush_s + self.settings.flush_interval_s, now_s - 1.0)
            self._publish_books(exchange, self.market.flush(now_s))
        if halted:
            return
        if now_s >= self.next_roll_s:
            self.next_roll_s = now_s + self.settings.roll_interval_s
            exchange.publish_instrument_events(self.market.roll(now_s))
        if now_s >= self.next_lifecycle_s:
            self.next_lifecycle_s = now_s + (self.settings.lifecycle_interval_s or math.inf)
            exchange.publish_instrument_events(self.market.roll_nearest_expiry(now_s))
            exchange.publish_instrument_events(self.market.create_expiry(now_s))

    def _publish_books(self, exchange: Exchange, updates: list) -> None:
        for instrument, interval, data in updates:
            exchange.publish(f"book.{instrument}.{interval}", data)
            ticker = f"ticker.{instrument}.{interval}"
            if ticker in exchange.subscribers:
                exchange.publish(ticker, self.market.ticker(instrument, interval))

    def instruments_json(self, currency: str, expired: bool) -> list[dict]:
        return self.market.instruments_json(expired) if currency in ("BTC", "any") else []

    def index_price(self) -> float | None:
        return round(self.market.underlying, 2)

    def time_ms(self, now_s: float) -> int:
        return int(now_s * 1000)


class Exchange:
    """All sessions, the channel -> subscribers map and the request handlers."""

    def __init__(self, settings: SimulatorSettings, source: DataSource, now_s: float) -> None:
        self.settings = settings
        self.source = source
        self.sessions: dict[int, Session] = {}
        self.subscribers: dict[str, dict[Session, None]] = {}
        self.rejected_channels: list[str] = []
        self.maintenance_until = 0.0
        self._next_session_id = 1
        self._refresh_tokens: set[str] = set()
        self._now_s = now_s
        self._handlers = {
            "public/hello": self._hello,
            "public/test": self._test,
            "public/get_time": self._get_time,
            "public/set_heartbeat": self._set_heartbeat,
            "public/disable_heartbeat": self._disable_heartbeat,
            "public/subscribe": self._subscribe,
            "public/unsubscribe": self._unsubscribe,
            "public/unsubscribe_all": self._unsubscribe_all,
            "public/get_instruments": self._get_instruments,
            "public/get_index_price": self._get_index_price,
            "public/auth": self._auth,
        }
        self.control_handlers: dict[str, Any] = {}

    # -- connections --------------------------------------------------------------------------

    def open_session(self, io: SessionIO, remote: str, now_s: float) -> Session:
        session = Session(self._next_session_id, io, remote, now_s, self.settings)
        self._next_session_id += 1
        self.sessions[session.id] = session
        return session

    def close_session(self, session: Session) -> None:
        session.closed = True
        self.sessions.pop(session.id, None)
        for channel in session.channels:
            self._unsubscribe_one(session, channel)
        session.channels.clear()

    def session_infos(self, now_s: float) -> list[SessionInfo]:
        return [s.info(now_s) for s in self.sessions.values()]

    @property
    def in_maintenance(self) -> bool:
        return self._now_s < self.maintenance_until

    # -- frames in ----------------------------------------------------------------------------

    def handle_frame(self, session: Session, frame: str | bytes, now_s: float) -> None:
        """Answer one received frame (errors included) into the session's outbox."""
        self._now_s = max(self._now_s, now_s)
        us_in = int(now_s * 1_000_000)
        request_id, method, params = None, None, {}
        try:
            if len(frame) > MAX_FRAME_BYTES or _frame_size(frame) > MAX_FRAME_BYTES:
                request_id = _peek_id(frame)
                raise RpcError(ErrorCode.REQUEST_ENTITY_TOO_LARGE)
            request_id, method, params = self._parse(frame)
            result = self._dispatch(session, method, params, now_s)
        except RpcError as error:
            self._send_reply(session, request_id, us_in, error=error)
            return
        self._send_reply(session, request_id, us_in, result=result)
        if method == "public/subscribe":
            for channel in result:
                self._after_subscribe(session, channel, now_s)

    def _parse(self, frame: str | bytes) -> tuple[Any, str, dict]:
        try:
            request = msgspec.json.decode(frame)
        except msgspec.DecodeError:
            raise RpcError(ErrorCode.PARSE_ERROR) from None
        if not isinstance(request, dict):
            raise RpcError(ErrorCode.BAD_REQUEST)
        request_id, method, params = request.get("id"), request.get("method"), request.get("params") or {}
        if not isinstance(method, str):
            raise _WithId(request_id, RpcError(ErrorCode.BAD_REQUEST))
        if not isinstance(params, dict):
            raise _WithId(request_id, RpcError(ErrorCode.INVALID_PARAMS))
        return request_id, method, params

    def _dispatch(self, session: Session, method: str, params: dict, now_s: float) -> Any:
        if method.startswith(CONTROL_PREFIX) and self.settings.control_methods:
            handler = self.control_handlers.get(method[len(CONTROL_PREFIX) :])
            if handler is None:
                raise RpcError(ErrorCode.METHOD_NOT_FOUND)
            session.is_control = True
            return handler(session, params)
        if self.in_maintenance:
            raise RpcError(ErrorCode.SYSTEM_MAINTENANCE)
        if not session.credits.allow(method, now_s):
            raise RpcError(ErrorCode.TOO_MANY_REQUESTS)
        handler = self._handlers.get(method)
        if handler is None:
            raise RpcError(ErrorCode.METHOD_NOT_FOUND)
        return handler(session, params, now_s)

    def _send_reply(
        self, session: Session, request_id: Any, us_in: int, result: Any = None, error: RpcError | None = None
    ) -> None:
        if isinstance(error, _WithId):
            request_id, error = error.request_id, error.error
        reply: dict[str, Any] = {"jsonrpc": "2.0"}
        if request_id is not None:
            reply["id"] = request_id
        if error is not None:
            reply["error"] = error.to_json()
        else:
            reply["result"] = result
        session.send(msgspec.json.encode(self._stamp(reply, us_in)))

    def _stamp(self, message: dict, us_in: int) -> dict:
        us_out = max(us_in, int(self.settings.clock() * 1_000_000))
        message.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=self.settings.testnet)
        return message

    def error_without_id(self, session: Session, code: int, message: str | None = None) -> None:
        """An error frame with no ``id`` (Deribit sends these, e.g. 10028 outside any request)."""
        us_now = int(self.settings.clock() * 1_000_000)
        reply = {"jsonrpc": "2.0", "error": RpcError(code, message).to_json()}
        session.send(msgspec.json.encode(self._stamp(reply, us_now)))

    # -- public methods -----------------------------------------------------------------------

    def _hello(self, session: Session, params: dict, now_s: float) -> dict:
        session.client_name = params.get("client_name")
        return {"version": self.settings.version}

    def _test(self, session: Session, params: dict, now_s: float) -> dict:
        session.awaiting_test = False
        return {"version": self.settings.version}

    def _get_time(self, session: Session, params: dict, now_s: float) -> int:
        return self.source.time_ms(now_s)

    def _set_heartbeat(self, session: Session, params: dict, now_s: float) -> str:
        interval = params.get("interval")
        minimum = self.settings.min_heartbeat_interval_s
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < minimum:
            reason = f"must be greater or equal {minimum:g}"
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "interval", "reason": reason})
        session.heartbeat_interval = float(interval)
        session.next_heartbeat_s = now_s + interval
        session.awaiting_test = False
        return "ok"

    def _disable_heartbeat(self, session: Session, params: dict, now_s: float) -> str:
        session.heartbeat_interval, session.next_heartbeat_s, session.awaiting_test = None, math.inf, False
        return "ok"

    def _channels_param(self, params: dict) -> list[str]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "channels", "reason": "must be a list of strings"})
        return list(dict.fromkeys(channels))

    def _subscribe(self, session: Session, params: dict, now_s: float) -> list[str]:
        channels = self._channels_param(params)
        needs_auth = self.source.raw_requires_auth and not session.authed
        if needs_auth and any(c.startswith("book.") and c.endswith(".raw") for c in channels):
            raise RpcError(ErrorCode.RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED)
        accepted = [c for c in channels if self._channel_exists(c) and not self._is_rejected(session, c)]
        for channel in accepted:
            session.channels[channel] = None
            self.subscribers.setdefault(channel, {})[session] = None
        return accepted

    def _channel_exists(self, channel: str) -> bool:
        return channel in (PLATFORM_STATE_CHANNEL, INSTRUMENT_STATE_CHANNEL) or self.source.accepts(channel)

    def _is_rejected(self, session: Session, channel: str) -> bool:
        patterns = self.rejected_channels + session.rejected
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in patterns)

    def _after_subscribe(self, session: Session, channel: str, now_s: float) -> None:
        if channel not in (PLATFORM_STATE_CHANNEL, INSTRUMENT_STATE_CHANNEL):
            self.source.on_subscribed(self, session, channel, now_s)

    def _unsubscribe(self, session: Session, params: dict, now_s: float) -> list[str]:
        removed = [c for c in self._channels_param(params) if c in session.channels]
        for channel in removed:
            del session.channels[channel]
            self._unsubscribe_one(session, channel)
        return removed

    def _unsubscribe_one(self, session: Session, channel: str) -> None:
        subscribers = self.subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(session, None)
            if not subscribers:
                del self.subscribers[channel]

    def _unsubscribe_all(self, session: Session, params: dict, now_s: float) -> str:
        self._unsubscribe(session, {"channels": list(session.channels)}, now_s)
        return "ok"

    def _get_instruments(self, session: Session, params: dict, now_s: float) -> list[dict]:
        currency = params.get("currency", "BTC")
        if currency not in ("BTC", "ETH", "SOL", "USDC", "USDT", "EURR", "any"):
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "currency", "reason": "wrong format"})
        if params.get("kind", "option") not in ("option", None):
            return []
        expired = params.get("expired", False) in (True, "true")
        return self.source.instruments_json(currency, expired)

    def _get_index_price(self, session: Session, params: dict, now_s: float) -> dict:
        price = self.source.index_price() if params.get("index_name") == "btc_usd" else None
        if price is None:
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "index_name", "reason": "wrong format"})
        return {"index_price": price, "estimated_delivery_price": price}

    def _auth(self, session: Session, params: dict, now_s: float) -> dict:
        grant = params.get("grant_type")
        if grant == "client_credentials":
            ok = self.settings.client_id is not None and (
                params.get("client_id") == self.settings.client_id
                and params.get("client_secret") == self.settings.client_secret
            )
        elif grant == "refresh_token":
            ok = params.get("refresh_token") in self._refresh_tokens
        else:
            raise RpcError(ErrorCode.INVALID_PARAMS, data={"param": "grant_type", "reason": "wrong format"})
        if not ok:
            raise RpcError(INVALID_CREDENTIALS, "invalid_credentials")
        session.authed = True
        refresh = f"{int(now_s * 1000)}.{secrets.token_hex(8)}"
        self._refresh_tokens.add(refresh)
        return {
            "access_token": f"{int(now_s * 1000)}.{secrets.token_hex(16)}",
            "expires_in": 31536000,
            "refresh_token": refresh,
            "scope": "connection mainaccount",
            "enabled_features": [],
            "token_type": "bearer",
        }

    # -- frames out ---------------------------------------------------------------------------

    def encode_notification(self, channel: str, data: Any) -> bytes:
        return msgspec.json.encode(
            {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}
        )

    def publish(self, channel: str, data: Any) -> None:
        """Encode once, queue the same bytes to every subscriber of ``channel`` (none: no work)."""
        subscribers = self.subscribers.get(channel)
        if subscribers:
            self.publish_payload(channel, self.encode_notification(channel, data))

    def publish_payload(self, channel: str, payload: bytes) -> None:
        for session in self.subscribers.get(channel, ()):
            session.deliver(channel, payload)

    def publish_instrument_events(self, events: list[InstrumentEvent]) -> None:
        for event in events:
            self.publish(INSTRUMENT_STATE_CHANNEL, event.to_json())

    def publish_platform_state(self, locked: bool) -> None:
        self.publish(PLATFORM_STATE_CHANNEL, {"price_index": "btc_usd", "locked": locked})

    # -- time ---------------------------------------------------------------------------------

    def advance(self, now_s: float) -> None:
        """Everything that happens by itself: data, 100 ms flushes, expiries, heartbeats, faults ending."""
        self._now_s = max(self._now_s, now_s)
        if self.maintenance_until and now_s >= self.maintenance_until:
            self.maintenance_until = 0.0
            self.publish_platform_state(locked=False)
        self.source.advance(self, now_s, halted=self.in_maintenance)
        for session in list(self.sessions.values()):
            if session.stalled_until and now_s >= session.stalled_until:
                session.stalled_until, session.stall_drop = 0.0, False
                session.io.wake()
            if now_s >= session.next_heartbeat_s:
                self._heartbeat(session, now_s)

    def _heartbeat(self, session: Session, now_s: float) -> None:
        """Close a session that left the last ``test_request`` unanswered; else ask again."""
        if session.awaiting_test:
            session.next_heartbeat_s = math.inf
            session.closed = True
            session.io.close(1000, "test_request not answered")
            return
        session.send(HEARTBEAT)
        session.send(TEST_REQUEST)
        session.awaiting_test = True
        session.next_heartbeat_s = now_s + (session.heartbeat_interval or math.inf)


class _WithId(RpcError):
    """An error raised after the request id is known, carrying it to the reply."""

    def __init__(self, request_id: Any, error: RpcError) -> None:
        super().__init__(error.code, error.message, error.data)
        self.request_id = request_id
        self.error = error


def _frame_size(frame: str | bytes) -> int:
    """Bytes on the wire: a str frame can be longer than its character count."""
    return len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode())


def _peek_id(frame: str | bytes) -> Any:
    """The id of an oversized request if it parses, so the client can match the -32600 reply."""
    try:
        request = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    return request.get("id") if isinstance(request, dict) else None
