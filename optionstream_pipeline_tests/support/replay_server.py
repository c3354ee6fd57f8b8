"""The real ``optionstream replay`` command as a test runs it: a subprocess on a free port, its log
read by a thread (the pipe never fills) so a test can wait on what it says."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

DEADLINE_S = 30.0


class ReplayServer:
    """``optionstream replay --config CONFIG --port 0 ARGUMENTS...``; :attr:`url` once it listens."""

    def __init__(self, config: str, *arguments: str) -> None:
        command = [sys.executable, "-m", "optionstream_pipeline.cli", "replay", "--config", config, "--port", "0"]
        self.process = subprocess.Popen([*command, *arguments], stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for("replay listening on").rsplit(" ", 1)[1].strip()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float = DEADLINE_S) -> str:
        """The first log line (from now on) containing ``text``; fails at the deadline."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError(f"no log line with {text!r} within {timeout_s} s; log:\n{''.join(self.log)}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
