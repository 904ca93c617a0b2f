"""The CLI's remote mode: the same commands against a controller service's API.

``--server URL`` (or ``MLRT_SERVER``) and ``MLRT_TOKEN`` switch every
command from the embedded controller and local database to the API; without
``MLRT_TOKEN`` the token saved by ``mlrt login`` for that server is used
(``$XDG_CONFIG_HOME/mlrt/credentials.json``, default ``~/.config``, readable
by its owner only). :class:`RemoteStore` answers the read side of
:class:`mlrt.store.Store` from the API, so commands print the same tables
and JSON in both modes; refusals and bad input keep their exit codes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlrt.logfile import OutputPart
from mlrt.retry_after import retry_after_seconds
from mlrt.spec import SpecError
from mlrt.store import NotFound
from mlrt.store.models import Artifact, Attempt, Event, Job, Metric, Run

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.run_search import RunPage, RunQuery

BUSY_RETRY_FOR = 60.0
"""Seconds a command goes on sending a request the service answers 429 (too many at once)."""


class RemoteError(Exception):
    """The service refused a request (``status``: the HTTP status) or could not be reached
    (``status`` None); the message says why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mlrt"


def credentials_file() -> Path:
    return config_dir() / "credentials.json"


def saved_token(server: str) -> str | None:
    """The token ``mlrt login`` saved for ``server``, if any."""
    path = credentials_file()
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("servers", {}).get(server.rstrip("/"), {}).get("token")


def save_token(server: str, token: str) -> Path:
    """Store ``token`` for ``server`` in a file only its owner can read or write."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = credentials_file()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("servers", {})[server.rstrip("/")] = {"token": token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(path, 0o600)  # an older file may have been created with looser permissions
    return path


class ApiClient:
    """Authenticated calls to one controller service."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 60.0):
        import httpx  # only in remote mode: local commands do not pay for the import

        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{self.server}/api/v1", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any):
        """Send a request (an ``httpx.Response`` back, read whole); turn refusals into
        :class:`NotFound`, :class:`SpecError` or :class:`RemoteError`.

        A 429 (this caller has as many requests in flight as the service allows it) is sent
        again after its ``Retry-After`` (at most 10 s a time), for up to :data:`BUSY_RETRY_FOR`
        seconds: the service refused it before reading its body, so nothing was done."""
        return self._send(method, path, stream=False, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        """:meth:`request` whose answer's body is read as it arrives (``iter_lines``,
        ``iter_bytes``), closed when the block ends."""
        response = self._send(method, path, stream=True, **kwargs)
        try:
            yield response
        finally:
            response.close()

    def _send(self, method: str, path: str, *, stream: bool, **kwargs: Any):
        import httpx

        give_up = time.monotonic() + BUSY_RETRY_FOR
        while True:
            try:
                response = self.http.send(self.http.build_request(method, path, **kwargs), stream=stream)
                if stream and not response.is_success:
                    response.read()
            except httpx.HTTPError as exc:
                raise RemoteError(f"cannot reach the mlrt controller at {self.server}: {exc}") from None
            if response.status_code != 429:
                break
            pause = max(retry_after_seconds(response.headers.get("Retry-After"), default=1.0), 0.1)
            if time.monotonic() + pause > give_up:
                break
            time.sleep(pause)
        if response.is_success:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text.strip() or response.reason_phrase}
        detail = body.get("detail")
        if response.status_code == 422 and "problems" in body:
            raise SpecError(body["problems"])
        if response.status_code == 404:
            raise NotFound(str(detail))
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        raise RemoteError(f"{self.server} refused ({response.status_code}): {detail}", response.status_code)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {}).json()

    # -- commands that act --------------------------------------------------------

    def submit(self, spec_file: str, overrides: tuple[str, ...], sanity: bool, resume_from: str | None) -> str:
        """Upload a ``command:`` job's source bundle, then queue the spec with its digest; the run id back."""
        body = {
            **_spec_body(spec_file, overrides),
            "sanity": sanity,
            "resume_from": resume_from,
        }
        body.update(self.upload_source(spec_file, overrides))
        return self.post("/jobs", body)["run_id"]

    def upload_source(self, spec_file: str, overrides: tuple[str, ...]) -> dict[str, str]:
        """Pack and upload the spec's source bundle (:func:`mlrt.sources.pack_for_upload`); the
        ``source`` and ``source_dir`` fields of the submission, or nothing for a job without code."""
        from mlrt.bundles import BundleError
        from mlrt.sources import pack_for_upload

        try:
            packed = pack_for_upload(spec_file, overrides)
        except BundleError as exc:
            raise SpecError([str(exc)]) from None
        if packed is None:
            return {}
        bundle, source_dir = packed
        kept = self.request(
            "POST", "/sources", content=bundle.data, headers={"Content-Type": "application/gzip"}
        ).json()
        if kept["digest"] != bundle.digest:
            raise RemoteError(
                f"{self.server} kept the source bundle as {kept['digest'][:12]}, not {bundle.digest[:12]}"
            )
        return {"source": bundle.digest, "source_dir": source_dir}

    def source_bundle(self, run_id: str) -> bytes:
        """The source bundle run ``run_id`` ran (``mlrt runs source``)."""
        return self.request("GET", f"/runs/{quote(run_id)}/source").content

    def validate(self, spec_file: str, overrides: tuple[str, ...]) -> dict[str, Any]:
        """The service's validation plan, the spec checked inside its uploaded source bundle."""
        return self.post("/validate", {**_spec_body(spec_file, overrides), **self.upload_source(spec_file, overrides)})

    def cancel(self, run_id: str) -> Run:
        return Run.model_validate(self.post(f"/runs/{quote(run_id)}/cancel"))

    def log_part(self, run_id: str, attempt: int, rank: int, offset: int) -> OutputPart:
        """A piece of a worker's output from position ``offset`` (see :func:`mlrt.logfile.read_output`)."""
        response = self.request("GET", f"/runs/{quote(run_id)}/logs/{attempt}/{rank}", params={"offset": offset})
        start = int(response.headers.get("X-Output-Start", offset))
        return OutputPart(response.content, start, cut_after=response.headers.get("X-Cut-After") == "1")

    def build_reports(self, run_id: str, only: list[str]) -> dict[str, Any]:
        return self.post(f"/runs/{quote(run_id)}/reports", {"only": only})

    def report_results(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/runs/{quote(run_id)}/reports")

    def report_page(self, run_id: str) -> str | None:
        try:
            return self.request("GET", f"/runs/{quote(run_id)}/reports/html").text
        except NotFound:
            return None

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        return self.request("GET", f"/runs/{quote(run_id)}/artifacts/{quote(path)}").content

    def push_output(self, run_id: str) -> list[Artifact]:
        """Have the service upload a run's staged output (``mlrt artifacts push``); the artifacts back.

        No client timeout: the service retries the upload with backoff, and
        each S3 request retries on its own (minutes when S3 is down)."""
        response = self.request("POST", f"/runs/{quote(run_id)}/artifacts/push", json={}, timeout=None)
        return [Artifact.model_validate(a) for a in response.json()]


def _spec_body(spec_file: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The request body that carries a spec file: read within the size limit, UTF-8 checked."""
    from mlrt.spec import read_spec_text

    return {"spec": read_spec_text(spec_file), "filename": Path(spec_file).name, "overrides": list(overrides)}


class RemoteStore:
    """The read side of :class:`mlrt.store.Store`, answered by the API."""

    def __init__(self, client: ApiClient):
        self.client = client
        self.url = client.server

    def _run(self, run_id: str, suffix: str = "") -> str:
        return f"/runs/{quote(run_id)}{suffix}"

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self.client.get(self._run(run_id)))

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self.client.get(self._run(job_id, "/job")))

    def list_runs(self, *, limit: int = 50, states=(), job_id: str | None = None) -> list[Run]:
        params: dict[str, Any] = {"limit": limit, "state": list(states)}
        if job_id:
            params["job"] = job_id
        return [Run.model_validate(r) for r in self.client.get("/runs", **params)]

    def find_runs(self, query: RunQuery) -> RunPage:
        from mlrt.run_search import RunPage

        params: dict[str, Any] = {
            "state": list(query.states),
            "label": [f"{key}={value}" for key, value in query.labels],
            "where": [f"{c.key} {c.op} {c.value!r}" for c in query.where],
            "sort": query.sort,
            "limit": query.limit,
            "offset": query.offset,
            "top_level": query.top_level,
            **({"name": query.name} if query.name else {}),
            **({"job": query.job_id} if query.job_id else {}),
        }
        return RunPage.from_dict(self.client.get("/runs/search", **params))

    def trials(self, parent_id: str) -> list[Run]:
        return [Run.model_validate(r) for r in self.client.get(self._run(parent_id, "/trials"))]

    def attempts(self, run_id: str) -> list[Attempt]:
        return [Attempt.model_validate(a) for a in self.client.get(self._run(run_id, "/attempts"))]

    def latest_attempt(self, run_id: str) -> Attempt | None:
        attempts = self.attempts(run_id)
        return attempts[-1] if attempts else None

    def events(self, run_id: str) -> list[Event]:
        return [Event.model_validate(e) for e in self.client.get(self._run(run_id, "/events"))]

    def params(self, run_id: str) -> dict[str, str]:
        return self.client.get(self._run(run_id, "/params"))

    def metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        params = {"key": key} if key else {}
        return [Metric(run_id=run_id, **m) for m in self.client.get(self._run(run_id, "/metrics"), **params)]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return self.client.get(self._run(run_id, "/metrics/latest"))

    def params_of(self, run_ids: list[str]) -> dict[str, dict[str, str]]:
        return {run_id: self.params(run_id) for run_id in run_ids}

    def latest_metrics_of(self, run_ids: list[str]) -> dict[str, dict[str, float]]:
        return {run_id: self.latest_metrics(run_id) for run_id in run_ids}

    def metric_summary(self, run_id: str) -> list[dict[str, Any]]:
        return self.client.get(self._run(run_id, "/metrics/summary"))

    def iter_metric_points(
        self, run_id: str, key: str | None = None, *, every: int = 1
    ) -> Iterator[tuple[str, int, float, float]]:
        """The points as the service streams them, each parsed as its line arrives
        (:func:`mlrt.metric_json.points_of_lines`): a long series never sits whole in memory."""
        import httpx

        from mlrt.metric_json import points_of_lines

        params: dict[str, Any] = {"every": every, **({"key": key} if key else {})}
        with self.client.stream("GET", self._run(run_id, "/metrics"), params=params) as response:
            try:
                yield from points_of_lines(response.iter_lines())
            except (ValueError, httpx.HTTPError) as exc:
                raise RemoteError(
                    f"{self.client.server}: the points of run {run_id} came back cut off: {exc}"
                ) from None

    def last_values(self, run_ids: list[str], key: str) -> dict[str, float]:
        if not run_ids:
            return {}
        return self.client.get("/last-values", key=key, run=list(run_ids))

    def artifacts(self, run_id: str) -> list[Artifact]:
        return [Artifact.model_validate(a) for a in self.client.get(self._run(run_id, "/artifacts"))]


class RemoteRegistry:
    """The model registry through the service's ``/api/v1/models`` routes: the reads and writes
    of :class:`mlrt.store.registry.Registry` as the CLI uses them (changes are recorded as the
    token's user), and a version's files through its run's artifact routes."""

    def __init__(self, client: ApiClient):
        self.client = client

    def _model(self, name: str, suffix: str = "") -> str:
        return f"/models/{quote(name, safe='')}{suffix}"

    def list_models(self) -> list[dict[str, Any]]:
        return self.client.get("/models")

    def register(self, run_id: str, name: str, description: str = "") -> dict[str, Any]:
        return self.client.post("/models", {"run_id": run_id, "name": name, "description": description})

    def model(self, name: str) -> dict[str, Any]:
        return self.client.get(self._model(name))

    def version(self, reference: str) -> dict[str, Any]:
        from mlrt.store.registry import parse_reference

        name, which = parse_reference(reference)
        if which is None:
            versions = self.model(name)["versions"]
            if not versions:
                raise NotFound(f"model {name!r} has no version")
            which = versions[0]["version"]
        return self.client.get(self._model(name, f"/versions/{quote(str(which), safe='')}"))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        path = self._model(name, f"/aliases/{quote(alias, safe='')}")
        return self.client.request("PUT", path, json={"version": version}).json()

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self.client.request("DELETE", self._model(name, f"/aliases/{quote(alias, safe='')}")).json()

    def open_file(self, version: dict[str, Any], path: str) -> Iterator[bytes]:
        """The content of a model file, streamed from its run's artifact route."""
        import httpx

        url = f"/runs/{quote(version['run_id'])}/artifacts/{quote(path)}"
        try:
            with self.client.http.stream("GET", url) as response:
                if not response.is_success:
                    detail = response.read().decode("utf-8", "replace").strip() or response.reason_phrase
                    raise RemoteError(
                        f"{self.client.server} refused ({response.status_code}) {path!r}: {detail}",
                        response.status_code,
                    )
                yield from response.iter_bytes(1 << 20)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the mlrt controller at {self.client.server}: {exc}") from None
