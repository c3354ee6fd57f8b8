"""Crash points: where the archive's crash tests kill it on purpose (inert unless asked).

``OPTIONSTREAM_ARCHIVE_CRASH_AT=<point>:<n>`` makes the archive kill itself (SIGKILL, as a crash
would: no ``finally``, no flush) the n-th time it reaches ``<point>``. The points are the moments
that matter for exactly-once: a file half written, a file renamed into place but nothing after it
done, all files in place but the consumer group not committed, a compaction between its merged file
and the removal of its inputs. Random-time kills cover the rest.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "OPTIONSTREAM_ARCHIVE_CRASH_AT"
MID_WRITE = "mid-write"
AFTER_RENAME = "after-rename"
BEFORE_COMMIT = "before-commit"
COMPACTION_WRITTEN = "compaction-written"  # the merged file in place, its inputs all still there
COMPACTION_MID_REMOVE = "compaction-mid-remove"  # some inputs removed, others not
POINTS = (MID_WRITE, AFTER_RENAME, BEFORE_COMMIT, COMPACTION_WRITTEN, COMPACTION_MID_REMOVE)

_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, times = spec.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] >= int(times or 1):
        os.kill(os.getpid(), signal.SIGKILL)
