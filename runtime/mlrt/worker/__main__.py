"""``python -m mlrt.worker``: run the worker of an ``algorithm:`` job (see :mod:`mlrt.worker`).

The worker is a package with this entry module so that a warm-worker host can import
``mlrt.worker`` ahead of time and still run it as ``__main__`` without runpy's warning
about a module executed twice."""

import sys

from mlrt.worker import main

sys.exit(main())
