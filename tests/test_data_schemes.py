"""The built-in data schemes: ``builtin://sklearn/...`` splits and ``file://`` paths."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pluggy
import pytest

import mlrt_data
from mlrt import hookspecs
from mlrt.data import load_dataset, uri_scheme
from mlrt_data import BuiltinScheme, FileScheme
from mlrt_data.builtin import DATASETS

SIZES = {"iris": 150, "digits": 1797, "wine": 178, "breast_cancer": 569, "diabetes": 442}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def read(uri: str, cache_dir: Path) -> pd.DataFrame:
    return pd.read_csv(BuiltinScheme().materialize(uri, cache_dir))


def rows(frame: pd.DataFrame) -> Counter:
    return Counter(map(tuple, frame.itertuples(index=False)))


def test_plugin_registers_both_schemes_against_the_hookspecs():
    pm = pluggy.PluginManager("mlrt")
    pm.add_hookspecs(hookspecs)
    pm.register(mlrt_data)  # validates the hookimpl's signature against the spec
    (schemes,) = pm.hook.mlrt_data_schemes()
    assert sorted(s.scheme for s in schemes) == ["builtin", "file", "s3"]
    assert all(s.description for s in schemes)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_splits_are_60_20_20_and_partition_the_dataset(name: str, cache_dir: Path):
    splits = {s: read(f"builtin://sklearn/{name}?split={s}", cache_dir) for s in ("train", "validation", "test", "all")}
    total = SIZES[name]
    assert len(splits["all"]) == total
    for split, fraction in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        assert abs(len(splits[split]) - fraction * total) <= 1.5, split
    # Equal multisets of rows: every row lands in exactly one split (iris has duplicate rows).
    assert rows(splits["train"]) + rows(splits["validation"]) + rows(splits["test"]) == rows(splits["all"])


def test_builtin_split_is_deterministic_and_seed_changes_it(tmp_path: Path):
    scheme = BuiltinScheme()
    first = scheme.materialize("builtin://sklearn/wine?split=train", tmp_path / "a")
    again = scheme.materialize("builtin://sklearn/wine?split=train&seed=0", tmp_path / "b")
    other = scheme.materialize("builtin://sklearn/wine?split=train&seed=7", tmp_path / "a")
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert other == tmp_path / "a" / "builtin" / "sklearn" / "wine" / "7" / "train.csv"


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_builtin_classification_splits_are_stratified(name: str, cache_dir: Path):
    overall = read(f"builtin://sklearn/{name}?split=all", cache_dir)["label"].value_counts(normalize=True)
    for split in ("train", "validation", "test"):
        shares = read(f"builtin://sklearn/{name}?split={split}", cache_dir)["label"].value_counts(normalize=True)
        assert (shares - overall).abs().max() < 0.02, split


def test_builtin_columns_are_identifiers_with_label_last(cache_dir: Path):
    iris = read("builtin://sklearn/iris?split=all", cache_dir)
    assert list(iris.columns) == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm", "label"]
    for name in DATASETS:
        columns = list(read(f"builtin://sklearn/{name}?split=all", cache_dir).columns)
        assert all(c.isidentifier() and c == c.lower() for c in columns), name
        assert len(set(columns)) == len(columns) and columns[-1] == "label"


def test_builtin_channel_loads_with_its_default_label(cache_dir: Path):
    scheme = BuiltinScheme()
    uri = "builtin://sklearn/diabetes?split=test"
    dataset = load_dataset("test", scheme.materialize(uri, cache_dir), None, scheme.default_label(uri), None)
    assert dataset.labels is not None and "label" not in dataset.features
    assert dataset.features.shape == (len(dataset), 10)


def test_builtin_materialize_keeps_an_existing_file(tmp_path: Path):
    target = tmp_path / "builtin" / "sklearn" / "iris" / "0" / "test.csv"
    target.parent.mkdir(parents=True)
    target.write_text("a,label\n1,0\n")
    assert BuiltinScheme().materialize("builtin://sklearn/iris?split=test", tmp_path) == target
    assert target.read_text() == "a,label\n1,0\n"


def test_builtin_concurrent_materialize_leaves_one_complete_file(tmp_path: Path):
    uri = "builtin://sklearn/digits?split=validation"
    with ThreadPoolExecutor(max_workers=6) as pool:
        paths = set(pool.map(lambda _: BuiltinScheme().materialize(uri, tmp_path), range(6)))
    (path,) = paths
    assert len(pd.read_csv(path)) == 360
    assert [p.name for p in path.parent.iterdir()] == ["validation.csv"]  # no temporary files left
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (
            "builtin://sklearn/mnist?split=train",
            "unknown builtin dataset 'mnist' (allowed: breast_cancer, diabetes, digits, iris, wine)",
        ),
        (
            "builtin://sklearn/iris?split=dev",
            "query parameter 'split' must be one of train, validation, test, all, got 'dev'",
        ),
        ("builtin://sklearn/iris?split=train&shuffle=1", "unknown query parameter 'shuffle' (allowed: split, seed)"),
        ("builtin://sklearn/iris?split=train&seed=-1", "query parameter 'seed' must be >= 0, got -1"),
        ("builtin://sklearn/iris?split=train&seed=x", "query parameter 'seed' must be a int in [0, inf], got 'x'"),
        ("builtin://sklearn/iris?split=train&split=test", "query parameter 'split' is given twice"),
        ("builtin://openml/iris?split=train", "unknown builtin source 'openml' (allowed: sklearn)"),
    ],
)
def test_builtin_check_names_the_problem_and_what_is_allowed(uri: str, problem: str, tmp_path: Path):
    assert BuiltinScheme().check(uri) == problem
    with pytest.raises(ValueError, match=re.escape(problem)):
        BuiltinScheme().materialize(uri, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("uri", ["builtin://sklearn/iris", "builtin://sklearn/wine?split=test&seed=3"])
def test_builtin_check_accepts_valid_uris(uri: str):
    assert BuiltinScheme().check(uri) is None


def test_schemes_import_no_heavy_libraries():
    code = (
        "import sys, mlrt_data, mlrt_sklearn\n"
        "assert mlrt_data.BuiltinScheme().check('builtin://sklearn/iris?split=x')\n"
        "print(sorted(m for m in ('sklearn', 'pandas', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("uri", "relative"),
    [
        ("file://./data/train.csv", "data/train.csv"),
        ("file://data/train.csv", "data/train.csv"),
        ("data/train.csv", "data/train.csv"),
        ("file://./data/../other/x.csv", "other/x.csv"),
    ],
)
def test_file_resolve_makes_relative_paths_absolute_against_base_dir(uri: str, relative: str, tmp_path: Path):
    assert uri_scheme(uri) == "file"
    assert FileScheme().resolve(uri, tmp_path) == f"file://{tmp_path / relative}"


def test_file_resolve_keeps_absolute_paths_and_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    scheme = FileScheme()
    assert scheme.resolve("file:///srv/data/train.csv", tmp_path) == "file:///srv/data/train.csv"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert scheme.resolve("file://~/train.csv", Path("/elsewhere")) == f"file://{tmp_path}/train.csv"


def test_file_check_and_materialize(tmp_path: Path):
    scheme = FileScheme()
    data = tmp_path / "train.csv"
    data.write_text("x,label\n1,0\n")
    for path in (data, tmp_path):  # a file or a folder
        uri = scheme.resolve(str(path), Path("/"))
        assert scheme.check(uri) is None
        assert scheme.materialize(uri, tmp_path / "cache") == path
    missing = scheme.resolve("file://./missing.csv", tmp_path)
    assert scheme.check(missing) == f"file not found: {tmp_path / 'missing.csv'}"
    with pytest.raises(FileNotFoundError, match="file not found"):
        scheme.materialize(missing, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_file_check_reports_unreadable_files():
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)  # traversable by the unprivileged user below
        secret = folder / "secret.csv"
        secret.write_text("x\n")
        secret.chmod(0)
        assert _as_unprivileged(lambda: FileScheme().check(f"file://{secret}")) == f"file not readable: {secret}"
    finally:
        shutil.rmtree(folder)


def _as_unprivileged(call):
    """``call()``'s string result, computed as user ``nobody`` when this process is root (root reads any file)."""
    if os.geteuid() != 0:
        return call()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, answer through the pipe, exit without teardown
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, str(call()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        result = answer.read().decode()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def counted_reads(monkeypatch) -> Counter:
    """How many times each file was opened for reading, settled at once (``SETTLED`` 0)."""
    import mlrt.data

    monkeypatch.setattr(mlrt.data, "SETTLED", 0.0)
    reads: Counter = Counter()
    real_open = Path.open

    def counting_open(self, mode="r", *args, **kwargs):
        if "r" in mode:
            reads[self.name] += 1
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    return reads


def test_an_unchanged_dataset_is_read_once_for_many_launches(tmp_path: Path, counted_reads: Counter):
    from mlrt.data import content_hash

    data = tmp_path / "big.csv"
    data.write_bytes(b"x,label\n" + b"1,0\n" * 100_000)
    with ThreadPoolExecutor(8) as pool:
        hashes = set(pool.map(lambda _: content_hash(data), range(32)))
    assert len(hashes) == 1 and hashes.pop().startswith("sha256:")
    assert counted_reads["big.csv"] == 1


def test_a_dataset_changed_in_place_is_read_again(tmp_path: Path, counted_reads: Counter):
    """Same size, modification time set back as before: the status-change time still moved."""
    from mlrt.data import content_hash

    data = tmp_path / "d.csv"
    data.write_bytes(b"x,label\n1,0\n")
    before = content_hash(data)
    stat = data.stat()
    data.write_bytes(b"x,label\n1,1\n")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_hash(data) != before
    assert counted_reads["d.csv"] == 2


def test_a_folder_is_read_again_when_a_file_is_added(tmp_path: Path, counted_reads: Counter):
    from mlrt.data import content_hash

    (tmp_path / "part-0.csv").write_text("x\n1\n")
    first = content_hash(tmp_path)
    assert content_hash(tmp_path) == first and counted_reads["part-0.csv"] == 1
    (tmp_path / "part-1.csv").write_text("x\n2\n")
    assert content_hash(tmp_path) != first
    assert counted_reads["part-0.csv"] == 2


def test_a_file_changed_just_before_hashing_is_not_remembered(tmp_path: Path, counted_reads: Counter, monkeypatch):
    import mlrt.data

    monkeypatch.setattr(mlrt.data, "SETTLED", 60.0)
    data = tmp_path / "fresh.csv"
    data.write_text("x\n1\n")
    assert mlrt.data.content_hash(data) == mlrt.data.content_hash(data)
    assert counted_reads["fresh.csv"] == 2
