"""Sizing a LocalCluster to the machine: a pure rule plus one function that reads the machine.

:func:`local_layout` is a pure function of the options, the usable cores and the available memory,
so its rule is tested on literals; :func:`machine_resources` is the only place that asks the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cluster.options import ClusterOptions

__all__ = ["LOCAL_MAX_WORKERS", "LOCAL_MIN_WORKER_MEMORY", "LocalLayout", "local_layout", "machine_resources"]

# More worker processes than this on one machine cost more in scheduler traffic and per-process
# imports (GEOS, Arrow, pandas: a few hundred MB each) than they gain.
LOCAL_MAX_WORKERS = 32
# Below this a worker cannot hold one chunk plus its reference data; fewer, larger workers are better.
LOCAL_MIN_WORKER_MEMORY = 2 * 2**30


@dataclass(frozen=True)
class LocalLayout:
    """Workers, threads per worker and memory limit per worker (bytes) of a LocalCluster."""

    n_workers: int
    threads_per_worker: int
    memory_limit: int


def local_layout(options: ClusterOptions, *, cores: int, available_memory: int) -> LocalLayout:
    """Choose the LocalCluster layout for ``options`` on a machine with ``cores`` and ``available_memory``.

    Explicit ``n_workers`` and ``memory_limit`` are used as given.  Otherwise: one worker per
    ``threads_per_worker`` usable cores, at most :data:`LOCAL_MAX_WORKERS`, and no more workers than
    the available memory holds at ``memory_limit`` (or :data:`LOCAL_MIN_WORKER_MEMORY`) each; at least
    one.  The memory limit defaults to an equal share of the available memory.

    Parameters
    ----------
    options : ClusterOptions
        Resolved options; only the LocalCluster fields are read.
    cores : int
        Usable cores (affinity and cgroup quota already applied), >= 1.
    available_memory : int
        Bytes available to this process tree, > 0.

    Returns
    -------
    LocalLayout

    Examples
    --------
    >>> local_layout(ClusterOptions(), cores=8, available_memory=32 * 2**30)
    LocalLayout(n_workers=8, threads_per_worker=1, memory_limit=4294967296)
    >>> local_layout(ClusterOptions(), cores=8, available_memory=5 * 2**30).n_workers
    2
    >>> local_layout(ClusterOptions(n_workers=3, memory_limit="1GiB"), cores=2, available_memory=2**30)
    LocalLayout(n_workers=3, threads_per_worker=1, memory_limit=1073741824)
    """
    cores = max(1, int(cores))
    available_memory = max(1, int(available_memory))
    threads = options.threads_per_worker
    if options.n_workers is not None:
        workers = options.n_workers
    else:
        per_worker = options.memory_limit or LOCAL_MIN_WORKER_MEMORY
        workers = min(max(1, cores // threads), LOCAL_MAX_WORKERS, max(1, available_memory // per_worker))
    memory = options.memory_limit if options.memory_limit is not None else available_memory // workers
    return LocalLayout(n_workers=workers, threads_per_worker=threads, memory_limit=max(1, memory))


def machine_resources() -> tuple[int, int]:
    """Usable cores and available memory (bytes) of this machine, as seen by this process.

    Cores: the CPU affinity mask (``os.sched_getaffinity``), further limited by a cgroup CPU quota
    (``dask.system.CPU_COUNT``).  Memory: ``psutil``'s available memory, limited by the cgroup or
    rlimit memory limit that ``distributed`` detects.
    """
    import psutil
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # macOS, Windows
        cores = os.cpu_count() or 1
    cores = max(1, min(cores, CPU_COUNT))
    available = min(psutil.virtual_memory().available, MEMORY_LIMIT)
    return cores, int(available)
