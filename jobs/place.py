"""S4 allocation → S5 site→tile → S6 jitter over country work units, published merchant-major.

Graph (all keys readable on the dashboard):

* ``s4-weights-<ISO>``: once per country, read the country's tile weights (two columns, only its row
  groups) and keep the sorted prefix of its ``2·max(n)`` heaviest tiles; check those tiles exist in
  ``tile_index`` reading only the ``tile_id`` column of the row groups that can hold them.
* per unit (country, part, chunk): one task runs S4 → S5 → S6 back to back (each step only feeds the next,
  so they are fused; each still times itself).  Its key names the last state run: ``s6-jitter-<ISO>-<k>``
  (``s4-alloc-…`` or ``s5-assign-…`` with ``--through s4``/``s5``).  Its arguments describe its pairs
  (country, merchant range, counts: :class:`jobs.units.Segment`) and where its part's pairs are; it takes
  them from the part's pairs, which a worker reads from ``s3_requirements`` once for all the part's units
  it runs (only the row groups of the part's merchant range, :mod:`jobs.requirement_pairs`).  So no per-pair
  array is held by the client or travels through the scheduler (issue 17: at x1000 they were ~280 MB of
  task arguments).
* per output part: ``s4-write-<p>``, ``s5-write-<p>``, ``s6-write-<p>`` gather the units of that part,
  sort merchant-major and write the Parquet part (and the RNG event JSONL part) into staging.

The tasks live in :mod:`jobs.place_tasks`; this module plans, submits, publishes and reports.

Parts are scheduled in order (priorities), so a worker holds about one part of results at a time:
memory is bounded by the part size, not by the dataset.  Every draw is keyed by (merchant, country,
site), never by unit, worker or retry, so the bytes do not depend on any of them.

Resume: each finished part leaves a small progress record (rows, counts, every file it wrote with its size
and digest) in its attempt's progress folder; staging and progress folders belong to one attempt (the
fingerprint's lease holder, issue 14).  A rerun under the same run_id adopts the finished parts of dead
attempts, checked file by file (:mod:`jobs.place_progress`), and skips parts whose files are all there.
Publishing checks each staging folder holds exactly the recorded files.  A state counts as done only when
its dataset and event log are published *and* its run report holds the receipt; a run killed between those
steps finishes them (publishing settles on the same bytes), then writes the RNG trace and removes the
progress records.
"""

from __future__ import annotations

import json
import posixpath
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from segment1b import rng
from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, build_commit, utc_now
from segment1b.lease import Lease
from segment1b.rng_events import audit_record, jsonl_lines, trace_record
from segment1b.rng_log_files import DEFAULT_LOG_FORM, check_log_form
from segment1b.storage import Storage, part_name

from .footprint import worker_memory as _worker_memory
from .place_progress import (adopt_finished_parts, drop_progress, expected_files, finished_parts, part_records,
                             progress_folder, recorded_parts)
from .place_tasks import SPECS, STATES, PartRecord, UnitTiming, country_prefix, place_unit, write_part
from .requirement_pairs import Pairs, PartRead, part_reads, read_pairs
from .runtime import Workers, WrittenReport, gather, has_receipt, release_freed_memory, task_key, token_of, \
    write_state_report
from .tiles import country_row_groups
from .units import DEFAULT_PART_SITES, UNIT_BYTES_PER_SITE, Part, Unit, plan_layout

__all__ = ["PlaceConfig", "run_place", "STATES", "DATASET_OF"]

DATASET_OF = {s: SPECS[s].dataset for s in STATES}
LABEL_OF = {s: SPECS[s].label for s in STATES if SPECS[s].label}

# Share of a worker thread's memory limit one unit may use at its peak (see _memory_bound_sites).
MEMORY_FRACTION_PER_UNIT = 0.25


@dataclass(frozen=True)
class PlaceConfig:
    """Sizing of parts and units, and the RNG log form (none of it changes a byte of a dataset except
    ``part_sites``; ``rng_logs`` only changes the form of the event log files, not their lines)."""

    part_sites: int = DEFAULT_PART_SITES
    max_unit_sites: int = 250_000
    min_unit_sites: int = 2_000
    skew: float = 4.0
    #: event parts as ``part-NNNNN.jsonl.zst`` ("zstd", the default) or ``part-NNNNN.jsonl`` ("plain")
    rng_logs: str = DEFAULT_LOG_FORM

    def __post_init__(self):
        check_log_form(self.rng_logs)


@dataclass(frozen=True)
class Attempt:
    """What this attempt of S4-S6 must write, and where (its own staging and progress folders).

    ``staging[state][role]`` (role ``data`` or ``events``) is None when that dataset or log is published
    already: its parts are not written.
    """

    states: tuple[str, ...]
    targets: dict[str, str]  # state -> dataset partition
    ev_targets: dict[str, str]  # state -> event log partition (S5, S6)
    to_write: list[str]  # states not finished (published *and* reported)
    staging: dict[str, dict[str, str | None]]
    progress: str
    adopted: int  # progress records of dead attempts adopted


@dataclass(frozen=True)
class Work:
    """The plan of S4-S6 for this attempt: parts, units, the parts finished already and the units to run, and
    where each part's pairs are (the units describe their pairs; nothing here holds one)."""

    parts: list[Part]
    done_parts: set[int]
    todo_parts: list[Part]
    live_units: list[Unit]
    part_reads: dict[int, PartRead]  # where each part's pairs are in s3_requirements (footers only)


# ---------------------------------------------------------------------------------------------------------
# the job

def run_place(storage: Storage, client, ident: RunIdentity, grid: Grid, countries_sha256: str, *,
              through: str = "s6", config: PlaceConfig = PlaceConfig(), out=None) -> dict[str, Any]:
    """Run S4 (and S5, S6 when ``through`` says so) and publish their datasets, logs and run reports.

    Returns a summary per state (rows, seconds, report path).  Computes eagerly on the cluster, under the
    fingerprint's lease (``segment1b run`` holds it already; re-entrant).
    """
    scope = path_for("lease_segment", manifest_fingerprint=ident.manifest_fingerprint)
    with storage.lease(scope, out=out) as lease:
        return _run_place(storage, client, ident, grid, countries_sha256, lease, through=through, config=config,
                          out=out)


def _run_place(storage: Storage, client, ident: RunIdentity, grid: Grid, countries_sha256: str, lease: Lease, *,
               through: str, config: PlaceConfig, out) -> dict[str, Any]:
    out = out if out is not None else sys.stdout
    if through not in STATES:
        raise ValueError(f"through must be one of {STATES}, got {through!r}")
    t_start = time.perf_counter()
    started = utc_now()
    attempt = _attempt(storage, ident, lease, STATES[: STATES.index(through) + 1], config.rng_logs)
    if not attempt.to_write:
        return _already_published(storage, lease, ident, attempt, out)
    _check_parameters(storage, ident.parameter_hash, grid, countries_sha256)
    work = _plan_work(storage, client, ident, attempt, config, out)
    if "s5" in attempt.to_write or "s6" in attempt.to_write:
        _write_audit_once(storage, ident)
    # the data root is in the token: a quick rerun elsewhere must never get this run's results back
    tok = token_of(storage.root_url, ident.run_id, ident.parameter_hash, through, lease.attempt)
    futures: dict[str, Any] = {}
    stage_of: dict[str, str] = {}
    prefixes = _submit_prefixes(storage, client, ident, work, tok, futures, stage_of)
    unit_futs = _submit_units(storage, client, ident, grid, countries_sha256, through, work, prefixes, tok,
                              futures, stage_of)
    _submit_writers(storage, client, ident, attempt, work, unit_futs, tok, futures, stage_of, config.rng_logs)
    try:
        gather(client, futures, "s4-s6", out, stages=stage_of, fetch=set())
    finally:
        client.cancel(list(futures.values()))  # release results now, not when the futures are collected
    summary = _publish_and_report(storage, client, ident, attempt, work, time.perf_counter() - t_start, started)
    drop_progress(storage, lease, ident, attempt.progress)
    # again: a task of a killed client on a shared cluster may have finished into its dead attempt's folders
    lease.sweep(*attempt.targets.values(), *attempt.ev_targets.values())
    return summary


def _attempt(storage: Storage, ident: RunIdentity, lease: Lease, states: tuple[str, ...], log_form: str) -> Attempt:
    """What is left to write, this attempt's folders, and the finished parts of dead attempts adopted."""
    tokens = ident.tokens
    targets = {s: path_for(DATASET_OF[s], **tokens) for s in states}
    ev_targets = {s: path_for("rng_events", substream_label=LABEL_OF[s], **ident.log_tokens)
                  for s in states if s in LABEL_OF}
    # A state is done when its dataset (and event log) is published and its run report, written last, holds
    # the receipt: a run killed between those steps is finished here, never skipped half-way (S9 needs both).
    need = {s: {"data": not storage.is_published(targets[s]),
                "events": s in ev_targets and not storage.is_published(ev_targets[s])} for s in states}
    to_write = [s for s in states if need[s]["data"] or need[s]["events"]
                or not has_receipt(storage, s, tokens, targets[s])]
    # This attempt's staging folders (a dataset or log that is already published gets none: its parts are
    # not written) and progress records; the finished parts of this run's dead attempts are adopted first.
    progress = progress_folder(ident, lease.attempt)
    staging = {s: {"data": lease.staging_path(targets[s]) if need[s]["data"] else None,
                   "events": lease.staging_path(ev_targets[s]) if need[s]["events"] else None} for s in states}
    adopted = adopt_finished_parts(storage, lease, ident, progress, staging,
                                   {s: {"data": targets[s], "events": ev_targets.get(s)} for s in states}, log_form)
    lease.sweep(*targets.values(), *ev_targets.values())  # what was not adopted: under the lease nobody is alive
    return Attempt(states, targets, ev_targets, to_write, staging, progress, adopted)


def _already_published(storage: Storage, lease: Lease, ident: RunIdentity, attempt: Attempt, out) -> dict[str, Any]:
    """Every state is published and reported: finish the trace if a killed run left it, then drop progress."""
    labels = {LABEL_OF[s] for s in attempt.states if s in LABEL_OF}
    if not labels <= _trace_labels(storage, ident):  # killed after the run reports, before the trace
        _write_trace(storage, ident, attempt.progress, recorded_parts(storage, attempt.progress, STATES))
    drop_progress(storage, lease, ident, attempt.progress)  # the last step of a finished run
    print(f"  s4-s6: {', '.join(DATASET_OF[s] for s in attempt.states)} already published; nothing to do", file=out)
    return {s: {"skipped": True} for s in attempt.states}


def _plan_work(storage: Storage, client, ident: RunIdentity, attempt: Attempt, config: PlaceConfig, out) -> Work:
    """Parts (a layout constant) and units (sized to the workers' memory) of the requirements; parts whose
    files this attempt holds already (adopted from a dead one) are not run again.

    The requirement pairs are read and dropped here: what is returned holds nothing per pair, and their pages
    are given back before the tasks are submitted (issue 17: the client also hosts the scheduler).
    """
    max_unit = min(config.max_unit_sites, _memory_bound_sites(client))
    pairs = _read_requirements(storage, ident)
    parts, units = plan_layout(pairs.merchant_id, pairs.country, pairs.n_sites, part_sites=config.part_sites,
                               max_unit_sites=max_unit, min_unit_sites=config.min_unit_sites, skew=config.skew,
                               workers=len(client.scheduler_info()["workers"]))
    del pairs
    release_freed_memory()
    done_parts = finished_parts(storage, attempt.progress, attempt.to_write, attempt.staging, len(parts))
    if attempt.adopted and done_parts:
        print(f"  s4-s6: {len(done_parts)} of {len(parts)} parts finished by an earlier attempt are reused", file=out)
    todo_parts = [p for p in parts if p.index not in done_parts]
    todo_idx = {p.index for p in todo_parts}
    return Work(parts, done_parts, todo_parts, [u for u in units if u.part in todo_idx],
                part_reads(storage, path_for("s3_requirements", **ident.tokens), todo_parts))


# Tasks go in a few batched calls (client.map): submitting thousands one by one costs the client seconds of
# CPU that the workers need.  Keys name state and country; priorities run parts in order and, within a part,
# the biggest units first.

def _priority(work: Work, part: int) -> int:
    return (max(len(work.parts), 1) - part) * 10**12


def _submit_prefixes(storage: Storage, client, ident: RunIdentity, work: Work, tok: str, futures: dict[str, Any],
                     stage_of: dict[str, str]) -> dict[str, Any]:
    """One ``s4-weights-<ISO>`` task per country with sites to place, the largest ``n_sites`` first."""
    if not work.live_units:
        return {}
    weight_refs = country_row_groups(storage, "tile_weights", ident.parameter_hash)
    index_refs = country_row_groups(storage, "tile_index", ident.parameter_hash)
    max_n: dict[str, int] = defaultdict(int)
    for u in work.live_units:
        for seg in u.segments:
            max_n[seg.country_iso] = max(max_n[seg.country_iso], seg.max_n_sites)
    missing = sorted(iso for iso in max_n if iso not in weight_refs)
    if missing:
        raise InputError("E303_MISSING_WEIGHTS", f"{len(missing)} countries have sites but no tile weights",
                         dataset="tile_weights", rows=[{"country_iso": iso} for iso in missing])
    isos = sorted(max_n, key=lambda c: (-max_n[c], c))
    keys = [task_key("s4", "weights", iso, token=tok) for iso in isos]
    futs = client.map(country_prefix, [storage] * len(isos), [weight_refs[i] for i in isos],
                      [index_refs.get(i, []) for i in isos], isos, [max_n[i] for i in isos], key=keys,
                      priority=10**15)
    for k, f in zip(keys, futs):
        futures[k], stage_of[k] = f, "s4 weights"
    return dict(zip(isos, futs))


def _submit_units(storage: Storage, client, ident: RunIdentity, grid: Grid, countries_sha256: str, through: str,
                  work: Work, prefixes: dict[str, Any], tok: str, futures: dict[str, Any],
                  stage_of: dict[str, str]) -> dict[int, list]:
    """The fused S4 → ``through`` unit tasks of every part to write; part -> its units' futures."""
    master = rng.master_material(ident.seed, ident.manifest_fingerprint)
    units_of: dict[int, list[Unit]] = defaultdict(list)
    for u in work.live_units:
        units_of[u.part].append(u)
    unit_futs: dict[int, list] = defaultdict(list)
    for p in work.todo_parts:
        part_units = sorted(units_of[p.index], key=lambda u: (-u.cost, u.label, u.chunk))
        if not part_units:
            continue
        keys = [task_key(through, SPECS[through].action, u.label, u.chunk, tok) for u in part_units]
        futs = client.map(place_unit, [[prefixes[c] for c in u.countries] for u in part_units],
                          [work.part_reads[p.index]] * len(part_units), [u.segments for u in part_units],
                          key=keys, priority=_priority(work, p.index), through=through, storage=storage,
                          countries_sha256=countries_sha256, grid=grid, master=master,
                          parameter_hash=ident.parameter_hash)
        unit_futs[p.index] = futs
        for k, f in zip(keys, futs):
            futures[k], stage_of[k] = f, f"{through} units"
    return unit_futs


def _submit_writers(storage: Storage, client, ident: RunIdentity, attempt: Attempt, work: Work,
                    unit_futs: dict[int, list], tok: str, futures: dict[str, Any], stage_of: dict[str, str],
                    log_form: str) -> None:
    """One ``sN-write-<p>`` task per state to write and part, just after the part's units."""
    for s in attempt.to_write:
        for p in work.todo_parts:
            key = task_key(s, "write", None, p.index, tok)
            futures[key] = client.submit(write_part, s, storage, attempt.staging[s], attempt.progress, p.index, ident,
                                         unit_futs[p.index], log_form, key=key,
                                         priority=_priority(work, p.index) + 1)
            stage_of[key] = f"{s} write"


def _publish_and_report(storage: Storage, client, ident: RunIdentity, attempt: Attempt, work: Work, wall: float,
                        started: str) -> dict[str, Any]:
    """Publish every state written (what its part records list), write its run report, then the RNG trace."""
    n_parts = len(work.parts)
    records = {s: [PartRecord.from_json(r) for r in part_records(storage, attempt.progress, s, n_parts)]
               for s in attempt.to_write}
    workers = Workers.of(client)
    summary: dict[str, Any] = {}
    for s in attempt.states:
        if s not in attempt.to_write:
            summary[s] = {"skipped": True}
            continue
        receipt = _publish_state(storage, ident, attempt, s, records[s])
        report = _write_report(storage, s, ident, records[s], receipt, wall, workers, started, n_parts,
                               len(work.done_parts))
        summary[s] = {"rows": report.data["rows"], "seconds": wall, "report": report.path,
                      "countries": report.data["countries"]}
    if any(s in LABEL_OF for s in attempt.to_write):
        _write_trace(storage, ident, attempt.progress, n_parts)
    return summary


def _publish_state(storage: Storage, ident: RunIdentity, attempt: Attempt, state: str,
                   records: list[PartRecord]) -> dict[str, str]:
    """Publish a state's dataset and event log from staging; the dataset's determinism receipt."""
    staging, target = attempt.staging[state], attempt.targets[state]
    if staging["data"] is not None:
        digest = storage.publish(staging["data"], target, DATASET_OF[state],
                                 expected=expected_files([r.files for r in records], "data"))
    else:  # published by the interrupted run; its report was not written yet
        digest = storage.partition_digest(target)
    if state in LABEL_OF and staging["events"] is not None:
        storage.publish(staging["events"], attempt.ev_targets[state], "rng_events", digest=False,
                        expected=expected_files([r.files for r in records], "events"))
    return {"partition_path": target, "sha256_hex": digest}


# ---------------------------------------------------------------------------------------------------------
# helpers of the job (client side)

def _read_requirements(storage: Storage, ident: RunIdentity) -> Pairs:
    """Every requirement pair, compact (:mod:`jobs.requirement_pairs`: 12 bytes a pair at x1000, read a row
    group at a time; x1000 has 18.5 M pairs)."""
    rel = path_for("s3_requirements", **ident.tokens)
    if not storage.is_published(rel):
        raise InputError("E401_REQUIREMENTS_MISSING", "s3_requirements is not published for this run",
                         dataset="s3_requirements", path=storage.url(rel), hint="run S3 first (`segment1b run`)")
    return read_pairs(storage, rel)


def _check_parameters(storage: Storage, parameter_hash: str, grid: Grid, countries_sha256: str) -> None:
    """E310 unless the grid and polygons handed in are the ones recorded for ``parameter_hash``.

    S6 draws in the grid's cells and tests points against the polygons, and S7/S9 later read both back
    from the record: placing with anything else would publish sites under a parameter_hash that does not
    describe them.
    """
    from .parameters import load_parameters

    recorded = load_parameters(storage, parameter_hash)
    given = {"grid": grid.to_params(), "countries_sha256": countries_sha256}
    have = {"grid": recorded.grid.to_params(), "countries_sha256": recorded.countries_sha256}
    wrong = [{"parameter": k, "given": given[k], "recorded": have[k]} for k in given if given[k] != have[k]]
    if wrong:
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"the {' and '.join(r['parameter'] for r in wrong)} "
                         f"given to S4-S6 differ from the parameters recorded for parameter_hash {parameter_hash}",
                         dataset="parameters", path=storage.url(path_for("parameters", parameter_hash=parameter_hash)),
                         rows=wrong, hint="pass the grid and polygons that `segment1b prepare` used for this "
                                          "parameter_hash (jobs.pipeline.prepared_grid)")


def _memory_bound_sites(client) -> int:
    """Largest unit (sites) whose peak fits a quarter of a worker thread's share of its usable memory.

    Usable: what is left of the memory limit below the pause fraction once the worker's own floor is
    taken (jobs.footprint.unit_budget), so units follow the limit that is given (issue #14).  A worker
    runs one unit per thread at a time, so the rest is shared by its threads; the smallest share over the
    workers decides.  The other three quarters are left for results waiting for their part writer and for
    the writer itself.
    """
    from .footprint import unit_budget

    budgets = [unit_budget(limit, threads, pause) for limit, threads, pause in client.run(_worker_memory).values()
               if limit]
    if not budgets:
        return 10**9
    return max(1_000, int(min(budgets) * MEMORY_FRACTION_PER_UNIT / UNIT_BYTES_PER_SITE))


def _write_audit_once(storage: Storage, ident: RunIdentity) -> None:
    rel = path_for("rng_audit_log", **ident.log_tokens)
    if storage.exists(rel):
        return
    record = audit_record({"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed,
                               "manifest_fingerprint": ident.manifest_fingerprint,
                               "parameter_hash": ident.parameter_hash}, build_commit())
    storage.write_bytes(rel, jsonl_lines([record]))


def _trace_labels(storage: Storage, ident: RunIdentity) -> set[str]:
    """Substream labels that the run's RNG trace log already accounts for."""
    rel = path_for("rng_trace_log", **ident.log_tokens)
    if not storage.exists(rel):
        return set()
    return {json.loads(line)["substream_label"] for line in storage.read_bytes(rel).decode().splitlines() if line}


def _write_trace(storage: Storage, ident: RunIdentity, progress: str, n_parts: int) -> None:
    """Cumulative totals per (module, label) after each part, for every event family published so far."""
    rows = []
    rel = path_for("rng_trace_log", **ident.log_tokens)
    existing = storage.read_bytes(rel).decode().splitlines() if storage.exists(rel) else []
    have = {json.loads(line)["substream_label"] for line in existing}
    rows.extend(json.loads(line) for line in existing)
    for s in ("s5", "s6"):
        if LABEL_OF[s] in have or not storage.exists(posixpath.join(progress, f"{s}-{part_name(0, '.json')}")):
            continue
        events = 0
        for rec in map(PartRecord.from_json, part_records(storage, progress, s, n_parts)):
            if not rec.events:
                continue
            events += rec.events
            rows.append(trace_record({"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed,
                                          "parameter_hash": ident.parameter_hash,
                                          "manifest_fingerprint": ident.manifest_fingerprint},
                                         SPECS[s].module, SPECS[s].label, draws_total=events * SPECS[s].draws_per_event,
                                         blocks_total=events, events_total=events))
    storage.write_bytes(rel, jsonl_lines(rows))


def _write_report(storage: Storage, state: str, ident: RunIdentity, records: list[PartRecord],
                  receipt: dict[str, str], wall: float, workers: Workers, started: str, n_parts: int,
                  reused_parts: int) -> WrittenReport:
    """State ``state``'s run report: §11 fields, per-country timings and the state's own counters."""
    units = [u for r in records for u in r.units]
    rows_by_country: dict[str, int] = defaultdict(int)
    for r in records:
        for c, n in r.countries.items():
            rows_by_country[c] += n
    extra: dict[str, Any] = {}
    if state in LABEL_OF:
        extra["rng_events_path"] = path_for("rng_events", substream_label=LABEL_OF[state], **ident.log_tokens)
    extra.update(parts=n_parts, parts_reused_on_resume=reused_parts, units=len(units),
                 rows_by_country=dict(sorted(rows_by_country.items())), **STATE_EXTRA[state](records, rows_by_country))
    return write_state_report(storage, state, {**ident.tokens, "run_id": ident.run_id},
                              rows=sum(r.rows for r in records), receipts=[receipt], wall_seconds=wall,
                              task_cpu_seconds=sum(u.timing.cpu_s for u in units), workers=workers,
                              countries=country_timings(units), started_utc=started, extra=extra)


def country_timings(units: list[UnitTiming]) -> list[dict[str, Any]]:
    """Per-country rows and seconds summed over units, slowest first (contract §11)."""
    rows: dict[str, int] = defaultdict(int)
    secs: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for u in units:
        rows[u.country_iso] += u.rows
        secs[u.country_iso] += u.timing.wall_s
        count[u.country_iso] += 1
    table = [{"country_iso": c, "rows": rows[c], "seconds": round(secs[c], 4), "units": count[c]} for c in rows]
    return sorted(table, key=lambda t: (-t["seconds"], t["country_iso"]))


def _s4_extra(records: list[PartRecord], rows_by_country: dict[str, int]) -> dict[str, Any]:
    return {"pairs": sum(r.pairs for r in records), "ties_broken": sum(r.ties_broken for r in records)}


def _s5_extra(records: list[PartRecord], rows_by_country: dict[str, int]) -> dict[str, Any]:
    return {"rng_events": sum(r.events for r in records), "substream_label": LABEL_OF["s5"]}


def _s6_extra(records: list[PartRecord], rows_by_country: dict[str, int]) -> dict[str, Any]:
    """S6's attempt histogram and, per country, sites, RNG events and rejections by cause (contract §11)."""
    hist = np.zeros(64, dtype=np.int64)
    per: dict[str, dict[str, int]] = {k: defaultdict(int) for k in
                                       ("country_events", "country_outside_pixel", "country_outside_country")}
    for r in records:
        if r.attempt_histogram:
            hist += np.asarray(r.attempt_histogram[:64])
        for c, n in r.country_events.items():
            per["country_events"][c] += n
        for c, n in r.country_outside_pixel.items():
            per["country_outside_pixel"][c] += n
        for c, n in r.country_outside_country.items():
            per["country_outside_country"][c] += n
    return {"rng_events": sum(r.events for r in records), "substream_label": LABEL_OF["s6"],
            "attempt_histogram": {str(i + 1): int(h) for i, h in enumerate(hist) if h},
            "outside_pixel": sum(r.outside_pixel for r in records),
            "outside_country": sum(r.outside_country for r in records),
            "per_country": [{"country_iso": c, "sites": rows_by_country[c], "rng_events": per["country_events"][c],
                             "outside_pixel": per["country_outside_pixel"][c],
                             "outside_country": per["country_outside_country"][c]} for c in sorted(rows_by_country)]}


STATE_EXTRA = {"s4": _s4_extra, "s5": _s5_extra, "s6": _s6_extra}
