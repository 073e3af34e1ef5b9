"""S3-compatible blob store (aiobotocore): for deployments that keep bytes off the app's disk.

One code path serves every S3-compatible service: AWS S3, MinIO, Aliyun OSS, Cloudflare R2 and
Tencent COS (and others that speak SigV4 S3). Clients may PUT multipart parts and GET whole files
straight to/from storage with presigned URLs, so large transfers need not pass through the app.

Configuration is one URL (`YUNTU_STORAGE_URL`)::

    s3://ACCESS_KEY:SECRET@bucket/optional/prefix?endpoint=URL&region=R&addressing=path|virtual
        &public_endpoint=URL

- `ACCESS_KEY:SECRET` are percent-decoded (escape `/`, `+`, `@`, `:` in secrets). Leave both out
  to use the default botocore credential chain (environment, shared config, instance role).
- `bucket` is required; the path after it is an optional key prefix every object lives under.
- `endpoint`: the service's API address; absent means AWS S3 itself. A bare `host:port` gets
  `https://` (`http://` under the `s3+http://` scheme).
- `region`: the signing region; default `us-east-1` with an endpoint (MinIO's default, accepted
  by R2), else botocore's default chain.
- `addressing`: `path` (`endpoint/bucket/key`, the default when an endpoint is given: MinIO) or
  `virtual` (`bucket.endpoint/key`, the default for AWS; required by OSS and COS).
- `public_endpoint`: an endpoint used only to sign URLs handed to clients, for when the server
  reaches storage by another address (e.g. `http://minio:9000` inside a container network).

`s3+http://` and `s3+https://` are accepted as the same scheme.

Examples::

    s3://AKIA...:wJal...@my-bucket?region=eu-west-1                                   # AWS
    s3://minio:minio123@yuntu?endpoint=http://127.0.0.1:9000                          # MinIO
    s3://LTAI...:...@yuntu?endpoint=https://oss-cn-hangzhou.aliyuncs.com&region=cn-hangzhou
        &addressing=virtual                                                           # OSS
    s3://KEY:SECRET@yuntu?endpoint=https://ACCOUNT.r2.cloudflarestorage.com&region=auto  # R2
    s3://AKID...:...@yuntu-1250000000?endpoint=https://cos.ap-guangzhou.myqcloud.com
        &region=ap-guangzhou&addressing=virtual                                       # COS

S3 keeps an object where it was written: `adopt()` returns the pending key unchanged (copying
would double the bytes moved); the database maps sha256 -> key, so content addressing is by row.
Secrets never appear in logs, exception messages or `repr()`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiohttp
import anyio.to_thread
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from yuntu.storage.base import (
    PENDING_PREFIX,
    BlobStore,
    BlobWriter,
    MultipartHandle,
    ObjectMissing,
    PartInfo,
    StorageError,
    StorageFull,
)

# A writer buffers this much before it switches to a multipart upload, and uses it as part size.
WRITE_PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024
SCHEMES = frozenset({"s3", "s3+http", "s3+https"})
URL_PARAMS = frozenset({"endpoint", "region", "addressing", "public_endpoint"})
ADDRESSING_STYLES = frozenset({"path", "virtual"})
# Error codes that mean "this key (or upload) is not there".
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
# Error codes that mean "no space" (MinIO out of disk or over a bucket quota).
FULL_CODES = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded"})
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
# Hashing is offloaded to a thread above this size so the event loop keeps serving.
_HASH_IN_THREAD = 1024 * 1024


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266 / RFC 5987: a quoted ASCII fallback for old clients plus the exact UTF-8 name."""
    filename = filename or "download"
    decomposed = unicodedata.normalize("NFKD", filename)
    fallback = (
        "".join(
            ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%' else "_"
            for ch in decomposed
            if not unicodedata.combining(ch)
        ).strip()
        or "download"
    )
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


async def _md5_async(data: bytes) -> str:
    if len(data) >= _HASH_IN_THREAD:
        return await anyio.to_thread.run_sync(_content_md5, data)
    return _content_md5(data)


def _strip_etag(etag: str) -> str:
    return etag.strip('"')


def _client_error(exc: ClientError, operation: str, key: str | None) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    target = f" {key!r}" if key is not None else ""
    message = f"S3 {operation}{target} failed: {code} (HTTP {status})"
    if error.get("Message"):
        message += f": {str(error['Message'])[:300]}"
    if code in MISSING_CODES:
        return ObjectMissing(message)
    if code in FULL_CODES:
        return StorageFull(message)
    return StorageError(message)


@contextlib.contextmanager
def _errors(operation: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore/aiohttp failures into StorageError (ObjectMissing for a missing key). The
    messages name the operation and key only: credentials are never part of them."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(exc, operation, key) from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 {operation} failed: {str(exc)[:300]}") from exc
    except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
        raise StorageError(f"S3 {operation} failed: {type(exc).__name__}") from exc


def _check_endpoint(value: str, name: str, default_scheme: str) -> str:
    if "://" not in value:
        value = f"{default_scheme}://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"storage URL: {name} must be an http(s) URL like https://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"storage URL: {name} must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError(f"storage URL: {name} must not have a query or fragment")
    return value.rstrip("/")


class S3Writer(BlobWriter):
    """Buffers up to WRITE_PART_SIZE: small objects go up in one PUT at finish(); larger ones
    switch to a multipart upload, sending each full buffer as one part."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.key = f"{PENDING_PREFIX}{uuid.uuid4().hex}"
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[PartInfo] = []
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise StorageError("write after finish/abort")
        self._buffer += data
        if len(self._buffer) < WRITE_PART_SIZE:
            return
        try:
            if self._upload_id is None:
                self._upload_id = await self.store._create_upload(self.key)
            while len(self._buffer) >= WRITE_PART_SIZE:
                await self._send_part(bytes(self._buffer[:WRITE_PART_SIZE]))
                del self._buffer[:WRITE_PART_SIZE]
        except StorageError:
            await self._abort_quietly()
            raise

    async def _send_part(self, chunk: bytes) -> None:
        assert self._upload_id is not None
        number = len(self._parts) + 1
        etag = await self.store._upload_part(self.key, self._upload_id, number, chunk)
        self._parts.append(PartInfo(part_number=number, size=len(chunk), etag=etag))

    async def finish(self) -> str:
        if self._closed:
            raise StorageError("finish after finish/abort")
        try:
            if self._upload_id is None:
                await self.store._put_object(self.key, bytes(self._buffer))
            else:
                if self._buffer:
                    await self._send_part(bytes(self._buffer))
                await self.store._complete_upload(self.key, self._upload_id, self._parts)
        except StorageError:
            await self._abort_quietly()
            raise
        self._closed = True
        self._buffer = bytearray()
        return self.key

    async def _abort_quietly(self) -> None:
        # The original error matters more than a failed cleanup; orphans are left to fsck and
        # the bucket's lifecycle rule for incomplete multipart uploads.
        with contextlib.suppress(StorageError):
            await self.abort()

    async def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(ObjectMissing):
                await self.store._abort_upload(self.key, upload_id)
        await self.store.delete(self.key)


class S3Store(BlobStore):
    kind = "s3"
    min_part_size = 5 * 1024 * 1024
    supports_presigned_parts = True

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        public_endpoint_url: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise ValueError("S3 access key and secret must be given together")
        if addressing is None:
            addressing = "path" if endpoint_url else "virtual"
        if addressing not in ADDRESSING_STYLES:
            raise ValueError("S3 addressing must be 'path' or 'virtual'")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.region = region if region or not endpoint_url else "us-east-1"
        self.addressing = addressing
        self.access_key = access_key
        self._secret_key = secret_key
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            # Newer botocore adds CRC checksums (and aws-chunked bodies) to every upload; many
            # S3-compatible services reject them. We send Content-MD5 ourselves instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._signer: Any = None  # the client presigned URLs are made with (public endpoint)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """Parse `s3://KEY:SECRET@bucket/prefix?endpoint=...` (see the module docstring). Error
        messages never repeat the URL: it may hold a secret."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("storage URL is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError("storage URL must start with s3://, s3+http:// or s3+https://")
        if parts.fragment:
            raise ValueError("storage URL must not have a #fragment")
        userinfo, at, bucket = parts.netloc.rpartition("@")
        access_key = secret_key = None
        if at:
            raw_key, colon, raw_secret = userinfo.partition(":")
            if not colon or not raw_key or not raw_secret:
                raise ValueError(
                    "storage URL credentials must be ACCESS_KEY:SECRET (or leave both out)"
                )
            access_key, secret_key = unquote(raw_key), unquote(raw_secret)
        if not bucket:
            raise ValueError("storage URL needs a bucket: s3://[KEY:SECRET@]bucket[/prefix]")
        if not _BUCKET_RE.match(bucket):
            raise ValueError(
                "storage URL bucket name is invalid (put the server address in ?endpoint=, "
                "not in the host part)"
            )
        prefix = unquote(parts.path).strip("/")
        if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
            raise ValueError("storage URL prefix must not contain empty, '.' or '..' segments")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in URL_PARAMS:
                known = ", ".join(sorted(URL_PARAMS))
                raise ValueError(f"storage URL: unknown parameter {name!r} (known: {known})")
            if name in params:
                raise ValueError(f"storage URL: parameter {name!r} given twice")
            if not value:
                raise ValueError(f"storage URL: parameter {name!r} is empty")
            params[name] = value
        default_scheme = "http" if scheme == "s3+http" else "https"
        endpoint = params.get("endpoint")
        if endpoint is not None:
            endpoint = _check_endpoint(endpoint, "endpoint", default_scheme)
        public = params.get("public_endpoint")
        if public is not None:
            public = _check_endpoint(public, "public_endpoint", default_scheme)
        addressing = params.get("addressing")
        if addressing is not None and addressing not in ADDRESSING_STYLES:
            raise ValueError("storage URL: addressing must be 'path' or 'virtual'")
        return cls(
            bucket,
            prefix=prefix,
            endpoint_url=endpoint,
            region=params.get("region"),
            addressing=addressing,
            access_key=access_key,
            secret_key=secret_key,
            public_endpoint_url=public,
        )

    def __repr__(self) -> str:
        credentials = "explicit" if self.access_key else "default chain"
        return (
            f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint={self.endpoint_url or 'aws'!r}, region={self.region!r}, "
            f"addressing={self.addressing!r}, credentials={credentials})"
        )

    # -- life cycle ----------------------------------------------------------------------------
    def _client_kwargs(self, endpoint_url: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"config": self._config}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if self.region:
            kwargs["region_name"] = self.region
        if self.access_key:
            kwargs["aws_access_key_id"] = self.access_key
            kwargs["aws_secret_access_key"] = self._secret_key
        return kwargs

    async def start(self) -> None:
        if self._client is not None:
            return
        stack = AsyncExitStack()
        session = AioSession()
        try:
            with _errors("client setup"):
                self._client = await stack.enter_async_context(
                    session.create_client("s3", **self._client_kwargs(self.endpoint_url))
                )
                if self.public_endpoint_url:
                    # Signing makes no request: this client only ever builds URLs.
                    self._signer = await stack.enter_async_context(
                        session.create_client("s3", **self._client_kwargs(self.public_endpoint_url))
                    )
                else:
                    self._signer = self._client
        except BaseException:
            self._client = self._signer = None
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = self._signer = None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("S3 store used before start()")
        return self._client

    async def check(self) -> None:
        try:
            with _errors("head_bucket"):
                await self.client.head_bucket(Bucket=self.bucket)
        except ObjectMissing as exc:  # a missing bucket is a broken store, not a missing key
            raise StorageError(f"S3 bucket {self.bucket!r} does not exist") from exc

    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"unsafe key {key!r}")
        return self.prefix + key

    # -- whole objects -------------------------------------------------------------------------
    def writer(self) -> S3Writer:
        return S3Writer(self)

    async def _put_object(self, key: str, data: bytes) -> None:
        md5 = await _md5_async(data)
        with _errors("put_object", key):
            await self.client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, ContentMD5=md5
            )

    async def adopt(self, pending_key: str, sha256: str) -> str:
        # The object stays where it was written; the blob row records this key.
        return pending_key

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing), _errors("delete_object", key):
            await self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    async def exists(self, key: str) -> bool:
        try:
            await self._head(key)
        except ObjectMissing:
            return False
        return True

    async def _head(self, key: str) -> dict[str, Any]:
        with _errors("head_object", key):
            return await self.client.head_object(Bucket=self.bucket, Key=self._full(key))

    async def size(self, key: str) -> int:
        return int((await self._head(key))["ContentLength"])

    async def _get(self, key: str, start: int, end: int | None) -> dict[str, Any] | None:
        """get_object for [start, end); None when the range holds no bytes."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with _errors("get_object", key):
            try:
                return await self.client.get_object(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("InvalidRange", "416"):
                    return None  # the range starts at or past the end (or the object is empty)
                raise

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        if end == start:
            return
        response = await self._get(key, start, end)
        if response is None:
            return
        async with response["Body"] as body:
            while True:
                with _errors("get_object body", key):
                    chunk = await body.read(READ_CHUNK)
                if not chunk:
                    break
                yield chunk

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        if length == 0:
            return b""
        response = await self._get(key, offset, offset + length)
        if response is None:
            return b""
        async with response["Body"] as body:
            with _errors("get_object body", key):
                return await body.read()

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        iterator = pages.__aiter__()
        while True:
            with _errors("list_objects_v2"):
                try:
                    page = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    # -- multipart uploads ---------------------------------------------------------------------
    async def _create_upload(self, key: str) -> str:
        with _errors("create_multipart_upload", key):
            response = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self._full(key)
            )
        return str(response["UploadId"])

    async def _upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        md5 = await _md5_async(data)
        with _errors("upload_part", key):
            response = await self.client.upload_part(
                Bucket=self.bucket,
                Key=self._full(key),
                UploadId=upload_id,
                PartNumber=part_number,
                Body=data,
                ContentMD5=md5,
            )
        return _strip_etag(response["ETag"])

    async def _complete_upload(self, key: str, upload_id: str, parts: list[PartInfo]) -> None:
        ordered = sorted(parts, key=lambda part: part.part_number)
        with _errors("complete_multipart_upload", key):
            response = await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._full(key),
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": part.part_number, "ETag": f'"{_strip_etag(part.etag)}"'}
                        for part in ordered
                    ]
                },
            )
        # S3 may answer 200 and put the error in the body; a real success names the object.
        if not response.get("ETag") and not response.get("Location"):
            raise StorageError(f"S3 complete_multipart_upload {key!r} failed: no ETag in answer")

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        with _errors("abort_multipart_upload", key):
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), UploadId=upload_id
            )

    async def multipart_create(self) -> MultipartHandle:
        key = f"{PENDING_PREFIX}{uuid.uuid4().hex}"
        return MultipartHandle(key=key, upload_id=await self._create_upload(key))

    async def multipart_put(
        self, handle: MultipartHandle, part_number: int, offset: int, data: bytes
    ) -> str:
        return await self._upload_part(handle.key, handle.upload_id, part_number, data)

    async def multipart_complete(self, handle: MultipartHandle, parts: list[PartInfo]) -> str:
        await self._complete_upload(handle.key, handle.upload_id, parts)
        return handle.key

    async def multipart_abort(self, handle: MultipartHandle) -> None:
        with contextlib.suppress(ObjectMissing):
            await self._abort_upload(handle.key, handle.upload_id)

    async def multipart_list(self, handle: MultipartHandle) -> list[PartInfo]:
        paginator = self.client.get_paginator("list_parts")
        pages = paginator.paginate(
            Bucket=self.bucket, Key=self._full(handle.key), UploadId=handle.upload_id
        )
        found: list[PartInfo] = []
        with _errors("list_parts", handle.key):
            async for page in pages:
                found.extend(
                    PartInfo(
                        part_number=int(part["PartNumber"]),
                        size=int(part["Size"]),
                        etag=_strip_etag(part["ETag"]),
                    )
                    for part in page.get("Parts", [])
                )
        return found

    async def presign_part(
        self, handle: MultipartHandle, part_number: int, expires_seconds: int
    ) -> str | None:
        with _errors("presign upload_part", handle.key):
            return str(
                await self._presigner().generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.bucket,
                        "Key": self._full(handle.key),
                        "UploadId": handle.upload_id,
                        "PartNumber": part_number,
                    },
                    ExpiresIn=expires_seconds,
                )
            )

    async def presign_get(
        self, key: str, *, filename: str, content_type: str, expires_seconds: int
    ) -> str | None:
        with _errors("presign get_object", key):
            return str(
                await self._presigner().generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.bucket,
                        "Key": self._full(key),
                        "ResponseContentDisposition": content_disposition(filename),
                        "ResponseContentType": content_type,
                    },
                    ExpiresIn=expires_seconds,
                )
            )

    def _presigner(self) -> Any:
        if self._signer is None:
            raise StorageError("S3 store used before start()")
        return self._signer
