"""Ctrl-C belongs to the client: the worker processes of a LocalCluster ignore SIGINT (issue 15, item 4).

A terminal sends Ctrl-C to its whole foreground process group, and the worker processes a LocalCluster's
nannies spawn are in that group.  Each one would end its event loop with a ``KeyboardInterrupt`` traceback
(about 30 lines per worker) while the client, which handles the interrupt, cancels its futures and closes
the cluster anyway.  So the workers ignore SIGINT; the nannies (in the client's process) still stop them
on ``cluster.close()``, and a worker whose client process dies outright exits with it (the nanny's
parent-alive pipe).

Imported only when a LocalCluster is started (it needs ``distributed``: house rule 8).
"""

from __future__ import annotations

import signal
import threading

from distributed import WorkerPlugin

__all__ = ["IgnoreInterrupt"]


class IgnoreInterrupt(WorkerPlugin):
    """Worker plugin: SIGINT is ignored in a worker process whose event loop runs on its main thread.

    A worker that runs inside the client's process (``processes=False``) shares its signal handling, so
    nothing changes there (signals can only be set from the main thread anyway).
    """

    name = "segment1b-ignore-interrupt"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
