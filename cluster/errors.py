"""One error type for everything that can go wrong while getting a Dask client.

Every failure is a :class:`ClusterError` with a stable ``code`` (one of :data:`CLUSTER_ERROR_CODES`),
a message that says what was found and what was expected, what was tried (``tried``) and what to do
next (``hint``).  Three subclasses split the families: :class:`ClusterConfigError` for options and TLS
settings that are wrong before anything is contacted (also a ``ValueError``),
:class:`ClusterConnectError` for a scheduler or workers that do not answer (also a ``ConnectionError``),
and :class:`ClusterRunError` for a cluster that stops being usable while a job waits on it (also a
``RuntimeError``).

This package holds no domain knowledge, so the codes live here and not in ``segment1b.errors``.
"""

from __future__ import annotations

__all__ = ["CLUSTER_ERROR_CODES", "ClusterConfigError", "ClusterConnectError", "ClusterError", "ClusterRunError"]

# code -> what it means.  The single place that defines which codes exist.
CLUSTER_ERROR_CODES: dict[str, str] = {
    # options and settings, found before anything is contacted
    "C001_OPTION_INVALID": "a cluster option has a value of the wrong type or outside its range",
    "C002_OPTION_CONFLICT": "two cluster options contradict each other",
    "C003_TLS_CONFIG": "TLS is needed but the certificates are not configured or cannot be read",
    "C004_PROTOCOL_UNAVAILABLE": "the package that provides this address protocol is not installed",
    # contacting a cluster
    "C101_SCHEDULER_FILE_MISSING": "the scheduler file did not appear, or holds no scheduler address",
    "C102_SCHEDULER_UNREACHABLE": "no scheduler answered at the address, or it refused the connection (TLS)",
    "C103_NO_WORKERS": "the scheduler answered but no worker joined in time",
    # while a job waits on the cluster (issue #14: never hang silently)
    "C201_WORKERS_PAUSED": "workers stayed paused (memory above distributed.worker.memory.pause) and no task "
                           "finished for the pause timeout",
    "C202_SCHEDULER_LOST": "the connection to the scheduler was lost while the job ran",
}


class ClusterError(Exception):
    """A failure to get a working Dask client: code, message, what was tried, what to do next.

    Parameters
    ----------
    code : str
        One of :data:`CLUSTER_ERROR_CODES`.
    message : str
        What was found and what was expected.
    tried : str, optional
        What was attempted (address, protocol, timeout), so the reader can repeat it by hand.
    hint : str, optional
        What to do next.
    """

    def __init__(self, code: str, message: str, *, tried: str | None = None, hint: str | None = None):
        if code not in CLUSTER_ERROR_CODES:
            raise ValueError(f"unknown cluster error code {code!r}; this is a bug in cluster/, please report it")
        self.code = code
        self.message = message
        self.tried = tried
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.tried:
            text += f"\n  tried: {self.tried}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __reduce__(self):  # keep code/tried/hint when pickled (e.g. re-raised through a Dask task)
        return (_rebuild, (type(self), self.code, self.message, self.tried, self.hint))

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form, for run reports."""
        return {"code": self.code, "message": self.message, "tried": self.tried, "hint": self.hint}


class ClusterConfigError(ClusterError, ValueError):
    """An option, a Dask config value or a TLS setting is wrong; nothing was contacted."""


class ClusterConnectError(ClusterError, ConnectionError):
    """A scheduler or its workers did not answer in time."""


class ClusterRunError(ClusterError, RuntimeError):
    """The cluster stopped being usable while a job waited on it (workers paused, scheduler gone)."""


def _rebuild(cls, code, message, tried, hint):
    return cls(code, message, tried=tried, hint=hint)
