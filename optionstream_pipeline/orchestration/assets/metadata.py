"""Plain values -> Dagster metadata, one rule for observations and check results alike."""

from __future__ import annotations

from typing import Protocol

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue


class Verdict(Protocol):
    """What a pure rule decides (the capture health rules', the archive audits')."""

    passed: bool
    description: str
    values: dict[str, int | float | str]


def metadata_value(value: int | float | str | bool) -> MetadataValue:
    """Numbers stay numbers (so the UI plots them); text and flags are shown as text."""
    if isinstance(value, bool | str):
        return MetadataValue.text(str(value))
    return MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))


def check_result(verdict: Verdict, severity: AssetCheckSeverity) -> AssetCheckResult:
    """A rule's verdict as an asset check result: its description first, then its figures."""
    metadata = {"summary": MetadataValue.text(verdict.description)}
    metadata.update({key: metadata_value(value) for key, value in verdict.values.items()})
    return AssetCheckResult(
        passed=verdict.passed, severity=severity, description=verdict.description, metadata=metadata
    )
