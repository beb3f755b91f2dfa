"""Shared fixtures: Dask clients and temporary data roots.

Geometry fixtures (tiny countries, antimeridian, holes) live in tests/geo_fixtures.py.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest


def pytest_report_header(config):
    import dask
    import pyarrow
    import shapely

    return (f"numpy {np.__version__}, pyarrow {pyarrow.__version__}, dask {dask.__version__}, "
            f"shapely {shapely.__version__} (GEOS {shapely.geos_version_string}), cpus {os.cpu_count()}")


def _local_client(n_workers: int):
    from distributed import Client, LocalCluster

    # the scheduler's HTTP server would otherwise take port 8787 (warnings when several clusters run)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40, memory_limit="4GiB",
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    return cluster, Client(cluster)


@pytest.fixture(scope="session")
def client():
    """A 2-worker process LocalCluster shared by the session."""
    cluster, c = _local_client(2)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="session")
def client1():
    """A 1-worker LocalCluster, for worker-count determinism checks."""
    cluster, c = _local_client(1)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def data_root(tmp_path):
    """An empty local data root."""
    root = tmp_path / "root"
    root.mkdir()
    return str(root)


@pytest.fixture
def storage(data_root):
    from segment1b.storage import Storage

    return Storage(data_root)


sys.path.insert(0, os.path.dirname(__file__))  # tests import their helper modules (geo_fixtures) directly
