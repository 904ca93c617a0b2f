"""A real S3 endpoint for tests: moto's server on 127.0.0.1, an ephemeral port, in a thread of this process.

::

    with S3Server() as endpoint:      # "http://127.0.0.1:PORT"
        ...

As pytest fixtures, ``s3_server`` starts one server for the session and
``s3_endpoint`` points each test at it through the environment the way a
user would (``MLRT_S3_ENDPOINT_URL`` and the ``AWS_*`` credential variables;
nothing is passed in code) and makes sure the bucket :data:`BUCKET` exists.
Objects are not cleared between tests: use keys unique to the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import pytest

BUCKET = "mlrt-test"
REGION = "us-east-1"


class S3Server:
    """moto's ``ThreadedMotoServer`` bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> str:
        """Start serving; return the endpoint URL."""
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        """Stop serving (the port is released)."""
        self._server.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """One moto S3 server for the whole session; yields its endpoint URL."""
    from conftest import import_or_missing

    import_or_missing("moto.server", "moto", "the S3 tests need moto[server] (the test extra)")
    with S3Server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's S3 client at the session's server through the environment; the bucket ``mlrt-test`` exists."""
    from botocore.exceptions import ClientError

    from mlrt import s3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLRT_S3_MULTIPART_MB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    try:
        s3.client().create_bucket(Bucket=BUCKET)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return s3_server
