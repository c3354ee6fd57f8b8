"""The pure half of the Deribit client: JSON-RPC framing, classification, backoff, shard planning.

Nothing here touches a socket or a clock it was not given, so every rule is unit-tested
deterministically; :mod:`optionstream_pipeline.capture.connection` is the thin I/O shell around it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from optionstream_pipeline.config import ReconnectSettings
from optionstream_pipeline.deribit.protocol import ERROR_MESSAGES, MAX_FRAME_BYTES


class RpcError(Exception):
    """An error reply from Deribit (``code`` as documented in the API)."""

    def __init__(self, code: int, message: str, data: Any = None, method: str | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.method = method
        where = f" to {method}" if method else ""
        super().__init__(f"Deribit error {code} {message!r}{where}" + (f": {data}" if data else ""))


def encode_request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    frame = msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
    if len(frame) > MAX_FRAME_BYTES:
        # Deribit refuses such a frame with -32600; fail here, naming the cause, rather than there.
        raise ValueError(f"{method} request is {len(frame)} bytes; Deribit accepts at most {MAX_FRAME_BYTES}")
    return frame


def error_from_reply(reply: dict[str, Any], method: str | None = None) -> RpcError:
    error = reply.get("error")
    if not isinstance(error, dict):
        return RpcError(0, f"malformed error: {error!r}", method=method)
    code = error.get("code", 0)
    message = error.get("message") or ERROR_MESSAGES.get(code, "unknown error")
    return RpcError(code, message, error.get("data"), method)


def batched(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """Subscribe in batches small enough for Deribit's 32 KiB frame limit."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def rejected_channels(requested: Iterable[str], result: Any) -> list[str]:
    """Channels asked for but missing from the subscribe result (Deribit drops them silently)."""
    accepted = set(result) if isinstance(result, list) else set()
    return sorted(set(requested) - accepted)


class Backoff:
    """Exponential backoff with jitter; :meth:`reset` after a connection proves healthy."""

    def __init__(self, settings: ReconnectSettings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay_s(self) -> float:
        settings = self._settings
        base = settings.initial_backoff_ms * settings.multiplier**self.attempt
        base = min(base, settings.max_backoff_ms)
        self.attempt += 1
        spread = base * settings.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread)) / 1000.0

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class ShardPlan:
    """Which connection carries which instruments; stable under additions and removals.

    Adding instruments fills the least-loaded connection that has room, opening new ones up to
    ``max_connections``; removals never move other instruments (moving one would cost it a
    resubscription and a fresh snapshot).
    """

    per_connection: int
    max_connections: int

    def __post_init__(self) -> None:
        self.shards: list[set[str]] = []

    def owner(self, instrument: str) -> int | None:
        for index, shard in enumerate(self.shards):
            if instrument in shard:
                return index
        return None

    def assign(self, instruments: Iterable[str]) -> dict[int, list[str]]:
        """Place new instruments; returns ``{connection index: instruments added to it}``."""
        placed: dict[int, list[str]] = {}
        known = set().union(*self.shards) if self.shards else set()
        for instrument in sorted(set(instruments) - known):
            index = self._room()
            self.shards[index].add(instrument)
            placed.setdefault(index, []).append(instrument)
        return placed

    def remove(self, instruments: Iterable[str]) -> dict[int, list[str]]:
        removed: dict[int, list[str]] = {}
        for instrument in sorted(set(instruments)):
            index = self.owner(instrument)
            if index is not None:
                self.shards[index].discard(instrument)
                removed.setdefault(index, []).append(instrument)
        return removed

    def _room(self) -> int:
        candidates = [index for index, shard in enumerate(self.shards) if len(shard) < self.per_connection]
        if candidates:
            return min(candidates, key=lambda index: len(self.shards[index]))
        if len(self.shards) < self.max_connections:
            self.shards.append(set())
            return len(self.shards) - 1
        # Every connection is full and no more may open: overfill the least loaded one.
        return min(range(len(self.shards)), key=lambda index: len(self.shards[index]))
