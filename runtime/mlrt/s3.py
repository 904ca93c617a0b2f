"""S3 object storage: run artifacts and ``s3://`` data channels, through boto3.

URIs are ``s3://bucket/key`` for one object and ``s3://bucket/prefix/`` (a
trailing ``/``) for every object under a prefix ("a folder"). Keys are taken
literally: no percent decoding.

Credentials
    mlrt never takes keys itself: the client uses boto3's standard chain, in
    boto3's order: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (``AWS_SESSION_TOKEN``), a shared-config profile (``AWS_PROFILE``), web
    identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` with ``AWS_ROLE_ARN``, as EKS
    injects for a service account), then the container or instance role. The
    region comes from ``AWS_REGION``/``AWS_DEFAULT_REGION`` or the profile.

Endpoint
    ``MLRT_S3_ENDPOINT_URL`` if set (MinIO, Ceph and other S3-compatible
    stores), else boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
    handling, else AWS. With any of these three set, buckets are addressed
    path-style (``http://host/bucket/key``), which S3-compatible stores
    expect; otherwise boto3 chooses (a profile's ``s3.addressing_style`` is
    honoured).

Retries
    Every client retries throttling (``SlowDown``, 503), 5xx errors and
    connection errors with exponential backoff and jitter: botocore's
    ``standard`` retry mode, up to 10 retries (11 attempts) per request, or
    ``AWS_MAX_ATTEMPTS`` attempts (boto3's own variable) when it is set.
    On top of that, a whole upload that still fails is tried again after
    each of the pauses in ``MLRT_S3_UPLOAD_BACKOFF`` (:func:`retried`).

Transfers
    Files of at least ``MLRT_S3_MULTIPART_MB`` MiB (default 8, minimum 5, S3's
    smallest part) go up and down in parts of that size, several at a time.
    Every uploaded object carries the sha256 of its content as user metadata
    (``x-amz-meta-sha256``) and S3's own SHA256 checksum; downloads check the
    metadata when present, write to a temporary name and rename, so a failed
    or corrupt transfer never leaves a file at the destination. Every GET is
    pinned (``If-Match``) to the ETag seen when listing, so an object replaced
    mid-download fails the download instead of mixing versions.

Keys
    Artifact keys are built with :func:`object_key`, which refuses any
    relative path that could leave the run's prefix; downloads refuse keys
    that would land outside the destination folder.

One client per endpoint is created on first use and shared by every thread
of the process (boto3 clients are thread-safe; sessions are not, so each
client gets its own session, created under a lock).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from mlrt.artifacts import relative_path_problem, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from boto3.s3.transfer import TransferConfig
    from botocore.client import BaseClient
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

SCHEME = "s3://"
ENDPOINT_ENV = "MLRT_S3_ENDPOINT_URL"
# Our own first (passed to boto3), then the two boto3 reads itself.
ENDPOINT_VARIABLES = (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
MULTIPART_ENV = "MLRT_S3_MULTIPART_MB"
MULTIPART_MB_DEFAULT = 8
# S3 limits: parts are 5 MiB to 5 GiB (the last part may be smaller).
MULTIPART_MB_RANGE = (5, 5 * 1024)
MIB = 1 << 20
RETRIES = {"mode": "standard", "max_attempts": 10}
# boto3's variable for the attempts per request; when set it replaces our default.
MAX_ATTEMPTS_ENV = "AWS_MAX_ATTEMPTS"
UPLOAD_BACKOFF_ENV = "MLRT_S3_UPLOAD_BACKOFF"
UPLOAD_BACKOFF_DEFAULT = "1,2,4"
# At most this many retries of one upload, each pause at most this long: an
# upload is retried by the controller's loop, which waits for it.
UPLOAD_RETRIES_MAX = 10
UPLOAD_PAUSE_MAX = 300.0
SHA256_METADATA = "sha256"
# The bucket names boto3 itself accepts; S3 and compatible stores may be stricter.
BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")

_clients: dict[tuple[str | None, ...], BaseClient] = {}
_clients_lock = threading.Lock()
T = TypeVar("T")


class ChecksumMismatch(Exception):
    """A downloaded object's content does not match the sha256 in its metadata."""


class UploadFailed(Exception):
    """An upload still failed after every retry of :func:`retried`; the message names the last error."""


@dataclasses.dataclass(frozen=True)
class UploadedObject:
    """One file of an uploaded tree: its path relative to the tree, where it went, and its content."""

    path: str
    uri: str
    size: int
    sha256: str
    uploaded: bool  # False when an identical object (same size and sha256) was already there


@dataclasses.dataclass(frozen=True)
class RemoteObject:
    """An object found by :func:`list_objects`; ``relative`` is its path in a download."""

    bucket: str
    key: str
    relative: str
    size: int
    etag: str

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"{SCHEME}{self.bucket}/{self.key}"


class ObjectStream:
    """An object being read: ``size``, ``sha256`` (from its metadata, or None), and its content by iteration.

    Iterating yields chunks and closes the connection at the end; call
    :meth:`close` when stopping early (WSGI servers call it on any response
    iterable).
    """

    def __init__(self, body: Any, size: int, sha256: str | None, chunk_size: int) -> None:
        self._body, self._chunk_size = body, chunk_size
        self.size, self.sha256 = size, sha256

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body.iter_chunks(self._chunk_size)
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection."""
        self._body.close()


def _new_client(endpoints: tuple[str | None, ...], max_attempts: str | None) -> BaseClient:
    """A client for the values of :data:`ENDPOINT_VARIABLES`: path-style when any is set."""
    import boto3.session
    from botocore.config import Config

    # Without max_attempts in the config, botocore reads AWS_MAX_ATTEMPTS itself.
    # A copy: botocore rewrites the dict it is given (max_attempts -> total_max_attempts).
    retries = {"mode": RETRIES["mode"]} if max_attempts else dict(RETRIES)
    config = Config(retries=retries, s3={"addressing_style": "path"} if any(endpoints) else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoints[0], config=config)


def client() -> BaseClient:
    """The process's S3 client for the current endpoint and attempts per request (see the module
    docstring), created on first use."""
    endpoints = tuple(os.environ.get(name) or None for name in ENDPOINT_VARIABLES)
    max_attempts = os.environ.get(MAX_ATTEMPTS_ENV) or None
    key = (*endpoints, max_attempts)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(endpoints, max_attempts)
        return _clients[key]


def upload_backoff() -> list[float]:
    """Seconds to wait before each retry of a failed upload, from ``MLRT_S3_UPLOAD_BACKOFF``.

    A comma-separated list (default ``1,2,4``: four tries, waiting 1, 2 and
    4 s between them); an empty value means one try. At most
    :data:`UPLOAD_RETRIES_MAX` pauses of at most :data:`UPLOAD_PAUSE_MAX`
    seconds each. Raises ValueError naming the variable otherwise.
    """
    raw = os.environ.get(UPLOAD_BACKOFF_ENV, UPLOAD_BACKOFF_DEFAULT).strip()
    problem = (
        f"{UPLOAD_BACKOFF_ENV} must be up to {UPLOAD_RETRIES_MAX} comma-separated pauses in seconds, "
        f"each from 0 to {UPLOAD_PAUSE_MAX:g} (like {UPLOAD_BACKOFF_DEFAULT!r}), got {raw!r}"
    )
    try:
        pauses = [float(part) for part in raw.split(",")] if raw else []
    except ValueError:
        raise ValueError(problem) from None
    if len(pauses) > UPLOAD_RETRIES_MAX or not all(math.isfinite(p) and 0 <= p <= UPLOAD_PAUSE_MAX for p in pauses):
        raise ValueError(problem)
    return pauses


def retried(upload: Callable[[], T], on_retry: Callable[[int, Exception, float], None] | None = None) -> T:
    """Call ``upload`` until it returns, waiting :func:`upload_backoff` between tries.

    boto3 already retries each request; this retries the whole upload (S3
    gone for longer than one request's retries). ``on_retry(tries, error,
    pause)`` is called before each pause. A ValueError (a bad key or
    setting) is raised at once: a retry cannot help. Raises
    :class:`UploadFailed` with the last error and the number of tries.
    """
    pauses = upload_backoff()
    tries = 0
    while True:
        tries += 1
        try:
            return upload()
        except ValueError:
            raise
        except Exception as exc:
            if tries > len(pauses):
                raise UploadFailed(
                    f"{type(exc).__name__}: {exc} (after {tries} tr{'ies' if tries > 1 else 'y'})"
                ) from exc
            if on_retry is not None:
                on_retry(tries, exc, pauses[tries - 1])
            time.sleep(pauses[tries - 1])


def transfer_config() -> TransferConfig:
    """Multipart threshold and part size from ``MLRT_S3_MULTIPART_MB`` (default 8 MiB)."""
    from boto3.s3.transfer import TransferConfig

    raw = os.environ.get(MULTIPART_ENV, str(MULTIPART_MB_DEFAULT))
    low, high = MULTIPART_MB_RANGE
    if not raw.isdecimal() or not low <= int(raw) <= high:
        raise ValueError(f"{MULTIPART_ENV} must be a whole number of MiB from {low} to {high}, got {raw!r}")
    size = int(raw) * MIB
    return TransferConfig(multipart_threshold=size, multipart_chunksize=size)


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty or end in ``/``.

    Raises ValueError naming ``uri`` when it is not an ``s3://`` URI or its
    bucket name is not one boto3 accepts.
    """
    if not uri.startswith(SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not BUCKET.fullmatch(bucket):
        raise ValueError(f"bad bucket name {bucket!r} in {uri!r} (letters, digits, '.', '-', '_')")
    return bucket, key


def is_prefix(uri: str) -> bool:
    """Whether ``uri`` names a prefix (a folder: ends in ``/``) rather than one object."""
    return uri.endswith("/")


def object_key(prefix_key: str, relative: str) -> str:
    """The key of ``relative`` under ``prefix_key`` (a run's prefix, with or without a trailing ``/``).

    Raises ValueError for any ``relative`` that could leave the prefix (see
    :func:`relative_path_problem`): artifact keys can never escape the run's prefix.
    """
    problem = relative_path_problem(relative)
    if problem:
        raise ValueError(f"artifact path {relative!r} {problem}: keys can never escape the run's prefix")
    prefix = prefix_key.rstrip("/")
    return f"{prefix}/{relative}" if prefix else relative


def _error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _head(bucket: str, key: str, **extra: Any) -> dict[str, Any] | None:
    """HEAD an object; None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client().head_object(Bucket=bucket, Key=key, **extra)
    except ClientError as error:
        if _error_code(error) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def sha256_of(uri: str) -> str | None:
    """The sha256 recorded in the object's metadata, or None when it has none.

    Raises FileNotFoundError when the object does not exist.
    """
    head = _head(*parse_uri(uri))
    if head is None:
        raise FileNotFoundError(f"no such S3 object: {uri}")
    return head.get("Metadata", {}).get(SHA256_METADATA)


def _tree_files(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """``(relative, path)`` for every regular file under ``root``, and the paths skipped."""
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.resolve().is_relative_to(root) or relative_path_problem(relative):
            skipped.append(relative)
        elif path.is_file():
            files.append((relative, path))
    return files, skipped


def upload_tree(local_dir: Path, prefix_uri: str) -> tuple[list[UploadedObject], list[str]]:
    """Upload every regular file under ``local_dir`` below ``prefix_uri``, keeping relative paths.

    A file whose object already exists with the same size and sha256
    metadata is not sent again. Returns the objects sorted by path, and the
    paths skipped: symlinks that lead outside ``local_dir`` and names that
    cannot be keys (a backslash, for example); all of ``local_dir`` when it is
    a symbolic link itself (:func:`mlrt.artifacts.walk_root`).
    """
    from mlrt.artifacts import walk_root

    bucket, prefix = parse_uri(prefix_uri)
    root = walk_root(local_dir)
    if root is None:
        return [], [local_dir.name]
    files, skipped = _tree_files(root) if root.is_dir() else ([], [])
    config = transfer_config()
    objects = []
    for relative, path in files:
        key = object_key(prefix, relative)
        size, digest = path.stat().st_size, sha256_file(path)
        head = _head(bucket, key)
        same = (
            head is not None
            and head["ContentLength"] == size
            and head.get("Metadata", {}).get(SHA256_METADATA) == digest
        )
        if not same:
            extra = {"Metadata": {SHA256_METADATA: digest}, "ChecksumAlgorithm": "SHA256"}
            client().upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config)
        objects.append(UploadedObject(relative, f"{SCHEME}{bucket}/{key}", size, digest, uploaded=not same))
    return objects, skipped


def _list(bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object entry under ``prefix``, page by page; FileNotFoundError when the bucket does not exist."""
    from botocore.exceptions import ClientError

    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])
    except ClientError as error:
        if _error_code(error) == "NoSuchBucket":
            raise FileNotFoundError(f"no such S3 bucket: {bucket}") from error
        raise


def list_objects(uri: str) -> list[RemoteObject]:
    """The object ``uri`` names, or every object under it when it ends in ``/``, sorted by key.

    For one object ``relative`` is its file name; under a prefix it is the key
    after the prefix (keys ending in ``/``, folder markers, are left out).
    Raises FileNotFoundError when there is nothing, and ValueError when a key
    under the prefix could not be a relative path (``a//b``, ``../x``).
    """
    bucket, key = parse_uri(uri)
    if not is_prefix(uri):
        head = _head(bucket, key) if key else None
        if head is None:
            raise FileNotFoundError(f"no such S3 object: {uri}")
        return [RemoteObject(bucket, key, PurePosixPath(key).name, head["ContentLength"], head["ETag"])]
    found = []
    for item in _list(bucket, key):
        relative = item["Key"][len(key) :]
        if relative.endswith("/"):
            continue
        problem = relative_path_problem(relative)
        if problem:
            raise ValueError(f"refusing to download {uri}: key {item['Key']!r} {problem}")
        found.append(RemoteObject(bucket, item["Key"], relative, item["Size"], item["ETag"]))
    if not found:
        raise FileNotFoundError(f"no S3 objects under {uri}")
    return sorted(found, key=lambda obj: obj.key)


class _Pinned:
    """An s3transfer subscriber (called by method name) that hands over the size and ETag already known.

    s3transfer then skips its own HEAD and sends ``If-Match: ETAG`` with every GET.
    """

    def __init__(self, size: int, etag: str) -> None:
        self._size, self._etag = size, etag

    def on_queued(self, future: TransferFuture, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


def _receive(obj: RemoteObject, tmp: str, manager: TransferManager) -> dict[str, str]:
    """Write the listed version of ``obj`` to ``tmp``; return its user metadata.

    A small object comes in one GET; a large one in ranged GETs, several at a
    time. Every request carries ``If-Match: ETAG``, so S3 refuses (412) if the
    object was replaced after it was listed.
    """
    if obj.size < manager.config.multipart_threshold:
        response = client().get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)
        with open(tmp, "wb") as handle:
            for chunk in response["Body"].iter_chunks(MIB):
                handle.write(chunk)
        return response.get("Metadata", {})
    head = client().head_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)
    manager.download(obj.bucket, obj.key, tmp, subscribers=[_Pinned(obj.size, obj.etag)]).result()
    return head.get("Metadata", {})


def _fetch(obj: RemoteObject, target: Path, manager: TransferManager) -> None:
    """Download ``obj`` to ``target`` via a temporary name, checking its sha256 metadata when present."""
    from botocore.exceptions import ClientError

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            metadata = _receive(obj, tmp, manager)
        except ClientError as error:
            code = _error_code(error)
            if code in ("412", "PreconditionFailed"):
                raise RuntimeError(f"S3 object changed while downloading: {obj.uri}") from error
            if code in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"S3 object disappeared while downloading: {obj.uri}") from error
            raise
        expected, actual = metadata.get(SHA256_METADATA), sha256_file(Path(tmp))
        if expected is not None and expected != actual:
            raise ChecksumMismatch(f"sha256 mismatch for {obj.uri}: metadata says {expected}, content is {actual}")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; workers may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_objects(objects: list[RemoteObject], dest_dir: Path) -> Path:
    """Download ``objects`` (from :func:`list_objects`) into ``dest_dir``, each at its relative path.

    Each download is pinned to the listed ETag, so a concurrent overwrite
    fails it instead of mixing versions. Returns ``dest_dir``.
    """
    from boto3.s3.transfer import create_transfer_manager

    with create_transfer_manager(client(), transfer_config()) as manager:
        for obj in objects:
            _fetch(obj, dest_dir / obj.relative, manager)
    return dest_dir


def download(uri: str, dest: Path) -> Path:
    """Download one object to the file ``dest``, or everything under a prefix (``.../``) into the folder ``dest``.

    Keys under a prefix keep their path relative to it; a key that would
    leave ``dest`` is refused (ValueError) before anything is written. The
    sha256 metadata is checked when present (:class:`ChecksumMismatch`).
    Returns ``dest``.
    """
    objects = list_objects(uri)
    if is_prefix(uri):
        return download_objects(objects, dest)
    return download_objects([dataclasses.replace(objects[0], relative=dest.name)], dest.parent) / dest.name


def open_object(uri: str, chunk_size: int = MIB) -> ObjectStream:
    """Start reading an object, for streaming it on (an HTTP response, for example).

    The request is made now, so a missing object raises FileNotFoundError
    before anything is sent on; iterate the result for the content, in
    chunks of ``chunk_size`` bytes.
    """
    from botocore.exceptions import ClientError

    bucket, key = parse_uri(uri)
    try:
        response = client().get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _error_code(error) in ("404", "NoSuchKey", "NoSuchBucket"):
            raise FileNotFoundError(f"no such S3 object: {uri}") from error
        raise
    metadata = response.get("Metadata", {})
    return ObjectStream(response["Body"], response["ContentLength"], metadata.get(SHA256_METADATA), chunk_size)
