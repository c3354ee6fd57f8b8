"""Where a canary secret ended up: the check that no secret is ever written by the stack.

A test sets a recognizable secret in the environment (an API secret, a password), runs the stack, and
asks :func:`places_holding` for every place that holds it. Files are searched as bytes; Parquet
files (compressed, so a byte search would miss a string inside) are searched row by row and in
their footers' key-value metadata, and Kafka records by key and value.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from optionstream_pipeline.kafka.reader import TopicRecord


def places_holding(secret: str, roots: Iterable[Path], records: Iterable[TopicRecord] = ()) -> list[str]:
    """Every file at or under ``roots`` and every record that contains ``secret``, named."""
    needle = secret.encode()
    found = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            if needle in path.read_bytes():
                found.append(str(path))
            elif path.suffix == ".parquet" and _in_parquet(secret, path):
                found.append(f"{path} (decoded)")
    found += [f"record {r.partition}:{r.offset}" for r in records if needle in r.value or secret in r.key]
    return found


def _in_parquet(secret: str, path: Path) -> bool:
    parquet = pq.ParquetFile(path)
    metadata = parquet.schema_arrow.metadata or {}
    if any(secret.encode() in key or secret.encode() in value for key, value in metadata.items()):
        return True
    return any(secret in str(row) for row in parquet.read().to_pylist())
