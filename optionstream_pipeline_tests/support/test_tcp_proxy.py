"""The proxy's mechanics against a plain echo server; Kafka through the proxy is in kafka/test_broker.py."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from optionstream_pipeline_tests.support.tcp_proxy import TcpProxy
from optionstream_pipeline_tests.support.waiting import wait_until

# How long a stalled path is watched to confirm that nothing crosses it.
STALL_OBSERVATION_S = 0.5


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the proxy resets connections on purpose
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    with TcpProxy(("127.0.0.1", server.server_address[1])) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _nothing_arrives(sock: socket.socket, within_s: float) -> bool:
    """True if neither data nor end-of-stream arrives within the window (a bounded negative check)."""
    sock.settimeout(within_s)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_forwards_both_directions(echo_proxy: TcpProxy) -> None:
    with _connect(echo_proxy) as sock:
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
        assert echo_proxy.connection_count == 1


def test_block_stalls_without_closing_and_unblock_resumes(echo_proxy: TcpProxy) -> None:
    with _connect(echo_proxy) as sock:
        sock.sendall(b"before")
        assert _recv_exactly(sock, 6) == b"before"
        echo_proxy.block()
        sock.sendall(b"during")
        assert _nothing_arrives(sock, STALL_OBSERVATION_S)
        echo_proxy.unblock()
        assert _recv_exactly(sock, 6) == b"during"


def test_new_connections_are_held_while_blocked(echo_proxy: TcpProxy) -> None:
    echo_proxy.block()
    with _connect(echo_proxy) as sock:
        sock.sendall(b"held")
        assert _nothing_arrives(sock, STALL_OBSERVATION_S)
        echo_proxy.unblock()
        assert _recv_exactly(sock, 4) == b"held"


def test_drop_connections_resets_clients_and_accepts_new_ones(echo_proxy: TcpProxy) -> None:
    sock = _connect(echo_proxy)
    sock.sendall(b"x")
    assert _recv_exactly(sock, 1) == b"x"
    echo_proxy.drop_connections()
    with pytest.raises(OSError):
        _recv_exactly(sock, 1)
    sock.close()
    wait_until(lambda: echo_proxy.connection_count == 0, timeout=5, message="proxy forgot dropped connection")
    with _connect(echo_proxy) as fresh:
        fresh.sendall(b"again")
        assert _recv_exactly(fresh, 5) == b"again"


def test_stop_closes_the_listener() -> None:
    proxy = TcpProxy(("127.0.0.1", 9)).start()
    port = proxy.port
    proxy.stop()
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
