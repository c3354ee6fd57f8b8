"""Where the archive's bytes live: a local directory or an S3-compatible bucket, behind one seam.

The archive's exactly-once rules (:mod:`optionstream_pipeline.archive.store`) rest on three
properties of its storage; each backend has them its own way:

1. **A file appears whole or not at all.** Local: written under a temporary name in its final
   directory, flushed (``fsync``), renamed into place, the directory flushed. Object storage has no
   rename and needs none: an object becomes visible only when its upload completes (one ``PUT``, or
   a multipart upload's ``CompleteMultipartUpload``), so a writer killed mid-upload leaves no object
   (only parts of an unfinished upload, which a bucket's ``AbortIncompleteMultipartUpload``
   lifecycle rule reclaims). File names are deterministic, so a rerun that writes a file again
   writes the same bytes under the same name.
2. **The names are the bookkeeping.** Listing shows exactly the files in place (S3 listings are
   strongly consistent after a write or a delete).
3. **One writer per partition.** Local: ``flock`` on a lock file, released by the kernel when the
   holder dies. Object storage: a **lease**, an object created with a conditional ``PUT``
   (``If-None-Match: *``: of two runs, one wins), renewed every third of its term with
   ``If-Match`` on its ETag; a lease past its term may be taken over, again with ``If-Match``, so
   that of two takers one wins. A holder that cannot renew stops writing before its term could
   have run out (every write checks the lease first): a run that stalls cannot write beside the run
   that took over. A holder that was killed delays the next run by at most one term
   (``archive.lease_s``).

Object storage is reached through ``s3fs`` (fsspec), wrapped in pyarrow's filesystem layer for
Parquet and registered with DuckDB for queries (DuckDB's own S3 extension would be downloaded at
run time). Credentials and the endpoint come only from the environment, the way every AWS client
reads them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible server), or an instance role.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow.fs as pafs

from optionstream_pipeline import pidlock

OBJECT_SCHEMES = ("s3://",)
DEFAULT_LEASE_S = 60.0


class LockHeld(RuntimeError):
    """Another run holds the lock; ``holder`` names it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class LeaseLost(RuntimeError):
    """This run's lease ran out or was taken over: it must not write."""


class Storage(Protocol):
    """The operations the archive makes on its files; paths are relative to the archive's root."""

    location: str  # the root, for messages and metadata: a directory or s3://bucket/prefix
    arrow: pafs.FileSystem  # for pyarrow.parquet, with :meth:`arrow_path`

    def uri(self, path: str) -> str:
        """Where DuckDB (with :meth:`register`) finds ``path``."""
        ...

    def arrow_path(self, path: str) -> str: ...

    def list(self, top: str) -> list[str]:
        """Every file under the directory ``top``, as relative paths, sorted."""
        ...

    def read_bytes(self, path: str) -> bytes: ...

    def put(self, path: str, data: bytes, crash: Callable[[str], None] | None = None) -> None:
        """Put ``data`` at ``path`` atomically; ``crash`` is called with the crash points it passes."""
        ...

    def remove(self, path: str) -> None:
        """Remove ``path`` if it is there."""
        ...

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the exclusive lock ``name`` for the block; raises :class:`LockHeld` when another holds it."""
        ...

    def register(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Let ``connection`` read :meth:`uri` locations."""
        ...


def is_object_store(location: str | Path) -> bool:
    return str(location).startswith(OBJECT_SCHEMES)


def storage_for(location: str | Path, lease_s: float = DEFAULT_LEASE_S) -> Storage:
    """The storage at ``location``: ``s3://bucket/prefix`` or a local directory."""
    if is_object_store(location):
        return ObjectStorage(str(location), lease_s)
    return LocalStorage(Path(location))


# -- local -------------------------------------------------------------------------------------------


class LocalStorage:
    """A directory on a local (or mounted) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.location = str(self.root)
        self.arrow = pafs.LocalFileSystem()

    def uri(self, path: str) -> str:
        return str(self.root / path)

    def arrow_path(self, path: str) -> str:
        return str(self.root / path)

    def list(self, top: str) -> list[str]:
        base = self.root / top
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def put(self, path: str, data: bytes, crash: Callable[[str], None] | None = None) -> None:
        from optionstream_pipeline.archive.faults import AFTER_RENAME, MID_WRITE
        from optionstream_pipeline.archive.layout import temporary_path

        final, temporary = self.root / path, self.root / temporary_path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "wb") as handle:
                handle.write(data[: len(data) // 2])
                if crash:
                    crash(MID_WRITE)
                handle.write(data[len(data) // 2 :])
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            if crash:
                crash(AFTER_RENAME)
            _fsync_directory(final.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / path).unlink()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = pidlock.hold(path)
        except pidlock.LockHeld as held:
            raise LockHeld(f"pid {held.holder}") from None
        with handle:  # closing it releases the lock
            yield

    def register(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Local files need nothing."""


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- object storage ------------------------------------------------------------------------------------


class ObjectStorage:
    """A prefix of an S3-compatible bucket (``s3://bucket/prefix``), through s3fs."""

    def __init__(self, location: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        try:
            import s3fs  # only archives on object storage need it
        except ImportError:
            raise ImportError(
                f"archive.path {location} is on object storage, which needs s3fs: pip install 'optionstream[s3]'"
            ) from None

        self.location = location.rstrip("/")
        self._key_root = self.location.removeprefix("s3://")
        self.bucket = self._key_root.split("/", 1)[0]
        self.lease_s = lease_s
        self.fs = s3fs.S3FileSystem()  # credentials and endpoint from the environment, as for any AWS client
        self.arrow = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        self._leases: list[_Lease] = []

    def _key(self, path: str) -> str:
        return f"{self._key_root}/{path}"

    def uri(self, path: str) -> str:
        return f"s3://{self._key(path)}"

    def arrow_path(self, path: str) -> str:
        return self._key(path)

    def list(self, top: str) -> list[str]:
        prefix = self._key(top)
        try:
            found = self.fs.find(prefix, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(key.removeprefix(self._key_root + "/") for key in found)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(self._key(path))

    def put(self, path: str, data: bytes, crash: Callable[[str], None] | None = None) -> None:
        from optionstream_pipeline.archive.faults import AFTER_RENAME, MID_WRITE

        for lease in self._leases:
            lease.check()
        if crash:
            crash(MID_WRITE)  # the bytes made, nothing uploaded: no object
        self.fs.pipe_file(self._key(path), data)  # one PUT (multipart when large): visible only once complete
        self.fs.invalidate_cache()
        if crash:
            crash(AFTER_RENAME)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._key(path))
        self.fs.invalidate_cache()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        lease = _Lease(self.fs, self.bucket, self._key(name).split("/", 1)[1], self.lease_s)
        lease.take()
        self._leases.append(lease)
        try:
            yield
        finally:
            self._leases.remove(lease)
            lease.release()

    def register(self, connection: duckdb.DuckDBPyConnection) -> None:
        connection.register_filesystem(self.fs)


class _Lease:
    """An exclusive, renewed lease on one object (the module's docstring, point 3)."""

    def __init__(self, fs: Any, bucket: str, key: str, term_s: float) -> None:
        self.fs, self.bucket, self.key, self.term_s = fs, bucket, key, term_s
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self._etag: str | None = None
        self._valid_until = 0.0  # monotonic: past it, this run must not write
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost: str | None = None

    def take(self) -> None:
        began = time.monotonic()
        try:
            self._etag = self._put(IfNoneMatch="*")
        except OSError:  # it exists: ours only if its term is over
            current, etag = self._current()
            if current is not None and current.get("expires", 0) > time.time():
                left = current["expires"] - time.time()
                raise LockHeld(f"{current.get('holder', '?')}, lease renewed until {left:.0f} s from now") from None
            try:
                self._etag = self._put(IfMatch=etag) if etag else self._put(IfNoneMatch="*")
            except OSError:
                raise LockHeld("another run that took the lease over at the same moment") from None
        self._valid_until = began + self.term_s * 2 / 3
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.key}", daemon=True)
        self._renewer.start()

    def check(self) -> None:
        if self._lost is not None:
            raise LeaseLost(f"s3://{self.bucket}/{self.key}: {self._lost}")
        if time.monotonic() > self._valid_until:
            raise LeaseLost(f"s3://{self.bucket}/{self.key}: not renewed in time; another run may hold it now")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._lost is None and self._etag is not None:
            with contextlib.suppress(OSError):  # lost meanwhile: it is another run's now
                self._call("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self._etag)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.term_s / 3):
            began = time.monotonic()
            try:
                self._etag = self._put(IfMatch=self._etag)
            except OSError as exc:
                if "pre-condition" in str(exc) or "Precondition" in str(exc):
                    self._lost = "taken over by another run"
                    return
                continue  # the store is unreachable for now: if it stays so, the lease's deadline stops the writes
            self._valid_until = began + self.term_s * 2 / 3

    def _put(self, **condition: str) -> str:
        body = json.dumps({"holder": self.holder, "expires": time.time() + self.term_s}).encode()
        return self._call("put_object", Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]

    def _current(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            answer = self._call("get_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None, None
        body = self._sync(answer["Body"].read)
        try:
            return json.loads(body), answer["ETag"]
        except ValueError:
            return {}, answer["ETag"]

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self._sync(self.fs._call_s3, method, **kwargs)

    def _sync(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, function, *args, **kwargs)
