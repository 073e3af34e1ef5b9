"""Local-disk blob store (the embedded default): content-addressed by SHA-256 under one root.

Every write goes to a pending file first, is fsynced and then renamed into place, so a crash
never leaves a half-written object under a permanent key. Multipart parts are written straight
to their offset in the pending file: completing an upload moves no bytes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from yuntu.kit.background import spawn
from yuntu.storage.base import (
    PENDING_PREFIX,
    BlobStore,
    BlobWriter,
    MultipartHandle,
    ObjectMissing,
    PartInfo,
    StorageError,
    storage_error_from_os,
)

READ_CHUNK = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir_quietly(path: Path) -> None:
    # The directory went away or the disk failed: the next fsck will say so.
    with contextlib.suppress(OSError):
        _fsync_dir(path)


class LocalWriter(BlobWriter):
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.key = f"{PENDING_PREFIX}{uuid.uuid4().hex}"
        self._path = store.path_of(self.key)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        return self._fd

    async def write(self, data: bytes) -> None:
        try:
            fd = self._open()
            if len(data) >= 256 * 1024:
                await anyio.to_thread.run_sync(_write_all, fd, data)
            else:
                _write_all(fd, data)
        except OSError as exc:
            await self.abort()
            raise storage_error_from_os(exc) from exc

    async def finish(self) -> str:
        try:
            fd = self._open()
            await anyio.to_thread.run_sync(os.fsync, fd)
        except OSError as exc:
            await self.abort()
            raise storage_error_from_os(exc) from exc
        finally:
            self._close()
        return self.key

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def abort(self) -> None:
        self._close()
        self._path.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _write_part(path: Path, data: bytes, offset: int) -> None:
    # No fsync per part: completion fsyncs the whole file before any row points at it, and the
    # server re-verifies size and MD5 then, so a part lost to an OS crash fails the file loudly
    # instead of corrupting it. (A process crash loses nothing: the page cache survives it.)
    fd = os.open(path, os.O_WRONLY)
    try:
        _pwrite_all(fd, data, offset)
    finally:
        os.close(fd)


class LocalStore(BlobStore):
    kind = "local"
    # Parts are written in place, so no lower bound is forced by the disk; keep S3's rule so a
    # client written against one backend works on the other.
    min_part_size = 5 * 1024 * 1024

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.pending_dir = self.root / PENDING_PREFIX.rstrip("/")

    async def start(self) -> None:
        self.pending_dir.mkdir(parents=True, exist_ok=True)

    async def check(self) -> None:
        probe = self.pending_dir / f".health-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise storage_error_from_os(exc) from exc

    def path_of(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"unsafe key {key!r}")
        return self.root / key

    @staticmethod
    def content_key(sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def writer(self) -> LocalWriter:
        return LocalWriter(self)

    async def adopt(self, pending_key: str, sha256: str) -> str:
        key = self.content_key(sha256)
        target = self.path_of(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same content either way: replacing an existing copy is harmless and atomic.
            os.replace(self.path_of(pending_key), target)
        except OSError as exc:
            raise storage_error_from_os(exc) from exc
        # The file's bytes were fsynced before the rename. Making the rename itself durable
        # (fsync of the directory) is started here but not awaited: adoption runs inside the
        # database transaction, and SQLite in WAL mode with synchronous=NORMAL does not fsync
        # its commits either, so waiting would only hold the write lock for a disk flush.
        spawn(anyio.to_thread.run_sync(_fsync_dir_quietly, target.parent))
        return key

    async def delete(self, key: str) -> None:
        try:
            self.path_of(key).unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error_from_os(exc) from exc

    async def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    async def size(self, key: str) -> int:
        try:
            return self.path_of(key).stat().st_size
        except OSError as exc:
            raise storage_error_from_os(exc) from exc

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except OSError as exc:
            raise storage_error_from_os(exc) from exc
        async with handle:
            if start:
                await handle.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await handle.read(size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        # A few KiB (instant-upload proofs read thousands of these): a thread hop would cost more
        # than the read itself.
        try:
            with open(self.path_of(key), "rb") as handle:  # noqa: ASYNC230
                handle.seek(offset)
                return handle.read(length)
        except OSError as exc:
            raise storage_error_from_os(exc) from exc

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        def walk() -> list[str]:
            keys = []
            for directory, _dirs, files in os.walk(self.root):
                for name in files:
                    key = os.path.relpath(os.path.join(directory, name), self.root)
                    if key.startswith(prefix) and not name.startswith(".health-"):
                        keys.append(key)
            return keys

        for key in await anyio.to_thread.run_sync(walk):
            yield key

    # -- multipart: one pending file, parts written at their offsets ---------------------------
    async def multipart_create(self) -> MultipartHandle:
        key = f"{PENDING_PREFIX}{uuid.uuid4().hex}"
        try:
            os.close(os.open(self.path_of(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        except OSError as exc:
            raise storage_error_from_os(exc) from exc
        return MultipartHandle(key=key, upload_id=key)

    async def multipart_put(
        self, handle: MultipartHandle, part_number: int, offset: int, data: bytes
    ) -> str:
        path = self.path_of(handle.key)
        if not path.exists():
            raise ObjectMissing(handle.key)
        try:
            await anyio.to_thread.run_sync(_write_part, path, data, offset)
        except OSError as exc:
            raise storage_error_from_os(exc) from exc
        return f"{part_number}-{len(data)}"

    async def multipart_complete(self, handle: MultipartHandle, parts: list[PartInfo]) -> str:
        path = self.path_of(handle.key)
        total = sum(part.size for part in parts)
        try:
            # A re-sent shorter last part, or a part written past the end, must not leave stale
            # bytes behind the real end of the file.
            if path.stat().st_size != total:
                os.truncate(path, total)
            fd = os.open(path, os.O_RDONLY)
            try:
                await anyio.to_thread.run_sync(os.fsync, fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error_from_os(exc) from exc
        return handle.key

    async def multipart_abort(self, handle: MultipartHandle) -> None:
        await self.delete(handle.key)

    async def multipart_list(self, handle: MultipartHandle) -> list[PartInfo]:
        return []  # parts never bypass the app on this backend; the database lists them
