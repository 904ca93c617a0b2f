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


def source_folder(loaded) -> Path | None:
    """The folder a spec's source bundle is packed from: ``spec.source``, else the spec's folder;
    None when the job runs no ``command:`` (an algorithm or an image's own entry point)."""
    from mlrt.planning import training_spec

    spec = training_spec(loaded)
    if not spec.get("command"):
        return None
    return Path(spec.get("source") or loaded.base_dir)


def pack_spec(loaded) -> tuple[Bundle, Path] | None:
    """The source bundle of a spec and the folder it was packed from (see :func:`source_folder`),
    leaving out the folders mlrt writes to: its home and a ``file://`` output inside the source."""
    from mlrt.bundles import pack
    from mlrt.planning import training_spec
    from mlrt.store import mlrt_home

    folder = source_folder(loaded)
    if folder is None:
        return None
    left_out = [mlrt_home(), *([loaded.source_path] if loaded.source_path else [])]
    output = (training_spec(loaded).get("output") or {}).get("path") or ""
    if output.startswith("file://"):
        left_out.append(Path(output.removeprefix("file://")))
    return pack(folder, tuple(left_out)), folder


def described(bundle: Bundle, folder: Path | None = None) -> dict:
    """What a run's record keeps of its bundle (``source``): digest, files, size, and the folder it
    was packed from on the submitter's machine when known."""
    entry: dict = {"digest": bundle.digest, "files": bundle.files, "size": bundle.size}
    if folder is not None:
        entry["folder"] = str(folder)
    return entry


def pack_for_upload(spec_file: str, overrides: tuple[str, ...]) -> tuple[Bundle, str] | None:
    """The bundle ``mlrt submit --server`` uploads for the spec file ``spec_file`` and where the spec's
    folder lies inside it (``source_dir``, '' for its top), or None for a job without a ``command:``.

    Read from the spec's text (and ``--set``) without validating it: the service validates, on its
    side. The spec file itself stays out (its ``spec.env`` values travel only in the spec, which
    the service keeps masked and encrypted); a spec outside its source gets ``source_dir`` ''."""
    from mlrt import limits
    from mlrt.bundles import pack
    from mlrt.spec import SpecError, read_spec_text
    from mlrt.spec.loading import apply_override
    from mlrt.store import mlrt_home

    path = Path(spec_file).resolve()
    try:
        document = limits.load_yaml(read_spec_text(path))
        for assignment in overrides:
            apply_override(document, assignment)
    except (SpecError, ValueError):
        return None  # not a spec the service would accept: it says why
    spec = document.get("spec") if isinstance(document, dict) else None
    if isinstance(spec, dict) and document.get("kind") == "TuningJob":
        spec = spec.get("template")
    if not isinstance(spec, dict) or not spec.get("command"):
        return None
    folder = (path.parent / str(spec.get("source") or ".")).resolve()
    left_out = [mlrt_home(), path]
    output = str((spec.get("output") or {}).get("path") or "") if isinstance(spec.get("output"), dict) else ""
    if output and not output.startswith("s3://"):
        left_out.append((path.parent / output.removeprefix("file://")).resolve())
    bundle = pack(folder, tuple(left_out))
    where = path.parent.relative_to(folder).as_posix() if path.parent.is_relative_to(folder) else "."
    return bundle, "" if where == "." else where
