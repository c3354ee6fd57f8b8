from optionstream_pipeline.orchestration.assets.archive.asset import (
    ARCHIVE_ASSET_KEY,
    TICKER_ARCHIVE_ASSET_KEY,
    build_archive_asset,
    kafka_partitions,
)
from optionstream_pipeline.orchestration.assets.archive.checks import build_archive_checks

__all__ = [
    "ARCHIVE_ASSET_KEY",
    "TICKER_ARCHIVE_ASSET_KEY",
    "build_archive_asset",
    "build_archive_checks",
    "kafka_partitions",
]
