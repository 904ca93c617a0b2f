"""The error an unusable operator setting raises, wherever in mlrt the setting is read.

Settings are environment variables an operator sets for the controller or the
CLI (``MLRT_DB_POOL_SIZE``, ``MLRT_LAUNCH_CONCURRENCY``, ``MLRT_MAX_REQUEST_BYTES``
and the like). The CLI prints a :class:`SettingError`'s message as one
``error:`` line and exits with code 2; the service refuses to start with it.
"""


class SettingError(ValueError):
    """An operator setting is unusable; the message is one ``NAME: problem`` line."""
