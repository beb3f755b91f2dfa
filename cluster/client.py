"""Getting a ``distributed.Client``: a LocalCluster sized to the machine, or an existing cluster.

:func:`open_client` is the one entry point.  With no scheduler configured it starts a LocalCluster
(one single-threaded worker process per usable core, memory shared out, dashboard on a free port) and
closes it afterwards.  With a scheduler address or scheduler file it connects, waits for a worker, and
on exit closes only its own client: it never shuts a remote cluster down.  Either way it prints one line
with the layout and the dashboard link to ``out``.

:func:`describe` returns the same facts as a dict for run reports.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from cluster.errors import ClusterConfigError, ClusterConnectError
from cluster.local import local_layout, machine_resources
from cluster.options import ClusterOptions
from cluster.tls import check_security, describe_security, resolve_security
from cluster.watchdog import scheduler_lost

if TYPE_CHECKING:  # distributed is imported only inside the functions that need it (house rule 8)
    from distributed import Client, Security

__all__ = ["describe", "format_layout", "open_client"]

# Protocols provided by an optional package that registers a comm backend when imported.
_PROTOCOL_PACKAGES: dict[str, str] = {"gateway": "dask_gateway"}
_POLL_SECONDS = 0.1


@contextmanager
def open_client(options: ClusterOptions | None = None, *, security: Security | None = None,
                out: TextIO | None = None) -> Iterator[Client]:
    """Yield a ``distributed.Client`` for ``options``; close whatever was opened on exit.

    Parameters
    ----------
    options : ClusterOptions, optional
        Where and how to run.  ``None``: ``ClusterOptions()``, i.e. Dask config, then the defaults.
    security : distributed.Security, optional
        TLS settings, e.g. from :func:`cluster.security_from_files`.  ``None``: ``distributed.Security()``,
        which reads ``distributed.comm.tls.*`` from Dask config.  The same object goes to the
        LocalCluster (scheduler and workers) and to the Client.
    out : text stream, optional
        Where the one-line summary goes; ``None`` means ``sys.stdout`` at call time.

    Yields
    ------
    distributed.Client
        Set as the default client while the block runs.

    Raises
    ------
    ClusterConfigError
        ``C003_TLS_CONFIG`` (TLS needed but not configured), ``C004_PROTOCOL_UNAVAILABLE``.
    ClusterConnectError
        ``C101_SCHEDULER_FILE_MISSING``, ``C102_SCHEDULER_UNREACHABLE`` (after ``connect_timeout``),
        ``C103_NO_WORKERS`` (after ``worker_timeout``).
    ClusterRunError
        ``C202_SCHEDULER_LOST`` when the block fails because the scheduler connection was lost
        (:func:`cluster.scheduler_lost`); the original error is its ``__cause__``.

    Examples
    --------
    >>> import io
    >>> from cluster import ClusterOptions, open_client
    >>> with open_client(ClusterOptions(n_workers=1, processes=False, dashboard_address=None),
    ...                  out=io.StringIO()) as client:
    ...     client.submit(sum, [1, 2, 3]).result()
    6
    """
    if options is None:
        options = ClusterOptions()
    stream = sys.stdout if out is None else out
    security = resolve_security(security)
    if options.is_remote:
        client = _connect(options, security)
        try:
            print(format_layout(describe(client)), file=stream, flush=True)
            with _lost_scheduler_is_c202(client):
                yield client
        finally:
            client.close()  # only our connection: a remote cluster belongs to someone else
    else:
        cluster, client = _start_local(options, security)
        try:
            print(format_layout(describe(client)), file=stream, flush=True)
            with _lost_scheduler_is_c202(client):
                yield client
        finally:
            client.close()
            cluster.close()


@contextmanager
def _lost_scheduler_is_c202(client: Client) -> Iterator[None]:
    """Any call of the block that fails because the scheduler went away becomes C202_SCHEDULER_LOST."""
    try:
        yield
    except Exception as error:
        lost = scheduler_lost(client, error)
        if lost is None:
            raise
        raise lost from error


def describe(client: Client) -> dict[str, Any]:
    """Scheduler address, dashboard link and worker layout of the cluster behind ``client``.

    Asks the scheduler eagerly (one round trip).  The result is plain JSON-ready data.

    Returns
    -------
    dict
        ``scheduler_address``, ``dashboard_link`` (None without a dashboard), ``local`` (True for a
        cluster that this client started), ``n_workers``, ``total_threads``, ``total_memory_limit``
        (bytes; 0 where workers have no limit), and ``workers``: address -> ``name``, ``host``,
        ``threads``, ``memory_limit``.
    """
    info = _scheduler_info(client)
    workers = {
        str(address): {
            "name": str(worker.get("name", address)),
            "host": worker.get("host"),
            "threads": int(worker.get("nthreads", 0)),
            "memory_limit": int(worker.get("memory_limit") or 0),
        }
        for address, worker in sorted(info.get("workers", {}).items())
    }
    return {
        "scheduler_address": info.get("address") or client.scheduler.address,
        "dashboard_link": _dashboard_link(client, info),
        "local": client.cluster is not None,
        "n_workers": len(workers),
        "total_threads": sum(w["threads"] for w in workers.values()),
        "total_memory_limit": sum(w["memory_limit"] for w in workers.values()),
        "workers": workers,
    }


def format_layout(description: dict[str, Any]) -> str:
    """The one-line summary that :func:`open_client` prints, from a :func:`describe` dict.

    Examples
    --------
    >>> print(format_layout({"scheduler_address": "tcp://127.0.0.1:8786", "local": True,
    ...     "dashboard_link": "http://127.0.0.1:8787/status", "n_workers": 2, "total_threads": 2,
    ...     "total_memory_limit": 2 * 2**30, "workers": {
    ...         "a": {"threads": 1, "memory_limit": 2**30}, "b": {"threads": 1, "memory_limit": 2**30}}}))
    Dask LocalCluster tcp://127.0.0.1:8786: 2 workers x 1 thread, 1.00 GiB memory limit each; dashboard http://127.0.0.1:8787/status
    """
    from dask.utils import format_bytes

    workers = list(description["workers"].values())
    n = description["n_workers"]
    threads = {w["threads"] for w in workers}
    limits = {w["memory_limit"] for w in workers}
    if len(threads) == 1 and len(limits) == 1:  # a uniform layout reads best as "N x T"
        (t,), (m,) = threads, limits
        layout = (f"{n} worker{'s' if n != 1 else ''} x {t} thread{'s' if t != 1 else ''}, "
                  + (f"{format_bytes(m)} memory limit each" if m else "no memory limit"))
    else:
        total = description["total_memory_limit"]
        layout = (f"{n} worker{'s' if n != 1 else ''}, {description['total_threads']} threads, "
                  + (f"{format_bytes(total)} memory limit in total" if total else "no memory limit"))
    kind = "Dask LocalCluster" if description["local"] else "Dask cluster"
    link = description["dashboard_link"]
    return f"{kind} {description['scheduler_address']}: {layout}; " + (f"dashboard {link}" if link else "no dashboard")


# ------------------------------------------------------------------------------------------------
# local
# ------------------------------------------------------------------------------------------------


# Issue 17: every distributed BatchedSend keeps its last ``distributed.admin.low-level-log-length`` messages
# (1000 by default) for debugging, task graphs included (each message up to 1 MB), in the client and, for a
# LocalCluster, in the scheduler that lives in this process: on one long-lived cluster the client process
# grew by 30-60 MiB per run.  Keep a few, unless the user configured a length of their own.
RECENT_MESSAGES = 20
_DASK_DEFAULT_RECENT_MESSAGES = 1000


def short_message_logs():
    """A Dask config context with short low-level message logs (a user's own setting is left as it is)."""
    import dask

    if dask.config.get("distributed.admin.low-level-log-length", None) != _DASK_DEFAULT_RECENT_MESSAGES:
        return dask.config.set({})
    return dask.config.set({"distributed.admin.low-level-log-length": RECENT_MESSAGES})


def _start_local(options: ClusterOptions, security: Security):
    check_security(security, address=None)
    cores, available = machine_resources()
    layout = local_layout(options, cores=cores, available_memory=available)
    scheduler_kwargs = None
    if options.dashboard_address is None:
        # Without a dashboard the scheduler still serves /health and /metrics over HTTP, on port 8787
        # unless told otherwise (and warns when that is taken): keep it on a free loopback port.
        scheduler_kwargs = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    # The protocol follows security.require_encryption (tls:// when true), as LocalCluster decides it.
    with short_message_logs():
        return _local_cluster_and_client(options, security, layout, scheduler_kwargs)


def _local_cluster_and_client(options: ClusterOptions, security: Security, layout, scheduler_kwargs):
    from distributed import Client, LocalCluster

    from cluster.interrupt import IgnoreInterrupt

    cluster = LocalCluster(
        n_workers=layout.n_workers,
        threads_per_worker=layout.threads_per_worker,
        memory_limit=layout.memory_limit,
        processes=options.processes,
        dashboard_address=options.dashboard_address,
        local_directory=options.local_directory,
        security=security,
        silence_logs=logging.ERROR,
        scheduler_kwargs=scheduler_kwargs,
        plugins=(IgnoreInterrupt(),),  # Ctrl-C is the client's to handle, not the worker processes' (issue 15)
    )
    try:
        client = Client(cluster, security=security, timeout=options.connect_timeout)
    except BaseException:
        cluster.close()
        raise
    return cluster, client


# ------------------------------------------------------------------------------------------------
# remote
# ------------------------------------------------------------------------------------------------


def _connect(options: ClusterOptions, security: Security) -> Client:
    from distributed import Client

    if options.scheduler_file is not None:
        address = _read_scheduler_file(options.scheduler_file, options.connect_timeout)
        source = f"scheduler file {options.scheduler_file}"
    else:
        address = options.scheduler
        source = "scheduler address"
    check_security(security, address=address)
    protocol = address.split("://", 1)[0]
    if protocol in _PROTOCOL_PACKAGES:
        _import_protocol(protocol, address)

    tried = (f"Client({address!r}) from the {source}, {describe_security(security)}, "
             f"connect timeout {options.connect_timeout:g} s")
    started = time.monotonic()
    try:
        with short_message_logs():  # the client's own send log (issue 17)
            client = Client(address, security=security, timeout=options.connect_timeout)
    except (OSError, TimeoutError) as error:  # CommClosedError and ssl.SSLError are OSErrors
        raise ClusterConnectError(
            "C102_SCHEDULER_UNREACHABLE",
            f"could not connect to a Dask scheduler at {address} (gave up after "
            f"{time.monotonic() - started:.1f} s): {type(error).__name__}: {_first_line(error)}",
            tried=tried, hint=_unreachable_hint(address, options)) from error

    try:
        client.wait_for_workers(1, timeout=options.worker_timeout)
    except (TimeoutError, OSError) as error:
        client.close()
        raise ClusterConnectError(
            "C103_NO_WORKERS",
            f"connected to the scheduler at {address}, but no worker joined within {options.worker_timeout:g} s",
            tried=tried,
            hint="start workers with `dask worker " + address + "` (or check that the batch jobs or pods "
                 "running them started), or raise segment1b.cluster.worker-timeout") from error
    except BaseException:  # e.g. Ctrl-C while waiting: do not leave the connection open
        client.close()
        raise
    return client


def _read_scheduler_file(path: str, timeout: float) -> str:
    """Wait up to ``timeout`` seconds for ``path`` to hold a scheduler address; return the address."""
    deadline = time.monotonic() + timeout
    problem = "does not exist"
    while True:
        try:
            with open(path) as handle:
                address = json.load(handle).get("address")
            if isinstance(address, str) and address:
                return address
            problem = "holds no 'address'"
        except FileNotFoundError:
            problem = "does not exist"
        except (ValueError, AttributeError):  # half-written JSON, or not a JSON object
            problem = "is not a JSON object with an 'address'"
        except OSError as error:
            problem = f"cannot be read ({error.strerror})"
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
    raise ClusterConnectError(
        "C101_SCHEDULER_FILE_MISSING",
        f"the scheduler file {path} {problem} after waiting {timeout:g} s",
        tried=f"polling {os.path.abspath(path)} every {_POLL_SECONDS:g} s",
        hint="start the scheduler first with `dask scheduler --scheduler-file " + path + "`; the path must be "
             "on a file system that this machine shares with the scheduler; raise "
             "segment1b.cluster.connect-timeout if the scheduler's batch job starts later")


def _import_protocol(protocol: str, address: str) -> None:
    package = _PROTOCOL_PACKAGES[protocol]
    try:
        importlib.import_module(package)  # registers the comm backend for this protocol
    except ImportError as error:
        raise ClusterConfigError(
            "C004_PROTOCOL_UNAVAILABLE",
            f"the scheduler address {address} uses the {protocol}:// protocol, which needs the "
            f"{package} package ({error})",
            hint=f"pip install {package.replace('_', '-')} on this machine") from error


def _unreachable_hint(address: str, options: ClusterOptions) -> str:
    hints = [("check that the scheduler is running and that this machine can reach that host and port "
              "(firewall, VPN, kubectl port-forward)")]
    if address.startswith("tls://"):
        hints.append("that the CA and client certificate are the ones the scheduler trusts")
    else:
        hints.append("that the protocol matches the scheduler's (tcp:// vs tls://)")
    if options.scheduler_file is not None:
        try:
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(options.scheduler_file)))
            hints.append(f"and that the scheduler file is not stale (it was written at {written}; a scheduler "
                         "that has stopped leaves it behind)")
        except OSError:
            pass
    hints.append("raise segment1b.cluster.connect-timeout if the scheduler is slow to start")
    return "; ".join(hints)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


# ------------------------------------------------------------------------------------------------
# describe helpers
# ------------------------------------------------------------------------------------------------


def _scheduler_info(client: Client) -> dict[str, Any]:
    try:
        return dict(client.scheduler_info(n_workers=-1))  # newer distributed lists only 5 by default
    except TypeError:  # distributed releases without the n_workers argument list every worker
        return dict(client.scheduler_info())


def _dashboard_link(client: Client, info: dict[str, Any]) -> str | None:
    # A scheduler always runs an HTTP server (health, metrics), and scheduler_info lists it as the
    # "dashboard" service even when the Bokeh dashboard is off; Client.dashboard_link then still
    # formats a link.  A LocalCluster's scheduler lives in this process, so look whether the Bokeh
    # application was mounted (distributed.dashboard.scheduler.connect adds it).  For a remote
    # scheduler the HTTP service is the best evidence there is.
    if "dashboard" not in info.get("services", {}):
        return None
    scheduler = getattr(client.cluster, "scheduler", None) if client.cluster is not None else None
    mounted = getattr(getattr(scheduler, "http_application", None), "applications", None)
    if mounted is not None and not mounted:
        return None
    try:
        return client.dashboard_link or None
    except (KeyError, AttributeError, TypeError):
        return None
