"""S9 validation as a Dask job, and the ``segment1b validate`` command.

Graph, per merchant-major part ``NNN`` (the same index in S5, S6, S7, ``site_locations`` and the event logs):

* ``s9-tables-NNN-<token>`` reads S5, S6, S7 and ``site_locations`` part ``NNN`` (each file read once,
  hashed and parsed from memory) and the outlet-catalogue row groups of the part's merchant range, and runs
  :func:`segment1b.s9_validation.check_part_tables` (schema, order, keys, parity, coverage, pixel, country);
* ``s9-rng5-NNN-<token>`` / ``s9-rng6-NNN-<token>`` stream the ``site_tile_assign`` / ``in_cell_jitter``
  event file ``part-NNNNN.jsonl`` in 32 MiB chunks (hashing it on the way) with the S5 / S6 part and run
  :func:`segment1b.s9_validation.check_part_events`.  Parsing JSON lines is most of S9's cost, so it gets
  its own tasks that run beside the dataset checks, largest first;
* ``s9-digest-NNN-<token>`` hash whole partitions (and each of their files) for the finality check and the
  bundle's lists: the tile surfaces, S3-S8 and the outlet catalogue;
* ``s9-surface-NNN-<token>`` check part ``NNN`` of ``tile_index``, ``tile_bounds`` and ``tile_weights``
  (the same tile set; per-country weight sums, added up on the client to 10^dp), see
  :mod:`jobs.validate_surfaces`;
* ``s9-planrows-NNN-<token>`` pick the sampled pairs' rows out of S4 part ``NNN`` (each part read once);
* ``s9-plan-<ISO>-<token>`` recompute the S4 plan of the sampled pairs of one country independently, over
  all of the country's tile weights (:func:`segment1b.s9_validation.allocate_all_tiles`).  The sample is
  the ``plan_sample`` pairs of ``s3_requirements`` with the smallest salted hash of (merchant, ISO) — fixed
  by (seed, fingerprint), so the bundle stays deterministic — plus the pair with the most sites.  Every
  pair's plan is also checked against S3's n_sites and S5's tiles, on all rows, in ``s9-tables``.

Tasks return findings and small summaries only; the client then runs the global checks (order across
parts, RNG totals against the trace, audit record, row counts, run_id coherence, receipts), writes the
bundle and publishes it.

Which run_id: the run receipt at ``path_for("run_receipt", ...)`` when it exists; otherwise the logs for
(seed, parameter_hash) must hold exactly one ``run_id=`` folder (else E912).  Which parameter_hash: the
caller's, or the only one under which S5/S6/S7 are published for (seed, fingerprint) (else E912).

Bundle policy (write-once, re-validation is an audit):

* PASS: the bundle with ``_passed.flag`` is published at ``path_for("validation_bundle_1B")``.  Bundle
  bytes are deterministic: the same files give the same bundle (and flag) whatever the workers.
* FAIL: the bundle (no flag) is published at ``path_for("validation_failed_1B", attempt=<first 16 hex of
  the bundle digest>)``, a sibling tree that never blocks the normal path: after a fix, a passing
  validation still publishes there.  Identical failing validations share one attempt folder.
* AUDIT: once a PASS is published for the fingerprint, every later validation of it is an audit (issue 14).
  The published bundle, its flag and the run's S9 report are never touched; the audit's bundle (no flag) is
  published at ``path_for("validation_audit_1B", attempt=<first 16 hex of its digest>)`` and its report at
  ``path_for("s9_audit_report")``, beside the run's S9 report.  An audit passes when every check passes and
  it vouches for the same bytes as the published bundle (:func:`segment1b.s9_manifest.vouched_differences`):
  other options (``--plan-sample``) or a later validator that checks more still pass.  A passing audit
  that vouches for other bytes — or a published bundle that no longer verifies — is E913.
* A PASS bundle that differs from one published meanwhile by another validation (a race) is refused
  (E913, recorded in a failed bundle): a published PASS is never replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from cluster import reset_worker_memory_peaks, worker_memory_peaks
from segment1b import rng, s9_manifest
from segment1b import s9_validation as s9
from segment1b.contracts import TOKEN_PATTERNS, path_for, report_path
from segment1b.errors import InputError, IntegrityError, PublishError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, utc_now
from segment1b.keys import iso_of
from segment1b.storage import Storage

from . import argtypes
from .parameters import load_parameters
from .parts import (CatalogueIndex, file_stamps, merchant_max, merchant_ranges, part_files,
                    parquet_from_bytes, read_catalogue_keys, read_merchant_range, token_values)
from .refcache import country_geometry
from .runtime import StateReport, gather, task_key, timed, token_of, write_run_report
from .tiles import RowGroupRef, country_row_groups, iter_country
from .validate_surfaces import submit_surface_tasks, surface_checks

__all__ = ["ValidationResult", "run_s9", "register"]

S4, S5, S6, S7, S8 = s9.S4, s9.S5, s9.S6, s9.S7, s9.S8
#: pairs whose S4 plan S9 recomputes over all of their country's tiles (plus the pair with the most sites)
PLAN_SAMPLE = 256
LABELS = (rng.S5_LABEL, rng.S6_LABEL)
CHUNK_BYTES = 32 * 2**20
BUNDLE = "validation_bundle_1B"


@dataclass
class ValidationResult:
    """Outcome of one S9 validation (see :func:`run_s9`)."""

    passed: bool
    seed: int
    manifest_fingerprint: str
    parameter_hash: str | None
    run_id: str | None
    failed_codes: list[str]
    findings: list[dict[str, Any]]
    bundle_path: str | None
    flag_sha256_hex: str | None
    report_path: str | None = None
    #: an audit of a published PASS (see the module docstring): where its bundle is (None otherwise)
    audit_path: str | None = None
    rows: int = 0
    wall_seconds: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)

    def raise_for_status(self) -> None:
        """Raise the first failure as an :class:`IntegrityError` (with its code), unless it passed."""
        if self.passed:
            return
        first = self.findings[0] if self.findings else {"code": "E908_BUNDLE_CONTENTS",
                                                        "message": "no findings",
                                                        "examples": []}
        raise IntegrityError(first["code"], f"S9 validation failed ({', '.join(self.failed_codes)}): "
                             f"{first['message']}", dataset=BUNDLE, path=self.bundle_path,
                             rows=first.get("examples", []))


@dataclass(frozen=True)
class PartJob:
    """Recipe of one part check (paths and options only; the task opens the files)."""

    storage: Storage
    part: int
    rels: dict[str, str | None]  # S5/S6/S7/S8 and the two labels -> relative path of the part file
    catalogue_refs: tuple[RowGroupRef, ...] | None  # None: no catalogue to compare with
    requirements_refs: tuple[RowGroupRef, ...] | None  # s3_requirements row groups; None: not published
    lo: int
    hi: int
    grid: Grid
    countries_sha256: str
    expect: s9.Expect
    master: bytes


# ---------------------------------------------------------------------------------------------------------
# tasks


def _jsonl_chunks(storage: Storage, rel: str, digest, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Whole-line chunks of a JSONL file, hashing every byte on the way.

    One reusable buffer: each chunk is a view of it, valid until the next one is requested (the parser
    copies what it keeps), and only the partial last line is moved, so no block is copied in Python.
    """
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    have = 0  # bytes of a partial line at the start of the buffer
    with storage.fs.open(storage.abspath(rel), "rb") as fh:
        while True:
            if have == len(buf):  # one line longer than the buffer: grow it
                view.release()
                buf.extend(bytes(len(buf)))
                view = memoryview(buf)
            n = fh.readinto(view[have:])
            if not n:
                break
            digest.update(view[have:have + n])
            end = have + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut:
                yield view[:cut]
            have = end - cut
            buf[:have] = buf[cut:end]
    if have:
        yield view[:have]


def _read_tables(storage: Storage, rels: dict[str, str | None], datasets, findings: s9.Findings | None,
                 files: dict[str, dict[str, Any]] | None, part: int) -> dict[str, Any]:
    """Read part files once each (hashing them when ``files`` is given); unreadable -> None (+ a finding)."""
    tables: dict[str, Any] = {}
    for ds in datasets:
        rel = rels.get(ds)
        tables[ds] = None
        if rel is None:
            continue
        data = storage.read_bytes(rel)
        if files is not None:
            files[rel] = {"sha256_hex": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        try:
            tables[ds] = parquet_from_bytes(data)
        except Exception as exc:  # any decoding failure of a published file is a finding, not a crash
            if findings is not None:
                findings.add("files", "E904_EGRESS_SCHEMA", f"{ds} part is not readable Parquet", 1,
                             [{"part": part, "path": rel, "error": f"{type(exc).__name__}: {exc}"[:300]}])
    return tables


def _geometries(job: PartJob, isos) -> dict[str, Any]:
    out = {}
    for iso in sorted(isos):
        try:
            out[iso] = country_geometry(job.storage, job.countries_sha256, iso)
        except InputError:
            out[iso] = None
    return out


def _tables_task(job: PartJob) -> dict[str, Any]:
    """Task ``s9-tables-NNN``: dataset checks of one part (schema, order, parity, coverage, geometry)."""
    import pyarrow.compute as pc

    findings = s9.Findings()
    files: dict[str, dict[str, Any]] = {}
    tables = _read_tables(job.storage, job.rels, s9.DATASETS + (S4,), findings, files, job.part)
    catalogue = None
    if job.catalogue_refs is not None:
        catalogue = read_catalogue_keys(job.storage, list(job.catalogue_refs), job.lo, job.hi)
    t7 = tables.get(S7)
    isos = set()
    if t7 is not None and "legal_country_iso" in t7.column_names:
        isos = {v for v in pc.unique(t7["legal_country_iso"]).to_pylist() if isinstance(v, str)}
    summary = s9.check_part_tables(job.part, tables, catalogue, _geometries(job, isos), job.grid, job.expect,
                                   findings)
    requirements = None
    if job.requirements_refs is not None:
        requirements = read_merchant_range(job.storage, list(job.requirements_refs), job.lo, job.hi,
                                           ["merchant_id", "legal_country_iso", "n_sites"], "s3_requirements")
    summary["plan"] = s9.check_part_plan(job.part, tables.get(S4), tables.get(S5), requirements, findings)
    return {"kind": "tables", "part": job.part, "findings": findings.to_list(), "summary": summary,
            "files": files}


def _events_task(job: PartJob, label: str) -> dict[str, Any]:
    """Task ``s9-rng5-NNN`` / ``s9-rng6-NNN``: RNG accounting of one part's event file."""
    findings = s9.Findings()
    rel = job.rels[label]
    ds = S5 if label == rng.S5_LABEL else S6
    table = _read_tables(job.storage, job.rels, [ds], None, None, job.part)[ds]
    h = hashlib.sha256()
    check = "rng_s5" if label == rng.S5_LABEL else "rng_s6"
    try:
        events = s9.parse_events(_jsonl_chunks(job.storage, rel, h), label, job.expect)
    except (ValueError, UnicodeDecodeError) as exc:
        findings.add(check, "E907_RNG_BUDGET", f"{label} event log is not valid event JSON lines", 1,
                     [{"part": job.part, "path": rel, "error": str(exc)[:300]}])
        h = hashlib.sha256(job.storage.read_bytes(rel))  # the whole file's digest, for the manifest
        summary = {"events": 0, "draws": 0, "blocks": 0, "run_ids": [], "unreadable": True}
    else:
        codes = np.unique(events.columns["legal_country_iso"]) if label == rng.S6_LABEL else []
        isos = {iso_of(c) for c in codes}
        summary = s9.check_part_events(job.part, events, table, _geometries(job, isos), job.grid, job.expect,
                                       job.master, findings)
    size = job.storage.fs.size(job.storage.abspath(rel))
    return {"kind": label, "part": job.part, "findings": findings.to_list(), "summary": summary,
            "files": {rel: {"sha256_hex": h.hexdigest(), "bytes": size}}}


def _plan_rows_task(storage: Storage, rel: str, pairs: tuple[tuple[int, str], ...]
                    ) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """Task ``s9-planrows-NNN``: the published S4 rows (tile_id, n_sites_tile) of the sampled pairs of one part,
    so each part file is read once however many countries' samples it holds."""
    import pyarrow.compute as pc

    try:
        p = storage.read_parquet(rel, ["merchant_id", "legal_country_iso", "tile_id", "n_sites_tile"], dataset_id=S4)
    except Exception:  # an unreadable or malformed part is the tables task's finding
        return {}
    p = p.filter(pc.is_in(p["merchant_id"], pa.array(sorted({m for m, _ in pairs}), pa.uint64())))
    mid = np.asarray(p["merchant_id"].to_numpy(), np.uint64)
    iso = np.asarray(p["legal_country_iso"].to_numpy(zero_copy_only=False))
    tid = np.asarray(p["tile_id"].to_numpy(), np.uint64)
    cnt = np.asarray(p["n_sites_tile"].to_numpy(), np.int64)
    out = {}
    for m, c in pairs:
        sel = (mid == np.uint64(m)) & (iso == c)
        out[(m, c)] = (tid[sel], cnt[sel])
    return out


def _plan_task(storage: Storage, country_iso: str, weight_refs: tuple[RowGroupRef, ...],
               pairs: tuple[tuple[int, int], ...], *published_parts: dict) -> dict[str, Any]:
    """Task ``s9-plan-<ISO>``: the sampled pairs' published plans against a recomputation over all tiles.

    ``pairs``: (merchant_id, n_sites from S3); ``published_parts``: results of the ``s9-planrows`` tasks of the
    parts that hold them.
    """
    findings = s9.Findings()
    # all of the country's tiles with weight_fp > 0 (the others take no part), one row group at a time
    tiles, weights = [], []
    for t in iter_country(storage, list(weight_refs), country_iso, ["tile_id", "weight_fp"], "tile_weights"):
        w = np.asarray(t["weight_fp"].to_numpy(), np.uint64)
        keep = np.flatnonzero(w)
        tiles.append(np.asarray(t["tile_id"].to_numpy(), np.uint64)[keep])
        weights.append(w[keep])
    tile_id = np.concatenate(tiles) if tiles else np.empty(0, np.uint64)
    weight_fp = np.concatenate(weights) if weights else np.empty(0, np.uint64)
    del tiles, weights
    # dp from the first row group (S4 refuses a country whose weights mix dp values: E105)
    first = next(iter_country(storage, list(weight_refs[:1]), country_iso, ["dp"], "tile_weights"), None)
    dp = int(first["dp"][0].as_py()) if first is not None and first.num_rows else 0
    published = {k: v for rows in published_parts for k, v in rows.items()}
    empty = (np.empty(0, np.uint64), np.empty(0, np.int64))
    summary = s9.check_plan_recompute(
        country_iso, tile_id, weight_fp, dp,
        ({"merchant_id": m, "n_sites": n, "tile_id": published.get((m, country_iso), empty)[0],
          "n_sites_tile": published.get((m, country_iso), empty)[1]} for m, n in pairs), findings)
    return {"kind": "plan", "part": -1, "country": country_iso, "findings": findings.to_list(),
            "summary": summary, "files": {}}


def _submit_plan_tasks(storage: Storage, client, sample: list[tuple[int, str, int]], indices: list[int],
                       ranges: list[tuple[int, int]], s4_parts: dict[int, str], parameter_hash: str, tok: str,
                       futures: dict[str, Any], stages: dict[str, str], findings: s9.Findings) -> int:
    """One ``s9-planrows-NNN`` task per S4 part holding sampled pairs and one ``s9-plan-<ISO>`` task per
    country of the sample (largest countries first); returns the number of sampled pairs."""
    if not sample:
        return 0
    try:
        refs = country_row_groups(storage, "tile_weights", parameter_hash)
    except InputError as exc:
        findings.add("plan_recompute", "E101_TILE_INDEX_MISSING", "tile_weights is not published, so no plan "
                     "can be recomputed", 1, [{"path": exc.path}])
        return 0
    highs = np.array([hi for _, hi in ranges], dtype=np.uint64)
    by_iso: dict[str, list[tuple[int, int]]] = defaultdict(list)
    parts_of_iso: dict[str, set[int]] = defaultdict(set)
    by_part: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for m, iso, n in sample:
        by_iso[iso].append((m, n))
        p = int(np.searchsorted(highs, np.uint64(m)))  # ranges cover u64 in order
        if p < len(indices) and indices[p] in s4_parts:
            by_part[indices[p]].append((m, iso))
            parts_of_iso[iso].add(indices[p])
    rows = {i: client.submit(_plan_rows_task, storage, s4_parts[i], tuple(pairs),
                             key=task_key("s9", "planrows", None, i, tok), priority=2**41)
            for i, pairs in sorted(by_part.items())}
    for iso, pairs in sorted(by_iso.items()):
        country_refs = tuple(refs.get(iso, ()))
        key = task_key("s9", "plan", iso, None, tok)
        futures[key] = client.submit(timed(_plan_task), storage, iso, country_refs, tuple(pairs),
                                     *(rows[i] for i in sorted(parts_of_iso[iso])), key=key,
                                     priority=2**40 + sum(len(r.row_groups) for r in country_refs))
        stages[key] = "s9 plan"
    return len(sample)


def _digest_task(storage: Storage, rel: str) -> dict[str, Any]:
    """Task ``s9-digest-NNN``: a partition's digest and each of its files' (one read of every byte)."""
    whole = hashlib.sha256()
    files = {}
    for name in storage.list_files(rel):
        h = hashlib.sha256()
        size = 0
        with storage.fs.open(storage.abspath(rel + name), "rb") as fh:
            for chunk in iter(lambda: fh.read(8 * 2**20), b""):
                whole.update(chunk)
                h.update(chunk)
                size += len(chunk)
        files[rel + name] = {"sha256_hex": h.hexdigest(), "bytes": size}
    return {"partition_path": rel, "sha256_hex": whole.hexdigest(), "files": files}


# ---------------------------------------------------------------------------------------------------------
# the job


def _parent(rel: str) -> str:
    return posixpath.dirname(rel.rstrip("/")) + "/"


def _parameter_hashes(storage: Storage, seed: int, fp: str) -> list[str]:
    found: set[str] = set()
    for ds in (S5, S6, S7):
        found.update(token_values(storage, _parent(path_for(ds, seed=seed, manifest_fingerprint=fp,
                                                         parameter_hash="0" * 64)), "parameter_hash"))
    return sorted(found)


def _resolve_run_id(storage: Storage, ident: RunIdentity, findings: s9.Findings) -> str:
    receipt_rel = path_for("run_receipt", **ident.tokens)
    log_ids: set[str] = set()
    probe = {"seed": ident.seed, "parameter_hash": ident.parameter_hash, "run_id": "0" * 32}
    for label in LABELS:
        log_ids.update(token_values(storage, _parent(path_for("rng_events", substream_label=label, **probe)),
                                 "run_id"))
    log_ids.update(token_values(storage, _parent(_parent(path_for("rng_audit_log", **probe))), "run_id"))
    if storage.exists(receipt_rel):
        try:
            receipt = storage.read_json(receipt_rel)
            run_id = str(receipt["run_id"])
            if not TOKEN_PATTERNS["run_id"].match(run_id):
                raise ValueError(f"run_id {run_id!r} is not 32 lowercase hex")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE", "the run receipt is not readable",
                         1, [{"path": receipt_rel, "error": str(exc)}])
            return ""
        other = [{"field": k, "receipt": receipt[k], "expected": v} for k, v in ident.tokens.items()
                 if k in receipt and receipt[k] != v]
        findings.add("identity_coherence", "E912_IDENTITY_COHERENCE", "the run receipt names another identity",
                     len(other), other)
        if run_id not in log_ids:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                         "the run receipt's run_id has no RNG logs",
                         1, [{"run_id": run_id, "log_run_ids": sorted(log_ids)}])
        return run_id
    if len(log_ids) != 1:
        findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                     "no run receipt, and the RNG logs do not hold exactly one run_id", 1,
                     [{"log_run_ids": sorted(log_ids), "run_receipt": receipt_rel}])
        return ""
    return next(iter(log_ids))


def _receipts(storage: Storage, ident: RunIdentity) -> dict[str, dict[str, Any] | None]:
    """Dataset -> the determinism receipt its state's run report recorded (S1/S2 for the surfaces, S4-S8)."""
    out: dict[str, dict[str, Any] | None] = {}
    states = (("s1", "tile_index"), ("s1", "tile_bounds"), ("s2", "tile_weights"),
              ("s4", S4), ("s5", S5), ("s6", S6), ("s7", S7), ("s8", S8))
    for state, ds in states:
        target = (path_for(ds, seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint) if ds == S8
                  else path_for(ds, parameter_hash=ident.parameter_hash) if ds in s9.SURFACES
                  else path_for(ds, **ident.tokens))
        out[ds] = None
        rel = report_path(state, **ident.tokens)
        if storage.exists(rel):
            try:
                for r in storage.read_json(rel).get("determinism_receipt", []):
                    if r.get("partition_path") == target:
                        out[ds] = r
            except (ValueError, AttributeError):
                pass
    return out


def _requirements(storage: Storage, ident: RunIdentity, sample_size: int
                  ) -> tuple[int | None, list[tuple[int, str, int]]]:
    """Σ n_sites of ``s3_requirements`` (None when not published) and the pairs whose plans S9 recomputes:
    the ``sample_size`` smallest salted hashes of (merchant, ISO) and the pair with the most sites, as
    sorted (merchant_id, ISO, n_sites).  One pass over the three columns, one file at a time."""
    from segment1b.keys import iso_u16

    rel = path_for("s3_requirements", **ident.tokens)
    if not storage.is_published(rel):
        return None, []
    salt = s9.plan_sample_salt(ident.seed, ident.manifest_fingerprint)
    total = 0
    keep = {"rank": np.empty(0, np.uint64), "m": np.empty(0, np.uint64), "iso": np.empty(0, np.uint16),
            "n": np.empty(0, np.int64)}
    largest: tuple[int, int, int] | None = None  # (n, merchant, iso)
    for part in storage.parquet_parts(rel):
        t = storage.read_parquet(part, ["merchant_id", "legal_country_iso", "n_sites"], dataset_id="s3_requirements")
        m = np.asarray(t["merchant_id"].to_numpy(), np.uint64)
        iso = iso_u16(t["legal_country_iso"])
        n = np.asarray(t["n_sites"].to_numpy(), np.int64)
        total += int(n.sum())
        if not n.size:
            continue
        i = int(np.argmax(n))  # the first of the largest: merchant-major, so the lowest key
        if largest is None or int(n[i]) > largest[0]:
            largest = (int(n[i]), int(m[i]), int(iso[i]))
        cand = {"rank": s9.plan_sample_rank(m, iso, salt), "m": m, "iso": iso, "n": n}
        cand = {k: np.concatenate([keep[k], v]) for k, v in cand.items()}
        best = np.lexsort((cand["iso"], cand["m"], cand["rank"]))[:sample_size]
        keep = {k: v[best] for k, v in cand.items()}
    picked = {(int(a), int(b), int(c)) for a, b, c in zip(keep["m"], keep["iso"], keep["n"])}
    if largest is not None and sample_size > 0:
        picked.add((largest[1], largest[2], largest[0]))
    return total, sorted((m, iso_of(c), n) for m, c, n in picked)


def run_s9(storage: Storage, client, seed: int, manifest_fingerprint: str, *,
           parameter_hash: str | None = None, plan_sample: int = PLAN_SAMPLE,
           out=None) -> ValidationResult:
    """Validate the published S5-S8 datasets and RNG logs of (seed, fingerprint); publish the S9 bundle.

    Computes eagerly on the cluster (per-part checks) and on the client (global checks, bundle).  Never
    raises for bad data: every failed check is in the result and in the bundle's ``s9_summary.json``.

    Parameters
    ----------
    storage : Storage
    client : distributed.Client
    seed : int
    manifest_fingerprint : str
    parameter_hash : str, optional
        Needed only when several parameter sets were run for (seed, fingerprint).
    plan_sample : int
        Pairs whose S4 plan is recomputed over all of their country's tiles (plus the pair with the most
        sites; 0 turns the recomputation off).  Quotas and sums are checked on every pair regardless.
    out : text stream, optional
        Progress and summary (default stdout).

    Returns
    -------
    ValidationResult
        ``passed`` is True only when every check passed and the flagged bundle is published — or, when a
        PASS was already published for the fingerprint, when this audit passed and vouches for the same
        bytes (``audit_path`` then names the audit's bundle; the published one is left as it is).

    Raises
    ------
    PublishError
        ``E_PUBLISH_IO`` when no bundle can be written at all (read-only or full data root).
    """
    out = out if out is not None else sys.stdout
    t0 = time.perf_counter()
    started = utc_now()
    findings = s9.Findings()
    counts: dict[str, dict[str, Any]] = defaultdict(dict)
    fp = manifest_fingerprint
    # -- identity --------------------------------------------------------------------------------------
    if parameter_hash is None:
        hashes = _parameter_hashes(storage, seed, fp)
        if len(hashes) != 1:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                         "S5-S7 are not published under exactly one parameter_hash for (seed, fingerprint)",
                         1, [{"parameter_hashes": hashes, "hint": "pass --parameter-hash"}])
            return _finish(storage, client, findings, counts, seed, fp, None, "", None,
                           {"plan_sample": plan_sample}, {}, t0, started, out)
        parameter_hash = hashes[0]
    ident = RunIdentity(seed=seed, manifest_fingerprint=fp, parameter_hash=parameter_hash)
    try:
        params = load_parameters(storage, parameter_hash)
    except InputError as exc:
        findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                     "the parameters of the run cannot be loaded", 1,
                     [{"error": exc.message, "path": exc.path}])
        return _finish(storage, client, findings, counts, seed, fp, parameter_hash, "", None,
                       {"plan_sample": plan_sample}, {}, t0, started, out)
    run_id = _resolve_run_id(storage, ident, findings)
    expect = s9.Expect(seed, fp, parameter_hash, run_id)
    ident = RunIdentity(seed=seed, manifest_fingerprint=fp, parameter_hash=parameter_hash, run_id=run_id)

    # -- what is published -----------------------------------------------------------------------------
    rels = {S4: path_for(S4, **ident.tokens), S5: path_for(S5, **ident.tokens), S6: path_for(S6, **ident.tokens),
            S7: path_for(S7, **ident.tokens),
            S8: path_for(S8, seed=seed, manifest_fingerprint=fp)}
    if run_id:
        for label in LABELS:
            rels[label] = path_for("rng_events", substream_label=label, **ident.log_tokens)
    parts: dict[str, dict[int, str]] = {}
    for name, rel in rels.items():
        suffix = "jsonl" if name in LABELS else "parquet"
        if not storage.is_published(rel):
            findings.add("files", "E901_ROW_MISSING", f"{name} is not published", 1, [{"path": rel}])
            parts[name] = {}
            continue
        parts[name], others = part_files(storage, rel, suffix)
        findings.add("files", "E902_ROW_EXTRA", f"{name} holds files that are not part-NNNNN.{suffix}",
                     len(others),
                     [{"path": p} for p in others])
    indices = sorted(set().union(*(set(p) for p in parts.values()))) or [0]
    for name, by_index in parts.items():
        if name not in rels or not storage.is_published(rels[name]):
            continue
        missing = [i for i in indices if i not in by_index]
        findings.add("files", "E901_ROW_MISSING", f"{name} misses part files that other datasets have",
                     len(missing),
                     [{"path": rels[name], "part": i} for i in missing])
    maxima = []
    for i in indices:
        mx = None
        for ds in (S8, S7, S5, S6):
            if i in parts.get(ds, {}):
                mx = merchant_max(storage, parts[ds][i], ds)
                if mx is not None:
                    break
        maxima.append(mx)
    ranges = merchant_ranges(maxima)
    cat_rel = path_for("outlet_catalogue", seed=seed, manifest_fingerprint=fp)
    catalogue = CatalogueIndex(storage, cat_rel) if storage.is_published(cat_rel) else None
    if catalogue is None:
        findings.add("catalogue_coverage", "E901_ROW_MISSING",
                     "the outlet catalogue is not published, so coverage "
                     "cannot be checked", 1, [{"path": cat_rel}])

    s3_rel = path_for("s3_requirements", **ident.tokens)
    requirements = (CatalogueIndex(storage, s3_rel, "s3_requirements") if storage.is_published(s3_rel)
                    else None)
    s3_sites, sample = _requirements(storage, ident, plan_sample)
    if s3_sites is None:
        findings.add("row_counts", "E901_ROW_MISSING",
                     "s3_requirements is not published, so its n_sites cannot be "
                     "compared", 1, [{"path": s3_rel}])

    # -- per-part checks and partition digests on the cluster -----------------------------------------
    master = rng.master_material(seed, fp)
    inputs = sorted(r for by_index in parts.values() for r in by_index.values())
    tok = token_of("s9", storage.root_url, seed, fp, parameter_hash, run_id, *file_stamps(storage, inputs))
    reset_worker_memory_peaks(client)
    futures: dict[str, Any] = {}
    stages: dict[str, str] = {}
    for i, (lo, hi) in zip(indices, ranges):
        job = PartJob(storage, i, {name: parts[name].get(i) for name in parts},
                      tuple(catalogue.refs(lo, hi)) if catalogue is not None else None,
                      tuple(requirements.refs(lo, hi)) if requirements is not None else None, lo, hi, params.grid,
                      params.countries_sha256, expect, master)
        # one task for the dataset checks and one per event log, so the long JSON parses of a part run
        # in parallel with other work (largest first)
        size = sum(storage.fs.size(storage.abspath(job.rels[d])) for d in s9.DATASETS if job.rels.get(d))
        key = task_key("s9", "tables", None, i, tok)
        futures[key], stages[key] = client.submit(timed(_tables_task), job, key=key,
                                                  priority=int(size)), "s9 tables"
        for label, action in ((rng.S5_LABEL, "rng5"), (rng.S6_LABEL, "rng6")):
            if job.rels.get(label) is None:
                continue
            key = task_key("s9", action, None, i, tok)
            size = storage.fs.size(storage.abspath(job.rels[label]))
            futures[key] = client.submit(timed(_events_task), job, label, key=key, priority=int(size))
            stages[key] = f"s9 {action}"
    sampled = _submit_plan_tasks(storage, client, sample, indices, ranges, parts.get(S4, {}), parameter_hash,
                                 tok, futures, stages, findings)
    surfaces = submit_surface_tasks(storage, client, parameter_hash, tok, futures, stages, findings)
    digest_targets = {ds: rels[ds] for ds in (S4, S5, S6, S7, S8) if storage.is_published(rels[ds])}
    digest_targets.update(surfaces)
    digest_targets["outlet_catalogue"] = cat_rel if catalogue is not None else None
    digest_targets["s3_requirements"] = path_for("s3_requirements", **ident.tokens)
    for n, (name, rel) in enumerate(sorted(digest_targets.items())):
        if rel is None or not storage.is_published(rel):
            continue
        key = task_key("s9", "digest", None, n, tok)
        futures[key] = client.submit(_digest_task, storage, rel, key=key, priority=-1)
        stages[key] = "s9 digest"
    results = gather(client, futures, "s9", out, stages=stages)
    task_results = [r for r in results.values() if "kind" in r]
    digests = {r["partition_path"]: r["sha256_hex"] for r in results.values() if "partition_path" in r}
    surface_results = [r for r in task_results if r["kind"] == "surface"]
    for r in sorted(task_results, key=lambda r: (r["part"], r["kind"], r.get("country", ""))):
        findings.extend(r["findings"])
    part_results = sorted((r for r in task_results if r["kind"] == "tables"), key=lambda r: r["part"])
    plan_results = sorted((r for r in task_results if r["kind"] == "plan"), key=lambda r: r["country"])
    event_results = {label: sorted((r for r in task_results if r["kind"] == label), key=lambda r: r["part"])
                     for label in LABELS}
    summaries = [r["summary"] for r in part_results]

    # -- global checks -----------------------------------------------------------------------------------
    s9.check_across_parts(summaries, findings)
    totals: dict[str, dict[str, int]] = {}
    for label in LABELS:
        ev = [r["summary"] for r in event_results[label]]
        draws = [e["draws"] for e in ev]
        totals[label] = {"events": sum(e["events"] for e in ev), "blocks": sum(e["blocks"] for e in ev),
                         "draws": None if any(d is None for d in draws) else sum(draws)}
        seen = set().union(*(set(e["run_ids"]) for e in ev)) if ev else set()
        if run_id and seen - {run_id}:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                         f"{label} events carry other run_ids", 1,
                         [{"run_ids": sorted(seen)}])
    audit = trace_final = None
    if run_id:
        audit_rel = path_for("rng_audit_log", **ident.log_tokens)
        trace_rel = path_for("rng_trace_log", **ident.log_tokens)
        audit_bytes = storage.read_bytes(audit_rel) if storage.exists(audit_rel) else None
        trace_bytes = storage.read_bytes(trace_rel) if storage.exists(trace_rel) else None
        audit = s9.check_audit(audit_bytes, expect, findings)
        trace_final = s9.check_trace(trace_bytes, totals, expect, findings)
        log_files = {rel: {"sha256_hex": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                     for rel, b in ((audit_rel, audit_bytes), (trace_rel, trace_bytes)) if b is not None}
    else:
        log_files = {}
    rows = {ds: sum(s["rows"].get(ds, 0) for s in summaries) for ds in s9.DATASETS}
    s9.check_row_counts(rows[S8], catalogue.rows if catalogue is not None else None, s3_sites, findings)
    surface_counts = surface_checks(surface_results, params.params.dp, findings)
    partitions = {**surfaces, **{ds: rels[ds] for ds in (S4, S5, S6, S7, S8)}}
    s9.check_receipts({ds: digests.get(rel) for ds, rel in partitions.items() if rel in digests},
                      _receipts(storage, ident), findings)

    files: dict[str, dict[str, Any]] = {}
    for r in results.values():
        files.update(r.get("files", {}))
    files.update(log_files)
    hist: dict[str, int] = defaultdict(int)
    for r in event_results[rng.S6_LABEL]:
        for a, n in r["summary"].get("attempt_histogram", {}).items():
            hist[a] += n
    countries: dict[str, int] = defaultdict(int)
    secs: dict[str, float] = defaultdict(float)
    wall_of_part: dict[int, float] = defaultdict(float)
    for r in task_results:
        if r["kind"] != "surface":  # surface parts are not the merchant parts
            wall_of_part[r["part"]] += r["_wall_s"]
    for r in part_results:
        s = r["summary"]
        n_rows = max(sum(s["countries"].values()), 1)
        for c, n in s["countries"].items():
            countries[c] += n
            secs[c] += wall_of_part[r["part"]] * n / n_rows
    counts.update({
        "files": {"parts": len(indices), "files_hashed": len(files)},
        "schema": {"rows": rows}, "sort": {"parts": len(indices)}, "unique_keys": {"rows": rows},
        "egress_parity": {"site_locations_rows": rows[S8], "s7_rows": rows[S7]},
        "synthesis_parity": {"s5_rows": rows[S5], "s6_rows": rows[S6], "s7_rows": rows[S7]},
        "catalogue_coverage": {"catalogue_rows": catalogue.rows if catalogue is not None else None},
        "row_counts": {"site_locations_rows": rows[S8],
                       "catalogue_rows": catalogue.rows if catalogue else None,
                       "s3_n_sites": s3_sites},
        "rng_s5": dict(totals.get(rng.S5_LABEL, {})),
        "rng_s6": {**totals.get(rng.S6_LABEL, {}),
                   "attempt_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0])))},
        "rng_totals": {"trace_final": trace_final}, "rng_audit": {"records": 0 if audit is None else 1},
        "point_in_pixel": {"points": rows[S7]}, "point_in_country": {"points": rows[S7],
                                                                     "countries": len(countries)},
        "finality": {"partitions": {rel: d for rel, d in sorted(digests.items())}},
        "plan_quota": {k: sum(s.get("plan", {}).get(k, 0) for s in summaries) for k in ("rows", "pairs", "sites")},
        "plan_recompute": {"sample_size": plan_sample, "pairs": sum(r["summary"]["pairs"] for r in plan_results),
                           "mismatched": sum(r["summary"]["mismatched"] for r in plan_results),
                           "countries": len(plan_results), "pairs_requested": sampled,
                           "plans": sum(r["summary"]["plans"] for r in plan_results),
                           "weighted_tiles": {r["country"]: r["summary"]["tiles"] for r in plan_results}},
        **surface_counts,
    })
    state = {"ident": ident, "params": params, "rels": rels, "digests": digests, "files": files, "rows": rows,
             "totals": totals, "trace_final": trace_final, "audit": audit, "parts": part_results,
             "events": event_results, "tasks": task_results, "wall_of_part": dict(wall_of_part),
             "catalogue_rows": catalogue.rows if catalogue is not None else None, "s3_sites": s3_sites,
             "countries": countries, "secs": secs, "hist": dict(hist),
             "plan_sample": plan_sample,
             "inputs": {**{ds: rels[ds] for ds in (S4, S5, S6, S7, S8)}, "outlet_catalogue": cat_rel,
                        "s3_requirements": digest_targets["s3_requirements"], **surfaces}}
    return _finish(storage, client, findings, counts, seed, fp, parameter_hash, run_id, params, state, rels,
                   t0, started, out)


def _manifest(seed: int, fp: str, ph: str | None, run_id: str, params,
              state: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    digests = state.get("digests", {})
    files = state.get("files", {})
    for name, rel in state.get("inputs", {}).items():
        inputs.append({"dataset": name, "partition_path": rel, "sha256_hex": digests.get(rel),
                       "files": [{"path": p[len(rel):], **files[p]}
                                 for p in sorted(files) if p.startswith(rel)]})
    logs = [{"path": p, **files[p]} for p in sorted(files) if p.startswith("logs/")]
    return {"bundle": BUNDLE, "validator_version": s9.VALIDATOR_VERSION,
            "identity": {"seed": seed, "manifest_fingerprint": fp, "parameter_hash": ph,
                         "run_id": run_id or None},
            "parameters": None if not params else {
                "path": path_for("parameters", parameter_hash=ph), "grid": params.grid.to_params(),
                "countries_sha256": params.countries_sha256,
                "reference_countries": path_for("reference_countries",
                                                countries_sha256=params.countries_sha256)},
            "inputs": inputs, "logs": logs}


def _rng_accounting(state: dict[str, Any]) -> dict[str, Any]:
    fams = {}
    for label in LABELS:
        per_part = [{"part": r["part"], **{k: r["summary"].get(k) for k in ("events", "draws", "blocks")}}
                    for r in state.get("events", {}).get(label, [])]
        fams[label] = {"module": {rng.S5_LABEL: rng.S5_MODULE, rng.S6_LABEL: rng.S6_MODULE}[label],
                       **state.get("totals", {}).get(label, {}),
                       "trace_final": (state.get("trace_final") or {}).get(label), "parts": per_part}
    return {"algorithm": rng.ALGORITHM, "families": fams, "audit": state.get("audit"),
            "s6_attempt_histogram": dict(sorted(state.get("hist", {}).items(), key=lambda kv: int(kv[0])))}


def _egress_checksums(state: dict[str, Any]) -> dict[str, Any]:
    rel = state.get("rels", {}).get(S8)
    if rel is None:
        return {"partitions": []}
    files = state.get("files", {})
    return {"partitions": [{
        "dataset": S8, "partition_path": rel, "sha256_hex": state.get("digests", {}).get(rel),
        "files": [{"path": p[len(rel):], **files[p]} for p in sorted(files) if p.startswith(rel)]}]}


def _reverify_egress(storage: Storage, checksums: dict[str, Any], findings: s9.Findings) -> None:
    """Hash site_locations again right before publishing a PASS: it must not have changed meanwhile."""
    for entry in checksums["partitions"]:
        rel = entry["partition_path"]
        actual = {name: storage.file_sha256(rel + name) for name in storage.list_files(rel)}
        try:
            s9.verify_egress(s9._json_bytes(checksums), rel, actual)
        except IntegrityError as exc:
            findings.add("finality", "E911_FINALITY", "site_locations changed while it was being validated",
                         len(exc.rows), exc.rows)
        h = hashlib.sha256()
        for name in sorted(actual):
            with storage.fs.open(storage.abspath(rel + name), "rb") as fh:
                h.update(fh.read())
        if entry["sha256_hex"] is not None and h.hexdigest() != entry["sha256_hex"]:
            findings.add("finality", "E911_FINALITY",
                         "site_locations partition digest changed while it was being "
                         "validated", 1, [{"recorded": entry["sha256_hex"], "actual": h.hexdigest()}])


def _docs(seed: int, fp: str, ph: str | None, run_id: str, params, state: dict[str, Any],
          checksums: dict[str, Any], findings: s9.Findings, counts, audit_of: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """The bundle members (:data:`segment1b.s9_validation.BUNDLE_MEMBERS`) as JSON-ready objects."""
    summary = {"status": "FAIL" if findings else "PASS", "failed_codes": findings.codes(),
               "identity": {"seed": seed, "manifest_fingerprint": fp, "parameter_hash": ph,
                            "run_id": run_id or None},
               "rows": state.get("rows", {}), "catalogue_rows": state.get("catalogue_rows"),
               "s3_n_sites": state.get("s3_sites"), "checks": findings.summary(counts)}
    if audit_of is not None:
        summary["audit"] = audit_of
    return {"MANIFEST.json": _manifest(seed, fp, ph, run_id, params, state),
            "rng_accounting.json": _rng_accounting(state), "egress_checksums.json": checksums,
            "s9_summary.json": summary}


def _finish(storage: Storage, client, findings: s9.Findings, counts, seed: int, fp: str, ph: str | None,
            run_id: str, params, state: dict[str, Any], rels, t0: float, started: str,
            out) -> ValidationResult:
    checksums = _egress_checksums(state)
    if not findings:
        _reverify_egress(storage, checksums, findings)
    published = _published_pass(storage, fp)
    if published is not None:
        return _finish_audit(storage, client, findings, counts, seed, fp, ph, run_id, params, state,
                             checksums, published, t0, started, out)
    rows = state.get("rows", {}).get(S8, 0)
    bundle_path = flag = None
    for _ in range(2):
        passed = not findings
        docs = _docs(seed, fp, ph, run_id, params, state, checksums, findings, counts)
        files = s9.bundle_files(docs, passed=passed)
        digest = s9.bundle_digest({p: files[p] for p in s9.BUNDLE_MEMBERS})
        target = (path_for(BUNDLE, manifest_fingerprint=fp) if passed
                  else path_for("validation_failed_1B", manifest_fingerprint=fp, attempt=digest[:16]))
        try:
            storage.publish_bytes(files, target, BUNDLE, digest[:16])
        except PublishError as exc:
            if exc.code == "E_PUBLISH_IO" or not passed:
                raise
            # another validation published a different PASS meanwhile
            findings.add("bundle", "E913_PUBLISH", "a different passing bundle is already published for this "
                         "fingerprint; a published PASS is never replaced", 1,
                         [{"path": target, "error": exc.message}])
            continue
        bundle_path = target
        if passed:
            try:
                flag = s9.verify_bundle(storage.read_bytes(target + s9.INDEX_NAME),
                                        storage.read_bytes(target + s9.FLAG_NAME),
                                        lambda p: _read_or_missing(storage, target + p),
                                        where=storage.url(target))
            except IntegrityError as exc:  # pragma: no cover - storage corrupted the bundle as it was written
                findings.add("bundle", "E913_PUBLISH", "the published bundle does not verify", 1,
                             [{"code": exc.code, "error": exc.message}])
                passed = False
        break
    wall = time.perf_counter() - t0
    result = ValidationResult(passed=passed, seed=seed, manifest_fingerprint=fp, parameter_hash=ph,
                              run_id=run_id or None, failed_codes=findings.codes(),
                              findings=findings.to_list(),
                              bundle_path=bundle_path, flag_sha256_hex=flag, rows=rows, wall_seconds=wall,
                              checks=findings.summary(counts))
    if ph is not None:
        result.report_path = _write_report(storage, client, result, state, started, wall)
    _print_result(result, storage, out)
    return result


def _published_pass(storage: Storage, fp: str) -> dict[str, Any] | None:
    """The PASS bundle published for ``fp`` (None when there is no flag): its path, flag digest and the two
    documents that say what it vouches for — or the error that keeps it from verifying."""
    target = path_for(BUNDLE, manifest_fingerprint=fp)
    if not storage.exists(target + s9.FLAG_NAME):
        return None
    out: dict[str, Any] = {"path": target, "flag": None, "docs": None, "error": None}
    try:
        out["flag"] = s9.verify_bundle(_read_or_none(storage, target + s9.INDEX_NAME),
                                       storage.read_bytes(target + s9.FLAG_NAME),
                                       lambda p: _read_or_missing(storage, target + p),
                                       where=storage.url(target))
        out["docs"] = {name: json.loads(storage.read_bytes(target + name))
                       for name in ("MANIFEST.json", "egress_checksums.json")}
    except IntegrityError as exc:
        out["error"] = {"code": exc.code, "error": exc.message}
    except ValueError as exc:  # a member that verifies but is not JSON: not a bundle S9 wrote
        out["error"] = {"code": "E908_BUNDLE_CONTENTS", "error": str(exc)[:300]}
    return out


def _finish_audit(storage: Storage, client, findings: s9.Findings, counts, seed: int, fp: str, ph: str | None,
                  run_id: str, params, state: dict[str, Any], checksums: dict[str, Any],
                  published: dict[str, Any], t0: float, started: str, out) -> ValidationResult:
    """A validation over a published PASS is an audit: publish its own bundle and report, touch nothing else.

    It passes when every check passes and it vouches for the bytes the published bundle vouches for (it may
    list more); otherwise E913 (a genuinely different outcome over the same fingerprint).
    """
    if not findings and published["error"] is not None:
        findings.add("bundle", "E913_PUBLISH", "the published PASS bundle of this fingerprint does not "
                     "verify; a published PASS is never replaced", 1,
                     [{"path": published["path"], **published["error"]}])
    elif not findings:
        docs = {"MANIFEST.json": _manifest(seed, fp, ph, run_id, params, state),
                "egress_checksums.json": checksums}
        seen = {name: json.loads(s9._json_bytes(doc)) for name, doc in docs.items()}  # as published
        diff = s9_manifest.vouched_differences(published["docs"], seen)
        findings.add("bundle", "E913_PUBLISH", "a different passing bundle is already published for this "
                     "fingerprint: it vouches for other bytes than this validation saw; a published PASS is "
                     "never replaced", len(diff), diff)
    audit_of = {"bundle_path": published["path"], "flag_sha256_hex": published["flag"]}
    files = s9.bundle_files(_docs(seed, fp, ph, run_id, params, state, checksums, findings, counts, audit_of),
                            passed=False)  # a flag only ever at the normal path
    digest = s9.bundle_digest({p: files[p] for p in s9.BUNDLE_MEMBERS})
    target = path_for("validation_audit_1B", manifest_fingerprint=fp, attempt=digest[:16])
    storage.publish_bytes(files, target, "validation_audit_1B", digest[:16])
    wall = time.perf_counter() - t0
    result = ValidationResult(passed=not findings, seed=seed, manifest_fingerprint=fp, parameter_hash=ph,
                              run_id=run_id or None, failed_codes=findings.codes(),
                              findings=findings.to_list(), bundle_path=published["path"],
                              flag_sha256_hex=published["flag"],
                              audit_path=target, rows=state.get("rows", {}).get(S8, 0), wall_seconds=wall,
                              checks=findings.summary(counts))
    if ph is not None:
        result.report_path = _write_report(storage, client, result, state, started, wall, audit_digest=digest)
    _print_result(result, storage, out)
    return result


def _read_or_none(storage: Storage, rel: str) -> bytes | None:
    return storage.read_bytes(rel) if storage.exists(rel) else None


def _read_or_missing(storage: Storage, rel: str) -> bytes:
    if not storage.exists(rel):
        raise FileNotFoundError(rel)
    return storage.read_bytes(rel)


def _write_report(storage: Storage, client, result: ValidationResult, state: dict[str, Any], started: str,
                  wall: float, *, audit_digest: str | None = None) -> str:
    """The S9 run report; for an audit (``audit_digest`` given) the audit report beside it instead."""
    parts = state.get("parts", [])
    tasks = state.get("tasks", [])
    countries, secs = state.get("countries", {}), state.get("secs", {})
    identity = {"seed": result.seed, "manifest_fingerprint": result.manifest_fingerprint,
                "parameter_hash": result.parameter_hash, "run_id": result.run_id}
    if result.audit_path:
        receipts = [{"partition_path": result.audit_path, "sha256_hex": audit_digest}]
    elif result.bundle_path:
        receipts = [{"partition_path": result.bundle_path, "sha256_hex": result.flag_sha256_hex}]
    else:
        receipts = []
    table = [{"country_iso": c, "rows": n, "seconds": round(secs.get(c, 0.0), 4)}
             for c, n in countries.items()]
    report = StateReport(
        state="s9", dataset=BUNDLE, identity=identity, rows=result.rows, receipts=receipts, wall_seconds=wall,
        task_cpu_seconds=sum(r["_cpu_s"] for r in tasks), workers=len(client.scheduler_info()["workers"]),
        peak_worker_rss_bytes=worker_memory_peaks(client),
        countries=sorted(table, key=lambda t: (-t["seconds"], t["country_iso"])), started_utc=started)
    report.extra.update(status="PASS" if result.passed else "FAIL", failed_codes=result.failed_codes,
                        bundle_path=result.bundle_path, plan_sample=state.get("plan_sample"),
                        parts=len(parts),
                        country_seconds_basis="part wall time shared among the part's countries by rows",
                        task_timings=[{"part": r["part"], "task": r["kind"],
                                       "seconds": round(r["_wall_s"], 4)}
                                      for r in sorted(tasks, key=lambda r: (r["part"], r["kind"]))])
    tokens = {"seed": result.seed, "manifest_fingerprint": result.manifest_fingerprint,
              "parameter_hash": result.parameter_hash}
    if result.audit_path is None:
        return write_run_report(storage, report, **tokens)
    report.extra.update(audit_path=result.audit_path, audit_of={"bundle_path": result.bundle_path,
                                                                 "flag_sha256_hex": result.flag_sha256_hex})
    rel = path_for("s9_audit_report", **tokens)
    storage.write_json(rel, report.to_dict())
    return rel


def _print_result(result: ValidationResult, storage: Storage, out) -> None:
    status = "PASS" if result.passed else "FAIL"
    if result.audit_path is not None:
        print(f"  s9 audit {status}: {result.rows} site_locations rows, {result.wall_seconds:.1f}s; audit "
              f"{storage.url(result.audit_path)}\n    a PASS was already published: its bundle "
              f"{storage.url(result.bundle_path)}, its _passed.flag and the run's S9 report are unchanged",
              file=out)
    else:
        print(f"  s9 {status}: {result.rows} site_locations rows, {result.wall_seconds:.1f}s; bundle "
              f"{storage.url(result.bundle_path) if result.bundle_path else '(not published)'}", file=out)
    for check in result.checks:
        if check["status"] == "FAIL":
            for f in check["failures"]:
                print(f"    {check['check']:<20} {f['code']}: {f['message']} ({f['count']})", file=out)
                for e in f["examples"][:3]:
                    print(f"      e.g. {json.dumps(e, sort_keys=True)[:200]}", file=out)
    if result.passed:
        print(f"    _passed.flag sha256_hex = {result.flag_sha256_hex}", file=out)


# ---------------------------------------------------------------------------------------------------------
# command line


def register(sub) -> None:
    """``segment1b validate --data-root D --seed N --fingerprint F``."""
    from .session import add_cluster_options, add_lease_options, add_root_options

    p = sub.add_parser("validate",
                       help="run S9 alone: validate published S5-S8 and RNG logs, write the bundle",
                       description="Validate the published S5-S8 datasets and RNG logs of one run and "
                       "publish the S9 validation bundle (with _passed.flag only when every check passes).  "
                       "Over a published PASS it is an audit: its own bundle and report beside the run's, "
                       "which stay as they are.  Exits 3 and prints the failing codes when a check fails.")
    add_root_options(p)
    add_identity_options(p)
    p.add_argument("--parameter-hash", type=_hex64, default=None, metavar="H",
                   help="parameter_hash to validate (needed only when several were run for the "
                   "seed/fingerprint)")
    p.add_argument("--plan-sample", type=_count, default=PLAN_SAMPLE, metavar="N",
                   help=f"pairs whose S4 allocation plan is recomputed over all of their country's tiles, "
                   f"plus the pair with the most sites (default {PLAN_SAMPLE}; 0: off)")
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=main)


def add_identity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", required=True, type=_seed, help="run seed (u64)")
    p.add_argument("--fingerprint", required=True, type=_hex64, metavar="F",
                   help="manifest_fingerprint (64 hex)")


# argparse types shared by every command (issue #14: one rule per flag, from the contract's constants)
_seed, _count, _hex64 = argtypes.seed, argtypes.count, argtypes.hex64


def main(args: argparse.Namespace, out=None, err=None) -> int:
    from .cli import EXIT_CONTRACT_FAILURE
    from .session import open_session

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    scope = path_for("lease_segment", manifest_fingerprint=args.fingerprint)  # one writer of the bundle at a time
    with open_session(args, out=out) as (storage, client), storage.lease(scope, out=out):
        result = run_s9(storage, client, args.seed, args.fingerprint, parameter_hash=args.parameter_hash,
                        plan_sample=args.plan_sample, out=out)
    if result.passed:
        return 0
    what = "audit (the published PASS is unchanged)" if result.audit_path else "validation"
    print(f"FAILED S9 {what}: {' '.join(result.failed_codes)}", file=err)
    return EXIT_CONTRACT_FAILURE
