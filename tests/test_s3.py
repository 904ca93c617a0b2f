"""S3 artifacts and the ``s3://`` data scheme, with boto3 against a real moto server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlrt import s3
from mlrt.data import load_dataset
from mlrt_data.s3 import S3Scheme

BUCKET = "mlrt-test"
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


@pytest.fixture
def prefix(s3_endpoint: str) -> str:
    """A fresh ``s3://mlrt-test/<unique>/`` for this test (the server keeps objects between tests)."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex}/"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def put(uri: str, body: bytes, **extra: Any) -> None:
    bucket, key = s3.parse_uri(uri)
    s3.client().put_object(Bucket=bucket, Key=key, Body=body, **extra)


@contextmanager
def hook(event: str, handler: Callable[..., Any]) -> Iterator[None]:
    """Register a botocore event handler on the shared client for the duration of the block."""
    events = s3.client().meta.events
    unique_id = f"test-{uuid.uuid4().hex}"
    events.register(event, handler, unique_id=unique_id)
    try:
        yield
    finally:
        events.unregister(event, unique_id=unique_id)


@contextmanager
def counting(operation: str) -> Iterator[list[dict[str, Any]]]:
    """Yield a list that collects the parameters of every ``operation`` request the shared client makes."""
    calls: list[dict[str, Any]] = []
    with hook(f"before-parameter-build.s3.{operation}", lambda params, **_: calls.append(dict(params))):
        yield calls


# -- URIs and keys ---------------------------------------------------------------------------


def test_parse_uri_splits_bucket_and_key():
    assert s3.parse_uri("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert s3.parse_uri("s3://bucket/prefix/") == ("bucket", "prefix/")
    assert s3.parse_uri("s3://bucket") == ("bucket", "")


@pytest.mark.parametrize("uri", ["bucket/key", "s3:/bucket/key", "s3://", "s3:///key", "s3://bad bucket/k", "gs://b/k"])
def test_parse_uri_refuses_malformed_uris_naming_them(uri: str):
    with pytest.raises(ValueError) as caught:
        s3.parse_uri(uri)
    assert repr(uri) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("relative", ["../x", "/abs", "a/../../b", "a\\b", "", "a//b", "a/", "./a", "a/\0b", ".."])
def test_object_key_refuses_paths_that_could_leave_the_prefix(relative: str):
    with pytest.raises(ValueError, match="keys can never escape the run's prefix"):
        s3.object_key("runs/r1", relative)


def test_object_key_joins_prefix_and_relative_path():
    assert s3.object_key("runs/r1", "a/b.txt") == "runs/r1/a/b.txt"
    assert s3.object_key("runs/r1/", "a/b.txt") == "runs/r1/a/b.txt"
    assert s3.object_key("", "model.pt") == "model.pt"
    assert s3.object_key("runs/r1", "..hidden/x..y") == "runs/r1/..hidden/x..y"


# -- client ----------------------------------------------------------------------------------


def test_client_takes_endpoint_and_credentials_from_the_environment(s3_endpoint: str):
    client = s3.client()
    assert client is s3.client()  # one cached client per endpoint
    assert client.meta.endpoint_url == s3_endpoint
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 11}  # 10 retries
    credentials = client._request_signer._credentials  # botocore keeps them privately; no public accessor
    assert (credentials.method, credentials.access_key) == ("env", "testing")  # boto3's chain found AWS_ACCESS_KEY_ID


def test_throttling_is_retried_with_backoff(prefix: str):
    uri = prefix + "throttled.txt"
    put(uri, b"eventually")
    sent: list[int] = []

    def slow_down_once(request: Any, **_: Any) -> Any:
        # Answer the first attempt the way S3 does when throttling; let later ones reach the server.
        from botocore.awsrequest import AWSResponse, HeadersDict

        sent.append(1)
        if len(sent) > 1:
            return None

        class Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield SLOW_DOWN

        return AWSResponse(request.url, 503, HeadersDict({"Content-Type": "application/xml"}), Raw())

    bucket, key = s3.parse_uri(uri)
    with hook("before-send.s3.GetObject", slow_down_once):
        response = s3.client().get_object(Bucket=bucket, Key=key)
    assert response["Body"].read() == b"eventually"
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(sent) == 2


# -- upload and download ---------------------------------------------------------------------


def make_tree(root: Path, outside: Path) -> None:
    (root / "checkpoints").mkdir(parents=True)
    (root / "model.pt").write_bytes(os.urandom(3000))
    (root / "checkpoints" / "epoch-1.pt").write_bytes(os.urandom(1000))
    (root / "metrics.json").write_text('{"loss": 0.1}')
    (root / "alias.json").symlink_to(root / "metrics.json")
    outside.write_text("secret")
    (root / "leak").symlink_to(outside)


def test_upload_tree_and_download_round_trip_with_sha256(prefix: str, tmp_path: Path):
    make_tree(tmp_path / "out", tmp_path / "outside.txt")
    objects, skipped = s3.upload_tree(tmp_path / "out", prefix)

    assert [o.path for o in objects] == ["alias.json", "checkpoints/epoch-1.pt", "metrics.json", "model.pt"]
    assert skipped == ["leak"]
    for obj in objects:
        local = tmp_path / "out" / obj.path
        assert (obj.uri, obj.size, obj.sha256, obj.uploaded) == (
            prefix + obj.path,
            local.stat().st_size,
            sha256(local),
            True,
        )
        assert s3.sha256_of(obj.uri) == obj.sha256
        bucket, key = s3.parse_uri(obj.uri)
        head = s3.client().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-sha256"] == obj.sha256
        assert "ChecksumSHA256" in head  # S3's own checksum, verified by the server on upload

    dest = s3.download(prefix, tmp_path / "back")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [o.path for o in objects]
    assert all(sha256(dest / o.path) == o.sha256 for o in objects)
    one = s3.download(prefix + "model.pt", tmp_path / "single" / "model.pt")
    assert sha256(one) == objects[-1].sha256


def test_upload_tree_skips_unchanged_objects(prefix: str, tmp_path: Path):
    make_tree(tmp_path / "out", tmp_path / "outside.txt")
    s3.upload_tree(tmp_path / "out", prefix)
    (tmp_path / "out" / "model.pt").write_bytes(os.urandom(3000))  # same size, new content

    with counting("PutObject") as puts:
        objects, _ = s3.upload_tree(tmp_path / "out", prefix)

    assert [o.path for o in objects if o.uploaded] == ["model.pt"]
    assert [put["Key"] for put in puts] == [s3.parse_uri(prefix)[1] + "model.pt"]
    assert s3.sha256_of(prefix + "model.pt") == sha256(tmp_path / "out" / "model.pt")


def test_large_files_go_multipart(prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLRT_S3_MULTIPART_MB", "5")
    (tmp_path / "out").mkdir()
    big = tmp_path / "out" / "weights.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))

    with counting("UploadPart") as parts:
        (obj,), _ = s3.upload_tree(tmp_path / "out", prefix)

    assert len(parts) == 3
    bucket, key = s3.parse_uri(obj.uri)
    etag = s3.client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")
    assert s3.sha256_of(obj.uri) == sha256(big)

    with counting("GetObject") as gets:
        back = s3.download(obj.uri, tmp_path / "back.bin")
    assert sha256(back) == sha256(big)
    assert sorted(get["Range"] for get in gets) == ["bytes=0-5242879", "bytes=10485760-", "bytes=5242880-10485759"]
    assert all(get["IfMatch"] == etag for get in gets)  # every part of the listed version, never a mix


def test_multipart_size_must_be_a_valid_part_size(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLRT_S3_MULTIPART_MB", "4")
    with pytest.raises(ValueError, match="MLRT_S3_MULTIPART_MB must be a whole number of MiB from 5 to 5120, got '4'"):
        s3.transfer_config()


def test_corrupted_sha256_metadata_fails_the_download_and_leaves_nothing(prefix: str, tmp_path: Path):
    uri = prefix + "model.pt"
    put(uri, b"real content", Metadata={"sha256": hashlib.sha256(b"other content").hexdigest()})

    with pytest.raises(s3.ChecksumMismatch, match=f"sha256 mismatch for {uri}: metadata says"):
        s3.download(uri, tmp_path / "dl" / "model.pt")
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_refuses_keys_that_would_leave_the_destination(prefix: str, tmp_path: Path):
    put(prefix + "ok.txt", b"fine")
    put(prefix + "a//b.txt", b"empty segment")

    with pytest.raises(ValueError, match=r"refusing to download .*: key '.*a//b.txt' has an empty segment"):
        s3.download(prefix, tmp_path / "dl")
    assert not (tmp_path / "dl").exists()  # refused before anything was written


def test_downloads_are_pinned_to_the_listed_version(prefix: str, tmp_path: Path):
    uri = prefix + "data.csv"
    put(uri, b"version 1")
    listed = s3.list_objects(uri)
    put(uri, b"version 2")

    with pytest.raises(RuntimeError, match=f"S3 object changed while downloading: {uri}"):
        s3.download_objects(listed, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_missing_objects_raise_file_not_found(prefix: str, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such S3 object"):
        s3.download(prefix + "nope.csv", tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="no S3 objects under"):
        s3.download(prefix + "empty/", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no such S3 bucket"):
        s3.list_objects("s3://no-such-bucket-here/prefix/")


def test_open_object_streams_content_with_size_and_sha256(prefix: str, tmp_path: Path):
    (tmp_path / "out").mkdir()
    content = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "out" / "blob").write_bytes(content)
    (obj,), _ = s3.upload_tree(tmp_path / "out", prefix)

    stream = s3.open_object(obj.uri, chunk_size=1 << 20)
    chunks = list(stream)
    assert (stream.size, stream.sha256) == (len(content), obj.sha256)
    assert len(chunks) == 4 and b"".join(chunks) == content
    with pytest.raises(FileNotFoundError, match="no such S3 object"):
        s3.open_object(prefix + "missing")


# -- the s3:// data scheme -------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("s3://bucket/data/train.csv", None),
        ("s3://bucket/data/", None),
        ("s3://bucket/", None),
        ("s3://bucket", "s3 URI names no object: 's3://bucket'"),
        ("s3://", "bad bucket name '' in 's3://'"),
        ("s3:/bucket/x.csv", "not an s3:// URI: 's3:/bucket/x.csv'"),
    ],
)
def test_scheme_check_is_syntax_only(uri: str, problem: str | None, monkeypatch: pytest.MonkeyPatch):
    # No endpoint and no credentials: validation must not need S3.
    for name in ("MLRT_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = S3Scheme().check(uri)
    assert result == problem if problem is None else result.startswith(problem)


def test_scheme_materializes_a_csv_and_reuses_it_until_it_changes(prefix: str, tmp_path: Path):
    uri = prefix + "data/train.csv"
    put(uri, b"x,label\n1,0\n2,1\n")
    scheme, cache = S3Scheme(), tmp_path / "cache"

    with counting("GetObject") as gets:
        first = scheme.materialize(uri, cache)
        again = scheme.materialize(uri, cache)
    assert first == again and first.name == "train.csv"
    assert first.is_relative_to(cache / "s3" / BUCKET)
    assert len(gets) == 1  # the second materialize downloaded nothing
    assert pd.read_csv(first)["x"].tolist() == [1, 2]

    put(uri, b"x,label\n3,0\n")
    changed = scheme.materialize(uri, cache)
    assert changed != first
    assert pd.read_csv(changed)["x"].tolist() == [3]
    assert pd.read_csv(first)["x"].tolist() == [1, 2]  # the old version stays as it was


def test_scheme_materializes_a_folder(prefix: str, tmp_path: Path):
    (tmp_path / "data" / "parts").mkdir(parents=True)
    (tmp_path / "data" / "parts" / "a.csv").write_text("x,label\n1,0\n")
    (tmp_path / "data" / "parts" / "b.csv").write_text("x,label\n2,1\n")
    s3.upload_tree(tmp_path / "data", prefix)
    uri, scheme, cache = prefix + "parts/", S3Scheme(), tmp_path / "cache"

    with counting("GetObject") as gets:
        folder = scheme.materialize(uri, cache)
        assert scheme.materialize(uri, cache) == folder
    assert len(gets) == 2  # a.csv and b.csv, once each
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "b.csv"]
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    dataset = load_dataset("train", folder, None, "label", None)
    assert dataset.features["x"].tolist() == [1, 2] and dataset.labels.tolist() == [0, 1]


def test_a_pods_sync_containers_restore_checkpoints_and_upload_on_sigterm(s3_endpoint, tmp_path):  # noqa: F811
    import signal
    import subprocess
    import sys
    import time

    from mlrt import s3sync

    def stored_sha256(key_uri):
        try:
            return s3.sha256_of(key_uri)
        except FileNotFoundError:
            return None

    uri = "s3://mlrt-test/sync/run-1"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    command = [sys.executable, "-m", "mlrt.s3sync", "watch", str(run), uri, "--every", "0.2"]
    watcher = subprocess.Popen(
        [*command, "--attempt", "1", "--worker", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        (run / "checkpoints" / "epoch-1.pt").write_bytes(b"weights after epoch 1")
        deadline = time.monotonic() + 30
        while stored_sha256(f"{uri}/checkpoints/epoch-1.pt") is None:  # uploaded while the worker runs
            assert time.monotonic() < deadline, "checkpoint not uploaded"
            time.sleep(0.1)
        (run / "output").mkdir()
        (run / "output" / "model.bin").write_bytes(b"final model")
        assert stored_sha256(f"{uri}/output/model.bin") is None
        watcher.send_signal(signal.SIGTERM)  # the worker exited: the kubelet stops the sidecar
        assert watcher.wait(30) == 0
    finally:
        watcher.kill()
    assert "final upload: 1 file(s)" in watcher.stdout.read()
    assert s3.sha256_of(f"{uri}/output/model.bin") == hashlib.sha256(b"final model").hexdigest()

    retry = tmp_path / "retry"
    assert s3sync.restore(retry, uri) == 1
    assert (retry / "checkpoints" / "epoch-1.pt").read_bytes() == b"weights after epoch 1"
    assert s3sync.restore(tmp_path / "first", "s3://mlrt-test/sync/never-ran") == 0


# Raise SIGTERM at each Python event (call, line, return) of a sidecar's wait in turn: Python runs the
# handler at the next point it checks for signals, so every place the wait can be when one lands is met.
SIGNAL_AT_EVERY_POINT = """
import signal, sys
from mlrt.s3sync import StopSignals

def events_of_a_wait():
    stop, seen = StopSignals(), []
    sys.settrace(lambda frame, event, arg: seen.append(event) or (lambda *a: seen.append(a[1])))
    stop.wait(0)
    sys.settrace(None)
    return len(seen)

points = events_of_a_wait()
for at in range(1, points + 1):
    stop, count = StopSignals(), 0
    def raise_at(frame, event, arg):
        global count
        count += 1
        if count == at:
            signal.raise_signal(signal.SIGTERM)
        return raise_at
    sys.settrace(raise_at)
    stop.wait(1)  # a signal landing as it returns is for the next wait
    sys.settrace(None)
    assert stop.wait(0), f"the signal raised at point {at} of {points} was lost"
print("stopped at", points, "points")
"""


def test_a_sidecars_stop_signal_ends_its_wait_wherever_it_lands():
    """The sidecar's SIGTERM handler must not take a lock the interrupted wait may hold (stop 31's CI hung
    60 s in ``threading.Event.wait`` whose handler called ``Event.set``): a signal at any point of a wait
    ends it or the next one, and every later wait returns at once."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SIGNAL_AT_EVERY_POINT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stopped at ")
