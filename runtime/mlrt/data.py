"""Data channels: URI schemes that plugins provide, and loading a channel in a worker.

A channel is a named input (``train``, ``validation``, ``test`` ...) given in
the spec as a URI, or as a mapping with ``uri``, ``format``, ``label`` and
``id`` keys and the column roles of :mod:`mlrt.columns` (``features`` or
``exclude``, ``weight``, ``analysis``). Before workers start, the controller asks the channel's
``DataScheme`` to materialize it as a local file or folder; the worker sees
that path in ``MLRT_CHANNEL_<NAME>``. Tabular channels (CSV or Parquet) are
loaded with :func:`load_dataset`.
"""

from __future__ import annotations

import abc
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from mlrt.algorithms import Hyperparameter

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.algorithms import Dataset
    from mlrt.columns import Roles

FORMATS = ("csv", "parquet")


def uri_scheme(uri: str) -> str:
    """The part of ``uri`` before ``://`` (``"file"`` for a bare path)."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


class DataScheme(abc.ABC):
    """Base class for a data-channel URI scheme.

    ``resolve`` and ``check`` run at validation time and must not write
    anything; ``materialize`` runs in the controller before launch and may
    download or generate files under ``cache_dir``.
    """

    scheme: ClassVar[str]
    description: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Hyperparameter]] = {}
    """The settings a channel URI of this scheme may carry as query parameters
    (``builtin://sklearn/iris?split=train&seed=3``): name -> ``Hyperparameter``,
    checked when the plugin loads. When a scheme declares any, mlrt refuses a
    job whose URI has an unknown, repeated or invalid one (one line naming it)
    before the scheme's own ``check``; :meth:`settings_of` gives them typed."""

    def settings_of(self, uri: str) -> tuple[dict[str, Any], list[str]]:
        """``uri``'s query parameters checked against :attr:`settings`: the values converted to
        their types with defaults filled in, and one line per problem."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for key, text in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
            entry = self.settings.get(key)
            if entry is None:
                problems.append(f"unknown query parameter {key!r} (allowed: {', '.join(self.settings) or 'none'})")
            elif key in values:
                problems.append(f"query parameter {key!r} is given twice")
            else:
                value, problem = entry.check(_typed(text, entry.type))
                if problem:
                    problems.append(f"query parameter {key!r} {problem}")
                values[key] = value
        defaults = {k: e.default for k, e in self.settings.items() if k not in values and e.default is not None}
        return {**values, **defaults}, problems

    def resolve(self, uri: str, base_dir: Path) -> str:
        """Return ``uri`` in canonical form (e.g. a relative path made absolute).

        ``base_dir`` is the folder of the spec file, which relative paths are
        relative to. The default returns ``uri`` unchanged.
        """
        return uri

    @abc.abstractmethod
    def check(self, uri: str) -> str | None:
        """Return a one-line problem with the resolved ``uri``, or None if it is usable."""

    @abc.abstractmethod
    def materialize(self, uri: str, cache_dir: Path) -> Path:
        """Make the channel available locally and return its path."""

    def local_path(self, uri: str, cache_dir: Path) -> Path | None:
        """Where ``materialize`` will place the channel, if known without side
        effects (``mlrt validate`` shows it). Default: None (unknown)."""
        return None

    def default_label(self, uri: str) -> str:
        """The label column to use when the spec names none (default ``"label"``)."""
        return "label"


def _typed(text: str, kind: type) -> Any:
    """A query parameter's text as ``kind`` (the text itself when it does not convert)."""
    try:
        if kind is bool:
            return {"true": True, "false": False, "1": True, "0": False}.get(text.lower(), text)
        return kind(text) if kind in (int, float) else text
    except ValueError:
        return text


def infer_format(path: Path, declared: str | None) -> str:
    """The table format of ``path``: ``declared`` if given, else from its suffix."""
    if declared:
        return declared
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def load_dataset(
    name: str, path: Path, fmt: str | None, label: str | None, id_column: str | None, roles: Roles | None = None
) -> Dataset:
    """Load a CSV or Parquet channel into features, labels and ids.

    A folder is read as every ``*.csv``/``*.parquet`` file in it, in name
    order. ``label`` names the label column; a channel without it (for
    example unlabeled data to predict on) has ``labels=None``. ``roles``
    (:func:`mlrt.columns.roles`) splits the other columns into the model's
    features, the weights and the report-only columns; without it every other
    column is a feature.
    """
    import pandas as pd

    from mlrt.algorithms import Dataset

    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".parquet", ".pq"))
        if path.is_dir()
        else [path]
    )
    frames = []
    for file in files:
        kind = infer_format(file, fmt)
        frames.append(pd.read_parquet(file) if kind == "parquet" else pd.read_csv(file))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if id_column and id_column in frame.columns:
        ids = frame.pop(id_column)
    else:
        ids = pd.Series(range(len(frame)), name="id")
    labels = frame.pop(label) if label and label in frame.columns else None
    if roles is None:
        return Dataset(name=name, features=frame, labels=labels, ids=ids.reset_index(drop=True))
    features, weights, analysis = roles.split(name, frame)
    return Dataset(name, features, labels, ids.reset_index(drop=True), weights, analysis)


SETTLED = 1.0
"""Seconds since a file last changed before its hash is remembered (:func:`content_hash`)."""
_REMEMBERED = 1024  # paths whose hash is remembered, the most recently hashed
_hashes: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # path -> (its files' signature, hash)
_hash_locks = [threading.Lock() for _ in range(64)]  # one path is hashed by one thread at a time


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, in order).

    Remembered by the process while the files stay as they were, so a controller that
    launches many runs of one dataset reads it once, not once a run, and runs launched
    together wait for one reading. A file counts as changed when its device, inode, size,
    modification or status-change time moved (the test of git's index). The hash of a file
    that changed less than :data:`SETTLED` seconds before it was read is not remembered: a
    write in the same tick of the file system's clock would leave those times as they were
    (git's "racily clean" entries)."""
    key = str(path)
    started = time.time()
    files, signature, newest = _signature(path)
    known = _hashes.get(key)
    if known is not None and known[0] == signature:
        return known[1]  # no lock: many launches of one dataset must not queue for it
    with _hash_locks[hash(key) % len(_hash_locks)]:
        known = _hashes.get(key)  # another launch may have hashed it meanwhile
        if known is not None and known[0] == signature:
            return known[1]
        folder = path.is_dir()
        digest = hashlib.sha256()
        for file in files:
            if folder:
                digest.update(str(file.relative_to(path)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        value = "sha256:" + digest.hexdigest()
        if newest < started - SETTLED and _signature(path)[1] == signature:
            _hashes[key] = (signature, value)
            _hashes.move_to_end(key)
            while len(_hashes) > _REMEMBERED:
                _hashes.popitem(last=False)
        return value


def _signature(path: Path) -> tuple[list[Path], bytes, float]:
    """The files :func:`content_hash` reads for ``path``, a digest of their identities, sizes and
    times, and the latest of those times (seconds)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    identity = hashlib.blake2b()
    newest = 0.0
    for file in files:
        st = file.stat()
        identity.update(f"{file}\0{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\0".encode())
        newest = max(newest, st.st_mtime, st.st_ctime)
    return files, identity.digest(), newest
