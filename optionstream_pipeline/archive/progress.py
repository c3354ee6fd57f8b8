"""Where to go on archiving a partition: the archive's last record against what Kafka holds now (pure).

The archive is the source of truth for its progress: the last file of a partition says up to which
offset it holds the topic, and which record that was (its fingerprint). Before reading on, the
archiver reads Kafka from that last archived offset (a probe) and :func:`plan` decides:

- the record there is the one archived: go on after it;
- another record is there, Kafka's partition now ends before it, or the first record there is an
  earlier offset: the topic was deleted and recreated (offsets started again): archive the new
  incarnation from its beginning, beside the old one;
- the first record there comes after the next offset: retention removed records the archive had not
  read: report the hole (never skip it silently) and go on from the earliest record there is.

Both brokers behave the same through this rule: the decision uses only what a fetch returned, never
a watermark asked for beforehand (which the embedded broker under-reports).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from optionstream_pipeline.kafka.reader import TopicRecord


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Enough of a Kafka record to tell it from another record at the same offset."""

    offset: int
    timestamp_ms: int
    key: str
    crc32: int

    @classmethod
    def of(cls, message: TopicRecord) -> Fingerprint:
        return cls(message.offset, message.timestamp_ms, message.key, zlib.crc32(message.value))


@dataclass(frozen=True, slots=True)
class Archived:
    """What the archive holds of one partition (from its last file)."""

    incarnation: int
    next_offset: int  # after the last archived record
    last: Fingerprint
    book_time_us: int  # the partition's latest book_time so far


@dataclass(frozen=True, slots=True)
class Probe:
    """What reading the partition from ``archived.last.offset`` showed."""

    first: TopicRecord | None  # the first record read; None: the partition ended first
    end_offset: int  # the partition's end, as that fetch reported it


@dataclass(frozen=True, slots=True)
class Plan:
    incarnation: int
    start_offset: int | None  # None: from the partition's beginning
    book_time_us: int  # where book_time continues from (0 for a new incarnation)
    skip_first: bool  # the probed record is the archive's last one: do not archive it again
    hole: tuple[int, int] | None  # offsets retention removed before the archive read them
    why: str


def plan(archived: Archived | None, probe: Probe | None) -> Plan:
    if archived is None:
        return Plan(0, None, 0, False, None, "nothing archived yet: from the beginning")
    fresh = Plan(archived.incarnation + 1, None, 0, False, None, "")
    last = archived.last
    if probe is None or probe.first is None:
        if probe is not None and probe.end_offset < archived.next_offset:
            why = (
                f"the partition now ends at offset {probe.end_offset}, before the archive's "
                f"{archived.next_offset}: the topic was recreated"
            )
            return _with(fresh, why)
        return Plan(archived.incarnation, archived.next_offset, archived.book_time_us, False, None, "nothing new")
    first = probe.first
    if first.offset < last.offset:
        return _with(
            fresh, f"offset {first.offset} comes before the archive's last {last.offset}: the topic was recreated"
        )
    if first.offset == last.offset:
        if Fingerprint.of(first) == last:
            return Plan(archived.incarnation, last.offset, archived.book_time_us, True, None, "continuing")
        return _with(fresh, f"the record at offset {last.offset} is not the one archived: the topic was recreated")
    if first.offset > archived.next_offset:
        hole = (archived.next_offset, first.offset - 1)
        why = f"offsets {hole[0]} to {hole[1]} were removed by retention before the archive read them"
        return Plan(archived.incarnation, first.offset, archived.book_time_us, False, hole, why)
    return Plan(archived.incarnation, first.offset, archived.book_time_us, False, None, "continuing")


def _with(plan_: Plan, why: str) -> Plan:
    return Plan(plan_.incarnation, plan_.start_offset, plan_.book_time_us, plan_.skip_first, plan_.hole, why)
