"""S4 allocation → S5 site→tile → S6 jitter over country work units, published merchant-major.

Graph (all keys readable on the dashboard):

* ``s4-weights-<ISO>``: once per country, read the country's tile weights (two columns, only its row
  groups) and keep the sorted prefix of its ``2·max(n)`` heaviest tiles; check those tiles exist in
  ``tile_index`` reading only the ``tile_id`` column of the row groups that can hold them.
* per unit (country, part, chunk): one task runs S4 → S5 → S6 back to back (each step only feeds the next,
  so they are fused; each still times itself).  Its key names the last state run: ``s6-jitter-<ISO>-<k>``
  (``s4-alloc-…`` or ``s5-assign-…`` with ``--through s4``/``s5``).
* per output part: ``s4-write-<p>``, ``s5-write-<p>``, ``s6-write-<p>`` gather the units of that part,
  sort merchant-major and write the Parquet part (and the RNG event JSONL part) into staging.

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
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from cluster import worker_memory_peaks
from segment1b import rng
from segment1b.contracts import dataset, path_for
from segment1b.errors import InputError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, build_commit, utc_now
from segment1b.keys import iso_code, iso_strings, iso_text
from segment1b.s4_alloc_plan import WeightPrefix, allocate_pairs, weight_prefix_chunks
from segment1b.s5_site_tile import assign_sites
from segment1b.s6_jitter import jitter_sites
from segment1b.lease import Lease
from segment1b.storage import Storage, part_name, write_parquet_bytes

from .place_progress import (adopt_finished_parts, drop_progress, expected_files, finished_parts, part_records,
                             progress_folder, recorded_parts)
from .footprint import worker_memory as _worker_memory
from .refcache import country_geometry
from .runtime import (StateReport, country_timings, gather, has_receipt, task_key, timed,
                      token_of, write_run_report)
from .tiles import RowGroupRef, country_row_groups, iter_country, tiles_present
from .units import DEFAULT_PART_SITES, UNIT_BYTES_PER_SITE, plan_parts, plan_units

__all__ = ["PlaceConfig", "run_place", "STATES", "DATASET_OF"]

STATES = ("s4", "s5", "s6")
DATASET_OF = {"s4": "s4_alloc_plan", "s5": "s5_site_tile_assignment", "s6": "s6_site_jitter"}
LABEL_OF = {"s5": rng.S5_LABEL, "s6": rng.S6_LABEL}
MODULE_OF = {"s5": rng.S5_MODULE, "s6": rng.S6_MODULE}
DRAWS_PER_EVENT = {"s5": 1, "s6": 2}


# Share of a worker thread's memory limit one unit may use at its peak (see _memory_bound_sites).
MEMORY_FRACTION_PER_UNIT = 0.25


@dataclass(frozen=True)
class PlaceConfig:
    """Sizing of parts and units (none of it changes a byte of output except ``part_sites``)."""

    part_sites: int = DEFAULT_PART_SITES
    max_unit_sites: int = 250_000
    min_unit_sites: int = 2_000
    skew: float = 4.0


# ---------------------------------------------------------------------------------------------------------
# tasks (module-level functions: small picklable arguments, results are plain dicts of arrays)

def _country_prefix(storage: Storage, weight_refs: list[RowGroupRef], index_refs: list[RowGroupRef],
                    country_iso: str, max_n: int) -> WeightPrefix:
    dps: set[int] = set()

    def chunks():
        # one row group at a time: Russia at 30" is 42 M tiles, its prefix only 2·max(n)
        for t in iter_country(storage, weight_refs, country_iso, ["tile_id", "weight_fp", "dp"], "tile_weights"):
            dps.update(np.unique(t["dp"].to_numpy()).tolist())
            if len(dps) > 1:
                raise InputError("E105_NORMALIZATION", f"tile weights of {country_iso} mix dp values {sorted(dps)}",
                                 dataset="tile_weights", rows=[{"country_iso": country_iso, "dp": d} for d in sorted(dps)])
            yield t["tile_id"].to_numpy(), t["weight_fp"].to_numpy()

    first = next(iter_country(storage, weight_refs[:1], country_iso, ["dp"], "tile_weights"), None)
    if first is None or first.num_rows == 0:
        raise InputError("E303_MISSING_WEIGHTS", f"{country_iso} has sites but no tile weights",
                         dataset="tile_weights", rows=[{"country_iso": country_iso}])
    dp = int(first["dp"][0].as_py())
    prefix = weight_prefix_chunks(country_iso, chunks(), dp, max_n)
    present = tiles_present(storage, index_refs, country_iso, prefix.tile_id)
    if not present.all():
        missing = prefix.tile_id[~present]
        raise InputError("E505_TILE_NOT_IN_INDEX", f"{missing.size} weighted tiles of {country_iso} are not in "
                         "tile_index", dataset="tile_weights",
                         rows=[{"country_iso": country_iso, "tile_id": int(t)} for t in missing[:20]])
    return prefix


def _s4_unit(prefix: WeightPrefix, merchant_id: np.ndarray, n_sites: np.ndarray) -> dict[str, Any]:
    out = allocate_pairs(prefix, merchant_id, n_sites)
    return {**out, "country_iso": prefix.country_iso, "rows": len(out["tile_id"])}


def _s5_unit(plan: dict[str, Any], merchant_id: np.ndarray, n_sites: np.ndarray, master: bytes,
             parameter_hash: str) -> dict[str, Any]:
    iso = plan["country_iso"]
    out = assign_sites(iso, merchant_id, n_sites, plan["merchant_id"], plan["tile_id"], plan["n_sites_tile"],
                       master, parameter_hash)
    return {**out, "country_iso": iso, "rows": len(out["tile_id"])}


def _s6_unit(sites: dict[str, Any], storage: Storage, countries_sha256: str, grid: Grid, master: bytes,
             parameter_hash: str) -> dict[str, Any]:
    iso = sites["country_iso"]
    geom = country_geometry(storage, countries_sha256, iso)
    out = jitter_sites(grid, iso, geom, sites["merchant_id"], sites["site_order"], sites["tile_id"], master,
                       parameter_hash)
    return {**out, "merchant_id": sites["merchant_id"], "site_order": sites["site_order"],
            "tile_id": sites["tile_id"], "country_iso": iso, "rows": len(sites["tile_id"])}


def _place_unit(prefixes: list[WeightPrefix], segments: list[tuple[np.ndarray, np.ndarray]], *, through: str,
                storage: Storage, countries_sha256: str, grid: Grid, master: bytes,
                parameter_hash: str) -> dict[str, list[dict[str, Any]]]:
    """S4 → S5 → S6 of one unit, fused into one task (each step only feeds the next).

    A unit holds one country or a pack of small ones: ``segments[i]`` are the (merchant_id, n_sites) of the
    country of ``prefixes[i]``.  Returns, per state, one output per country, each with its own
    ``_wall_s``/``_cpu_s`` so the run reports still time states and countries separately.
    """
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in STATES[: STATES.index(through) + 1]}
    for prefix, (merchant_id, n_sites) in zip(prefixes, segments):
        s4 = timed(_s4_unit)(prefix, merchant_id, n_sites)
        out["s4"].append(s4)
        if through in ("s5", "s6"):
            s5 = timed(_s5_unit)(s4, merchant_id, n_sites, master, parameter_hash)
            out["s5"].append(s5)
            if through == "s6":
                out["s6"].append(timed(_s6_unit)(s5, storage, countries_sha256, grid, master, parameter_hash))
    return out


def _stack(units: list[dict[str, Any]], columns: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    cols = {c: np.concatenate([u[c] for u in units]) for c in columns}
    iso = np.concatenate([np.full(len(u[columns[0]]), iso_code(u["country_iso"]), dtype=np.uint16) for u in units])
    return cols, iso


def _write_part(kind: str, storage: Storage, staging: dict[str, str | None], progress: str, part: int,
                ident: RunIdentity, units: list[dict[str, Any]]) -> dict[str, Any]:
    """Sort one part's unit results merchant-major and write the dataset part (+ RNG events part).

    Returns (and leaves in ``progress``) a small record: rows, events, per-country counts, each file written
    (name, size, and SHA-256 for datasets) and the timing of every unit, so that the client never fetches the
    units' arrays.  A ``None`` staging folder means that dataset (or log) is already published: its part is
    not written.
    """
    units = [r for u in units for r in u[kind]]  # a fused unit result holds every state's output per country
    timings = [{"country_iso": u["country_iso"], "rows": u["rows"], "_wall_s": u.get("_wall_s", 0.0),
                "_cpu_s": u.get("_cpu_s", 0.0)} for u in units]
    units = [u for u in units if u["rows"]]
    per_country: dict[str, int] = defaultdict(int)
    for u in units:
        per_country[u["country_iso"]] += u["rows"]
    record: dict[str, Any] = {"part": part, "rows": 0, "events": 0, "countries": dict(per_country),
                              "units": timings, "files": {}}

    def put(role: str, name: str, data: bytes | Iterator[bytes]) -> None:
        # bytes, or chunks streamed into the file (event logs: never all of a part's lines in memory; they are
        # checked by size only, as their publication is, jobs.place_progress)
        if staging.get(role) is not None:
            if isinstance(data, bytes):
                f = storage.write_part(staging[role], name, data)
                record["files"][role] = {"name": f.name, "size": f.size, "sha256_hex": f.sha256_hex}
            else:
                size = storage.write_stream(posixpath.join(staging[role], name), data)
                record["files"][role] = {"name": name, "size": size}
    if kind == "s4":
        cols, iso = _stack(units, ["merchant_id", "tile_id", "n_sites_tile"]) if units else ({}, None)
        if units:
            order = np.lexsort((cols["tile_id"], iso, cols["merchant_id"]))
            table = pa.table({"merchant_id": cols["merchant_id"][order], "legal_country_iso": iso_strings(iso[order]),
                              "tile_id": cols["tile_id"][order], "n_sites_tile": cols["n_sites_tile"][order]})
            record["rows"] = table.num_rows
            record["ties_broken"] = int(sum(u["ties_broken"] for u in units))
            record["pairs"] = int(sum(u["pairs"] for u in units))
            put("data", part_name(part), write_parquet_bytes(table, dataset(DATASET_OF[kind])))
    elif units:
        names = ["merchant_id", "site_order", "tile_id"]
        extra = ["u", "before_hi", "before_lo", "after_hi", "after_lo"] if kind == "s5" else \
            ["delta_lat_deg", "delta_lon_deg", "attempts"]
        cols, iso = _stack(units, names + extra)
        order = np.lexsort((cols["site_order"], iso, cols["merchant_id"]))
        cols = {k: v[order] for k, v in cols.items()}
        iso_sorted = iso[order]
        iso_arr = iso_strings(iso_sorted)
        data = {"merchant_id": cols["merchant_id"], "legal_country_iso": iso_arr, "site_order": cols["site_order"],
                "tile_id": cols["tile_id"]}
        if kind == "s6":
            data.update(delta_lat_deg=cols["delta_lat_deg"], delta_lon_deg=cols["delta_lon_deg"],
                        manifest_fingerprint=_repeated_string(ident.manifest_fingerprint, len(order)))
        table = pa.table(data)
        put("data", part_name(part), write_parquet_bytes(table, dataset(DATASET_OF[kind])))
        envelope = {"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed,
                    "parameter_hash": ident.parameter_hash, "manifest_fingerprint": ident.manifest_fingerprint}
        if kind == "s5":
            events = _s5_events(cols, iso_sorted, envelope)
            record["events"] = len(order)
        else:
            events, n_events, hist = _s6_events(units, envelope)
            record["events"] = n_events
            record["attempt_histogram"] = hist
            record["outside_pixel"] = int(sum(u["outside_pixel"] for u in units))
            record["outside_country"] = int(sum(u["outside_country"] for u in units))
            record["country_events"] = _country_sum(units, lambda u: len(u["ev_site"]))
            record["country_outside_pixel"] = _country_sum(units, lambda u: u["outside_pixel"])
            record["country_outside_country"] = _country_sum(units, lambda u: u["outside_country"])
        put("events", part_name(part, ".jsonl"), events)
        record["rows"] = table.num_rows
    storage.write_bytes(posixpath.join(progress, f"{kind}-{part_name(part, '.json')}"),
                        json.dumps(record).encode())
    return record


def _country_sum(units: list[dict[str, Any]], value) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for u in units:
        out[u["country_iso"]] += int(value(u))
    return dict(out)


# Events formatted at a time by the part writers: the JSON lines of a part (about 700 bytes per event) are
# streamed to the file chunk by chunk instead of being built whole (benchmarks/bench_unit_memory.py).
EVENT_CHUNK = 1 << 16


def _repeated_string(value: str, n: int) -> pa.Array:
    """``n`` copies of one string as an Arrow string array, built from its buffers (no NumPy strings)."""
    raw = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _s5_events(cols: dict[str, np.ndarray], iso: np.ndarray, envelope: dict[str, Any]) -> Iterator[bytes]:
    """S5 event lines of a part (rows already in writer-sort order), :data:`EVENT_CHUNK` rows at a time."""
    for a in range(0, len(iso), EVENT_CHUNK):
        b = a + EVENT_CHUNK
        yield rng.s5_events_jsonl(envelope, cols["merchant_id"][a:b], iso_text(iso[a:b]), cols["site_order"][a:b],
                                  cols["tile_id"][a:b], cols["u"][a:b], cols["before_hi"][a:b],
                                  cols["before_lo"][a:b], cols["after_hi"][a:b], cols["after_lo"][a:b])


def _s6_events(units: list[dict[str, Any]], envelope: dict[str, Any]) -> tuple[Iterator[bytes], int, list[int]]:
    """S6 event lines of a part in (merchant, country, site_order, attempt) order (a generator of chunks
    of :data:`EVENT_CHUNK` lines), their number and the attempt histogram."""
    m, iso, so, tile, att, acc, dlat, dlon, bhi, blo, ahi, alo = ([] for _ in range(12))
    hist = np.zeros(65, dtype=np.int64)
    for u in units:
        s = u["ev_site"]
        m.append(u["merchant_id"][s])
        iso.append(np.full(len(s), iso_code(u["country_iso"]), dtype=np.uint16))
        so.append(u["site_order"][s])
        tile.append(u["tile_id"][s])
        att.append(u["ev_attempt"]); acc.append(u["ev_accepted"]); dlat.append(u["ev_delta_lat"])
        dlon.append(u["ev_delta_lon"]); bhi.append(u["ev_before_hi"]); blo.append(u["ev_before_lo"])
        ahi.append(u["ev_after_hi"]); alo.append(u["ev_after_lo"])
        hist += np.bincount(u["attempts"], minlength=65)[:65]
    cols = [np.concatenate(c) for c in (m, iso, so, tile, att, acc, dlat, dlon, bhi, blo, ahi, alo)]
    order = np.lexsort((cols[4], cols[2], cols[1], cols[0]))

    def chunks() -> Iterator[bytes]:
        for a in range(0, len(order), EVENT_CHUNK):
            c = [x[order[a:a + EVENT_CHUNK]] for x in cols]
            yield rng.s6_events_jsonl(envelope, c[0], iso_text(c[1]), c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                                      c[9], c[10], c[11])

    return chunks(), len(order), hist[1:].tolist()


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
    states = STATES[: STATES.index(through) + 1]
    t_start = time.perf_counter()
    started = utc_now()
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
                                   {s: {"data": targets[s], "events": ev_targets.get(s)} for s in states})
    lease.sweep(*targets.values(), *ev_targets.values())  # what was not adopted: under the lease nobody is alive
    if not to_write:
        labels = {LABEL_OF[s] for s in states if s in LABEL_OF}
        if not labels <= _trace_labels(storage, ident):  # killed after the run reports, before the trace
            _write_trace(storage, ident, progress, recorded_parts(storage, progress, STATES))
        drop_progress(storage, lease, ident, progress)  # the last step of a finished run
        print(f"  s4-s6: {', '.join(DATASET_OF[s] for s in states)} already published; nothing to do", file=out)
        return {s: {"skipped": True} for s in states}

    _check_parameters(storage, ident.parameter_hash, grid, countries_sha256)
    req = _read_requirements(storage, ident)
    parts = plan_parts(req["merchant_id"], req["n_sites"], config.part_sites)
    max_unit = min(config.max_unit_sites, _memory_bound_sites(client))
    units = plan_units(req["merchant_id"], req["legal_country_iso"], req["n_sites"], parts,
                       max_unit_sites=max_unit, min_unit_sites=min(config.min_unit_sites, max_unit),
                       skew=config.skew, workers=len(client.scheduler_info()["workers"]))
    done_parts = finished_parts(storage, progress, to_write, staging, len(parts))
    if adopted and done_parts:
        print(f"  s4-s6: {len(done_parts)} of {len(parts)} parts finished by an earlier attempt are reused", file=out)
    todo_parts = [p for p in parts if p.index not in done_parts]
    if "s5" in to_write or "s6" in to_write:
        _write_audit_once(storage, ident)

    futures: dict[str, Any] = {}
    stage_of: dict[str, str] = {}
    master = rng.master_material(ident.seed, ident.manifest_fingerprint)
    # the data root is in the token: a quick rerun elsewhere must never get this run's results back
    tok = token_of(storage.root_url, ident.run_id, ident.parameter_hash, through, lease.attempt)
    todo_idx = {p.index for p in todo_parts}
    live_units = [u for u in units if u.part in todo_idx]
    n_parts = max(len(parts), 1)

    def prio(part: int, cost: int = 0) -> int:
        return (n_parts - part) * 10**12 + cost

    # Tasks go in a few batched calls (client.map): submitting thousands one by one costs the client seconds
    # of CPU that the workers need.  Keys name state and country; priorities run parts in order and, within
    # a part, the biggest units first.
    prefixes: dict[str, Any] = {}
    if live_units:
        weight_refs = country_row_groups(storage, "tile_weights", ident.parameter_hash)
        index_refs = country_row_groups(storage, "tile_index", ident.parameter_hash)
        max_n: dict[str, int] = defaultdict(int)
        for u in live_units:
            for seg in u.segments:
                max_n[seg.country_iso] = max(max_n[seg.country_iso], int(seg.n_sites.max()))
        missing = sorted(iso for iso in max_n if iso not in weight_refs)
        if missing:
            raise InputError("E303_MISSING_WEIGHTS", f"{len(missing)} countries have sites but no tile weights",
                             dataset="tile_weights", rows=[{"country_iso": iso} for iso in missing])
        isos = sorted(max_n, key=lambda c: (-max_n[c], c))
        keys = [task_key("s4", "weights", iso, token=tok) for iso in isos]
        futs = client.map(_country_prefix, [storage] * len(isos), [weight_refs[i] for i in isos],
                          [index_refs.get(i, []) for i in isos], isos, [max_n[i] for i in isos], key=keys,
                          priority=10**15)
        prefixes = dict(zip(isos, futs))
        for k, f in zip(keys, futs):
            futures[k], stage_of[k] = f, "s4 weights"
    action = {"s4": "alloc", "s5": "assign", "s6": "jitter"}[through]
    unit_futs: dict[int, list] = defaultdict(list)
    for p in todo_parts:
        part_units = sorted((u for u in live_units if u.part == p.index), key=lambda u: (-u.cost, u.label, u.chunk))
        if not part_units:
            continue
        keys = [task_key(through, action, u.label, u.chunk, tok) for u in part_units]
        with warnings.catch_warnings():
            # each unit's pairs travel once, inside its own task; Dask's "large graph" advice is about data
            # repeated across tasks, which this is not
            warnings.filterwarnings("ignore", message="Sending large graph")
            futs = client.map(_place_unit, [[prefixes[c] for c in u.countries] for u in part_units],
                              [[(seg.merchant_id, seg.n_sites) for seg in u.segments] for u in part_units],
                              key=keys, priority=prio(p.index), through=through, storage=storage,
                              countries_sha256=countries_sha256, grid=grid, master=master,
                              parameter_hash=ident.parameter_hash)
        unit_futs[p.index] = futs
        for k, f in zip(keys, futs):
            futures[k], stage_of[k] = f, f"{through} units"
    for s in to_write:
        for p in todo_parts:
            key = task_key(s, "write", None, p.index, tok)
            futures[key] = client.submit(_write_part, s, storage, staging[s], progress, p.index, ident,
                                         unit_futs[p.index], key=key, priority=prio(p.index) + 1)
            stage_of[key] = f"{s} write"
    try:
        gather(client, futures, "s4-s6", out, stages=stage_of, fetch=set())
    finally:
        client.cancel(list(futures.values()))  # release results now, not when the futures are collected
    wall = time.perf_counter() - t_start

    summary: dict[str, Any] = {}
    records = {s: part_records(storage, progress, s, len(parts)) for s in to_write}
    peaks = worker_memory_peaks(client)
    for s in states:
        if s not in to_write:
            summary[s] = {"skipped": True}
            continue
        if staging[s]["data"] is not None:
            receipt = _publish(storage, staging[s]["data"], DATASET_OF[s], tokens, expected_files(records[s], "data"))
        else:  # published by the interrupted run; its report was not written yet
            receipt = {"partition_path": targets[s], "sha256_hex": storage.partition_digest(targets[s])}
        extra: dict[str, Any] = {}
        if s in LABEL_OF:
            if staging[s]["events"] is not None:
                storage.publish(staging[s]["events"], ev_targets[s], "rng_events", digest=False,
                                expected=expected_files(records[s], "events"))
            extra["rng_events_path"] = ev_targets[s]
        report = _state_report(s, ident, records[s], receipt, wall, peaks, client, started, len(parts),
                               len(done_parts), extra)
        path = write_run_report(storage, report, **tokens)
        summary[s] = {"rows": report.rows, "seconds": wall, "report": path, "countries": report.countries}
    if any(s in LABEL_OF for s in to_write):
        _write_trace(storage, ident, progress, len(parts))
    drop_progress(storage, lease, ident, progress)
    # again: a task of a killed client on a shared cluster may have finished into its dead attempt's folders
    lease.sweep(*targets.values(), *ev_targets.values())
    return summary


# ---------------------------------------------------------------------------------------------------------
# helpers of the job (client side)

def _read_requirements(storage: Storage, ident: RunIdentity) -> dict[str, np.ndarray]:
    rel = path_for("s3_requirements", **ident.tokens)
    if not storage.is_published(rel):
        raise InputError("E401_REQUIREMENTS_MISSING", "s3_requirements is not published for this run",
                         dataset="s3_requirements", path=storage.url(rel), hint="run S3 first (`segment1b run`)")
    tables = [storage.read_parquet(p, dataset_id="s3_requirements") for p in storage.parquet_parts(rel)]
    if not tables:
        return {"merchant_id": np.empty(0, np.uint64), "legal_country_iso": np.empty(0, str),
                "n_sites": np.empty(0, np.int64)}
    t = pa.concat_tables(tables)
    return {"merchant_id": t["merchant_id"].to_numpy(), "legal_country_iso": np.asarray(t["legal_country_iso"].to_pylist()),
            "n_sites": t["n_sites"].to_numpy()}


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


def _publish(storage: Storage, staging: str, dataset_id: str, tokens: dict[str, Any], expected) -> dict[str, str]:
    target = path_for(dataset_id, **tokens)
    return {"partition_path": target, "sha256_hex": storage.publish(staging, target, dataset_id, expected=expected)}


def _write_audit_once(storage: Storage, ident: RunIdentity) -> None:
    rel = path_for("rng_audit_log", **ident.log_tokens)
    if storage.exists(rel):
        return
    record = rng.audit_record({"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed,
                               "manifest_fingerprint": ident.manifest_fingerprint,
                               "parameter_hash": ident.parameter_hash}, build_commit())
    storage.write_bytes(rel, rng.jsonl_lines([record]))


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
        for rec in part_records(storage, progress, s, n_parts):
            if not rec["events"]:
                continue
            events += rec["events"]
            rows.append(rng.trace_record({"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed,
                                          "parameter_hash": ident.parameter_hash,
                                          "manifest_fingerprint": ident.manifest_fingerprint},
                                         MODULE_OF[s], LABEL_OF[s], draws_total=events * DRAWS_PER_EVENT[s],
                                         blocks_total=events, events_total=events))
    storage.write_bytes(rel, rng.jsonl_lines(rows))


def _state_report(state: str, ident: RunIdentity, records: list[dict[str, Any]], receipt: dict[str, str],
                  wall: float, peaks: dict[str, int], client, started: str, n_parts: int, reused_parts: int,
                  extra: dict[str, Any]) -> StateReport:
    unit_results = [u for r in records for u in r["units"]]
    report = StateReport(state=state, dataset=DATASET_OF[state], identity={**ident.tokens, "run_id": ident.run_id},
                         rows=sum(r["rows"] for r in records), receipts=[receipt], wall_seconds=wall,
                         task_cpu_seconds=sum(r.get("_cpu_s", 0.0) for r in unit_results),
                         workers=len(client.scheduler_info()["workers"]), peak_worker_rss_bytes=peaks,
                         countries=country_timings(unit_results), started_utc=started)
    rows_by_country: dict[str, int] = defaultdict(int)
    for r in records:
        for c, n in r["countries"].items():
            rows_by_country[c] += n
    report.extra.update(extra)
    report.extra.update(parts=n_parts, parts_reused_on_resume=reused_parts, units=len(unit_results),
                        rows_by_country=dict(sorted(rows_by_country.items())))
    if state == "s4":
        report.extra.update(pairs=sum(r.get("pairs", 0) for r in records),
                            ties_broken=sum(r.get("ties_broken", 0) for r in records))
    if state in LABEL_OF:
        report.extra.update(rng_events=sum(r["events"] for r in records), substream_label=LABEL_OF[state])
    if state == "s6":
        hist = np.zeros(64, dtype=np.int64)
        per: dict[str, dict[str, int]] = {k: defaultdict(int) for k in
                                           ("country_events", "country_outside_pixel", "country_outside_country")}
        for r in records:
            if r.get("attempt_histogram"):
                hist += np.asarray(r["attempt_histogram"][:64])
            for k in per:
                for c, n in r.get(k, {}).items():
                    per[k][c] += n
        report.extra.update(
            attempt_histogram={str(i + 1): int(h) for i, h in enumerate(hist) if h},
            outside_pixel=sum(r.get("outside_pixel", 0) for r in records),
            outside_country=sum(r.get("outside_country", 0) for r in records),
            per_country=[{"country_iso": c, "sites": rows_by_country[c], "rng_events": per["country_events"][c],
                          "outside_pixel": per["country_outside_pixel"][c],
                          "outside_country": per["country_outside_country"][c]} for c in sorted(rows_by_country)])
    return report
