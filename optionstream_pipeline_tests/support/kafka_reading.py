"""Read a whole topic back, as a test consumer would, with a deadline: the product's reader, accumulated."""

from __future__ import annotations

from collections.abc import Callable

from optionstream_pipeline.kafka.reader import TopicReader, TopicRecord
from optionstream_pipeline_tests.support.waiting import wait_until


class TopicLog:
    """Every record of every partition of a topic from the beginning, accumulated across calls."""

    def __init__(self, bootstrap: str, topic: str, records: str = "book") -> None:
        self.records: list[TopicRecord] = []
        self._reader = TopicReader(bootstrap, topic, records=records)

    def read_until(
        self, done: Callable[[list[TopicRecord]], bool], timeout: float, what: str = ""
    ) -> list[TopicRecord]:
        def read_more() -> bool:
            if done(self.records):
                return True
            self.records.extend(self._reader.poll())
            return done(self.records)

        try:
            wait_until(read_more, timeout, interval=0, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({len(self.records)} records read)") from None
        return self.records

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> TopicLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
