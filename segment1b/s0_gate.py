"""S0 gate: no PASS flag, no read (contract §5).

The upstream ``validation_bundle_1A`` has the format of :mod:`segment1b.bundle` (``index.json`` and
``_passed.flag``, the SHA-256 over the indexed files in ASCII order of path).  :func:`gate_receipt`
verifies it with the gate's rules (:data:`segment1b.bundle.UPSTREAM`) and returns what the receipt records;
:func:`recorded_partition_digest` and :func:`check_partition_digest` compare the outlet catalogue with the
digest the bundle's ``egress_checksums.json`` records for it.

Verification is pure: it gets the index and flag bytes and a callable that returns a listed file's bytes
(``jobs/s0.py`` reads them through :class:`~segment1b.storage.Storage`).  Every failure is
``E301_NO_PASS_FLAG`` and says what is wrong: the flag is missing or malformed, the index is missing or
malformed, a listed file is missing, a file's digest differs from its index entry (names the file with
expected vs actual), or the flag's digest differs from the recomputed one (expected vs actual).
"""

from __future__ import annotations

from typing import Callable

from .bundle import EGRESS_CHECKSUMS_NAME, UPSTREAM, partition_entry, verify_bundle
from .errors import InputError

__all__ = ["gate_receipt", "recorded_partition_digest", "check_partition_digest"]

_CODE = "E301_NO_PASS_FLAG"


def gate_receipt(index_bytes: bytes | None, flag_bytes: bytes | None, read_file: Callable[[str], bytes], *,
                 manifest_fingerprint: str, bundle_path: str = "") -> dict:
    """Check the upstream bundle's flag against its indexed files; return the gate receipt (without timestamp).

    Parameters
    ----------
    index_bytes, flag_bytes, read_file
        As :func:`segment1b.bundle.verify_bundle`.
    manifest_fingerprint : str
        Recorded in the receipt.
    bundle_path : str
        Where the bundle is, for messages and the receipt.

    Returns
    -------
    dict
        ``{manifest_fingerprint, bundle_path, flag_sha256_hex, verified_files: [{path, sha256_hex, bytes}]}``.

    Raises
    ------
    InputError
        ``E301_NO_PASS_FLAG`` (see the module docstring for the cases).

    Examples
    --------
    >>> from segment1b.bundle import build_bundle
    >>> files = build_bundle({"a.json": ("a", b"{}")})
    >>> gate_receipt(files["index.json"], files["_passed.flag"], files.__getitem__,
    ...              manifest_fingerprint="0" * 64)["verified_files"][0]["path"]
    'a.json'
    """
    verified = verify_bundle(index_bytes, flag_bytes, read_file, rules=UPSTREAM, where=bundle_path)
    return {"manifest_fingerprint": manifest_fingerprint, "bundle_path": bundle_path,
            "flag_sha256_hex": verified.flag_sha256_hex, "verified_files": verified.files}


def recorded_partition_digest(checksums: bytes, partition_path: str) -> str | None:
    """The digest that a bundle's ``egress_checksums.json`` records for ``partition_path`` (None if absent).

    >>> recorded_partition_digest(b'{"partitions": [{"partition_path": "p/", "sha256_hex": "x"}]}', "p/")
    'x'
    """
    try:
        entry = partition_entry(checksums, partition_path)
    except ValueError as exc:
        raise InputError(_CODE, f"{EGRESS_CHECKSUMS_NAME} is malformed: {exc}", dataset=UPSTREAM.dataset,
                         hint=UPSTREAM.hint) from None
    return None if entry is None else entry.get("sha256_hex")


def check_partition_digest(expected: str, actual: str, *, dataset: str, path: str) -> None:
    """E301 when a partition's bytes differ from the digest its PASS bundle vouches for."""
    if expected != actual:
        raise InputError(_CODE, f"{dataset} differs from the partition the upstream bundle validated: "
                         f"{EGRESS_CHECKSUMS_NAME} says sha256 {expected}, the partition hashes to {actual}",
                         dataset=dataset, path=path, rows=[{"expected_sha256": expected, "actual_sha256": actual}],
                         hint="the catalogue was modified after validation; re-export it with its bundle")
