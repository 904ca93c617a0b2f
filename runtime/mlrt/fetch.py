"""``python -m mlrt.fetch DIR NAME=URI...``: fetch data channels into ``DIR/NAME``.

Backends whose workers cannot read the controller's files (Kubernetes pods)
run this in an init container of mlrt's training image, on a volume shared
with the worker: each channel is materialized through its data-scheme plugin
under ``DIR/.cache`` and made available as the folder ``DIR/NAME`` (a file
channel is linked inside it under its own name, so its format is still known
from its suffix). The worker gets ``MLRT_CHANNEL_<NAME>=DIR/NAME``. With
``--sanity-seed SEED`` (a sanity run of a ``command:`` job) ``DIR/NAME`` holds the
channel's subsample instead (:mod:`mlrt.sanity`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlrt import plugins, sanity
from mlrt.data import uri_scheme


def fetch(directory: Path, channels: dict[str, str], sanity_seed: int | None = None) -> dict[str, Path]:
    """Materialize every channel (name -> URI) into ``directory``; return each one's folder.

    Each channel is announced on stdout before it is fetched (``[mlrt fetch] channel NAME: fetching URI``): when
    a fetch fails, the end of the log, which the cluster keeps as the init container's termination message,
    names the channel (the Kubernetes backend quotes it in the run's reason)."""
    schemes = plugins.data_schemes()
    cache = directory / ".cache"
    folders = {}
    for name, uri in channels.items():
        print(f"[mlrt fetch] channel {name}: fetching {uri}", flush=True)
        path = schemes[uri_scheme(uri)].materialize(uri, cache)
        folder = directory / name
        if sanity_seed is not None:
            done = sanity.subsample_channel(path, folder, sanity_seed)
            print(f"[mlrt fetch] channel {name}: sanity run: {done}", flush=True)
        elif path.is_dir():
            folder.symlink_to(path, target_is_directory=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).symlink_to(path)
        folders[name] = folder
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlrt.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--sanity-seed", type=int, help="write each channel's sanity subsample (mlrt.sanity)")
    parser.add_argument("directory", type=Path)
    parser.add_argument("channels", nargs="*", metavar="NAME=URI")
    args = parser.parse_args(argv)
    channels = dict(item.split("=", 1) for item in args.channels)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, folder in fetch(args.directory, channels, args.sanity_seed).items():
        print(f"[mlrt fetch] channel {name}: {channels[name]} -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
