"""Built-in data-channel schemes: local files (``file://``), scikit-learn's bundled
datasets (``builtin://``) and S3 objects (``s3://``).

Registered through the ``mlrt`` entry-point group like any third-party
plugin; see :mod:`mlrt_data.file`, :mod:`mlrt_data.builtin` and
:mod:`mlrt_data.s3` for the URI forms each scheme accepts.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.data import DataScheme
from mlrt_data.builtin import BuiltinScheme
from mlrt_data.file import FileScheme
from mlrt_data.s3 import S3Scheme

__all__ = ["BuiltinScheme", "FileScheme", "S3Scheme", "mlrt_data_schemes"]


@hookimpl(trylast=True)
def mlrt_data_schemes() -> list[DataScheme]:
    """The ``file``, ``builtin`` and ``s3`` schemes."""
    return [FileScheme(), BuiltinScheme(), S3Scheme()]
