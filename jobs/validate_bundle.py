"""S9's bundle: its four documents from what a validation saw, and publishing them (contract §10).

:class:`Validated` is everything a validation saw; :func:`documents` turns it into the bundle members
(:data:`segment1b.bundle.BUNDLE_MEMBERS`), which :func:`segment1b.bundle.validation_bundle` renders
deterministically.  Then one of two ways (the policy is in :mod:`jobs.validate`):

* :func:`publish` — no PASS is published for the fingerprint yet: the bundle with its flag at the normal
  path when every check passed, else without a flag in a ``validation_failed_1B`` attempt folder;
* :func:`publish_audit` — a PASS is published (:func:`published_pass`): the validation is an audit, its
  bundle (never a flag) goes to a ``validation_audit_1B`` attempt folder and the published one is untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from segment1b import bundle, rng, s9, s9_manifest
from segment1b.contracts import path_for
from segment1b.errors import IntegrityError, PublishError
from segment1b.identity import RunIdentity
from segment1b.rng_events import MODULE_OF_LABEL
from segment1b.rng_log_files import suffix_of
from segment1b.storage import Storage

from .parameters import RunParameters
from .validate_tasks import LABELS, TaskResult

__all__ = ["Target", "RngAccounting", "Validated", "Outcome", "Published", "documents", "egress_checksums",
           "reverify_egress", "published_pass", "publish", "publish_audit"]

BUNDLE = "validation_bundle_1B"


@dataclass(frozen=True)
class RngAccounting:
    """The RNG logs as S9 added them up."""

    #: label -> {"events", "draws", "blocks"} over all parts
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: label -> the final trace row of the family (None: no trace log)
    trace_final: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    #: label -> the event tasks' results, in part order
    parts: dict[str, list[TaskResult]] = field(default_factory=dict)
    #: S6 attempts per site -> sites
    hist: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """What one validation checks: the run's identity, as far as it resolves, and the plan sample size."""

    seed: int
    manifest_fingerprint: str
    parameter_hash: str | None  # None when it could not be resolved (already a finding)
    run_id: str = ""  # "" when it could not be resolved (already a finding)
    params: RunParameters | None = None  # None when they could not be loaded (already a finding)
    plan_sample: int = 0

    @property
    def ident(self) -> RunIdentity:
        return RunIdentity(self.seed, self.manifest_fingerprint, self.parameter_hash, self.run_id)

    @property
    def expect(self) -> s9.Expect:
        return s9.Expect(self.seed, self.manifest_fingerprint, self.parameter_hash, self.run_id)

    @property
    def identity(self) -> dict[str, Any]:
        """The identity as the bundle and the run report record it."""
        return {"seed": self.seed, "manifest_fingerprint": self.manifest_fingerprint,
                "parameter_hash": self.parameter_hash, "run_id": self.run_id or None}


@dataclass(frozen=True)
class Validated:
    """What one validation saw: the bundle's documents and the run report are made from it.

    A validation whose identity cannot be resolved (no single parameter_hash, unreadable parameters) saw
    nothing but its findings: every field after ``target`` keeps its empty default.
    """

    target: Target
    #: dataset -> partition path of every input, in MANIFEST.json's order
    inputs: dict[str, str] = field(default_factory=dict)
    egress_rel: str | None = None
    #: partition path -> digest, and file path -> {"sha256_hex", "bytes"} of everything hashed
    digests: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: dataset -> rows (S5-S8)
    rows: dict[str, int] = field(default_factory=dict)
    catalogue_rows: int | None = None
    s3_sites: int | None = None
    rng: RngAccounting = field(default_factory=RngAccounting)
    #: event label -> form of its published parts ("zstd": .jsonl.zst, "plain": .jsonl)
    log_forms: dict[str, str] = field(default_factory=dict)
    #: check -> what it counted (s9_summary.json)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: for the run report: every check task, the number of parts, S7 rows and seconds per country
    tasks: list[TaskResult] = field(default_factory=list)
    parts: int = 0
    countries: dict[str, int] = field(default_factory=dict)
    secs: dict[str, float] = field(default_factory=dict)


class Outcome(NamedTuple):
    """Where a validation's bundle went."""

    passed: bool
    bundle_path: str | None
    flag_sha256_hex: str | None
    #: an audit's own bundle and its digest (None unless a PASS was already published)
    audit_path: str | None = None
    audit_digest: str | None = None


class Published(NamedTuple):
    """The PASS bundle published for a fingerprint: its flag digest and the two documents that say what it
    vouches for — or the error that keeps it from verifying."""

    path: str
    flag: str | None
    docs: dict[str, Any] | None
    error: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------------------
# the documents


def _files_under(files: dict[str, dict[str, Any]], rel: str) -> list[dict[str, Any]]:
    """The hashed files of partition ``rel``, by path relative to it, in path order."""
    return [{"path": p[len(rel):], **files[p]} for p in sorted(files) if p.startswith(rel)]


def _manifest(seen: Validated) -> dict[str, Any]:
    inputs = [{"dataset": name, "partition_path": rel, "sha256_hex": seen.digests.get(rel),
               "files": _files_under(seen.files, rel)} for name, rel in seen.inputs.items()]
    logs = [{"path": p, **seen.files[p]} for p in sorted(seen.files) if p.startswith("logs/")]
    params = seen.target.params
    parameters = None if not params else {
        "path": path_for("parameters", parameter_hash=seen.target.parameter_hash),
        "grid": params.grid.to_params(), "countries_sha256": params.countries_sha256,
        "reference_countries": path_for("reference_countries", countries_sha256=params.countries_sha256)}
    return {"bundle": BUNDLE, "validator_version": s9.VALIDATOR_VERSION, "identity": seen.target.identity,
            "parameters": parameters, "inputs": inputs, "logs": logs,
            # which file form each event log was published in (contract §9: one form per run)
            "rng_event_log_forms": {label: {"form": form, "suffix": suffix_of(form)}
                                    for label, form in sorted(seen.log_forms.items())}}


def _rng_accounting(acc: RngAccounting) -> dict[str, Any]:
    fams = {}
    for label in LABELS:
        per_part = [{"part": r.part, **{k: r.summary.get(k) for k in ("events", "draws", "blocks")}}
                    for r in acc.parts.get(label, [])]
        fams[label] = {"module": MODULE_OF_LABEL[label], **acc.totals.get(label, {}),
                       "trace_final": (acc.trace_final or {}).get(label), "parts": per_part}
    return {"algorithm": rng.ALGORITHM, "families": fams, "audit": acc.audit,
            "s6_attempt_histogram": dict(sorted(acc.hist.items(), key=lambda kv: int(kv[0])))}


def egress_checksums(seen: Validated) -> dict[str, Any]:
    """``egress_checksums.json``: the ``site_locations`` partition with the digest of each of its files."""
    rel = seen.egress_rel
    if rel is None:
        return {"partitions": []}
    return {"partitions": [{"dataset": s9.S8, "partition_path": rel, "sha256_hex": seen.digests.get(rel),
                            "files": _files_under(seen.files, rel)}]}


def documents(seen: Validated, findings: s9.Findings, checksums: dict[str, Any],
              audit_of: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle members (:data:`segment1b.bundle.BUNDLE_MEMBERS`) as JSON-ready objects."""
    summary = {"status": "FAIL" if findings else "PASS", "failed_codes": findings.codes(),
               "identity": seen.target.identity, "rows": seen.rows, "catalogue_rows": seen.catalogue_rows,
               "s3_n_sites": seen.s3_sites, "checks": findings.summary(seen.counts)}
    if audit_of is not None:
        summary["audit"] = audit_of
    return {"MANIFEST.json": _manifest(seen), "rng_accounting.json": _rng_accounting(seen.rng),
            "egress_checksums.json": checksums, "s9_summary.json": summary}


def reverify_egress(storage: Storage, checksums: dict[str, Any], findings: s9.Findings) -> None:
    """Hash site_locations again right before publishing a PASS: it must not have changed meanwhile."""
    for entry in checksums["partitions"]:
        rel = entry["partition_path"]
        actual = {name: storage.file_sha256(rel + name) for name in storage.list_files(rel)}
        try:
            bundle.verify_egress(bundle.json_member(checksums), rel, actual)
        except IntegrityError as exc:
            findings.add("finality", "E911_FINALITY", "site_locations changed while it was being validated",
                         len(exc.rows), exc.rows)
        h = hashlib.sha256()
        for name in sorted(actual):
            with storage.fs.open(storage.abspath(rel + name), "rb") as fh:
                h.update(fh.read())
        if entry["sha256_hex"] is not None and h.hexdigest() != entry["sha256_hex"]:
            findings.add("finality", "E911_FINALITY", "site_locations partition digest changed while it was "
                         "being validated", 1, [{"recorded": entry["sha256_hex"], "actual": h.hexdigest()}])


# ---------------------------------------------------------------------------------------------------------
# publishing


def _read_or_none(storage: Storage, rel: str) -> bytes | None:
    return storage.read_bytes(rel) if storage.exists(rel) else None


def _verify_published(storage: Storage, target: str) -> str:
    """The flag digest of the bundle at ``target`` (raises ``IntegrityError`` when it does not verify)."""

    def read(p: str) -> bytes:
        if not storage.exists(target + p):
            raise FileNotFoundError(p)
        return storage.read_bytes(target + p)

    return bundle.verify_bundle(_read_or_none(storage, target + bundle.INDEX_NAME),
                                _read_or_none(storage, target + bundle.FLAG_NAME), read,
                                rules=bundle.SEGMENT_1B, where=storage.url(target)).flag_sha256_hex


def published_pass(storage: Storage, fp: str) -> Published | None:
    """The PASS bundle published for ``fp`` (None when there is no flag)."""
    target = path_for(BUNDLE, manifest_fingerprint=fp)
    if not storage.exists(target + bundle.FLAG_NAME):
        return None
    try:
        flag = _verify_published(storage, target)
        docs = {name: json.loads(storage.read_bytes(target + name))
                for name in ("MANIFEST.json", bundle.EGRESS_CHECKSUMS_NAME)}
    except IntegrityError as exc:
        return Published(target, None, None, {"code": exc.code, "error": exc.message})
    except ValueError as exc:  # a member that verifies but is not JSON: not a bundle S9 wrote
        return Published(target, flag, None, {"code": "E908_BUNDLE_CONTENTS", "error": str(exc)[:300]})
    return Published(target, flag, docs, None)


def publish(storage: Storage, seen: Validated, findings: s9.Findings, checksums: dict[str, Any]) -> Outcome:
    """Publish the bundle: with its flag at the normal path when every check passed, else as a failed attempt.

    A PASS that another validation published meanwhile with other bytes is never replaced: the race is an
    E913 finding, and the bundle is published again as a failed attempt.
    """
    fp = seen.target.manifest_fingerprint
    for _ in range(2):
        passed = not findings
        files = bundle.validation_bundle(documents(seen, findings, checksums), passed=passed)
        digest = bundle.bundle_digest({p: files[p] for p in bundle.BUNDLE_MEMBERS})
        target = (path_for(BUNDLE, manifest_fingerprint=fp) if passed
                  else path_for("validation_failed_1B", manifest_fingerprint=fp, attempt=digest[:16]))
        try:
            storage.publish_bytes(files, target, BUNDLE, digest[:16])
        except PublishError as exc:
            if exc.code == "E_PUBLISH_IO" or not passed:
                raise
            findings.add("bundle", "E913_PUBLISH", "a different passing bundle is already published for this "
                         "fingerprint; a published PASS is never replaced", 1,
                         [{"path": target, "error": exc.message}])
            continue
        if not passed:
            return Outcome(False, target, None)
        try:
            return Outcome(True, target, _verify_published(storage, target))
        except IntegrityError as exc:  # pragma: no cover - storage corrupted the bundle as it was written
            findings.add("bundle", "E913_PUBLISH", "the published bundle does not verify", 1,
                         [{"code": exc.code, "error": exc.message}])
            return Outcome(False, target, None)
    return Outcome(False, None, None)  # pragma: no cover - the second round publishes a failed attempt


def publish_audit(storage: Storage, seen: Validated, findings: s9.Findings, checksums: dict[str, Any],
                  published: Published) -> Outcome:
    """A validation over a published PASS is an audit: publish its own bundle, touch nothing else.

    It passes when every check passes and it vouches for the bytes the published bundle vouches for (it may
    list more); otherwise E913 (a genuinely different outcome over the same fingerprint).
    """
    if not findings and published.error is not None:
        findings.add("bundle", "E913_PUBLISH", "the published PASS bundle of this fingerprint does not "
                     "verify; a published PASS is never replaced", 1,
                     [{"path": published.path, **published.error}])
    elif not findings:
        docs = {"MANIFEST.json": _manifest(seen), bundle.EGRESS_CHECKSUMS_NAME: checksums}
        now = {name: json.loads(bundle.json_member(doc)) for name, doc in docs.items()}  # as published
        diff = s9_manifest.vouched_differences(published.docs, now)
        findings.add("bundle", "E913_PUBLISH", "a different passing bundle is already published for this "
                     "fingerprint: it vouches for other bytes than this validation saw; a published PASS is "
                     "never replaced", len(diff), diff)
    audit_of = {"bundle_path": published.path, "flag_sha256_hex": published.flag}
    files = bundle.validation_bundle(documents(seen, findings, checksums, audit_of),
                                     passed=False)  # a flag only ever at the normal path
    digest = bundle.bundle_digest({p: files[p] for p in bundle.BUNDLE_MEMBERS})
    target = path_for("validation_audit_1B", manifest_fingerprint=seen.target.manifest_fingerprint,
                      attempt=digest[:16])
    storage.publish_bytes(files, target, "validation_audit_1B", digest[:16])
    return Outcome(not findings, published.path, published.flag, target, digest)
