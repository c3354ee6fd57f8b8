"""``optionstream consume`` as a user runs it: the table's rendering, JSON lines, and errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import msgspec
import pytest
import yaml
from rich.console import Console

from optionstream_pipeline.cli import main
from optionstream_pipeline.consume.cli import render_table
from optionstream_pipeline.consume.view import Activity, TopOfBook
from optionstream_pipeline.consume.web.cli import now_or_earliest
from optionstream_pipeline_tests.archive.scenario import ArchivedRun
from optionstream_pipeline_tests.support.waiting import wait_until


def line(name: str, why: str | None = None, bid=(0.05, 10.0), ask=(0.06, 2.5), rate=3.0, age=1.5) -> TopOfBook:
    _, expiry, strike, kind = name.split("-")
    months = {"JUN": 6, "DEC": 12}
    day, month, year = int(expiry[:-5]), months[expiry[-5:-2]], 2000 + int(expiry[-2:])
    mid = spread = None
    if bid and ask:
        mid, spread = (bid[0] + ask[0]) / 2, ask[0] - bid[0]
    return TopOfBook(name, date(year, month, day), float(strike), "call" if kind == "C" else "put", bid, ask, mid,
                     spread, 7, why, rate, age)  # fmt: skip


def rendered(lines: list[TopOfBook]) -> list[str]:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(lines, "orderbook.deribit.options"))
    return console.export_text().splitlines()


def test_the_table_is_in_chain_order_with_the_top_of_each_book() -> None:
    text = rendered([line("BTC-27DEC25-90000-P"), line("BTC-27JUN25-100000-C"), line("BTC-27DEC25-90000-C"),
                     line("BTC-27JUN25-80000-P")])  # fmt: skip
    names = [row.split()[1] for row in text if "BTC-" in row]
    assert names == ["BTC-27JUN25-80000-P", "BTC-27JUN25-100000-C", "BTC-27DEC25-90000-C", "BTC-27DEC25-90000-P"]
    row = next(r for r in text if "BTC-27JUN25-100000-C" in r).split("│")
    cells = [cell.strip() for cell in row[1:-1]]
    assert cells == [
        "BTC-27JUN25-100000-C",
        "10.0",
        "0.0500",
        "0.0600",
        "2.5",
        "0.05500",
        "0.0100",
        "3.0",
        "1.5s",
        "ok",
    ]


def test_an_unreliable_book_is_marked_with_its_reason_and_counted() -> None:
    text = rendered([line("BTC-27JUN25-100000-C", why="gap: change_id gap", bid=None), line("BTC-27JUN25-100000-P")])
    row = next(r for r in text if "BTC-27JUN25-100000-C" in r)
    assert "! gap: change_id gap" in row and row.count(" - ") >= 3  # no bid: no bid, bid size, mid or spread
    assert any("2 books, 1 not reliable" in r for r in text)
    assert any("waiting for records" in r for r in rendered([]))


def test_ages_read_in_the_unit_that_fits() -> None:
    for age, shown in ((0.4, "0.4s"), (125.0, "2m"), (7200.0, "2.0h")):
        assert any(f" {shown} " in row for row in rendered([line("BTC-27JUN25-100000-C", age=age)]))


def test_update_rates_count_between_two_looks() -> None:
    activity = Activity()
    assert activity.rates(10.0) == {}
    for _ in range(20):
        activity.count("A")
    assert activity.rates(12.0) == {"A": 10.0}  # 20 updates in 2 s
    assert activity.rates(13.0) == {"A": 5.0}  # none in the next second: halfway down (smoothed)


@pytest.fixture
def config(archived_run: ArchivedRun, tmp_path: Path) -> str:
    settings = archived_run.settings
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {"brokers": settings.kafka.brokers, "topic": settings.kafka.topic, "admin_timeout_s": 1},
        "archive": {"path": settings.archive.path},
    }))  # fmt: skip
    return str(path)


def test_json_lines_are_the_records_of_the_selected_instrument(archived_run: ArchivedRun, config: str) -> None:
    name = archived_run.records[0].record.instrument
    expected = [msgspec.json.decode(r.value) for r in sorted(archived_run.records, key=lambda r: r.offset)
                if r.record.instrument == name]  # fmt: skip
    command = [sys.executable, "-m", "optionstream_pipeline.cli", "--log-level", "ERROR", "consume", "--config", config,
               "--from-beginning", "--json", "--instrument", name]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        wait_until(lambda: lines.append(process.stdout.readline()) or len(lines) >= len(expected), 30,
                   interval=0, message=f"{len(expected)} JSON lines")  # fmt: skip
    finally:
        process.kill()
        process.wait(10)
    assert [msgspec.json.decode(text) for text in lines] == expected


def test_a_bad_instrument_name_or_an_unreachable_broker_is_named(config: str, tmp_path: Path, capsys) -> None:
    assert main(["consume", "--config", config, "--instrument", "BTC-27JUN25-100000"]) == 2
    assert "'BTC-27JUN25-100000' is not a Deribit option name" in capsys.readouterr().err
    assert main(["consume", "--config", config, "--type", "straddle"]) == 2
    assert "'straddle' is not an option type" in capsys.readouterr().err
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(yaml.safe_dump({"kafka": {"brokers": ["127.0.0.1:1"], "admin_timeout_s": 1}}))
    assert main(["consume", "--config", str(unreachable)]) == 1
    assert "at 127.0.0.1:1" in capsys.readouterr().err


def test_the_live_view_starts_from_the_archive_when_there_is_one(archived_run: ArchivedRun, tmp_path: Path) -> None:
    with_archive = archived_run.settings
    without = with_archive.model_copy(
        update={"archive": with_archive.archive.model_copy(update={"path": str(tmp_path)})}
    )
    assert isinstance(now_or_earliest(with_archive), datetime)
    assert now_or_earliest(without) == "earliest"


def test_the_live_view_refuses_a_time_the_archive_does_not_hold(config: str, capsys) -> None:
    assert main(["ui", "--config", config, "--from", "2020-01-01T00:00:00Z", "--port", "0"]) == 1
    assert "starts at" in capsys.readouterr().err
