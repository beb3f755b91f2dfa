"""Whole `segment1b run` pipelines on real reference data, small enough for tests.

The S1/S2 tile data of a coarse grid (Natural Earth countries, population proxy) is prepared once per
test process into a folder under /tmp that any user can read (the read-only tests run a subprocess as
an unprivileged user); every run then starts from a fresh data root holding a copy of it, so runs never
see each other's catalogue, requirements or logs.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile

from segment1b.contracts import path_for
from segment1b.storage import Storage

GRID = "30m"  # 61 552 tiles in 189 countries: prepared in about 7 s
SEED = 42
SCALE = "tiny"  # 1 000 merchants, about 2 100 sites
# the datasets a run publishes (the RNG logs carry run_id and wall-clock stamps, so they are not compared)
RUN_DATASETS = ("outlet_catalogue", "s3_requirements", "s4_alloc_plan", "s5_site_tile_assignment",
                "s6_site_jitter", "s7_site_synthesis", "site_locations")

_prepared: dict[str, tuple[str, dict]] = {}


def prepared_root(client, grid: str = GRID) -> tuple[str, dict]:
    """A data root with S1/S2 of ``grid`` published (built once per process); and the prepare summary."""
    from jobs.prepare import prepare

    if grid not in _prepared:
        root = tempfile.mkdtemp(prefix=f"segment1b-prepared-{grid}-", dir="/tmp")
        atexit.register(shutil.rmtree, root, True)
        os.chmod(root, 0o755)
        summary = prepare(Storage(root), client, grid=grid, out=io.StringIO(), show_progress=False)
        _prepared[grid] = (root, summary)
    return _prepared[grid]


def fresh_root(prepared: str, dest: str, *, link: bool = True) -> str:
    """``dest`` holding only the prepared tile data of ``prepared`` (hard links unless ``link`` is false).

    Hard-linked files are shared with ``prepared``: never change their permissions or contents in place
    (the storage layer never does: it writes a new file and renames it over the old one).  Lease files
    (``control/lease``) are not copied: a root's leases are its own (a lock on a shared file would make
    runs on two roots wait for each other).
    """
    shutil.rmtree(dest, ignore_errors=True)
    copy = os.link if link else shutil.copy2
    shutil.copytree(prepared, dest, copy_function=copy, ignore=_leases)
    return dest


def _leases(folder: str, names: list[str]) -> list[str]:
    return ["lease"] if folder.rstrip("/").endswith("/control") else []


def dataset_digests(storage: Storage, seed: int, fingerprint: str, parameter_hash: str) -> dict[str, str | None]:
    """Partition digest of every dataset of a run (``None`` when it is not published)."""
    tokens = {"seed": seed, "manifest_fingerprint": fingerprint, "parameter_hash": parameter_hash}
    out: dict[str, str | None] = {}
    for ds in RUN_DATASETS:
        keys = ("seed", "manifest_fingerprint") if ds in ("outlet_catalogue", "site_locations") else tokens
        rel = path_for(ds, **{k: tokens[k] for k in keys})
        out[ds] = storage.partition_digest(rel) if storage.is_published(rel) else None
    return out


def visible_partitions(storage: Storage, dataset_id: str) -> list[str]:
    """Every non-hidden path under a dataset's folder (a published partition or a half-written one)."""
    base = path_for(dataset_id, seed=0, manifest_fingerprint="0" * 64, parameter_hash="0" * 64) \
        if dataset_id not in ("outlet_catalogue", "site_locations") else \
        path_for(dataset_id, seed=0, manifest_fingerprint="0" * 64)
    root = base.split("/seed=")[0]
    return storage.list_files(root)


def run_request(**overrides):
    from jobs.pipeline import RunRequest

    return RunRequest(**{"seed": SEED, "scale": SCALE, "grid": GRID, **overrides})


def run(storage: Storage, client, **overrides):
    """``segment1b run`` in this process on ``client``; returns the RunSummary."""
    from jobs.pipeline import run_pipeline

    return run_pipeline(storage, client, run_request(**overrides), out=io.StringIO())


def passed_run(client, folder: str) -> tuple[Storage, object]:
    """A fresh copy of the prepared root in ``folder``, one undisturbed run on it (it must pass): (storage,
    RunSummary)."""
    prepared, _ = prepared_root(client)
    storage = Storage(fresh_root(prepared, os.path.join(folder, "root")))
    summary = run(storage, client)
    assert summary.passed
    return storage, summary
