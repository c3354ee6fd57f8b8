"""Capture: Deribit's WebSocket -> book records -> the Kafka producer.

The pure core (:mod:`.protocol`, :mod:`.subscriptions`, :mod:`.frames`) and the I/O shells around
it (:mod:`.transport`, :mod:`.connection`), the engine that runs the shards (:mod:`.engine`), where
its instruments come from (:mod:`.universe`), its counters and their views (:mod:`.stats`,
:mod:`.metrics`), and ``optionstream capture`` (:mod:`.cli`).
"""
