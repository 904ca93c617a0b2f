"""The controller service protects itself: a real `mlrt controller` on PostgreSQL.

A token is checked before the body is read (an anonymous 300 MB upload costs
nothing), bodies are bounded while they are read, an unexpected error is a
500 with a request id in the log, one broken run never stalls the others,
and ``/readyz`` says degraded while the database is gone and recovers by
itself when it returns (a private PostgreSQL server is stopped and started).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import MLRT_SCRIPT, missing, wait_for
from mlrt.service import auth
from mlrt.store import Store
from mlrt.store.models import Job, Run
from service_process import ServiceProcess, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LOCAL = {"MLRT_ALLOWED_BACKENDS": "local"}
TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_GATE", "CANCELLED", "TIMED_OUT", "PRUNED"}
MiB = 1 << 20


def spec_text(name: str, code: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {{name: {name}}}
        spec:
          command: [{sys.executable}, -c, {json.dumps(code)}]
        """) + textwrap.indent(extra, "  ")


def api(service: ServiceProcess, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{service.url}/api/v1", headers=headers, timeout=60)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the (Content-Length) response on ``sock``."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed in the middle of the response: {data!r}"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def send_until_refused(sock: socket.socket, total: int, chunk: bytes) -> int:
    """Send up to ``total`` bytes of body; return how many went before the server closed the connection."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the server stopped reading, as it should
        pass
    return sent


@pytest.fixture
def tokens(postgres_db: str) -> dict[str, str]:
    store = Store(postgres_db)
    return {"alice": auth.issue(store, "user", "alice", "vision"), "admin": auth.issue(store, "admin", "ops")}


@pytest.fixture
def service(postgres_db: str, tmp_path: Path, home: Path, tokens):
    started = ServiceProcess(postgres_db, tmp_path / "controller.log", env=LOCAL).start()
    yield started
    started.stop()


def test_an_anonymous_300_mb_body_is_refused_before_it_is_read(service, capsys):
    size = 300 * MiB
    before = peak_rss_bytes(service.process.pid)
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        # The answer comes from the headers alone: not one byte of the body was sent yet.
        status, headers, body = read_response(sock)
        sent = send_until_refused(sock, size, b"x" * MiB)
    assert status == 401 and headers["connection"] == "close" and re.fullmatch(r"[0-9a-f]{16}", headers["x-request-id"])
    assert b"missing token" in body
    assert sent < size, "the service kept reading an anonymous body"
    growth = peak_rss_bytes(service.process.pid) - before
    with capsys.disabled():
        print(
            f"\n  peak RSS of the service: {before / MiB:.0f} MiB before, +{growth / MiB:.1f} MiB while refusing 300 MB"
        )
    assert growth < 32 * MiB
    # A wrong token is refused the same way, and the service answers on.
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mlrt_x_y\r\nContent-Length: 99\r\n\r\n"
        )
        status, _, body = read_response(sock)
    assert status == 401 and b"invalid or revoked token" in body
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_bodies_over_the_limit_are_413_at_once_or_while_they_stream(postgres_db, tokens, tmp_path, home):
    limit = 100_000
    env = {**LOCAL, "MLRT_MAX_REQUEST_BYTES": str(limit)}
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
    try:
        auth_header = f"Authorization: Bearer {tokens['alice']}\r\n"
        with socket.create_connection(("127.0.0.1", service.port)) as sock:
            sock.sendall(
                f"POST /api/v1/validate HTTP/1.1\r\nHost: x\r\n{auth_header}Content-Length: {limit + 1}\r\n\r\n".encode()
            )
            status, headers, body = read_response(sock)  # before any of the body
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["detail"].startswith(f"request body: larger than {limit} bytes")

        # No Content-Length: the chunks are counted as they arrive and cut at the limit.
        with socket.create_connection(("127.0.0.1", service.port)) as sock:
            sock.sendall(
                f"POST /api/v1/validate HTTP/1.1\r\nHost: x\r\n{auth_header}"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )
            # Just over the limit: what the server leaves unread when it answers fits the sockets'
            # buffers, so no write meets the connection it closed (a broken pipe, seen under load).
            piece = b'{"spec": "' + b"x" * 10_000
            for _ in range(11):
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                piece = b"x" * 10_000
            status, headers, body = read_response(sock)
        assert status == 413 and "MLRT_MAX_REQUEST_BYTES" in json.loads(body)["detail"]
        assert headers["x-request-id"]

        # Under the limit nothing changes.
        with api(service, tokens["alice"]) as client:
            assert client.post("/validate", json={"spec": spec_text("small", "pass")}).status_code == 200
    finally:
        service.stop()


def test_a_client_that_sends_its_whole_refused_body_still_reads_the_answer(postgres_db, tokens, tmp_path, home):
    # Most clients send the whole body before they read. A service that answers 413 from the
    # headers and closes with the body unread makes the kernel reset the connection, and the
    # client gets "connection reset" instead of the 413; a lingering close reads the rest first.
    limit = 100_000
    env = {**LOCAL, "MLRT_MAX_REQUEST_BYTES": str(limit)}
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
    try:
        for token, status in ((tokens["alice"], 413), ("mlrt_x_y", 401)):
            size = 100 * limit  # 10 MB: more than the sockets' buffers take while the service does not read
            with socket.create_connection(("127.0.0.1", service.port)) as sock:
                sock.sendall(
                    f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode()
                    + b"x" * size
                )
                answer = read_response(sock)
            assert answer[0] == status and answer[1]["connection"] == "close", answer
        with socket.create_connection(("127.0.0.1", service.port)) as sock:  # the same, chunked
            sock.sendall(
                f"POST /api/v1/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['alice']}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in [b'{"spec": "' + b"x" * 50_000] * 40)
                + b"0\r\n\r\n"
            )
            answer = read_response(sock)
        assert answer[0] == 413 and "MLRT_MAX_REQUEST_BYTES" in json.loads(answer[2])["detail"], answer
    finally:
        service.stop()


def test_refusals_beyond_the_lingering_cap_close_at_once(monkeypatch):
    """A flood of refused clients holds at most LINGER_CONNECTIONS readers of one service
    process: a refusal beyond them closes as soon as its answer is sent (the Guard in
    front of uvicorn, in this process, with a long linger and a cap of two)."""
    import threading

    import uvicorn

    from mlrt.service import guard

    monkeypatch.setattr(guard, "LINGER_SECONDS", 120.0)
    monkeypatch.setattr(guard, "LINGER_CONNECTIONS", 2)

    async def unreachable(scope, receive, send):
        raise AssertionError("every request here is refused by the Guard")

    guarded = guard.Guard(unreachable, store=None, limit=1 << 20, counted=lambda method, status: None)
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(guarded, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    port = listener.getsockname()[1]
    anonymous = b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"  # its body never sent

    def refused() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(anonymous)
        status, headers, _ = read_response(sock)
        assert status == 401 and headers["connection"] == "close"
        return sock

    try:
        first, second = refused(), refused()
        wait_for(lambda: guarded.lingering == 2)  # both wait for the rest of their bodies
        with refused() as third:  # one more than the cap: closed right after its answer
            assert third.recv(1) == b""
        first.close()
        second.close()
        wait_for(lambda: guarded.lingering == 0)  # a client that leaves ends its linger
        with refused():
            wait_for(lambda: guarded.lingering == 1)  # room again
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_default_limit_takes_50000_metric_points_in_one_request(service, tokens, postgres_db):
    with api(service, tokens["alice"]) as client:
        run_id = client.post("/jobs", json={"spec": spec_text("tracked", "import time; time.sleep(60)")}).json()[
            "run_id"
        ]
        worker = auth.issue(Store(postgres_db), "worker", f"run:{run_id}", run_id=run_id)
        points = [
            [f"validation/loss_of_the_{i % 10}th_head", i, 0.123456789 * i, 1765000000.123456] for i in range(50_000)
        ]
        body = json.dumps({"points": points})
        assert len(body) > 3 * MiB
        with api(service, worker) as tracker:
            response = tracker.post(
                f"/runs/{run_id}/tracking/metrics", content=body, headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 204, response.text
        assert len(client.get(f"/runs/{run_id}/metrics").json()) == 50_000
        client.post(f"/runs/{run_id}/cancel")


def long_series(client: httpx.Client, postgres_db: str, points: int = 100_000) -> str:
    """A running run with ``points`` points of ``loss`` (~8 MB of JSON at 100,000: more than the
    service's socket sends before a :func:`slow_reader` stops taking it)."""
    job = {"spec": spec_text("long-series", "import time; time.sleep(120)")}
    run_id = client.post("/jobs", json=job).json()["run_id"]
    store = Store(postgres_db)
    for first in range(0, points, 50_000):
        store.insert_metrics(run_id, [("loss", i, 1 / (i + 1), 1.7e9 + i) for i in range(first, first + 50_000)])
    store.engine.dispose()
    return run_id


def slow_reader(service: ServiceProcess, token: str) -> httpx.Client:
    """An API client whose sockets receive at most 64 KiB ahead of what it reads: a client on a
    slow network, whose requests stay in flight while it does not read (this machine's receive
    buffers grow to 32 MiB by default, enough for a whole series)."""
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)])
    return httpx.Client(
        base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60, transport=transport
    )


def stalled_readers(readers: contextlib.ExitStack, client: httpx.Client, run_id: str, count: int) -> list:
    """``count`` reads of the run's series that each take one piece and then stop reading:
    ``(first piece, the rest)`` of each."""
    started = []
    for _ in range(count):
        response = readers.enter_context(client.stream("GET", f"/runs/{run_id}/metrics"))
        assert response.status_code == 200
        stream = response.iter_bytes()
        started.append((next(stream), stream))
    return started


def test_clients_that_stop_reading_long_series_hold_none_of_the_database_connections(
    postgres_db, tokens, tmp_path, home
):
    """A client may read a long series slowly (or stop reading). With two pooled connections in
    all, four such readers leave the service answering everyone else; each series then reads
    back whole. (While a reader held its connection for the whole series, the request after the
    second reader waited for the pool's 30 s and failed.)"""
    pool = {"MLRT_DB_POOL_SIZE": "2", "MLRT_DB_MAX_OVERFLOW": "0"}
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env={**LOCAL, **pool}).start()
    try:
        with api(service, tokens["alice"]) as client, slow_reader(service, tokens["alice"]) as slow:
            run_id = long_series(client, postgres_db)
            with contextlib.ExitStack() as readers:
                started = stalled_readers(readers, slow, run_id, 4)
                answer = client.get(f"/runs/{run_id}/metrics/summary")
                assert answer.status_code == 200, answer.text
                assert answer.json()[0]["points"] == 100_000
                assert client.get(f"/runs/{run_id}").status_code == 200
                for first, rest in started[:2]:  # two of the readers go on to the end
                    series = json.loads(first + b"".join(rest))
                    assert [point["step"] for point in series] == list(range(100_000))
            client.post(f"/runs/{run_id}/cancel")
    finally:
        service.stop()


def refusals(service: ServiceProcess, status: int = 429) -> int:
    """How many requests the service process has answered with ``status`` (its Prometheus counter)."""
    text = httpx.get(f"{service.url}/metrics", timeout=30).text
    found = re.findall(rf'mlrt_api_requests_total{{[^}}]*status="{status}"[^}}]*}} ([0-9.]+)', text)
    return int(sum(float(value) for value in found))


def test_a_caller_with_its_share_of_requests_in_flight_waits_and_others_do_not(postgres_db, tokens, tmp_path, home):
    """Alice holds her 3 requests (``MLRT_MAX_REQUESTS_PER_CALLER``) in flight: her 4th is 429 with
    Retry-After, before its body is read, and so are her pages in the web UI (not its static
    files), while another user is served. A CLI command of hers
    sends its request again after each Retry-After and goes through once a slot frees."""
    limit = {"MLRT_MAX_REQUESTS_PER_CALLER": "3"}
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env={**LOCAL, **limit}).start()
    try:
        with api(service, tokens["alice"]) as client, api(service, tokens["admin"]) as admin:
            run_id = long_series(client, postgres_db)
            with contextlib.ExitStack() as readers, slow_reader(service, tokens["alice"]) as slow:
                held = stalled_readers(readers, slow, run_id, 3)  # kept: a stream let go of is closed
                assert all(first.startswith(b"[") for first, _ in held)
                refused = client.get("/whoami")
                assert refused.status_code == 429
                assert refused.headers["Retry-After"] == "1"
                assert refused.json()["detail"] == (
                    "too many requests at once: 3 of yours are in flight in this process"
                    " (MLRT_MAX_REQUESTS_PER_CALLER); retry after 1 s"
                )
                with_body = client.post("/jobs", json={"spec": spec_text("more", "pass")})
                assert with_body.status_code == 429 and with_body.headers["Connection"] == "close"
                assert admin.get("/whoami").status_code == 200  # another caller is served
                pages = {"mlrt_session": tokens["alice"]}  # her browser counts with her tokens
                assert httpx.get(f"{service.url}/ui/", cookies=pages, timeout=60).status_code == 429
                assert httpx.get(f"{service.url}/ui/static/ui.css", cookies=pages, timeout=60).status_code == 200
                admin_pages = {"mlrt_session": tokens["admin"]}
                assert httpx.get(f"{service.url}/ui/", cookies=admin_pages, timeout=60).status_code == 200
                assert admin.get(f"/runs/{run_id}/metrics/summary").json()[0]["points"] == 100_000
                command = subprocess.Popen(
                    [str(MLRT_SCRIPT), "--server", service.url, "runs", "show", run_id, "--json"],
                    env={**os.environ, "MLRT_TOKEN": tokens["alice"]},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                wait_for(lambda: refusals(service) >= 3, timeout=60)  # the command's request was refused too
            out, err = command.communicate(timeout=90)  # the readers are gone: their slots free up
            assert command.returncode == 0, err
            assert json.loads(out)["id"] == run_id
            assert client.get("/whoami").status_code == 200
            client.post(f"/runs/{run_id}/cancel")
    finally:
        service.stop()


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_requests_per_caller_setting_stops_the_service_at_start_in_one_line(cli, monkeypatch, value):
    monkeypatch.setenv("MLRT_MAX_REQUESTS_PER_CALLER", value)
    result = cli("controller", "--port", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: MLRT_MAX_REQUESTS_PER_CALLER: {value!r} is not a whole number of requests from 1, e.g. 16"
    )


def test_a_spec_over_its_size_limit_is_413_for_submit_and_validate(service, tokens, postgres_db):
    text = spec_text("padded", "pass") + "# " + "x" * (1 * MiB) + "\n"  # 1 MiB of comment: over the spec limit
    with api(service, tokens["alice"]) as client:
        for route in ("/jobs", "/validate"):
            response = client.post(route, json={"spec": text})
            assert response.status_code == 413, response.text
            assert "the spec is larger than the limit" in response.json()["detail"]
        assert client.get("/runs").json() == []  # nothing created


def queue_directly(db: str, folder: Path, name: str, code: str, **stored: object) -> str:
    """A job of project vision queued straight in the database, its stored spec given ``stored``
    (``stopping.max_runtime``...) as no submission would let it be."""
    from mlrt.spec import parse_text
    from mlrt.submission import submit

    store = Store(db)
    loaded = parse_text(spec_text(name, code), "job.yaml", folder / "job.yaml", [])
    run_id = submit(store, loaded, project="vision", submitted_by="alice")
    with store.session() as s:
        job = s.get(Job, store.get_run(run_id).job_id)
        resolved = json.loads(json.dumps(job.spec_resolved))
        for path, value in stored.items():
            place = resolved["spec"]
            *parents, leaf = path.split(".")
            for part in parents:
                place = place.setdefault(part, {})
            place[leaf] = value
        job.spec_resolved = resolved
        s.add(job)
    return run_id


def test_a_run_whose_spec_breaks_every_pass_fails_alone_and_other_runs_go_on(postgres_db, tokens, tmp_path, home):
    # 99999999999d in seconds: more than a timedelta holds, so watching the run raises every pass.
    broken = queue_directly(
        postgres_db, tmp_path, "overflow", "import time; time.sleep(120)", **{"stopping.max_runtime": 8.64e15}
    )
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=LOCAL).start()
    try:
        with api(service, tokens["alice"]) as client:
            good = client.post("/jobs", json={"spec": spec_text("fine", "print('fine')")}).json()["run_id"]

            def ended(run_id: str):
                row = client.get(f"/runs/{run_id}").json()
                return row if row["state"] in TERMINAL else None

            assert wait_for(lambda: ended(good), timeout=90)["state"] == "SUCCEEDED"
            # The passes themselves succeed meanwhile: the service is ready, not degraded.
            readyz = httpx.get(f"{service.url}/readyz").json()
            assert readyz["status"] == "ready", readyz

            row = wait_for(lambda: ended(broken), timeout=90)
            assert row["state"] == "FAILED"
            assert row["reason"].startswith("controller could not handle the run: OverflowError"), row["reason"]
            reasons = [e["reason"] for e in client.get(f"/runs/{broken}/events").json()]
            assert any("trying again in 1s (failure 1 of 4)" in r for r in reasons), reasons
            attempt = client.get(f"/runs/{broken}/attempts").json()[-1]
            assert attempt["ended_at"] is not None  # its worker was stopped, not left running
            # Runs submitted afterwards still run.
            later = client.post("/jobs", json={"spec": spec_text("later", "print('later')")}).json()["run_id"]
            assert wait_for(lambda: ended(later), timeout=90)["state"] == "SUCCEEDED"
    finally:
        service.stop()


def test_an_unexpected_error_is_a_500_with_a_request_id_whose_traceback_is_logged(postgres_db, tokens, tmp_path, home):
    run_id = queue_directly(postgres_db, tmp_path, "damaged", "pass")
    store = Store(postgres_db)
    with store.session() as s:  # a row no code path writes: the handler meets what it never expected
        run = s.get(Run, run_id)
        run.state = "FAILED"
        job = s.get(Job, run.job_id)
        job.spec_resolved = {}
        s.add_all([run, job])
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=LOCAL).start()
    try:
        with api(service, tokens["alice"]) as client:
            response = client.get(f"/runs/{run_id}/attempts")
            assert response.status_code == 500
            body = response.json()
            assert body == {"detail": "internal error", "request_id": response.headers["x-request-id"]}
            assert client.get("/runs").status_code == 200  # the process serves on
        log = service.log_file.read_text()
        assert f"request {body['request_id']}: GET /api/v1/runs/{run_id}/attempts raised" in log
        assert "Traceback" in log and "KeyError" in log
    finally:
        service.stop()


# -- the database goes away and comes back --------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, callable]]:
    """A throwaway PostgreSQL server of this test only, and a function to stop or start it
    (the shared server on 5432 serves other tests and must never be stopped)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        missing("postgres", "needs PostgreSQL's server programs (/usr/lib/postgresql/*/bin) for a private server")
    bindir = bins[-1].parent
    as_server: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            missing("postgres", "a private server needs runuser to run as the postgres user")
        as_server = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="mlrt-pg-"))
    data = folder / "data"
    if as_server:
        shutil.chown(folder, "postgres")
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_server, *args], check=True, capture_output=True, timeout=120)

    def control(action: str) -> None:
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-o",
            options,
            "-w",
            "-m",
            "fast",
            action,
        )

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    control("start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", control
    finally:
        subprocess.run(
            [*as_server, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_readyz_says_degraded_while_the_database_is_gone_and_recovers_by_itself(private_postgres, tmp_path, home):
    url, control = private_postgres
    token = auth.issue(Store(url), "user", "alice", "vision")
    service = ServiceProcess(url, tmp_path / "controller.log", env=LOCAL).start()
    try:
        with api(service, token) as client:
            assert client.get("/runs").status_code == 200
            control("stop")

            def readyz() -> httpx.Response:
                return httpx.get(f"{service.url}/readyz", timeout=30)

            degraded = wait_for(lambda: (r := readyz()).status_code == 503 and r, timeout=60)
            assert degraded.json()["status"] == "degraded" and degraded.json()["last_error"], degraded.json()
            down = client.get("/runs")  # a request meets the missing database: 503, never 500
            assert down.status_code == 503 and down.json()["request_id"] == down.headers["x-request-id"]
            # The reconcile loop notices too (it logs the error once, not every pass).
            wait_for(lambda: "ERROR mlrt.service: leader election: OperationalError" in service.log_file.read_text())
            assert service.process.poll() is None

            control("start")
            ready = wait_for(lambda: (r := readyz()).status_code == 200 and r.json()["leader"] and r, timeout=60)
            assert ready.json() == {"status": "ready", "leader": True}
            # The same process, without a restart, serves and launches again.
            run_id = client.post("/jobs", json={"spec": spec_text("after", "print('back')")}).json()["run_id"]
            row = wait_for(lambda: (r := client.get(f"/runs/{run_id}").json())["state"] in TERMINAL and r, timeout=90)
            assert row["state"] == "SUCCEEDED", row
        log = service.log_file.read_text()
        assert "reconcile passes succeed again" in log
    finally:
        service.stop()
