"""The stand-in's faults, through the official client: expired watches (410), bookmarks, cut streams, 429, and
the pod log's timestamps and since options that a resumed log copy relies on."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kube_standin import TOKEN, KubeStandIn

POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "worker", "image": "example.com/train:1"}]}}


@pytest.fixture
def kube() -> Iterator[KubeStandIn]:
    with KubeStandIn() as standin:
        yield standin


@pytest.fixture
def core(kube: KubeStandIn) -> Iterator[client.CoreV1Api]:
    with kube.api_client() as api:
        yield client.CoreV1Api(api)


def raw_events(core: client.CoreV1Api, **kwargs) -> Iterator[dict]:
    """The events of a watch on pods in ``default``, as the server sends them (no client-side handling)."""
    response = core.list_namespaced_pod("default", watch=True, _preload_content=False, **kwargs)
    assert response.status == 200
    try:
        for line in iter_resp_lines(response):
            yield json.loads(line)
    finally:
        response.close()


def test_a_watch_from_a_resource_version_older_than_the_history_gets_410_in_an_error_event(kube, core):
    kube.history_limit = 3
    core.create_namespaced_pod("default", POD)
    old = core.list_namespaced_pod("default").metadata.resource_version
    for number in range(4):  # the window keeps the last 3 of them: the first event after ``old`` has gone
        core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"n": str(number)}}})
    kept = core.list_namespaced_pod("default").metadata.resource_version

    [error] = list(raw_events(core, resource_version=old, timeout_seconds=1))
    assert error["type"] == "ERROR"
    status = error["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert re.fullmatch(rf"too old resource version: {old} \(\d+\)", status["message"])
    with pytest.raises(ApiException) as raised:  # the client raises it once it gives up
        list(watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=old, timeout_seconds=1))
    assert raised.value.status == 410

    assert [e["type"] for e in raw_events(core, resource_version=kept, timeout_seconds=1)] == []  # in the window
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"n": "last"}}})
    kube.compact_history()
    [error] = list(raw_events(core, resource_version=kept, timeout_seconds=1))
    assert error["object"]["code"] == 410
    listed = core.list_namespaced_pod("default")  # a list is always served, from the current state
    assert [pod.metadata.name for pod in listed.items] == ["p"]


def test_bookmarks_carry_only_the_resource_version_and_come_only_when_allowed(kube, core):
    kube.bookmark_interval = 0.2
    core.create_namespaced_pod("default", POD)
    version = core.list_namespaced_pod("default").metadata.resource_version
    events = raw_events(core, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=10)
    bookmark = next(events)
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": version}},
    }
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "b"}}})
    modified = next(events)
    assert modified["type"] == "MODIFIED"
    later = next(e for e in events if e["type"] == "BOOKMARK")
    assert later["object"]["metadata"]["resourceVersion"] == modified["object"]["metadata"]["resourceVersion"]
    events.close()
    assert [e["type"] for e in raw_events(core, resource_version=version, timeout_seconds=1)] == ["MODIFIED"]


@pytest.mark.parametrize("error", [False, True])
def test_cut_streams_end_watches_and_logs_while_the_pod_runs(kube, core, error):
    core.create_namespaced_pod("default", POD)
    kube.start_pod("p")
    kube.append_log("p", "one\n")
    log = core.read_namespaced_pod_log("p", "default", follow=True, _preload_content=False)
    watched = core.list_namespaced_pod("default", watch=True, _preload_content=False)
    outcomes: dict[str, object] = {}

    def read(name: str, response) -> None:
        try:
            outcomes[name] = b"".join(response.stream(amt=None, decode_content=False))
        except urllib3.exceptions.HTTPError as exc:  # the connection dropped mid-stream
            outcomes[name] = exc

    readers = [threading.Thread(target=read, args=item) for item in (("log", log), ("watch", watched))]
    for reader in readers:
        reader.start()
    kube.cut_streams("log", error=error)
    readers[0].join(10)
    assert not readers[0].is_alive() and readers[1].is_alive(), "only the log stream was cut"
    kube.cut_streams("watch", error=error)
    readers[1].join(10)
    assert not readers[1].is_alive()
    if error:
        assert all(isinstance(outcome, urllib3.exceptions.HTTPError) for outcome in outcomes.values())
    else:
        assert outcomes["log"] == b"one\n" and b'"ADDED"' in outcomes["watch"]
    assert kube.get("Pod", "default", "p")["status"]["phase"] == "Running"
    assert core.read_namespaced_pod_log("p", "default") == "one\n", "a new stream is not affected"


def test_throttle_answers_429_with_retry_after_as_the_flow_control_filter_does(kube, core):
    kube.throttle(requests=2, retry_after=3)
    for _ in range(2):  # a POST, which urllib3 does not retry by itself
        with pytest.raises(ApiException) as raised:
            core.create_namespaced_pod("default", POD)
        assert raised.value.status == 429
        assert raised.value.headers["Retry-After"] == "3"
        assert raised.value.body.startswith("Too many requests")
    assert kube.throttled_left == 0
    assert core.create_namespaced_pod("default", POD).metadata.name == "p"


def test_log_timestamps_since_seconds_and_since_time(kube, core):
    core.create_namespaced_pod("default", POD)
    kube.start_pod("p")
    kube.append_log("p", "a\nb\n")  # written at once: one timestamp
    kube.append_log("p", "c\npartial")
    kube.append_log("p", " end\n")
    stamped = core.read_namespaced_pod_log("p", "default", timestamps=True).splitlines()
    stamps = [line.split(" ", 1)[0] for line in stamped]
    assert [line.split(" ", 1)[1] for line in stamped] == ["a", "b", "c", "partial end"]
    assert stamps[0] == stamps[1] <= stamps[2] == stamps[3], "the continuation of a partial line has no stamp"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", stamp) for stamp in stamps)
    assert core.read_namespaced_pod_log("p", "default", since_seconds=3600) == "a\nb\nc\npartial end\n"

    first = datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    query = {"sinceTime": first.astimezone(timezone.utc).isoformat()}  # the client has no since_time
    url = f"{kube.url}/api/v1/namespaces/default/pods/p/log"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = urllib3.request("GET", url, fields=query, headers=headers)
    assert response.data == b"a\nb\nc\npartial end\n", "whole seconds reach the kubelet: the bound is inclusive"
    future = {"sinceTime": "2999-01-01T00:00:00Z"}
    assert urllib3.request("GET", url, fields=future, headers=headers).data == b""
