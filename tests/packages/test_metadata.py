"""Package metadata: APK manifests and IPA Info.plists from fixtures built here, and hostile
archives (garbage, bombs, lies, ambiguity, random mutations) that must yield None, not raise."""

from __future__ import annotations

import json
import random
import struct
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.app_packages import (
    DEX_STUB,
    TYPE_INT_DEC,
    TYPE_REFERENCE,
    TYPE_STRING,
    android_manifest,
    build_apk,
    build_ipa,
    encode_axml,
    info_plist,
    write_zip,
)
from yuntu.packages.metadata import (
    MAX_MANIFEST_BYTES,
    AppMetadata,
    parse_android_manifest,
    parse_info_plist,
    parse_package,
)

DEMO_APK = {"package": "com.example.demo", "version_name": "1.2.3", "version_code": 42}
DEMO_IPA = {"bundle_id": "com.example.ios", "short_version": "2.0", "build": "2.0.7"}


def _apk_with(tmp_path: Path, manifest: bytes, name: str = "app.apk") -> Path:
    return write_zip(
        tmp_path / name, [("AndroidManifest.xml", manifest), ("classes.dex", DEX_STUB)]
    )


def _stored(result: AppMetadata | None) -> None:
    """Whatever comes back must be storable in a JSON column, on PostgreSQL too."""
    if result is not None:
        text = json.dumps(result.as_dict(), ensure_ascii=False)
        text.encode("utf-8")  # no lone surrogates
        assert "\\u0000" not in text


@pytest.mark.parametrize("utf8", [False, True], ids=["utf16-pool", "utf8-pool"])
def test_apk_fields(tmp_path, utf8):
    path = build_apk(tmp_path / "a.bin", **DEMO_APK, min_sdk=24, label="演示 😀", utf8_strings=utf8)
    assert path.stat().st_size < 10_000
    meta = parse_package(path)
    assert meta == AppMetadata(
        kind="apk",
        app_id="com.example.demo",
        version_name="1.2.3",
        version_code="42",
        min_sdk=24,
        display_name="演示 😀",
    )
    assert json.loads(json.dumps(meta.as_dict())) == {
        "kind": "apk",
        "app_id": "com.example.demo",
        "version_name": "1.2.3",
        "version_code": "42",
        "min_sdk": 24,
        "display_name": "演示 😀",
        "min_os": None,
    }


def test_apk_without_uses_sdk_or_label(tmp_path):
    meta = parse_package(build_apk(tmp_path / "a.apk", **DEMO_APK, min_sdk=None, label=None))
    assert meta is not None and meta.app_id == "com.example.demo"
    assert meta.min_sdk is None and meta.display_name is None and meta.version_code == "42"


def test_builders_are_deterministic(tmp_path):
    one = build_apk(tmp_path / "1.apk", **DEMO_APK).read_bytes()
    assert one == build_apk(tmp_path / "2.apk", **DEMO_APK).read_bytes()
    ipa = build_ipa(tmp_path / "1.ipa", **DEMO_IPA).read_bytes()
    assert ipa == build_ipa(tmp_path / "2.ipa", **DEMO_IPA).read_bytes() and len(ipa) < 10_000


def test_apk_attributes_go_by_resource_id_then_by_name():
    # Obfuscated names with the real ids; a referenced label cannot be shown without
    # resources.arsc; versionCodeMajor makes the long version code.
    obfuscated = (
        "manifest",
        [
            ("", None, TYPE_STRING, "com.example.obf"),  # never matches: package goes by name
            ("package", None, TYPE_STRING, "com.example.obf"),
            ("x", 0x0101021B, TYPE_INT_DEC, 5),
            ("y", 0x0101021C, TYPE_REFERENCE, 0x7F0E0001),
            ("z", 0x01010576, TYPE_INT_DEC, 1),
            ("versionName", 0x7F010001, TYPE_STRING, "app attr, not the framework's"),
        ],
        [
            ("uses-sdk", [("w", 0x0101020C, TYPE_STRING, "26")], []),
            ("application", [("v", 0x01010001, TYPE_REFERENCE, 0x7F0E0002)], []),
        ],
    )
    meta = parse_android_manifest(encode_axml(obfuscated))
    assert meta is not None
    assert (meta.app_id, meta.version_code, meta.version_name) == (
        "com.example.obf",
        "4294967301",
        None,
    )
    assert (meta.min_sdk, meta.display_name) == (26, None)
    # Hand-written binary XML without a resource map: names are all there is.
    plain = (
        "manifest",
        [
            ("package", None, TYPE_STRING, "com.example.plain"),
            ("versionCode", None, TYPE_INT_DEC, 7),
            ("versionName", None, TYPE_STRING, "0.7"),
        ],
        [("uses-sdk", [("minSdkVersion", None, TYPE_STRING, "Tiramisu")], [])],
    )
    meta = parse_android_manifest(encode_axml(plain))
    assert meta is not None
    assert (meta.app_id, meta.version_code, meta.version_name, meta.min_sdk) == (
        "com.example.plain",
        "7",
        "0.7",
        None,
    )


def test_apk_needs_a_manifest_root_with_a_plain_package():
    assert parse_android_manifest(encode_axml(("application", [], []))) is None
    no_package = ("manifest", [("versionCode", 0x0101021B, TYPE_INT_DEC, 1)], [])
    assert parse_android_manifest(encode_axml(no_package)) is None
    nul = ("manifest", [("package", None, TYPE_STRING, "com.ex\0ample")], [])
    assert parse_android_manifest(encode_axml(nul)) is None


@pytest.mark.parametrize("binary", [True, False], ids=["binary-plist", "xml-plist"])
def test_ipa_fields(tmp_path, binary):
    path = build_ipa(tmp_path / "a.ipa", **DEMO_IPA, display_name="演示", binary_plist=binary)
    assert parse_package(path) == AppMetadata(
        kind="ipa",
        app_id="com.example.ios",
        version_name="2.0",
        version_code="2.0.7",
        min_sdk=None,
        display_name="演示",
        min_os="13.0",
    )


def test_ipa_with_bundle_name_only_and_no_min_os(tmp_path):
    path = build_ipa(
        tmp_path / "a.ipa", **DEMO_IPA, display_name=None, bundle_name="Plain", min_os=None
    )
    meta = parse_package(path)
    assert meta is not None and meta.display_name == "Plain" and meta.min_os is None


def _nested_binary_plist(depth: int) -> bytes:
    """Arrays nested `depth` deep (object i holds object i + 1), ending in an empty array."""
    objects = [b"\xa1" + struct.pack(">H", i + 1) for i in range(depth)] + [b"\xa0"]
    body, offsets = b"bplist00", []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = b"".join(struct.pack(">L", offset) for offset in offsets)
    trailer = struct.pack(">6xBBQQQ", 4, 2, len(objects), 0, len(body))
    return body + table + trailer


def test_deeply_nested_plist_in_a_worker_thread():
    # The caller parses in a thread; recursion there must end in None, not a crash.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(parse_info_plist, _nested_binary_plist(3)).result() is None
        assert pool.submit(parse_info_plist, _nested_binary_plist(50_000)).result() is None


def test_ipa_without_bundle_id_or_not_a_dict():
    assert parse_info_plist(info_plist(bundle_id="", short_version="1", build="1")) is None
    assert parse_info_plist(b"<?xml version='1.0'?><plist><array/></plist>") is None


def test_not_a_package(tmp_path):
    garbage = tmp_path / "x.apk"
    for content in (b"", b"PK", b"not a zip at all" * 100, b"PK\x05\x06" + bytes(18)):
        garbage.write_bytes(content)
        assert parse_package(garbage, "x.apk") is None
    only_dex = write_zip(tmp_path / "dex.apk", [("classes.dex", DEX_STUB)])
    assert parse_package(only_dex, "dex.apk") is None
    manifest = android_manifest(**DEMO_APK)
    not_root = write_zip(tmp_path / "nr.apk", [("assets/AndroidManifest.xml", manifest)])
    assert parse_package(not_root) is None
    text_manifest = b'<manifest package="com.example"/>'
    assert parse_package(_apk_with(tmp_path, text_manifest)) is None


def test_truncated_or_corrupt_manifest(tmp_path):
    manifest = android_manifest(**DEMO_APK)
    for cut in (0, 4, 8, 40, len(manifest) // 2, len(manifest) - 1):
        assert parse_android_manifest(manifest[:cut]) is None
        assert parse_package(_apk_with(tmp_path, manifest[:cut])) is None
    # Android ignores the first chunk's type (obfuscators change it) but not its sizes.
    odd_type = b"\x02\x00" + manifest[2:]
    assert parse_package(_apk_with(tmp_path, odd_type)).app_id == "com.example.demo"  # type: ignore[union-attr]
    too_long = manifest[:4] + struct.pack("<L", len(manifest) + 4) + manifest[8:]
    assert parse_android_manifest(too_long) is None
    # A string pool claiming a billion strings.
    huge_pool = manifest[:12] + struct.pack("<L", 10**9) + manifest[16:]
    assert parse_android_manifest(huge_pool) is None


def _patch_uncompressed_size(path: Path, size: int) -> None:
    """Rewrites the single member's uncompressed size in its local and central headers."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<L", data, data.index(b"PK\x03\x04") + 22, size)
    struct.pack_into("<L", data, data.index(b"PK\x01\x02") + 24, size)
    path.write_bytes(bytes(data))


def test_zip_bombs_and_lying_sizes(tmp_path):
    # 16 MiB of zeros deflates to ~16 KiB; the headers claim 1000 bytes.
    bomb = tmp_path / "bomb.apk"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    stream = b"".join(compressor.compress(chunk) for _ in range(16)) + compressor.flush()
    with zipfile.ZipFile(bomb, "w") as archive:
        info = zipfile.ZipInfo("AndroidManifest.xml", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, b"")  # sizes and data patched below
    raw = bytearray(bomb.read_bytes())
    local = raw[: 30 + len("AndroidManifest.xml")]
    central = raw[raw.index(b"PK\x01\x02") :]
    struct.pack_into("<LLL", local, 14, zlib.crc32(b"x"), len(stream), 1000)
    struct.pack_into("<LLL", central, 16, zlib.crc32(b"x"), len(stream), 1000)
    struct.pack_into("<L", central, central.index(b"PK\x05\x06") + 16, len(local) + len(stream))
    bomb.write_bytes(bytes(local) + stream + bytes(central))
    started = time.monotonic()
    assert parse_package(bomb) is None
    # An honest size over the cap is not even opened.
    honest = _apk_with(tmp_path, android_manifest(**DEMO_APK), "honest.apk")
    _patch_uncompressed_size(honest, MAX_MANIFEST_BYTES + 1)
    assert parse_package(honest) is None
    assert time.monotonic() - started < 1.0


def test_central_directory_claiming_too_many_entries(tmp_path):
    path = build_apk(tmp_path / "many.apk", **DEMO_APK)
    data = bytearray(path.read_bytes())
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HHL", data, eocd + 8, 0xFFFF, 0xFFFF, 64 << 20)
    path.write_bytes(bytes(data))
    assert parse_package(path) is None


def test_payload_layouts(tmp_path):
    plist = info_plist(**DEMO_IPA)
    other = info_plist(bundle_id="com.example.other", short_version="9", build="9")
    two_apps = write_zip(
        tmp_path / "two.ipa",
        [("Payload/A.app/Info.plist", plist), ("Payload/B.app/Info.plist", other)],
    )
    assert parse_package(two_apps, "two.ipa") is None
    too_deep = write_zip(tmp_path / "deep.ipa", [("Payload/Wrap/A.app/Info.plist", plist)])
    assert parse_package(too_deep) is None
    no_name = write_zip(tmp_path / "noname.ipa", [("Payload/.app/Info.plist", plist)])
    assert parse_package(no_name) is None
    with_extension = write_zip(
        tmp_path / "ext.ipa",
        [
            ("Payload/A.app/PlugIns/Widget.appex/Info.plist", other),
            ("Payload/A.app/Frameworks/F.framework/Info.plist", other),
            ("Payload/A.app/Info.plist", plist),
        ],
    )
    meta = parse_package(with_extension)
    assert meta is not None and meta.app_id == "com.example.ios"


def test_duplicates_and_polyglots(tmp_path):
    manifest = android_manifest(**DEMO_APK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        twice = write_zip(
            tmp_path / "twice.apk",
            [("AndroidManifest.xml", manifest), ("AndroidManifest.xml", manifest)],
        )
    assert parse_package(twice) is None
    both = write_zip(
        tmp_path / "both.zip",
        [("AndroidManifest.xml", manifest), ("Payload/A.app/Info.plist", info_plist(**DEMO_IPA))],
    )
    assert parse_package(both) is None
    assert parse_package(both, "release.APK").kind == "apk"  # type: ignore[union-attr]
    assert parse_package(both, "release.ipa").kind == "ipa"  # type: ignore[union-attr]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(buf))
        roll = rng.random()
        if roll < 0.4:
            buf[at] = rng.randrange(256)
        elif roll < 0.8 and at + 4 <= len(buf):
            # Structural fields are 16/32-bit counts, sizes and indices: hit them with extremes.
            word = rng.choice([0, 1, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
            struct.pack_into("<L", buf, at & ~3, word)
        elif roll < 0.9:
            del buf[at : at + rng.randint(1, 16)]
        else:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(buf) if buf else b"\0"


def test_random_mutations_never_raise(tmp_path):
    rng = random.Random(20240601)
    manifests = [android_manifest(**DEMO_APK, utf8_strings=utf8) for utf8 in (False, True)]
    plists = [info_plist(**DEMO_IPA, binary_plist=binary) for binary in (False, True)]
    for _ in range(400):
        _stored(parse_android_manifest(_mutate(rng, rng.choice(manifests))))
    for _ in range(200):
        _stored(parse_info_plist(_mutate(rng, rng.choice(plists))))
    # Whole archives, mutated after zipping (headers, directory, compressed data) ...
    samples = [
        build_apk(tmp_path / "s.apk", **DEMO_APK).read_bytes(),
        build_ipa(tmp_path / "s.ipa", **DEMO_IPA).read_bytes(),
    ]
    target = tmp_path / "fuzz.bin"
    for _ in range(150):
        target.write_bytes(_mutate(rng, rng.choice(samples)))
        _stored(parse_package(target, rng.choice([None, "x.apk", "x.ipa"])))
    # ... and members mutated before zipping, so the damage reaches the parsers intact.
    for _ in range(100):
        manifest = _mutate(rng, rng.choice(manifests))
        _stored(parse_package(_apk_with(tmp_path, manifest, "m.apk")))
