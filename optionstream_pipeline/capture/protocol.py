"""The pure half of the Deribit client: subscribe batches, rejected channels, reconnect backoff.

Nothing here touches a socket or a clock it was not given, so every rule is unit-tested
deterministically; :mod:`optionstream_pipeline.capture.connection` is the thin I/O shell around it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from optionstream_pipeline.config import ReconnectSettings


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
