"""S3 requirements job: ``n_sites`` per (merchant_id, legal_country_iso) on Dask, streaming, no shuffle.

Recipe (kernels in :mod:`segment1b.s3_requirements`):

1. the S0 gate runs first (:func:`jobs.s0.run_s0`): no PASS flag, no read;
2. the client reads every part's footer (in a few threads): schema (E304) and row groups, before any data
   is read; row groups are grouped into *units* of at most ``unit_rows`` rows;
3. one task per unit (``s3-requirements-NNN-<token>``, largest first) reads only the needed columns of its
   row groups, checks them and run-length encodes them; the runs stay on the worker, and only a small
   summary task (``s3-summary-NNN-<token>``) comes back to the client;
4. the client stitches the units' boundary runs (pairs spanning parts), checks E303, and plans output
   parts of ``pairs_per_part`` pairs by global position (independent of input parts and workers);
5. one task per output part (``s3-write-NNN-<token>``) takes slices of the unit runs and writes
   ``part-NNNNN.parquet`` into the staging folder; the client publishes it write-once and writes the run
   report.

Nothing is staged before every check has passed, so a failing run publishes nothing.  The failure
reported is the first code of :data:`segment1b.s3_requirements.CHECK_ORDER` with the rows of every unit
that has it.

Command: ``segment1b requirements --data-root D --seed N --fingerprint F --parameter-hash H`` runs S0 and
S3 for a catalogue against the prepared tile weights (``segment1b run`` calls :func:`run_s3` itself).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Collection

from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import InputError, Segment1BError
from segment1b.identity import RunIdentity
from segment1b.s3_requirements import (READ_COLUMNS, STRING_COLUMNS, Stitched, UnitRuns, UnitSummary,
                                       check_footer_schema, first_failure, owned_runs, plan_output, reduce_unit,
                                       requirements_table, stitch, stitchable)
from segment1b.lease import Lease
from segment1b.storage import StagedFile, Storage, part_name, write_parquet_bytes

from .runtime import (Timing, Workers, WrittenReport, gather, publish, published_receipt, task_key, timed, token_of,
                      write_state_report)
from .s0 import run_s0

__all__ = ["run_s3", "plan_read_units", "ReadUnit", "reduce_task", "write_task", "WrittenPart", "register",
           "DEFAULT_UNIT_ROWS", "DEFAULT_PAIRS_PER_PART"]

DEFAULT_UNIT_ROWS = 2_000_000  # rows per read unit: ~100 MB of worker memory at most
DEFAULT_PAIRS_PER_PART = 1 << 20  # pairs per output part (~10 MB of Parquet)
_FOOTER_THREADS = 8
# sorted uint64 ids: delta encoding is faster to write and ~30 % smaller than dictionary/plain (measured)
ENCODINGS = {"merchant_id": "DELTA_BINARY_PACKED"}


@dataclass(frozen=True)
class ReadUnit:
    """Consecutive row groups of one part file: what one S3 task reads (a small picklable recipe)."""

    index: int
    part: str  # path relative to the data root
    row_groups: tuple[int, ...]
    row_offset: int  # row of the unit's first row within the part
    rows: int


def plan_read_units(parts: list[tuple[str, list[int]]], unit_rows: int) -> list[ReadUnit]:
    """Group each part's row groups (rows per row group, in order) into units of ≤ ``unit_rows`` rows.

    A row group larger than ``unit_rows`` is a unit on its own; units never span parts; empty row groups
    are skipped.

    >>> [(u.part, u.row_groups, u.row_offset) for u in plan_read_units([("a", [5, 5, 5]), ("b", [0])], 10)]
    [('a', (0, 1), 0), ('a', (2,), 10)]
    """
    units: list[ReadUnit] = []
    for part, sizes in parts:
        offset, group, group_rows, group_offset = 0, [], 0, 0
        for rg, rows in enumerate(sizes):
            if group and group_rows + rows > unit_rows:
                units.append(ReadUnit(len(units), part, tuple(group), group_offset, group_rows))
                group, group_rows = [], 0
            if rows:
                if not group:
                    group_offset = offset
                group.append(rg)
                group_rows += rows
            offset += rows
        if group:
            units.append(ReadUnit(len(units), part, tuple(group), group_offset, group_rows))
    return units


def reduce_task(storage: Storage, unit: ReadUnit, *, manifest_fingerprint: str,
                seed: int) -> tuple[UnitSummary, UnitRuns]:
    """Task: read one unit's columns and reduce it; contract failures are returned in the summary."""
    t0, c0 = time.perf_counter(), time.thread_time()
    where = storage.url(unit.part)
    try:
        table = storage.read_row_groups(unit.part, unit.row_groups, READ_COLUMNS, dataset_id="outlet_catalogue",
                                        read_dictionary=STRING_COLUMNS)
        summary, runs = reduce_unit(table, unit=unit.index, part=where, row_offset=unit.row_offset,
                                    manifest_fingerprint=manifest_fingerprint, seed=seed)
    except Segment1BError as exc:
        summary, runs = UnitSummary(unit=unit.index, part=where, failures=[exc]), UnitRuns.empty()
    summary.seconds, summary.cpu_seconds = time.perf_counter() - t0, time.thread_time() - c0
    return summary, runs


def summary_of(result: tuple[UnitSummary, UnitRuns]) -> UnitSummary:
    """Task: the small half of a reduce result (the runs stay on the worker)."""
    return result[0]


@dataclass(frozen=True)
class WrittenPart:
    """What an S3 write task staged: the part file's name, rows, size and SHA-256 (and the task's timing)."""

    part: str
    rows: int
    bytes: int
    sha256_hex: str
    timing: Timing = Timing()

    @property
    def staged(self) -> StagedFile:
        return StagedFile(self.part, self.bytes, self.sha256_hex)


def write_task(storage: Storage, staging: str, index: int, pieces: list[tuple]) -> WrittenPart:
    """Task: build output part ``index`` from slices and write it into the staging folder.

    ``pieces`` are ``(reduce result, lo, hi, continues, last_n)``: owned runs ``lo..hi-1`` of a unit (see
    :func:`segment1b.s3_requirements.owned_runs`).
    """
    import hashlib

    slices = []
    for result, lo, hi, continues, last_n in pieces:
        runs = owned_runs(result[1], continues=continues, last_n=last_n)
        slices.append(UnitRuns(runs.merchant_id[lo:hi], runs.country[lo:hi], runs.n_sites[lo:hi]))
    data = write_parquet_bytes(requirements_table(slices), dataset("s3_requirements"), encodings=ENCODINGS)
    name = part_name(index)
    storage.write_part(staging, name, data)
    return WrittenPart(name, sum(len(s) for s in slices), len(data), hashlib.sha256(data).hexdigest())


def _footer(storage: Storage, rel: str) -> tuple[str, list[int], Segment1BError | None]:
    try:
        meta = storage.parquet_metadata(rel, dataset_id="outlet_catalogue")
        check_footer_schema(meta.schema.to_arrow_schema(), path=storage.url(rel))
        return rel, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)], None
    except Segment1BError as exc:
        return rel, [], exc


def run_s3(storage: Storage, client, identity: RunIdentity, *, countries_with_weights: Collection[str], out=None,
           unit_rows: int = DEFAULT_UNIT_ROWS, pairs_per_part: int = DEFAULT_PAIRS_PER_PART,
           show: bool = True) -> dict[str, Any]:
    """Run S0 then S3 for one identity and publish ``s3_requirements`` with its run report.

    Parameters
    ----------
    storage : Storage
        The data root.
    client : distributed.Client
        Where the tasks run.
    identity : RunIdentity
        seed, manifest_fingerprint (the catalogue) and parameter_hash (the output partition).
    countries_with_weights : collection of str
        Countries that have tile weights (E303); see :func:`jobs.generate.countries_with_tiles`.
    out : text stream, optional
        Progress and result lines (``None``: stdout).
    unit_rows : int
        Largest read unit (rows); bounds worker memory, changes no output byte.
    pairs_per_part : int
        Pairs per output part; part of the output layout (keep the default for comparable bytes).
    show : bool
        Show progress bars.

    Returns
    -------
    dict
        The run report (also written to ``control/s3_requirements/.../s3_run_report.json``).

    Raises
    ------
    InputError
        ``E301`` (from S0), ``E302``, ``E303``, ``E304``, ``E305``, ``E306``, ``E308``, ``E314``: see
        :mod:`segment1b.s3_requirements`; ``E311`` for a catalogue without rows.  Nothing is published.
    BusyError
        ``E_LEASE_BUSY`` when another run holds the fingerprint's lease for longer than ``storage.lease_wait``.
    """
    scope = path_for("lease_segment", manifest_fingerprint=identity.manifest_fingerprint)
    with storage.lease(scope, out=out) as lease:  # `segment1b run` holds it already (re-entrant)
        return _run_s3(storage, client, identity, lease, countries_with_weights=countries_with_weights, out=out,
                       unit_rows=unit_rows, pairs_per_part=pairs_per_part, show=show)


class _Laps:
    """Wall seconds of the job's steps, in order (the report's ``timings_seconds``)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 4)
        self.last = now


def _run_s3(storage: Storage, client, identity: RunIdentity, lease: Lease, *, countries_with_weights: Collection[str],
            out, unit_rows: int, pairs_per_part: int, show: bool) -> dict[str, Any]:
    from cluster import reset_worker_memory_peaks

    out = out if out is not None else sys.stdout
    laps = _Laps()
    gate = run_s0(storage, manifest_fingerprint=identity.manifest_fingerprint, seed=identity.seed, out=out)
    laps.lap("s0_gate")
    target = path_for("s3_requirements", **identity.tokens)
    lease.sweep(target)  # staging of dead attempts: under the lease nobody else is alive
    done = _published_and_intact(storage, identity, target)
    if done is not None:  # resume: published by an earlier run of this identity, its report written last
        print(f"  S3 requirements: {done.get('rows', 0):,} pairs already published and intact; nothing to do",
              file=out)
        return {**done, "report_path": report_path("s3", **identity.tokens), "skipped": True}
    reset_worker_memory_peaks(client)
    catalogue = path_for("outlet_catalogue", seed=identity.seed, manifest_fingerprint=identity.manifest_fingerprint)
    parts, units = _plan_read_units(storage, catalogue, unit_rows)
    laps.lap("footers")
    # the token covers everything a task's result depends on, and this attempt (keys are never shared)
    token = token_of("s3", storage.root_url, identity.seed, identity.manifest_fingerprint, identity.parameter_hash,
                     unit_rows, pairs_per_part, lease.attempt)
    reduced, summaries_f = _submit_reduce(storage, client, identity, units, token)
    writes: dict[str, Any] = {}
    try:
        summaries = sorted(gather(client, summaries_f, "s3 requirements", out, show=show).values(),
                           key=lambda s: s.unit)
        laps.lap("reduce")
        stitched = _stitch(summaries, countries_with_weights)
        plan = plan_output(stitched.owned, pairs_per_part)
        laps.lap("stitch")
        staging = lease.staging_path(target)  # this attempt's: no other run writes into it or removes it
        _submit_writes(storage, client, staging, plan, reduced, stitched, token, writes)
        written = list(gather(client, writes, "s3 write", out, show=show).values())
    finally:
        # forget the keys now (synchronously), so that a rerun with the same keys recomputes instead of
        # finding these results (the unit runs also free worker memory here)
        client.cancel(list(reduced.values()) + list(summaries_f.values()) + list(writes.values()))
    laps.lap("write")
    receipt = publish(storage, "s3_requirements", staging, **identity.tokens, expected=[w.staged for w in written])
    lease.sweep(target)  # a killed client's task on a shared cluster may have finished into its dead folder
    laps.lap("publish")
    report = _write_report(storage, client, identity, laps, receipt, stitched, summaries, written,
                           {"catalogue_parts": len(parts), "read_units": len(units), "output_parts": len(plan)},
                           gate)
    print(f"  S3 requirements: {stitched.pairs:,} pairs, {stitched.sites:,} sites in "
          f"{len(stitched.sites_by_country)} countries -> {len(plan)} parts, {report.data['wall_seconds']:.2f} s",
          file=out)
    return {**report.data, "report_path": report.path}


def _plan_read_units(storage: Storage, catalogue: str, unit_rows: int) -> tuple[list[str], list[ReadUnit]]:
    """The catalogue's part files and read units, from the part footers (E304/E305/E311 before any task)."""
    parts = storage.parquet_parts(catalogue)
    if not parts:
        raise InputError("E305_PARQUET_UNREADABLE", "the outlet_catalogue partition has no part files",
                         dataset="outlet_catalogue", path=storage.url(catalogue))
    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(parts))) as pool:
        footers = list(pool.map(lambda rel: _footer(storage, rel), parts))
    failure = first_failure([f for _, _, f in footers if f is not None])
    if failure is not None:
        raise failure
    if not any(n for _, sizes, _ in footers for n in sizes):  # issue #14: refused before anything is staged
        raise InputError("E311_EMPTY_CATALOGUE", f"the outlet_catalogue partition has 0 rows in {len(parts)} part "
                         "files: there are no sites to place", dataset="outlet_catalogue",
                         path=storage.url(catalogue), hint="check the upstream export (seed and "
                         "manifest_fingerprint of the catalogue); S3 publishes nothing for an empty catalogue")
    return parts, plan_read_units([(rel, sizes) for rel, sizes, _ in footers], unit_rows)


def _submit_reduce(storage: Storage, client, identity: RunIdentity, units: list[ReadUnit],
                   token: str) -> tuple[dict[int, Any], dict[str, Any]]:
    """One reduce task per read unit (its runs stay on the worker) and one summary task for the client."""
    reduced: dict[int, Any] = {}
    summaries: dict[str, Any] = {}
    for u in units:
        key = task_key("s3", "requirements", index=u.index, token=token)
        reduced[u.index] = client.submit(reduce_task, storage, u, manifest_fingerprint=identity.manifest_fingerprint,
                                         seed=identity.seed, key=key, priority=u.rows)
        skey = task_key("s3", "summary", index=u.index, token=token)
        summaries[skey] = client.submit(summary_of, reduced[u.index], key=skey, priority=u.rows)
    return reduced, summaries


def _stitch(summaries: list[UnitSummary], countries_with_weights: Collection[str]) -> Stitched:
    """The units' boundary runs stitched; the first failure of any unit or of the stitch is raised."""
    failures = [f for s in summaries for f in s.failures]
    stitched = stitch(summaries, countries_with_weights=countries_with_weights) if stitchable(summaries) else None
    failure = first_failure(failures + (stitched.failures if stitched is not None else []))
    if failure is not None:
        raise failure
    return stitched


def _submit_writes(storage: Storage, client, staging: str, plan: list, reduced: dict[int, Any], stitched: Stitched,
                   token: str, writes: dict[str, Any]) -> None:
    """One write task per output part, into ``writes`` (key -> future), first parts first."""
    for j, pieces in enumerate(plan):
        key = task_key("s3", "write", index=j, token=token)
        args = [(reduced[u], lo, hi, stitched.continues[u], stitched.last_n.get(u)) for u, lo, hi in pieces]
        writes[key] = client.submit(timed(write_task), storage, staging, j, args, key=key, priority=-j)


def _write_report(storage: Storage, client, identity: RunIdentity, laps: _Laps, receipt: dict[str, str],
                  stitched: Stitched, summaries: list[UnitSummary], written: list[WrittenPart],
                  layout: dict[str, int], gate: dict[str, Any]) -> WrittenReport:
    """The S3 run report (contract §11); per-country rows are sites (S3 is not per-country work)."""
    countries = sorted(({"country_iso": c, "rows": s, "sites": s, "pairs": stitched.pairs_by_country[c]}
                        for c, s in stitched.sites_by_country.items()), key=lambda r: (-r["sites"], r["country_iso"]))
    return write_state_report(
        storage, "s3", identity.tokens, rows=stitched.pairs, receipts=[receipt],
        wall_seconds=time.perf_counter() - laps.start,
        task_cpu_seconds=sum(s.cpu_seconds for s in summaries) + sum(w.timing.cpu_s for w in written),
        workers=Workers.of(client), countries=countries, extra={
            "catalogue_rows": stitched.sites, "pairs": stitched.pairs, "sites": stitched.sites,
            "countries_with_sites": len(stitched.sites_by_country), **layout,
            "pairs_spanning_parts": sum(stitched.continues),
            "s0_receipt": {"partition_path": gate["receipt_path"],
                           "flag_sha256_hex": gate["receipt"]["flag_sha256_hex"]},
            "timings_seconds": laps.seconds,
            "task_seconds": {"reduce": round(sum(s.seconds for s in summaries), 4),
                             "write": round(sum(w.timing.wall_s for w in written), 4)},
            "countries_note": "S3 is one pass over merchant-major parts, not per-country work: per-country rows are "
                              "sites; no per-country seconds"})


def _published_and_intact(storage: Storage, identity: RunIdentity, target: str) -> dict[str, Any] | None:
    """The S3 run report when ``s3_requirements`` is published with the digest its report recorded."""
    receipt = published_receipt(storage, "s3", identity.tokens, target)
    if receipt is None or not storage.is_published(target):
        return None
    if storage.partition_digest(target) != receipt["sha256_hex"]:
        return None  # changed after publication: recomputing then refuses it (E_IMMUTABLE_...) with both digests
    return storage.read_json(report_path("s3", **identity.tokens))


# -- command line --------------------------------------------------------------------------------------

def register(subparsers) -> None:
    """``segment1b requirements``: S0 + S3 for one catalogue against prepared tile weights."""
    from jobs import argtypes
    from jobs.session import add_cluster_options, add_lease_options, add_root_options

    p = subparsers.add_parser("requirements", help="S0 gate + S3 requirements for an outlet catalogue",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_root_options(p)
    p.add_argument("--seed", type=argtypes.seed, required=True, help="seed of the catalogue partition")
    p.add_argument("--fingerprint", type=argtypes.hex64, required=True, metavar="HEX64",
                   help="manifest_fingerprint of the catalogue")
    p.add_argument("--parameter-hash", type=argtypes.hex64, required=True, metavar="HEX64",
                   help="the prepared tile weights (countries with weights) and the output partition")
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace, out=None) -> int:
    from jobs.generate import countries_with_tiles
    from jobs.session import open_session

    identity = RunIdentity(args.seed, args.fingerprint, args.parameter_hash)
    with open_session(args, out=out) as (storage, client):
        weights = countries_with_tiles(storage, identity.parameter_hash)
        run_s3(storage, client, identity, countries_with_weights=weights, out=out)
    return 0
