"""Never hang silently: fail a wait on the cluster when workers stay paused or the scheduler is gone.

A Dask worker *pauses* when its process memory rises above ``distributed.worker.memory.pause`` (80 % of
its memory limit by default): it starts no new task until the memory falls again.  When the memory cannot
fall (unmanaged memory of the process itself, or results that nothing will release), the worker stays
paused forever, and so does a client waiting on its futures (issue #14: a run sat in S4 with both workers
paused).  :class:`PauseWatchdog` watches the workers' status on the scheduler while a job waits and turns
such a stall into :class:`~cluster.errors.ClusterRunError` ``C201_WORKERS_PAUSED`` within a bounded time.

:func:`scheduler_lost` tells whether an exception raised while waiting means that the client lost its
scheduler (``C202_SCHEDULER_LOST``): Dask then cancels every future with the reason
``scheduler-connection-lost``, or a call fails with ``CommClosedError``.

The stall rule itself, :func:`stalled_workers`, is a pure function of times, tested on literals.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cluster.errors import ClusterRunError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PauseWatchdog", "scheduler_lost", "stalled_workers"]

PAUSED = "paused"
_LOST_REASON = "scheduler-connection-lost"  # distributed.client: why futures are cancelled on a lost scheduler


def stalled_workers(paused_since: Mapping[str, float], last_progress: float, now: float,
                    timeout: float) -> list[str]:
    """Workers paused for at least ``timeout`` seconds while nothing finished for as long; else ``[]``.

    A worker that pauses for a moment (it spills, then resumes) or a cluster that keeps finishing tasks on
    its other workers is not a stall.

    >>> stalled_workers({"w1": 0.0, "w2": 50.0}, last_progress=10.0, now=70.0, timeout=60.0)
    ['w1']
    >>> stalled_workers({"w1": 0.0}, last_progress=30.0, now=70.0, timeout=60.0)  # a task finished at 30 s
    []
    """
    if now - last_progress < timeout:
        return []
    return sorted(w for w, since in paused_since.items() if now - since >= timeout)


def scheduler_lost(client: Client, error: BaseException) -> ClusterRunError | None:
    """``C202_SCHEDULER_LOST`` when ``error`` comes from a lost scheduler connection, else ``None``."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    lost = isinstance(error, CommClosedError) or (
        isinstance(error, FutureCancelledError) and _LOST_REASON in str(getattr(error, "reason", "") or error))
    if not lost and isinstance(error, (OSError, TimeoutError)):
        lost = getattr(client, "status", "running") not in ("running", "newly-created")
    if not lost:
        return None
    address = _scheduler_address(client, error)
    return ClusterRunError(
        "C202_SCHEDULER_LOST", f"lost the connection to the Dask scheduler at {address} while the job ran "
        f"({type(error).__name__}: {_first_line(error)})",
        hint="check that the scheduler is still running (it may have been stopped, restarted or killed for "
             "memory) and that the network to it is up; then rerun the same command: it resumes from what "
             "was published")


def _scheduler_address(client: Client, error: BaseException) -> str:
    """The lost scheduler's address: a client that gave up reconnecting has already dropped its rpc's
    address, so look in what it learnt when it connected, then in the error's own text."""
    address = getattr(getattr(client, "scheduler", None), "address", None) or \
        (getattr(client, "_scheduler_identity", None) or {}).get("address")
    if not address:
        found = re.search(r"\b[a-z]+://[^\s'\"),]+", str(error))
        address = found.group(0) if found else None
    return address or "the scheduler"


class PauseWatchdog:
    """Watch the workers' status on the scheduler while a job waits; fail the wait on a stall.

    Use it as a context manager around a wait.  A thread asks the scheduler for every worker's status each
    ``poll`` seconds.  When :func:`stalled_workers` finds a worker paused for ``timeout`` seconds while no
    task finished for as long (the waiter calls :meth:`progress` whenever one does), the watchdog keeps a
    ``C201_WORKERS_PAUSED`` error in :attr:`error` and calls ``on_stall()``, which must wake the waiter
    (for example by cancelling the futures it waits on); the waiter then raises :attr:`error`.

    Parameters
    ----------
    client : distributed.Client
    on_stall : callable
        Called once, from the watchdog's thread, when the stall is found.
    timeout : float
        Seconds (``segment1b.cluster.pause-timeout``, see :data:`cluster.options.OPTIONS`).
    poll : float
        Seconds between two looks at the scheduler.
    """

    def __init__(self, client: Client, on_stall: Callable[[], Any], *, timeout: float, poll: float = 1.0):
        self.client, self.on_stall, self.timeout, self.poll = client, on_stall, float(timeout), float(poll)
        self.error: ClusterRunError | None = None
        self._last_progress = time.monotonic()
        self._paused_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segment1b-pause-watchdog", daemon=True)

    def progress(self) -> None:
        """A task of the wait finished: the cluster is moving."""
        self._last_progress = time.monotonic()

    def __enter__(self) -> PauseWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join(timeout=10 * self.poll)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                workers = self._workers()
            except Exception:  # the scheduler is gone or busy: the wait itself sees a lost scheduler
                continue
            now = time.monotonic()
            for address, info in workers.items():
                if info.get("status") == PAUSED:
                    self._paused_since.setdefault(address, now)
                else:
                    self._paused_since.pop(address, None)
            for address in list(self._paused_since):
                if address not in workers:  # the worker left (restarted by its nanny): no longer paused
                    del self._paused_since[address]
            stalled = stalled_workers(self._paused_since, self._last_progress, now, self.timeout)
            if stalled:
                self.error = self._stall_error(stalled, workers)
                self.on_stall()
                return

    def _workers(self) -> dict[str, dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # distributed releases without n_workers list every worker
            info = self.client.scheduler_info()
        return dict(info.get("workers", {}))

    def _stall_error(self, stalled: list[str], workers: dict[str, dict[str, Any]]) -> ClusterRunError:
        import dask
        from dask.utils import format_bytes

        pause = dask.config.get("distributed.worker.memory.pause", 0.8)
        described = []
        for address in stalled:
            w = workers.get(address, {})
            limit = int(w.get("memory_limit") or 0)
            memory = int((w.get("metrics") or {}).get("memory") or 0)
            described.append(f"{address} (process memory {format_bytes(memory)} of a {format_bytes(limit)} limit)"
                             if limit else address)
        return ClusterRunError(
            "C201_WORKERS_PAUSED",
            f"{len(stalled)} of {len(workers)} workers stayed paused for {self.timeout:g} s and no task finished: "
            f"{'; '.join(described)}. A worker pauses when its memory passes distributed.worker.memory.pause "
            f"({pause:.0%} of its limit) and does not start another task until it falls again",
            tried=f"watched the workers' status on the scheduler every {self.poll:g} s",
            hint="give the workers more memory (--memory-limit, or larger workers on the cluster) or fewer "
                 "threads per worker; a rerun resumes from what was published.  segment1b.cluster.pause-timeout "
                 "sets how long a pause is tolerated")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"
