"""Every attack of issue 13's list, replayed by a hostile project user against one real
``mlrt controller`` on PostgreSQL with podman as its only backend (``tests/hostile.py``).

Each attack must be refused with one clear line (HTTP 4xx, never 500), create no job,
and leave the service serving; the other project's job, submitted first, must still
succeed after all of them. The deeper tests of each class are in the modules named in
``docs/security.md``; this one keeps the whole list in one place.
"""

from __future__ import annotations

import textwrap

import httpx
import pytest

import hostile as attacks
from mlrt.store import Store

hostile, training_image = attacks.hostile, attacks.training_image

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HEAD = "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: attack}\nspec:\n"
CONTAINER = "  image: IMAGE\n  command: [python, -c, 'print(1)']\n  compute: {backend: container}\n"


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return HEAD + CONTAINER + "  hyperparameters:\n" + textwrap.indent("\n".join(lines) + "\n  bomb: *a8\n", "    ")


def nested(depth: int) -> str:
    return HEAD + CONTAINER + "  hyperparameters: {deep: " + "[" * depth + "]" * depth + "}\n"


ATTACKS = {
    # field the one line names -> spec text (IMAGE is replaced by the test image)
    "billion laughs": ("job.yaml", billion_laughs()),
    "5,000-deep nesting": ("job.yaml", nested(5000)),
    "4,300-digit integer": ("job.yaml", HEAD + CONTAINER + f"  hyperparameters: {{n: {'9' * 4300}}}\n"),
    "NaN hyperparameter": ("spec.hyperparameters", HEAD + CONTAINER + "  hyperparameters: {lr: .nan}\n"),
    "infinite cpu": (
        "spec.compute.cpu",
        HEAD + "  image: IMAGE\n  command: [python]\n  compute: {backend: container, cpu: .inf}\n",
    ),
    "max_runtime overflow": (
        "spec.stopping.max_runtime",
        HEAD + CONTAINER + "  stopping: {max_runtime: 99999999999d}\n",
    ),
    "a million workers": (
        "spec.compute.workers",
        HEAD + "  image: IMAGE\n  command: [python]\n  compute: {backend: container, workers: 1000000}\n",
    ),
    "image read as a flag": (
        "spec.image",
        HEAD + "  image: '--volume=/:/host'\n  command: [cat, /host/etc/shadow]\n  compute: {backend: container}\n",
    ),
    "working_dir of the controller": ("spec.working_dir", HEAD + CONTAINER + "  working_dir: /root\n"),
    "a file of the controller as data": (
        "spec.data.train",
        HEAD + CONTAINER + "  data: {train: 'file:///etc/passwd'}\n",
    ),
    "output into the controller's folders": (
        "spec.output.path",
        HEAD + CONTAINER + "  output: {path: 'file:///var/lib'}\n",
    ),
    "the local backend": ("spec.compute.backend", HEAD + "  command: [sh, -c, env]\n  compute: {backend: local}\n"),
    "an env name read as a flag": ("spec.env", HEAD + CONTAINER + "  env: {'--privileged': x}\n"),
    "code for the controller to import": (
        "spec.tags.rules.x.function",
        HEAD + CONTAINER + "  tags: {rules: {x: {function: 'subprocess:getoutput'}}}\n",
    ),
}


def test_every_attack_of_the_list_is_refused_and_the_service_keeps_serving(hostile, capsys):
    image = hostile.image
    with hostile.client("bob") as bob:
        victim = bob.post(
            "/jobs", json={"spec": (HEAD + CONTAINER).replace("IMAGE", image).replace("attack", "victim")}
        )
    assert victim.status_code == 201, victim.text
    jobs_before = _job_count(hostile.db)
    refused = []
    with hostile.client("alice") as alice:
        for name, (field, text) in ATTACKS.items():
            for route in ("/validate", "/jobs"):
                response = alice.post(route, json={"spec": text.replace("IMAGE", image)})
                assert response.status_code in (400, 413, 422), (
                    f"{name} {route}: {response.status_code} {response.text}"
                )
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in response.text, name
                assert detail.startswith(field), f"{name}: {detail}"
            assert hostile.alive(), f"the service died on {name}"
            refused.append(name)
        # Bodies: a 50 MB value and an anonymous 300 MB upload.
        big = alice.post("/validate", json={"spec": HEAD + CONTAINER + "  env: {X: " + "x" * (50 << 20) + "}\n"})
        assert big.status_code == 413, big.text[:200]
        refused.append("50 MB value")
    anonymous = httpx.post(
        f"{hostile.service.url}/api/v1/jobs", content=b"\0" * (300 << 20), headers={"Content-Type": "application/json"}
    )
    assert anonymous.status_code == 401
    refused.append("300 MB without a token")
    assert _job_count(hostile.db) == jobs_before, "a refused spec created a job"
    # Secrets: what /validate returns never holds a spec.env value.
    with hostile.client("alice") as alice:
        plan = alice.post(
            "/validate", json={"spec": (HEAD + CONTAINER + "  env: {TOKEN: s3cr3t-v4lue}\n").replace("IMAGE", image)}
        )
    assert plan.status_code == 200 and "s3cr3t-v4lue" not in plan.text
    row = hostile.wait_terminal(victim.json()["run_id"])
    assert row["state"] == "SUCCEEDED", row["reason"]
    with capsys.disabled():
        print(f"\n  {len(refused)} attack classes refused, the service alive and the other project's job SUCCEEDED")


def _job_count(db: str) -> int:
    from sqlalchemy import text

    with Store(db).engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs")).scalar()
