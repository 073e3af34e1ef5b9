"""The BlobStore interface: where bytes live. Rows (blobs, files) live in the database; a store
only knows keys. Two backends: local disk (embedded default) and S3-compatible storage.

Life of an object:
- A writer (or a multipart upload) produces a *pending* key that no row points at yet.
- `adopt(pending, sha256)` turns it into the key a blob row records (the local backend renames it
  into its content-addressed place; S3 keeps the key).
- `delete(key)` removes it; deleting a missing key is not an error.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

# The first part of every pending key: fsck and the cleanup job can tell unfinished writes apart.
PENDING_PREFIX = "pending/"


class StorageError(Exception):
    """The storage backend failed (unreachable, refused, corrupt answer)."""


class StorageFull(StorageError):
    """No space left (ENOSPC, EDQUOT, EFBIG on the local disk)."""


class ObjectMissing(StorageError):
    """The key does not exist in the store."""


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_error_from_os(exc: OSError) -> StorageError:
    if exc.errno in FULL_ERRNOS:
        return StorageFull(str(exc))
    if exc.errno == errno.ENOENT:
        return ObjectMissing(str(exc))
    return StorageError(str(exc))


@dataclass(frozen=True, slots=True)
class MultipartHandle:
    """A multipart upload in the store: `key` is the pending key it completes into; `upload_id`
    is the backend's own id (S3 UploadId; the local backend reuses the key)."""

    key: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class PartInfo:
    part_number: int
    size: int
    etag: str


class BlobWriter(ABC):
    """Streams one object into a pending key. `finish()` returns that key; `abort()` removes
    whatever was written."""

    key: str

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def finish(self) -> str: ...

    @abstractmethod
    async def abort(self) -> None: ...


class BlobStore(ABC):
    kind: str  # "local" or "s3"
    # Smallest part a multipart upload may use except for its last part (S3: 5 MiB).
    min_part_size: int = 5 * 1024 * 1024
    # True when clients can PUT parts straight to storage with presigned URLs.
    supports_presigned_parts: bool = False

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Open clients, create directories or check the bucket."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release clients."""

    @abstractmethod
    async def check(self) -> None:
        """Health probe: raise StorageError when the store cannot be used."""

    # -- whole objects -------------------------------------------------------------------------
    @abstractmethod
    def writer(self) -> BlobWriter: ...

    @abstractmethod
    async def adopt(self, pending_key: str, sha256: str) -> str:
        """Make a finished pending object permanent; returns the key to record."""

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def size(self, key: str) -> int:
        """Size in bytes; raises ObjectMissing."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) (end None: to the end of the object)."""

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        chunks = [chunk async for chunk in self.read(key, offset, offset + length)]
        return b"".join(chunks)

    @abstractmethod
    def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key under `prefix` (fsck looks for objects no row points at)."""

    # -- multipart uploads ---------------------------------------------------------------------
    @abstractmethod
    async def multipart_create(self) -> MultipartHandle: ...

    @abstractmethod
    async def multipart_put(
        self, handle: MultipartHandle, part_number: int, offset: int, data: bytes
    ) -> str:
        """Store one part (replacing an earlier copy of it); returns its ETag. `offset` is where
        the part starts in the final object (the local backend writes it there directly)."""

    @abstractmethod
    async def multipart_complete(self, handle: MultipartHandle, parts: list[PartInfo]) -> str:
        """Assemble the parts in order; returns the pending key of the whole object."""

    @abstractmethod
    async def multipart_abort(self, handle: MultipartHandle) -> None: ...

    async def multipart_list(self, handle: MultipartHandle) -> list[PartInfo]:
        """Parts the store holds (for parts clients sent straight to storage)."""
        raise NotImplementedError

    async def presign_part(
        self, handle: MultipartHandle, part_number: int, expires_seconds: int
    ) -> str | None:
        """A URL the client may PUT one part to, or None when the backend cannot."""
        return None

    async def presign_get(
        self, key: str, *, filename: str, content_type: str, expires_seconds: int
    ) -> str | None:
        """A signed URL that serves the object directly, or None (the app then signs its own
        download URL and streams the bytes itself)."""
        return None
