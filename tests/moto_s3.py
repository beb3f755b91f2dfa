"""An S3-compatible object store for tests: moto's threaded server on 127.0.0.1 with one bucket."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

# what s3fs needs besides the endpoint: a region and credentials (moto accepts any)
REGION, KEY, SECRET = "us-east-1", "testing", "testing"


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """Run a moto S3 server holding an empty ``bucket``; yield its endpoint URL (skip without s3fs/moto)."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import boto3

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY,
                     aws_secret_access_key=SECRET).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def storage_options(endpoint: str) -> dict:
    """``--storage-options`` for the server at ``endpoint``."""
    return {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}
