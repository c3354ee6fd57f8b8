"""The archive: Kafka partitions -> Parquet, exactly once (plain Python, no Dagster).

- :mod:`.schema`: the table (one row per price-level update) and how a record becomes rows.
- :mod:`.layout`: file paths and names, the archive's only bookkeeping.
- :mod:`.progress`: where to go on, from the archive's last record and what Kafka holds (pure).
- :mod:`.store`: atomic writes, the files of a partition, one writer per partition.
- :mod:`.partition`: one partition, from where the archive ended to the end of the partition.
- :mod:`.run`, :mod:`.cli`: the whole topic; ``optionstream archive``.
"""
