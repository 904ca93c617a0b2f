"""The ``s3`` scheme: an object or a prefix in S3 or an S3-compatible store.

::

    s3://bucket/data/train.csv     one object: a CSV or Parquet file
    s3://bucket/data/train/        a prefix (trailing ``/``): every object under it, as a folder

Credentials and the endpoint come from the environment as described in
:mod:`mlrt.s3` (boto3's standard chain; ``MLRT_S3_ENDPOINT_URL`` for
S3-compatible stores). Validation only checks the URI's form, so a spec can
be validated where no credentials are.

``materialize`` lists the object(s) and their ETags and downloads them once
into ``<cache_dir>/s3/<bucket>/<hash>``, where ``hash`` covers the URI and
every key and ETag: an unchanged object is reused, a changed one is
downloaded afresh. An object is placed in that folder under its own file
name (so its suffix still tells CSV from Parquet); a prefix becomes the
folder itself, keys kept relative to the prefix. Downloads are checked
against the sha256 metadata that mlrt writes on upload, when present.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from mlrt import s3
from mlrt.data import DataScheme


def cache_name(uri: str, objects: list[s3.RemoteObject]) -> str:
    """A folder name that changes whenever ``uri`` or any listed key or ETag does."""
    digest = hashlib.sha256(uri.encode())
    for obj in objects:
        digest.update(f"\n{obj.key}\0{obj.etag}".encode())
    return digest.hexdigest()[:32]


def _place(objects: list[s3.RemoteObject], folder: Path) -> None:
    """Download ``objects`` into a temporary folder beside ``folder``, then rename it into place.

    A concurrent materialize that finished first wins; its copy is identical.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        s3.download_objects(objects, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; workers may run as another user
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # else a concurrent materialize got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class S3Scheme(DataScheme):
    """An S3 object or prefix, downloaded into the cache and reused while its ETags are unchanged."""

    scheme: ClassVar[str] = "s3"
    description: ClassVar[str] = "an S3 object or prefix: s3://bucket/key.csv or s3://bucket/prefix/ (a folder)"

    def check(self, uri: str) -> str | None:
        """One line when ``uri`` is malformed or names no key; never contacts S3."""
        try:
            _, key = s3.parse_uri(uri)
        except ValueError as error:
            return str(error)
        if not key and not s3.is_prefix(uri):
            return f"s3 URI names no object: {uri!r} (use s3://bucket/key, s3://bucket/prefix/ or s3://bucket/)"
        return None

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        """Download the object or prefix unless this version is cached; return the local file or folder."""
        problem = self.check(uri)
        if problem:
            raise ValueError(problem)
        objects = s3.list_objects(uri)
        folder = cache_dir / "s3" / objects[0].bucket / cache_name(uri, objects)
        if not folder.is_dir():
            _place(objects, folder)
        return folder if s3.is_prefix(uri) else folder / objects[0].relative
