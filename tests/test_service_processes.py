"""``mlrt controller --processes N``: N service processes on one port, one leader among them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import psutil
from test_service import LOCAL, api, job_spec, program, tokens  # noqa: F401 (fixtures)

from conftest import wait_for
from mlrt.service import processes
from service_process import ServiceProcess


def test_processes_share_the_port_elect_one_leader_and_stop_together(postgres_db, tmp_path, home, tokens, program):  # noqa: F811
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=LOCAL, options=("--processes", "2")).start()
    try:
        supervisor = psutil.Process(service.process.pid)
        children = supervisor.children()
        assert len(children) == 2

        # Each connection goes to one of the two; exactly one of them leads.
        answers: set[bool] = set()
        wait_for(
            lambda: answers.add(httpx.get(f"{service.url}/readyz", timeout=5).json()["leader"]) or len(answers) == 2
        )

        with api(service, tokens["alice"]) as client:
            spec = job_spec(tmp_path, program).read_text()
            run_ids = [client.post("/jobs", json={"spec": spec}).json()["run_id"] for _ in range(4)]
            wait_for(lambda: all(client.get(f"/runs/{r}").json()["state"] == "SUCCEEDED" for r in run_ids), 90)
            assert all(len(client.get(f"/runs/{r}/attempts").json()) == 1 for r in run_ids)

        service.process.terminate()  # SIGTERM to the supervisor stops both, gracefully
        assert service.process.wait(30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
        assert "Application shutdown complete" in (tmp_path / "controller.log").read_text()
    finally:
        service.stop()


def test_service_processes_stop_when_their_supervisor_is_killed(postgres_db, tmp_path, home):
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", options=("--processes", "2")).start()
    children = psutil.Process(service.process.pid).children()
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {alive}"


def test_a_service_process_that_dies_takes_the_service_down_for_a_restart(postgres_db, tmp_path, home):
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", options=("--processes", "2")).start()
    children = psutil.Process(service.process.pid).children()
    children[0].kill()
    assert service.process.wait(30) != 0  # the pod (or unit) restarts the whole service
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    assert "ended on its own" in (tmp_path / "controller.log").read_text()


def test_connections_accepted_on_the_shared_socket_send_without_delay():
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose socket says
    TCP; the service processes' shared socket must, or each response waits for a delayed ACK."""
    listener = processes._listen("127.0.0.1", 0)
    accepted: list[int] = []

    async def serve_one_connection() -> None:
        loop = asyncio.get_running_loop()
        connected = loop.create_future()

        class Note(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                connected.set_result(None)

        server = await loop.create_server(Note, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        await asyncio.wait_for(connected, 10)
        writer.close()
        server.close()

    asyncio.run(serve_one_connection())
    assert accepted and accepted[0] != 0
