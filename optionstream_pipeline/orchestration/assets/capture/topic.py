"""The Kafka topic of captured books, as an external asset.

Dagster does not write the topic, the capture engine does: the asset is an ``AssetSpec`` (kind
``kafka``) whose history is the capture op's observations (counters, rates, ages, coverage).
"""

from __future__ import annotations

from dagster import AssetKey, AssetSpec

from optionstream_pipeline.orchestration.assets.discovery.universe import UNIVERSE_ASSET_KEY

TOPIC_ASSET_KEY = AssetKey(["kafka", "deribit_option_books"])

deribit_option_books = AssetSpec(
    key=TOPIC_ASSET_KEY,
    group_name="capture",
    kinds={"kafka"},
    deps=[UNIVERSE_ASSET_KEY],
    description="Deribit BTC option order books (snapshots, changes, gap and disconnect markers) in the "
    "Kafka topic kafka.topic, written continuously by the deribit_capture job. Observed every "
    "orchestration.observation_interval_s with the capture counters; see the Checks tab for health.",
    metadata={"docs": "docs/orchestration.md", "schema": "docs/message-schema.md"},
)
