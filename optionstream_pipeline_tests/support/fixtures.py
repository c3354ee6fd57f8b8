"""Where the shared, real Deribit data lives: ``../shared/fixtures/deribit`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

REPO_ROOT = Path(__file__).resolve().parents[2]
DERIBIT_FIXTURES = Path(os.environ.get("OPTIONSTREAM_FIXTURES", REPO_ROOT.parent / "shared/fixtures/deribit"))
RECORDING = DERIBIT_FIXTURES / "recorded_mainnet_2021-07-22.ws.log"


def recorded_frames() -> list[dict]:
    """Every frame received in the real recording, in order (the two header lines left out)."""
    lines = [line for line in RECORDING.read_text().splitlines()[2:] if line.strip()]
    return [msgspec.json.decode(line.split(": ", 1)[1]) for line in lines]


def recorded_ticker_messages() -> list[dict]:
    return [
        frame["params"]["data"]
        for frame in recorded_frames()
        if frame.get("params", {}).get("channel", "").startswith("ticker.")
    ]


def recorded_book_messages() -> list[dict]:
    return [
        frame["params"]["data"]
        for frame in recorded_frames()
        if frame.get("params", {}).get("channel", "").startswith("book.")
    ]
