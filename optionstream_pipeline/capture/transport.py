"""WebSocket transports: the only code that knows which WebSocket library carries the frames.

A transport delivers every received text frame, synchronously and in order, to one handler
``on_frame(frame: bytes) -> bool``; ``False`` means "the sink is full": the transport stops reading
until the awaitable from ``wait_for_capacity`` completes, so back-pressure reaches TCP instead of
memory. Sending is synchronous (queued on the socket), which keeps the session logic free of
awaits on the hot path.

Two implementations, chosen by ``deribit.transport``:

- ``picows`` (default): a Cython WebSocket client whose per-frame cost is a fraction of websockets';
  see ``docs/benchmarks.md`` for both measured.
- ``websockets``: the pure-Python reference library (it also goes through HTTP and SOCKS proxies).

Both connect to ``wss://`` with the context of :func:`~optionstream_pipeline.deribit.tls.client_ssl_context`
(verified: the system trust store or ``deribit.tls_ca_file``), and a refused certificate is a
:class:`CertificateRefused` naming the problem, whichever library reported it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from optionstream_pipeline import __version__
from optionstream_pipeline.deribit.rpc import FRAME_LOGGER
from optionstream_pipeline.deribit.tls import CA_FILE_KEY, client_ssl_context, verification_error

FrameHandler = Callable[[bytes], bool]
CapacityWaiter = Callable[[], Awaitable[None]]
MAX_FRAME_BYTES_RECEIVED = 16 * 1024 * 1024
TRANSPORTS = ("websockets", "picows")


class TransportError(ConnectionError):
    """The WebSocket could not be opened or broke; the message says how."""


class CertificateRefused(TransportError):
    """Deribit's TLS certificate failed verification: the message names the problem, the URL and the remedy."""


class Transport(Protocol):
    def send(self, frame: bytes) -> None: ...

    def abort(self) -> None:
        """Drop the TCP connection now (no close handshake): for a connection that went silent."""

    async def close(self) -> None:
        """Close politely (close handshake, bounded)."""

    async def wait_closed(self) -> str:
        """Wait until the connection is gone; return why, in words."""


async def open_transport(
    kind: str,
    url: str,
    on_frame: FrameHandler,
    wait_for_capacity: CapacityWaiter,
    open_timeout_s: float,
    tls_ca_file: str | None = None,
) -> Transport:
    """Open one WebSocket with the ``kind`` library; a ``wss://`` URL is verified (``tls_ca_file``, else
    the system trust store). Raises :class:`CertificateRefused` for a certificate that does not verify,
    :class:`TransportError` for anything else."""
    ssl_context = _ssl_context(url, tls_ca_file)
    opener = PicowsTransport.open if kind == "picows" else WebsocketsTransport.open
    try:
        return await opener(url, ssl_context, on_frame, wait_for_capacity, open_timeout_s)
    except TransportError as exc:
        refused = verification_error(exc, url, tls_ca_file)
        if refused is None:
            raise
        raise CertificateRefused(str(refused)) from exc


def _ssl_context(url: str, tls_ca_file: str | None) -> ssl.SSLContext | None:
    """The verifying context, built per attempt; a CA file that cannot be loaded (any more) is a
    :class:`TransportError` saying so, never a reason to connect unverified."""
    try:
        return client_ssl_context(url, tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load {CA_FILE_KEY} {tls_ca_file!r}: {exc}") from exc


def _failure(exc: BaseException) -> TransportError:
    return TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class WebsocketsTransport:
    def __init__(self, ws: ClientConnection, on_frame: FrameHandler, wait_for_capacity: CapacityWaiter) -> None:
        self._ws = ws
        self._on_frame = on_frame
        self._wait_for_capacity = wait_for_capacity
        self._sends: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read(), name="websocket-read")

    @classmethod
    async def open(
        cls,
        url: str,
        ssl_context: ssl.SSLContext | None,
        on_frame: FrameHandler,
        wait_for_capacity: CapacityWaiter,
        open_timeout_s: float,
    ) -> WebsocketsTransport:
        try:
            ws = await connect(
                url,
                ssl=ssl_context,
                compression=None,
                ping_interval=None,
                max_size=MAX_FRAME_BYTES_RECEIVED,
                max_queue=1024,
                open_timeout=open_timeout_s,
                close_timeout=2,
                user_agent_header=f"optionstream/{__version__}",
                logger=FRAME_LOGGER,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _failure(exc) from exc
        return cls(ws, on_frame, wait_for_capacity)

    async def _read(self) -> None:
        recv, on_frame = self._ws.recv, self._on_frame
        with contextlib.suppress(WebSocketException):
            while True:
                if not on_frame(await recv(decode=False)):
                    await self._wait_for_capacity()

    def send(self, frame: bytes) -> None:
        task = asyncio.create_task(self._ws.send(frame, text=True))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def abort(self) -> None:
        self._ws.transport.abort()

    async def close(self) -> None:
        await self._ws.close()

    async def wait_closed(self) -> str:
        await asyncio.shield(self._reader)
        ws = self._ws
        if ws.close_code is None or ws.close_code == 1006:
            return "connection dropped"
        return f"closed by server ({ws.close_code} {ws.close_reason})".strip()


class PicowsTransport:
    """picows delivers frames through a listener callback; fragmented messages are reassembled here."""

    def __init__(self) -> None:
        self._transport: Any = None
        self._parts: list[bytes] = []
        self._close_reason = "connection dropped"
        self._paused = False

    @classmethod
    async def open(
        cls,
        url: str,
        ssl_context: ssl.SSLContext | None,
        on_frame: FrameHandler,
        wait_for_capacity: CapacityWaiter,
        open_timeout_s: float,
    ) -> PicowsTransport:
        from picows import WSError, ws_connect

        self = cls()
        listener_class = _picows_listener_class()
        try:
            transport, _listener = await asyncio.wait_for(
                ws_connect(
                    lambda: listener_class(self, on_frame, wait_for_capacity),
                    url,
                    ssl_context=ssl_context,
                    websocket_handshake_timeout=open_timeout_s,
                    max_frame_size=MAX_FRAME_BYTES_RECEIVED,
                    logger_name=FRAME_LOGGER,
                ),
                open_timeout_s,
            )
        except (OSError, TimeoutError, WSError) as exc:
            raise _failure(exc) from exc
        self._transport = transport
        return self

    def send(self, frame: bytes) -> None:
        from picows import WSMsgType

        self._transport.send(WSMsgType.TEXT, frame)

    def abort(self) -> None:
        self._transport.disconnect(graceful=False)

    async def close(self) -> None:
        from picows import WSCloseCode

        self._transport.send_close(WSCloseCode.OK)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._transport.wait_disconnected(), 2)
        self._transport.disconnect()

    async def wait_closed(self) -> str:
        await self._transport.wait_disconnected()
        return self._close_reason


@functools.cache
def _picows_listener_class() -> type:
    """picows' listener for capture, defined on first use (picows is imported by the connections only)."""
    from picows import WSListener, WSMsgType

    TEXT = WSMsgType.TEXT

    class Listener(WSListener):  # type: ignore[misc, valid-type]
        def __init__(self, owner: PicowsTransport, on_frame: FrameHandler, wait: CapacityWaiter) -> None:
            super().__init__()
            self._owner, self._on_frame, self._wait = owner, on_frame, wait
            self._resume: asyncio.Task[None] | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == TEXT:
                if not frame.fin:
                    self._owner._parts = [frame.get_payload_as_bytes()]
                elif not self._on_frame(frame.get_payload_as_bytes()):  # the hot path: one call, no more
                    self._pause(transport)
            elif kind == WSMsgType.CONTINUATION:
                self._owner._parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    if not self._on_frame(b"".join(self._owner._parts)):
                        self._pause(transport)
                    self._owner._parts = []
            elif kind == WSMsgType.CLOSE:
                code = frame.get_close_code()
                self._owner._close_reason = f"closed by server ({int(code)} {frame.get_close_message() or ''})".strip()
                transport.send_close(code)
                transport.disconnect()

        def _pause(self, transport: Any) -> None:
            # The sink is full. Frames already in picows' buffer still arrive after pause_reading();
            # the sink keeps them in order, and one resume task serves the whole pause.
            if self._resume is None:
                transport.underlying_transport.pause_reading()
                self._resume = asyncio.get_running_loop().create_task(self._resume_when_ready(transport))

        async def _resume_when_ready(self, transport: Any) -> None:
            try:
                await self._wait()
                transport.underlying_transport.resume_reading()
            finally:
                self._resume = None

    return Listener
