"""SageMaker's host names resolve to this machine in a local worker's Python.

On the local backend every host of ``spec.contract: sagemaker`` (``algo-1`` .. ``algo-N``, the
worker's ``SM_HOSTS``) is this machine, but no resolver knows the names, and mlrt does not edit
``/etc/hosts``. The local backend puts this folder first on the workers' ``PYTHONPATH``, so Python
runs this module at start-up (:mod:`site`): ``socket.getaddrinfo``, ``gethostbyname`` and
``gethostbyname_ex`` answer ``127.0.0.1`` for those names and ask the system for any other. Then the
``sitecustomize`` this one hides, if the path has one further on, runs as it would have.
Programs that resolve names outside Python's ``socket`` module (a C library's own lookup) do not
see the names; ``MASTER_ADDR`` (``127.0.0.1``) is there for them.
"""

import json
import os
import socket
import sys

LOOPBACK = "127.0.0.1"


def _hosts() -> set[str]:
    """The names in ``SM_HOSTS``, read at each lookup: a warm worker's interpreter started before
    its job's variables were set (:mod:`mlrt_local.warm`)."""
    try:
        return {str(host) for host in json.loads(os.environ.get("SM_HOSTS") or "[]")}
    except (TypeError, ValueError):
        return set()


def _install() -> None:
    getaddrinfo, gethostbyname, gethostbyname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex

    def local_getaddrinfo(host, *args, **kwargs):
        return getaddrinfo(LOOPBACK if host in _hosts() else host, *args, **kwargs)

    def local_gethostbyname(host):
        return LOOPBACK if host in _hosts() else gethostbyname(host)

    def local_gethostbyname_ex(host):
        return (host, [], [LOOPBACK]) if host in _hosts() else gethostbyname_ex(host)

    socket.getaddrinfo = local_getaddrinfo
    socket.gethostbyname = local_gethostbyname
    socket.gethostbyname_ex = local_gethostbyname_ex


def _run_hidden() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or ".")
        path = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                code = compile(handle.read(), path, "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": path})
            return


_install()
_run_hidden()
