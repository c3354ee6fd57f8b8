"""A real S3-compatible server on loopback for the tests: moto's server (``moto[server]``), one bucket.

The product reaches it the way it reaches AWS: credentials and endpoint from the standard AWS
environment variables (:data:`ObjectStore.env`), nothing else configured.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from optionstream_pipeline_tests.support.waiting import wait_until

ACCESS_KEY = "optionstream-test-key"
SECRET_KEY = "optionstream-test-secret-4f1d"  # what a test may grep for: it must never be written anywhere


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def location(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@contextmanager
def object_store() -> Iterator[ObjectStore]:
    """Start moto's server on a free port, make a bucket, and set the AWS variables in this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(endpoint), 30, 0.1, "moto's S3 server answering")
        store = ObjectStore(endpoint, f"archive-{uuid.uuid4().hex[:8]}")
        saved = {key: os.environ.get(key) for key in store.env}
        os.environ.update(store.env)
        try:
            import s3fs

            s3fs.S3FileSystem().mkdir(store.bucket)
            yield store
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        server.terminate()
        server.wait(10)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except OSError:
        return False
