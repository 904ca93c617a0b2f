"""Source bundles: a ``command:`` job's code folder as one content-addressed tarball.

:func:`pack` turns ``spec.source`` (default: the spec's folder) into a
gzipped tar whose bytes depend on the files' paths, contents and executable
bits only: entries sorted, every mtime 0, uid/gid 0, no user names, and the
gzip header without a name or time. Its sha256 is the bundle's **digest**, so
the same files give the same digest on every machine and one changed byte a
new one. Left out: what ``.gitignore`` files (each applies to its folder and
below) and a ``.mlrtignore`` at the top say, with git's rules (the
``pathspec`` library), plus ``.git/``, ``__pycache__/`` and the folders mlrt
itself writes to when they lie inside (its home, the run's output).

:func:`unpack` is the only way a bundle becomes files, on the user's machine
and on a multi-tenant service alike, so it trusts nothing in the bytes:
regular files only (no links, devices or FIFOs), relative paths without
``..``, no path twice, at most :data:`mlrt.limits.MAX_SOURCE_FILES` files
whose sizes add up to at most :func:`mlrt.limits.max_source_bytes`, with the
decompressed stream itself counted, so a gzip bomb stops at the limit.
Anything else is a :class:`BundleError` and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from mlrt import limits

IGNORE_FILES = (".gitignore",)
"""Ignore files read in every folder; their patterns apply to that folder and below."""
TOP_IGNORE_FILE = ".mlrtignore"
"""mlrt's own ignore file, read at the top of the source only (git's syntax)."""
ALWAYS_LEFT_OUT = (".git/", "__pycache__/", "*.pyc")
"""Never part of a bundle: version control and Python's caches."""
_TAR_OVERHEAD = 3 * tarfile.BLOCKSIZE
"""Header blocks per file a well-formed bundle may take (a long name takes a PAX header)."""


class BundleError(ValueError):
    """A source folder cannot be packed, or a tarball is not a bundle mlrt unpacks; the message says why."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A packed source folder: ``data`` (gzipped tar) and ``digest``, its sha256 in hex."""

    data: bytes
    digest: str
    files: int
    size: int
    """The files' sizes added up (what the limit counts)."""

    @classmethod
    def of(cls, data: bytes) -> Bundle:
        """The bundle of tarball bytes ``data``, checked as :func:`unpack` checks them."""
        files, size = _walk_members(data, None)
        return cls(data=data, digest=digest_of(data), files=files, size=size)


def digest_of(data: bytes) -> str:
    """The content address of bundle bytes: their sha256 in hex."""
    return hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    """Whether ``text`` is a bundle digest (64 lower-case hex characters)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _limit() -> int:
    try:
        return limits.max_source_bytes()
    except ValueError as exc:
        raise BundleError(str(exc)) from None


# -- packing -----------------------------------------------------------------


def _ignore_rules(folder: Path, relative: str):
    """The ``.gitignore`` of ``folder`` (at ``relative`` in the source) as a pathspec, or None."""
    import pathspec

    lines: list[str] = []
    for name in IGNORE_FILES + ((TOP_IGNORE_FILE,) if not relative else ()):
        path = folder / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(rules: list[tuple[str, object]], relative: str, is_dir: bool) -> bool:
    """Whether ``relative`` is left out by the rules of the folders above it (deepest folder wins)."""
    verdict = False
    for base, spec in rules:
        if base and not relative.startswith(base + "/"):
            continue
        inner = relative[len(base) + 1 :] if base else relative
        result = spec.check_file(inner + ("/" if is_dir else ""))  # type: ignore[attr-defined]
        if result.include is not None:
            verdict = result.include
    return verdict


def source_files(root: Path, left_out: tuple[Path, ...] = ()) -> list[tuple[str, Path]]:
    """The files a bundle of ``root`` holds, as (path in the bundle, file), sorted by path.

    ``left_out`` are folders and files never packed (mlrt's home, the run's output, the spec file)
    when they lie inside.
    A symbolic link is packed as the file it points to when that lies inside ``root``; one that
    points outside is a :class:`BundleError` (name it in ``.mlrtignore`` to leave it out)."""
    import pathspec

    root = root.resolve()
    skipped = {path.resolve() for path in left_out}
    rules: list[tuple[str, object]] = [("", pathspec.GitIgnoreSpec.from_lines(ALWAYS_LEFT_OUT))]
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        relative = here.relative_to(root).as_posix() if here != root else ""
        own = _ignore_rules(here, relative)
        if own is not None:
            rules.append((relative, own))
        prefix = f"{relative}/" if relative else ""
        kept_dirs = []
        for name in sorted(dirs):
            path = here / name
            if path.is_symlink():
                names.append(name)  # judged as a link below
            elif path.resolve() not in skipped and not _ignored(rules, prefix + name, True):
                kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in sorted(names):
            path = here / name
            if path.resolve() in skipped or _ignored(rules, prefix + name, path.is_dir()):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise BundleError(
                        f"spec.source: {prefix + name} is a symbolic link to {target}, not to a file inside "
                        f"{root}; copy the file in or add {prefix + name} to {TOP_IGNORE_FILE}"
                    )
            if path.is_file():
                found.append((prefix + name, path))
    return sorted(found)


def pack(root: Path, left_out: tuple[Path, ...] = ()) -> Bundle:
    """The deterministic bundle of source folder ``root`` (see the module's docstring).

    Over the limit (:func:`mlrt.limits.max_source_bytes`) or over
    :data:`mlrt.limits.MAX_SOURCE_FILES` files: a :class:`BundleError` of one
    line naming the biggest files and how to leave them out."""
    if not root.is_dir():
        raise BundleError(f"spec.source: {root} is not a folder; name the folder that holds the job's code")
    files = source_files(root, left_out)
    limit = _limit()
    sizes = [(path.stat().st_size, name, path) for name, path in files]  # a link: its target's size
    total = sum(size for size, _, _ in sizes)
    if total > limit or len(files) > limits.MAX_SOURCE_FILES:
        biggest = ", ".join(f"{name} ({_mib(size)})" for size, name, _ in sorted(sizes, reverse=True)[:3])
        raise BundleError(
            f"spec.source: {root} holds {len(files)} files of {_mib(total)}, over the limit of "
            f"{_mib(limit)} and {limits.MAX_SOURCE_FILES} files (MLRT_MAX_SOURCE_BYTES); biggest: {biggest}; "
            f"list what the job does not need in {root / TOP_IGNORE_FILE} or point spec.source at a smaller folder"
        )
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for _, name, path in sorted(sizes, key=lambda item: item[1]):
                info = tarfile.TarInfo(name)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise BundleError(
                        f"spec.source: cannot read {name} ({exc.strerror}); add it to {TOP_IGNORE_FILE} if the job"
                        " does not need it"
                    ) from None
                info.size = len(data)
                info.mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return Bundle(data=data, digest=digest_of(data), files=len(files), size=total)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


# -- unpacking -----------------------------------------------------------------


class _Counted(io.RawIOBase):
    """A decompressed stream that refuses to yield more than ``limit`` bytes (a gzip bomb stops there)."""

    def __init__(self, data: bytes, limit: int):
        self.inner = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self.inner.read(min(len(buffer), self.left + 1))
        self.left -= len(chunk)
        if self.left < 0:
            raise BundleError("the bundle decompresses to more than its files may hold (MLRT_MAX_SOURCE_BYTES)")
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` cannot be unpacked, or None."""
    name = member.name
    if not member.isreg():
        return f"{name!r} is not a regular file (links, folders and devices are refused)"
    if not name or len(name) > limits.MAX_SOURCE_PATH_CHARS or "\\" in name or "\x00" in name:
        return f"{limits.cut(name)!r} is not a valid path"
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        return f"{name!r} is not a plain relative path (absolute, '..' or '.' refused)"
    return None


def _walk_members(data: bytes, dest: Path | None) -> tuple[int, int]:
    """Check every member of bundle ``data`` (writing it under ``dest`` when given); (files, size)."""
    limit = _limit()
    files = size = 0
    seen: set[str] = set()
    stream = _Counted(data, limit + _TAR_OVERHEAD * (limits.MAX_SOURCE_FILES + 2))
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
            for member in tar:
                problem = _member_problem(member)
                if problem is None and member.name in seen:
                    problem = f"{member.name!r} appears twice"
                if problem:
                    raise BundleError(f"refused source bundle: {problem}")
                seen.add(member.name)
                files += 1
                size += member.size
                if files > limits.MAX_SOURCE_FILES or size > limit:
                    raise BundleError(
                        f"refused source bundle: more than {limits.MAX_SOURCE_FILES} files or "
                        f"{_mib(limit)} (MLRT_MAX_SOURCE_BYTES)"
                    )
                if dest is not None:
                    _write(tar, member, dest)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"refused source bundle: not a gzipped tar ({exc})") from None
    return files, size


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Write regular file ``member`` under ``dest``: parents made here, the file new (``x`` mode), so
    no path can lead through a link or over a file written before."""
    target = dest.joinpath(*member.name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    assert source is not None
    with open(target, "xb") as out:
        shutil.copyfileobj(source, out)
    os.chmod(target, 0o755 if member.mode & stat.S_IXUSR else 0o644)


def unpack(data: bytes, dest: Path) -> int:
    """Unpack bundle ``data`` into ``dest`` (made here; it must not exist, or be empty); the files written.

    Any problem (see the module's docstring) is a :class:`BundleError`, and
    ``dest`` is removed again: nothing of a refused bundle is left."""
    if dest.exists() and any(dest.iterdir()):
        raise BundleError(f"{dest} is not empty; unpack a source bundle into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        files, _ = _walk_members(data, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return files
