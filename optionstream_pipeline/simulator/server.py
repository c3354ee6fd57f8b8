"""The thin socket layer: ``websockets`` connections around the pure :class:`Exchange`.

One reader loop per connection feeds frames to :meth:`Exchange.handle_frame`; one sender task per
connection drains the session's outbox (honouring stall and slow faults); one timer task calls
:meth:`Exchange.advance`.  :class:`DeribitSimulator` is the asyncio API, :class:`SimulatorThread`
runs it on its own event loop in a background thread for synchronous tests. Given a server
``ssl.SSLContext`` they serve ``wss://`` instead of ``ws://`` (the tests of capture's TLS verification).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from optionstream_pipeline.deribit.rpc import FRAME_LOGGER
from optionstream_pipeline.simulator.exchange import DataSource, Exchange, MarketSource, Session, SessionInfo
from optionstream_pipeline.simulator.faults import Faults, Lifecycle, register_control_methods
from optionstream_pipeline.simulator.load import LoadSource
from optionstream_pipeline.simulator.market import Market
from optionstream_pipeline.simulator.replay import ReplaySource, parse_ws_log
from optionstream_pipeline.simulator.settings import WS_PATH, SimulatorSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_INCOMING_BYTES = 1 << 20  # above Deribit's 32 KiB so oversized requests get -32600, not a close


class _Connection:
    """:class:`SessionIO` over a websockets connection."""

    __slots__ = ("close_request", "ready", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.ready = asyncio.Event()
        self.close_request: tuple[int, str] | None = None

    def wake(self) -> None:
        self.ready.set()

    def abort(self) -> None:
        self.ws.transport.abort()

    def close(self, code: int, reason: str) -> None:
        self.close_request = (code, reason)
        self.ready.set()


class DeribitSimulator:
    """A Deribit-compatible WebSocket server on asyncio: ``await start()`` ... ``await stop()``.

    ``ssl_context``: a server context with its certificate loaded; the simulator then serves ``wss://``.
    ``source``: the data source to serve instead of the one ``settings`` name (the archive's replay).
    """

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        source: DataSource | None = None,
    ) -> None:
        self.settings = settings or SimulatorSettings()
        self.ssl_context = ssl_context
        self._clock = self.settings.clock
        self._loop: asyncio.AbstractEventLoop | None = None
        now = self._clock()
        self.market: Market | None = None
        self.load: LoadSource | None = None
        self.replay: ReplaySource | None = None
        self.exchange = Exchange(self.settings, source if source is not None else self._build_source(now), now)
        self.faults = Faults(self.exchange, self._clock, self.run_on_loop)
        self.lifecycle = Lifecycle(self.exchange, self._clock, self.run_on_loop)
        register_control_methods(self.exchange, self.faults, self.lifecycle)
        self._server: Server | None = None
        self._timer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None

    def _build_source(self, now: float) -> DataSource:
        settings = self.settings
        if settings.replay_path:
            self.replay = ReplaySource(parse_ws_log(settings.replay_path), settings.replay_speed)
            return self.replay
        if settings.load_instruments:
            self.load = LoadSource(settings.load_instruments, settings.load_rate, now, settings.raw_requires_auth)
            return self.load
        self.market = Market(settings.market_settings(), now)
        return MarketSource(self.market, settings, now)

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.settings.host}:{self.port}{WS_PATH}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            ssl=self.ssl_context,
            compression=None,
            max_size=MAX_INCOMING_BYTES,
            ping_interval=None,
            process_request=_only_api_path,
            logger=FRAME_LOGGER,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self._timer = asyncio.create_task(self._run_timer())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> DeribitSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def run_on_loop(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the server loop and return its result (inline when already on it)."""
        loop = self._loop
        try:
            on_loop = loop is None or asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop or loop is None or loop.is_closed():
            return work()
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def sessions(self) -> list[SessionInfo]:
        """Connected sessions: subscribed channels, auth, heartbeat interval (thread-safe)."""
        return self.run_on_loop(lambda: self.exchange.session_infos(self._clock()))

    async def _run_timer(self) -> None:
        while True:
            try:
                self.exchange.advance(self._clock())
            except Exception:
                log.exception("simulator timer step failed")
            await asyncio.sleep(self.settings.tick_s)

    async def _handle(self, ws: ServerConnection) -> None:
        connection = _Connection(ws)
        remote = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else "?"
        session = self.exchange.open_session(connection, remote, self._clock())
        sender = asyncio.create_task(self._send_loop(session, connection))
        try:
            async for frame in ws:
                self.exchange.handle_frame(session, frame, self._clock())
        except ConnectionClosed:
            pass
        finally:
            self.exchange.close_session(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_loop(self, session: Session, connection: _Connection) -> None:
        """Drain the outbox; wait while stalled; delay per frame when slowed; close when asked."""
        ws, outbox, clock = connection.ws, session.outbox, self._clock
        with contextlib.suppress(ConnectionClosed):
            while True:
                if session.stalled_until and clock() < session.stalled_until:
                    connection.ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(connection.ready.wait(), 0.02)
                    continue
                if not outbox:
                    if connection.close_request is not None:
                        await ws.close(*connection.close_request)
                        return
                    connection.ready.clear()
                    await connection.ready.wait()
                    continue
                if session.frame_delay_s:
                    await asyncio.sleep(session.frame_delay_s)
                await ws.send(outbox.popleft(), text=True)


def _only_api_path(connection: ServerConnection, request) -> object | None:
    """Deribit serves the API on ``/ws/api/v2`` only; anything else is a 404 before the upgrade."""
    if request.path.split("?", 1)[0].rstrip("/") != WS_PATH:
        return connection.respond(HTTPStatus.NOT_FOUND, f"not found: use {WS_PATH}\n")
    return None


class SimulatorThread:
    """:class:`DeribitSimulator` on its own event loop in a daemon thread, for synchronous tests.

    ``with SimulatorThread(SimulatorSettings(max_instruments=20)) as sim:`` then ``sim.url``,
    ``sim.market``, ``sim.faults``, ``sim.lifecycle``, ``sim.sessions()``.
    """

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        source: DataSource | None = None,
    ) -> None:
        self.simulator = DeribitSimulator(settings, ssl_context, source)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def port(self) -> int | None:
        return self.simulator.port

    @property
    def market(self) -> Market | None:
        return self.simulator.market

    @property
    def load(self) -> LoadSource | None:
        return self.simulator.load

    @property
    def faults(self) -> Faults:
        return self.simulator.faults

    @property
    def lifecycle(self) -> Lifecycle:
        return self.simulator.lifecycle

    @property
    def exchange(self) -> Exchange:
        return self.simulator.exchange

    def sessions(self) -> list[SessionInfo]:
        return self.simulator.sessions()

    def subscribers_of(self, channel: str) -> list[SessionInfo]:
        """Sessions currently subscribed to ``channel`` (for "wait until the client subscribed")."""
        return [info for info in self.sessions() if channel in info.channels]

    def call(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the simulator's loop (to touch :attr:`exchange` state safely)."""
        return self.simulator.run_on_loop(work)

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="deribit-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self.simulator._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.simulator.stop()


async def serve_until_signalled(simulator: DeribitSimulator, announce: Callable[[str], None]) -> int:
    """Start ``simulator``, hand its URL to ``announce``, serve until SIGINT or SIGTERM, then stop it."""
    await simulator.start()
    announce(simulator.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
    return 0
