"""``optionstream query`` as a user runs it: a table, CSV, Parquet, and errors that say what is wrong."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from optionstream_pipeline.cli import main
from optionstream_pipeline.query.cli import expiry_date
from optionstream_pipeline.query.database import archive_span, open_archive
from optionstream_pipeline_tests.archive.scenario import ArchivedRun

pytestmark = pytest.mark.slow


@pytest.fixture
def config(archived_run: ArchivedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("OPTIONSTREAM_CONFIG", "OPTIONSTREAM_ARCHIVE__PATH"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"archive": {"path": archived_run.settings.archive.path}}))
    return str(path)


def test_book_as_csv_is_the_book_at_that_time(config: str, archived_run: ArchivedRun, capsys) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    moment = first + (last - first) / 3
    name = archived_run.records[0].record.instrument
    expected = connection.execute("SELECT side, level, price, amount FROM book_at(?, ?, depth := 3)",
                                  [name, moment]).fetchall()  # fmt: skip
    assert main(["query", "--config", config, "--csv", "book", name, "--at", moment.isoformat(), "--depth", "3"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["side"], int(r["level"]), float(r["price"]), float(r["amount"])) for r in rows] == expected


def test_chain_table_and_updates_to_parquet(config: str, archived_run: ArchivedRun, capsys, tmp_path: Path) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    name = archived_run.records[0].record.instrument
    expiry = name.split("-")[1]
    assert main(["query", "--config", config, "chain", expiry, "--at", (first + (last - first) / 2).isoformat()]) == 0
    table = capsys.readouterr().out
    assert "call_bid" in table and "put_reliable" in table and "strike" in table
    assert "call_mark_iv" in table and "put_delta" in table  # the ticker beside the book
    moment = (first + (last - first) / 2).isoformat()
    assert main(["query", "--config", config, "--csv", "smile", expiry, "--at", moment]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("strike,call_mark_iv,call_bid_iv,call_ask_iv,call_delta,put_mark_iv")
    expected = connection.execute("SELECT * FROM smile_at(?, ?)", [expiry_date(expiry), moment]).fetchall()
    assert len(rows) == len(expected) > 0
    assert [float(row.split(",")[0]) for row in rows] == [row[0] for row in expected]
    target = tmp_path / "updates.parquet"
    arguments = ["--from", first.isoformat(), "--to", last.isoformat()]
    assert main(["query", "--config", config, "--parquet", str(target), "updates", name, *arguments]) == 0
    expected = connection.execute("SELECT count(*) FROM updates_between(?, ?, ?)", [name, first, last]).fetchall()
    assert pq.read_table(target).num_rows == expected[0][0] > 0


def test_top_of_book_resampled_and_the_unreliable_intervals(config: str, archived_run: ArchivedRun, capsys) -> None:
    connection = open_archive(archived_run.settings.archive.path, ":memory:")
    first, last = archive_span(connection)
    name = archived_run.records[0].record.instrument
    window = ["--from", first.isoformat(), "--to", last.isoformat()]
    assert main(["query", "--config", config, "--csv", "top", name, *window, "--every", "500ms"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = connection.execute("SELECT mid, reliable FROM top_of_book(?, ?, ?, every_ms := 500)",
                                  [name, first, last]).fetchall()  # fmt: skip
    assert len(rows) == len(expected) == -(-(last - first).total_seconds() * 1000 // 500)
    assert [(float(r["mid"]) if r["mid"] else None, r["reliable"] == "True") for r in rows] == expected
    assert main(["query", "--config", config, "--csv", "quality", *window]) == 0
    intervals = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # The scenario drops connections and kills a capture session: both show, each named.
    assert {row["why"].split(" ")[0].rstrip(":") for row in intervals} >= {"disconnect"}
    assert list(intervals[0]) == ["symbol", "since", "until", "why", "seconds", "continues"]


def test_a_time_without_data_or_a_bad_time_is_named(config: str, capsys) -> None:
    assert main(["query", "--config", config, "book", "BTC-27JUN25-100000-C", "--at", "2001-01-01T00:00:00Z"]) == 1
    assert "no archived data at 2001-01-01 00:00:00.000000 UTC: the archive spans" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["query", "--config", config, "book", "BTC-27JUN25-100000-C", "--at", "yesterday"])
    assert exited.value.code == 2
    assert "'yesterday' is not a time: expected ISO 8601" in capsys.readouterr().err
    window = ["--from", "2001-01-01T00:00:00Z", "--to", "2001-01-02T00:00:00Z"]
    assert main(["query", "--config", config, "quality", *window]) == 1
    assert "no archived data from 2001-01-01 00:00:00.000000 UTC to 2001-01-02" in capsys.readouterr().err
    assert main(["query", "--config", config, "top", "X", "--from", window[3], "--to", window[1]]) == 1
    assert "an empty window: 2001-01-02 00:00:00.000000 UTC is not before 2001-01-01" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["query", "--config", config, "top", "X", *window, "--every", "soon"])
    assert "'soon' is not a period: expected e.g. 250ms, 1s, 5m or 1h" in capsys.readouterr().err
    assert main(["query", "--config", config, "sql", "SELECT nope FROM book"]) == 1
    assert 'Referenced column "nope" not found' in capsys.readouterr().err


def test_a_database_file_held_by_another_process_still_answers(archived_run: ArchivedRun, tmp_path: Path) -> None:
    import subprocess
    import sys

    database = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(database)!r}); print('held', "
         "flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        connection = open_archive(archived_run.settings.archive.path, database)
        assert connection.execute("SELECT count(*) FROM book").fetchall()[0][0] > 0
    finally:
        holder.kill()
        holder.wait(10)
