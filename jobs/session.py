"""Common command-line options (data root, run identity, leases, cluster) and the session they open: Storage +
Client."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

from segment1b.storage import Storage

from .argtypes import cluster_option, hex64, seconds, seed, storage_options

__all__ = ["add_root_options", "add_identity_options", "add_lease_options", "add_cluster_options",
           "storage_from_args", "open_session"]


def add_root_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", required=True, metavar="D",
                   help="data root: a folder or an fsspec URL every worker can reach (s3://bucket/prefix)")
    p.add_argument("--storage-options", type=storage_options, default=None, metavar="JSON",
                   help='fsspec options for the data root, e.g. \'{"client_kwargs": {"endpoint_url": "http://..."}}\'')


def add_identity_options(p: argparse.ArgumentParser) -> None:
    """``--seed`` and ``--fingerprint`` of the run a command reads (both required)."""
    p.add_argument("--seed", required=True, type=seed, help="run seed (u64)")
    p.add_argument("--fingerprint", required=True, type=hex64, metavar="F",
                   help="manifest_fingerprint (64 hex)")


def add_lease_options(p: argparse.ArgumentParser) -> None:
    """``--lease-wait`` / ``--no-wait`` for commands that publish (README, "Shared data roots")."""
    from segment1b.lease import DEFAULT_WAIT_SECONDS

    g = p.add_mutually_exclusive_group()
    g.add_argument("--lease-wait", type=seconds, default=None, metavar="SECONDS",
                   help="when another run is publishing the same work on this data root, wait this long for it "
                        "(then this run finds its work published); default: Dask config segment1b.lease.wait, else "
                        f"{DEFAULT_WAIT_SECONDS:g}; exit 75 (E_LEASE_BUSY) if it is still busy")
    g.add_argument("--no-wait", dest="lease_wait", action="store_const", const=0.0,
                   help="refuse at once (exit 75, E_LEASE_BUSY) when another run is publishing the same work")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (default: a LocalCluster sized to this machine)")
    g.add_argument("--scheduler", type=cluster_option("scheduler"), default=None, metavar="ADDR",
                   help="address of an existing Dask scheduler (tcp://host:8786 or tls://...)")
    g.add_argument("--scheduler-file", default=None, metavar="FILE", help="scheduler file of an existing cluster")
    # checked while parsing by the validators of cluster.options.OPTIONS (exit 2), normalised by ClusterOptions
    g.add_argument("--workers", type=cluster_option("n_workers"), default=None, help="LocalCluster worker processes")
    g.add_argument("--threads-per-worker", type=cluster_option("threads_per_worker"), default=None,
                   help="LocalCluster threads per worker")
    g.add_argument("--memory-limit", type=cluster_option("memory_limit"), default=None,
                   help="LocalCluster memory limit per worker (e.g. 4GiB)")


def storage_from_args(args: argparse.Namespace) -> Storage:
    """The data root of parsed arguments (``--storage-options`` is already a dict: jobs.argtypes)."""
    wait, ttl = lease_settings(getattr(args, "lease_wait", None))
    return Storage(args.data_root, getattr(args, "storage_options", None) or None, lease_wait=wait, lease_ttl=ttl)


def lease_settings(wait: float | None = None) -> tuple[float, float]:
    """(wait, ttl) of leases: ``wait`` if given, else Dask config ``segment1b.lease.wait``; the time-to-live
    of object-store leases from ``segment1b.lease.ttl``; else the defaults of :mod:`segment1b.lease`."""
    import dask

    from segment1b.errors import InputError
    from segment1b.lease import DEFAULT_TTL_SECONDS, DEFAULT_WAIT_SECONDS

    out = []
    for key, given, default, least in (("wait", wait, DEFAULT_WAIT_SECONDS, 0.0),
                                       ("ttl", None, DEFAULT_TTL_SECONDS, 1.0)):
        value = given if given is not None else dask.config.get(f"segment1b.lease.{key}", default)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = -1.0
        if not least <= value < float("inf"):
            raise InputError("E309_VALUE_RANGE", f"Dask config segment1b.lease.{key} must be a number of seconds "
                             f">= {least:g}, got {dask.config.get(f'segment1b.lease.{key}')!r}")
        out.append(value)
    return out[0], out[1]


@contextmanager
def open_session(args: argparse.Namespace, out=None) -> Iterator[tuple[Storage, object]]:
    """Yield (storage, client) for a command; the client is closed (and a LocalCluster stopped) after."""
    from cluster import ClusterOptions, open_client

    out = out if out is not None else sys.stdout
    options = ClusterOptions(scheduler=args.scheduler, scheduler_file=args.scheduler_file, n_workers=args.workers,
                             threads_per_worker=args.threads_per_worker, memory_limit=args.memory_limit)
    storage = storage_from_args(args)
    with open_client(options, out=out) as client:
        if client.cluster is not None:  # a LocalCluster: its workers log on this terminal
            from .runtime import quiet_contract_failures

            quiet_contract_failures(client)
        yield storage, client
