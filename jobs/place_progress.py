"""Progress records of S4-S6 parts, and resuming from a dead attempt's parts (issue 14).

Each part writer leaves a record ``<kind>-part-NNNNN.json`` in its attempt's progress folder
(``control/run/…/place-progress-<run_id>-<attempt>/``): rows, counts, and every file it wrote into the
attempt's staging folders (name, size and, for datasets, SHA-256).  A later attempt of the same run, holding
the fingerprint's lease (so the earlier attempt is dead), adopts the earlier attempt's finished parts: it
checks each listed file (size, and SHA-256 where recorded), moves it into its own staging folder, then
copies the record into its own progress folder.  Files that fail the check, and parts without a record,
are computed again; what is not adopted is removed with the dead attempt's folders.  Adopting file by file
(not renaming whole folders) keeps whatever a dead client's still-running tasks write out of the new
attempt's folders.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from segment1b.contracts import path_for
from segment1b.identity import RunIdentity
from segment1b.lease import Lease
from segment1b.rng_log_files import form_of_name
from segment1b.storage import StagedFile, Storage, part_name

__all__ = ["progress_folder", "adopt_finished_parts", "drop_progress", "finished_parts", "part_records",
           "recorded_parts", "expected_files"]

ROLES = ("data", "events")
PREFIX = "place-progress-"


def progress_folder(ident: RunIdentity, attempt: str) -> str:
    """This attempt's progress folder, next to the run receipt."""
    return posixpath.join(_run_folder(ident), f"{PREFIX}{ident.run_id}-{attempt}")


def adopt_finished_parts(storage: Storage, lease: Lease, ident: RunIdentity, progress: str,
                         staging: dict[str, dict[str, str | None]], targets: dict[str, dict[str, str]],
                         log_form: str) -> int:
    """Move the finished parts of this run's dead attempts into this attempt's folders; return how many
    records were adopted.

    ``staging[kind][role]`` is this attempt's staging folder (None: that dataset or log is published, its
    files are not needed); ``targets[kind][role]`` the partition it is published at.  Only under an
    exclusive lease: otherwise the other attempts may be alive.  An event part of another form than
    ``log_form`` is not adopted (one log holds one form, contract §9): its part is computed again.
    """
    if not lease.exclusive:
        return 0
    adopted = 0
    for folder, attempt in _other_attempts(storage, ident, progress):
        for name, record in zip(*_records(storage, folder)):
            kind = name.split("-", 1)[0]
            if kind not in staging or storage.exists(posixpath.join(progress, name)):
                continue
            if all(_adopt_file(storage, record, attempt, staging[kind].get(role), targets[kind].get(role), role,
                               log_form) for role in ROLES):
                storage.write_bytes(posixpath.join(progress, name), json.dumps(record).encode())
                adopted += 1
    return adopted


def drop_progress(storage: Storage, lease: Lease, ident: RunIdentity, progress: str) -> None:
    """Remove this attempt's progress folder and, under an exclusive lease, those of dead attempts."""
    storage.remove(progress)
    if lease.exclusive:
        for folder, _ in _other_attempts(storage, ident, progress):
            storage.discard(folder)


def finished_parts(storage: Storage, progress: str, kinds: list[str], staging: dict[str, dict[str, str | None]],
                   n_parts: int) -> set[int]:
    """Parts that need not be computed again: a progress record of every kind, and every file the record
    lists still in this attempt's staging folder with the recorded size (files of a published dataset or
    log are not needed).  Part files are written whole (temporary file + rename, or one PUT), so a part
    killed while it was written has no record and is computed again."""
    records = dict(zip(*_records(storage, progress)))
    sizes = {(k, role): _file_sizes(storage, staging[k].get(role)) for k in kinds for role in ROLES}
    done = set()
    for p in range(n_parts):
        recs = [records.get(f"{k}-{part_name(p, '.json')}") for k in kinds]
        if all(rec is not None and "files" in rec and all(
                staging[k].get(role) is None or f is None or sizes[(k, role)].get(f["name"]) == f["size"]
                for role, f in ((r, rec["files"].get(r)) for r in ROLES)) for k, rec in zip(kinds, recs)):
            done.add(p)
    return done


def part_records(storage: Storage, progress: str, kind: str, n_parts: int) -> list[dict[str, Any]]:
    """The records of parts 0..n-1 of ``kind`` (each must exist)."""
    return [json.loads(storage.read_bytes(posixpath.join(progress, f"{kind}-{part_name(p, '.json')}")))
            for p in range(n_parts)]


def recorded_parts(storage: Storage, progress: str, kinds: tuple[str, ...]) -> int:
    """Number of parts with progress records (the records of a kind are numbered 0..n-1)."""
    names = storage.list_files(progress)
    return max((sum(n.startswith(f"{k}-part-") for n in names) for k in kinds), default=0)


def expected_files(files: list[dict[str, dict[str, Any]]], role: str) -> list[StagedFile]:
    """What the part writers recorded of ``role`` (``data`` or ``events``), from each part record's ``files``
    (role -> name, size and, for datasets, SHA-256): what publishing checks."""
    out = []
    for by_role in files:
        f = by_role.get(role)
        if f is not None:
            out.append(StagedFile(f["name"], int(f["size"]), f.get("sha256_hex")))
    return out


# ---------------------------------------------------------------------------------------------------------

def _run_folder(ident: RunIdentity) -> str:
    return path_for("run_receipt", **ident.tokens).rsplit("/", 1)[0]


def _other_attempts(storage: Storage, ident: RunIdentity, progress: str) -> list[tuple[str, str]]:
    """(progress folder, attempt) of this run's other attempts (an older layout without attempt: '')."""
    parent, mine = posixpath.split(progress.rstrip("/"))
    prefix = f"{PREFIX}{ident.run_id}"
    try:
        names = sorted(posixpath.basename(p.rstrip("/")) for p in storage.fs.ls(storage.abspath(parent), detail=False))
    except FileNotFoundError:
        return []
    return [(posixpath.join(parent, n), n[len(prefix) + 1:]) for n in names
            if n != mine and (n == prefix or n.startswith(prefix + "-"))]


def _adopt_file(storage: Storage, record: dict[str, Any], attempt: str, staging: str | None, target: str | None,
                role: str, log_form: str) -> bool:
    """Move the file ``record`` lists for ``role`` from ``attempt``'s staging into ``staging``, checked;
    True when the part needs nothing more of this role."""
    if staging is None:
        return True  # published: the part's file of this role is not needed
    if "files" not in record or not attempt:
        return False  # a record of another layout: its part is computed again
    info = record["files"].get(role)
    if info is None:
        return True  # the part wrote no file of this role (no rows)
    if role == "events" and form_of_name(info["name"]) != log_form:
        return False  # written by an attempt that asked for the other log form
    dst = posixpath.join(staging, info["name"])
    if _size(storage, dst) == info["size"]:
        return True
    src = posixpath.join(storage.staging_path(target, attempt), info["name"])
    if _size(storage, src) != info["size"]:
        return False
    if info.get("sha256_hex") is not None and storage.file_sha256(src) != info["sha256_hex"]:
        return False
    storage.move_file(src, dst)
    return True


def _size(storage: Storage, rel: str) -> int | None:
    try:
        return int(storage.fs.size(storage.abspath(rel)))
    except (FileNotFoundError, OSError):
        return None


def _file_sizes(storage: Storage, folder: str | None) -> dict[str, int]:
    """Name -> size of the files directly in a staging folder (one listing, also on object stores)."""
    if folder is None:
        return {}
    try:
        entries = storage.fs.ls(storage.abspath(folder).rstrip("/"), detail=True)
    except FileNotFoundError:
        return {}
    return {posixpath.basename(e["name"].rstrip("/")): int(e.get("size") or 0) for e in entries
            if e.get("type") == "file"}


def _records(storage: Storage, progress: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Names and contents of the progress records in ``progress`` (unreadable ones are left out)."""
    names, records = [], []
    for name in storage.list_files(progress):
        try:
            records.append(json.loads(storage.read_bytes(posixpath.join(progress, name))))
            names.append(name)
        except (ValueError, FileNotFoundError):
            continue
    return names, records
