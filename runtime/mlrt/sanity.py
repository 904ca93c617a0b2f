"""Sanity runs (``mlrt submit --sanity``): the whole job on a small, deterministic subsample.

A sanity run is the seeds' first step of the loop: before paying for a full run, check in
seconds that the code, the data and the spec fit together. Every worker gets
``MLRT_SANITY=1``.

- ``algorithm:`` jobs: the worker trains on :data:`SANITY_ROWS` rows of each channel first
  and stops with a clear reason if that fails, then trains on everything
  (:func:`mlrt.worker.sanity_check`).
- ``command:`` jobs: the controller hands the command a subsample of every table channel
  instead of the full data: each CSV or Parquet file (a file channel, every table file of a
  folder channel, a ``builtin://`` channel) is cut to :data:`SANITY_ROWS` rows, drawn at
  random with the job's seed and kept in file order, written in the same format under the
  same name. The run's events say so per channel (``sanity run: channel train: 200 of
  10,000 rows``); other files of a folder are linked whole. A script can read
  ``MLRT_SANITY`` to shorten anything else, such as its number of epochs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SANITY_ROWS = 200
"""Rows per table file in a sanity run."""
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def subsample_channel(source: Path, target: Path, seed: int, rows: int = SANITY_ROWS) -> str:
    """Write the sanity subsample of the channel at ``source`` (a file or folder) to ``target``
    (the same file name inside it, or a folder of the same layout); return what was done, for the
    run's events (``"200 of 10,000 rows"``)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if source.is_file():
        kept, total = _subsample_table(source, target / source.name, seed, rows)
        return f"{kept:,} of {total:,} rows"
    kept_all = total_all = files = 0
    for item in sorted(source.iterdir()):
        if item.is_file() and item.suffix.lower() in TABLE_SUFFIXES:
            kept, total = _subsample_table(item, target / item.name, seed, rows)
            kept_all, total_all, files = kept_all + kept, total_all + total, files + 1
        else:
            (target / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    return f"{kept_all:,} of {total_all:,} rows in {files} table file{'s' * (files != 1)}"


def channel_path(target: Path, source: Path) -> Path:
    """The path a sanity run's command gets for a channel subsampled into ``target``."""
    return target / source.name if source.is_file() else target


def _subsample_table(source: Path, target: Path, seed: int, rows: int) -> tuple[int, int]:
    import pandas as pd

    from mlrt.data import infer_format

    parquet = infer_format(source, None) == "parquet"
    frame = pd.read_parquet(source) if parquet else pd.read_csv(source)
    total = len(frame)
    if total > rows:
        frame = frame.sample(n=rows, random_state=seed).sort_index()
    if parquet:
        frame.to_parquet(target, index=False)
    else:
        frame.to_csv(target, index=False)
    return len(frame), total
