"""The instrument universe asset: which BTC options capture follows.

A thin wrapper over :func:`optionstream_pipeline.discovery.discover`; it only turns the report into
metadata for the UI (counts, the added and expired instruments as markdown, the underlying price
and where it came from, ``dagster/row_count``).
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from optionstream_pipeline.discovery.filters import Listing
from optionstream_pipeline.discovery.run import DiscoveryReport, discover
from optionstream_pipeline.orchestration.resources import OptionStreamSettings

UNIVERSE_ASSET_KEY = AssetKey(["deribit", "btc_option_universe"])
TABLE_ROWS = 50


@asset(
    key=UNIVERSE_ASSET_KEY,
    group_name="discovery",
    kinds={"python", "parquet"},
    description="The BTC options the capture follows (deribit.instruments: auto): Deribit's listing "
    "(public/get_instruments) filtered by expiry window, strike band, cap, include and exclude. Writes "
    "current.json (read by the running capture within seconds) and a Parquet history of every run.",
)
def btc_option_universe(context: AssetExecutionContext, optionstream: OptionStreamSettings) -> MaterializeResult:
    report = discover(optionstream.settings(), run_id=context.run.run_id)
    change = report.change
    context.log.info(
        f"universe: {len(change.universe)} of {report.listed} listed; +{len(change.added)} added, "
        f"-{len(change.expired)} expired, -{len(change.dropped)} dropped by the filters"
    )
    return MaterializeResult(metadata=universe_metadata(report))


def universe_metadata(report: DiscoveryReport) -> dict[str, MetadataValue]:
    change = report.change
    metadata: dict[str, MetadataValue] = {
        "dagster/row_count": MetadataValue.int(len(change.universe)),
        "listed": MetadataValue.int(report.listed),
        "added_count": MetadataValue.int(len(change.added)),
        "expired_count": MetadataValue.int(len(change.expired)),
        "dropped_count": MetadataValue.int(len(change.dropped)),
        "added": MetadataValue.md(_table(change.added)),
        "expired": MetadataValue.md(_table(change.expired)),
        "filtered_out": MetadataValue.md(_reasons(report)),
        "underlying_source": MetadataValue.text(report.underlying_source),
        "duration_s": MetadataValue.float(round(report.duration_s, 3)),
    }
    if report.underlying_price is not None:
        metadata["underlying_price"] = MetadataValue.float(report.underlying_price)
    if change.history_path is not None:
        metadata["history"] = MetadataValue.path(str(change.history_path.resolve()))
    if report.missing_includes:
        metadata["included_but_not_listed"] = MetadataValue.md(", ".join(report.missing_includes))
    return metadata


def _table(listings: Sequence[Listing]) -> str:
    """A markdown table of at most TABLE_ROWS instruments, nearest expiry first."""
    if not listings:
        return "_none_"
    rows = sorted(listings, key=lambda item: (item.expiration_ms, item.strike, item.option_type))
    lines = ["| instrument | expiry (UTC) | strike | type |", "|---|---|---|---|"]
    for item in rows[:TABLE_ROWS]:
        expiry = datetime.fromtimestamp(item.expiration_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        lines.append(f"| {item.name} | {expiry} | {item.strike:g} | {item.option_type} |")
    if len(rows) > TABLE_ROWS:
        lines.append(f"\n_and {len(rows) - TABLE_ROWS} more (see the history Parquet)_")
    return "\n".join(lines)


def _reasons(report: DiscoveryReport) -> str:
    lines = [f"- {reason}: {count}" for reason, count in sorted(report.dropped.items())]
    if not report.strike_band_applied:
        lines.append("- strike band not applied: no underlying price")
    return "\n".join(lines) or "_nothing_"
