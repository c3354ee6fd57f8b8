"""Assets, one sub-package per area: ``discovery`` (the instrument universe) and ``capture`` (the
Kafka topic as an external asset, with its health checks)."""

from optionstream_pipeline.orchestration.assets.capture import (
    TOPIC_ASSET_KEY,
    capture_health_checks,
    deribit_option_books,
)
from optionstream_pipeline.orchestration.assets.discovery import UNIVERSE_ASSET_KEY, btc_option_universe

__all__ = [
    "TOPIC_ASSET_KEY",
    "UNIVERSE_ASSET_KEY",
    "btc_option_universe",
    "capture_health_checks",
    "deribit_option_books",
]
