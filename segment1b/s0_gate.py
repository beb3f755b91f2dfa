"""S0 gate: no PASS flag, no read (contract §5).

A validation bundle is a folder with ``index.json`` (a JSON list of ``{artifact_id, path, sha256_hex}``,
sorted by path) and ``_passed.flag``, one line ``sha256_hex = <hex64>``: the SHA-256 over the bytes of the
files listed in the index, concatenated in ASCII order of their paths.  This module both writes that
format (:func:`build_bundle`, used by the generator for ``validation_bundle_1A``) and verifies it
(:func:`verify_bundle`), so the two cannot drift apart.

Verification is pure: it gets the index and flag bytes and a callable that returns a listed file's bytes
(``jobs/s0.py`` reads them through :class:`~segment1b.storage.Storage`).  Every failure is
``E301_NO_PASS_FLAG`` and says what is wrong: the flag is missing or malformed, the index is missing or
malformed, a listed file is missing, a file's digest differs from its index entry (names the file with
expected vs actual), or the flag's digest differs from the recomputed one (expected vs actual).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Callable, Mapping

from .errors import InputError

__all__ = ["INDEX_NAME", "FLAG_NAME", "EGRESS_CHECKSUMS_NAME", "render_flag", "parse_flag", "parse_index",
           "build_bundle", "verify_bundle", "recorded_partition_digest", "check_partition_digest"]

INDEX_NAME = "index.json"
FLAG_NAME = "_passed.flag"
# Optional bundle member recording the digests of the partitions the bundle vouches for (written by the
# generator; read by the gate when present).
EGRESS_CHECKSUMS_NAME = "egress_checksums.json"

FLAG_PATTERN = re.compile(rb"\Asha256_hex = ([0-9a-f]{64})\n?\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_CODE = "E301_NO_PASS_FLAG"
_DATASET = "validation_bundle_1A"
_HINT = "re-export the upstream bundle (or regenerate the catalogue); never edit bundle files by hand"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ascii_order(path: str) -> bytes:
    return path.encode("utf-8")  # byte order == ASCII order for ASCII paths


def render_flag(digest: str) -> bytes:
    """The ``_passed.flag`` bytes for a bundle digest.

    >>> render_flag("ab" * 32)[:16]
    b'sha256_hex = aba'
    """
    if not _HEX64.match(digest):
        raise ValueError(f"digest must be 64 lowercase hex characters, got {digest!r}")
    return f"sha256_hex = {digest}\n".encode("ascii")


def parse_flag(data: bytes | None, *, where: str = "") -> str:
    """The digest a ``_passed.flag`` names.

    Raises
    ------
    InputError
        ``E301_NO_PASS_FLAG`` when the flag is missing (``None``) or not exactly ``sha256_hex = <hex64>``.

    >>> parse_flag(b"sha256_hex = " + b"0" * 64 + b"\\n") == "0" * 64
    True
    """
    if data is None:
        raise InputError(_CODE, f"{FLAG_NAME} is missing: the upstream bundle has not passed validation, so the "
                         "outlet catalogue must not be read", dataset=_DATASET, path=where or None, hint=_HINT)
    m = FLAG_PATTERN.match(data)
    if not m:
        raise InputError(_CODE, f"{FLAG_NAME} is malformed: expected one line 'sha256_hex = <64 lowercase hex>', "
                         f"found {data[:100]!r}", dataset=_DATASET, path=where or None, hint=_HINT)
    return m.group(1).decode("ascii")


def parse_index(data: bytes | None, *, where: str = "") -> list[dict]:
    """The entries of ``index.json``, in ASCII order of path.

    Each entry needs a relative ``path`` (no ``..``, not the flag itself); ``sha256_hex`` is optional but
    checked when present.

    Raises
    ------
    InputError
        ``E301_NO_PASS_FLAG`` when the index is missing, is not a JSON list of objects with a path, or lists
        a path twice, an unsafe path or ``_passed.flag``.
    """

    def bad(what: str, rows=None):
        return InputError(_CODE, f"{INDEX_NAME} {what}", dataset=_DATASET, path=where or None, rows=rows,
                          hint=_HINT)

    if data is None:
        raise bad("is missing, so the flag cannot be checked")
    try:
        entries = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                for e in entries):
        raise bad("must be a JSON list of objects with a string 'path' (and 'artifact_id', 'sha256_hex')")
    paths = [e["path"] for e in entries]
    unsafe = [{"path": p} for p in paths
              if not p or p.startswith("/") or ".." in p.split("/") or posixpath.normpath(p) != p or p == FLAG_NAME]
    if unsafe:
        raise bad("lists paths that are not plain relative paths inside the bundle (or the flag itself)", unsafe)
    dups = sorted({p for p in paths if paths.count(p) > 1})
    if dups:
        raise bad("lists a path more than once", [{"path": p} for p in dups])
    bad_hex = [{"path": e["path"], "sha256_hex": e["sha256_hex"]} for e in entries
               if "sha256_hex" in e and not (isinstance(e["sha256_hex"], str) and _HEX64.match(e["sha256_hex"]))]
    if bad_hex:
        raise bad("has sha256_hex values that are not 64 lowercase hex characters", bad_hex)
    return sorted((dict(e) for e in entries), key=lambda e: _ascii_order(e["path"]))


def build_bundle(members: Mapping[str, tuple[str, bytes]]) -> dict[str, bytes]:
    """Files of a bundle: the members plus ``index.json`` and ``_passed.flag``.

    Parameters
    ----------
    members : mapping
        path -> (artifact_id, bytes).

    Returns
    -------
    dict
        path -> bytes, ready for :meth:`Storage.publish_bytes`.

    Examples
    --------
    >>> files = build_bundle({"a.json": ("a", b"{}")})
    >>> sorted(files), verify_bundle(files["index.json"], files.__getitem__, files["_passed.flag"],
    ...                              manifest_fingerprint="0" * 64)["verified_files"][0]["path"]
    (['_passed.flag', 'a.json', 'index.json'], 'a.json')
    """
    paths = sorted(members, key=_ascii_order)
    for p in paths:
        if p in (INDEX_NAME, FLAG_NAME):
            raise ValueError(f"{p} is written by build_bundle; it cannot be a member")
    index = [{"artifact_id": members[p][0], "path": p, "sha256_hex": _sha256(members[p][1])} for p in paths]
    h = hashlib.sha256()
    for p in paths:
        h.update(members[p][1])
    files = {p: members[p][1] for p in paths}
    files[INDEX_NAME] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    files[FLAG_NAME] = render_flag(h.hexdigest())
    return files


def verify_bundle(index_bytes: bytes | None, read_file: Callable[[str], bytes], flag_bytes: bytes | None, *,
                  manifest_fingerprint: str, bundle_path: str = "") -> dict:
    """Check a bundle's flag against its indexed files; return the gate receipt (without timestamp).

    Parameters
    ----------
    index_bytes, flag_bytes : bytes or None
        Contents of ``index.json`` and ``_passed.flag``; ``None`` when the file does not exist.
    read_file : callable
        ``read_file(path)`` returns the bytes of a file listed in the index (path relative to the bundle)
        and raises ``FileNotFoundError`` when it does not exist.
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
    """
    # the flag first: without a flag there is nothing to verify (and its absence is the common case)
    expected = parse_flag(flag_bytes, where=posixpath.join(bundle_path, FLAG_NAME))
    entries = parse_index(index_bytes, where=posixpath.join(bundle_path, INDEX_NAME))
    h = hashlib.sha256()
    verified, missing, tampered = [], [], []
    for e in entries:
        try:
            data = read_file(e["path"])
        except FileNotFoundError:
            missing.append({"path": e["path"]})
            continue
        digest = _sha256(data)
        if "sha256_hex" in e and e["sha256_hex"] != digest:
            tampered.append({"path": e["path"], "expected_sha256": e["sha256_hex"], "actual_sha256": digest})
        h.update(data)
        verified.append({"path": e["path"], "sha256_hex": digest, "bytes": len(data)})
    if missing:
        raise InputError(_CODE, f"{len(missing)} file(s) listed in {INDEX_NAME} are missing from the bundle",
                         dataset=_DATASET, path=bundle_path or None, rows=missing, hint=_HINT)
    if tampered:
        raise InputError(_CODE, f"{len(tampered)} bundle file(s) differ from their {INDEX_NAME} digest "
                         "(modified after validation)", dataset=_DATASET, path=bundle_path or None,
                         rows=tampered, hint=_HINT)
    actual = h.hexdigest()
    if actual != expected:
        raise InputError(_CODE, f"{FLAG_NAME} does not match the bundle: the flag says sha256_hex = {expected}, the "
                         f"files listed in {INDEX_NAME} hash to {actual}", dataset=_DATASET,
                         path=posixpath.join(bundle_path, FLAG_NAME) if bundle_path else None,
                         rows=[{"expected_sha256": expected, "actual_sha256": actual}], hint=_HINT)
    return {"manifest_fingerprint": manifest_fingerprint, "bundle_path": bundle_path,
            "flag_sha256_hex": expected, "verified_files": verified}


def recorded_partition_digest(checksums: bytes, partition_path: str) -> str | None:
    """The digest that a bundle's ``egress_checksums.json`` records for ``partition_path`` (None if absent).

    >>> recorded_partition_digest(b'{"partitions": [{"partition_path": "p/", "sha256_hex": "x"}]}', "p/")
    'x'
    """
    try:
        doc = json.loads(checksums)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(_CODE, f"{EGRESS_CHECKSUMS_NAME} is not valid JSON: {exc}", dataset=_DATASET) from None
    for entry in doc.get("partitions", []) if isinstance(doc, dict) else []:
        if isinstance(entry, dict) and entry.get("partition_path") == partition_path:
            return entry.get("sha256_hex")
    return None


def check_partition_digest(expected: str, actual: str, *, dataset: str, path: str) -> None:
    """E301 when a partition's bytes differ from the digest its PASS bundle vouches for."""
    if expected != actual:
        raise InputError(_CODE, f"{dataset} differs from the partition the upstream bundle validated: "
                         f"{EGRESS_CHECKSUMS_NAME} says sha256 {expected}, the partition hashes to {actual}",
                         dataset=dataset, path=path, rows=[{"expected_sha256": expected, "actual_sha256": actual}],
                         hint="the catalogue was modified after validation; re-export it with its bundle")
