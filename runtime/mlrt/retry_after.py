"""How long a client waits before it sends a refused request again (``Retry-After``).

The service answers 429 with ``Retry-After`` when a caller has its share of
requests in flight (:mod:`mlrt.service.guard`); the CLI (:mod:`mlrt.remote`) and
the SDK's tracking client (:mod:`mlrt.sdk`) both read it here. No imports: the
SDK runs inside users' training programs.
"""

MAX_WAIT = 10.0
"""The longest wait taken from a header, in seconds, whatever it asks."""


def retry_after_seconds(value: str | None, *, default: float) -> float:
    """The seconds a ``Retry-After`` header asks for, within 0 and :data:`MAX_WAIT`; ``default``
    when there is none, or it is an HTTP date or not a number (NaN included)."""
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return min(max(seconds, 0.0), MAX_WAIT) if seconds == seconds else default
