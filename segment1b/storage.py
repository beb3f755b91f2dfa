"""Data roots on fsspec filesystems: strict Parquet parts, atomic write-once publishing, digests (§1).

A :class:`Storage` is a recipe (root URL + options), not an open resource: it pickles to Dask workers and
reopens its filesystem there.  Publishing follows the contract: parts are written into a hidden sibling
staging folder, the partition digest is taken, and the folder is renamed into place.  A target that
already exists is left alone when its digest is the same and refused
(``E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL``) when it differs.

A staging folder belongs to one attempt (its name carries the attempt id, :mod:`segment1b.lease`), and
publishing checks that it holds exactly the files its writers recorded (:class:`StagedFile`: name, size,
SHA-256): a missing part, an extra file or a hidden temporary file is ``E_STAGING_INCOMPLETE`` and nothing
is published (issue 14).

On object stores (no atomic folder rename) the parts are copied into place and a sibling marker
``.<leaf>.published`` is written last; :meth:`Storage.is_published` checks the marker there, so readers
going through this module still never see a half-published partition.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .contracts import DatasetSpec
from .errors import InputError, PublishError
from .lease import DEFAULT_WAIT_SECONDS, DEFAULT_TTL_SECONDS, Lease, acquire, check_leases

__all__ = ["Storage", "StagedFile", "write_parquet_bytes", "check_schema", "part_name", "canonical_json"]

PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3
ROW_GROUP_ROWS = 256 * 1024
_HASH_CHUNK = 8 * 1024 * 1024


def part_name(index: int, suffix: str = ".parquet") -> str:
    """``part-NNNNN<suffix>``; name order is numeric order up to 99 999 parts."""
    if not 0 <= index <= 99_999:
        raise ValueError(f"part index {index} outside 0..99999")
    return f"part-{index:05d}{suffix}"


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that identity hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_schema(table: pa.Table, spec: DatasetSpec, where: str = "") -> pa.Table:
    """Return ``table`` with the contract schema, or raise E304 naming the columns at fault.

    Exactly the contract's columns, in order, with its Arrow types and no nulls.
    """
    expected = spec.schema
    got = [(f.name, f.type) for f in table.schema]
    want = [(f.name, f.type) for f in expected]
    if got != want:
        missing = [n for n, _ in want if n not in table.column_names]
        extra = [n for n, _ in got if n not in expected.names]
        wrong = [{"column": n, "type": str(t), "expected": str(expected.field(n).type)}
                 for n, t in got if n in expected.names and expected.field(n).type != t]
        order = "" if missing or extra or wrong else f"; column order is {[n for n, _ in got]}"
        raise InputError("E304_SCHEMA_MISMATCH",
                         f"{spec.id} columns differ from the contract: missing {missing}, extra {extra}{order}; "
                         f"expected {[f'{n}:{t}' for n, t in want]}",
                         dataset=spec.id, path=where or None, rows=wrong)
    nulls = [{"column": c, "nulls": table.column(c).null_count} for c in table.column_names
             if table.column(c).null_count]
    if nulls:
        raise InputError("E304_SCHEMA_MISMATCH", f"{spec.id} has nulls in non-null columns",
                         dataset=spec.id, path=where or None, rows=nulls)
    return pa.Table.from_arrays(table.columns, schema=expected)


def write_parquet_bytes(table: pa.Table, spec: DatasetSpec, row_group_rows: int = ROW_GROUP_ROWS,
                        encodings: dict[str, str] | None = None) -> bytes:
    """Serialise one part with the contract schema: zstd, statistics, deterministic bytes.

    ``encodings`` optionally maps columns to a Parquet encoding (``"DELTA_BINARY_PACKED"``,
    ``"BYTE_STREAM_SPLIT"``, ``"PLAIN"``...); those columns are written without dictionary, the others
    keep the default dictionary encoding.  Sorted id columns (tile_id) are about 2x faster to write and
    much smaller with ``DELTA_BINARY_PACKED``.
    """
    table = check_schema(table, spec)
    sink = io.BytesIO()
    use_dictionary: bool | list[str] = True
    if encodings:
        use_dictionary = [n for n in table.column_names if n not in encodings]
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL,
                   row_group_size=row_group_rows, write_statistics=True, use_dictionary=use_dictionary,
                   column_encoding=dict(encodings) if encodings else None)
    return sink.getvalue()


@dataclass(frozen=True)
class StagedFile:
    """What a writer put into a staging folder: the file's name (relative to the folder), its size and its
    SHA-256 (``None``: checked by size only, as RNG event logs are)."""

    name: str
    size: int
    sha256_hex: str | None = None

    @classmethod
    def of(cls, name: str, data: bytes) -> StagedFile:
        return cls(name, len(data), hashlib.sha256(data).hexdigest())


class Storage:
    """A data root (local folder or fsspec URL) and the operations the jobs need on it.

    Parameters
    ----------
    root : str
        Local path or URL (``s3://bucket/prefix``, ``file:///tmp/x``, ``memory://x``).
    storage_options : dict, optional
        Passed to fsspec (for example ``{"client_kwargs": {"endpoint_url": ...}}`` for S3).
    lease_wait : float
        Seconds a job waits for another run's lease on the same work (:meth:`lease`); 0 refuses at once.
    lease_ttl : float
        Object stores: seconds without a heartbeat after which a lease may be taken over.
    """

    def __init__(self, root: str, storage_options: dict | None = None, *,
                 lease_wait: float = DEFAULT_WAIT_SECONDS, lease_ttl: float = DEFAULT_TTL_SECONDS):
        self.root_url = str(root)
        self.storage_options = dict(storage_options or {})
        self.lease_wait = float(lease_wait)
        self.lease_ttl = float(lease_ttl)

    def __reduce__(self):
        return (Storage, (self.root_url, self.storage_options))

    def __repr__(self) -> str:
        return f"Storage({self.root_url!r})"

    def __dask_tokenize__(self):
        return ("Storage", self.root_url, sorted(self.storage_options.items(), key=str))

    @cached_property
    def _fs_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        options = dict(self.storage_options)
        if fsspec.utils.get_protocol(self.root_url) not in ("file", "local"):
            # Other processes (Dask workers, a resumed run) write here too: a cached listing would hide their
            # files from exists()/ls() (s3fs answers from its cache), so listings are fetched every time.
            options.setdefault("use_listings_cache", False)
        try:
            fs, root = fsspec.core.url_to_fs(self.root_url, **options)
        except TypeError:  # a filesystem without listing caches that refuses the option
            fs, root = fsspec.core.url_to_fs(self.root_url, **self.storage_options)
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_root[0]

    def check_access(self) -> None:
        """Object stores: ``E_STORAGE_ACCESS`` now, naming the root, when its credentials are missing or refused
        (:func:`segment1b.access.check_access`), rather than a library traceback in the middle of a run."""
        from .access import check_access

        check_access(self.fs, self.abspath(""), self.root_url)

    @property
    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def abspath(self, rel: str) -> str:
        """Filesystem path of a path relative to the root."""
        return posixpath.join(self._fs_root[1], rel.strip("/")) if rel.strip("/") else self._fs_root[1]

    def url(self, rel: str) -> str:
        """Human-facing location (for messages and reports)."""
        return self.root_url.rstrip("/") + "/" + rel.lstrip("/")

    # -- files ----------------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.abspath(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.abspath(rel))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file so that readers see the old file or the whole new one, never a part."""
        path = self.abspath(rel)
        try:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            if self.is_local:
                _write_local(path, [data])
            else:  # object stores: a PUT is atomic per object
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise _io_error(exc, self.url(rel)) from exc

    def write_stream(self, rel: str, chunks: Iterable[bytes]) -> int:
        """:meth:`write_bytes` for a file produced chunk by chunk (never whole in memory); returns its size.

        Readers see the old file or the whole new one, never a part: locally the chunks go to a hidden
        temporary file that is renamed at the end; object stores upload on close (an error discards the
        upload where the filesystem can).
        """
        path = self.abspath(rel)
        try:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            if self.is_local:
                return _write_local(path, chunks)
            size = 0
            fh = self.fs.open(path, "wb")
            try:
                for chunk in chunks:
                    fh.write(chunk)
                    size += len(chunk)
            except BaseException:
                if hasattr(fh, "discard"):
                    fh.discard()
                raise
            fh.close()
            return size
        except OSError as exc:
            raise _io_error(exc, self.url(rel)) from exc

    def write_json(self, rel: str, obj: Any, *, indent: int | None = 2) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode("utf-8"))

    def remove(self, rel: str) -> None:
        """Delete a file or folder (recursively) if it exists; ``E_PUBLISH_IO`` if it cannot be deleted."""
        path = self.abspath(rel)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except OSError as exc:
            raise _io_error(exc, self.url(rel)) from exc

    def discard(self, rel: str) -> None:
        """Best-effort :meth:`remove` for cleanup after a failure: never raises, so it cannot hide the
        failure being cleaned up after (a staging folder that stays is hidden and harmless)."""
        try:
            self.remove(rel)
        except Exception:  # noqa: BLE001 - cleanup must not replace the original error
            pass

    def list_files(self, rel: str) -> list[str]:
        """Files under a folder, as paths relative to it, in ASCII order; hidden staging entries excluded."""
        base = self.abspath(rel).rstrip("/")
        if not self.fs.exists(base):
            return []
        out = []
        for path in self.fs.find(base):
            sub = path[len(base):].lstrip("/") if path.startswith(base) else path
            if not any(p.startswith(".") for p in sub.split("/")):
                out.append(sub)
        return sorted(out)

    # -- digests --------------------------------------------------------------------------------------
    def file_sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self.abspath(rel), "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()

    def partition_digest(self, rel: str) -> str:
        """SHA-256 over the bytes of every file of a partition, files in ASCII order of relative path."""
        h = hashlib.sha256()
        for sub in self.list_files(rel):
            with self.fs.open(self.abspath(posixpath.join(rel, sub)), "rb") as fh:
                for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                    h.update(chunk)
        return h.hexdigest()

    # -- staging and publishing -----------------------------------------------------------------------
    @staticmethod
    def staging_path(target_rel: str, token: str) -> str:
        """Hidden sibling of a partition folder where its parts are written before publishing."""
        parent, leaf = posixpath.split(target_rel.rstrip("/"))
        return posixpath.join(parent, f".{leaf}.staging-{token}") + "/"

    @staticmethod
    def _marker_path(target_rel: str) -> str:
        parent, leaf = posixpath.split(target_rel.rstrip("/"))
        return posixpath.join(parent, f".{leaf}.published")

    def is_published(self, target_rel: str) -> bool:
        """True once a partition is published (folder present; on object stores, its marker too)."""
        if self.is_local:
            return self.exists(target_rel)
        return self.exists(self._marker_path(target_rel))

    def write_part(self, staging_rel: str, name: str, data: bytes) -> StagedFile:
        """Write one part file into a staging folder; a retried task rewrites the same bytes.

        Returns what :meth:`publish` expects of the file (name, size, SHA-256).
        """
        self.write_bytes(posixpath.join(staging_rel, name), data)
        return StagedFile.of(name, data)

    def lease(self, scope: str, *, out=None, ttl: float | None = None) -> Lease:
        """Take the lease on ``scope`` (a lock path from the dataset dictionary), waiting up to
        :attr:`lease_wait` seconds for another run holding it; see :func:`segment1b.lease.acquire`."""
        return acquire(self, scope, wait=self.lease_wait, out=out, ttl=self.lease_ttl if ttl is None else ttl)

    def staging_siblings(self, target_rel: str) -> list[str]:
        """Every staging folder of a partition (any attempt), as paths relative to the root, sorted."""
        parent, leaf = posixpath.split(target_rel.rstrip("/"))
        prefix = f".{leaf}.staging-"
        try:
            entries = self.fs.ls(self.abspath(parent), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = sorted(posixpath.basename(e.rstrip("/")) for e in entries)
        return [posixpath.join(parent, n) + "/" for n in names if n.startswith(prefix)]

    def publish(self, staging_rel: str, target_rel: str, dataset_id: str, *, expected: Iterable[StagedFile],
                digest: bool = True) -> str:
        """Publish a staging folder at ``target_rel`` write-once and atomically; return the digest.

        ``expected`` are the files the writers recorded: the folder must hold exactly these (names and sizes,
        and SHA-256 where recorded), no missing part, no extra or hidden file, else nothing is published.
        ``digest=False`` is for RNG event logs: they are not byte-deterministic (``ts_utc``) and their path
        holds the run_id, so a published log of the same run is kept as it is and nothing is hashed (the logs
        are most of the bytes a run writes; they are checked by name and size); the return value is ``""``.

        Raises
        ------
        PublishError
            ``E_STAGING_INCOMPLETE`` when the folder does not hold exactly the expected files,
            ``E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL`` when a different partition is already there,
            ``E_PUBLISH_IO`` when the location cannot be written.
        BusyError
            ``E_LEASE_BUSY`` when this thread's lease on the root was taken over by another run.
        """
        check_leases(self)
        expected = list(expected)
        if not digest:
            if self.is_published(target_rel):
                self.remove(staging_rel)
                return ""
            self.verify_staging(staging_rel, expected, dataset_id, hashing=False)
            return self._move_into_place(staging_rel, target_rel, dataset_id, "", expected)
        digest = self.verify_staging(staging_rel, expected, dataset_id)
        if self.is_published(target_rel):
            return self._settle_existing(staging_rel, target_rel, dataset_id, digest)
        return self._move_into_place(staging_rel, target_rel, dataset_id, digest, expected)

    def verify_staging(self, staging_rel: str, expected: Iterable[StagedFile], dataset_id: str, *,
                       hashing: bool = True) -> str:
        """Check that a staging folder holds exactly ``expected``; return the partition digest (§1).

        Every file counts, hidden ones included.  With ``hashing`` each file is read once, for its own
        SHA-256 and for the partition digest together; without, only names and sizes are checked (``""``).

        Raises
        ------
        PublishError
            ``E_STAGING_INCOMPLETE`` listing each missing, extra (hidden temporary), resized or changed file.
        """
        want = {f.name: f for f in expected}
        base = self.abspath(staging_rel).rstrip("/")
        try:
            found = {path[len(base):].lstrip("/"): int(info.get("size") or 0)
                     for path, info in self.fs.find(base, detail=True).items() if info.get("type") != "directory"}
        except FileNotFoundError:
            found = {}
        problems = [{"file": n, "problem": "missing"} for n in sorted(set(want) - set(found))]
        problems += [{"file": n, "problem": "hidden temporary" if ".tmp-" in n or "/." in "/" + n else "extra"}
                     for n in sorted(set(found) - set(want))]
        problems += [{"file": n, "problem": "size", "expected": want[n].size, "found": found[n]}
                     for n in sorted(set(want) & set(found)) if want[n].size != found[n]]
        partition = hashlib.sha256()
        if not problems and hashing:
            for name in sorted(want):
                h = hashlib.sha256()
                with self.fs.open(posixpath.join(base, name), "rb") as fh:
                    for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                        h.update(chunk)
                        partition.update(chunk)
                if want[name].sha256_hex is not None and h.hexdigest() != want[name].sha256_hex:
                    problems.append({"file": name, "problem": "sha256", "expected": want[name].sha256_hex,
                                     "found": h.hexdigest()})
        if problems:
            kinds = sorted({p["problem"] for p in problems})
            raise PublishError("E_STAGING_INCOMPLETE", f"{dataset_id} staging does not hold exactly the {len(want)} "
                               f"files its writers recorded ({', '.join(kinds)}); nothing was published",
                               dataset=dataset_id, path=self.url(staging_rel), rows=problems,
                               hint="rerun the same command: the partition is computed again; if it happens "
                                    "again, something else writes into this data root")
        return partition.hexdigest() if hashing else ""

    def _move_into_place(self, staging_rel: str, target_rel: str, dataset_id: str, digest: str,
                         expected: list[StagedFile]) -> str:
        src, dst = self.abspath(staging_rel).rstrip("/"), self.abspath(target_rel).rstrip("/")
        try:
            self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
            if self.is_local:
                try:
                    os.rename(src, dst)  # atomic: readers see nothing or everything
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and self.exists(target_rel):
                        if not digest:
                            self.remove(staging_rel)
                            return digest
                        return self._settle_existing(staging_rel, target_rel, dataset_id, digest)  # lost a race
                    raise
            else:
                if self.fs.exists(dst):  # leftovers of an interrupted publish, never marked
                    self.fs.rm(dst, recursive=True)
                for f in sorted(expected, key=lambda f: f.name):  # exactly the verified files
                    self.fs.copy(posixpath.join(src, f.name), posixpath.join(dst, f.name))
                self.write_bytes(self._marker_path(target_rel), canonical_json({"sha256_hex": digest or None}))
                self.fs.rm(src, recursive=True)
        except OSError as exc:
            raise _io_error(exc, self.url(target_rel), dataset_id) from exc
        return digest

    def _settle_existing(self, staging_rel: str, target_rel: str, dataset_id: str, digest: str) -> str:
        existing = self.partition_digest(target_rel)
        if existing != digest:
            raise PublishError(
                "E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL",
                f"{dataset_id} is already published with different contents (sha256 {existing[:12]}... "
                f"there, {digest[:12]}... new); published partitions are write-once",
                dataset=dataset_id, path=self.url(target_rel),
                hint="use a new seed/parameters, or delete the old partition deliberately if it is obsolete")
        self.remove(staging_rel)
        return digest

    def publish_bytes(self, files: dict[str, bytes], target_rel: str, dataset_id: str, token: str = "") -> str:
        """Stage a few small files (reports, bundles) and publish them as one partition.

        Each call stages in a folder of its own (``token`` plus a random suffix): a concurrent or killed
        publisher's folder is never reused, and a failed call removes its folder.
        """
        check_leases(self)
        staging = self.staging_path(target_rel, f"{token}-{uuid.uuid4().hex[:12]}" if token else uuid.uuid4().hex[:12])
        try:
            for name, data in sorted(files.items()):
                self.write_bytes(posixpath.join(staging, name), data)
            return self.publish(staging, target_rel, dataset_id,
                                expected=[StagedFile.of(n, d) for n, d in files.items()])
        except BaseException:
            self.discard(staging)
            raise

    def move_file(self, src_rel: str, dst_rel: str) -> None:
        """Move one file (a rename on local roots; copy and delete on object stores)."""
        dst = self.abspath(dst_rel)
        try:
            self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
            self.fs.mv(self.abspath(src_rel), dst)
        except OSError as exc:
            raise _io_error(exc, self.url(dst_rel)) from exc

    def publish_file(self, rel: str, data: bytes, dataset_id: str) -> str:
        """Write-once single file: same bytes → no-op, different → E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL."""
        check_leases(self)
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(rel):
            if self.file_sha256(rel) != digest:
                raise PublishError("E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL",
                                   f"{dataset_id} is already published with different contents",
                                   dataset=dataset_id, path=self.url(rel))
            return digest
        self.write_bytes(rel, data)
        return digest

    # -- reading parquet ------------------------------------------------------------------------------
    def parquet_parts(self, rel: str) -> list[str]:
        """Part files of a partition in name order (= writer-sort order)."""
        return [posixpath.join(rel, f) for f in self.list_files(rel) if f.endswith(".parquet")]

    def read_parquet(self, rel: str, columns: Iterable[str] | None = None, *, dataset_id: str = "",
                     filters=None) -> pa.Table:
        """Read one part file; unreadable files raise E305 naming the file."""
        path = self.abspath(rel)
        try:
            with self.fs.open(path, "rb") as fh:
                return pq.read_table(fh, columns=list(columns) if columns is not None else None, filters=filters)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise InputError("E305_PARQUET_UNREADABLE", f"cannot read Parquet file: {exc}",
                             dataset=dataset_id or None, path=self.url(rel)) from exc

    def parquet_metadata(self, rel: str, *, dataset_id: str = "") -> pq.FileMetaData:
        try:
            with self.fs.open(self.abspath(rel), "rb") as fh:
                return pq.ParquetFile(fh).metadata
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise InputError("E305_PARQUET_UNREADABLE", f"cannot read Parquet footer: {exc}",
                             dataset=dataset_id or None, path=self.url(rel)) from exc

    def read_row_groups(self, rel: str, row_groups: Iterable[int], columns: Iterable[str], *, dataset_id: str = "",
                        read_dictionary: Iterable[str] = ()) -> pa.Table:
        """Read some row groups of one part file (a work unit); unreadable data raises E305 naming the file.

        ``read_dictionary`` columns come back dictionary-encoded (cheap for low-cardinality strings).
        """
        row_groups = list(row_groups)
        try:
            with self.fs.open(self.abspath(rel), "rb") as fh:
                pf = pq.ParquetFile(fh, read_dictionary=list(read_dictionary) or None)
                return pf.read_row_groups(row_groups, columns=list(columns))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError("E305_PARQUET_UNREADABLE", f"cannot read row groups {row_groups}: {exc}",
                             dataset=dataset_id or None, path=self.url(rel)) from exc


def _write_local(path: str, chunks: Iterable[bytes]) -> int:
    """Write chunks to a hidden temporary sibling, fsync, rename it to ``path``; return the size.

    A failed write (full disk, file-size limit, an error producing a chunk) removes the temporary file, so
    nothing partial is left behind, not even hidden.
    """
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
    size = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                size += fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return size


_IO_REASONS = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large (file-size limit or full device)"}


def _io_error(exc: OSError, where: str, dataset_id: str | None = None) -> PublishError:
    """``E_PUBLISH_IO`` naming the location, the reason and the operating-system error (errno)."""
    reason = _IO_REASONS.get(exc.errno, exc.strerror or str(exc))
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    return PublishError("E_PUBLISH_IO", f"cannot write: {reason}" + (f" ({name})" if name else ""),
                        dataset=dataset_id, path=where,
                        hint="choose a writable --data-root with free space, then rerun the same command: "
                             "nothing half-written is visible (staging folders are hidden and reused)")

