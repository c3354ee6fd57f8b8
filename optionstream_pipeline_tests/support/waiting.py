"""The one wait helper of the test suite.

Tests wait for conditions, never for time: a bare ``sleep`` is either too short on a loaded CI
machine (flaky) or too long everywhere else (slow). ``wait_until`` polls a condition until it
holds and fails with a message naming what was awaited when the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02, message: str = "") -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return it.

    The predicate is always called at least once, and once more at the deadline, so a condition
    that becomes true during the last sleep is not reported as a timeout. Exceptions raised by the
    predicate propagate: a broken check should fail loudly, not be retried until the deadline.

    :raises AssertionError: if the predicate is still falsy after ``timeout`` seconds; the error
        names ``message`` (or the predicate) and the last value it returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what} (last value: {value!r})")
        time.sleep(min(interval, remaining))


async def async_wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.01, message: str = "") -> T:
    """:func:`wait_until` for code running on an event loop: yields to the loop between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what} (last value: {value!r})")
        await asyncio.sleep(min(interval, remaining))
