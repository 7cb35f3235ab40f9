"""A real S3-compatible server on loopback for the tests of stores on object storage: moto in server mode.

``s3`` (session-scoped) starts it on a free port, points the AWS environment (test credentials, region,
AWS_ENDPOINT_URL: what botocore, hence s3fs, reads) and fastsae's store cache at it, and creates one bucket;
``s3_url`` gives each test its own prefix in that bucket. A test module uses them with
``pytest_plugins = ["tests._s3_server"]``.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

BUCKET = "fastsae-tests"


def _clear_fs_instances() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # instances made before the environment changed


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "FASTSAE_STORE_CACHE": str(tmp_path_factory.mktemp("store-cache")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _clear_fs_instances()
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    try:
        yield {**env, "bucket": BUCKET}
    finally:
        _clear_fs_instances()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_url(s3) -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
