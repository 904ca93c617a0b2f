"""A local stand-in for mlrt's training image, for the container backend's tests.

``containers/train.Containerfile`` builds the real image ``FROM python:3.11-slim``,
which a machine without internet cannot pull. This module builds an equivalent
from what the machine running the tests already has, at the same absolute
paths, so nothing is installed and the editable install keeps working:

* **base** (``localhost/mlrt-test-base:<hash>``, ``ENGINE import`` of a tar
  stream): this Python (``sys.base_prefix`` without its test suite, idle,
  tkinter, ensurepip, static library and own site-packages), the virtual
  environment (``sys.prefix`` without what a worker never imports: kubernetes,
  kubernetes_validate, pip, pytest, ruff, the packages' ``tests`` folders and
  torch's headers and C++ test binaries), the shared libraries all of it links
  (``ldd``) with the dynamic loader, ``/bin/sh``, ``which``, ``/tmp`` and
  ``/etc/{passwd,group,nsswitch.conf}``; ``PATH`` starts with the venv's ``bin``.
* **code** (``localhost/mlrt-test-train:<hash>``): base plus the source folders
  the editable install points at (``runtime/mlrt``, ``plugins/mlrt_*``, read
  from the install's ``__editable__`` finder or ``.pth`` files), copied in with
  ``ENGINE cp`` and committed, so editing the code rebuilds only this layer.

Each tag hashes what goes in (paths, modes, sizes, mtimes), so each layer is
built once per machine and again only when the environment or the code
changes. A tag starts with a hash of the venv's (base) or the checkout's (code)
path, and only that venv's or checkout's older tags are removed: two checkouts
on one machine keep each other's images. ``python tests/container_image.py`` builds
the image and prints how long it took.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

BASE_REPOSITORY = "localhost/mlrt-test-base"
IMAGE_REPOSITORY = "localhost/mlrt-test-train"
BUILDER_VERSION = "4"  # bump when what goes into the image changes

# site-packages entries a worker never imports (the biggest: kubernetes and its schemas).
_SKIP_PACKAGES = {"kubernetes", "kubernetes_validate", "pip", "_pytest", "pytest", "ruff"}
# Below torch/: C++ headers, the C++ test suite and test binaries (torch_shm_manager stays).
_SKIP_TORCH = {"include", "test"}
_KEEP_TORCH_BIN = {"torch_shm_manager"}
# Below the standard library.
_SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "__phello__"}
_ETC = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf")


def build_image(engine: str, run_args: list[str], *, log=print) -> str:
    """The stand-in training image's name, built first when this machine lacks it."""
    with _lock():
        started = time.monotonic()
        trees = _base_trees()
        base_scope = _scope(sys.prefix)
        base = f"{BASE_REPOSITORY}:{base_scope}-{_digest(trees, extra=[BUILDER_VERSION, sys.version])}"
        code_paths = _code_paths()
        code_scope = _scope(str(Path(__file__).resolve().parents[1]))
        image = f"{IMAGE_REPOSITORY}:{code_scope}-{_digest(code_paths, extra=[base])}"
        if _exists(engine, image):
            return image
        if not _exists(engine, base):
            _import_base(engine, base, _base_paths(trees))
            log(f"built {base} in {time.monotonic() - started:.1f}s")
        _add_code(engine, run_args, base, image, code_paths)
        _smoke_test(engine, run_args, image)
        log(f"built {image} in {time.monotonic() - started:.1f}s (base, code layer and a smoke test)")
        _prune(engine, BASE_REPOSITORY, base_scope, keep=base)
        _prune(engine, IMAGE_REPOSITORY, code_scope, keep=image)
        return image


# -- what goes in --------------------------------------------------------------------


def _base_trees() -> list[str]:
    """This Python's standard library and executable, and the venv (what the base tag hashes), sorted.

    Only those parts of ``sys.base_prefix``: it is ``/usr`` for a distribution's Python."""
    paths: set[str] = set()
    venv = Path(sys.prefix)
    stdlib_dirs = {Path(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
    skip_dirs = {folder / name for folder in stdlib_dirs for name in _SKIP_STDLIB}
    skip_dirs |= {config for folder in stdlib_dirs for config in folder.glob("config-*")}
    if _includes_system_site_packages(venv):
        skip_dirs -= {folder / "site-packages" for folder in stdlib_dirs}

    def skip_stdlib(path: Path, is_dir: bool) -> bool:
        if is_dir:
            return path in skip_dirs
        return path.name.endswith(".a") or path.name.startswith("_tkinter")

    for folder in stdlib_dirs:
        paths.update(_walk(folder, skip_stdlib))
    site_packages = {Path(p) for p in _site_packages()}

    def skip_venv(path: Path, is_dir: bool) -> bool:
        parent = path.parent
        if parent in site_packages:
            return path.name.split("-")[0] in _SKIP_PACKAGES  # the package and its .dist-info
        if is_dir and path.name == "tests" and any(p in site_packages for p in path.parents):
            return True
        if parent.name == "torch" and parent.parent in site_packages:
            return is_dir and path.name in _SKIP_TORCH
        if parent.name == "bin" and parent.parent.name == "torch":
            return path.name not in _KEEP_TORCH_BIN
        return parent == venv / "bin" and path.name == "ruff"

    paths.update(_walk(venv, skip_venv))
    # The interpreter the venv's python points at (every link on the way).
    for name in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.path.lexists(venv / "bin" / name):
            paths.update(_with_links(str(venv / "bin" / name)))
    return sorted(paths)


def _base_paths(trees: list[str]) -> list[str]:
    """Every path of the base layer: the trees, the shared libraries they link (libpython
    included) with the loader, ``/bin/sh``, ``/tmp`` and a few files of ``/etc``."""
    paths = set(trees)
    executables = [p for p in paths if os.access(p, os.X_OK) and os.path.isfile(p) and "/bin/" in p]
    objects = [p for p in paths if ".so" in Path(p).name and os.path.isfile(p) and not os.path.islink(p)]
    for library in _libraries([*executables, *objects, "/bin/sh"]):
        paths.update(_with_links(library))
    for extra in ["/bin/sh", "/usr/bin/which", *_ETC]:  # `which`: sagemaker-training's Environment runs it
        if os.path.exists(extra):
            paths.update(_with_links(extra))
    paths.add("/tmp")
    return _with_parents(paths)


def _code_paths() -> list[str]:
    """The source folders an editable install maps outside the venv (runtime/, plugins/)."""
    roots: set[Path] = set()
    venv = Path(sys.prefix).resolve()
    for site in _site_packages():
        for finder in Path(site).glob("__editable__*finder.py"):
            tree = ast.parse(finder.read_text())
            for node in tree.body:
                if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
                    targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                    if any(getattr(t, "id", "") == "MAPPING" for t in targets):
                        roots.update(Path(p) for p in ast.literal_eval(node.value).values())
        for pth in Path(site).glob("*.pth"):
            for line in pth.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "import")) and Path(line).is_dir():
                    roots.add(Path(line))
    paths: set[str] = set()
    for root in sorted(roots):
        resolved = root.resolve()
        if resolved == venv or venv in resolved.parents or resolved.parent == resolved:
            continue
        if root.is_dir():
            paths.update(_walk(root, lambda path, is_dir: is_dir and path.resolve() == venv))
        elif root.exists():
            paths.add(str(root))
    return _with_parents(paths) if paths else []


def _site_packages() -> list[str]:
    """The venv's site-packages (this interpreter runs in it)."""
    return sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})


def _includes_system_site_packages(venv: Path) -> bool:
    config = venv / "pyvenv.cfg"
    if not config.is_file():
        return False
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def _walk(root: Path, skip) -> Iterator[str]:
    """``root`` and everything below it, minus what ``skip(path, is_dir)`` rejects."""
    yield str(root)
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        kept = []
        for name in dirnames:
            path = here / name
            if os.path.islink(path):
                if not skip(path, False):
                    yield str(path)
            elif not skip(path, True):
                kept.append(name)
                yield str(path)
        dirnames[:] = kept
        for name in filenames:
            path = here / name
            if not skip(path, False):
                yield str(path)


def _libraries(objects: Iterable[str]) -> set[str]:
    """The shared libraries (and the loader) that ``objects`` link, by ``ldd``."""
    found: set[str] = set()
    objects = sorted(set(objects))
    for start in range(0, len(objects), 200):
        result = subprocess.run(["ldd", *objects[start : start + 200]], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            line = line.strip()
            if line.endswith(":") or "=>" not in line and not line.startswith("/"):
                continue
            target = line.split("=>", 1)[-1].strip().split(" (", 1)[0].strip()
            if target.startswith("/") and os.path.exists(target):
                found.add(target)
    return found


def _with_links(path: str) -> list[str]:
    """``path`` as the kernel resolves it: every symlink on the way (``/lib`` -> ``usr/lib``), then the file."""
    seen: list[str] = []
    current = os.path.normpath(path)
    for _ in range(40):
        parts = current.split("/")
        for index in range(2, len(parts) + 1):
            prefix = "/".join(parts[:index])
            if os.path.islink(prefix):
                seen.append(prefix)
                target = os.path.join(os.path.dirname(prefix), os.readlink(prefix), *parts[index:])
                current = os.path.normpath(target)
                break
        else:
            seen.append(current)
            return seen
    return seen


def _with_parents(paths: set[str]) -> list[str]:
    everything = set(paths)
    for path in paths:
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in everything:
            everything.add(parent)
            parent = os.path.dirname(parent)
    return sorted(everything)


def _digest(paths: list[str], extra: list[str]) -> str:
    """A content tag: each file's path, mode, size and mtime, each directory's path and mode.

    Byte-code caches are left out (Python rewrites them as it imports), and so are
    directories' mtimes (they change whenever anything is added next to them)."""
    digest = hashlib.sha256("\0".join(extra).encode())
    for path in paths:
        if "/__pycache__" in path:
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            digest.update(f"{path}\0{st.st_mode}\n".encode())
        else:
            digest.update(f"{path}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# -- building ------------------------------------------------------------------------


def _tar(paths: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """A ``tar`` process writing ``paths`` (relative to ``/``, not recursing) to its stdout."""
    listing = tempfile.NamedTemporaryFile("wb", prefix="mlrt-image-", suffix=".list", delete=False)
    with listing:
        listing.write(b"\0".join(p.lstrip("/").encode("utf-8", "surrogateescape") for p in paths) + b"\0")
    tar = subprocess.Popen(
        ["tar", "-C", "/", "--numeric-owner", "--no-recursion", "--null", "-T", listing.name, "-cf", "-"],
        stdout=subprocess.PIPE,
    )
    return tar, listing.name


def _pipe(tar_paths: list[str], argv: list[str]) -> None:
    tar, listing = _tar(tar_paths)
    try:
        result = subprocess.run(argv, stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar_code = tar.wait()
    finally:
        os.unlink(listing)
    if result.returncode != 0 or tar_code not in (0, 1):  # 1: a file changed while read
        raise RuntimeError(f"`{' '.join(argv[:3])}` failed (tar exit {tar_code}): {result.stderr.strip()}")


def _import_base(engine: str, base: str, paths: list[str]) -> None:
    venv_bin = Path(sys.prefix) / "bin"
    changes = [f"ENV PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin", "WORKDIR /"]
    argv = [engine, "import", *[arg for change in changes for arg in ("--change", change)], "-", base]
    _pipe(paths, argv)


def _add_code(engine: str, run_args: list[str], base: str, image: str, paths: list[str]) -> None:
    if not paths:  # a regular install: the code is in the venv already
        _run([engine, "tag", base, image])
        return
    name = f"mlrt-test-image-{os.getpid()}"
    _run([engine, "create", "--name", name, *run_args, base, "python"])
    try:
        _pipe(paths, [engine, "cp", "-", f"{name}:/"])
        _run([engine, "commit", name, image])
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)


def _smoke_test(engine: str, run_args: list[str], image: str) -> None:
    """Fail the build, with the reason, when the image cannot load mlrt and its plugins."""
    check = "from mlrt import plugins; import mlrt.worker; print(sorted(plugins.algorithms()))"
    result = subprocess.run(
        [engine, "run", "--rm", *run_args, image, "python", "-c", check], capture_output=True, text=True
    )
    if result.returncode != 0:
        subprocess.run([engine, "rmi", image], capture_output=True)
        raise RuntimeError(f"the test image {image} cannot run mlrt: {(result.stderr or result.stdout).strip()}")


def _exists(engine: str, image: str) -> bool:
    return subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode == 0


def _scope(owner: str) -> str:
    """The start of the tags one virtual environment (base) or one checkout (code) builds:
    a short hash of its path, so that other checkouts' images on the machine are not theirs."""
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


def _prune(engine: str, repository: str, scope: str, keep: str) -> None:
    """Remove older tags of ``repository`` in ``scope``, never another checkout's or venv's
    (best effort: one in use by a container stays)."""
    listed = subprocess.run(
        [engine, "images", repository, "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    )
    for name in listed.stdout.split():
        if name != keep and name.startswith(f"{repository}:{scope}-"):
            subprocess.run([engine, "rmi", name], capture_output=True)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[:3])}` failed: {result.stderr.strip()}")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time on this machine (parallel test sessions share the image)."""
    path = Path(tempfile.gettempdir()) / "mlrt-test-image.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if __name__ == "__main__":
    from mlrt_container.engine import configured_engine, run_args

    engine = shutil.which(configured_engine()) or configured_engine()
    started = time.monotonic()
    name = build_image(engine, run_args())
    print(f"{name} ready in {time.monotonic() - started:.1f}s")
