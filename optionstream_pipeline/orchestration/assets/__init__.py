"""Assets, one sub-package per area: ``discovery`` (the instrument universe), ``capture`` (the Kafka
topic as an external asset, with its health checks) and ``archive`` (the topic in Parquet, with
its audits)."""

from optionstream_pipeline.orchestration.assets.archive import (
    ARCHIVE_ASSET_KEY,
    TICKER_ARCHIVE_ASSET_KEY,
    build_archive_asset,
    build_archive_checks,
)
from optionstream_pipeline.orchestration.assets.capture import (
    TOPIC_ASSET_KEY,
    capture_health_checks,
    deribit_option_books,
)
from optionstream_pipeline.orchestration.assets.discovery import UNIVERSE_ASSET_KEY, btc_option_universe

__all__ = [
    "ARCHIVE_ASSET_KEY",
    "TICKER_ARCHIVE_ASSET_KEY",
    "TOPIC_ASSET_KEY",
    "UNIVERSE_ASSET_KEY",
    "btc_option_universe",
    "build_archive_asset",
    "build_archive_checks",
    "capture_health_checks",
    "deribit_option_books",
]
