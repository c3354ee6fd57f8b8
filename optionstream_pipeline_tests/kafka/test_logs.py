"""librdkafka's log lines through Python logging: each distinct problem once, its repeats counted."""

from __future__ import annotations

import logging

from optionstream_pipeline.kafka.logs import RepeatFilter, librdkafka_logger


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", level, __file__, 1, message, args, None)


def test_a_problem_is_said_once_then_its_repeats_are_counted() -> None:
    clock = Clock()
    repeats = RepeatFilter(every_s=60, clock=clock)
    failure = "FAIL [thrd:127.0.0.1:9/bootstrap]: Connect to ipv4#127.0.0.1:9 failed (after %dms in state CONNECT)"
    assert repeats.filter(record(failure, 0))
    passed = []
    for step in range(1, 250):  # librdkafka retries every few tens of milliseconds
        clock.now = step * 0.04
        passed.append(repeats.filter(record(failure, step)))
    assert not any(passed)  # the same problem, whatever its numbers
    assert repeats.filter(record("1/1 brokers are down", level=logging.WARNING))  # another problem: said
    clock.now = 61.0
    summary = record(failure, 7)
    assert repeats.filter(summary)
    assert summary.getMessage().endswith("(after 7ms in state CONNECT) (and 249 more times in 61 s)")
    clock.now = 62.0
    assert not repeats.filter(record(failure, 8))  # a new window


def test_every_client_gets_the_same_filtered_logger() -> None:
    logger = librdkafka_logger()
    assert librdkafka_logger() is logger
    assert sum(isinstance(item, RepeatFilter) for item in logger.filters) == 1
