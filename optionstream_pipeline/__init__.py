"""OptionStream: Deribit BTC option order books -> Kafka -> Parquet -> DuckDB, orchestrated by Dagster.

The data path is the package layout:

- :mod:`optionstream_pipeline.capture`: the Deribit WebSocket client and capture engine.
- :mod:`optionstream_pipeline.kafka`: the producer, topic admin and the embedded broker.
- :mod:`optionstream_pipeline.consume`: rebuilding books from the live topic.
- (next: ``archive`` for Kafka partitions -> Parquet, ``query`` for DuckDB over the archive.)
- :mod:`optionstream_pipeline.discovery`: which instruments to follow.
- :mod:`optionstream_pipeline.simulator`: a Deribit-compatible server for the demo and the tests.

The Dagster layer (``definitions.py`` and friends) wires these together and is the only code that
imports Dagster.
"""

__version__ = "0.1.0"
