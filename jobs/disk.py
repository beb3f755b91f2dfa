"""The disk-space check before S4: refuse a run whose outputs cannot fit on a local data root (issue 17).

S4-S8 and the RNG event logs are most of what a run writes, and all of it is proportional to the sites.
:func:`disk_need` estimates the bytes still to be written from per-site constants measured on published
runs (both log forms), :func:`check_disk_space` compares them with the free space of a local root and
raises ``E_DISK_SPACE`` before any S4 task runs, instead of a run that fills the disk hours later and ends in
``E_PUBLISH_IO``.  Object stores have no free-space notion: they are not checked.
"""

from __future__ import annotations

import os
import shutil

from dask.utils import format_bytes

from segment1b.contracts import path_for
from segment1b.errors import PublishError
from segment1b.identity import RunIdentity
from segment1b.rng import S5_LABEL, S6_LABEL
from segment1b.rng_log_files import check_log_form
from segment1b.storage import Storage

__all__ = ["DATASET_BYTES_PER_SITE", "LOG_BYTES_PER_SITE", "DISK_SAFETY", "disk_need", "free_bytes",
           "check_disk_space"]

# Bytes per site on disk, measured on the reference run of the 5m grid (32 208 sites; Parquet zstd) and
# rounded up; x1000 (issue 17: 2.7 GB of datasets for 32.2 M sites, 84 B/site) agrees with their sum.
DATASET_BYTES_PER_SITE = {"s4_alloc_plan": 9, "s5_site_tile_assignment": 10, "s6_site_jitter": 27,
                          "s7_site_synthesis": 24, "site_locations": 22}
# RNG event logs per site (S5: one event per site; S6: 1.1-1.2 attempts per site), same run, both forms:
# plain 648 and 767 B/site, zstd 43 and 65 B/site (level 1, 64 Ki events per frame).
LOG_BYTES_PER_SITE = {"zstd": {S5_LABEL: 48, S6_LABEL: 72}, "plain": {S5_LABEL: 680, S6_LABEL: 810}}
# Margin over the estimate: staging, a rerun's overlap, reports and the page cache of the free-space figure.
DISK_SAFETY = 1.2


def disk_need(storage: Storage, ident: RunIdentity, sites: int, rng_logs: str, *,
              datasets: tuple[str, ...] = tuple(DATASET_BYTES_PER_SITE),
              labels: tuple[str, ...] = (S5_LABEL, S6_LABEL)) -> dict[str, int]:
    """Bytes each of ``datasets`` and of the event logs of ``labels`` not yet published will take for
    ``sites`` sites.

    Examples: 1 M sites with zstd logs need about 92 MB of datasets and 120 MB of logs (before the safety
    margin); with plain logs the logs are about 1.5 GB.
    """
    check_log_form(rng_logs)
    need = {}
    for ds in datasets:
        rel = (path_for(ds, seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint) if ds == "site_locations"
               else path_for(ds, **ident.tokens))
        if not storage.is_published(rel):
            need[ds] = DATASET_BYTES_PER_SITE[ds] * sites
    for label in labels:
        per_site = LOG_BYTES_PER_SITE[rng_logs][label]
        if not storage.is_published(path_for("rng_events", substream_label=label, **ident.log_tokens)):
            need[f"rng_events/{label}"] = per_site * sites
    return need


def free_bytes(path: str) -> int:
    """Free bytes for an unprivileged writer on the file system holding ``path`` (its nearest existing parent)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def check_disk_space(storage: Storage, need: dict[str, int], *, step: str = "S4-S8") -> int:
    """Raise ``E_DISK_SPACE`` when a local root has less free space than ``need`` (× :data:`DISK_SAFETY`).

    Returns the free bytes found (-1 for an object store, which is not checked).

    Raises
    ------
    PublishError
        ``E_DISK_SPACE`` naming the root, the free and needed bytes and what needs them.
    """
    if not storage.is_local or not need:
        return -1
    free = free_bytes(storage.abspath(""))
    total = int(sum(need.values()) * DISK_SAFETY)
    if free < total:
        rows = [{"output": name, "bytes": n} for name, n in sorted(need.items(), key=lambda kv: -kv[1])]
        raise PublishError("E_DISK_SPACE", f"the data root has {format_bytes(free)} ({free} bytes) free, but {step} of "
                           f"this run will write about {format_bytes(total)} ({total} bytes, estimate with a "
                           f"{DISK_SAFETY:g}x margin)",
                           path=storage.root_url, rows=rows,
                           hint="free space or use a larger data root; `--rng-logs zstd` (the default) writes "
                                "the RNG logs at about a tenth of the plain size")
    return free
