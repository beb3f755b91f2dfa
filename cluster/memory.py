"""Peak resident memory of every worker process, for the per-state run reports.

The jobs call :func:`reset_worker_memory_peaks` before a state and :func:`worker_memory_peaks` after it,
so each state reports the peak RSS that it caused on each worker.

On Linux the peak is ``VmHWM`` from ``/proc/self/status``; writing ``5`` to ``/proc/self/clear_refs``
resets it to the current RSS (Linux >= 4.0, see proc(5)).  Elsewhere the peak falls back to
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which cannot be reset and so covers the life of the
worker process.

Both functions run on the workers through ``Client.run`` (eagerly, on every worker, outside the task
graph).  The probes are module-level functions, so the workers import ``cluster.memory``: on a remote
cluster the ``segment1b`` distribution (which holds ``cluster``) must be installed on the workers, as it
must be for the kernels anyway.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["peak_rss", "reset_peak_rss", "reset_worker_memory_peaks", "worker_memory_peaks"]

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_RESET_PEAK = "5"  # proc(5): "5" resets the peak resident set size ("high water mark") to the current RSS


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes (VmHWM, else ru_maxrss)."""
    try:
        with open(_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, kB elsewhere


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write(_RESET_PEAK)
        return True
    except OSError:
        return False


def worker_memory_peaks(client: Client) -> dict[str, int]:
    """Peak RSS in bytes of every worker process, keyed by worker address.

    Runs eagerly on all workers via ``client.run``.  With ``processes=False`` every worker lives in
    the client's process and reports that process's peak.

    Examples
    --------
    >>> peaks = worker_memory_peaks(client)  # doctest: +SKIP
    >>> {address: f"{b / 2**20:.0f} MiB" for address, b in peaks.items()}  # doctest: +SKIP
    {'tcp://127.0.0.1:40123': '212 MiB', 'tcp://127.0.0.1:40124': '207 MiB'}
    """
    return {str(address): int(peak) for address, peak in client.run(peak_rss).items()}


def reset_worker_memory_peaks(client: Client) -> dict[str, bool]:
    """Reset the peak RSS of every worker process; says per worker whether the reset worked.

    ``False`` for a worker means its later peak covers the whole life of the process (no
    ``/proc/self/clear_refs``: not Linux, or a kernel older than 4.0).  Runs eagerly via ``client.run``.
    """
    return {str(address): bool(done) for address, done in client.run(reset_peak_rss).items()}
