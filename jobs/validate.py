"""S9 validation as a Dask job, and the ``segment1b validate`` command.

The job reads the plan, submits, collects and reports: :func:`run_s9` resolves the run's identity, finds
what is published (:func:`jobs.validate_tasks.published_layout`) and the sample of pairs whose S4 plans are
recomputed, submits the per-part tasks, the plan tasks, the surface tasks and the partition digests
(:mod:`jobs.validate_tasks`, :mod:`jobs.validate_surfaces`), then runs the global checks on the client
(order across parts, RNG totals against the trace, audit record, row counts, run_id coherence, receipts)
and publishes the bundle (:mod:`jobs.validate_bundle`).  The checks themselves are :mod:`segment1b.s9`.

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
import dataclasses
import hashlib
import json
import posixpath
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cluster import reset_worker_memory_peaks
from segment1b import rng, s9
from segment1b.contracts import TOKEN_PATTERNS, path_for, report_path
from segment1b.errors import InputError, IntegrityError
from segment1b.identity import RunIdentity, utc_now
from segment1b.storage import Storage

from . import argtypes
from .parameters import load_parameters
from .parts import file_stamps, token_values
from .runtime import Workers, gather, token_of, write_state_report
from .validate_bundle import (BUNDLE, RngAccounting, Target, Validated, egress_checksums, publish,
                              publish_audit, published_pass, reverify_egress)
from .validate_surfaces import submit_surface_tasks, surface_checks
from .validate_tasks import (LABELS, Layout, PartitionDigest, TaskResult, published_layout, read_plan_sample,
                             submit_digest_tasks, submit_part_tasks, submit_plan_tasks)

__all__ = ["ValidationResult", "run_s9", "register"]

S4, S5, S6, S7, S8 = s9.S4, s9.S5, s9.S6, s9.S7, s9.S8
#: pairs whose S4 plan S9 recomputes over all of their country's tiles (plus the pair with the most sites)
PLAN_SAMPLE = 256


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


class _Clock(NamedTuple):
    t0: float
    started: str


class _Submitted(NamedTuple):
    """The graph of one validation, and what its submission decided."""

    futures: dict[str, Any]
    stages: dict[str, str]
    #: dataset -> partition path of every input (MANIFEST.json's order); the digest tasks hash them
    inputs: dict[str, str]
    #: the tile surfaces that are published (dataset -> partition path)
    surfaces: dict[str, str]
    #: pairs whose plans are recomputed
    sampled: int


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
    clock = _Clock(time.perf_counter(), utc_now())
    findings = s9.Findings()
    target = _resolve(storage, seed, manifest_fingerprint, parameter_hash, plan_sample, findings)
    if target.params is None:  # no identity to hold the files to: a bundle of the findings alone
        return _finish(storage, client, Validated(target), findings, clock, out)
    layout = published_layout(storage, target.ident, findings)
    s3_sites, sample = read_plan_sample(storage, layout, target.ident, plan_sample)
    submitted = _submit(storage, client, target, layout, sample, findings)
    results = gather(client, submitted.futures, "s9", out, stages=submitted.stages)
    seen = _collect(storage, target, layout, submitted, s3_sites, list(results.values()), findings)
    return _finish(storage, client, seen, findings, clock, out)


# ---------------------------------------------------------------------------------------------------------
# identity


def _parent(rel: str) -> str:
    return posixpath.dirname(rel.rstrip("/")) + "/"


def _parameter_hashes(storage: Storage, seed: int, fp: str) -> list[str]:
    found: set[str] = set()
    for ds in (S5, S6, S7):
        found.update(token_values(storage, _parent(path_for(ds, seed=seed, manifest_fingerprint=fp,
                                                         parameter_hash="0" * 64)), "parameter_hash"))
    return sorted(found)


def _resolve(storage: Storage, seed: int, fp: str, parameter_hash: str | None, plan_sample: int,
             findings: s9.Findings) -> Target:
    """The run to validate: its parameter_hash, parameters and run_id, as far as they resolve (findings)."""
    if parameter_hash is None:
        hashes = _parameter_hashes(storage, seed, fp)
        if len(hashes) > 1:  # the run that published site_locations, not S4-S7 left by another (issue 15)
            from .synthesis import egress_owners

            hashes = [h for h in egress_owners(storage, seed, fp) if h in hashes] or hashes
        if len(hashes) != 1:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                         "S5-S7 are not published under exactly one parameter_hash for (seed, fingerprint)",
                         1, [{"parameter_hashes": hashes, "hint": "pass --parameter-hash"}])
            return Target(seed, fp, None, plan_sample=plan_sample)
        parameter_hash = hashes[0]
    try:
        params = load_parameters(storage, parameter_hash)
    except InputError as exc:
        findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                     "the parameters of the run cannot be loaded", 1,
                     [{"error": exc.message, "path": exc.path}])
        return Target(seed, fp, parameter_hash, plan_sample=plan_sample)
    run_id = _resolve_run_id(storage, RunIdentity(seed, fp, parameter_hash), findings)
    return Target(seed, fp, parameter_hash, run_id, params, plan_sample)


def _resolve_run_id(storage: Storage, ident: RunIdentity, findings: s9.Findings) -> str:
    receipt_rel = path_for("run_receipt", **ident.tokens)
    log_ids: set[str] = set()
    probe = {"seed": ident.seed, "parameter_hash": ident.parameter_hash, "run_id": "0" * 32}
    for label in LABELS:
        log_ids.update(token_values(storage, _parent(path_for("rng_events", substream_label=label, **probe)),
                                    "run_id"))
    log_ids.update(token_values(storage, _parent(_parent(path_for("rng_audit_log", **probe))), "run_id"))
    if not storage.exists(receipt_rel):
        if len(log_ids) != 1:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                         "no run receipt, and the RNG logs do not hold exactly one run_id", 1,
                         [{"log_run_ids": sorted(log_ids), "run_receipt": receipt_rel}])
            return ""
        return next(iter(log_ids))
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
                     "the run receipt's run_id has no RNG logs", 1,
                     [{"run_id": run_id, "log_run_ids": sorted(log_ids)}])
    return run_id


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


# ---------------------------------------------------------------------------------------------------------
# submit and collect


def _submit(storage: Storage, client, target: Target, layout: Layout, sample: list[tuple[int, str, int]],
            findings: s9.Findings) -> _Submitted:
    """Submit every task of the validation; the token covers every part file's name, size and time."""
    part_files = sorted(r for by_index in layout.parts.values() for r in by_index.values())
    tok = token_of("s9", storage.root_url, target.seed, target.manifest_fingerprint, target.parameter_hash,
                   target.run_id, *file_stamps(storage, part_files))
    reset_worker_memory_peaks(client)
    futures: dict[str, Any] = {}
    stages: dict[str, str] = {}
    submit_part_tasks(storage, client, layout, target.params, target.expect, tok, futures, stages)
    sampled = submit_plan_tasks(storage, client, sample, layout, target.parameter_hash, tok, futures, stages,
                                findings)
    surfaces = submit_surface_tasks(storage, client, target.parameter_hash, tok, futures, stages, findings)
    inputs = {**{ds: layout.rels[ds] for ds in (S4, S5, S6, S7, S8)},
              "outlet_catalogue": layout.catalogue_rel, "s3_requirements": layout.requirements_rel, **surfaces}
    submit_digest_tasks(storage, client, inputs, tok, futures, stages)
    return _Submitted(futures, stages, inputs, surfaces, sampled)


def _collect(storage: Storage, target: Target, layout: Layout, submitted: _Submitted, s3_sites: int | None,
             results: list[TaskResult | PartitionDigest], findings: s9.Findings) -> Validated:
    """The global checks over the tasks' results; everything the bundle and the report are made from."""
    tasks = [r for r in results if isinstance(r, TaskResult)]
    digests = {r.partition_path: r.sha256_hex for r in results if isinstance(r, PartitionDigest)}
    for r in sorted(tasks, key=lambda r: (r.part, r.kind, r.country)):
        findings.extend(r.findings)
    tables = sorted((r for r in tasks if r.kind == "tables"), key=lambda r: r.part)
    summaries = [r.summary for r in tables]
    s9.check_across_parts(summaries, findings)
    accounting, log_files = _rng_accounting(storage, target, tasks, findings)
    rows = {ds: sum(s["rows"].get(ds, 0) for s in summaries) for ds in s9.DATASETS}
    catalogue_rows = layout.catalogue.rows if layout.catalogue is not None else None
    s9.check_row_counts(rows[S8], catalogue_rows, s3_sites, findings)
    surfaces = [r for r in tasks if r.kind == "surface"]
    surface_counts = surface_checks(surfaces, target.params.params.dp, findings)
    partitions = {**submitted.surfaces, **{ds: layout.rels[ds] for ds in (S4, S5, S6, S7, S8)}}
    s9.check_receipts({ds: digests.get(rel) for ds, rel in partitions.items() if rel in digests},
                      _receipts(storage, target.ident), findings)
    files: dict[str, dict[str, Any]] = {}
    for r in results:
        files.update(r.files)
    files.update(log_files)
    countries, secs = _country_seconds(tasks, tables)
    seen = Validated(target, inputs=submitted.inputs, egress_rel=layout.rels[S8], digests=digests, files=files,
                     rows=rows, catalogue_rows=catalogue_rows, s3_sites=s3_sites, rng=accounting,
                     log_forms=dict(layout.log_forms), tasks=tasks,
                     parts=len(tables), countries=countries, secs=secs)
    plans = sorted((r for r in tasks if r.kind == "plan"), key=lambda r: r.country)
    counts = _counts(seen, len(layout.indices), summaries, plans, submitted.sampled)
    return dataclasses.replace(seen, counts={**counts, **surface_counts})


def _rng_accounting(storage: Storage, target: Target, tasks: list[TaskResult], findings: s9.Findings
                    ) -> tuple[RngAccounting, dict[str, dict[str, Any]]]:
    """Totals per family (and their run_ids), the audit record and the trace; the two logs' file digests."""
    parts = {label: sorted((r for r in tasks if r.kind == label), key=lambda r: r.part) for label in LABELS}
    totals: dict[str, dict[str, Any]] = {}
    for label in LABELS:
        ev = [r.summary for r in parts[label]]
        draws = [e["draws"] for e in ev]
        totals[label] = {"events": sum(e["events"] for e in ev), "blocks": sum(e["blocks"] for e in ev),
                         "draws": None if any(d is None for d in draws) else sum(draws)}
        run_ids = set().union(*(set(e["run_ids"]) for e in ev)) if ev else set()
        if target.run_id and run_ids - {target.run_id}:
            findings.add("identity_coherence", "E912_IDENTITY_COHERENCE", f"{label} events carry other run_ids",
                         1, [{"run_ids": sorted(run_ids)}])
    audit = trace_final = None
    log_files: dict[str, dict[str, Any]] = {}
    if target.run_id:
        ident = target.ident
        logs = {name: path_for(name, **ident.log_tokens) for name in ("rng_audit_log", "rng_trace_log")}
        data = {name: storage.read_bytes(rel) if storage.exists(rel) else None for name, rel in logs.items()}
        audit = s9.check_audit(data["rng_audit_log"], target.expect, findings)
        trace_final = s9.check_trace(data["rng_trace_log"], totals, target.expect, findings)
        log_files = {logs[name]: {"sha256_hex": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                     for name, b in data.items() if b is not None}
    hist: dict[str, int] = defaultdict(int)
    for r in parts[rng.S6_LABEL]:
        for a, n in r.summary.get("attempt_histogram", {}).items():
            hist[a] += n
    return RngAccounting(totals, trace_final, audit, parts, dict(hist)), log_files


def _country_seconds(tasks: list[TaskResult], tables: list[TaskResult]) -> tuple[dict[str, int], dict[str, float]]:
    """S7 rows per country, and task seconds per country: each part's wall time shared by rows."""
    wall_of_part: dict[int, float] = defaultdict(float)
    for r in tasks:
        if r.kind != "surface":  # surface parts are not the merchant parts
            wall_of_part[r.part] += r.wall_s
    countries: dict[str, int] = defaultdict(int)
    secs: dict[str, float] = defaultdict(float)
    for r in tables:
        per_country = r.summary["countries"]
        n_rows = max(sum(per_country.values()), 1)
        for c, n in per_country.items():
            countries[c] += n
            secs[c] += wall_of_part[r.part] * n / n_rows
    return dict(countries), dict(secs)


def _counts(seen: Validated, parts: int, summaries: list[dict[str, Any]], plans: list[TaskResult],
            sampled: int) -> dict[str, dict[str, Any]]:
    """What each check counted (s9_summary.json), but the surfaces'."""
    rows, acc = seen.rows, seen.rng
    return {
        "files": {"parts": parts, "files_hashed": len(seen.files)},
        "schema": {"rows": rows}, "sort": {"parts": parts}, "unique_keys": {"rows": rows},
        "egress_parity": {"site_locations_rows": rows[S8], "s7_rows": rows[S7]},
        "synthesis_parity": {"s5_rows": rows[S5], "s6_rows": rows[S6], "s7_rows": rows[S7]},
        "catalogue_coverage": {"catalogue_rows": seen.catalogue_rows},
        "row_counts": {"site_locations_rows": rows[S8], "catalogue_rows": seen.catalogue_rows,
                       "s3_n_sites": seen.s3_sites},
        "rng_s5": dict(acc.totals.get(rng.S5_LABEL, {})),
        "rng_s6": {**acc.totals.get(rng.S6_LABEL, {}),
                   "attempt_histogram": dict(sorted(acc.hist.items(), key=lambda kv: int(kv[0])))},
        "rng_totals": {"trace_final": acc.trace_final}, "rng_audit": {"records": 0 if acc.audit is None else 1},
        "point_in_pixel": {"points": rows[S7]},
        "point_in_country": {"points": rows[S7], "countries": len(seen.countries)},
        "finality": {"partitions": dict(sorted(seen.digests.items()))},
        "plan_quota": {k: sum(s.get("plan", {}).get(k, 0) for s in summaries) for k in ("rows", "pairs", "sites")},
        "plan_recompute": {"sample_size": seen.target.plan_sample, "pairs": sum(r.summary["pairs"] for r in plans),
                           "mismatched": sum(r.summary["mismatched"] for r in plans),
                           "countries": len(plans), "pairs_requested": sampled,
                           "plans": sum(r.summary["plans"] for r in plans),
                           "weighted_tiles": {r.country: r.summary["tiles"] for r in plans}},
    }


# ---------------------------------------------------------------------------------------------------------
# publish and report


def _finish(storage: Storage, client, seen: Validated, findings: s9.Findings, clock: _Clock,
            out) -> ValidationResult:
    """Publish the bundle (or, over a published PASS, the audit's), write the run report, print the result."""
    checksums = egress_checksums(seen)
    if not findings:
        reverify_egress(storage, checksums, findings)
    published = published_pass(storage, seen.target.manifest_fingerprint)
    outcome = (publish(storage, seen, findings, checksums) if published is None
               else publish_audit(storage, seen, findings, checksums, published))
    wall = time.perf_counter() - clock.t0
    target = seen.target
    result = ValidationResult(passed=outcome.passed, seed=target.seed,
                              manifest_fingerprint=target.manifest_fingerprint,
                              parameter_hash=target.parameter_hash, run_id=target.run_id or None,
                              failed_codes=findings.codes(), findings=findings.to_list(),
                              bundle_path=outcome.bundle_path, flag_sha256_hex=outcome.flag_sha256_hex,
                              audit_path=outcome.audit_path, rows=seen.rows.get(S8, 0), wall_seconds=wall,
                              checks=findings.summary(seen.counts))
    if target.parameter_hash is not None:
        result.report_path = _write_report(storage, client, result, seen, clock.started, wall,
                                           audit_digest=outcome.audit_digest)
    _print_result(result, storage, out)
    return result


def _write_report(storage: Storage, client, result: ValidationResult, seen: Validated, started: str,
                  wall: float, *, audit_digest: str | None = None) -> str:
    """The S9 run report; for an audit (``audit_digest`` given) the audit report beside it instead."""
    tasks = seen.tasks
    identity = {"seed": result.seed, "manifest_fingerprint": result.manifest_fingerprint,
                "parameter_hash": result.parameter_hash, "run_id": result.run_id}
    if result.audit_path:
        receipts = [{"partition_path": result.audit_path, "sha256_hex": audit_digest}]
    elif result.bundle_path:
        receipts = [{"partition_path": result.bundle_path, "sha256_hex": result.flag_sha256_hex}]
    else:
        receipts = []
    table = [{"country_iso": c, "rows": n, "seconds": round(seen.secs.get(c, 0.0), 4)}
             for c, n in seen.countries.items()]
    extra = {"status": "PASS" if result.passed else "FAIL", "failed_codes": result.failed_codes,
             "bundle_path": result.bundle_path, "plan_sample": seen.target.plan_sample, "parts": seen.parts,
             "country_seconds_basis": "part wall time shared among the part's countries by rows",
             "task_timings": [{"part": r.part, "task": r.kind, "seconds": round(r.wall_s, 4)}
                              for r in sorted(tasks, key=lambda r: (r.part, r.kind))]}
    tokens = {"seed": result.seed, "manifest_fingerprint": result.manifest_fingerprint,
              "parameter_hash": result.parameter_hash}
    path = None
    if result.audit_path is not None:
        extra.update(audit_path=result.audit_path, audit_of={"bundle_path": result.bundle_path,
                                                             "flag_sha256_hex": result.flag_sha256_hex})
        path = path_for("s9_audit_report", **tokens)
    return write_state_report(
        storage, "s9", identity, rows=result.rows, receipts=receipts, wall_seconds=wall,
        task_cpu_seconds=sum(r.cpu_s for r in tasks), workers=Workers.of(client),
        countries=sorted(table, key=lambda t: (-t["seconds"], t["country_iso"])), started_utc=started,
        extra=extra, path=path or report_path("s9", **tokens)).path


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
    from .session import add_cluster_options, add_command, add_identity_options, add_lease_options, add_root_options

    p = add_command(sub, "validate", summary="run S9 alone: validate published S5-S8 and RNG logs, write the bundle",
                    example="segment1b validate --data-root ./out --seed 42 --fingerprint F   (F: as `run` prints it)",
                    description="""
        Validate the published S5-S8 datasets and RNG logs of one run and publish the S9 validation bundle
        (with _passed.flag only when every check passes). Over a published PASS it is an audit: its own
        bundle and report beside the run's, which stay as they are. Exits 3 and prints the failing codes
        when a check fails.""")
    add_root_options(p)
    add_identity_options(p)
    p.add_argument("--parameter-hash", type=argtypes.hex64, default=None, metavar="H",
                   help="parameter_hash to validate (default: the only run of the seed/fingerprint, else the "
                        "one that published site_locations)")
    p.add_argument("--plan-sample", type=argtypes.count, default=PLAN_SAMPLE, metavar="N",
                   help=f"pairs whose S4 allocation plan is recomputed over all of their country's tiles, "
                   f"plus the pair with the most sites (default {PLAN_SAMPLE}; 0: off)")
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=main)


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
