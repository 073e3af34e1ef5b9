"""What an uploaded package says about itself: the APK manifest or the IPA Info.plist.

Uploads are hostile input. Everything here reads at most a few MiB whatever the archive claims,
and anything unexpected means "not recognisable" (None: the package keeps its hashes only),
never an exception. Detection goes by content; the filename only breaks a tie.

The Android manifest is binary XML (AXML). A small reader lives here rather than pyaxmlparser:
that package pulls in lxml, click and asn1crypto, reads whole members without a size cap and
raises a wide range of errors on malformed input, while we need five attributes.
"""

from __future__ import annotations

import plistlib
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from yuntu.kit.logging import get_logger

log = get_logger("yuntu.packages")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_PLIST_BYTES = 1024 * 1024
MAX_ENTRIES = 100_000
# zipfile loads the whole central directory before we see a single name: bound it up front.
MAX_CENTRAL_DIRECTORY_BYTES = 32 * 1024 * 1024
MAX_TEXT = 512

ANDROID_MANIFEST = "AndroidManifest.xml"


@dataclass(frozen=True, slots=True)
class AppMetadata:
    kind: Literal["apk", "ipa"]
    app_id: str
    version_name: str | None
    version_code: str | None
    min_sdk: int | None
    display_name: str | None
    min_os: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_package(path: Path, filename: str | None = None) -> AppMetadata | None:
    """The package's metadata, or None when it is not a recognisable APK/IPA."""
    with path.open("rb") as fp:
        try:
            return _parse_archive(fp, filename)
        except _ZIP_ERRORS as exc:
            log.debug("package_not_recognised", error=type(exc).__name__)
            return None
        except Exception:  # a bug of ours must not fail the upload; the traceback shows it
            log.warning("package_metadata_parser_error", exc_info=True)
            return None


# How zipfile and zlib report damaged archives: bad headers, offsets past the end (seek),
# unknown compression methods, truncated streams, CRC mismatches.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)


def _parse_archive(fp: IO[bytes], filename: str | None) -> AppMetadata | None:
    if not _central_directory_fits(fp):
        return None
    with zipfile.ZipFile(fp) as archive:
        manifests: list[zipfile.ZipInfo] = []
        plists: list[zipfile.ZipInfo] = []
        for info in archive.infolist()[:MAX_ENTRIES]:
            name = info.filename
            if name == ANDROID_MANIFEST:
                manifests.append(info)
            elif name.startswith("Payload/") and name.endswith(".app/Info.plist"):
                app_dir = name.split("/")
                if len(app_dir) == 3 and len(app_dir[1]) > len(".app"):
                    plists.append(info)
        # Duplicate names are how "master key" style tricks show one parser a different file
        # than another (Android rejects them); an IPA has exactly one app under Payload/.
        kinds = [kind for kind, found in (("apk", manifests), ("ipa", plists)) if len(found) == 1]
        if len(kinds) == 2:
            hint = (filename or "").lower().rsplit(".", 1)[-1]
            kinds = [hint] if hint in kinds else []
        if kinds == ["apk"]:
            data = _read_member(archive, manifests[0], MAX_MANIFEST_BYTES)
            return None if data is None else parse_android_manifest(data)
        if kinds == ["ipa"]:
            data = _read_member(archive, plists[0], MAX_PLIST_BYTES)
            return None if data is None else parse_info_plist(data)
        return None


_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


def _central_directory_fits(fp: IO[bytes]) -> bool:
    """Finds the end-of-central-directory record the way zipfile does and checks its sizes."""
    fp.seek(0, 2)
    size = fp.tell()
    tail_len = min(size, _EOCD.size + 0xFFFF)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = len(tail) - _EOCD.size
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            return False
    fields = _EOCD.unpack_from(tail, at)
    entries, cd_size = fields[4], fields[5]
    locator_at = size - tail_len + at - _EOCD64_LOCATOR.size
    if locator_at >= _EOCD64.size:
        fp.seek(locator_at - _EOCD64.size)
        record = fp.read(_EOCD64.size + _EOCD64_LOCATOR.size)
        if record[_EOCD64.size : _EOCD64.size + 4] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            fields64 = _EOCD64.unpack_from(record)
            entries, cd_size = fields64[7], fields64[8]
    return entries <= MAX_ENTRIES and cd_size <= MAX_CENTRAL_DIRECTORY_BYTES


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    if info.file_size > cap or info.is_dir() or info.flag_bits & 0x1:
        return None
    # zipfile stops at the declared size and checks the CRC there, so a header that lies about
    # a bomb's size yields an error after at most `cap` bytes, not the bomb.
    with archive.open(info) as member:
        data = member.read(cap + 1)
    return data if len(data) <= cap else None


def _clean_text(value: object) -> str | None:
    """A string fit to store in a JSON column (PostgreSQL's jsonb refuses NUL)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or "\0" in value:
        return None
    return value


def parse_info_plist(data: bytes) -> AppMetadata | None:
    """An IPA's Payload/<App>.app/Info.plist, binary or XML."""
    try:
        plist = plistlib.loads(data)
    except Exception:  # InvalidFileException, ValueError, struct/Overflow/RecursionError...
        return None
    if not isinstance(plist, dict):
        return None
    bundle_id = _clean_text(plist.get("CFBundleIdentifier"))
    if bundle_id is None:
        return None
    return AppMetadata(
        kind="ipa",
        app_id=bundle_id,
        version_name=_clean_text(plist.get("CFBundleShortVersionString")),
        version_code=_clean_text(plist.get("CFBundleVersion")),
        min_sdk=None,
        display_name=_clean_text(plist.get("CFBundleDisplayName"))
        or _clean_text(plist.get("CFBundleName")),
        min_os=_clean_text(plist.get("MinimumOSVersion")),
    )


# Android binary XML: chunk types, value types and the framework attribute ids we read.
_CHUNK = struct.Struct("<HHL")
_RES_STRING_POOL = 0x0001
_RES_XML_START_ELEMENT = 0x0102
_RES_XML_END_ELEMENT = 0x0103
_RES_XML_RESOURCE_MAP = 0x0180
_UTF8_POOL = 0x100
_TYPE_STRING = 0x03
_TYPE_INT_DEC = 0x10
_TYPE_INT_HEX = 0x11
_ATTR_LABEL = 0x01010001
_ATTR_MIN_SDK = 0x0101020C
_ATTR_VERSION_CODE = 0x0101021B
_ATTR_VERSION_NAME = 0x0101021C
_ATTR_VERSION_CODE_MAJOR = 0x01010576
_ATTR_BY_NAME = {
    "label": _ATTR_LABEL,
    "minSdkVersion": _ATTR_MIN_SDK,
    "versionCode": _ATTR_VERSION_CODE,
    "versionName": _ATTR_VERSION_NAME,
    "versionCodeMajor": _ATTR_VERSION_CODE_MAJOR,
}

_Value = tuple[int, int]  # (data type, data)


class _Malformed(Exception):
    pass


class _StringPool:
    def __init__(self, data: bytes, start: int, header_size: int, size: int) -> None:
        if header_size < 28:
            raise _Malformed("string pool header")
        count, styles, flags, strings_start, styles_start = struct.unpack_from(
            "<5L", data, start + 8
        )
        end = start + size
        self._data = data
        self._offsets_at = start + header_size
        if count > (end - self._offsets_at) // 4:
            raise _Malformed("string count")
        self._count = count
        self._utf8 = bool(flags & _UTF8_POOL)
        self._start = start + strings_start
        self._end = start + styles_start if styles and styles_start else end
        if count and not (self._offsets_at <= self._start <= self._end <= end):
            raise _Malformed("string pool bounds")
        self._cache: dict[int, str | None] = {}

    def get(self, index: int) -> str | None:
        """The string, or None for an index or bytes that do not make one (never raises)."""
        if index >= self._count:
            return None
        if index not in self._cache:
            try:
                self._cache[index] = self._decode(index)
            except (IndexError, struct.error, UnicodeDecodeError):
                self._cache[index] = None
        return self._cache[index]

    def _decode(self, index: int) -> str | None:
        data = self._data
        (offset,) = struct.unpack_from("<L", data, self._offsets_at + 4 * index)
        pos = self._start + offset
        if self._utf8:
            pos = self._utf8_length(pos)[1]  # the length in UTF-16 units: not needed
            length, pos = self._utf8_length(pos)
            raw = data[pos : pos + length]
        else:
            (length,) = struct.unpack_from("<H", data, pos)
            pos += 2
            if length & 0x8000:
                (low,) = struct.unpack_from("<H", data, pos)
                length, pos = ((length & 0x7FFF) << 16) | low, pos + 2
            raw = data[pos : pos + 2 * length]
        if pos + len(raw) > self._end or len(raw) < (length if self._utf8 else 2 * length):
            return None
        return raw.decode("utf-8" if self._utf8 else "utf-16-le")

    def _utf8_length(self, pos: int) -> tuple[int, int]:
        first = self._data[pos]
        if first & 0x80:
            return ((first & 0x7F) << 8) | self._data[pos + 1], pos + 2
        return first, pos + 1


def _attributes(
    data: bytes, pos: int, end: int, pool: _StringPool, res_ids: bytes
) -> dict[int | str, _Value]:
    """Attributes keyed by framework resource id, or by name when they have none."""
    ext_at = pos + _CHUNK.unpack_from(data, pos)[1]
    _, _, first, stride, count = struct.unpack_from("<LLHHH", data, ext_at)
    first += ext_at
    if stride < 20 or first + count * stride > end:
        raise _Malformed("attribute bounds")
    found: dict[int | str, _Value] = {}
    for at in range(first, first + count * stride, stride):
        _, name, _, _, _, kind, value = struct.unpack_from("<LLLHBBL", data, at)
        # Obfuscators blank the names; Android itself goes by the resource id when there is one.
        res_id = int.from_bytes(res_ids[4 * name : 4 * name + 4], "little")
        key: int | str | None = res_id or pool.get(name)
        if isinstance(key, str):
            key = _ATTR_BY_NAME.get(key, key)
        if key is not None and key not in found:
            found[key] = (kind, value)
    return found


def _read_axml(data: bytes) -> tuple[_StringPool, dict[str, dict[int | str, _Value]]]:
    """The string pool, and the attributes of <manifest> and of its <uses-sdk> and
    <application> children, by element name."""
    # Android checks the sizes but not the type of this first chunk, and obfuscators change
    # it to throw off analysers: follow Android, so whatever installs is read.
    _, header_size, size = _CHUNK.unpack_from(data, 0)
    if header_size < 8 or not header_size <= size <= len(data):
        raise _Malformed("not binary XML")
    pool: _StringPool | None = None
    res_ids = b""
    wanted: dict[str, dict[int | str, _Value]] = {}
    depth, pos = 0, header_size
    while pos + 8 <= size:
        kind, header_size, chunk_size = _CHUNK.unpack_from(data, pos)
        end = pos + chunk_size
        if header_size < 8 or chunk_size < header_size or end > size:
            raise _Malformed("chunk bounds")
        if kind == _RES_STRING_POOL and pool is None:
            pool = _StringPool(data, pos, header_size, chunk_size)
        elif kind == _RES_XML_RESOURCE_MAP and not res_ids:
            res_ids = data[pos + header_size : end]
        elif kind == _RES_XML_START_ELEMENT:
            if pool is None or chunk_size < header_size + 20:
                raise _Malformed("element before string pool")
            depth += 1
            (name_index,) = struct.unpack_from("<L", data, pos + header_size + 4)
            name = pool.get(name_index)
            if depth == 1 and name != "manifest":
                raise _Malformed("root is not <manifest>")
            if depth <= 2 and name in ("manifest", "uses-sdk", "application"):
                wanted.setdefault(name, _attributes(data, pos, end, pool, res_ids))
        elif kind == _RES_XML_END_ELEMENT:
            depth -= 1
            if depth <= 0:
                break  # the root closed: nothing after it belongs to the manifest
        pos = end
    if pool is None or "manifest" not in wanted:
        raise _Malformed("no <manifest>")
    return pool, wanted


def parse_android_manifest(data: bytes) -> AppMetadata | None:
    """An APK's AndroidManifest.xml in Android binary XML."""
    try:
        pool, elements = _read_axml(data)
    except (_Malformed, struct.error, IndexError):
        return None
    manifest = elements["manifest"]
    uses_sdk = elements.get("uses-sdk", {})
    application = elements.get("application", {})

    def text(value: _Value | None) -> str | None:
        if value is None:
            return None
        kind, raw = value
        # References (@string/...) would need resources.arsc: not worth a resource table parser.
        if kind == _TYPE_STRING:
            return _clean_text(pool.get(raw))
        return str(raw) if kind in (_TYPE_INT_DEC, _TYPE_INT_HEX) else None

    def number(value: _Value | None) -> int | None:
        if value is not None and value[0] in (_TYPE_INT_DEC, _TYPE_INT_HEX):
            return value[1]
        digits = text(value) or ""
        return (
            int(digits) if 0 < len(digits) <= 10 and digits.isascii() and digits.isdigit() else None
        )

    raw_package = manifest.get("package")
    package = text(raw_package) if raw_package and raw_package[0] == _TYPE_STRING else None
    if package is None:
        return None
    code = number(manifest.get(_ATTR_VERSION_CODE))
    major = number(manifest.get(_ATTR_VERSION_CODE_MAJOR))
    if code is not None and major:
        code = (major << 32) | (code & 0xFFFFFFFF)  # PackageInfo.getLongVersionCode()
    label = application.get(_ATTR_LABEL)
    return AppMetadata(
        kind="apk",
        app_id=package,
        version_name=text(manifest.get(_ATTR_VERSION_NAME)),
        version_code=None if code is None else str(code),
        min_sdk=number(uses_sdk.get(_ATTR_MIN_SDK)),
        display_name=text(label) if label and label[0] == _TYPE_STRING else None,
    )
