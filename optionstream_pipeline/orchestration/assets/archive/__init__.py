from optionstream_pipeline.orchestration.assets.archive.asset import (
    ARCHIVE_ASSET_KEY,
    build_archive_asset,
    kafka_partitions,
)

__all__ = ["ARCHIVE_ASSET_KEY", "build_archive_asset", "kafka_partitions"]
