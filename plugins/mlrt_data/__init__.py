"""Built-in data-channel schemes: local files (``file://``) and scikit-learn's bundled datasets (``builtin://``).

Registered through the ``mlrt`` entry-point group like any third-party
plugin; see :mod:`mlrt_data.file` and :mod:`mlrt_data.builtin` for the URI
forms each scheme accepts.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.data import DataScheme
from mlrt_data.builtin import BuiltinScheme
from mlrt_data.file import FileScheme

__all__ = ["BuiltinScheme", "FileScheme", "mlrt_data_schemes"]


@hookimpl(trylast=True)
def mlrt_data_schemes() -> list[DataScheme]:
    """The ``file`` and ``builtin`` schemes."""
    return [FileScheme(), BuiltinScheme()]
