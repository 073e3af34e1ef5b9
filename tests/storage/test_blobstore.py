"""BlobStore contract tests, run on both backends (local disk and S3 through a real moto server)
so the app can treat them alike; then what only one backend has: presigned URLs (checked down to
the SigV4 signature, since moto accepts any signature), URL parsing and local key safety."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.support.s3_fixtures import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, s3_admin_client
from yuntu.storage import open_store
from yuntu.storage.base import (
    PENDING_PREFIX,
    BlobStore,
    MultipartHandle,
    ObjectMissing,
    PartInfo,
    StorageError,
)
from yuntu.storage.local import LocalStore
from yuntu.storage.s3 import WRITE_PART_SIZE, S3Store, content_disposition

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def all_keys(store: BlobStore, prefix: str = "") -> list[str]:
    return sorted([key async for key in store.list_keys(prefix)])


def bucket_of(store: S3Store) -> tuple[Any, str]:
    assert store.endpoint_url is not None
    return s3_admin_client(store.endpoint_url), store.bucket


def open_uploads(store: BlobStore) -> list[dict[str, Any]]:
    """In-progress multipart uploads in the store's bucket (none on the local backend)."""
    if not isinstance(store, S3Store):
        return []
    admin, bucket = bucket_of(store)
    return admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


async def write_object(store: BlobStore, data: bytes, chunk: int = MIB) -> str:
    writer = store.writer()
    for offset in range(0, len(data), chunk):
        await writer.write(data[offset : offset + chunk])
    pending = await writer.finish()
    return await store.adopt(pending, sha256(data))


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        blob_store: BlobStore = LocalStore(tmp_path / "blobs")
    else:
        blob_store = open_store(request.getfixturevalue("s3_storage_url"))
    await blob_store.start()
    try:
        yield blob_store
    finally:
        await blob_store.close()


@pytest.fixture
async def s3_store(s3_storage_url: str) -> AsyncIterator[S3Store]:
    blob_store = S3Store.from_url(s3_storage_url)
    await blob_store.start()
    try:
        yield blob_store
    finally:
        await blob_store.close()


# -- whole objects ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size", [0, 1000, WRITE_PART_SIZE + MIB + 17], ids=["empty", "small", "large"]
)
async def test_writer_round_trip(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    writer = store.writer()
    assert writer.key.startswith(PENDING_PREFIX)
    went_multipart = False
    for offset in range(0, size, MIB):
        await writer.write(data[offset : offset + MIB])
        went_multipart = went_multipart or bool(open_uploads(store))
    pending = await writer.finish()
    assert pending == writer.key
    assert await store.exists(pending)

    key = await store.adopt(pending, sha256(data))
    if isinstance(store, LocalStore):
        assert key == LocalStore.content_key(sha256(data))
        assert not await store.exists(pending)
    else:
        assert isinstance(store, S3Store)
        assert key == pending  # S3 keeps the object where it is
        # Past 8 MiB the writer switched to a multipart upload: two parts, S3's "-2" ETag.
        admin, bucket = bucket_of(store)
        etag = admin.head_object(Bucket=bucket, Key=key)["ETag"]
        assert went_multipart == (size > WRITE_PART_SIZE)
        assert etag.strip('"').endswith("-2") == (size > WRITE_PART_SIZE)
        assert open_uploads(store) == []

    assert await store.exists(key)
    assert await store.size(key) == size
    assert await read_all(store, key) == data
    assert await all_keys(store) == [key]

    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # deleting a missing key is fine
    assert await all_keys(store) == []


@pytest.mark.parametrize("size", [1000, WRITE_PART_SIZE + 100], ids=["small", "large"])
async def test_writer_abort_leaves_nothing(store: BlobStore, size: int) -> None:
    writer = store.writer()
    await writer.write(os.urandom(size))
    if size > WRITE_PART_SIZE and isinstance(store, S3Store):
        assert len(open_uploads(store)) == 1
    await writer.abort()
    assert await all_keys(store) == []
    assert open_uploads(store) == []


async def test_list_keys_prefix(store: BlobStore) -> None:
    key = await write_object(store, b"listed")
    pending = await store.writer().finish()
    assert await all_keys(store) == sorted([key, pending])
    # S3 keeps adopted objects at their pending key; the local store moves them out of it.
    expected = [pending] if isinstance(store, LocalStore) else sorted([key, pending])
    assert await all_keys(store, PENDING_PREFIX) == expected
    assert await all_keys(store, "elsewhere/") == []


async def test_read_ranges(store: BlobStore) -> None:
    data = os.urandom(2 * MIB + 500)  # more than one read chunk
    size = len(data)
    key = await write_object(store, data)
    cases: list[tuple[int, int | None]] = [
        (0, None),
        (0, 0),
        (7, 7),
        (size, size),
        (0, 1),
        (10, 20),
        (100, None),
        (size - 1, None),
        (size - 1, size),
        (0, size),
        (MIB - 1, MIB + 1),
        (size, None),
        (size + 10, None),
        (0, size + 100),
    ]
    for start, end in cases:
        got = await read_all(store, key, start, end)
        assert got == data[start:end], (start, end)
    assert await store.read_range(key, 0, 5) == data[:5]
    assert await store.read_range(key, size - 3, 10) == data[-3:]
    assert await store.read_range(key, size, 10) == b""
    assert await store.read_range(key, 50, 0) == b""

    empty = await write_object(store, b"")
    assert await read_all(store, empty) == b""
    assert await read_all(store, empty, 0, 10) == b""


async def test_missing_key(store: BlobStore) -> None:
    with pytest.raises(ObjectMissing):
        await store.size("pending/nothing-here")
    with pytest.raises(ObjectMissing):
        await read_all(store, "pending/nothing-here")
    with pytest.raises(ObjectMissing):
        await store.read_range("pending/nothing-here", 0, 10)
    assert not await store.exists("pending/nothing-here")
    await store.delete("pending/nothing-here")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "a/../../outside"])
async def test_unsafe_keys_rejected(store: BlobStore, key: str) -> None:
    with pytest.raises(StorageError):
        await store.exists(key)


def test_local_path_of_rejects_dotdot(tmp_path: Path) -> None:
    local = LocalStore(tmp_path)
    for key in ("..", "../x", "a/../../x", "a/..", "/abs", ""):
        with pytest.raises(StorageError):
            local.path_of(key)
    assert local.path_of("ab/cd/abcd") == tmp_path.resolve() / "ab/cd/abcd"


# -- multipart ----------------------------------------------------------------------------------
async def test_multipart_out_of_order_and_resent(store: BlobStore) -> None:
    part = store.min_part_size
    chunks = [os.urandom(part), os.urandom(part), os.urandom(1234)]
    offsets = [0, part, 2 * part]
    handle = await store.multipart_create()
    assert handle.key.startswith(PENDING_PREFIX)

    etags: dict[int, str] = {}
    for number in (3, 1):
        etags[number] = await store.multipart_put(
            handle, number, offsets[number - 1], chunks[number - 1]
        )
    # Part 2 first arrives corrupted, then is sent again: the second copy replaces the first.
    await store.multipart_put(handle, 2, offsets[1], os.urandom(part))
    etags[2] = await store.multipart_put(handle, 2, offsets[1], chunks[1])
    assert all('"' not in etag for etag in etags.values())

    parts = [PartInfo(part_number=n, size=len(chunks[n - 1]), etag=etags[n]) for n in (2, 3, 1)]
    key = await store.multipart_complete(handle, parts)
    assert key == handle.key
    data = b"".join(chunks)
    assert await store.size(key) == len(data)
    assert await read_all(store, key) == data
    assert open_uploads(store) == []


async def test_multipart_abort(store: BlobStore) -> None:
    handle = await store.multipart_create()
    await store.multipart_put(handle, 1, 0, b"x" * 1000)
    await store.multipart_abort(handle)
    assert await all_keys(store) == []
    assert open_uploads(store) == []
    assert not await store.exists(handle.key)
    await store.multipart_abort(handle)  # twice is fine
    with pytest.raises(ObjectMissing):
        if isinstance(store, S3Store):
            # NoSuchUpload. (moto answers upload_part to an aborted upload with a 500 instead
            # of S3's 404 NoSuchUpload, so the S3 leg asks through list_parts.)
            await store.multipart_list(handle)
        else:
            await store.multipart_put(handle, 2, 1000, b"late")


async def test_local_complete_truncates_stale_tail(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "blobs")
    await local.start()
    handle = await local.multipart_create()
    await local.multipart_put(handle, 1, 0, b"a" * 100)
    await local.multipart_put(handle, 2, 100, b"b" * 80)
    # The last part is re-sent shorter: the first copy's tail must not survive completion.
    etag = await local.multipart_put(handle, 2, 100, b"c" * 30)
    parts = [PartInfo(1, 100, "1-100"), PartInfo(2, 30, etag)]
    key = await local.multipart_complete(handle, parts)
    assert await local.size(key) == 130
    assert await read_all(local, key) == b"a" * 100 + b"c" * 30


# -- S3 only: presigned URLs --------------------------------------------------------------------
def query_of(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values())
    return {name: values[0] for name, values in parsed.items()}


def assert_sigv4_query(url: str, expires: int) -> dict[str, str]:
    query = query_of(url)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    credential = query["X-Amz-Credential"]
    assert credential.startswith(f"{S3_ACCESS_KEY}/")
    assert f"/{S3_REGION}/" in credential
    assert credential.endswith("/s3/aws4_request")
    assert re.fullmatch(r"\d{8}T\d{6}Z", query["X-Amz-Date"])
    assert credential.split("/")[1] == query["X-Amz-Date"][:8]
    assert query["X-Amz-Expires"] == str(expires)
    assert "host" in query["X-Amz-SignedHeaders"].split(";")
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert S3_SECRET_KEY not in urlsplit(url).query.replace(S3_ACCESS_KEY, "")
    return query


def sigv4_presigned_signature(method: str, url: str, secret: str) -> str:
    """The documented SigV4 query-string algorithm, written out independently of botocore."""
    parts = urlsplit(url)
    query = query_of(url)
    assert query["X-Amz-SignedHeaders"] == "host"

    def enc(value: str) -> str:
        return quote(value, safe="-_.~")

    canonical_query = "&".join(
        f"{enc(name)}={enc(value)}"
        for name, value in sorted(query.items())
        if name != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [
            method,
            parts.path,  # already URI-encoded once; S3 does not double-encode
            canonical_query,
            f"host:{parts.netloc}\n",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )
    date, scope = query["X-Amz-Date"], query["X-Amz-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for piece in scope.split("/"):  # date, region, service, "aws4_request"
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


async def test_presign_part_put_with_plain_http(s3_store: S3Store) -> None:
    handle = await s3_store.multipart_create()
    chunks = [os.urandom(s3_store.min_part_size), os.urandom(777)]
    async with httpx.AsyncClient() as http:
        for number, chunk in enumerate(chunks, start=1):
            url = await s3_store.presign_part(handle, number, 900)
            assert url is not None
            query = assert_sigv4_query(url, 900)
            assert query["partNumber"] == str(number)
            assert query["uploadId"] == handle.upload_id
            assert urlsplit(url).path == f"/{s3_store.bucket}/{handle.key}"
            response = await http.put(url, content=chunk)
            assert response.status_code == 200, response.text
            assert response.headers["ETag"].strip('"') == hashlib.md5(chunk).hexdigest()

    listed = await s3_store.multipart_list(handle)
    assert [(p.part_number, p.size) for p in listed] == [(1, len(chunks[0])), (2, len(chunks[1]))]
    assert listed[0].etag == hashlib.md5(chunks[0]).hexdigest()
    key = await s3_store.multipart_complete(handle, listed)
    assert await read_all(s3_store, key) == b"".join(chunks)


async def test_presign_get_downloads_with_disposition(s3_store: S3Store) -> None:
    data = os.urandom(4096)
    key = await write_object(s3_store, data)
    filename = 'Résumé 报告 "v2"; 100%.pdf'
    url = await s3_store.presign_get(
        key, filename=filename, content_type="application/pdf", expires_seconds=300
    )
    assert url is not None
    query = assert_sigv4_query(url, 300)
    disposition = query["response-content-disposition"]
    assert disposition == content_disposition(filename)
    assert disposition == (
        'attachment; filename="Resume __ _v2_; 100_.pdf"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E6%8A%A5%E5%91%8A%20%22v2%22%3B%20100%25.pdf"
    )
    assert query["response-content-type"] == "application/pdf"

    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["Content-Disposition"] == disposition
    assert response.headers["Content-Type"] == "application/pdf"


async def test_presigned_signature_recomputed(s3_store: S3Store) -> None:
    key = await write_object(s3_store, b"signed bytes")
    url = await s3_store.presign_get(
        key, filename="a.txt", content_type="text/plain", expires_seconds=120
    )
    assert url is not None
    signature = query_of(url)["X-Amz-Signature"]
    assert sigv4_presigned_signature("GET", url, S3_SECRET_KEY) == signature
    # And the check has teeth: another secret gives another signature.
    assert sigv4_presigned_signature("GET", url, "other-secret") != signature
    signed_at = datetime.strptime(query_of(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    assert abs((datetime.now(UTC).replace(tzinfo=None) - signed_at).total_seconds()) < 300


async def test_public_endpoint_signs_client_urls_only(s3_storage_url: str) -> None:
    store = S3Store.from_url(f"{s3_storage_url}&public_endpoint=https://files.example.com:8443")
    await store.start()
    try:
        key = await write_object(store, b"inside")  # the server still talks to moto
        url = await store.presign_get(
            key, filename="x.bin", content_type="application/octet-stream", expires_seconds=60
        )
        assert url is not None
        assert urlsplit(url).netloc == "files.example.com:8443"
        assert (
            sigv4_presigned_signature("GET", url, S3_SECRET_KEY) == query_of(url)["X-Amz-Signature"]
        )
        handle = await store.multipart_create()
        part_url = await store.presign_part(handle, 1, 60)
        assert part_url is not None
        assert urlsplit(part_url).netloc == "files.example.com:8443"
        await store.multipart_abort(handle)
    finally:
        await store.close()


async def test_prefix_keeps_objects_under_it(s3_storage_url: str) -> None:
    base, _, query = s3_storage_url.partition("?")
    store = S3Store.from_url(f"{base}/tenant/a?{query}")
    await store.start()
    try:
        key = await write_object(store, b"prefixed")
        assert await all_keys(store) == [key]
        admin, bucket = bucket_of(store)
        listed = [item["Key"] for item in admin.list_objects_v2(Bucket=bucket)["Contents"]]
        assert listed == [f"tenant/a/{key}"]
        url = await store.presign_get(
            key, filename="p", content_type="text/plain", expires_seconds=60
        )
        assert url is not None
        assert urlsplit(url).path == f"/{bucket}/tenant/a/{key}"
    finally:
        await store.close()


# -- S3 only: errors and configuration ----------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


async def test_unreachable_store_raises_storage_error() -> None:
    store = S3Store(
        "yuntu-nowhere",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        access_key="AKIDCLOSED",
        secret_key="very-secret-value",
        max_attempts=1,
        connect_timeout=2,
    )
    await store.start()
    try:
        attempts = [
            store.check,
            lambda: store.exists("pending/x"),
            lambda: store.size("pending/x"),
            lambda: store.writer().finish(),
            store.multipart_create,
        ]
        for attempt in attempts:
            with pytest.raises(StorageError) as caught:
                await attempt()
            assert not isinstance(caught.value, ObjectMissing)
            assert "very-secret-value" not in str(caught.value)
    finally:
        await store.close()


async def test_missing_bucket_fails_check(s3_storage_url: str) -> None:
    store = S3Store.from_url(s3_storage_url.replace("@yuntu-", "@absent-"))
    await store.start()
    try:
        with pytest.raises(StorageError) as caught:
            await store.check()
        assert not isinstance(caught.value, ObjectMissing)
    finally:
        await store.close()


async def test_complete_without_etag_is_failure(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 may answer CompleteMultipartUpload with 200 and an error in the body."""
    handle = await s3_store.multipart_create()
    etag = await s3_store.multipart_put(handle, 1, 0, b"only part")

    async def error_inside_200(**kwargs: Any) -> dict[str, Any]:
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    monkeypatch.setattr(s3_store.client, "complete_multipart_upload", error_inside_200)
    with pytest.raises(StorageError):
        await s3_store.multipart_complete(handle, [PartInfo(1, 9, etag)])
    await s3_store.multipart_abort(handle)


async def test_writer_failure_cleans_up(s3_storage_url: str) -> None:
    store = S3Store.from_url(s3_storage_url.replace("@yuntu-", "@absent-"))
    await store.start()
    try:
        writer = store.writer()
        with pytest.raises(StorageError):
            await writer.write(os.urandom(WRITE_PART_SIZE))  # create_multipart_upload fails
        with pytest.raises(StorageError):
            await writer.write(b"more")  # the writer is aborted, not half-alive
    finally:
        await store.close()


async def test_check_passes_on_real_bucket(s3_store: S3Store) -> None:
    await s3_store.check()
    assert s3_store.kind == "s3"
    assert s3_store.supports_presigned_parts
    assert s3_store.min_part_size == 5 * MIB


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "s3://AKID:se%2Fcr%2Bet%40x@bucket-1/some/prefix/"
            "?endpoint=http://127.0.0.1:9000&region=eu-west-2",
            {
                "bucket": "bucket-1",
                "prefix": "some/prefix/",
                "endpoint_url": "http://127.0.0.1:9000",
                "region": "eu-west-2",
                "addressing": "path",
                "access_key": "AKID",
                "_secret_key": "se/cr+et@x",
                "public_endpoint_url": None,
            },
        ),
        (
            "s3://my-bucket",
            {
                "bucket": "my-bucket",
                "prefix": "",
                "endpoint_url": None,
                "region": None,
                "addressing": "virtual",
                "access_key": None,
                "_secret_key": None,
            },
        ),
        (
            "s3+http://k:s@b-b?endpoint=minio:9000&public_endpoint=https://cdn.example",
            {
                "endpoint_url": "http://minio:9000",
                "public_endpoint_url": "https://cdn.example",
                "region": "us-east-1",
                "addressing": "path",
            },
        ),
        (
            "s3+https://k:s@yuntu-1250000000?endpoint=cos.ap-guangzhou.myqcloud.com"
            "&region=ap-guangzhou&addressing=virtual",
            {
                "endpoint_url": "https://cos.ap-guangzhou.myqcloud.com",
                "addressing": "virtual",
                "region": "ap-guangzhou",
            },
        ),
    ],
)
def test_from_url_parses(url: str, expected: dict[str, Any]) -> None:
    store = open_store(url)
    assert isinstance(store, S3Store)
    for name, value in expected.items():
        assert getattr(store, name) == value, name


@pytest.mark.parametrize(
    "url",
    [
        "http://k:TOPSECRET@bucket",
        "s3://",
        "s3://k:TOPSECRET@",
        "s3://onlykey@bucket",
        "s3://:TOPSECRET@bucket",
        "s3://k:TOPSECRET@127.0.0.1:9000/bucket",
        "s3://k:TOPSECRET@bucket?endpoint=ftp://host",
        "s3://k:TOPSECRET@bucket?endpoint=",
        "s3://k:TOPSECRET@bucket?addressing=sideways",
        "s3://k:TOPSECRET@bucket?endpont=http://typo",
        "s3://k:TOPSECRET@bucket?region=a&region=b",
        "s3://k:TOPSECRET@bucket/a/../b",
        "s3://k:TOPSECRET@bucket?public_endpoint=http://u:p@host",
    ],
)
def test_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        S3Store.from_url(url)
    assert "TOPSECRET" not in str(caught.value)


def test_repr_hides_secret() -> None:
    store = S3Store.from_url("s3://AKIDEXAMPLE:wJalrXUtnFEMI%2FK7MDENG@bucket?region=us-west-1")
    text = repr(store)
    assert "wJalrXUtnFEMI" not in text
    assert "K7MDENG" not in text
    assert "bucket" in text


def test_content_disposition_ascii_name_round_trips() -> None:
    assert content_disposition("report.pdf") == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )
    assert content_disposition("") == (
        "attachment; filename=\"download\"; filename*=UTF-8''download"
    )


async def test_handle_is_plain_data(s3_store: S3Store) -> None:
    handle = await s3_store.multipart_create()
    assert handle == MultipartHandle(key=handle.key, upload_id=handle.upload_id)
    assert handle.upload_id != handle.key
    await s3_store.multipart_abort(handle)
    assert open_uploads(s3_store) == []
