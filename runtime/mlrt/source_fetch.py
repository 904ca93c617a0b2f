"""``python -m mlrt.source_fetch DEST``: a pod's init container fetching its run's source bundle.

A ``command:`` job on Kubernetes runs its code from :data:`mlrt_kubernetes.manifests.SOURCE_DIR`:
this program asks the controller for the run's bundle
(``GET /api/v1/runs/RUN/tracking/source`` with the run's own worker token,
``MLRT_TRACKING_URI``, ``MLRT_RUN_ID``, ``MLRT_TRACKING_TOKEN``), checks it
against ``MLRT_SOURCE_DIGEST`` and unpacks it into ``DEST``, with the checks of
:func:`mlrt.bundles.unpack`. Any failure is one line on stderr and exit code 1,
which fails the pod with that line as its reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote


def fetch(dest: Path) -> int:
    """Fetch and unpack the run's bundle into ``dest``; the files written."""
    import httpx

    from mlrt.bundles import BundleError, digest_of, unpack

    base, run_id, digest = (os.environ[k] for k in ("MLRT_TRACKING_URI", "MLRT_RUN_ID", "MLRT_SOURCE_DIGEST"))
    url = f"{base.rstrip('/')}/api/v1/runs/{quote(run_id)}/tracking/source"
    headers = {"Authorization": f"Bearer {os.environ.get('MLRT_TRACKING_TOKEN', '')}"}
    transport = httpx.HTTPTransport(retries=5)  # connection failures: the controller restarting
    with httpx.Client(transport=transport, timeout=60) as client:
        response = client.get(url, headers=headers)
    if not response.is_success:
        raise BundleError(f"the controller answered {response.status_code} for {url}: {response.text[:200]}")
    if digest_of(response.content) != digest:
        raise BundleError(f"the bundle received for run {run_id} does not match its digest {digest[:12]}")
    return unpack(response.content, dest)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mlrt.source_fetch DEST", file=sys.stderr)
        return 2
    try:
        files = fetch(Path(argv[0]))
    except Exception as exc:  # one line for the pod's status, whatever went wrong
        print(f"cannot fetch the run's source bundle: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {files} files of source {os.environ['MLRT_SOURCE_DIGEST'][:12]} into {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
