"""Shared helpers of the simulator tests: condition waits, a running simulator, a plain JSON-RPC client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from optionstream_pipeline.simulator import SimulatorThread
from optionstream_pipeline_tests.support.waiting import async_wait_until


@pytest.fixture
def simulator(simulator: Callable[..., SimulatorThread]) -> Callable[..., SimulatorThread]:
    """The suite's simulator factory, with a small universe unless a test asks for another."""

    def start(**settings: Any) -> SimulatorThread:
        settings.setdefault("max_instruments", 12)
        return simulator(**settings)

    return start


class RpcClient:
    """A plain JSON-RPC client over ``websockets``: every received frame is kept, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.frames: list[str] = []
        self.messages: list[Any] = []  # parsed frames; None where a frame is not JSON
        self.closed = asyncio.Event()
        self._next_id = 1
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> RpcClient:
        self.ws = await connect(self.url, compression=None, max_size=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                try:
                    self.messages.append(msgspec.json.decode(frame))
                except msgspec.DecodeError:
                    self.messages.append(None)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, method: str, params: dict | None = None) -> int:
        request_id = self._next_id
        self._next_id += 1
        await self.ws.send(
            msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}).decode()
        )
        return request_id

    def reply(self, request_id: int) -> dict | None:
        return next((m for m in self.messages if isinstance(m, dict) and m.get("id") == request_id), None)

    async def request(self, method: str, params: dict | None = None, timeout: float = 5.0) -> dict:
        """Send and return the whole reply (``result`` or ``error``)."""
        request_id = await self.send(method, params)
        return await async_wait_until(lambda: self.reply(request_id), timeout, message=f"reply to {method}")

    async def result(self, method: str, params: dict | None = None) -> Any:
        reply = await self.request(method, params)
        assert "result" in reply, reply
        return reply["result"]

    def data(self, channel: str) -> list[dict]:
        """``data`` of every notification received on ``channel``, in order."""
        return [
            m["params"]["data"]
            for m in self.messages
            if isinstance(m, dict) and m.get("method") == "subscription" and m["params"]["channel"] == channel
        ]

    async def wait_data(self, channel: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        return await async_wait_until(
            lambda: len(self.data(channel)) >= count and self.data(channel),
            timeout,
            message=f"{count} messages on {channel}",
        )


def run(coroutine) -> Any:
    """Run one async scenario to completion (no pytest-asyncio in this project)."""
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def rebuild(messages: list[dict]) -> tuple[int, dict[float, float], dict[float, float]]:
    """Apply snapshot + changes like a client, asserting the prev_change_id chain; returns the final book."""
    from optionstream_pipeline.simulator import apply_book_message

    state = None
    for data in messages:
        if state is not None and data["type"] == "change":
            assert data["prev_change_id"] == state.change_id, "gap in the change_id chain"
        state = apply_book_message(state, data)
    assert state is not None
    return state.change_id, state.bids, state.asks
