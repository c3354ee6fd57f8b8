"""Plain values -> Dagster metadata, one rule for observations and check results alike."""

from __future__ import annotations

from dagster import MetadataValue


def metadata_value(value: int | float | str | bool) -> MetadataValue:
    """Numbers stay numbers (so the UI plots them); text and flags are shown as text."""
    if isinstance(value, bool | str):
        return MetadataValue.text(str(value))
    return MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))
