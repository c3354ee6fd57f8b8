"""The one wait helper of the test suite.

Tests wait for conditions, never for time: a bare ``sleep`` is either too short on a loaded CI
machine (flaky) or too long everywhere else (slow). ``wait_until`` polls a condition until it
holds and fails with a message naming what was awaited when the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02, message: str = "") -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return it.

    The predicate is always called at least once, and once more at the deadline, so a condition
    that becomes true during the last sleep is not reported as a timeout. Exceptions raised by the
    predicate propagate: a broken check should fail loudly, not be retried until the deadline.

    :raises AssertionError: if the predicate is still falsy after ``timeout`` seconds; the error
        names ``message`` (or the predicate) and the last value it returned.
    """
    for step in _polls(predicate, timeout, interval, message):
        if isinstance(step, _Found):
            return step.value
        time.sleep(step)
    raise AssertionError("unreachable")  # pragma: no cover


async def async_wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.01, message: str = "") -> T:
    """:func:`wait_until` for code running on an event loop: yields to the loop between polls."""
    for step in _polls(predicate, timeout, interval, message):
        if isinstance(step, _Found):
            return step.value
        await asyncio.sleep(step)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class _Found:
    value: Any


def _polls(predicate: Callable[[], Any], timeout: float, interval: float, message: str) -> Iterator[float | _Found]:
    """The polling rule both helpers share: pauses to take, then the truthy value found (or the error)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            yield _Found(value)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what} (last value: {value!r})")
        yield min(interval, remaining)
