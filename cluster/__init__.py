"""How to get a ``dask.distributed`` Client: local default, remote address, scheduler file, config, TLS.

This package holds no domain knowledge: it never imports ``segment1b`` or ``jobs``.  Importing it is
cheap; ``distributed`` is imported only when a client is opened.  See ``cluster/README.md`` for the
options, their Dask config keys and the precedence rule, and ``cluster/examples/`` for deployments.

>>> from cluster import ClusterOptions, open_client
>>> with open_client(ClusterOptions(scheduler="tcp://scheduler-host:8786")) as client:  # doctest: +SKIP
...     client.submit(sum, [1, 2]).result()
3
"""

from cluster.client import describe, format_layout, open_client
from cluster.errors import CLUSTER_ERROR_CODES, ClusterConfigError, ClusterConnectError, ClusterError, ClusterRunError
from cluster.local import LocalLayout, local_layout, machine_resources
from cluster.memory import reset_worker_memory_peaks, worker_memory_peaks
from cluster.options import CONFIG_PREFIX, OPTIONS, ClusterOptions
from cluster.tls import security_from_files
from cluster.watchdog import PauseWatchdog, scheduler_lost

# The public surface: getting a client (ClusterOptions, open_client, security_from_files), reporting
# (describe, format_layout, worker_memory_peaks, reset_worker_memory_peaks), LocalCluster sizing
# (LocalLayout, local_layout, machine_resources), waiting without hanging (PauseWatchdog, scheduler_lost),
# the option table and the errors.
__all__ = [
    "CLUSTER_ERROR_CODES",
    "CONFIG_PREFIX",
    "OPTIONS",
    "ClusterConfigError",
    "ClusterConnectError",
    "ClusterError",
    "ClusterOptions",
    "ClusterRunError",
    "LocalLayout",
    "PauseWatchdog",
    "describe",
    "format_layout",
    "local_layout",
    "machine_resources",
    "open_client",
    "reset_worker_memory_peaks",
    "scheduler_lost",
    "security_from_files",
    "worker_memory_peaks",
]
