"""The SageMaker training contract, ``spec.contract: sagemaker``: what a script or image written for
SageMaker training finds, so that it runs in mlrt unchanged.

Names and formats follow AWS's own implementation of the contract, the sagemaker-training toolkit
(github.com/aws/sagemaker-training-toolkit, ``src/sagemaker_training``):

- ``environment.py``: the layout under ``/opt/ml`` (or ``SAGEMAKER_BASE_DIR``): ``input/config/``
  with ``hyperparameters.json``, ``resourceconfig.json`` and ``inputdataconfig.json``,
  ``input/data/<channel>``, ``model/``, ``output/``, ``output/data/``, ``output/intermediate/``;
  ``read_hyperparameters`` (each value is a JSON text, decoded with ``json.loads``);
  ``Environment.to_env_vars`` (the ``SM_*`` variables, with ``SM_CHANNEL_<NAME>`` and
  ``SM_HP_<NAME>``).
- ``mapping.py``: ``to_env_vars`` (``SM_`` + the key in upper case; strings as they are, anything
  else as JSON with sorted keys and ``(",", ":")`` separators) and ``to_cmd_args`` (``--name value``
  in key order, ``-n value`` for a one-letter name, a mapping as ``k=v,k=v``).
- ``files.py``: ``write_failure_file`` writes the failure reason to ``output/failure``.
- ``params.py``: the ``CURRENT_HOST``, ``TRAINING_JOB_NAME`` and ``sagemaker_*`` names.

``/opt/ml/checkpoints`` is the SageMaker Python SDK's default ``checkpoint_local_path``.

Where the files are: on the container backend each worker sees ``/opt/ml``, bind-mounted from the
run's folders (:func:`container_mounts`); on the local backend the variables name the run's folders
directly, and ``SAGEMAKER_BASE_DIR`` names a per-worker folder laid out like ``/opt/ml`` whose
``model``, ``output/data``, ``checkpoints`` and ``input/data/<channel>`` are links to the run's
folders (:func:`host_folders`), which is what the toolkit's ``Environment`` reads; on Kubernetes
(one worker) see :mod:`mlrt_kubernetes.sagemaker`. ``model/`` and ``output/data/`` are ``model/``
and ``data/`` in the run's output (``MLRT_OUTPUT_DIR``), registered and uploaded as its artifacts;
``checkpoints/`` is the run's checkpoint folder (``MLRT_CHECKPOINT_DIR``), which a retry finds as
the failed attempt left it; ``output/failure`` is read by the controller as the worker's failure
reason (:func:`failure_file`). The config files of a worker are planned with the attempt (``mlrt
validate`` shows them) and written when it launches (:func:`write_host_folders`).

Worker ``r`` is host ``algo-<r+1>``. The names resolve through the attempt's network on the
container backend (network aliases), and to ``127.0.0.1`` in a local worker's Python
(:func:`hosts_pythonpath`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrt.names import env_name_problem

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.launchers import LaunchContext

CONTAINER_ROOT = "/opt/ml"
BASE_DIR_VARIABLE = "SAGEMAKER_BASE_DIR"
"""Where the toolkit looks for the layout instead of ``/opt/ml`` (``environment.BASE_PATH_ENV``)."""
INSTANCE_GROUP = "homogeneousCluster"
INSTANCE_TYPE = "local"
NETWORK_INTERFACE = "eth0"
LOG_LEVEL = 20  # logging.INFO, the toolkit's default
CONTENT_TYPES = {"csv": "text/csv", "parquet": "application/x-parquet"}


def host(rank: int) -> str:
    """The SageMaker host name of worker ``rank``: ``algo-1`` for rank 0."""
    return f"algo-{rank + 1}"


def hosts(workers: int) -> list[str]:
    """Every host of a job of ``workers`` workers, ``algo-1 .. algo-N``."""
    return [host(rank) for rank in range(workers)]


def encode(value: Any) -> str:
    """A value as an ``SM_*`` variable holds it (``mapping.to_env_vars``' ``format_value``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def user_args(hyperparameters: dict[str, Any]) -> list[str]:
    """The hyperparameters as script mode passes them to the program (``mapping.to_cmd_args``):
    ``--name value`` in key order, ``-n value`` for a one-letter name, Python's ``str`` of each
    value (``True``, ``0.1``), a mapping as ``k=v,k=v``."""
    args = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        name = str(key)
        args.append(f"--{name}" if len(name) > 1 else f"-{name}")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


def hyperparameters_file(hyperparameters: dict[str, Any]) -> dict[str, str]:
    """``hyperparameters.json``: every value a JSON text, as the SageMaker Python SDK sends them
    (``json.dumps`` of each value) and the toolkit's ``read_hyperparameters`` decodes them."""
    return {str(key): json.dumps(value) for key, value in hyperparameters.items()}


def resource_config(rank: int, workers: int) -> dict[str, Any]:
    """``resourceconfig.json`` of worker ``rank``: the keys SageMaker writes for one instance group."""
    names = hosts(workers)
    return {
        "current_host": host(rank),
        "current_instance_type": INSTANCE_TYPE,
        "current_group_name": INSTANCE_GROUP,
        "hosts": names,
        "instance_groups": [{"instance_group_name": INSTANCE_GROUP, "instance_type": INSTANCE_TYPE, "hosts": names}],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(channels: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """``inputdataconfig.json``: per channel, File mode, fully replicated, no record wrapper, and a
    ``ContentType`` when ``spec.data.<name>.format`` says it."""
    config = {}
    for name, channel in sorted(channels.items()):
        entry = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        content_type = CONTENT_TYPES.get(str(channel.get("format") or ""))
        if content_type:
            entry = {"ContentType": content_type, **entry}
        config[name] = entry
    return config


def hosts_pythonpath(existing: str | None) -> str:
    """``PYTHONPATH`` for a local worker: the folder of :mod:`mlrt.sagemaker_hosts`' ``sitecustomize``
    (the host names resolve to ``127.0.0.1`` in the worker's Python) first, then ``existing``."""
    shim = str(Path(__file__).resolve().parent / "sagemaker_hosts")
    return os.pathsep.join([shim, existing]) if existing else shim


def _spec_channels(ctx: LaunchContext) -> dict[str, dict[str, Any]]:
    spec = json.loads(ctx.env.get("MLRT_SPEC") or "{}")
    return {name: (channel if isinstance(channel, dict) else {}) for name, channel in (spec.get("data") or {}).items()}


def _hyperparameters(ctx: LaunchContext) -> dict[str, Any]:
    return json.loads(ctx.env.get("MLRT_HYPERPARAMETERS") or "{}")


def _workers(ctx: LaunchContext) -> int:
    return int(ctx.compute.get("workers", 1))


def entry_point(argv: list[str]) -> str:
    """``SM_USER_ENTRY_POINT``: the script a command runs (``train.py`` of ``python train.py``),
    else its program's name; "" for an image's own entry point."""
    for arg in argv[1:]:
        if arg.endswith(".py") and not arg.startswith("-"):
            return os.path.basename(arg)
    return os.path.basename(argv[0]) if argv else ""


def host_root(log_dir: str | Path, rank: int) -> Path:
    """Worker ``rank``'s own folder laid out like ``/opt/ml`` on this machine: config files, the
    failure file and (local backend) links to the run's folders. Per attempt, in its log folder."""
    return Path(log_dir) / "sagemaker" / host(rank)


def failure_file(log_dir: str | Path, rank: int) -> Path:
    """Where worker ``rank``'s ``/opt/ml/output/failure`` is on this machine."""
    return host_root(log_dir, rank) / "output" / "failure"


def _paths(ctx: LaunchContext, rank: int, *, local: bool) -> dict[str, str]:
    """The folders of the layout as worker ``rank`` sees them: the run's own folders for a
    local worker, ``/opt/ml/...`` in a container."""
    root = str(host_root(ctx.log_dir, rank)) if local else CONTAINER_ROOT
    output = ctx.env["MLRT_OUTPUT_DIR"]
    paths = {
        "base_dir": root,
        "input_dir": f"{root}/input",
        "input_config_dir": f"{root}/input/config",
        "output_dir": f"{root}/output",
        "output_intermediate_dir": f"{root}/output/intermediate",
        "model_dir": f"{output}/model" if local else f"{root}/model",
        "output_data_dir": f"{output}/data" if local else f"{root}/output/data",
    }
    for name, source in _channel_sources(ctx).items():
        paths[f"channel_{name}"] = source if local and not _is_file(source) else f"{root}/input/data/{name}"
    return paths


def _channel_sources(ctx: LaunchContext) -> dict[str, str]:
    """Each channel's materialized path on this machine (``MLRT_CHANNEL_<NAME>``)."""
    from mlrt.launchers import channel_env

    return {name: ctx.env.get(channel_env(name), "") for name in _spec_channels(ctx)}


def _is_file(path: str) -> bool:
    """A channel that is one file: SageMaker's channels are folders, so it goes into one."""
    return os.path.isabs(path) and os.path.isfile(path)


def worker_env(ctx: LaunchContext, rank: int, *, local: bool, module_dir: str | None = None) -> dict[str, str]:
    """The ``SM_*`` variables of worker ``rank`` (``Environment.to_env_vars``), plus
    ``CURRENT_HOST``, ``TRAINING_JOB_NAME`` and, for a ``local`` worker, ``SAGEMAKER_BASE_DIR``.
    A hyperparameter whose name cannot be part of a variable name (``learning-rate``) has no
    ``SM_HP_*`` variable; it is in ``SM_HPS``, the arguments and ``hyperparameters.json``.
    ``module_dir`` (``SM_MODULE_DIR``): where the code is, default the working directory."""
    paths = _paths(ctx, rank, local=local)
    hps = _hyperparameters(ctx)
    channels = _spec_channels(ctx)
    workers = _workers(ctx)
    resources = resource_config(rank, workers)
    gpus = int(ctx.compute.get("gpus") or 0)
    cpus = max(1, int(ctx.compute["cpu"])) if ctx.compute.get("cpu") else os.cpu_count() or 1
    entry = entry_point(ctx.argv)
    channel_dirs = {name: paths[f"channel_{name}"] for name in channels}
    values: dict[str, Any] = {
        "hosts": resources["hosts"],
        "network_interface_name": NETWORK_INTERFACE,
        "hps": hps,
        "user_entry_point": entry,
        "framework_params": {},
        "resource_config": resources,
        "input_data_config": input_data_config(channels),
        "output_data_dir": paths["output_data_dir"],
        "channels": sorted(channels),
        "current_host": host(rank),
        "current_instance_type": INSTANCE_TYPE,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": resources["hosts"],
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {group["instance_group_name"]: group for group in resources["instance_groups"]},
        "distribution_instance_groups": [],
        "is_hetero": False,
        "module_name": entry.removesuffix(".py"),
        "log_level": LOG_LEVEL,
        "framework_module": None,
        "input_dir": paths["input_dir"],
        "input_config_dir": paths["input_config_dir"],
        "output_dir": paths["output_dir"],
        "num_cpus": cpus,
        "num_gpus": gpus,
        "num_neurons": 0,
        "model_dir": paths["model_dir"],
        "module_dir": ctx.cwd if module_dir is None else module_dir,
        "user_args": user_args(hps),
        "output_intermediate_dir": paths["output_intermediate_dir"],
    }
    # The toolkit's ``dict(Environment())``: its properties by name.
    training_env = {
        key: values[key]
        for key in (
            "hosts",
            "network_interface_name",
            "current_host",
            "current_instance_type",
            "current_instance_group",
            "input_data_config",
            "resource_config",
            "output_data_dir",
            "output_intermediate_dir",
            "input_dir",
            "input_config_dir",
            "output_dir",
            "model_dir",
            "module_dir",
            "module_name",
            "user_entry_point",
            "num_cpus",
            "num_gpus",
            "num_neurons",
            "log_level",
            "framework_module",
        )
    }
    training_env.update(
        hyperparameters=hps,
        channel_input_dirs=channel_dirs,
        job_name=ctx.run_id,
        additional_framework_parameters={},
        master_hostname=resources["hosts"][0],
        is_master=rank == 0,
    )
    values["training_env"] = training_env
    for name, path in channel_dirs.items():
        values[f"channel_{name}"] = path
    for key, value in hps.items():
        values[f"hp_{key}"] = value
    env = {f"SM_{key.upper()}": encode(value) for key, value in values.items()}
    env = {name: value for name, value in env.items() if env_name_problem(name) is None}
    env.update(CURRENT_HOST=host(rank), TRAINING_JOB_NAME=ctx.run_id)
    if local:
        env[BASE_DIR_VARIABLE] = paths["base_dir"]
    return env


def config_files(ctx: LaunchContext, rank: int) -> dict[str, str]:
    """The text of worker ``rank``'s three files of ``input/config``, by name."""
    return {
        "hyperparameters.json": json.dumps(hyperparameters_file(_hyperparameters(ctx)), indent=2),
        "resourceconfig.json": json.dumps(resource_config(rank, _workers(ctx)), indent=2),
        "inputdataconfig.json": json.dumps(input_data_config(_spec_channels(ctx)), indent=2),
    }


def host_folders(ctx: LaunchContext, rank: int, *, local: bool) -> dict[str, Any]:
    """The plan of worker ``rank``'s folder on this machine (:func:`host_root`), as plain data:
    ``dirs`` to create, ``files`` to write (path -> text: the three config files) and ``links``
    (path -> target) to make. A ``local`` worker's folder is the whole ``/opt/ml`` layout, its
    ``model``, ``output/data``, ``checkpoints`` and ``input/data/<channel>`` linking to the run's
    folders; a container's holds the config files and ``output/`` (the failure file), the rest
    being mounted from the run's folders (:func:`container_mounts`)."""
    root = host_root(ctx.log_dir, rank)
    config = root / "input" / "config"
    output = Path(ctx.env["MLRT_OUTPUT_DIR"])
    files = {str(config / name): text for name, text in config_files(ctx, rank).items()}
    dirs = [str(config), str(root / "output" / "intermediate"), str(output / "model"), str(output / "data")]
    links: dict[str, str] = {}
    if local:
        links[str(root / "model")] = str(output / "model")
        links[str(root / "output" / "data")] = str(output / "data")
        links[str(root / "checkpoints")] = ctx.env["MLRT_CHECKPOINT_DIR"]
        for name, source in _channel_sources(ctx).items():
            if _is_file(source):
                links[str(root / "input" / "data" / name / os.path.basename(source))] = source
            else:
                links[str(root / "input" / "data" / name)] = source
    else:
        dirs.append(str(root / "output" / "data"))  # the mount point of the run's output/data
    return {"dirs": dirs, "files": files, "links": links}


def write_host_folders(plan: dict[str, Any]) -> None:
    """Carry out a :func:`host_folders` plan (at launch; again for a launch of the same attempt).
    Raises :class:`~mlrt.launchers.LaunchError` naming the path it could not write."""
    from mlrt.launchers import LaunchError

    path = ""
    try:
        for path in plan["dirs"]:
            Path(path).mkdir(parents=True, exist_ok=True)
        for path, text in plan["files"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        for path, target in plan["links"].items():
            link = Path(path)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    except OSError as exc:
        raise LaunchError(f"cannot lay out the SageMaker folders: {path}: {exc.strerror or exc}") from None


def container_mounts(ctx: LaunchContext, rank: int) -> list[tuple[str, str, bool]]:
    """``(source on this machine, destination in the container, read_only)`` of worker ``rank``'s
    ``/opt/ml``: its config folder, each channel at ``input/data/<name>`` (a one-file channel
    inside that folder), the run's ``output/model`` at ``model``, its own ``output`` folder (the
    failure file) with the run's ``output/data`` over ``output/data``, and the run's checkpoint
    folder at ``checkpoints``."""
    root = host_root(ctx.log_dir, rank)
    output = ctx.env["MLRT_OUTPUT_DIR"]
    mounts = [(str(root / "input" / "config"), f"{CONTAINER_ROOT}/input/config", True)]
    for name, source in sorted(_channel_sources(ctx).items()):
        if not os.path.isabs(source):
            continue  # `mlrt validate`: materialized at launch
        destination = f"{CONTAINER_ROOT}/input/data/{name}"
        if _is_file(source):
            destination += "/" + os.path.basename(source)
        mounts.append((source, destination, True))
    mounts += [
        (f"{output}/model", f"{CONTAINER_ROOT}/model", False),
        (str(root / "output"), f"{CONTAINER_ROOT}/output", False),
        (f"{output}/data", f"{CONTAINER_ROOT}/output/data", False),
        (ctx.env["MLRT_CHECKPOINT_DIR"], f"{CONTAINER_ROOT}/checkpoints", False),
    ]
    return mounts


FILES_VARIABLE = "MLRT_SAGEMAKER_FILES"


def main(argv: list[str] | None = None) -> int:
    """``python -m mlrt.sagemaker_contract DIR``: write the files that ``MLRT_SAGEMAKER_FILES``
    holds (JSON, name -> text: :func:`config_files`) into ``DIR``. The Kubernetes backend runs it
    in an init container of mlrt's training image, on the volume the worker sees as
    ``/opt/ml/input/config``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or FILES_VARIABLE not in os.environ:
        print(f"usage: {FILES_VARIABLE}=JSON python -m mlrt.sagemaker_contract DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in json.loads(os.environ[FILES_VARIABLE]).items():
        (folder / Path(name).name).write_text(text + "\n")
        print(f"[mlrt sagemaker] wrote {folder / Path(name).name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
