"""The universe store and UniverseFileSource: history of every run, an atomic current view."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.source import UniverseFileSource
from optionstream_pipeline.discovery.store import HISTORY_SCHEMA, UniverseStore

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def item(name: str, strike: float = 100_000) -> Listing:
    return Listing(name, 1_800_000_000_000, strike, "call")


A, B, C, D = (item(f"BTC-26JUN26-{k}-C", k) for k in (90_000, 100_000, 110_000, 120_000))


def test_first_run_adds_everything(tmp_path: Path) -> None:
    store = UniverseStore(tmp_path)
    assert store.read_current() is None
    change = store.write("run-1", [A, B], {A.name, B.name}, T0, {"underlying_price": 100_000.0})
    assert [x.name for x in change.added] == [A.name, B.name]
    assert change.kept == change.expired == change.dropped == []
    current = store.read_current()
    assert current["run_id"] == "run-1"
    assert current["count"] == 2
    assert current["underlying_price"] == 100_000.0
    assert [x.name for x in store.current_listings()] == [A.name, B.name]


def test_second_run_tells_expired_from_dropped(tmp_path: Path) -> None:
    store = UniverseStore(tmp_path)
    store.write("run-1", [A, B, C], {A.name, B.name, C.name}, T0)
    # A left Deribit's listing (expired); C is still listed but the filters dropped it; D is new.
    change = store.write("run-2", [B, D], {B.name, C.name, D.name}, T0 + timedelta(minutes=10))
    assert [x.name for x in change.added] == [D.name]
    assert [x.name for x in change.kept] == [B.name]
    assert [x.name for x in change.expired] == [A.name]
    assert [x.name for x in change.dropped] == [C.name]


def test_history_has_every_run_in_one_file_per_day(tmp_path: Path) -> None:
    store = UniverseStore(tmp_path)
    store.write("run-1", [A, B], {A.name, B.name}, T0)
    store.write("run-2", [B], {B.name}, T0 + timedelta(minutes=10))
    store.write("run-3", [B, C], {B.name, C.name}, T0 + timedelta(days=1))
    files = sorted(p.name for p in store.history_dir.iterdir())
    assert files == ["universe-2026-01-05.parquet", "universe-2026-01-06.parquet"]
    history = store.history()
    assert history.schema.equals(HISTORY_SCHEMA)
    rows = sorted(zip(*(history[c].to_pylist() for c in ("run_id", "instrument_name", "change")), strict=True))
    assert rows == sorted(
        [
            ("run-1", A.name, "added"),
            ("run-1", B.name, "added"),
            ("run-2", A.name, "expired"),
            ("run-2", B.name, "kept"),
            ("run-3", B.name, "kept"),
            ("run-3", C.name, "added"),
        ]
    )
    assert pq.read_metadata(store.history_dir / files[0]).num_rows == 4


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = UniverseStore(tmp_path)
    store.write("run-1", [A], {A.name}, T0)
    store.write("run-2", [A, B], {A.name, B.name}, T0)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []


def test_file_source_follows_the_current_view(tmp_path: Path) -> None:
    source = UniverseFileSource(tmp_path)
    assert source() == []  # before the first discovery run: nothing to follow yet
    store = UniverseStore(tmp_path)
    store.write("run-1", [A, B], {A.name, B.name}, T0)
    assert source() == [A.name, B.name]
    store.write("run-2", [C], {C.name}, T0)
    assert source() == [C.name]
    assert UniverseFileSource(tmp_path / "current.json")() == [C.name]


def test_file_source_raises_on_a_broken_file_so_the_engine_keeps_its_universe(tmp_path: Path) -> None:
    (tmp_path / "current.json").write_text(json.dumps({"nothing": []}))
    with pytest.raises(ValueError, match="no 'instruments' list"):
        UniverseFileSource(tmp_path)()
