"""Time series over the archive: the top of a book through time, and when books were unreliable.

Both are DuckDB macros (defined by :func:`optionstream_pipeline.query.database.open_archive`), built
on one per-record view of a window ``[start, stop)``:

- ``book_changes_between(start, stop, instrument := NULL)``: the state of every book just before
  ``start`` (the checkpoint rows of :func:`~optionstream_pipeline.archive.checkpoints.state_sql`,
  flagged ``prior``), then every archive row with ``start <= book_time < stop``;
- ``book_states_between(start, stop, instrument := NULL)``: one row per record of those, with the
  snapshot its book started from (``epoch``, after which an ``unsubscribed`` marker starts none)
  and the end of the capture session that wrote it, which is all reliability is judged on.

On those:

- ``top_of_book(instrument, start, stop, every_ms := NULL)``: best bid and ask with sizes, mid and
  spread, and reliability: one row per record (raw), or one per ``every_ms`` milliseconds from
  ``start`` (resampled: the book as it stood at each instant, as ``books_at`` gives it);
- ``unreliable_intervals(start, stop, instrument := NULL)``: per instrument, the intervals
  ``[since, until)`` in which its book was unreliable, and why it became so: a gap, a disconnect, no
  snapshot yet, or a capture session that ended without markers (its books are unreliable from just
  after its last record until their next snapshot). Adjacent causes merge into one interval, named
  by the first; ``continues`` says the book was still unreliable at ``stop``.

An instant ``t`` is inside an interval exactly when ``books_at(t)`` says the book is not reliable:
both use ``unreliable_why``, the one statement of the rules.
"""

from __future__ import annotations

SESSION_ENDED = "capture session "
"""How ``unreliable_why`` starts the reason of a book whose capture session ended without markers."""

WHY = """
-- Why a book is not reliable at moment_us (NULL when it is): the rules of docs/queries.md, in one place.
CREATE OR REPLACE MACRO unreliable_why(has_snapshot, last_type, last_reason, capture_id, ended_us, moment_us) AS
CASE WHEN NOT coalesce(has_snapshot, false) THEN 'waiting for the first snapshot'
     WHEN last_type = 'gap' THEN 'gap: ' || last_reason
     WHEN last_type = 'disconnect' THEN 'disconnect: ' || last_reason
     WHEN coalesce(ended_us, -1) < moment_us THEN
          '{session_ended}' || capture_id || ' ended at '
          || coalesce((TIMESTAMPTZ 'epoch' + to_microseconds(ended_us))::VARCHAR, 'an unknown time')
          || ' without markers'
END;
"""

SERIES = """
CREATE OR REPLACE MACRO book_changes_between(start, stop, instrument := NULL) AS TABLE
SELECT *, true AS prior FROM ({prior_state})
UNION ALL
SELECT {columns}, false AS prior FROM book
WHERE book_time >= start::TIMESTAMPTZ AND book_time < stop::TIMESTAMPTZ AND (instrument IS NULL OR symbol = instrument);

CREATE OR REPLACE MACRO book_states_between(start, stop, instrument := NULL) AS TABLE
WITH records AS (
    SELECT symbol, {stream_order} AS seq, any_value(book_time) AS book_time, any_value(record_type) AS record_type,
           any_value(reason) AS reason, any_value(capture_id) AS capture_id, any_value(change_id) AS change_id,
           bool_and(prior) AS prior
    FROM book_changes_between(start, stop, instrument := instrument) GROUP BY ALL
),
marks AS (
    SELECT *, max(seq) FILTER (WHERE record_type = 'snapshot') OVER earlier AS snapshot_seq,
              max(seq) FILTER (WHERE record_type = 'unsubscribed') OVER earlier AS unsubscribed_seq
    FROM records WINDOW earlier AS (PARTITION BY symbol ORDER BY seq ROWS UNBOUNDED PRECEDING)
)
SELECT m.* EXCLUDE (snapshot_seq, unsubscribed_seq),
       CASE WHEN unsubscribed_seq IS NULL OR snapshot_seq > unsubscribed_seq THEN snapshot_seq END AS epoch,
       epoch IS NOT NULL AS has_snapshot, e.ended_us
FROM marks m LEFT JOIN session_ends e ON e.capture_id = m.capture_id;

CREATE OR REPLACE MACRO top_of_book(instrument, start, stop, every_ms := NULL) AS TABLE
WITH rows AS (SELECT *, {stream_order} AS seq FROM book_changes_between(start, stop, instrument := instrument)),
states AS (SELECT * FROM book_states_between(start, stop, instrument := instrument)),
levels AS (  -- each price's amount from one record until the next record that sets it (within a book)
    SELECT s.epoch, r.seq, r.side, r.price, arg_max(r.amount, r.level) AS amount
    FROM rows r JOIN states s ON s.seq = r.seq
    WHERE r.side IS NOT NULL AND s.has_snapshot GROUP BY ALL
),
spans AS (
    SELECT *, coalesce(lead(seq) OVER (PARTITION BY epoch, side, price ORDER BY seq),
                       170141183460469231731687303715884105727::HUGEINT) AS until_seq
    FROM levels
),
tops AS (
    SELECT s.seq,
           max(l.price) FILTER (WHERE l.side = 'bid') AS bid_price,
           arg_max(l.amount, l.price) FILTER (WHERE l.side = 'bid') AS bid_amount,
           min(l.price) FILTER (WHERE l.side = 'ask') AS ask_price,
           arg_min(l.amount, l.price) FILTER (WHERE l.side = 'ask') AS ask_amount
    FROM states s JOIN spans l ON l.epoch = s.epoch AND l.seq <= s.seq AND s.seq < l.until_seq
    WHERE s.has_snapshot AND l.amount > 0
    GROUP BY s.seq
),
series AS (
    SELECT s.*, t.* EXCLUDE (seq) FROM states s LEFT JOIN tops t ON t.seq = s.seq
    QUALIFY row_number() OVER (PARTITION BY s.book_time ORDER BY s.seq DESC) = 1 OR every_ms IS NULL
),
moments AS (
    SELECT unnest(generate_series(start::TIMESTAMPTZ, stop::TIMESTAMPTZ - INTERVAL 1 MICROSECOND,
                                  to_milliseconds(every_ms))) AS moment
    WHERE every_ms IS NOT NULL
),
sampled AS (
    SELECT m.moment, s.* FROM moments m ASOF LEFT JOIN series s ON m.moment >= s.book_time
    UNION ALL
    SELECT book_time AS moment, * FROM series WHERE every_ms IS NULL AND NOT prior
)
SELECT instrument AS symbol, moment AS book_time, book_time AS as_of, change_id,
       bid_price, bid_amount, ask_price, ask_amount,
       round((bid_price + ask_price) / 2, 12) AS mid, round(ask_price - bid_price, 12) AS spread,  -- (no float noise)
       why IS NULL AS reliable, why
FROM (
    SELECT *, CASE WHEN record_type = 'unsubscribed' THEN 'unsubscribed: ' || reason
                   ELSE unreliable_why(has_snapshot, record_type, reason, capture_id, ended_us, epoch_us(moment))
              END AS why
    FROM sampled
)
ORDER BY moment, seq;

CREATE OR REPLACE MACRO unreliable_intervals(start, stop, instrument := NULL) AS TABLE
WITH states AS (  -- the state at each instant is its last record's
    SELECT *, lead(book_time) OVER (PARTITION BY symbol ORDER BY seq) AS next_time
    FROM book_states_between(start, stop, instrument := instrument)
    QUALIFY row_number() OVER (PARTITION BY symbol, book_time ORDER BY seq DESC) = 1
),
judged AS (
    SELECT *, unreliable_why(has_snapshot, record_type, reason, capture_id, ended_us, epoch_us(book_time)) AS why,
           coalesce(ended_us, epoch_us(book_time) - 1) + 1 AS orphaned_us  -- just after its session's last record
    FROM states WHERE record_type <> 'unsubscribed'
),
pieces AS (
    SELECT symbol, book_time AS since, next_time AS until, why FROM judged WHERE why IS NOT NULL
    UNION ALL  -- reliable at its record, then not once its capture session ended without markers
    SELECT symbol, TIMESTAMPTZ 'epoch' + to_microseconds(orphaned_us), next_time,
           unreliable_why(has_snapshot, record_type, reason, capture_id, ended_us, orphaned_us)
    FROM judged WHERE why IS NULL
),
clipped AS (
    SELECT symbol, greatest(since, start::TIMESTAMPTZ) AS since,
           least(coalesce(until, stop::TIMESTAMPTZ), stop::TIMESTAMPTZ) AS until, why
    FROM pieces WHERE since < coalesce(until, 'infinity'::TIMESTAMPTZ)
),
islands AS (
    SELECT *, sum(starts::INTEGER) OVER (PARTITION BY symbol ORDER BY since ROWS UNBOUNDED PRECEDING) AS island
    FROM (SELECT *, coalesce(since <> lag(until) OVER (PARTITION BY symbol ORDER BY since), true) AS starts
          FROM clipped WHERE since < until)
)
SELECT symbol, min(since) AS since, max(until) AS until, arg_min(why, since) AS why,
       epoch(max(until) - min(since)) AS seconds, max(until) >= stop::TIMESTAMPTZ AS continues
FROM islands GROUP BY symbol, island
ORDER BY symbol, since;
"""
