"""S3 fixtures: a real moto server on loopback, so the S3 backend is tested over HTTP with the
same client code production uses. Any suite can run on S3 by asking for `s3_storage_url`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

S3_REGION = "us-east-1"
S3_ACCESS_KEY = "test"
S3_SECRET_KEY = "test"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto server shared by the session."""
    # Port 0: the server binds a free port itself, so there is no window for another process
    # to take it between choosing and binding.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_admin_client(endpoint: str) -> Any:
    """A plain boto3 client for setup and for peeking at the bucket behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )


@pytest.fixture
def s3_storage_url(moto_endpoint: str) -> str:
    """A `YUNTU_STORAGE_URL` for a fresh, empty bucket."""
    bucket = f"yuntu-{uuid.uuid4().hex[:12]}"
    s3_admin_client(moto_endpoint).create_bucket(Bucket=bucket)
    return (
        f"s3://{S3_ACCESS_KEY}:{S3_SECRET_KEY}@{bucket}"
        f"?endpoint={moto_endpoint}&region={S3_REGION}&addressing=path"
    )
