"""Where the archive goes on, decided from its last record and what a fetch showed (pure): the same
rule on Apache Kafka and on the embedded broker, whose behaviour at the edges differs."""

from __future__ import annotations

import msgspec
import pytest

from optionstream_pipeline.archive.progress import Archived, Fingerprint, Probe, plan
from optionstream_pipeline.kafka.reader import TopicRecord
from optionstream_pipeline.records.book import decode_record, encode_capture_meta, encode_marker


def message(offset: int, reason: str = "left the universe", timestamp_ms: int = 1_000) -> TopicRecord:
    value = encode_marker(
        "unsubscribed", "BTC-27JUN25-100000-C", "100ms", timestamp_ms * 1000, reason, encode_capture_meta("c")
    )
    return TopicRecord(0, offset, timestamp_ms, "BTC-27JUN25-100000-C", value, decode_record(value))


LAST = message(99)
ARCHIVED = Archived(incarnation=2, next_offset=100, last=Fingerprint.of(LAST), book_time_us=5_000_000)


def test_nothing_archived_starts_from_the_beginning() -> None:
    decided = plan(None, None)
    assert (decided.incarnation, decided.start_offset, decided.book_time_us, decided.hole) == (0, None, 0, None)


def test_the_archived_record_found_again_continues_after_it() -> None:
    decided = plan(ARCHIVED, Probe(message(99), end_offset=150))
    assert (decided.incarnation, decided.start_offset, decided.skip_first) == (2, 99, True)
    assert decided.book_time_us == 5_000_000 and decided.hole is None


def test_nothing_after_the_archived_record_is_nothing_new() -> None:
    decided = plan(ARCHIVED, Probe(None, end_offset=100))
    assert (decided.incarnation, decided.start_offset, decided.hole, decided.why) == (2, 100, None, "nothing new")


@pytest.mark.parametrize(
    ("probe", "why"),
    [
        # Apache Kafka: the offset is past the end, the reader resets to the earliest record: offset 0.
        (Probe(message(0), end_offset=40), "offset 0 comes before the archive's last 99"),
        # The embedded broker: no error past the end, no record; the fetch says where the end is.
        (Probe(None, end_offset=40), "the partition now ends at offset 40, before the archive's 100"),
        # Both: a new topic grew past the old offsets: another record is there.
        (
            Probe(message(99, reason="another record"), end_offset=500),
            "the record at offset 99 is not the one archived",
        ),
    ],
    ids=["reset-to-earliest", "ended-before", "another-record-there"],
)
def test_a_recreated_topic_is_a_new_incarnation_from_its_beginning(probe: Probe, why: str) -> None:
    decided = plan(ARCHIVED, probe)
    assert (decided.incarnation, decided.start_offset, decided.book_time_us, decided.hole) == (3, None, 0, None)
    assert why in decided.why and "recreated" in decided.why


def test_records_removed_by_retention_are_a_hole_reported_and_the_archive_goes_on() -> None:
    decided = plan(ARCHIVED, Probe(message(130), end_offset=200))
    assert decided.hole == (100, 129)
    assert (decided.incarnation, decided.start_offset, decided.skip_first) == (2, 130, False)
    assert "offsets 100 to 129 were removed by retention" in decided.why


def test_only_the_archived_record_removed_is_no_hole() -> None:
    decided = plan(ARCHIVED, Probe(message(100), end_offset=200))
    assert (decided.start_offset, decided.skip_first, decided.hole) == (100, False, None)


def test_a_fingerprint_tells_two_records_at_one_offset_apart() -> None:
    same, other = message(7), message(7, reason="something else")
    assert Fingerprint.of(same) == Fingerprint.of(message(7))
    assert Fingerprint.of(same) != Fingerprint.of(other)
    assert msgspec.json.decode(msgspec.json.encode(Fingerprint.of(same))) == {
        "offset": 7, "timestamp_ms": 1000, "key": "BTC-27JUN25-100000-C", "crc32": Fingerprint.of(same).crc32
    }  # fmt: skip
