"""S7 synthesis and S8 ``site_locations`` egress, one Dask task per merchant-major part.

Graph: one task ``s7-synth-NNN-<token>`` per part ``NNN`` of S5/S6.  It reads S5 part ``NNN`` (4 columns)
and S6 part ``NNN`` (6 columns), the outlet-catalogue row groups whose merchant_id statistics overlap the
part's merchant range, runs :func:`segment1b.s7_synthesis.synthesize_part`, and writes S7 part ``NNN`` and
``site_locations`` part ``NNN`` into their staging folders.  Why per part and not per country: see
:mod:`segment1b.s7_synthesis`.  When every task succeeded both partitions are published (write-once);
on any failure the staging folders are removed and nothing is published.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster import reset_worker_memory_peaks
from segment1b.contracts import dataset, path_for
from segment1b.errors import IntegrityError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, utc_now
from segment1b.keys import iso_of, iso_u16
from segment1b.s7_synthesis import CATALOGUE_COLUMNS, S5_COLUMNS, S6_COLUMNS, synthesize_part
from segment1b.s8_egress import ENCODINGS, site_locations_part
from segment1b.lease import Lease
from segment1b.storage import StagedFile, Storage, part_name, write_parquet_bytes

from .parameters import load_parameters
from .parts import (CatalogueIndex, file_stamps, merchant_max, merchant_ranges, part_files,
                    read_catalogue_keys, read_part)
from .runtime import Timing, Workers, WrittenReport, gather, has_receipt, task_key, timed, token_of, write_state_report
from .tiles import RowGroupRef

__all__ = ["run_s7_s8"]

S7, S8 = "s7_site_synthesis", "site_locations"
STATE_OF = {S7: "s7", S8: "s8"}


@dataclass(frozen=True)
class SynthPart:
    """What one S7/S8 task wrote: part number, rows, rows per country, the staged files by dataset."""

    part: int
    rows: int
    countries: dict[str, int]
    files: dict[str, StagedFile]
    timing: Timing = Timing()


def _synth_part(storage: Storage, part: int, s5_rel: str | None, s6_rel: str | None,
                cat_refs: list[RowGroupRef],
                lo: int, hi: int, grid: Grid, staging7: str, staging8: str) -> SynthPart:
    """Task: S7 and S8 part ``part``; returns rows, rows per country and the files written."""
    s5 = read_part(storage, s5_rel, dataset("s5_site_tile_assignment").schema, S5_COLUMNS,
                   "s5_site_tile_assignment")
    s6 = read_part(storage, s6_rel, dataset("s6_site_jitter").schema, S6_COLUMNS, "s6_site_jitter")
    catalogue = read_catalogue_keys(storage, cat_refs, lo, hi).select(list(CATALOGUE_COLUMNS))
    s7 = synthesize_part(s5, s6, catalogue, grid)
    s8 = site_locations_part(s7)
    file7 = storage.write_part(staging7, part_name(part), write_parquet_bytes(s7, dataset(S7), encodings=ENCODINGS))
    file8 = storage.write_part(staging8, part_name(part), write_parquet_bytes(s8, dataset(S8), encodings=ENCODINGS))
    codes, counts = np.unique(iso_u16(s7["legal_country_iso"]), return_counts=True)
    countries = {iso_of(c): int(n) for c, n in zip(codes, counts)}
    return SynthPart(part, s7.num_rows, countries, {S7: file7, S8: file8})


def run_s7_s8(storage: Storage, client, ident: RunIdentity, *, out=None) -> dict[str, Any]:
    """Run S7 and S8 for a run identity and publish ``s7_site_synthesis`` and ``site_locations``.

    Computes eagerly on the cluster.  Already published (both) → nothing to do.

    Parameters
    ----------
    storage : Storage
    client : distributed.Client
    ident : RunIdentity
        seed, manifest_fingerprint, parameter_hash (run_id is not used: S7/S8 draw no random numbers).
    out : text stream, optional
        Progress display (default stdout).

    Returns
    -------
    dict
        ``{"s7": {...}, "s8": {...}}`` with rows, seconds, report path and receipt (or ``{"skipped": True}``).

    Raises
    ------
    IntegrityError
        ``E701``/``E702``/``E703``/``E707``/``E708`` from the parts (the first failure, with its rows);
        ``E701``/``E702`` when S5 or S6 is not published, ``E708`` when the catalogue is not.
    BusyError
        ``E_LEASE_BUSY`` when another run holds the fingerprint's lease for longer than ``storage.lease_wait``.
    """
    scope = path_for("lease_segment", manifest_fingerprint=ident.manifest_fingerprint)
    with storage.lease(scope, out=out) as lease:  # `segment1b run` holds it already (re-entrant)
        return _run_s7_s8(storage, client, ident, lease, out=out)


def _run_s7_s8(storage: Storage, client, ident: RunIdentity, lease: Lease, *, out) -> dict[str, Any]:
    out = out if out is not None else sys.stdout
    t_start = time.perf_counter()
    started = utc_now()
    targets = {S7: path_for(S7, **ident.tokens),
               S8: path_for(S8, seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)}
    lease.sweep(*targets.values())  # staging of dead attempts: under the lease nobody else is alive
    # done only when both are published and both run reports (written last) hold their receipts: a run
    # killed in between computes the parts again, publishing then settles (same bytes) and writes the reports
    if all(storage.is_published(t) and has_receipt(storage, STATE_OF[ds], ident.tokens, t)
           for ds, t in targets.items()):
        print(f"  s7-s8: {S7} and {S8} already published; nothing to do", file=out)
        return {"s7": {"skipped": True}, "s8": {"skipped": True}}
    inputs = _published_inputs(storage, ident)
    # this attempt's staging folders: no other run writes into them or removes them
    staging = {ds: lease.staging_path(t) for ds, t in targets.items()}
    reset_worker_memory_peaks(client)
    futures = _submit_parts(storage, client, ident, inputs, staging, lease.attempt)
    try:
        results = gather(client, futures, "s7-s8", out)
        receipts = {ds: {"partition_path": targets[ds],
                         "sha256_hex": storage.publish(staging[ds], targets[ds], ds,
                                                       expected=[r.files[ds] for r in results.values()])}
                    for ds in (S7, S8)}
    except BaseException:
        for folder in staging.values():
            storage.discard(folder)  # best effort: a failing cleanup must not hide the failure itself
        raise
    lease.sweep(*targets.values())  # a killed client's task on a shared cluster may have finished into its folder
    wall = time.perf_counter() - t_start
    records = sorted(results.values(), key=lambda r: r.part)
    workers = Workers.of(client)
    summary: dict[str, Any] = {}
    for ds, receipt in receipts.items():
        report = _write_report(storage, ds, ident, records, receipt, wall, workers, started,
                               catalogue_rows=inputs.catalogue.rows)
        summary[STATE_OF[ds]] = {"rows": report.data["rows"], "seconds": wall, "report": report.path,
                                 "receipt": receipt}
    return summary


@dataclass(frozen=True)
class _Inputs:
    """The published S5/S6 parts (part number -> path), the merchant range of each part, the catalogue and the
    grid of the parameter_hash."""

    grid: Grid
    parts5: dict[int, str]
    parts6: dict[int, str]
    indices: list[int]
    ranges: list[tuple[int, int]]
    catalogue: CatalogueIndex
    catalogue_rel: str


def _published_inputs(storage: Storage, ident: RunIdentity) -> _Inputs:
    """S5, S6 and the catalogue as published (E702/E701/E708 when one is not), split into merchant ranges."""
    rel5, rel6 = path_for("s5_site_tile_assignment", **ident.tokens), path_for("s6_site_jitter", **ident.tokens)
    if not storage.is_published(rel5):
        raise IntegrityError("E702_ROW_EXTRA",
                             "s5_site_tile_assignment is not published, so no S6 row has a site",
                             dataset=S7, path=storage.url(rel5), hint="run S4-S6 first (`segment1b run`)")
    if not storage.is_published(rel6):
        raise IntegrityError("E701_ROW_MISSING",
                             "s6_site_jitter is not published, so no S5 site has a jitter row",
                             dataset=S7, path=storage.url(rel6),
                             hint="run S6 first (`segment1b run` resumes it)")
    cat_rel = path_for("outlet_catalogue", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    if not storage.is_published(cat_rel):
        raise IntegrityError("E708_1A_COVERAGE_FAIL",
                             "the outlet catalogue is not published, so coverage cannot "
                             "be checked", dataset=S7, path=storage.url(cat_rel))
    grid = load_parameters(storage, ident.parameter_hash).grid  # E310 when the record is not the hash's
    parts5, _ = part_files(storage, rel5)
    parts6, _ = part_files(storage, rel6)
    indices = sorted(set(parts5) | set(parts6)) or [0]  # no sites at all: one empty part, still checked
    maxima = [merchant_max(storage, parts5[p], "s5_site_tile_assignment") if p in parts5 else
              merchant_max(storage, parts6[p], "s6_site_jitter") if p in parts6 else None for p in indices]
    return _Inputs(grid, parts5, parts6, indices, merchant_ranges(maxima), CatalogueIndex(storage, cat_rel), cat_rel)


def _submit_parts(storage: Storage, client, ident: RunIdentity, inputs: _Inputs, staging: dict[str, str],
                  attempt: str) -> dict[str, Any]:
    """One ``s7-synth-NNN`` task per part, the largest first; keys unique to this attempt and these inputs."""
    files = sorted(inputs.parts5.values()) + sorted(inputs.parts6.values()) + \
        storage.parquet_parts(inputs.catalogue_rel)
    tok = token_of(S7, storage.root_url, *sorted(ident.tokens.items()), *file_stamps(storage, files), attempt)
    futures: dict[str, Any] = {}
    for p, (lo, hi) in zip(inputs.indices, inputs.ranges):
        size = storage.fs.size(storage.abspath(inputs.parts5[p])) if p in inputs.parts5 else 0
        key = task_key("s7", "synth", None, p, tok)
        futures[key] = client.submit(timed(_synth_part), storage, p, inputs.parts5.get(p), inputs.parts6.get(p),
                                     inputs.catalogue.refs(lo, hi), lo, hi, inputs.grid, staging[S7], staging[S8],
                                     key=key, priority=int(size))
    return futures


def _write_report(storage: Storage, ds: str, ident: RunIdentity, records: list[SynthPart], receipt: dict[str, str],
                  wall: float, workers: Workers, started: str, *, catalogue_rows: int) -> WrittenReport:
    rows_by_country: dict[str, int] = defaultdict(int)
    secs_by_country: dict[str, float] = defaultdict(float)
    for r in records:
        for c, n in r.countries.items():
            rows_by_country[c] += n
            # S7 cost is linear in rows and the same for every country (no geometry), so a part's time is
            # shared among its countries by rows
            secs_by_country[c] += r.timing.wall_s * n / max(r.rows, 1)
    return write_state_report(
        storage, STATE_OF[ds], ident.tokens, rows=sum(r.rows for r in records), receipts=[receipt],
        wall_seconds=wall, task_cpu_seconds=sum(r.timing.cpu_s for r in records), workers=workers,
        countries=_country_rows(rows_by_country, secs_by_country), started_utc=started,
        extra={"parts": len(records), "catalogue_rows": catalogue_rows,
               "rows_by_country": dict(sorted(rows_by_country.items())),
               "country_seconds_basis": "part wall time shared among the part's countries by rows",
               "part_timings": [{"part": r.part, "rows": r.rows, "seconds": round(r.timing.wall_s, 4)}
                                for r in records]})


def _country_rows(rows: dict[str, int], secs: dict[str, float]) -> list[dict[str, Any]]:
    """Per-country rows and seconds, slowest first (contract §11)."""
    table = [{"country_iso": c, "rows": rows[c], "seconds": round(secs.get(c, 0.0), 4)} for c in rows]
    return sorted(table, key=lambda t: (-t["seconds"], t["country_iso"]))
