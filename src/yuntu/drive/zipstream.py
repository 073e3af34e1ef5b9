"""A streaming store-only ZIP64 writer over blobs (archive.py decides what goes in).

Why our own writer rather than stream-zip: stream-zip's `NO_COMPRESSION_64` mode buffers each
whole member in memory to learn its CRC-32 before writing the local header (its streamed variant
needs the CRC up front, which we do not store), and its async API runs the generator on threads.
Store-only ZIP64 is a small format, so this module writes it directly: each member is a local
header with the data-descriptor flag (CRC and sizes follow the data), the bytes as the store
yields them (CRC-32 by zlib over large chunks), a ZIP64 data descriptor; then the central
directory, the ZIP64 end record, its locator and the classic end record. Nothing is buffered
beyond one store chunk, and since the sizes are known in advance the archive's exact length is
too, so responses carry a Content-Length.

Every archive is ZIP64 (readers handle it; it lifts the 4 GiB and 65,535-entry limits). Names
are UTF-8 (flag bit 11); each member carries an extended-timestamp field with its exact mtime.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from yuntu.drive.paths import first_free
from yuntu.storage.base import BlobStore

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_ZIP64_LOCAL_EXTRA = struct.Struct("<HHQQ")
_ZIP64_CENTRAL_EXTRA = struct.Struct("<HHQQQ")
_TIME_EXTRA = struct.Struct("<HHBI")

_VERSION_NEEDED = 45  # 4.5: ZIP64
_VERSION_MADE_BY = (3 << 8) | 45  # Unix, so external attributes carry the file mode
_FLAGS = 0x0808  # bit 3: data descriptor; bit 11: UTF-8 names
_MAX32 = 0xFFFFFFFF
_MAX16 = 0xFFFF
_FILE_MODE = 0o100644
_FLUSH_AT = 256 * 1024  # headers of small files are coalesced up to this before a write
_SMALL = 256 * 1024  # members below this are read in one call

LOCAL_OVERHEAD = _LOCAL.size + _ZIP64_LOCAL_EXTRA.size + _TIME_EXTRA.size + _DESCRIPTOR.size
CENTRAL_OVERHEAD = _CENTRAL.size + _ZIP64_CENTRAL_EXTRA.size + _TIME_EXTRA.size
END_OVERHEAD = _ZIP64_END.size + _ZIP64_LOCATOR.size + _END.size


class ArchiveError(Exception):
    """A member's stored bytes did not match its recorded size: the stream is aborted rather
    than finished as a wrong archive."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # the path inside the archive, `/`-separated
    size: int
    storage_key: str
    modified: datetime


def archive_size(members: Iterable[Member]) -> int:
    total = END_OVERHEAD
    for member in members:
        name = len(member.name.encode())
        total += LOCAL_OVERHEAD + CENTRAL_OVERHEAD + 2 * name + member.size
    return total


def _dos_time(value: datetime) -> tuple[int, int]:
    value = value.astimezone(UTC)
    if value.year < 1980:
        return 0, (1 << 5) | 1
    if value.year > 2107:
        return (23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31
    return (
        (value.hour << 11) | (value.minute << 5) | (value.second // 2),
        ((value.year - 1980) << 9) | (value.month << 5) | value.day,
    )


def _unix_time(value: datetime) -> int:
    return max(0, min(int(value.timestamp()), 0x7FFFFFFF))


def member_name(raw: str) -> str:
    """A safe relative archive path: no leading `/`, no empty, `.` or `..` segments, `/` only."""
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "file"


def unique_names(names: Iterable[str]) -> list[str]:
    """Archive paths made unique (`a.txt`, `a (1).txt`), order kept."""
    taken: set[str] = set()
    out = []
    for name in names:
        if name in taken:
            folder, _, base = name.rpartition("/")
            siblings = {t.rpartition("/")[2] for t in taken if t.rpartition("/")[0] == folder}
            base = first_free(base, siblings, is_file=True)
            name = f"{folder}/{base}" if folder else base
        taken.add(name)
        out.append(name)
    return out


class _Central:
    __slots__ = ("crc", "mtime", "name", "offset", "size", "time_date")

    def __init__(self, name: bytes, offset: int, time_date: tuple[int, int], mtime: int) -> None:
        self.name = name
        self.offset = offset
        self.time_date = time_date
        self.mtime = mtime
        self.crc = 0
        self.size = 0


def _local_header(entry: _Central) -> bytes:
    dos_time, dos_date = entry.time_date
    extra = _ZIP64_LOCAL_EXTRA.pack(0x0001, 16, 0, 0) + _TIME_EXTRA.pack(0x5455, 5, 1, entry.mtime)
    head = _LOCAL.pack(
        0x04034B50,
        _VERSION_NEEDED,
        _FLAGS,
        0,  # stored
        dos_time,
        dos_date,
        0,
        _MAX32,
        _MAX32,
        len(entry.name),
        len(extra),
    )
    return head + entry.name + extra


def _central_record(entry: _Central) -> bytes:
    dos_time, dos_date = entry.time_date
    extra = _ZIP64_CENTRAL_EXTRA.pack(
        0x0001, 24, entry.size, entry.size, entry.offset
    ) + _TIME_EXTRA.pack(0x5455, 5, 1, entry.mtime)
    head = _CENTRAL.pack(
        0x02014B50,
        _VERSION_MADE_BY,
        _VERSION_NEEDED,
        _FLAGS,
        0,
        dos_time,
        dos_date,
        entry.crc,
        _MAX32,
        _MAX32,
        len(entry.name),
        len(extra),
        0,  # comment
        0,  # disk
        0,  # internal attributes
        _FILE_MODE << 16,
        _MAX32,
    )
    return head + entry.name + extra


def _end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    zip64_end_offset = cd_offset + cd_size
    return (
        _ZIP64_END.pack(
            0x06064B50,
            44,
            _VERSION_MADE_BY,
            _VERSION_NEEDED,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        + _ZIP64_LOCATOR.pack(0x07064B50, 0, zip64_end_offset, 1)
        + _END.pack(
            0x06054B50,
            0,
            0,
            min(count, _MAX16),
            min(count, _MAX16),
            min(cd_size, _MAX32),
            min(cd_offset, _MAX32),
            0,
        )
    )


async def _member_bytes(store: BlobStore, member: Member) -> AsyncIterator[bytes]:
    """Small members in one read (`read_range`: on local disk an inline read, no thread hop per
    chunk; thousands of small files are the common slow case), larger ones streamed. One byte
    more than recorded is asked for, so a longer object is detected too."""
    if member.size < _SMALL:
        yield await store.read_range(member.storage_key, 0, member.size + 1)
        return
    async for chunk in store.read(member.storage_key):
        yield chunk


async def zip_stream(
    members: list[Member],
    store: BlobStore,
    *,
    on_member: Callable[[int, int], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The archive's bytes. `on_member(index, bytes_so_far)` runs before each member (progress,
    cancellation checkpoints)."""
    offset = 0
    pending: list[bytes] = []
    pending_size = 0
    entries: list[_Central] = []
    for index, member in enumerate(members):
        if on_member is not None:
            await on_member(index, offset)
        entry = _Central(
            member.name.encode(), offset, _dos_time(member.modified), _unix_time(member.modified)
        )
        entries.append(entry)
        header = _local_header(entry)
        pending.append(header)
        pending_size += len(header)
        offset += len(header)
        crc = 0
        size = 0
        async for chunk in _member_bytes(store, member):
            if not chunk:
                continue
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            if len(chunk) >= _FLUSH_AT // 4:
                if pending:
                    yield b"".join(pending)
                    pending, pending_size = [], 0
                yield chunk
            else:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _FLUSH_AT:
                    yield b"".join(pending)
                    pending, pending_size = [], 0
        if size != member.size:
            raise ArchiveError(f"{member.name}: stored {size} bytes, expected {member.size}")
        entry.crc, entry.size = crc, size
        offset += size
        descriptor = _DESCRIPTOR.pack(0x08074B50, crc, size, size)
        pending.append(descriptor)
        pending_size += len(descriptor)
        offset += len(descriptor)
        if pending_size >= _FLUSH_AT:
            yield b"".join(pending)
            pending, pending_size = [], 0
    cd_offset = offset
    cd_size = 0
    for entry in entries:
        record = _central_record(entry)
        pending.append(record)
        cd_size += len(record)
        pending_size += len(record)
        if pending_size >= _FLUSH_AT:
            yield b"".join(pending)
            pending, pending_size = [], 0
    pending.append(_end_records(len(entries), cd_offset, cd_size))
    yield b"".join(pending)
