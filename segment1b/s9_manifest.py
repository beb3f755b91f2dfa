"""What a Segment 1B bundle vouches for, and the published files compared with it (issue 14, DESIGN "A PASS
flag vouches only for what it lists").

S9 lists in ``MANIFEST.json`` every partition and file it checked: the input partitions (``inputs``: the tile
surfaces, S3-S8 and the outlet catalogue, each with its partition digest and ``files``) and every RNG log file
(``logs``: the event parts of both families, the audit and the trace log), each file with its SHA-256 and
size.  ``MANIFEST.json`` is indexed, so the flag covers these lists.  Consumers compare them with what is
published:

* :func:`listing_differences` (cheap: one folder listing per partition) finds listed files that are missing,
  files in those folders that were not validated, and files whose size changed;
* :func:`digest_differences` (``--deep``: every byte read again) finds files whose contents changed.

A re-validation of a PASS (an audit) vouches for the same things when :func:`vouched_differences` is empty.

Everything here is pure: listings, digests and documents come in as plain data.
"""

from __future__ import annotations

import posixpath
from typing import Any, Mapping

__all__ = ["listed_files", "listed_folders", "unlisted_partitions", "listing_differences",
           "digest_differences", "vouched_differences"]


def listed_files(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Root-relative path -> ``{"sha256_hex", "bytes"}`` of every file a ``MANIFEST.json`` lists.

    >>> m = {"inputs": [{"partition_path": "d/", "files": [{"path": "part-00000.parquet", "sha256_hex": "a",
    ...                                                      "bytes": 3}]}],
    ...      "logs": [{"path": "logs/x.jsonl", "sha256_hex": "b", "bytes": 5}]}
    >>> sorted(listed_files(m))
    ['d/part-00000.parquet', 'logs/x.jsonl']
    """
    out: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("inputs") or []:
        base = entry.get("partition_path")
        if not base:
            continue
        for f in entry.get("files") or []:
            out[base + f["path"]] = {"sha256_hex": f.get("sha256_hex"), "bytes": f.get("bytes")}
    for f in manifest.get("logs") or []:
        out[f["path"]] = {"sha256_hex": f.get("sha256_hex"), "bytes": f.get("bytes")}
    return out


def listed_folders(files: Mapping[str, Any]) -> list[str]:
    """The folders (ending in ``/``) that hold listed files, sorted."""
    return sorted({posixpath.dirname(p) + "/" for p in files})


def unlisted_partitions(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Partition path -> digest of the inputs a manifest lists without their files (bundles before
    validator version 3 did so for the outlet catalogue and ``s3_requirements``)."""
    return {e["partition_path"]: e["sha256_hex"] for e in manifest.get("inputs") or []
            if e.get("partition_path") and e.get("sha256_hex") and not e.get("files")}


def listing_differences(files: Mapping[str, Mapping[str, Any]],
                        folders: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """Listed files against the folders' listings: missing, not validated (extra) or another size.

    Parameters
    ----------
    files : mapping
        :func:`listed_files`.
    folders : mapping
        Each of :func:`listed_folders` -> ``{file name: size in bytes}`` as published (hidden files left out).

    Returns
    -------
    list of dict
        ``{"path", "problem", ...}`` rows in path order; empty when every folder holds exactly the listed
        files with their listed sizes.

    Examples
    --------
    >>> listing_differences({"d/a": {"bytes": 3}, "d/b": {"bytes": 4}}, {"d/": {"a": 3, "c": 1}})
    [{'path': 'd/b', 'problem': 'missing'}, {'path': 'd/c', 'problem': 'not validated'}]
    """
    rows = []
    for folder, names in folders.items():
        for name, size in names.items():
            path = folder + name
            if path not in files:
                rows.append({"path": path, "problem": "not validated"})
            elif files[path].get("bytes") is not None and files[path]["bytes"] != size:
                rows.append({"path": path, "problem": "size changed", "recorded_bytes": files[path]["bytes"],
                             "actual_bytes": size})
    for path in files:
        folder, name = posixpath.dirname(path) + "/", posixpath.basename(path)
        if name not in folders.get(folder, {}):
            rows.append({"path": path, "problem": "missing"})
    return sorted(rows, key=lambda r: r["path"])


def digest_differences(recorded: Mapping[str, str | None], actual: Mapping[str, str]) -> list[dict[str, Any]]:
    """Paths whose recomputed SHA-256 differs from the recorded one (paths of ``actual`` only).

    >>> digest_differences({"a": "1", "b": "2"}, {"a": "1", "b": "3"})
    [{'path': 'b', 'problem': 'changed', 'recorded_sha256': '2', 'actual_sha256': '3'}]
    """
    return [{"path": p, "problem": "changed", "recorded_sha256": recorded.get(p), "actual_sha256": actual[p]}
            for p in sorted(actual) if recorded.get(p) != actual[p]]


def _vouched(manifest: Mapping[str, Any], egress: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a bundle vouches for, as key -> value: identity, partition digests and file digests."""
    out: dict[str, Any] = {f"identity.{k}": v for k, v in (manifest.get("identity") or {}).items()}
    for e in manifest.get("inputs") or []:
        out[e.get("partition_path")] = e.get("sha256_hex")
    for p in egress.get("partitions") or []:
        out[p.get("partition_path")] = p.get("sha256_hex")
        for f in p.get("files") or []:
            out[p.get("partition_path") + f["path"]] = f.get("sha256_hex")
    out.update({p: f["sha256_hex"] for p, f in listed_files(manifest).items()})
    return out


def vouched_differences(published: Mapping[str, Mapping[str, Any]],
                        audit: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a published PASS bundle vouches for that an audit of the same run sees otherwise.

    Both arguments map ``"MANIFEST.json"`` and ``"egress_checksums.json"`` to their parsed documents.  Every
    identity field, partition digest and file digest of ``published`` must be in ``audit`` with the same
    value; the audit may list more (a later validator checks more), never other bytes.

    >>> manifest = {"identity": {"seed": 1}, "inputs": [], "logs": [{"path": "l", "sha256_hex": "a"}]}
    >>> doc = {"MANIFEST.json": manifest, "egress_checksums.json": {"partitions": []}}
    >>> vouched_differences(doc, doc)
    []
    >>> other = {**doc, "MANIFEST.json": {**doc["MANIFEST.json"], "logs": []}}
    >>> vouched_differences(doc, other)
    [{'vouched': 'l', 'published': 'a', 'audit': None}]
    """
    was = _vouched(published["MANIFEST.json"], published["egress_checksums.json"])
    now = _vouched(audit["MANIFEST.json"], audit["egress_checksums.json"])
    return [{"vouched": k, "published": v, "audit": now.get(k)}
            for k, v in sorted(was.items(), key=lambda kv: str(kv[0])) if now.get(k) != v]
