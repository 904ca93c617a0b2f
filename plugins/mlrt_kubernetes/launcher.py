"""The ``kubernetes`` launch backend: each attempt is an Indexed Job and a headless Service.

Everything goes through the official ``kubernetes`` client, configured from
the in-cluster service account when mlrt runs in a pod, else from kubeconfig
(``KUBECONFIG``; ``MLRT_KUBE_CONTEXT`` picks a context). ``plan`` is pure
(:mod:`mlrt_kubernetes.manifests`); ``launch`` creates the Service, then the
Job, then makes the Job the Service's owner, so deleting the Job deletes it.
Objects are named after the run and attempt and labelled with them, so a
launch that finds its Job already there adopts it instead of creating a
second one, and a restarted controller finds it by its labels (``adopt``).

State comes from watches on the attempt's namespace (Jobs and Pods that mlrt
manages), kept in a cache that ``poll`` reads; each event wakes the
controller through :meth:`KubernetesLauncher.wakeup_fds`. Every worker pod's
log is copied into the worker's log file as it is written, so ``mlrt logs
-f``, metric patterns and failure reasons work as on the other backends, and
they stay after the cluster deletes the finished Job
(``ttlSecondsAfterFinished``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from mlrt.launchers import (
    LaunchContext,
    LaunchDeferred,
    Launcher,
    LaunchError,
    LaunchRequest,
    WorkerRequest,
    WorkerStatus,
)
from mlrt.logfile import CappedLog, output_size
from mlrt.names import env_name_problem, image_problem
from mlrt.secrets import HIDDEN
from mlrt.states import RunState
from mlrt_kubernetes import sagemaker
from mlrt_kubernetes.manifests import (
    FETCH_CONTAINER,
    FINALIZE_CONTAINER,
    INDEX_LABEL,
    MANAGED_BY,
    RESTORE_CONTAINER,
    RUN_ANNOTATION,
    TOKEN_VARIABLE,
    UPLOAD_CONTAINER,
    env_secret,
    finalize_job,
    needs_reports,
    plan_manifests,
    pod_settings,
    selector,
    spec_env_names,
    tracking_secret,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlrt_kubernetes.settings import KubernetesSettings

FINALIZE_LOG_LINES = 1_000
"""Lines of a finalizing pod's log the controller reads and keeps: the end, where the results are."""
FINALIZE_LOG_BYTES = 16 * 1024 * 1024
"""Bytes of those lines read at most: the results line of every report of a run fits many times over."""

# Waiting reasons after which a pod will not start without someone changing something.
FATAL_WAITING = {
    "ErrImagePull": "its image could not be pulled",
    "ImagePullBackOff": "its image could not be pulled",
    "InvalidImageName": "its image name is invalid",
    "CreateContainerConfigError": "its container could not be configured (a missing Secret or ConfigMap?)",
    "CreateContainerError": "its container could not be created",
}


def _api_error(exc: Exception) -> str:
    """One line from a client exception: the Status message when the API sent one."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(exc, "reason", None) or exc)


def _secret_values(secret: dict[str, Any], env: dict[str, str], attempt: int) -> dict[str, str]:
    """What one of the attempt's Secrets holds, from the launching worker's environment:
    the tracking token, or the ``spec.env`` values its plan names."""
    if secret["metadata"]["name"].endswith("-tracking"):
        values = {"token": env[TOKEN_VARIABLE]}
    else:
        values = {key: env[key] for key in secret["stringData"]}
    if HIDDEN in values.values():
        raise LaunchError(
            f"attempt {attempt}'s request was read back from the database, which holds no"
            " spec.env values; plan the attempt again to launch it"
        )
    return values


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _index(pod: dict[str, Any]) -> int:
    meta = pod["metadata"]
    value = (meta.get("labels") or {}).get(INDEX_LABEL) or (meta.get("annotations") or {}).get(INDEX_LABEL)
    return int(value) if value is not None else -1


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The ``state`` of the pod's ``worker`` container, or a finalizing pod's ``finalize`` container
    (``waiting``, ``running`` or ``terminated``)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") in ("worker", FINALIZE_CONTAINER):
            return status.get("state") or {}
    return {}


def _image_digest(pod: dict[str, Any]) -> str | None:
    """The digest of the image the pod's ``worker`` container runs, from its ``imageID``
    (``docker-pullable://repo@sha256:...``, ``repo@sha256:...``): ``sha256:...``, or None before it starts."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "worker" and status.get("imageID"):
            image_id = status["imageID"]
            return image_id[image_id.index("sha256:") :] if "sha256:" in image_id else image_id
    return None


def _last_line(message: str) -> str:
    """The last non-blank line of a termination message, cut to 300 characters."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _pod_done(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _planned_grace(pod: dict[str, Any]) -> int:
    """The pod's ``terminationGracePeriodSeconds`` (the API server's default is 30)."""
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return 30 if value is None else int(value)


_FETCHING = re.compile(r"\[mlrt fetch\] channel (\S+): fetching ")


def _failed_init_container(pod: dict[str, Any]) -> tuple[int, str] | None:
    """``(exit code, reason)`` when one of the pod's init containers (not a sidecar) failed: the data fetch names
    the channel it was fetching (:mod:`mlrt.fetch` says so before each one, and the termination message is the
    end of its log, ``FallbackToLogsOnError``), the checkpoint restore says so; else None."""
    name = pod["metadata"]["name"]
    sidecars = {c["name"] for c in pod["spec"].get("initContainers") or [] if c.get("restartPolicy") == "Always"}
    for init in (pod.get("status") or {}).get("initContainerStatuses") or []:
        terminated = (init.get("state") or {}).get("terminated") or {}
        code = int(terminated.get("exitCode", 0))
        if code == 0 or init.get("name") in sidecars:
            continue
        message = terminated.get("message") or ""
        how = "was OOM-killed" if terminated.get("reason") == "OOMKilled" else f"exited with code {code}"
        detail = f": {_last_line(message)}" if _last_line(message) else ""
        container = init.get("name")
        if container == FETCH_CONTAINER:
            channels = _FETCHING.findall(message)
            what = f"data channel {channels[-1]}" if channels else "its data channels"
            return code, f"could not fetch {what} in pod {name} (init container {container} {how}){detail}"
        if container == RESTORE_CONTAINER:
            return code, (
                f"could not restore the checkpoints of earlier attempts in pod {name}"
                f" (init container {container} {how}){detail}"
            )
        return code, f"init container {container} of pod {name} {how}{detail}"
    return None


def _failing_sidecar(pod: dict[str, Any]) -> str:
    """Why a sidecar of a running pod is failing (the upload sidecar: its output and checkpoints are not being
    uploaded), or "": a native sidecar that exits is restarted by the kubelet and does not fail the pod, so
    this is said as the worker's running reason (an event), not as a failure; the output upload is judged
    when the worker has exited, by its completion marker."""
    sidecars = {c["name"] for c in pod["spec"].get("initContainers") or [] if c.get("restartPolicy") == "Always"}
    for init in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if init.get("name") not in sidecars:
            continue
        exited = (init.get("lastState") or {}).get("terminated") or (init.get("state") or {}).get("terminated") or {}
        code = int(exited.get("exitCode", 0))
        if not code:
            continue
        detail = f": {_last_line(exited.get('message') or '')}" if _last_line(exited.get("message") or "") else ""
        what = "the output upload sidecar" if init["name"] == UPLOAD_CONTAINER else "sidecar"
        restarts = int(init.get("restartCount") or 0)
        again = f", restarted {restarts} time{'s' if restarts != 1 else ''}" if restarts else ""
        return f"{what} {init['name']} of pod {pod['metadata']['name']} exited with code {code}{again}{detail}"
    return ""


def _job_name(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("labels") or {}).get("job-name")


def _age(pod: dict[str, Any]) -> float:
    stamp = pod["metadata"].get("creationTimestamp")
    if not stamp:
        return 0.0
    created = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - created).total_seconds()


class _Backoff:
    """Exponential backoff with a cap: ``first``, then twice as long each time up to ``cap`` seconds; ``reset``
    after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = self.delay = first
        self.cap = cap

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def _respecting_retry_after(request: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the client's REST ``request`` so that every verb follows client-go's rule for a throttled answer
    (k8s.io/client-go/rest/with_retry.go): a 429, or a 5xx with a ``Retry-After`` header, is retried after
    that many seconds, up to 10 times; then the last answer is raised. An API server answers 429 from its
    max-in-flight and priority-and-fairness filters before it acts on the request, so retrying a POST is safe.
    The client's own ``client_go_retries`` does this for GET and HEAD only."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.utils.retry import is_retry_after_response, on_retry_after_error, retry_after_backoff

    def attempt(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        response = request(method, url, *args, **kwargs)
        refused = ApiException(status=response.status, reason=response.reason)
        refused.headers = response.getheaders()
        if is_retry_after_response(refused):
            response.read()
            response.response.release_conn()
            raise refused
        return response

    @functools.wraps(request)
    def request_with_retries(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return on_retry_after_error(
            retry_after_backoff(), is_retry_after_response, lambda: attempt(method, url, *args, **kwargs)
        )

    return request_with_retries


RESYNC_WATCHED = 60.0
"""Seconds between polls of a running run that no watch event named, while the watches are
open: polls then read the watch cache, which the events keep, so this is a safety net only
(client-go's informers resync from their cache for the same reason, every 10 hours by default
in controller-runtime). At 10,000 running runs, 5 s would be 2,000 polls a second."""

REQUEST_TIMEOUT = (10.0, 75.0)
"""Seconds to connect to the API server and to wait for its answer, for every call but watches
and log follows (streams that stay open). The API server answers a request within its own
``--request-timeout`` (60 s by default, kube-apiserver's command-line reference), so the read
timeout cuts no answer short; without it, a call to a server that stopped answering (a dead
node, a dropped route) waits for ever, and with it whatever waits on the call: the end of a
run, a controller's shutdown."""
# The collections mlrt creates objects in (_Cluster.create), as the Kubernetes API reference names them.
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
SECRETS = "/api/v1/namespaces/{namespace}/secrets"
SERVICES = "/api/v1/namespaces/{namespace}/services"


def _with_timeout(request: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the client's REST ``request`` so that a call without ``_request_timeout`` gets
    :data:`REQUEST_TIMEOUT`, unless it is a watch or a log follow."""

    @functools.wraps(request)
    def request_with_timeout(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        streams = not {"watch=true", "follow=true"}.isdisjoint(urlsplit(url).query.split("&"))
        if kwargs.get("_request_timeout") is None and not streams:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return request(method, url, *args, **kwargs)

    return request_with_timeout


_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _credential_sources() -> tuple[Any, ...]:
    """What :class:`_Cluster` reads its configuration from, with each file's identity and
    modification time: equal tuples mean the same configuration."""

    def identity(path: Path) -> tuple[str, int, int, int] | None:
        try:
            found = path.stat()
        except OSError:
            return None
        return str(path), found.st_ino, found.st_size, found.st_mtime_ns

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        files = [_SERVICE_ACCOUNT / "token", _SERVICE_ACCOUNT / "ca.crt"]
        where = (os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT"))
    else:
        configs = os.environ.get("KUBECONFIG") or "~/.kube/config"
        files = [Path(part).expanduser() for part in configs.split(os.pathsep) if part]
        where = (configs, os.environ.get("MLRT_KUBE_CONTEXT"))
    return (*where, *(identity(path) for path in files))


def _cluster_identity() -> tuple[Any, ...]:
    """What decides the cluster the client talks to, and as whom: :func:`_credential_sources`, but
    in a pod the API server's address only. The client reads the ServiceAccount token that the
    kubelet rotates again by itself (``load_incluster_config``'s token refresh)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT")
    return _credential_sources()


def _api_callers() -> int:
    """How many threads of a controller may call the API at once: the launch pool
    (``MLRT_LAUNCH_CONCURRENCY``), the finalizing pool (``MLRT_FINALIZE_CONCURRENCY``), the
    reconcile thread and the watches of a few namespaces."""
    from mlrt.controller import FINALIZE_CONCURRENCY, pool_size

    launches = pool_size("MLRT_LAUNCH_CONCURRENCY", "kubernetes", KubernetesLauncher.launch_concurrency)
    return launches + pool_size("MLRT_FINALIZE_CONCURRENCY", "", FINALIZE_CONCURRENCY) + 8


class _Cluster:
    """The client objects, created on first use (planning needs no cluster); throttled calls wait and retry
    (:func:`_respecting_retry_after`)."""

    def __init__(self) -> None:
        from kubernetes import client, config
        from urllib3.util.retry import Retry

        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # KUBECONFIG as it is now: the client reads it once, when it is imported.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                context=os.environ.get("MLRT_KUBE_CONTEXT"),
                client_configuration=configuration,
            )
        # urllib3 would retry a 429 itself for some verbs only, 3 times, then raise: leave answers to the wrapper.
        configuration.retries = Retry(total=3, status=0, respect_retry_after_header=False)
        # Keep a connection for every thread that calls the API at once, or urllib3 discards the surplus
        # and each of their calls opens a new one (its default keeps 5 per CPU).
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, _api_callers())
        self.api = client.ApiClient(configuration)
        self.api.rest_client.request = _with_timeout(_respecting_retry_after(self.api.rest_client.request))
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def create(self, resource_path: str, namespace: str, body: dict[str, Any]) -> Any:
        """POST the manifest ``body`` to ``resource_path`` (such as
        ``/apis/batch/v1/namespaces/{namespace}/jobs``) as it is: the response of a
        ``_preload_content=False`` call, and an ``ApiException`` for an answer that is not 2xx,
        as the client's ``create_namespaced_*`` calls give them. Those validate a dict body
        into the client's pydantic model and serialize that back to the same dict, about
        0.4 ms of CPU for a Job, at every launch (the manifests are mlrt's own, checked
        against the API's schemas by kubernetes-validate in the tests). Built with the
        client's own ``param_serialize`` and ``call_api``, as those calls are, so the
        credentials, retries and timeouts are the same."""
        from kubernetes.client.exceptions import ApiException

        request = self.api.param_serialize(
            method="POST",
            resource_path=resource_path,
            path_params={"namespace": namespace},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    @staticmethod
    def raw(response: Any) -> dict[str, Any]:
        """The JSON body of a call made with ``_preload_content=False``."""
        return json.loads(response.data)

    @staticmethod
    def done(response: Any) -> None:
        """Finish a call made with ``_preload_content=False`` whose answer is not needed (no
        model objects built from it): read the body, so the connection goes back to the pool."""
        response.drain_conn()
        response.release_conn()


def _cached(obj: dict[str, Any]) -> dict[str, Any]:
    """What a watch cache keeps of a Job or Pod: what polls read of it (its metadata but
    ``managedFields``, its status, and of a pod's spec the grace period and its init
    containers' names and restart policies), not the pod template, commands and environment
    that make a Job or Pod of mlrt's about 25 KB as Python objects, 500 MB at 10,000 running
    runs. client-go's informers take a transform for the same reason (``SetTransform`` in
    k8s.io/client-go/tools/cache; controller-runtime's ``TransformStripManagedFields``)."""
    metadata = {key: value for key, value in obj.get("metadata", {}).items() if key != "managedFields"}
    kept = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": metadata,
        "status": obj.get("status") or {},
    }
    spec = obj.get("spec") or {}
    if "terminationGracePeriodSeconds" in spec or "initContainers" in spec:
        kept["spec"] = {
            "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds"),
            "initContainers": [
                {"name": c.get("name"), "restartPolicy": c.get("restartPolicy")}
                for c in spec.get("initContainers") or []
            ],
        }
    return kept


def _run_of(obj: dict[str, Any]) -> str | None:
    """The run an object of mlrt's belongs to (its ``mlrt.dev/run-id`` annotation)."""
    return (obj.get("metadata", {}).get("annotations") or {}).get(RUN_ANNOTATION)


def _error_event(status: dict[str, Any]) -> Exception:
    """The exception for a watch's ERROR event, whose object is a ``Status`` (``from_event`` tells it from an
    error answer to the request)."""
    from kubernetes.client.exceptions import ApiException

    error = ApiException(status=status.get("code"), reason=status.get("reason"))
    error.body = json.dumps(status)
    error.from_event = True
    return error


def _failure(exc: Exception) -> str:
    """A failed call in a few stable words (the same failure reads the same each time): the API's status and
    message, else the exception's type."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {_api_error(exc)}"
    return type(exc).__name__


class _Watch:
    """Watches mlrt's Jobs and Pods in one namespace into a cache; pokes a pipe on every event
    and tells ``changed`` which run it concerned (None after a relist: any run may have).

    Each kind follows client-go's reflector (k8s.io/client-go/tools/cache/reflector.go): list, then watch
    from the list's resourceVersion with bookmarks allowed, keeping the resourceVersion of every event and
    BOOKMARK. A watch that ends (the server's timeout, a dropped stream) resumes from there; one answered
    410 Gone (an ERROR event, or the HTTP status) lists again at once, as the API documents for an expired
    resourceVersion (docs: "API concepts > Efficient detection of changes"), and any other ERROR event lists
    again after the backoff. Every failure but a 410 waits with exponential backoff (0.8 s doubling up to
    30 s), and until the watch is open again :meth:`job` and
    :meth:`pods` say the cache cannot answer, so ``poll`` reads the API. :attr:`problem` says what is wrong
    when a call is forbidden (403) or has failed :data:`REPORT_AFTER` times in a row, for the runs' events.
    """

    WATCH_TIMEOUT = 300  # seconds: the timeoutSeconds each watch request asks for
    REPORT_AFTER = 3  # consecutive failures after which a watch's trouble is reported
    RESOURCES: ClassVar[dict[str, str]] = {"Job": "jobs.batch", "Pod": "pods"}

    def __init__(self, cluster: _Cluster, namespace: str, wake: int, changed: Callable[[str | None], None]):
        self.cluster = cluster
        self.namespace = namespace
        self.wake = wake
        self.changed = changed
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"Job": {}, "Pod": {}}
        self.pods_by_job: dict[str, dict[str, dict[str, Any]]] = {}  # job-name label -> pod name -> pod
        self.synced: set[str] = set()
        self.problems: dict[str, str] = {}  # kind -> what keeps its watch from working
        self.retired = threading.Event()
        """Set when the launcher's credentials changed: the threads end at their next event or retry."""
        for kind in self.objects:
            threading.Thread(target=self._run, args=(kind,), name=f"mlrt-watch-{kind}", daemon=True).start()

    @property
    def problem(self) -> str:
        """What keeps this namespace's watches from working, as one line; "" when they work."""
        with self.lock:
            return "; ".join(self.problems[kind] for kind in sorted(self.problems))

    def _list_function(self, kind: str):
        if kind == "Job":
            return self.cluster.batch.list_namespaced_job
        return self.cluster.core.list_namespaced_pod

    def _run(self, kind: str) -> None:
        from kubernetes.client.exceptions import ApiException

        function = self._list_function(kind)
        backoff = _Backoff(0.8, 30.0)
        failures = 0
        version: str | None = None  # where the watch resumes; None: list first
        while not self.retired.is_set():
            verb = "list" if version is None else "watch"
            try:
                if version is None:
                    version = self._list(kind, function)
                else:
                    for seen in self._events(kind, function, version):
                        if self.retired.is_set():
                            return
                        version = seen
                        failures = 0
                        backoff.reset()
                        self._set_problem(kind, "")
            except ApiException as exc:
                if exc.status == 410 or getattr(exc, "from_event", False):
                    version = None  # expired, or any ERROR event: client-go's reflector lists again
                if exc.status != 410:
                    failures = self._failed(kind, verb, exc, failures, backoff)
            except Exception as exc:  # the stream broke or the server cannot be reached
                failures = self._failed(kind, verb, exc, failures, backoff)

    def _list(self, kind: str, function: Callable[..., Any]) -> str:
        """List the kind into the cache; return the list's resourceVersion."""
        listing = self.cluster.raw(
            function(self.namespace, label_selector=f"{MANAGED_BY}=mlrt", _preload_content=False)
        )
        items = [_cached(item) for item in listing["items"]]
        with self.lock:
            self.objects[kind] = {item["metadata"]["name"]: item for item in items}
            if kind == "Pod":
                self.pods_by_job = {}
                for item in items:
                    self.pods_by_job.setdefault(_job_name(item), {})[item["metadata"]["name"]] = item
            self.synced.add(kind)
        self.changed(None)
        self._poke()
        return listing["metadata"]["resourceVersion"]

    def _events(self, kind: str, function: Callable[..., Any], version: str):
        """Watch from ``version`` into the cache; yield ``version`` once the watch is open, then the
        resourceVersion of each event and bookmark."""
        from kubernetes.watch.watch import iter_resp_lines

        response = function(
            self.namespace,
            label_selector=f"{MANAGED_BY}=mlrt",
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.WATCH_TIMEOUT,
            _preload_content=False,
        )
        with self.lock:
            self.synced.add(kind)  # the events since ``version`` follow: the cache misses nothing
        try:
            yield version
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":  # a Status: 410 when ``version`` left the server's history
                    raise _error_event(obj)
                if event["type"] != "BOOKMARK":
                    self._apply(kind, event["type"], _cached(obj))
                yield obj["metadata"]["resourceVersion"]
        finally:
            response.close()
            response.release_conn()

    def _apply(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        with self.lock:
            name = obj["metadata"]["name"]
            if type_ == "DELETED":
                self.objects[kind].pop(name, None)
                pods = self.pods_by_job.get(_job_name(obj)) if kind == "Pod" else None
                if pods is not None:
                    pods.pop(name, None)
                    if not pods:
                        del self.pods_by_job[_job_name(obj)]
            else:
                self.objects[kind][name] = obj
                if kind == "Pod":
                    self.pods_by_job.setdefault(_job_name(obj), {})[name] = obj
        self.changed(_run_of(obj))
        self._poke()

    def _failed(self, kind: str, verb: str, exc: Exception, failures: int, backoff: _Backoff) -> int:
        """Count a failure, report it when forbidden or repeated, and wait before the next try."""
        from kubernetes.client.exceptions import ApiException

        failures += 1
        with self.lock:
            self.synced.discard(kind)
        resource = self.RESOURCES[kind]
        if isinstance(exc, ApiException) and exc.status == 403:
            self._set_problem(
                kind,
                f"the cluster forbids mlrt to {verb} {resource} in namespace {self.namespace} ({_api_error(exc)}):"
                f" grant the verb {verb} on {resource} to mlrt's ServiceAccount; until then mlrt reads the state"
                " from the API, and retries with backoff",
            )
        elif failures >= self.REPORT_AFTER:
            self._set_problem(
                kind,
                f"the {verb} of {resource} in namespace {self.namespace} keeps failing ({_failure(exc)});"
                f" mlrt retries with backoff up to {backoff.cap:g}s and reads the state from the API meanwhile",
            )
        time.sleep(backoff.next())
        return failures

    def _set_problem(self, kind: str, problem: str) -> None:
        with self.lock:
            if self.problems.get(kind, "") == problem:
                return
            if problem:
                self.problems[kind] = problem
            else:
                del self.problems[kind]
        self.changed(None)  # every run in the namespace is affected
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self.wake, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the controller will wake anyway

    def open(self) -> bool:
        """Whether both watches are open and working: every change reaches ``changed``."""
        with self.lock:
            return len(self.synced) == len(self.objects) and not self.problems

    def job(self, name: str) -> tuple[bool, dict[str, Any] | None]:
        """``(known, job)``: whether the cache can answer, and the Job if it exists."""
        with self.lock:
            return "Job" in self.synced, self.objects["Job"].get(name)

    def pods(self, job: str) -> tuple[bool, list[dict[str, Any]]]:
        with self.lock:
            return "Pod" in self.synced, list(self.pods_by_job.get(job, {}).values())


_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def _stamped(line: bytes) -> tuple[int | None, bytes]:
    """``(ns since the epoch, text)`` of a log line read with ``timestamps=true`` (RFC3339Nano, then a space);
    ``(None, line)`` when it has no timestamp."""
    match = _STAMP.match(line)
    if match is None:
        return None, line
    whole, fraction, zone = (part.decode() if part else "" for part in match.groups())
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()) * 10**9 + int(fraction.ljust(9, "0") or 0), line[match.end() :]


class _LogCopy:
    """Copies one pod's worker log into a file as it is written, until the worker has terminated, skipping
    ``skip`` bytes of the log first, within the log's size limit (:class:`mlrt.logfile.CappedLog`).

    The log is followed with ``timestamps=true``. When the stream ends or breaks while the worker still runs
    (an API server restart, a kubelet's log rotation, an idle timeout), the copy reads it again after a
    backoff (0.2 s doubling up to 10 s, reset by each line copied) with ``sinceSeconds`` reaching
    :data:`OVERLAP` seconds before the last copied line was received (the client offers no ``sinceTime``,
    and the node's clock need not be ours). The answer repeats lines: those stamped before the last copied
    one are dropped, and so are as many stamped exactly like it as were already copied, since lines written
    together share a timestamp. Only whole lines are copied, but for a last line without newline once the
    worker has terminated. The copy ends after a stream opened once the worker had terminated has ended,
    or when the pod is gone.
    """

    OVERLAP = 5  # seconds: room for the delay between the kubelet stamping a line and the copy receiving it

    def __init__(
        self,
        cluster: _Cluster,
        namespace: str,
        pod: str,
        path: Path,
        skip: int,
        header: str = "",
        wrote: Callable[[], None] = lambda: None,
    ):
        self.cluster, self.namespace, self.pod = cluster, namespace, pod
        self.skip, self.wrote = skip, wrote
        self.last: int | None = None  # timestamp of the last line copied (or skipped)
        self.same = 0  # how many lines copied (or skipped) carry that timestamp
        self.received = 0.0  # time.monotonic() when that line arrived
        self._resumed: tuple[int | None, int] = (None, 0)  # (last, same) when the current request was made
        self._repeats = 0  # lines of the current answer stamped ``last`` that were dropped as copied before
        self._skip = 0  # bytes of the current answer still to drop (an adopted pod's log the file has)
        self.thread = threading.Thread(target=self._run, args=(path, header), name=f"mlrt-log-{pod}", daemon=True)
        self.thread.start()

    def _run(self, path: Path, header: str) -> None:
        backoff = _Backoff(0.2, 10.0)
        final = False  # the worker had terminated before the current request
        with CappedLog(path) as out:
            if header:
                out.write(header.encode())
            while True:
                ended, copied = self._read(out, final)
                if copied:
                    backoff.reset()
                if ended and final:
                    return
                state = self._worker_state()
                if state == "gone":
                    return
                if state == "terminated" and not final:
                    final = True  # read once more, at once: that answer is complete
                else:
                    time.sleep(backoff.next())

    def _read(self, out: CappedLog, final: bool) -> tuple[bool, bool]:
        """One request: copy the new lines; return whether the stream ended cleanly and whether it copied any."""
        since = None if self.last is None else math.ceil(time.monotonic() - self.received) + self.OVERLAP
        # Lines of this answer up to the last copied one were copied before: drop them.
        self._resumed, self._repeats = (self.last, self.same), 0
        self._skip = self.skip if self.last is None else 0  # read from the log's start: drop what the file has
        copied = False
        rest = b""
        try:
            response = self.cluster.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container="worker",
                follow=True,
                timestamps=True,
                since_seconds=since,
                _preload_content=False,
            )
            try:
                for chunk in response.stream(65536):
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        copied = self._line(out, line + b"\n") or copied
            finally:
                response.close()
                response.release_conn()
        except Exception:  # the stream broke or could not be opened: read again
            return False, copied
        if rest and final:  # the worker's last output, without a newline
            copied = self._line(out, rest) or copied
        return True, copied

    def _line(self, out: CappedLog, line: bytes) -> bool:
        """Copy one line unless an earlier request copied it; return whether anything was written."""
        stamp, text = _stamped(line)
        if stamp is not None:
            last, same = self._resumed
            if last is not None and (stamp < last or (stamp == last and self._repeats < same)):
                self._repeats += stamp == last
                return False
            if stamp == self.last:
                self.same += 1
            else:
                self.last, self.same = stamp, 1
            self.received = time.monotonic()
        if self._skip:
            dropped = min(self._skip, len(text))
            self._skip, text = self._skip - dropped, text[dropped:]
        if text:
            out.write(text)
            self.wrote()
        return bool(text)

    def _worker_state(self) -> str:
        """``"running"``, ``"terminated"`` (the worker container, or the whole pod) or ``"gone"`` (no such pod)."""
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.cluster.raw(
                self.cluster.core.read_namespaced_pod(self.pod, self.namespace, _preload_content=False)
            )
        except ApiException as exc:
            return "gone" if exc.status == 404 else "running"
        except Exception:
            return "running"
        phase = (pod.get("status") or {}).get("phase")
        if _container_state(pod).get("terminated") or phase in ("Succeeded", "Failed"):
            return "terminated"
        return "running"


def _check_names(ctx: LaunchContext) -> None:
    """The image and environment names go into the pod as the container backend takes them:
    an OCI image reference and POSIX names, whatever the spec's validation already said."""
    image = ctx.container_image()
    problem = image_problem(image)
    if problem:
        raise LaunchError(f"image {image[:200]!r}: {problem}", retry=False)
    for name in [*ctx.env, *pod_settings(ctx.compute).secret_env]:
        if env_name_problem(name):
            raise LaunchError(f"spec.env: {name[:80]!r} is not a valid environment variable name", retry=False)


class KubernetesLauncher(Launcher):
    """Runs an attempt's workers as the pods of an Indexed Job; see the module docstring."""

    name: ClassVar[str] = "kubernetes"
    description: ClassVar[str] = "pods of a batch/v1 Indexed Job on a Kubernetes cluster"
    runs_images: ClassVar[bool] = True
    survives_controller: ClassVar[bool] = True
    uploads_output: ClassVar[bool] = True  # the pods' upload sidecar (mlrt.s3sync)
    # API round trips dominate a launch: overlap them. 64 at once, not 32: with 10,000 jobs queued
    # launches kept up with the submissions, p99 submit -> RUNNING 4-7 s, not 30 s (bench/README.md).
    launch_concurrency: ClassVar[int] = 64
    contracts: ClassVar[tuple[str, ...]] = ("mlrt", "sagemaker")

    def contract_problem(self, contract: str, compute: dict[str, Any]) -> str | None:
        """The SageMaker contract for one worker only (:mod:`mlrt_kubernetes.sagemaker`)."""
        problem = sagemaker.contract_problem(compute.get("workers", 1)) if contract == "sagemaker" else None
        return problem or super().contract_problem(contract, compute)

    def settings_model(self) -> type[KubernetesSettings]:
        """``spec.compute.kubernetes``: :class:`mlrt_kubernetes.settings.KubernetesSettings`."""
        from mlrt_kubernetes.settings import KubernetesSettings

        return KubernetesSettings

    def __init__(self) -> None:
        self._cluster: _Cluster | None = None
        self._cluster_sources: tuple[Any, ...] = ()
        self._watches: dict[str, _Watch] = {}
        self._copies: dict[str, _LogCopy] = {}  # pod name -> its log copy
        self._resume: set[tuple[str, int]] = set()  # (job, rank) whose log file an adopted copy continues
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()  # launches run concurrently (launch_concurrency)
        self._changed: set[str] | None = None  # None: any run may have changed
        self._timers: dict[str, float] = {}  # run id -> when a poll must look again (a pod's schedule timeout)
        self._credentials_passed: tuple[Any, ...] | None = None  # what the last passing preflight read

    @property
    def cluster(self) -> _Cluster:
        """The API client for the credentials as they are now: made again when their files or
        variables changed (:func:`_cluster_identity`), so one process that serves several
        commands (the resident process, a test session) never talks to a cluster it was pointed
        at before, nor reads the watch caches of one."""
        sources = _cluster_identity()
        with self._lock:
            if self._cluster is None or sources != self._cluster_sources:
                try:
                    self._cluster = _Cluster()
                except Exception as exc:
                    raise LaunchError(f"cannot reach a Kubernetes cluster: {exc}") from None
                self._cluster_sources = sources
                for watch in self._watches.values():
                    watch.retired.set()
                self._watches = {}
            return self._cluster

    def _note_change(self, run_id: str | None) -> None:
        with self._lock:
            if run_id is None:
                self._changed = None
            elif self._changed is not None:
                self._changed.add(run_id)

    def changed_runs(self) -> set[str] | None:
        """Runs whose Job or pods had a watch event, or whose log grew, since the last call, and
        those a poll asked to be looked at again by now (a pending pod's schedule timeout)."""
        now = time.monotonic()
        with self._lock:
            changed, self._changed = self._changed, set()
            ripe = [run_id for run_id, at in self._timers.items() if at <= now]
            for run_id in ripe:
                del self._timers[run_id]
            if changed is not None:
                changed.update(ripe)
            return changed

    def _look_again(self, pod: dict[str, Any], seconds: float) -> None:
        """Have the run of ``pod`` polled again in ``seconds`` (no watch event says when time is up)."""
        run_id = _run_of(pod)
        if run_id is not None:
            at = time.monotonic() + max(seconds, 0.0)
            with self._lock:
                self._timers[run_id] = min(at, self._timers.get(run_id, at))

    @property
    def resync_interval(self) -> float:
        """:data:`RESYNC_WATCHED` while the watches of every namespace are open (they name each
        run whose Job or pods changed, and a relist names every run), else the default: the
        runs are then polled through the API, as client-go's informers fall back to a relist."""
        with self._lock:
            watches = list(self._watches.values())
        if all(watch.open() for watch in watches):
            return RESYNC_WATCHED
        return super().resync_interval

    def preflight(self, compute: dict[str, Any]) -> str | None:
        """No usable credentials: neither the in-cluster service account nor a kubeconfig
        (``KUBECONFIG``, else ``~/.kube/config``) with the context ``MLRT_KUBE_CONTEXT`` names
        (else its current one). Reads the configuration only; the cluster is not contacted.

        A service checks this for every submission: the configuration is read again only when
        the files or variables it comes from changed since it last passed."""
        sources = _credential_sources()
        if sources == self._credentials_passed:
            return None
        try:
            _Cluster()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return (
                f"spec.compute.backend: kubernetes: no usable cluster credentials here ({first}); set KUBECONFIG"
                " to a kubeconfig file (MLRT_KUBE_CONTEXT picks its context) or submit from inside the cluster"
            )
        self._credentials_passed = sources
        return None

    # -- plan ----------------------------------------------------------------

    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        _check_names(ctx)
        job, service = plan_manifests(ctx)
        name = job["metadata"]["name"]
        workers = []
        for rank in range(int(ctx.compute.get("workers", 1))):
            env = {
                e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e
            }
            env["RANK"] = str(rank)
            # For launch (the attempt's Secrets); the stored and printed request hides them.
            for secret_name in [*spec_env_names(ctx), TOKEN_VARIABLE]:
                if secret_name in ctx.env:
                    env[secret_name] = ctx.env[secret_name]
            log_path = str(Path(ctx.log_dir) / f"worker-{rank}.log")
            workers.append(WorkerRequest(rank=rank, argv=ctx.container_argv(), env=env, cwd="", log_path=log_path))
        details = {
            "namespace": job["metadata"]["namespace"],
            "job": name,
            "selector": selector(ctx.run_id, ctx.attempt),
            "schedule_timeout": pod_settings(ctx.compute).schedule_timeout,
            "manifests": [service, job] if service is not None else [job],
        }
        for secret in (tracking_secret(ctx), env_secret(ctx)):
            if secret is not None:
                details["manifests"].insert(0, secret)
        if needs_reports(ctx):
            details["finalize"] = finalize_job(ctx, job)
        return LaunchRequest(self.name, ctx.run_id, ctx.attempt, workers, details)

    # -- act -----------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as ConnectionFault

        *secrets, job = request.details["manifests"]  # [Secrets..., the Service (several workers), the Job]
        service = secrets.pop() if secrets and secrets[-1]["kind"] == "Service" else None
        namespace, name = request.details["namespace"], request.details["job"]
        cluster = self.cluster
        self._watch(namespace)
        try:
            for secret in secrets:  # spec.env values and the tracking token: they must exist before the pods start
                values = _secret_values(secret, request.workers[0].env, request.attempt)
                try:
                    cluster.done(cluster.create(SECRETS, namespace, {**secret, "stringData": values}))
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    cluster.done(
                        cluster.core.patch_namespaced_secret(
                            secret["metadata"]["name"], namespace, {"stringData": values}, _preload_content=False
                        )
                    )
            if service is not None:
                try:
                    cluster.done(cluster.create(SERVICES, namespace, service))
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            try:
                created = cluster.raw(cluster.create(JOBS, namespace, job))
            except ApiException as exc:
                if exc.status != 409:
                    raise
                created = cluster.raw(cluster.batch.read_namespaced_job(name, namespace, _preload_content=False))
                if created["metadata"].get("labels", {}).get(MANAGED_BY) != "mlrt":
                    raise LaunchError(f"a Job named {name} that mlrt did not create exists in {namespace}") from None
            owner = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": created["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
            owned = {"metadata": {"ownerReferences": [owner]}}
            if service is not None:
                cluster.done(cluster.core.patch_namespaced_service(name, namespace, owned, _preload_content=False))
            for secret in secrets:  # deleted with the Job
                cluster.done(
                    cluster.core.patch_namespaced_secret(
                        secret["metadata"]["name"], namespace, owned, _preload_content=False
                    )
                )
        except ApiException as exc:
            if exc.status == 429 or (exc.status >= 500 and "Retry-After" in (exc.headers or {})):
                # Still throttled after client-go's ten retries: the API server is overloaded, not the
                # attempt wrong. The same attempt is launched again later: what was made is taken over (409).
                raise LaunchDeferred(f"the cluster's API is throttling requests ({_api_error(exc)})") from None
            raise LaunchError(f"the cluster refused the attempt's objects: {_api_error(exc)}") from None
        except ConnectionFault as exc:
            # The connection dropped between a request and its answer (an API server restarting, a proxy closing
            # a kept-alive connection): urllib3 does not send a POST again, as it may have been done. Launching
            # the same attempt again is safe: what was made is taken over (409).
            problem = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise LaunchDeferred(f"the cluster's API did not answer ({problem})", after=1.0) from None
        return self._handle(request)

    def adopt(self, request: LaunchRequest, handle: dict[str, Any] | None) -> dict[str, Any] | None:
        namespace = request.details["namespace"]
        try:
            jobs = self.cluster.raw(
                self.cluster.batch.list_namespaced_job(
                    namespace, label_selector=request.details["selector"], _preload_content=False
                )
            )["items"]
        except Exception as exc:
            raise LaunchError(f"cannot look for the attempt's Job: {_api_error(exc)}") from None
        if not jobs:
            return None
        self._watch(namespace)
        adopted = self._handle(request)
        self._resume.update((adopted["job"], w.rank) for w in request.workers)
        if handle and "scanned" in handle:
            adopted["scanned"] = handle["scanned"]
        return adopted

    def _handle(self, request: LaunchRequest) -> dict[str, Any]:
        return {
            "namespace": request.details["namespace"],
            "job": request.details["job"],
            "workers": [{"rank": w.rank, "log_path": w.log_path} for w in request.workers],
            "schedule_timeout": request.details["schedule_timeout"],
        }

    def _watch(self, namespace: str) -> _Watch:
        cluster = self.cluster
        with self._lock:
            if namespace not in self._watches:
                self._watches[namespace] = _Watch(cluster, namespace, self._write, self._note_change)
            return self._watches[namespace]

    # -- observe -------------------------------------------------------------

    def _state(self, handle: dict[str, Any], fresh: bool = False) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The attempt's Job (None when gone) and its pods: from the watch cache when
        it is synced, else (or when ``fresh``) from the API."""
        namespace, name = handle["namespace"], handle["job"]
        watch = self._watches.get(namespace)
        if watch is not None and not fresh:
            jobs_known, job = watch.job(name)
            pods_known, pods = watch.pods(name)
            if jobs_known and pods_known:
                return job, pods
        from kubernetes.client.exceptions import ApiException

        cluster = self.cluster
        try:
            job = cluster.raw(cluster.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise
            job = None
        pods = cluster.raw(
            cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}", _preload_content=False)
        )["items"]
        return job, pods

    def poll(self, handle: dict[str, Any]) -> list[WorkerStatus]:
        job, pods = self._state(handle)
        if job is None or _condition(job, "Complete") or _condition(job, "Failed"):
            # The Job's and the pods' watches are separate streams: read the pods'
            # final states from the API, not from a cache that may lag the Job's.
            job, pods = self._state(handle, fresh=True)
        self._copy_logs(handle, pods)
        ranks = [w["rank"] for w in handle["workers"]]
        if job is None:
            return [WorkerStatus(r, RunState.FAILED, reason="its Job was deleted outside mlrt") for r in ranks]
        latest: dict[int, dict[str, Any]] = {}
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            latest[_index(pod)] = pod
        if _condition(job, "Complete"):
            done = {r: _image_digest(latest[r]) if r in latest else None for r in ranks}
            return [WorkerStatus(r, RunState.SUCCEEDED, exit_code=0, image_digest=done[r]) for r in ranks]
        failed = _condition(job, "Failed")
        statuses = []
        for rank in ranks:
            pod = latest.get(rank)
            status = self._pod_status(rank, pod, handle) if pod is not None else None
            if status is None or (failed and status.state is RunState.RUNNING):
                if failed:
                    why = failed.get("reason", "Failed")
                    message = failed.get("message", "")
                    if why == "DeadlineExceeded":
                        message = "the Job ran past its activeDeadlineSeconds"
                    status = WorkerStatus(rank, RunState.FAILED, reason=f"its Job failed ({why}): {message}".strip())
                else:
                    status = WorkerStatus(rank, RunState.RUNNING, reason="")
            if status.state is RunState.FAILED and pod is not None:
                status.reason += self._log_complete(pod, Path(handle["workers"][ranks.index(rank)]["log_path"]))
            status.image_digest = _image_digest(pod) if pod is not None else None
            statuses.append(status)
        self._report_watch_problem(handle["namespace"], statuses)
        return statuses

    def _report_watch_problem(self, namespace: str, statuses: list[WorkerStatus]) -> None:
        """Say what keeps the namespace's watches from working (:attr:`_Watch.problem`) as the reason of the
        first worker still running without one: the controller records a running worker's new reason as an
        event on the run, once, so every affected run gets one event per problem."""
        watch = self._watches.get(namespace)
        problem = watch.problem if watch is not None else ""
        for status in statuses:
            if problem and status.state is RunState.RUNNING and not status.reason:
                status.reason = problem
                return

    def _log_complete(self, pod: dict[str, Any], path: Path) -> str:
        """Wait (briefly) until a finished pod's log is fully copied, so the failure
        reason can quote its last line; return the termination message as detail
        when the log has nothing."""
        copy = self._copies.get(pod["metadata"]["name"])
        if copy is not None:
            copy.thread.join(5.0)
        if path.exists() and path.stat().st_size:
            return ""
        message = (_container_state(pod).get("terminated") or {}).get("message") or ""
        lines = [line for line in message.splitlines() if line.strip()]
        return f": {lines[-1].strip()[:300]}" if lines else ""

    def upload_problem(self, handle: dict[str, Any], rank: int) -> str:
        """The last line of the termination message of the upload sidecar in worker ``rank``'s
        latest pod: the cluster fills it with the end of the sidecar's log when it exits with an
        error (``FallbackToLogsOnError``), as :mod:`mlrt.s3sync` does when S3 still fails."""
        _, pods = self._state(handle, fresh=True)
        mine = [pod for pod in pods if _index(pod) == rank]
        if not mine:
            return ""
        latest = max(mine, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
        for status in (latest.get("status") or {}).get("initContainerStatuses") or []:
            if status.get("name") == UPLOAD_CONTAINER:
                # Its last exit: the current state once the pod has ended, else the one before its restart.
                exited = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
                    "terminated"
                )
                return _last_line((exited or {}).get("message") or "")
        return ""

    def _pod_status(self, rank: int, pod: dict[str, Any], handle: dict[str, Any]) -> WorkerStatus:
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase", "Pending")
        failed_init = _failed_init_container(pod)
        if failed_init is not None:
            code, reason = failed_init
            return WorkerStatus(rank, RunState.FAILED, exit_code=code, reason=reason)
        state = _container_state(pod)
        terminated = state.get("terminated")
        if terminated is not None:
            code = int(terminated.get("exitCode", 0))
            if code == 0:
                return WorkerStatus(rank, RunState.SUCCEEDED, exit_code=0)
            if terminated.get("reason") == "OOMKilled":
                reason = f"was OOM-killed (exit code {code}) in pod {name}: raise compute.memory"
            else:
                reason = f"exited with code {code} in pod {name}"
            return WorkerStatus(rank, RunState.FAILED, exit_code=code, reason=reason)
        if phase == "Failed":
            reason = (pod.get("status") or {}).get("reason") or "Failed"
            return WorkerStatus(rank, RunState.FAILED, reason=f"pod {name} failed ({reason})")
        if phase == "Succeeded":
            return WorkerStatus(rank, RunState.SUCCEEDED, exit_code=0)
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return WorkerStatus(
                rank,
                RunState.FAILED,
                reason=f"pod {name} {FATAL_WAITING[waiting['reason']]} ({waiting['reason']}{detail})",
            )
        unscheduled = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ),
            None,
        )
        if unscheduled is not None:
            why = f"{unscheduled.get('reason', 'Unschedulable')}: {unscheduled.get('message', '')}".strip(": ")
            left = float(handle["schedule_timeout"]) - _age(pod)  # every handle has it (from the plan's settings)
            if left < 0:
                limit = f"{float(handle['schedule_timeout']):g}s"
                return WorkerStatus(
                    rank, RunState.FAILED, reason=f"pod {name} could not be scheduled within {limit} ({why})"
                )
            self._look_again(pod, left + 0.1)
            return WorkerStatus(rank, RunState.RUNNING, reason=f"pending, pod {name} {why}")
        return WorkerStatus(rank, RunState.RUNNING, reason=_failing_sidecar(pod))

    def _copy_logs(self, handle: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """Start copying the log of every pod whose worker container has started."""
        paths = {w["rank"]: Path(w["log_path"]) for w in handle["workers"]}
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            name = pod["metadata"]["name"]
            state = _container_state(pod)
            if name in self._copies or not (state.get("running") or state.get("terminated")):
                continue
            path = paths.get(_index(pod))
            if path is None:
                continue
            size = output_size(path)
            skip, header = 0, ""
            if (handle["job"], _index(pod)) in self._resume:
                self._resume.discard((handle["job"], _index(pod)))
                skip = size  # the pod's log from the start: the file already has this much
            elif size:
                header = f"--- pod {name} (replacing a disrupted pod) ---\n"
            run_id = _run_of(pod)
            self._copies[name] = _LogCopy(
                self.cluster,
                handle["namespace"],
                name,
                path,
                skip,
                header,
                functools.partial(self._note_change, run_id),
            )

    def wakeup_fds(self) -> list[int]:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        return [self._read] if self._watches else []

    # -- finalize --------------------------------------------------------------

    def build_reports(
        self,
        request: LaunchRequest,
        metrics: dict[str, float],
        log_path: str,
        stop: threading.Event,
        note: Callable[[str], None],
    ) -> dict[str, dict[str, Any]] | None:
        """Build the reports in the attempt's finalizing Job (``details["finalize"]``, see
        :func:`~mlrt_kubernetes.manifests.finalize_job`) and return the results its pod's log ends with.

        The Job is created with the run's latest ``metrics`` and owned by the workers' Job (so it goes with it);
        one that exists already (a controller that stopped while finalizing) is taken over. Its state comes from
        the namespace's watches, as the workers'. When ``stop`` is set, the Job is deleted (``Foreground``, as
        :meth:`stop` deletes the workers'), and the pod is waited for within its grace period. The pod's log is
        kept in ``log_path``. An attempt planned without a finalizing Job (no reports wanted, or planned before
        finalizing pods existed) gets None: the controller builds the reports itself."""
        from mlrt.report_pod import result_line
        from mlrt.report_runner import ReportError

        manifest = request.details.get("finalize")
        if not manifest:
            return None
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        handle = {"namespace": namespace, "job": name, "schedule_timeout": request.details["schedule_timeout"]}
        self._watch(namespace)
        created = self._create_finalize(request, manifest, metrics)
        note(f"building the reports in Job {name} ({'created' if created else 'taken over'}; log: {log_path})")
        said = ""
        while not stop.wait(0.1):
            job, pods = self._state(handle)
            if job is None or _condition(job, "Complete") or _condition(job, "Failed"):
                # Not from a cache that may lag: the Job just created, the pods' final states.
                job, pods = self._state(handle, fresh=True)
            if job is None:
                raise ReportError(
                    f"the finalizing Job {name} was deleted outside mlrt (it goes with the workers' Job:"
                    " compute.kubernetes.ttl_after_finished must outlast the finalizing)"
                )
            pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)
            status = self._pod_status(0, pod, handle) if pod is not None else None
            if _condition(job, "Complete"):
                log = self._keep_log(pod, namespace, log_path) if pod is not None else ""
                results = result_line(log)
                if results is None:
                    raise ReportError(f"the finalizing pod of Job {name} ended without results (its log: {log_path})")
                return results
            failed = _condition(job, "Failed")
            if failed and (status is None or status.state is not RunState.FAILED):
                why = "the Job ran past its deadline" if failed.get("reason") == "DeadlineExceeded" else ""
                reason = f"its Job {name} failed ({failed.get('reason', 'Failed')}): {why or failed.get('message', '')}"
            elif status is not None and status.state is RunState.FAILED:
                reason = status.reason.replace("raise compute.memory", "raise compute.kubernetes.finalize.memory")
            else:
                if status is not None and status.reason and status.reason != said:
                    said = status.reason  # pending, unschedulable (until schedule_timeout)
                    note(f"finalizing pod: {said}")
                continue
            log = self._keep_log(pod, namespace, log_path) if pod is not None else ""
            if not failed and pod is not None and not _pod_done(pod):  # it cannot start: it would wait for ever
                self._delete_job(namespace, name)
            last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
            raise ReportError(f"the finalizing pod {reason}" + (f": {last[:300]}" if last else ""))
        self._delete_job(namespace, name)
        return None

    def _create_finalize(self, request: LaunchRequest, manifest: dict[str, Any], metrics: dict[str, float]) -> bool:
        """Create the finalizing Job (owned by the workers' Job while that exists), or take over the one there;
        whether it was created."""
        from kubernetes.client.exceptions import ApiException

        from mlrt.report_runner import ReportError

        cluster, namespace = self.cluster, manifest["metadata"]["namespace"]
        body = json.loads(json.dumps(manifest))
        container = body["spec"]["template"]["spec"]["containers"][0]
        container["env"].append({"name": "MLRT_METRICS", "value": json.dumps(metrics)})
        try:
            workers = cluster.raw(
                cluster.batch.read_namespaced_job(request.details["job"], namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise ReportError(f"cannot read the workers' Job: {_api_error(exc)}") from None
        else:
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": request.details["job"]}
            owner.update(uid=workers["metadata"]["uid"], blockOwnerDeletion=True)
            body["metadata"]["ownerReferences"] = [owner]
        try:
            cluster.done(cluster.create(JOBS, namespace, body))
        except ApiException as exc:
            if exc.status != 409:
                raise ReportError(f"the cluster refused the finalizing Job: {_api_error(exc)}") from None
            found = cluster.raw(
                cluster.batch.read_namespaced_job(body["metadata"]["name"], namespace, _preload_content=False)
            )
            if found["metadata"].get("labels", {}).get(MANAGED_BY) != "mlrt":
                raise ReportError(
                    f"a Job named {body['metadata']['name']} that mlrt did not create exists in {namespace}"
                ) from None
            return False
        return True

    def _keep_log(self, pod: dict[str, Any], namespace: str, path: str) -> str:
        """The end of the finalizing pod's log (its last :data:`FINALIZE_LOG_LINES` lines, at most
        :data:`FINALIZE_LOG_BYTES`), also written to ``path``; "" when it cannot be read. The pod may
        run the user's own image: what it prints is never read whole into the controller."""
        try:
            response = self.cluster.core.read_namespaced_pod_log(
                pod["metadata"]["name"],
                namespace,
                container=FINALIZE_CONTAINER,
                tail_lines=FINALIZE_LOG_LINES,
                _preload_content=False,
            )
            try:
                log = response.read(FINALIZE_LOG_BYTES).decode(errors="replace")
            finally:
                response.release_conn()
        except Exception:  # the pod went, or never started its container: no log to read
            return ""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(log)
        return log

    def _delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job (``Foreground``) and wait, within its pods' grace period, until they are gone."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        try:
            self.cluster.batch.delete_namespaced_job(
                name, namespace, body=V1DeleteOptions(propagation_policy="Foreground")
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        handle = {"namespace": namespace, "job": name}
        _, pods = self._state(handle, fresh=True)
        deadline = time.monotonic() + max((_planned_grace(pod) for pod in pods), default=0) + 30
        while time.monotonic() < deadline:
            _, pods = self._state(handle)
            if all(_pod_done(pod) for pod in pods):
                return
            time.sleep(0.1)

    # -- stop and clean up ----------------------------------------------------

    def stop(self, handle: dict[str, Any], grace_period: float) -> None:
        """Stop the attempt's pods within their grace period and return once they are gone.

        The Job is deleted with ``Foreground`` propagation; the garbage collector deletes its pods with no grace
        period of its own, so each gets the ``terminationGracePeriodSeconds`` it was planned with
        (:func:`~mlrt_kubernetes.manifests.termination_grace_seconds`: ``stopping.grace_period``, plus the upload
        time of an ``s3://`` output's sidecar): SIGTERM, time for the worker to save its checkpoint, then
        SIGKILL. That is ``grace_period`` on cancel and timeout; a shorter one (a run closed without its
        controller) does not shorten it, as that would take deleting pods, which the controller's Role does not
        grant. A Job that has already finished is left to its TTL, but its pods that are still terminating are
        waited for."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        job, pods = self._state(handle, fresh=True)
        if job is not None and not (_condition(job, "Complete") or _condition(job, "Failed")):
            try:
                self.cluster.batch.delete_namespaced_job(
                    handle["job"], handle["namespace"], body=V1DeleteOptions(propagation_policy="Foreground")
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
        longest = max((_planned_grace(pod) for pod in pods if not _pod_done(pod)), default=0)
        deadline = time.monotonic() + max(longest, grace_period) + 30  # and time for the kubelet to report the end
        while time.monotonic() < deadline:
            job, pods = self._state(handle)
            ended = job is None or bool(_condition(job, "Complete") or _condition(job, "Failed"))
            if ended and all(_pod_done(pod) for pod in pods):
                return
            time.sleep(0.1)

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Finish copying the attempt's logs; the Job stays for ``ttl_after_finished``, then the cluster removes it."""
        _, pods = self._state(handle, fresh=True)
        self._copy_logs(handle, pods)
        deadline = time.monotonic() + 10
        for pod in pods:
            copy = self._copies.pop(pod["metadata"]["name"], None)
            if copy is not None:
                copy.thread.join(max(0.0, deadline - time.monotonic()))
