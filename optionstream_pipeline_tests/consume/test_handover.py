"""The archive's books at T, as a consumer started from T takes them: the same books, change_ids,
timestamps and reasons as a consumer that read the live topic up to T (no broker needed).

On the synthetic archive (:mod:`optionstream_pipeline_tests.archive.synthetic`): hours apart, a
replaced incarnation (the live topic is the newest one), a capture session killed without markers
and the next one starting, an instrument listed late.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from optionstream_pipeline.consume.books import BookBuilder
from optionstream_pipeline.consume.history import handover_at
from optionstream_pipeline_tests.archive.synthetic import Archive
from optionstream_pipeline_tests.support.books import T0, as_time

US = timedelta(microseconds=1)


def state(book) -> tuple:
    return (book.change_id, book.why, book.bids, book.asks, book.exchange_timestamp_ms, book.local_timestamp_us,
            book.capture_id, book.stream)  # fmt: skip


def live_books_at(archive: Archive, moment: datetime) -> tuple[dict[str, tuple], dict[int, int]]:
    """What a consumer of the live topic (partition 0, and partition 1's newest incarnation) has at T,
    and the offset of each partition's last record then."""
    builder, last = BookBuilder(), {}
    for time, stream, offset, record in archive.replay.stream:
        if time > moment:
            break
        if stream != 1:  # streams: partition 0, partition 1's first incarnation, its second
            builder.apply(record.record, record.partition)
            last[record.partition] = offset
    return {name: state(book) for name, book in builder.books.items()}, last


def test_the_archives_books_at_t_are_a_live_consumers_books_then(synthetic_archive: Archive) -> None:
    archive = synthetic_archive
    times = archive.replay.times
    rng = random.Random(5)
    moments = [times[0] + (times[-1] - times[0]) * rng.random() for _ in range(60)]
    restart = as_time((T0 + archive.killed_at_ms) * 1000) + timedelta(minutes=5)  # session b starts
    moments += [restart + timedelta(seconds=s) for s in range(0, 600, 20)]
    whys: set[str] = set()
    for moment in moments:
        handover = handover_at(archive.root, "t", moment)
        expected, last = live_books_at(archive, moment)
        assert {book.instrument: state(book) for book in handover.books} == expected, f"at {moment}"
        assert {p: found.offset for p, found in handover.partitions.items()} == last, f"at {moment}"
        whys |= {book.why.split(" ")[0] for book in handover.books if book.why}
    assert whys == {"waiting", "gap:", "disconnect:", "capture"}
