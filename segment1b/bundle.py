"""The validation bundle format: ``index.json``, ``_passed.flag`` and ``egress_checksums.json`` (contract §5, §10).

One format serves both bundles this project meets: ``validation_bundle_1A`` (upstream; written by the
generator, checked by the S0 gate) and ``validation_bundle_1B`` (written by S9, checked by the reader and
``segment1b verify-flag``).  A bundle is a folder of files with ``index.json``, a JSON list of
``{artifact_id, path, sha256_hex}`` sorted by path, and ``_passed.flag``, one line ``sha256_hex = <hex64>``:
the SHA-256 over the bytes of the indexed files, concatenated in ASCII order of their paths.  Writing
(:func:`build_bundle`) and checking (:func:`verify_bundle`) live here together, so they cannot drift apart.

The two bundles differ only in who reads them, which :class:`Rules` says: the dataset and failure codes of
the errors (S0: ``E301_NO_PASS_FLAG`` for everything; S9 consumers: ``E910_FLAG``, ``E909_INDEX``,
``E908_BUNDLE_CONTENTS``) and how strict the index must be (S9 writes flat, complete, sorted entries and
four required members, :data:`BUNDLE_MEMBERS`; an upstream bundle may nest paths and omit digests).

Everything here is pure: bytes come in (and a callable that reads a listed file), bytes or errors go out.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError, IntegrityError, Segment1BError

__all__ = ["INDEX_NAME", "FLAG_NAME", "EGRESS_CHECKSUMS_NAME", "BUNDLE_MEMBERS", "Rules", "UPSTREAM", "SEGMENT_1B",
           "BundleFormatError", "VerifiedBundle", "render_flag", "parse_flag", "parse_index", "bundle_digest",
           "build_bundle", "jsonable", "json_member", "validation_bundle", "verify_bundle", "partition_entry",
           "verify_egress"]

INDEX_NAME = "index.json"
FLAG_NAME = "_passed.flag"
#: the member that records the digests of the partitions a bundle vouches for (the generator writes it for
#: the catalogue, S9 for ``site_locations`` with every file)
EGRESS_CHECKSUMS_NAME = "egress_checksums.json"
#: the members of an S9 bundle: path -> artifact_id
BUNDLE_MEMBERS = {"MANIFEST.json": "manifest", EGRESS_CHECKSUMS_NAME: "egress_checksums",
                  "rng_accounting.json": "rng_accounting", "s9_summary.json": "s9_summary"}

FLAG_PATTERN = re.compile(rb"\Asha256_hex = ([0-9a-f]{64})\n?\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Rules:
    """How one reader checks a bundle: the dataset and codes of its errors, and how strict the index is."""

    dataset: str
    error: type[Segment1BError]
    flag_code: str
    index_code: str
    contents_code: str
    #: what a missing flag means to this reader (the message's second half)
    no_flag: str
    hint: str | None = None
    no_flag_hint: str | None = None
    #: members the index must list
    members: tuple[str, ...] = ()
    #: every entry complete (artifact_id, sha256_hex), paths flat and sorted (the bundles S9 writes)
    strict: bool = False

    def code(self, part: str) -> str:
        return {"flag": self.flag_code, "index": self.index_code, "contents": self.contents_code}[part]


#: the upstream bundle at the S0 gate (contract §5): every failure is E301
UPSTREAM = Rules("validation_bundle_1A", InputError, "E301_NO_PASS_FLAG", "E301_NO_PASS_FLAG", "E301_NO_PASS_FLAG",
                 no_flag="the upstream bundle has not passed validation, so the outlet catalogue must not be read",
                 hint="re-export the upstream bundle (or regenerate the catalogue); never edit bundle files by hand")
#: the S9 bundle, for its consumers (contract §10)
SEGMENT_1B = Rules("validation_bundle_1B", IntegrityError, "E910_FLAG", "E909_INDEX", "E908_BUNDLE_CONTENTS",
                   no_flag="this validation did not pass (or is not published)",
                   no_flag_hint="run `segment1b validate` and read s9_summary.json of the failed bundle",
                   members=tuple(BUNDLE_MEMBERS), strict=True)


class BundleFormatError(ValueError):
    """What is wrong with a bundle, before a reader's :class:`Rules` give it a code.

    ``part`` is ``"flag"``, ``"index"`` or ``"contents"``; ``file`` the bundle file at fault (``None``: the
    bundle as a whole).
    """

    def __init__(self, part: str, file: str | None, message: str, rows: list[dict] | None = None):
        super().__init__(message)
        self.part, self.file, self.message, self.rows = part, file, message, rows


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose flag matched: the flag's digest and every indexed file, in ASCII order of path."""

    flag_sha256_hex: str
    #: ``{path, sha256_hex, bytes}`` of each indexed file
    files: list[dict[str, Any]]


def _ascii_order(path: str) -> bytes:
    return path.encode("utf-8")  # byte order == ASCII order for ASCII paths


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# writing


def render_flag(digest: str) -> bytes:
    """The ``_passed.flag`` bytes for a bundle digest.

    >>> render_flag("ab" * 32)[:16]
    b'sha256_hex = aba'
    """
    if not _HEX64.match(digest):
        raise ValueError(f"digest must be 64 lowercase hex characters, got {digest!r}")
    return f"sha256_hex = {digest}\n".encode("ascii")


def bundle_digest(members: Mapping[str, bytes]) -> str:
    """SHA-256 over the members' bytes in ASCII order of path (what ``_passed.flag`` names)."""
    h = hashlib.sha256()
    for path in sorted(members, key=_ascii_order):
        h.update(members[path])
    return h.hexdigest()


def build_bundle(members: Mapping[str, tuple[str, bytes]], *, passed: bool = True) -> dict[str, bytes]:
    """Files of a bundle: the members, ``index.json`` and, when ``passed``, ``_passed.flag``.

    Parameters
    ----------
    members : mapping
        path -> (artifact_id, bytes).
    passed : bool
        Write the flag (a failed validation publishes its bundle without one).

    Returns
    -------
    dict
        path -> bytes, ready for :meth:`Storage.publish_bytes`.

    Examples
    --------
    >>> files = build_bundle({"a.json": ("a", b"{}")})
    >>> sorted(files), verify_bundle(files["index.json"], files["_passed.flag"], files.__getitem__,
    ...                              rules=UPSTREAM).files[0]["path"]
    (['_passed.flag', 'a.json', 'index.json'], 'a.json')
    """
    paths = sorted(members, key=_ascii_order)
    for p in paths:
        if p in (INDEX_NAME, FLAG_NAME):
            raise ValueError(f"{p} is written by build_bundle; it cannot be a member")
    index = [{"artifact_id": members[p][0], "path": p, "sha256_hex": _sha256(members[p][1])} for p in paths]
    files = {p: members[p][1] for p in paths}
    digest = bundle_digest(files)
    files[INDEX_NAME] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    if passed:
        files[FLAG_NAME] = render_flag(digest)
    return files


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars as Python values, non-finite floats as text and other objects as ``str``.

    >>> jsonable({1: (np.int64(2), float("nan"))})
    {'1': [2, 'nan']}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return repr(obj)  # JSON has no NaN/inf
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def json_member(obj: Any) -> bytes:
    """A bundle member's bytes: sorted keys, two-space indent, final newline (deterministic)."""
    return (json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def validation_bundle(docs: Mapping[str, Any], *, passed: bool) -> dict[str, bytes]:
    """The S9 bundle: :data:`BUNDLE_MEMBERS` as JSON (:func:`json_member`), ``index.json`` and the flag.

    Raises
    ------
    IntegrityError
        ``E908_BUNDLE_CONTENTS`` when a member is missing or unexpected (a bug in the caller).

    Examples
    --------
    >>> files = validation_bundle({p: {} for p in BUNDLE_MEMBERS}, passed=True)
    >>> verify_bundle(files[INDEX_NAME], files[FLAG_NAME], files.__getitem__, rules=SEGMENT_1B) \\
    ...     .flag_sha256_hex == bundle_digest({p: files[p] for p in BUNDLE_MEMBERS})
    True
    """
    if set(docs) != set(BUNDLE_MEMBERS):
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"bundle members must be {sorted(BUNDLE_MEMBERS)}, got "
                             f"{sorted(docs)}; this is a bug in segment1b, please report it",
                             dataset=SEGMENT_1B.dataset)
    return build_bundle({p: (BUNDLE_MEMBERS[p], json_member(docs[p])) for p in BUNDLE_MEMBERS}, passed=passed)


# ---------------------------------------------------------------------------------------------------------
# reading


def parse_flag(data: bytes | None) -> str:
    """The digest a ``_passed.flag`` names.

    Raises
    ------
    BundleFormatError
        When the flag is missing (``None``) or not exactly ``sha256_hex = <hex64>`` (one final newline allowed).

    >>> parse_flag(b"sha256_hex = " + b"0" * 64 + b"\\n") == "0" * 64
    True
    """
    if data is None:
        raise BundleFormatError("flag", FLAG_NAME, f"{FLAG_NAME} is missing")
    m = FLAG_PATTERN.match(data)
    if not m:
        raise BundleFormatError("flag", FLAG_NAME, f"{FLAG_NAME} is malformed: expected one line 'sha256_hex = "
                                f"<64 lowercase hex>', found {data[:100]!r}")
    return m.group(1).decode("ascii")


def parse_index(data: bytes | None, *, strict: bool = False, members: tuple[str, ...] = ()) -> list[dict]:
    """The entries of ``index.json``, in ASCII order of path.

    Each entry needs a relative ``path`` (no ``..``, not the flag itself); ``sha256_hex`` is checked when
    present.  ``strict`` (the bundles S9 writes) also wants every entry to carry ``artifact_id`` and
    ``sha256_hex``, the entries sorted, and flat file names; ``members`` must all be listed.

    Raises
    ------
    BundleFormatError
        When the index is missing, is not a JSON list of objects with a path, lists a path twice, an unsafe
        path or ``_passed.flag``, or breaks the strict rules (part ``"contents"`` for a missing member).

    >>> [e["path"] for e in parse_index(b'[{"path": "b"}, {"path": "a/c"}]')]
    ['a/c', 'b']
    """

    def bad(what: str, rows=None) -> BundleFormatError:
        return BundleFormatError("index", INDEX_NAME, f"{INDEX_NAME} {what}", rows)

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
    if strict:
        _strict_index(entries, paths, members, bad)
    return sorted((dict(e) for e in entries), key=lambda e: _ascii_order(e["path"]))


def _strict_index(entries: list[dict], paths: list[str], members: tuple[str, ...], bad) -> None:
    """The rules of the bundles S9 writes: complete entries, sorted, flat, every member listed."""
    incomplete = [{"path": e["path"]} for e in entries
                  if not isinstance(e.get("artifact_id"), str) or "sha256_hex" not in e]
    if incomplete:
        raise bad("has entries without a string 'artifact_id' and a 'sha256_hex'", incomplete)
    if paths != sorted(paths, key=_ascii_order):
        raise bad("paths are not sorted in ASCII order", [{"paths": paths}])
    nested = [{"path": p} for p in paths if "/" in p or p.startswith(".") or p == INDEX_NAME]
    if nested:
        raise bad("lists files outside the bundle folder or itself", nested)
    missing = sorted(set(members) - set(paths))
    if missing:
        raise BundleFormatError("contents", INDEX_NAME, f"{INDEX_NAME} does not list {missing}")


def _verify(index_bytes: bytes | None, flag_bytes: bytes | None, read_file: Callable[[str], bytes],
            rules: Rules) -> VerifiedBundle:
    expected = parse_flag(flag_bytes)  # the flag first: without one there is nothing to verify
    h = hashlib.sha256()
    verified, missing, changed = [], [], []
    for e in parse_index(index_bytes, strict=rules.strict, members=rules.members):
        try:
            data = read_file(e["path"])
        except FileNotFoundError:
            missing.append({"path": e["path"]})
            continue
        digest = _sha256(data)
        if "sha256_hex" in e and e["sha256_hex"] != digest:
            changed.append({"path": e["path"], "expected_sha256": e["sha256_hex"], "actual_sha256": digest})
        h.update(data)
        verified.append({"path": e["path"], "sha256_hex": digest, "bytes": len(data)})
    if missing:
        raise BundleFormatError("index", None, f"{len(missing)} file(s) listed in {INDEX_NAME} are missing from "
                                "the bundle", missing)
    if changed:
        raise BundleFormatError("index", None, f"{len(changed)} bundle file(s) differ from their {INDEX_NAME} "
                                "digest (modified after validation)", changed)
    actual = h.hexdigest()
    if actual != expected:
        raise BundleFormatError("flag", FLAG_NAME, f"{FLAG_NAME} does not match the bundle: the flag says "
                                f"sha256_hex = {expected}, the files listed in {INDEX_NAME} hash to {actual}",
                                [{"expected_sha256": expected, "actual_sha256": actual}])
    return VerifiedBundle(expected, verified)


def verify_bundle(index_bytes: bytes | None, flag_bytes: bytes | None, read_file: Callable[[str], bytes], *,
                  rules: Rules, where: str = "") -> VerifiedBundle:
    """Recompute a bundle's flag from ``index.json`` and the indexed files.

    Parameters
    ----------
    index_bytes, flag_bytes : bytes or None
        Contents of ``index.json`` and ``_passed.flag``; ``None`` when the file does not exist.
    read_file : callable
        ``read_file(path)`` returns the bytes of a file listed in the index (path relative to the bundle)
        and raises ``FileNotFoundError`` when it does not exist.
    rules : Rules
        :data:`UPSTREAM` or :data:`SEGMENT_1B`: the codes of the errors and the strictness of the index.
    where : str
        Where the bundle is, for the errors' paths.

    Returns
    -------
    VerifiedBundle

    Raises
    ------
    Segment1BError
        ``rules.error`` with ``rules.flag_code`` (flag missing, malformed or not the files' digest),
        ``rules.index_code`` (index missing or malformed, a listed file missing or with another digest) or
        ``rules.contents_code`` (a required member is not listed).
    """
    if flag_bytes is None:
        raise rules.error(rules.flag_code, f"{FLAG_NAME} is missing: {rules.no_flag}", dataset=rules.dataset,
                          path=_at(where, FLAG_NAME), hint=rules.no_flag_hint or rules.hint)
    try:
        return _verify(index_bytes, flag_bytes, read_file, rules)
    except BundleFormatError as exc:
        raise rules.error(rules.code(exc.part), exc.message, dataset=rules.dataset, path=_at(where, exc.file),
                          rows=exc.rows, hint=rules.hint) from None


def _at(where: str, file: str | None) -> str | None:
    if not where:
        return None
    return posixpath.join(where, file) if file else where


def partition_entry(checksums: bytes, partition_path: str) -> dict[str, Any] | None:
    """The entry of ``egress_checksums.json`` for ``partition_path`` (``None`` when it lists no such partition).

    Raises
    ------
    ValueError
        When the document is not JSON or not an object with a ``partitions`` list.

    >>> partition_entry(b'{"partitions": [{"partition_path": "p/", "sha256_hex": "x"}]}', "p/")["sha256_hex"]
    'x'
    """
    doc = json.loads(checksums)
    partitions = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(partitions, list):
        raise ValueError("expected an object with a 'partitions' list")
    return next((p for p in partitions if isinstance(p, dict) and p.get("partition_path") == partition_path), None)


def verify_egress(checksums: bytes, partition_path: str, actual: Mapping[str, str], *, where: str = "") -> None:
    """Check the files of ``site_locations`` (relative path -> sha256) against an S9 ``egress_checksums.json``.

    Raises
    ------
    IntegrityError
        ``E910_FLAG`` when the bundle does not vouch for ``partition_path``; ``E908_BUNDLE_CONTENTS`` when
        the document is malformed; ``E911_FINALITY`` when a file was added, removed or changed since
        validation.
    """
    try:
        entry = partition_entry(checksums, partition_path)
        recorded = None if entry is None else {f["path"]: f["sha256_hex"] for f in entry["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"{EGRESS_CHECKSUMS_NAME} is malformed: {exc}",
                             dataset=SEGMENT_1B.dataset, path=where or None) from None
    if recorded is None:
        raise IntegrityError("E910_FLAG", f"the bundle does not vouch for {partition_path}",
                             dataset="site_locations", path=where or None, hint="check seed and fingerprint")
    rows = ([{"path": p, "problem": "missing"} for p in sorted(set(recorded) - set(actual))]
            + [{"path": p, "problem": "not validated"} for p in sorted(set(actual) - set(recorded))]
            + [{"path": p, "problem": "changed", "recorded_sha256": recorded[p], "actual_sha256": actual[p]}
               for p in sorted(set(recorded) & set(actual)) if recorded[p] != actual[p]])
    if rows:
        raise IntegrityError("E911_FINALITY", f"site_locations differs from what the bundle validated "
                             f"({len(rows)} file(s))", dataset="site_locations", path=partition_path,
                             rows=rows, hint="the egress was modified after validation; do not use it, "
                             "re-run the segment")
