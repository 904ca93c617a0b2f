"""The ``file`` scheme: a local file or folder.

Accepted forms, all resolved against the spec file's folder when relative::

    file:///abs/path/train.csv     absolute
    file://./data/train.csv        relative
    file://data/train.csv          relative (no host part is recognised)
    data/train.csv                 a bare path, also relative

``~`` expands to the home folder. Paths are taken literally: no percent
decoding. The canonical form is ``file:///abs/path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from mlrt.data import DataScheme

PREFIX = "file://"


def local_path(uri: str, base_dir: Path | None = None) -> Path:
    """The absolute, normalized path that ``uri`` names.

    Relative paths are taken against ``base_dir`` (default: the current
    folder). Symbolic links are kept, not followed.
    """
    raw = uri[len(PREFIX) :] if uri.startswith(PREFIX) else uri
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return Path(os.path.normpath(path))


class FileScheme(DataScheme):
    """A channel that already exists on the local file system (a file or a folder)."""

    scheme: ClassVar[str] = "file"
    description: ClassVar[str] = "a local file or folder: file:///abs/path, file://./rel/path or a bare path"

    def resolve(self, uri: str, base_dir: Path) -> str:
        """Make a relative path absolute against ``base_dir``; return ``file:///abs/path``."""
        return PREFIX + local_path(uri, base_dir).as_posix()

    def check(self, uri: str) -> str | None:
        """``file not found: PATH`` or ``file not readable: PATH``, else None."""
        path = local_path(uri)
        if not path.exists():
            return f"file not found: {path}"
        if not os.access(path, os.R_OK):
            return f"file not readable: {path}"
        return None

    def local_path(self, uri: str, cache_dir: Path) -> Path | None:
        """The path itself (local data is used in place)."""
        return local_path(uri)

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        """The path itself: local data is used in place, never copied into ``cache_dir``."""
        path = local_path(uri)
        if not path.exists():
            raise FileNotFoundError(f"file not found: {path}")
        return path
