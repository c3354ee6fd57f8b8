"""A loopback TCP proxy that can stall or cut the network path between Kafka clients and a broker.

A broker outage cannot be simulated by restarting the embedded broker: it keeps everything in
memory, so a restart loses topics, offsets and producer ids, which a real Kafka outage does not.
Instead the broker advertises this proxy's port, every client connection goes through the proxy,
and the test stalls (``block``) or resets (``drop_connections``) the path while the broker keeps
running, like a network partition.

The proxy runs an asyncio loop in a daemon thread; its public methods are thread-safe and return
once the change is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK = 64 * 1024
_CONTROL_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Connection:
    """One client connection and, once forwarding began, its upstream twin."""

    task: asyncio.Task[None]
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Close both sockets with a TCP reset, as a crashed peer or a dropped path would."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                _abort(writer)


class TcpProxy:
    """Forward TCP connections from ``127.0.0.1:port`` to ``target``.

    ``target`` may be set after construction, because the proxy's port must be known before the
    broker starts (the broker advertises it) while the broker's port is known only after.
    """

    def __init__(
        self,
        target: tuple[str, int] | None = None,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = target
        self._listen = (listen_host, listen_port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._open: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self._port: int | None = None
        self.accepted = 0

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TcpProxy:
        """Start listening; ``port`` is valid once this returns."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._call(self._start_server)
        log.debug("tcp proxy listening on %s -> %s", self.port, self.target)
        return self

    def stop(self) -> None:
        """Stop listening, reset every connection and end the loop thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._call(self._shutdown)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_CONTROL_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = None

    # --- faults -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (and the broker advertises)."""
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def blocked(self) -> bool:
        """True between ``block()`` and ``unblock()``."""
        return self._open is not None and not self._open.is_set()

    @property
    def connection_count(self) -> int:
        """Client connections currently open (including those held while blocked)."""
        return len(self._connections)

    def block(self) -> None:
        """Stall the path: forward nothing in either direction and hold new connections.

        Connections stay open, as in a network partition where packets are lost silently: clients
        see no error, only requests that never get answered, until their own timeouts fire.
        """
        self._call(self._set_open, False)

    def unblock(self) -> None:
        """Resume forwarding; held connections are connected to the target now."""
        self._call(self._set_open, True)

    def drop_connections(self) -> None:
        """Reset every current connection (client and upstream side) at once."""
        self._call(self._drop_all)

    # --- loop side --------------------------------------------------------------------------

    def _call(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run a coroutine function on the proxy's loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("the proxy is not running")
        future = asyncio.run_coroutine_threadsafe(func(*args), self._loop)
        return future.result(timeout=_CONTROL_TIMEOUT_S)

    async def _start_server(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._handle, *self._listen)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            await self._server.wait_closed()

    async def _set_open(self, is_open: bool) -> None:
        assert self._open is not None
        if is_open:
            self._open.set()
        else:
            self._open.clear()

    async def _drop_all(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
            connection.task.cancel()
        await asyncio.gather(*(c.task for c in connections), return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        """Serve one client: hold it while blocked, then pump bytes both ways until either side ends."""
        task = asyncio.current_task()
        assert task is not None and self._open is not None
        connection = _Connection(task=task, client=client)
        self._connections.add(connection)
        self.accepted += 1
        try:
            await self._open.wait()
            if self.target is None:
                return
            upstream_reader, connection.upstream = await asyncio.open_connection(*self.target)
            await self._pump_both(client_reader, client, upstream_reader, connection.upstream)
        except OSError as exc:
            log.debug("tcp proxy connection ended: %s", exc)
        finally:
            connection.abort()
            self._connections.discard(connection)

    async def _pump_both(
        self,
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> None:
        """Forward both directions; when one ends, the connection ends (Kafka never half-closes)."""
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream)),
            asyncio.create_task(self._pump(upstream_reader, client)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes, checking the gate before reading and again before writing each chunk."""
        assert self._open is not None
        with contextlib.suppress(OSError):
            while True:
                await self._open.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                await self._open.wait()
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a socket with RST instead of FIN (SO_LINGER 0), then drop it without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
