"""A lifeline: process groups that stop when their parent dies, however it dies.

``optionstream demo`` starts ``dagster dev`` (webserver, daemon, code servers, run workers) and the
embedded broker, each in a session of its own so that a terminal's Ctrl-C reaches only the demo,
which then stops them in order. If the demo itself is killed (SIGKILL, a closed terminal), nothing
would stop them: they would hold the port and the Dagster instance for the next demo.

:class:`Lifeline` starts a small guard process (``python -m optionstream_pipeline.lifeline``) and
holds the write end of a pipe to its stdin. The demo tells it each process group it starts. The
kernel closes that pipe when the demo exits, whatever the cause, and the guard then stops every
group still alive: SIGINT first (each shuts down cleanly: the capture run flushes Kafka), SIGKILL
after ``grace_s``, newest group first. On a clean exit the demo has stopped them already and the
guard finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

GRACE_S = 10.0
POLL_S = 0.1


class Lifeline:
    """The demo's side: start the guard, register groups, close it on the way out."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "optionstream_pipeline.lifeline", str(grace_s)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a terminal's signals are for the demo, not its guard
        )

    @property
    def guard_pid(self) -> int:
        return self._guard.pid

    def watch(self, process_group: int) -> None:
        """Stop this process group (its leader's pid) if the demo dies before stopping it."""
        assert self._guard.stdin is not None
        self._guard.stdin.write(f"{process_group}\n".encode())
        self._guard.stdin.flush()

    def close(self, timeout_s: float = GRACE_S + 5) -> None:
        """The demo stopped its children itself: let the guard check and exit."""
        if self._guard.stdin is not None:
            self._guard.stdin.close()
        try:
            self._guard.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._guard.kill()

    def __enter__(self) -> Lifeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def alive(process_group: int) -> bool:
    try:
        os.killpg(process_group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(groups: Iterable[int], grace_s: float) -> None:
    """SIGINT to each group still alive, newest first; SIGKILL to what is left after ``grace_s``."""
    pending = [group for group in reversed(list(groups)) if alive(group)]
    for signum, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        for group in pending:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)
        deadline = time.monotonic() + wait_s
        while (pending := [group for group in pending if alive(group)]) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if not pending:
            return


def _guard(grace_s: float) -> None:
    """The guard's side: read groups until the pipe closes, then stop whatever is left of them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups = [int(line) for line in sys.stdin.buffer if line.strip()]
    stop_groups(groups, grace_s)


if __name__ == "__main__":
    _guard(float(sys.argv[1]) if len(sys.argv) > 1 else GRACE_S)
