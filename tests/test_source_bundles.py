"""Source bundles and lineage end to end: a project folder submitted to a real `mlrt controller` on
PostgreSQL runs from its uploaded bundle (local backend and in a podman container), comes back bit
for bit with `mlrt runs source`, and a hostile tarball is refused by the service."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from hostile import ENGINE, RUN_ARGS, engine_problem
from mlrt import bundles
from mlrt.service import auth
from mlrt.sources import pack_for_upload
from mlrt.store import Store
from service_process import ServiceProcess

TRAIN = """\
import csv, os, pathlib
rows = list(csv.reader(open("data/small.csv")))  # relative to the working directory: the bundle
channel = list(csv.reader(open(os.environ["MLRT_CHANNEL_TRAIN"])))
out = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "rows.txt").write_text(f"{len(rows)} {len(channel)}")
print("read", len(rows), "rows in", os.getcwd())
"""


def project(folder: Path, python: str = sys.executable, extra: str = "", channel: bool = True) -> Path:
    """A project folder: train.py, data/small.csv, a .gitignore'd log and the spec; the spec's path."""
    (folder / "data").mkdir(parents=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "data" / "small.csv").write_bytes(b"x,y\n1,2\n3,4\n5,\xc3\xa9\n")
    (folder / ".gitignore").write_text("*.log\n")
    (folder / "debug.log").write_text("not code\n")
    spec = folder / "job.yaml"
    spec.write_text(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: bundled}\nspec:\n"
        f"  command: [{python}, train.py]\n" + ("  data: {train: file://data/small.csv}\n" if channel else "") + extra
    )
    return spec


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start(postgres_db: str, tmp_path: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()


@pytest.fixture
def alice(postgres_db: str, monkeypatch) -> str:
    """A user token of project vision, in MLRT_TOKEN for the CLI's remote mode."""
    token = auth.issue(Store(postgres_db), "user", "alice", "vision")
    monkeypatch.setenv("MLRT_TOKEN", token)
    return token


@pytest.mark.postgres
@pytest.mark.slow
def test_a_folder_submitted_remotely_runs_from_its_bundle_and_its_code_comes_back_bit_for_bit(
    postgres_db, alice, cli, tmp_path, home
):
    service = start(postgres_db, tmp_path, MLRT_ALLOWED_BACKENDS="local")
    try:
        spec = project(tmp_path / "proj")
        checked = cli("--server", service.url, "validate", str(spec), "--json")  # the channel is in the bundle
        assert checked.exit_code == 0, checked.output
        done = cli("--server", service.url, "submit", str(spec), "--json")
        assert done.exit_code == 0, done.output
        run = json.loads(done.stdout)
        assert run["state"] == "SUCCEEDED", run["reason"]
        shown = json.loads(cli("--server", service.url, "runs", "show", run["id"], "--json").stdout)
        digest = shown["lineage"]["source"]
        assert digest == pack_for_upload(str(spec), ())[0].digest
        assert shown["lineage"]["packages_sha256"] and shown["lineage"]["data"]["train"]
        output = Path(shown["output_uri"].removeprefix("file://"))
        assert (output / "output" / "rows.txt").read_text() == "4 4"

        restored = tmp_path / "restored"
        result = cli("--server", service.url, "runs", "source", run["id"], "-o", str(restored))
        assert result.exit_code == 0, result.output
        expected = {k: v for k, v in files_of(tmp_path / "proj").items() if k not in ("debug.log", "job.yaml")}
        assert files_of(restored) == expected  # bit for bit; the ignored log and the spec itself left out

        (tmp_path / "proj" / "train.py").write_text(TRAIN.replace('print("read', 'print("Read'))  # one byte
        again = json.loads(cli("--server", service.url, "submit", str(spec), "--detach", "--json").stdout)
        lineage = json.loads(cli("--server", service.url, "runs", "lineage", again["run_id"], "--json").stdout)
        assert lineage[0]["source"] not in (None, digest)

        with httpx.Client(base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as api:
            for name, tarball in hostile_tarballs().items():
                refused = api.post("/sources", content=tarball)
                assert refused.status_code == 422, (name, refused.text)
                assert "refused source bundle" in refused.json()["detail"], name
        assert Store(postgres_db).source_bundle(bundles.digest_of(hostile_tarballs()["traversal"])) is None
        (tmp_path / "big").mkdir()
        (tmp_path / "big" / "weights.bin").write_bytes(os.urandom(9 * 2**20))  # over the 8 MiB request limit
        big = bundles.pack(tmp_path / "big")
        with httpx.Client(base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as api:
            assert api.post("/sources", content=big.data).json()["digest"] == big.digest
            body = {"spec": spec.read_text(), "source": digest}
            for source_dir in ("../..", "train.py", "data/small.csv/x"):
                refused = api.post("/jobs", json={**body, "source_dir": source_dir})
                assert refused.status_code == 422 and "source_dir:" in refused.text, refused.text
            unknown = api.post("/jobs", json={**body, "source": "0" * 64})
            assert unknown.status_code == 422 and "no source bundle" in unknown.text
    finally:
        service.stop()


def tarball(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def hostile_tarballs() -> dict[str, bytes]:
    ok = (member("train.py"), b"print(1)\n")
    return {
        "traversal": tarball(ok, (member("../../escaped.py"), b"x")),
        "absolute": tarball((member("/etc/cron.d/evil"), b"x")),
        "symlink": tarball((member("data", tarfile.SYMTYPE, "/etc"), b""), (member("data/passwd"), b"x")),
        "hardlink": tarball((member("passwd", tarfile.LNKTYPE, "/etc/passwd"), b"")),
        "twice": tarball(ok, ok),
        "bomb": tarball((member("zeros.bin"), bytes(21 * 2**20))),  # over the 20 MiB limit, ~20 KiB sent
        "not a tarball": b"\x1f\x8b not really gzip",
    }


def test_a_hostile_bundle_unpacks_to_nothing(tmp_path):
    for name, data in hostile_tarballs().items():
        dest = tmp_path / name.replace(" ", "-")
        with pytest.raises(bundles.BundleError, match="refused source bundle"):
            bundles.unpack(data, dest)
        assert not dest.exists(), name
    assert not (tmp_path.parent / "escaped.py").exists()


def test_the_same_files_give_the_same_digest_and_one_byte_another(tmp_path):
    spec = project(tmp_path / "a")
    first = bundles.pack(tmp_path / "a", (spec,))
    os.utime(tmp_path / "a" / "train.py", (0, 0))  # mtimes do not count
    (tmp_path / "a" / "debug.log").write_text("ignored files do not count either\n")
    assert bundles.pack(tmp_path / "a", (spec,)).digest == first.digest
    (tmp_path / "a" / "train.py").write_bytes((tmp_path / "a" / "train.py").read_bytes()[:-1] + b" ")
    assert bundles.pack(tmp_path / "a", (spec,)).digest != first.digest


def test_a_local_run_keeps_its_bundle_its_lineage_walks_to_its_parent_and_a_too_large_source_is_one_line(
    cli, tmp_path, home, monkeypatch
):
    spec = project(tmp_path / "proj")
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    restored = tmp_path / "restored"
    assert cli("runs", "source", run["id"], "-o", str(restored)).exit_code == 0
    assert files_of(restored)["train.py"] == TRAIN.encode()  # out of git, restored all the same
    child = json.loads(cli("submit", str(spec), "--json", "--set", f"spec.init_from.run={run['id']}").stdout)
    lineage = json.loads(cli("runs", "lineage", child["id"], "--json").stdout)
    assert [(e["depth"], e["run"], e["relation"]) for e in lineage] == [
        (0, child["id"], None),
        (1, run["id"], "init_from"),
    ]
    assert lineage[1]["source"] == lineage[0]["source"] and lineage[1]["packages"] > 10
    assert lineage[1]["packages_sha256"] == lineage[0]["packages_sha256"] and lineage[1]["data"]["train"]
    assert f"parents init_from {run['id']}" in cli("runs", "show", child["id"]).output

    (tmp_path / "proj" / "weights.bin").write_bytes(os.urandom(3000))
    monkeypatch.setenv("MLRT_MAX_SOURCE_BYTES", "2Ki")
    result = cli("submit", str(spec))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: spec.source:") and "weights.bin (0.0 MiB)" in lines[0]
    assert ".mlrtignore" in lines[0] and "Traceback" not in result.output


@pytest.mark.postgres
@pytest.mark.slow
def test_a_bundle_submitted_remotely_runs_in_a_container_with_the_image_digest_in_its_lineage(
    postgres_db, alice, cli, tmp_path, home
):
    from conftest import missing

    problem = engine_problem()
    if problem is not None:
        missing("podman", f"container backend: {problem}")
    from container_image import build_image

    image = build_image(ENGINE, RUN_ARGS.split())
    service = start(postgres_db, tmp_path, MLRT_ALLOWED_BACKENDS="container", MLRT_CONTAINER_RUN_ARGS=RUN_ARGS)
    try:
        extra = f"  image: {image}\n  compute: {{backend: container, cpu: 1}}\n"
        spec = project(tmp_path / "proj", python="python", extra=extra)
        done = cli("--server", service.url, "submit", str(spec), "--json")
        assert done.exit_code == 0, done.output
        run = json.loads(done.stdout)
        assert run["state"] == "SUCCEEDED", run["reason"]
        shown = json.loads(cli("--server", service.url, "runs", "show", run["id"], "--json").stdout)
        output = Path(shown["output_uri"].removeprefix("file://"))
        assert (output / "output" / "rows.txt").read_text() == "4 4", "the bundle's relative paths worked"
        (lineage,) = json.loads(cli("--server", service.url, "runs", "lineage", run["id"], "--json").stdout)
    finally:
        service.stop()
    assert lineage["image"] == image and lineage["packages"] is None  # the host's packages are not the image's
    engine_id = subprocess.run([ENGINE, "image", "inspect", "--format={{.Id}}", image], capture_output=True, text=True)
    assert lineage["image_digests"] == ["sha256:" + engine_id.stdout.strip().removeprefix("sha256:")]
    assert lineage["source"] == bundles.pack(tmp_path / "proj", (spec, home)).digest


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.standin_only
def test_on_kubernetes_an_init_container_fetches_the_bundle_and_the_pods_image_digest_is_recorded(
    postgres_db, alice, cli, tmp_path, home
):
    import base64

    import kubernetes_validate

    from conftest import wait_for
    from kube_cluster import CONTROLLER_NAMESPACE, chart_rbac
    from kube_standin import KubeStandIn

    with KubeStandIn() as kube:
        rbac, account = chart_rbac(("ml",))  # the controller as in the cluster: the chart's ServiceAccount
        kube.apply_rbac(rbac)
        service = start(
            postgres_db,
            tmp_path,
            KUBECONFIG=str(kube.serviceaccount_kubeconfig(tmp_path / "kubeconfig", CONTROLLER_NAMESPACE, account)),
            MLRT_ADVERTISE_URL="http://mlrt.mlrt.svc:8080",
            MLRT_KUBE_NAMESPACES="ml",
            MLRT_ALLOWED_BACKENDS="kubernetes",
        )
        try:
            image = "registry.example.com/acme/train:1.0"
            extra = f"  image: {image}\n  compute: {{backend: kubernetes}}\n"
            spec = project(tmp_path / "proj", python="python", extra=extra, channel=False)
            submitted = cli("--server", service.url, "submit", str(spec), "--detach", "--json")
            run_id = json.loads(submitted.stdout)["run_id"]
            (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
            (job,) = kube.jobs("ml")
            kubernetes_validate.validate(job, "1.33.0", strict=True)
            template = job["spec"]["template"]["spec"]
            fetch = template["initContainers"][0]
            assert fetch["name"] == "fetch-source" and template["containers"][0]["workingDir"] == "/mlrt/source"

            # Playing the kubelet: the init container's program, with its variables and its token.
            variables = {e["name"]: e.get("value") for e in fetch["env"]}
            secret = next(s for s in kube.secrets("ml") if s["metadata"]["name"].endswith("-tracking"))
            variables.update(
                MLRT_TRACKING_URI=service.url,
                MLRT_TRACKING_TOKEN=base64.b64decode(secret["data"]["token"]).decode(),
            )
            pod_dir = tmp_path / "pod-source"
            fetched = subprocess.run(
                [sys.executable, *fetch["command"][1:-1], str(pod_dir)],
                env={**os.environ, **variables},
                capture_output=True,
                text=True,
            )
            assert fetched.returncode == 0, fetched.stderr
            expected = {k: v for k, v in files_of(tmp_path / "proj").items() if k not in ("debug.log", "job.yaml")}
            assert files_of(pod_dir) == expected

            kube.start_pod(pod["metadata"]["name"], namespace="ml")
            kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
            wait_for(
                lambda: (
                    json.loads(cli("--server", service.url, "status", run_id, "--json").stdout)["state"] == "SUCCEEDED"
                ),
                timeout=30,
            )
            (lineage,) = json.loads(cli("--server", service.url, "runs", "lineage", run_id, "--json").stdout)
            assert lineage["image"] == image and lineage["packages"] is None
            assert lineage["image_digests"] and lineage["image_digests"][0].startswith("sha256:")
            assert [denial.message for denial in kube.denials] == [], "the chart's Role is enough"
        finally:
            service.stop()


def test_large_bundles_go_to_the_s3_source_store_and_a_changed_one_is_refused(
    cli, tmp_path, home, monkeypatch, s3_endpoint
):
    from mlrt import s3

    monkeypatch.setenv("MLRT_SOURCE_STORE", "s3://mlrt-test/sources")
    spec = project(tmp_path / "proj")
    (tmp_path / "proj" / "weights.bin").write_bytes(os.urandom(1_200_000))  # over the 1 MiB kept in the database
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    digest = json.loads(cli("runs", "lineage", run["id"], "--json").stdout)[0]["source"]
    kept = Store().source_bundle(digest)
    assert kept.data is None and kept.uri == f"s3://mlrt-test/sources/{digest}.tar.gz"
    assert cli("runs", "source", run["id"], "-o", str(tmp_path / "back")).exit_code == 0
    assert files_of(tmp_path / "back")["weights.bin"] == (tmp_path / "proj" / "weights.bin").read_bytes()

    s3.client().put_object(Bucket="mlrt-test", Key=f"sources/{digest}.tar.gz", Body=b"other bytes")
    result = cli("runs", "source", run["id"], "-o", str(tmp_path / "again"))
    assert result.exit_code == 2 and "no longer matches its digest" in result.output
