"""Blob storage: the BlobStore interface and its backends, chosen by `YUNTU_STORAGE_URL`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from yuntu.storage.base import BlobStore


def open_store(url: str) -> BlobStore:
    """`file:///abs/path` -> local disk; `s3://...` -> S3-compatible (see yuntu.storage.s3)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        from yuntu.storage.local import LocalStore

        return LocalStore(Path(unquote(urlsplit(url).path)))
    if scheme in ("s3", "s3+http", "s3+https"):
        from yuntu.storage.s3 import S3Store

        return S3Store.from_url(url)
    raise ValueError(f"unsupported storage URL scheme {scheme!r} (use file:// or s3://)")
