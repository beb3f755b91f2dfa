"""S0 gate job: verify the upstream PASS flag, then write ``s0_gate_receipt_1B`` (contract §5).

No pass, no read: :func:`run_s0` reads only the small files of ``validation_bundle_1A`` through
:class:`~segment1b.storage.Storage` and checks them with :func:`segment1b.s0_gate.gate_receipt`.  When the
bundle records the digest of the outlet catalogue partition (``egress_checksums.json``, as the generator
writes it) and a seed is given, the partition's bytes are checked against it too, so a catalogue edited
after validation is refused here, before any row is read.

The receipt is write-once: a later run that verifies the same bundle keeps the first receipt (only its
timestamp would differ); a different verification result for the same fingerprint is refused
(``E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL``).  The run report (``s0_run_report.json``) is rewritten
by every successful run.  Nothing is written when the gate fails.

Command: ``segment1b gate --data-root D --fingerprint F [--seed N]`` (no cluster needed).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
import time
from typing import Any

from segment1b.contracts import path_for
from segment1b.errors import InputError, PublishError
from segment1b.identity import utc_now
from segment1b.bundle import EGRESS_CHECKSUMS_NAME, FLAG_NAME, INDEX_NAME
from segment1b.s0_gate import check_partition_digest, gate_receipt, recorded_partition_digest
from segment1b.storage import Storage, canonical_json

from .runtime import write_state_report

__all__ = ["run_s0", "register"]

RECEIPT_TIME_FIELD = "verified_utc"


def _read_optional(storage: Storage, rel: str) -> bytes | None:
    return storage.read_bytes(rel) if storage.exists(rel) else None


def run_s0(storage: Storage, *, manifest_fingerprint: str, seed: int | None = None, out=None) -> dict[str, Any]:
    """Verify the upstream bundle's ``_passed.flag`` and publish the gate receipt.

    Parameters
    ----------
    storage : Storage
        The data root.
    manifest_fingerprint : str
        Which upstream manifest (64 hex).
    seed : int, optional
        When given, the ``outlet_catalogue`` partition of this seed is checked against the digest that the
        bundle records for it (if it records one).
    out : text stream, optional
        Where the one-line result goes (``None``: stdout).

    Returns
    -------
    dict
        ``receipt`` (as published), ``receipt_path``, ``report_path``, ``catalogue`` (the partition check).

    Raises
    ------
    InputError
        ``E301_NO_PASS_FLAG``: no bundle, no flag, malformed flag or index, a listed file missing or
        modified, the flag digest differs from the files, or the catalogue differs from the digest the
        bundle records.  ``E305_PARQUET_UNREADABLE`` when the bundle vouches for a catalogue partition that
        is not there.
    PublishError
        ``E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL`` when a different receipt exists for the fingerprint.
    """
    out = out if out is not None else sys.stdout
    t0, c0 = time.perf_counter(), time.process_time()
    started = utc_now()
    bundle = path_for("validation_bundle_1A", manifest_fingerprint=manifest_fingerprint)
    receipt = _verify_bundle(storage, bundle, manifest_fingerprint)
    catalogue = _check_catalogue(storage, bundle, receipt, manifest_fingerprint, seed)
    rel = path_for("s0_gate_receipt_1B", manifest_fingerprint=manifest_fingerprint)
    published = _publish_receipt(storage, rel, {**receipt, RECEIPT_TIME_FIELD: utc_now()})
    report = write_state_report(
        storage, "s0", {"manifest_fingerprint": manifest_fingerprint, "seed": seed},
        rows=len(receipt["verified_files"]), receipts=[{"partition_path": rel, "sha256_hex": published["sha256_hex"]}],
        wall_seconds=time.perf_counter() - t0, task_cpu_seconds=time.process_time() - c0, started_utc=started,
        extra={"flag_sha256_hex": receipt["flag_sha256_hex"], "bundle_path": bundle,
               "verified_files": receipt["verified_files"], "catalogue": catalogue,
               "receipt_reused": published["reused"]})
    print(f"  S0 gate PASS: {len(receipt['verified_files'])} bundle files match sha256_hex = "
          f"{receipt['flag_sha256_hex'][:16]}..." + (" and the catalogue partition digest" if
                                                   catalogue["checked_against_bundle"] else ""), file=out)
    return {"receipt": published["receipt"], "receipt_path": rel, "report_path": report.path, "catalogue": catalogue}


def _bundle_member(storage: Storage, bundle: str):
    """A reader of the files listed in a bundle (``FileNotFoundError`` for a missing one)."""

    def read_member(path: str) -> bytes:
        rel = posixpath.join(bundle, path)
        if not storage.exists(rel):
            raise FileNotFoundError(path)
        return storage.read_bytes(rel)

    return read_member


def _verify_bundle(storage: Storage, bundle: str, manifest_fingerprint: str) -> dict[str, Any]:
    """The upstream bundle's verification receipt (E301 when there is no bundle or it does not verify)."""
    if not storage.is_published(bundle):
        raise InputError("E301_NO_PASS_FLAG", "the upstream validation bundle does not exist, so the outlet "
                         "catalogue has not passed validation and must not be read",
                         dataset="validation_bundle_1A", path=storage.url(bundle),
                         hint="publish the upstream 1A bundle with its _passed.flag (or run `segment1b generate`)")
    return gate_receipt(_read_optional(storage, bundle + INDEX_NAME), _read_optional(storage, bundle + FLAG_NAME),
                        _bundle_member(storage, bundle), manifest_fingerprint=manifest_fingerprint, bundle_path=bundle)


def _check_catalogue(storage: Storage, bundle: str, receipt: dict[str, Any], manifest_fingerprint: str,
                     seed: int | None) -> dict[str, Any]:
    """The catalogue partition of ``seed`` against the digest the bundle records for it, if it records one."""
    catalogue: dict[str, Any] = {"checked_against_bundle": False}
    if seed is None:
        return catalogue
    target = path_for("outlet_catalogue", seed=seed, manifest_fingerprint=manifest_fingerprint)
    catalogue["partition_path"] = target
    listed = {f["path"] for f in receipt["verified_files"]}
    if EGRESS_CHECKSUMS_NAME not in listed:
        return catalogue
    expected = recorded_partition_digest(_bundle_member(storage, bundle)(EGRESS_CHECKSUMS_NAME), target)
    if expected is None:
        return catalogue
    if not storage.is_published(target):
        raise InputError("E305_PARQUET_UNREADABLE", "the upstream bundle vouches for an outlet_catalogue "
                         "partition that does not exist", dataset="outlet_catalogue", path=storage.url(target))
    actual = storage.partition_digest(target)
    check_partition_digest(expected, actual, dataset="outlet_catalogue", path=storage.url(target))
    catalogue.update({"checked_against_bundle": True, "sha256_hex": actual})
    return catalogue


def _publish_receipt(storage: Storage, rel: str, receipt: dict) -> dict:
    """Write-once receipt; an existing one that differs only in its timestamp is kept as it is."""
    if storage.exists(rel):
        try:
            old = storage.read_json(rel)
        except (ValueError, OSError):
            old = None
        if isinstance(old, dict) and _without_time(old) == _without_time(receipt):
            return {"receipt": old, "sha256_hex": storage.file_sha256(rel), "reused": True}
        raise PublishError("E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL", "s0_gate_receipt_1B is already published "
                           "for this fingerprint with a different verification result (the upstream bundle changed "
                           "after it was first verified)", dataset="s0_gate_receipt_1B", path=storage.url(rel),
                           hint="an upstream bundle must not change once verified; investigate before deleting "
                                "the receipt")
    data = (json.dumps(receipt, indent=2) + "\n").encode("utf-8")
    return {"receipt": receipt, "sha256_hex": storage.publish_file(rel, data, "s0_gate_receipt_1B"), "reused": False}


def _without_time(receipt: dict) -> bytes:
    return canonical_json({k: v for k, v in receipt.items() if k != RECEIPT_TIME_FIELD})


# -- command line --------------------------------------------------------------------------------------

def register(subparsers) -> None:
    """``segment1b gate``: check an upstream bundle's PASS flag and write the S0 receipt."""
    from jobs import argtypes
    from jobs.session import add_lease_options, add_root_options

    p = subparsers.add_parser("gate", help="S0: verify the upstream PASS flag of an outlet catalogue",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_root_options(p)
    p.add_argument("--fingerprint", type=argtypes.hex64, required=True, metavar="HEX64",
                   help="manifest_fingerprint of the catalogue")
    p.add_argument("--seed", type=argtypes.seed, default=None,
                   help="also check this seed's outlet_catalogue partition against the digest the bundle records")
    add_lease_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace, out=None) -> int:
    from jobs.session import storage_from_args

    storage = storage_from_args(args)
    with storage.lease(path_for("lease_segment", manifest_fingerprint=args.fingerprint), out=out):
        result = run_s0(storage, manifest_fingerprint=args.fingerprint, seed=args.seed, out=out)
    print(f"  receipt: {result['receipt_path']}", file=out if out is not None else sys.stdout)
    return 0
