"""Small, deterministic APK and IPA fixtures built from scratch.

The APK manifest is real Android binary XML laid out as aapt2 writes it (string pool with the
resource-id names first, resource map, namespace, elements with typed attribute values), so
any AXML parser reads it, not just ours.
"""

from __future__ import annotations

import plistlib
import struct
import zipfile
from pathlib import Path

ANDROID_NS = "http://schemas.android.com/apk/res/android"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)

TYPE_REFERENCE = 0x01
TYPE_STRING = 0x03
TYPE_INT_DEC = 0x10
TYPE_INT_BOOLEAN = 0x12
NO_INDEX = 0xFFFFFFFF

# (name, framework resource id or None for plain attributes, value type, value)
Attr = tuple[str, int | None, int, int | str]
# (element name, attributes, children)
Element = tuple[str, list[Attr], list["Element"]]


def android_manifest(
    *,
    package: str,
    version_name: str,
    version_code: int,
    min_sdk: int | None = 21,
    label: str | None = "Demo",
    utf8_strings: bool = False,
) -> bytes:
    """AndroidManifest.xml as aapt2 compiles it."""
    manifest_attrs: list[Attr] = [
        ("versionCode", 0x0101021B, TYPE_INT_DEC, version_code),
        ("versionName", 0x0101021C, TYPE_STRING, version_name),
        ("package", None, TYPE_STRING, package),
        ("platformBuildVersionCode", None, TYPE_INT_DEC, 34),
        ("platformBuildVersionName", None, TYPE_STRING, "14"),
    ]
    children: list[Element] = []
    if min_sdk is not None:
        sdk_attrs: list[Attr] = [
            ("minSdkVersion", 0x0101020C, TYPE_INT_DEC, min_sdk),
            ("targetSdkVersion", 0x01010270, TYPE_INT_DEC, 34),
        ]
        children.append(("uses-sdk", sdk_attrs, []))
    # A reference that needs no resources.arsc to pass `aapt dump badging` (an icon would).
    app_attrs: list[Attr] = [("theme", 0x01010000, TYPE_REFERENCE, 0x7F0F0001)]
    if label is not None:
        app_attrs.insert(0, ("label", 0x01010001, TYPE_STRING, label))
    app_attrs.append(("debuggable", 0x0101000F, TYPE_INT_BOOLEAN, NO_INDEX))
    activity_attrs: list[Attr] = [
        ("name", 0x01010003, TYPE_STRING, f"{package}.MainActivity"),
        ("exported", 0x01010010, TYPE_INT_BOOLEAN, NO_INDEX),
    ]
    children.append(("application", app_attrs, [("activity", activity_attrs, [])]))
    return encode_axml(("manifest", manifest_attrs, children), utf8_strings=utf8_strings)


def encode_axml(root: Element, *, utf8_strings: bool = False) -> bytes:
    """Android binary XML for one element tree in the android namespace."""
    with_ids: dict[str, int] = {}
    others: list[str] = ["android", ANDROID_NS]

    def collect(element: Element) -> None:
        name, attrs, children = element
        others.append(name)
        for attr_name, res_id, kind, value in attrs:
            if res_id is None:
                others.append(attr_name)
            else:
                with_ids[attr_name] = res_id
            if kind == TYPE_STRING:
                others.append(str(value))
        for child in children:
            collect(child)

    collect(root)
    # The resource map covers the first strings of the pool, so names with ids go first.
    strings = sorted(with_ids, key=with_ids.__getitem__)
    strings += [s for s in dict.fromkeys(others) if s not in with_ids]
    index = {s: i for i, s in enumerate(strings)}
    prefix, uri = index["android"], index[ANDROID_NS]

    body = [_string_pool(strings, utf8_strings)]
    res_map = struct.pack(f"<{len(with_ids)}L", *sorted(with_ids.values()))
    body.append(struct.pack("<HHL", 0x0180, 8, 8 + len(res_map)) + res_map)
    body.append(struct.pack("<HHLLLLL", 0x0100, 16, 24, 1, NO_INDEX, prefix, uri))
    line = 1

    def emit(element: Element) -> None:
        nonlocal line
        name, attrs, children = element
        line += 1
        ordered = sorted(attrs, key=lambda a: (a[1] is None, a[1] or 0, a[0]))
        raw_attrs = b"".join(
            struct.pack(
                "<LLLHBBL",
                NO_INDEX if res_id is None else uri,
                index[attr_name],
                index[str(value)] if kind == TYPE_STRING else NO_INDEX,
                8,
                0,
                kind,
                index[str(value)] if kind == TYPE_STRING else int(value),
            )
            for attr_name, res_id, kind, value in ordered
        )
        head = struct.pack(
            "<LLLLHHHHHH", line, NO_INDEX, NO_INDEX, index[name], 20, 20, len(attrs), 0, 0, 0
        )
        body.append(struct.pack("<HHL", 0x0102, 16, 8 + len(head) + len(raw_attrs)))
        body.append(head + raw_attrs)
        for child in children:
            emit(child)
        body.append(struct.pack("<HHLLLLL", 0x0103, 16, 24, line, NO_INDEX, NO_INDEX, index[name]))

    emit(root)
    body.append(struct.pack("<HHLLLLL", 0x0101, 16, 24, line, NO_INDEX, prefix, uri))
    payload = b"".join(body)
    return struct.pack("<HHL", 0x0003, 8, 8 + len(payload)) + payload


def _string_pool(strings: list[str], utf8: bool) -> bytes:
    def length(n: int, wide: bool) -> bytes:
        if wide:
            return struct.pack("<H", n) if n < 0x8000 else struct.pack("<HH", 0x8000 | n >> 16, n)
        return bytes([n]) if n < 0x80 else bytes([0x80 | n >> 8, n & 0xFF])

    offsets, data = [], b""
    for s in strings:
        offsets.append(len(data))
        utf16 = s.encode("utf-16-le")
        if utf8:
            encoded = s.encode("utf-8")
            data += length(len(utf16) // 2, False) + length(len(encoded), False) + encoded + b"\0"
        else:
            data += length(len(utf16) // 2, True) + utf16 + b"\0\0"
    data += b"\0" * (-len(data) % 4)
    header_size = 28
    strings_start = header_size + 4 * len(strings)
    flags = 0x100 if utf8 else 0
    header = struct.pack(
        "<HHLLLLLL",
        0x0001,
        header_size,
        strings_start + len(data),
        len(strings),
        0,
        flags,
        strings_start,
        0,
    )
    return header + struct.pack(f"<{len(offsets)}L", *offsets) + data


def info_plist(
    *,
    bundle_id: str,
    short_version: str,
    build: str,
    display_name: str | None = "Demo",
    bundle_name: str | None = "Demo",
    binary_plist: bool = True,
    min_os: str | None = "13.0",
) -> bytes:
    plist: dict[str, object] = {
        "CFBundleIdentifier": bundle_id,
        "CFBundleShortVersionString": short_version,
        "CFBundleVersion": build,
        "CFBundleExecutable": "Demo",
        "CFBundlePackageType": "APPL",
        "CFBundleSupportedPlatforms": ["iPhoneOS"],
        "UIDeviceFamily": [1, 2],
    }
    if display_name is not None:
        plist["CFBundleDisplayName"] = display_name
    if bundle_name is not None:
        plist["CFBundleName"] = bundle_name
    if min_os is not None:
        plist["MinimumOSVersion"] = min_os
    fmt = plistlib.FMT_BINARY if binary_plist else plistlib.FMT_XML
    return plistlib.dumps(plist, fmt=fmt, sort_keys=True)


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A deterministic zip: fixed timestamps and modes, members in the order given."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return path


# A dex header's magic and the rest of its 0x70 bytes: enough for tools that sniff the type.
DEX_STUB = b"dex\n035\0" + bytes(0x68)
MACHO_STUB = struct.pack("<LLL", 0xFEEDFACF, 0x0100000C, 0) + bytes(20)


def build_apk(
    path: Path,
    *,
    package: str,
    version_name: str,
    version_code: int,
    min_sdk: int | None = 21,
    label: str | None = "Demo",
    utf8_strings: bool = False,
) -> Path:
    manifest = android_manifest(
        package=package,
        version_name=version_name,
        version_code=version_code,
        min_sdk=min_sdk,
        label=label,
        utf8_strings=utf8_strings,
    )
    return write_zip(path, [("AndroidManifest.xml", manifest), ("classes.dex", DEX_STUB)])


def build_ipa(
    path: Path,
    *,
    bundle_id: str,
    short_version: str,
    build: str,
    display_name: str | None = "Demo",
    binary_plist: bool = True,
    min_os: str | None = "13.0",
    bundle_name: str | None = "Demo",
    app_dir: str = "Demo.app",
) -> Path:
    plist = info_plist(
        bundle_id=bundle_id,
        short_version=short_version,
        build=build,
        display_name=display_name,
        bundle_name=bundle_name,
        binary_plist=binary_plist,
        min_os=min_os,
    )
    return write_zip(
        path,
        [
            (f"Payload/{app_dir}/Info.plist", plist),
            (f"Payload/{app_dir}/Demo", MACHO_STUB),
            (f"Payload/{app_dir}/PkgInfo", b"APPL????"),
        ],
    )
