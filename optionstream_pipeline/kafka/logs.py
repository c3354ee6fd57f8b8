"""librdkafka's log, through Python logging, each distinct problem said once.

Left alone, librdkafka writes its own lines to stderr (``%3|1796169654.060|FAIL|rdkafka#producer-2|
...``), one per reconnect attempt: about 250 lines in ten seconds for one unreachable broker, which
bury the one line that says what is wrong. Every client this project creates passes
:func:`librdkafka_logger` as its ``logger``, so those lines become ordinary log records, and
:class:`RepeatFilter` lets the first record of each problem through, then one summary with the count
of repeats per ``every_s`` while it goes on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

LIBRDKAFKA_LOGGER = "librdkafka"
REPEAT_SUMMARY_S = 60.0
# Numbers that change from one repeat of a problem to the next: timestamps, "after 12ms", counts.
_VARYING = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Pass the first record of each distinct message; hold its repeats and report their count
    with the first repeat after ``every_s`` seconds ("... (and 41 more times in 60 s)")."""

    def __init__(self, every_s: float = REPEAT_SUMMARY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()  # librdkafka logs from its own threads
        self._seen: dict[tuple[int, str], list[float | int]] = {}  # key -> [window start, repeats held]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.levelno, _VARYING.sub("#", message))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = [now, 0]
                return True
            seen[1] += 1
            if now - seen[0] < self.every_s:
                return False
            held, since = seen[1], now - seen[0]
            seen[0], seen[1] = now, 0
        record.msg, record.args = f"{message} (and {held - 1} more times in {since:.0f} s)", ()
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger to hand every librdkafka client (``{"logger": librdkafka_logger()}``)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    with _install_lock:
        if not any(isinstance(item, RepeatFilter) for item in logger.filters):
            logger.addFilter(RepeatFilter())
    return logger


_install_lock = threading.Lock()
