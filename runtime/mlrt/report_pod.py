"""Building a run's reports where its workers ran: ``python -m mlrt.report_pod OUTPUT_DIR``.

The kubernetes backend's finalizing pod runs this (see ``docs/kubernetes.md``), so the
controller's own process never retrains a model for a learning curve. It reads what a worker
reads: ``MLRT_RUN_ID``, ``MLRT_SPEC`` and each data channel's ``MLRT_CHANNEL_<NAME>`` (fetched
by the pod's init container as for the workers), plus ``MLRT_METRICS``, the run's latest
metrics as JSON. The predictions are ``OUTPUT_DIR/predictions.parquet``; with ``--from
s3://...`` (the run's output) they are downloaded there first, and the reports folder is
uploaded to ``<output>/output/reports/`` afterwards. The work itself is
:func:`mlrt.report_runner.compute`, as in the controller's process for other backends.

The pod holds no database credentials: the results go back to the controller as the last
line of its log, :data:`RESULTS` followed by their JSON, and the controller stores them
(:func:`mlrt.report_runner.keep`) and checks the gates. A report that cannot be built at all
(no predictions) ends the pod with exit code 1 and one ``error:`` line saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlrt.launchers import channel_env

RESULTS = "##mlrt-reports "
"""The prefix of the log line that carries the results (a JSON object by report name)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlrt.report_pod", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the folder holding predictions.parquet (the run's output)")
    parser.add_argument(
        "--from", dest="source", help="the run's s3:// output: predictions come from it, reports go to it"
    )
    args = parser.parse_args(argv)
    from mlrt import report_runner

    run_id = os.environ["MLRT_RUN_ID"]
    spec = json.loads(os.environ["MLRT_SPEC"])
    metrics = json.loads(os.environ.get("MLRT_METRICS") or "{}")
    channels = {
        name: Path(os.environ[channel_env(name)]) for name in spec.get("data") or {} if channel_env(name) in os.environ
    }
    try:
        if args.source:
            _download_predictions(args.source, args.output)
        results = report_runner.compute(run_id, spec, metrics, args.output, channels)
        if args.source:
            _upload_reports(args.output / "reports", args.source)
    except (report_runner.ReportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(RESULTS + json.dumps(results, default=str, separators=(",", ":")), flush=True)
    return 0


def _download_predictions(source: str, output: Path) -> None:
    from mlrt import s3
    from mlrt.report_runner import PREDICTIONS, ReportError

    uri = f"{source}/output/{PREDICTIONS}"
    output.mkdir(parents=True, exist_ok=True)

    def download() -> bool:
        try:
            s3.download(uri, output / PREDICTIONS)
        except FileNotFoundError:
            return False
        return True

    try:
        found = s3.retried(download, _said("download"))
    except s3.UploadFailed as exc:
        raise ReportError(f"could not download {uri}: {exc}") from None
    if not found:
        raise ReportError(f"{uri} does not exist: the workers wrote no {PREDICTIONS}")


def _upload_reports(folder: Path, source: str) -> None:
    """Upload the reports folder (files a report wrote beside its result too); on failure say so and go on:
    the controller uploads the results and the page itself."""
    from mlrt import s3

    try:
        s3.retried(lambda: s3.upload_tree(folder, f"{source}/output/reports"), _said("upload of the reports"))
    except s3.UploadFailed as exc:
        print(f"[mlrt report_pod] the reports folder was not uploaded to {source}/output/reports: {exc}", flush=True)


def _said(what: str):
    def retrying(tries: int, exc: Exception, pause: float) -> None:
        print(f"[mlrt report_pod] {what} try {tries} failed ({type(exc).__name__}: {exc}); next in {pause:g}s")

    return retrying


def result_line(log: str) -> dict[str, dict] | None:
    """The results in a finalizing pod's log (its last :data:`RESULTS` line), or None."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULTS):
            return json.loads(line[len(RESULTS) :])
    return None


if __name__ == "__main__":
    sys.exit(main())
