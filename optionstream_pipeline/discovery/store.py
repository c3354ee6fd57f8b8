"""The universe on disk: what capture follows now, and what every discovery run decided.

- ``<root>/current.json``: the current universe (names plus the listing fields), replaced
  atomically (write a temporary file, fsync, ``os.replace``), so a reader such as
  :class:`~optionstream_pipeline.discovery.source.UniverseFileSource` never sees half a file.
- ``<root>/history/universe-YYYY-MM-DD.parquet``: one row per instrument per run, with the change
  (``added``, ``kept``, ``expired`` = no longer listed, ``dropped`` = listed but filtered out). One
  file per UTC day, rewritten atomically on each run, so a 10-minute schedule makes one file a day
  instead of 144 small ones, and a crash mid-write leaves the previous complete file.

A lock file serialises writers (a scheduled run and a manual one can overlap).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.source import CURRENT_FILE

HISTORY_DIR = "history"
LOCK_FILE = ".lock"

HISTORY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("discovered_at", pa.timestamp("us", tz="UTC")),
        ("instrument_name", pa.string()),
        ("change", pa.string()),
        ("in_universe", pa.bool_()),
        ("expiration", pa.timestamp("ms", tz="UTC")),
        ("strike", pa.float64()),
        ("option_type", pa.string()),
        ("underlying_price", pa.float64()),
    ]
)


@dataclass
class UniverseChange:
    """What one discovery run changed, relative to the previous current universe."""

    run_id: str
    discovered_at: datetime
    universe: list[Listing]
    added: list[Listing] = field(default_factory=list)
    kept: list[Listing] = field(default_factory=list)
    expired: list[Listing] = field(default_factory=list)
    dropped: list[Listing] = field(default_factory=list)
    history_path: Path | None = None


class UniverseStore:
    """Reads and writes the universe under one directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def current_path(self) -> Path:
        return self.root / CURRENT_FILE

    @property
    def history_dir(self) -> Path:
        return self.root / HISTORY_DIR

    def read_current(self) -> dict[str, Any] | None:
        """The current view as written, or ``None`` before the first discovery run."""
        try:
            return json.loads(self.current_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def current_listings(self) -> list[Listing]:
        current = self.read_current() or {}
        return [_listing_from_dict(item) for item in current.get("instruments", [])]

    def write(
        self,
        run_id: str,
        universe: list[Listing],
        listed_names: set[str],
        discovered_at: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> UniverseChange:
        """Record one run: compare with the current universe, append the history, replace the view.

        ``listed_names`` (everything Deribit lists now) tells an expiry (gone from the listing) from
        an instrument the filters dropped.
        """
        discovered_at = discovered_at or datetime.now(UTC)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            change = _diff(run_id, discovered_at, self.current_listings(), universe, listed_names)
            underlying = (details or {}).get("underlying_price")
            change.history_path = self._append_history(change, underlying)
            _write_atomically(self.current_path, _current_document(change, details or {}))
        return change

    def history(self) -> pa.Table:
        """Every recorded run, oldest first (an empty table before the first run)."""
        files = sorted(self.history_dir.glob("universe-*.parquet"))
        if not files:
            return HISTORY_SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(path, schema=HISTORY_SCHEMA) for path in files)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / LOCK_FILE, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _append_history(self, change: UniverseChange, underlying: float | None) -> Path:
        self.history_dir.mkdir(parents=True, exist_ok=True)
        path = self.history_dir / f"universe-{change.discovered_at:%Y-%m-%d}.parquet"
        table = _history_rows(change, underlying)
        if path.exists():
            table = pa.concat_tables([pq.read_table(path, schema=HISTORY_SCHEMA), table])
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary, compression="zstd")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return path


def _diff(
    run_id: str, at: datetime, previous: list[Listing], universe: list[Listing], listed: set[str]
) -> UniverseChange:
    before = {listing.name for listing in previous}
    now = {listing.name for listing in universe}
    gone = [listing for listing in previous if listing.name not in now]
    return UniverseChange(
        run_id=run_id,
        discovered_at=at,
        universe=universe,
        added=[listing for listing in universe if listing.name not in before],
        kept=[listing for listing in universe if listing.name in before],
        expired=[listing for listing in gone if listing.name not in listed],
        dropped=[listing for listing in gone if listing.name in listed],
    )


def _history_rows(change: UniverseChange, underlying: float | None) -> pa.Table:
    rows = (
        [(listing, "added", True) for listing in change.added]
        + [(listing, "kept", True) for listing in change.kept]
        + [(listing, "expired", False) for listing in change.expired]
        + [(listing, "dropped", False) for listing in change.dropped]
    )
    return pa.table(
        {
            "run_id": [change.run_id] * len(rows),
            "discovered_at": [change.discovered_at] * len(rows),
            "instrument_name": [listing.name for listing, _, _ in rows],
            "change": [kind for _, kind, _ in rows],
            "in_universe": [member for _, _, member in rows],
            "expiration": [listing.expiration_ms for listing, _, _ in rows],
            "strike": [listing.strike for listing, _, _ in rows],
            "option_type": [listing.option_type for listing, _, _ in rows],
            "underlying_price": [underlying] * len(rows),
        },
        schema=HISTORY_SCHEMA,
    )


def _current_document(change: UniverseChange, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": change.run_id,
        "discovered_at": change.discovered_at.isoformat(),
        **details,
        "count": len(change.universe),
        "instruments": [listing.as_dict() for listing in change.universe],
    }


def _listing_from_dict(item: dict[str, Any]) -> Listing:
    return Listing(item["instrument_name"], int(item["expiration_ms"]), float(item["strike"]), item["option_type"])


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write, fsync, then rename over the old file: readers see the old or the new file, never half."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
