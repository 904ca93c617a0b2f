"""Where source bundles are kept, once per digest, and how a run's code comes back.

A bundle (:mod:`mlrt.bundles`) is kept in the metadata database
(``source_bundles``), except on a controller whose operator sets
``MLRT_SOURCE_STORE`` to an ``s3://bucket/prefix``: there bundles over
:data:`INLINE_BYTES` go to ``<prefix>/<digest>.tar.gz`` and the row keeps
only where. Every read checks the bytes against the digest, so a bundle that
changed where it is kept is refused rather than run.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlrt.bundles import Bundle, BundleError, digest_of, unpack
from mlrt.store import Store
from mlrt.store.models import SourceBundle

STORE_VARIABLE = "MLRT_SOURCE_STORE"
INLINE_BYTES = 1 << 20
"""Bundles up to this size stay in the database even with an S3 source store."""


def _s3_prefix() -> str | None:
    uri = os.environ.get(STORE_VARIABLE, "").strip()
    if not uri:
        return None
    if not uri.startswith("s3://"):
        raise BundleError(f"{STORE_VARIABLE}: expected an s3://bucket/prefix, got {uri!r}")
    return uri.rstrip("/")


def keep(store: Store, bundle: Bundle) -> bool:
    """Keep ``bundle`` (once per digest); whether it was new."""
    if store.source_bundle(bundle.digest) is not None:
        return False
    prefix = _s3_prefix() if len(bundle.data) > INLINE_BYTES else None
    row = SourceBundle(digest=bundle.digest, size=len(bundle.data), files=bundle.files)
    if prefix:
        from mlrt import s3

        row.uri = f"{prefix}/{bundle.digest}.tar.gz"
        bucket, key = s3.parse_uri(row.uri)
        s3.client().put_object(Bucket=bucket, Key=key, Body=bundle.data, Metadata={"sha256": bundle.digest})
    else:
        row.data = bundle.data
    return store.put_source_bundle(row)


def load(store: Store, digest: str) -> bytes:
    """The bytes of the kept bundle ``digest``; :class:`BundleError` when it is not kept or has changed."""
    row = store.source_bundle(digest)
    if row is None:
        raise BundleError(f"no source bundle {digest[:12]} is kept here; submit the job again to upload it")
    if row.data is not None:
        data = row.data
    else:
        from mlrt import s3

        bucket, key = s3.parse_uri(row.uri or "")
        data = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    if digest_of(data) != digest:
        raise BundleError(f"source bundle {digest[:12]} no longer matches its digest; it was changed where it is kept")
    return data


def restore(store: Store, digest: str, dest: Path) -> int:
    """Unpack the kept bundle ``digest`` into the new folder ``dest``; the files written."""
    return unpack(load(store, digest), dest)


def run_digest(record: dict) -> str | None:
    """The digest of the source bundle a run's record names, or None (no bundle: an
    ``algorithm:`` or image-only job, or a run from before bundles)."""
    return (record.get("source") or {}).get("digest")
