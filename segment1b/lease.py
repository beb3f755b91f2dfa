"""Leases on a data root: one writer per (data root, scope) at a time (issue 14).

Several people may submit the same work to one data root.  A job holds the lease of the scope it
publishes (``lease_tiles``, ``lease_catalogue``, ``lease_segment`` in the dataset dictionary) while it
stages and publishes, so a second submission waits for the first and then finds the work published, or
is refused with ``E_LEASE_BUSY`` (:class:`~segment1b.errors.BusyError`) when it may not wait that long.
Staging folders carry the holder's attempt id (:meth:`Lease.staging_path`): under the lease every other
staging folder of the scope belongs to a dead attempt, and only then may it be removed or adopted.

How a lease is held, by kind of data root:

* local and POSIX roots: an exclusive ``flock`` on the lock file.  The kernel drops it when the holding
  process ends, however it ends (SIGKILL included), so a dead holder never blocks anybody.  Who holds it
  (host, pid, start, command) is in ``<lock>.holder.json`` for the waiters' message.  Network file
  systems need working locks (NFSv4, or NFSv3 with lockd).
* S3 (s3fs): the lock object is created with a conditional write (``If-None-Match: *``) and renewed by a
  heartbeat every ttl/4 with ``If-Match`` on its ETag.  A waiter takes over an object whose ETag has not
  changed for ``ttl`` seconds of its own clock (so clocks of different hosts need not agree), again with
  ``If-Match``: exactly one waiter wins.  A holder whose heartbeat found the object changed has lost the
  lease and stops before its next publish.  A holder paused for longer than the ttl (a suspended laptop)
  can thus lose its lease; a killed one blocks others for one ttl.
* ``memory://`` roots live in one process: a lock in that process.
* other filesystems (gs://, az://, ...): no lease (a note is printed); concurrent submissions of the same
  work are not serialised there, and stale staging is never removed.

A root that cannot hold a lock file (read-only) gets a lease that is not ``exclusive`` and writes nothing:
nobody can publish there.  Leases are re-entrant within a thread for the same scope, and a thread never
holds two scopes at once (no hold-and-wait, so no deadlock).
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import socket
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .errors import BusyError

if TYPE_CHECKING:
    from .storage import Storage

__all__ = ["Lease", "acquire", "check_leases", "sweep_when_idle", "new_attempt_id", "DEFAULT_WAIT_SECONDS",
           "DEFAULT_TTL_SECONDS"]

DEFAULT_WAIT_SECONDS = 3600.0  # how long a second submission waits for the first (--lease-wait)
DEFAULT_TTL_SECONDS = 60.0  # object stores: a holder silent for this long has lost its lease
_LOCAL_POLL_SECONDS = 0.25
_S3_POLL_SECONDS = 2.0
_held = threading.local()  # this thread's leases: {(root_url, scope): Lease}
_process_locks: dict[str, dict[str, Any]] = {}  # memory:// roots
_process_mutex = threading.Lock()


def new_attempt_id() -> str:
    """12 random hex characters naming one attempt's staging folders."""
    return uuid.uuid4().hex[:12]


class Lease:
    """A lease on one scope of a data root, held by this thread; a context manager (``release`` on exit).

    Attributes
    ----------
    scope : str
        The lock path relative to the root (``control/lease/segment/fingerprint=….lock``).
    attempt : str
        This attempt's id: it names the attempt's staging folders.
    exclusive : bool
        False when the root cannot hold a lease (read-only, or a filesystem without one): the holder then
        touches no staging folder but its own.
    """

    def __init__(self, storage: Storage, scope: str, attempt: str, lock: Any | None):
        self.storage, self.scope, self.attempt = storage, scope, attempt
        self._lock = lock
        self._depth = 1

    def __repr__(self) -> str:
        return f"Lease({self.storage.url(self.scope)!r}, attempt={self.attempt!r}, exclusive={self.exclusive})"

    @property
    def exclusive(self) -> bool:
        return self._lock is not None

    @property
    def lost(self) -> bool:
        """True once another attempt took the lease over (object stores only: a lapsed heartbeat)."""
        return self._lock is not None and self._lock.lost

    def check(self) -> None:
        """Raise ``E_LEASE_BUSY`` if the lease was taken over: the caller must not publish any more."""
        if self.lost:
            raise BusyError("E_LEASE_BUSY", f"the lease {self.scope} was taken over by "
                            f"{_describe(self._lock.holder())} after this run's heartbeat lapsed; stopped "
                            "before publishing", path=self.storage.url(self.scope),
                            hint="rerun the same command: it waits for the other run and resumes")

    def staging_path(self, target_rel: str) -> str:
        """This attempt's hidden staging folder for partition ``target_rel``."""
        return self.storage.staging_path(target_rel, self.attempt)

    def sweep(self, *targets: str, keep: tuple[str, ...] = ()) -> None:
        """Remove the staging folders of ``targets`` left by other attempts (best effort).

        Only under an exclusive lease: then no other attempt of the scope is alive.  This attempt's own
        folders and ``keep`` stay.
        """
        if not self.exclusive:
            return
        for target in targets:
            mine = self.staging_path(target)
            for rel in self.storage.staging_siblings(target):
                if rel != mine and rel not in keep:
                    self.storage.discard(rel)

    def release(self) -> None:
        """End the lease (the outermost holder of a re-entrant lease ends it)."""
        self._depth -= 1
        if self._depth > 0:
            return
        _leases().pop((self.storage.root_url, self.scope), None)
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def acquire(storage: Storage, scope: str, *, wait: float = DEFAULT_WAIT_SECONDS, out=None,
            ttl: float = DEFAULT_TTL_SECONDS) -> Lease:
    """Take the lease on ``scope`` of ``storage``'s root, waiting up to ``wait`` seconds for its holder.

    Parameters
    ----------
    storage : Storage
    scope : str
        Lock path relative to the root, from the dataset dictionary (``path_for("lease_segment", ...)``).
    wait : float
        Seconds to wait for another holder; 0 refuses at once.
    out : text stream, optional
        Where "waiting for <holder>" is printed (default stdout).
    ttl : float
        Object stores: seconds without a heartbeat after which this lease may be taken over.

    Returns
    -------
    Lease

    Raises
    ------
    BusyError
        ``E_LEASE_BUSY`` naming the holder when it still holds the lease after ``wait`` seconds.
    RuntimeError
        When this thread already holds another scope (a bug: two scopes at once could deadlock).
    """
    out = out if out is not None else sys.stdout
    key = (storage.root_url, scope)
    held = _leases()
    if key in held:
        held[key]._depth += 1
        return held[key]
    if held:
        raise RuntimeError(f"this thread holds the lease {sorted(held)[0][1]} and asked for {scope}: leases never "
                           "nest (one scope at a time, so two runs cannot deadlock); this is a bug in segment1b")
    attempt = new_attempt_id()
    lock = _lock_for(storage, scope, ttl, out)
    if lock is not None:
        lock = _wait_for(lock, storage, scope, _holder_record(scope, attempt, ttl), wait, out)
    lease = Lease(storage, scope, attempt, lock)
    held[key] = lease
    return lease


def check_leases(storage: Storage) -> None:
    """Raise ``E_LEASE_BUSY`` if a lease this thread holds on ``storage``'s root was taken over."""
    for (root, _), lease in list(_leases().items()):
        if root == storage.root_url:
            lease.check()


def sweep_when_idle(storage: Storage, scope: str, *targets: str) -> None:
    """Remove staging folders of ``targets`` that killed runs left, if any, when nobody holds ``scope``.

    For a job that finds its work published: it takes the lease (without waiting) only when there is such
    a folder to remove; a busy scope is left alone (its holder sweeps it).
    """
    if not any(storage.staging_siblings(t) for t in targets):
        return
    try:
        lease = acquire(storage, scope, wait=0, out=io.StringIO())
    except BusyError:
        return
    with lease:
        lease.sweep(*targets)


# ---------------------------------------------------------------------------------------------------------

def _leases() -> dict[tuple[str, str], Lease]:
    if not hasattr(_held, "leases"):
        _held.leases = {}
    return _held.leases


def _holder_record(scope: str, attempt: str, ttl: float) -> dict[str, Any]:
    command = " ".join(sys.argv)
    return {"scope": scope, "attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(),
            "started_utc": utc_now(), "command": command if len(command) <= 300 else command[:297] + "...",
            "ttl_seconds": ttl}


def _describe(record: dict[str, Any] | None) -> str:
    if not record or "pid" not in record:
        return "another run (who is not known yet: it is starting)"
    return (f"pid {record['pid']} on {record.get('host', '?')} (attempt {record.get('attempt', '?')}, since "
            f"{record.get('started_utc', '?')}): {record.get('command', '')}")


def _lock_for(storage: Storage, scope: str, ttl: float, out):
    if storage.is_local:
        return _FlockLock(storage.abspath(scope))
    protocols = storage.fs.protocol if isinstance(storage.fs.protocol, tuple) else (storage.fs.protocol,)
    if {"s3", "s3a"} & set(protocols):
        return _S3Lock(storage.fs, storage.abspath(scope), ttl)
    if "memory" in protocols:
        return _ProcessLock(storage.root_url + "/" + scope)
    print(f"  note: {protocols[0]}:// data roots have no lease; concurrent submissions of the same work are not "
          "serialised there (README, 'Shared data roots')", file=out)
    return None


def _wait_for(lock, storage: Storage, scope: str, record: dict[str, Any], wait: float, out):
    """Poll ``lock`` until it is ours (returns it), unavailable (None) or ``wait`` seconds have passed."""
    try:
        return _poll(lock, storage, scope, record, wait, out)
    except BaseException:  # busy, interrupted, unreachable: give back what was opened, never another's lock
        lock.release()
        raise


def _poll(lock, storage: Storage, scope: str, record: dict[str, Any], wait: float, out):
    start = time.monotonic()
    deadline = start + max(0.0, float(wait))
    announced = None
    while True:
        try:
            got = lock.try_acquire(record)
        except OSError as exc:  # the store cannot be reached or written (the lost races are handled inside)
            raise _io_error(exc, storage.url(scope)) from exc
        if got is None:  # the root cannot hold a lock file: nobody can publish there
            return None
        if got:
            if announced is not None:
                print(f"  lease {scope}: acquired after {time.monotonic() - start:.1f} s", file=out, flush=True)
            return lock
        holder = lock.holder()
        now = time.monotonic()
        if now >= deadline:
            waited = f"waited {now - start:.0f} s" if wait > 0 else "refused at once (--no-wait)"
            raise BusyError("E_LEASE_BUSY", f"{scope} of this data root is leased by {_describe(holder)}; {waited}",
                            path=storage.url(scope),
                            hint="that run publishes the same work: rerun the same command once it has finished "
                                 "(it then finds the work published), or wait longer with --lease-wait SECONDS")
        who = _describe(holder)
        if who != announced:
            print(f"  lease {scope}: waiting for {who} (up to {wait:g} s; --lease-wait)", file=out, flush=True)
            announced = who
        time.sleep(min(lock.poll, max(deadline - now, 0.01)))


class _FlockLock:
    """``flock`` on a local lock file; the holder's record in ``<lock>.holder.json``."""

    poll = _LOCAL_POLL_SECONDS
    lost = False

    def __init__(self, path: str):
        self.path, self.info = path, path + ".holder.json"
        self.fd: int | None = None
        self.writable = self.held = False

    def _open(self) -> int | None:
        try:
            os.makedirs(posixpath.dirname(self.path), exist_ok=True)
            self.writable = True
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise _io_error(exc, self.path) from exc
        self.writable = False
        try:  # an existing lock file can still be locked read-only (flock needs no write access)
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def try_acquire(self, record: dict[str, Any]) -> bool | None:
        import fcntl

        if self.fd is None:
            self.fd = self._open()
            if self.fd is None:
                return None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        if self.writable:
            self._write_info(record)
        return True

    def _write_info(self, record: dict[str, Any]) -> None:
        # a new file (unlink, then create): never an in-place change of a file a copy of the root may share
        try:
            os.unlink(self.info)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.info, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(record, sort_keys=True).encode())
        except OSError:
            pass  # only the waiters' message needs it

    def holder(self) -> dict[str, Any] | None:
        try:
            with open(self.info, "rb") as fh:
                return json.loads(fh.read())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        import fcntl

        if self.fd is None:
            return
        if self.held:
            if self.writable:
                try:
                    os.unlink(self.info)
                except OSError:
                    pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd, self.held = None, False


class _ProcessLock:
    """A lease inside this process (``memory://`` roots exist only here)."""

    poll = 0.05
    lost = False

    def __init__(self, key: str):
        self.key = key
        self.record: dict[str, Any] | None = None

    def try_acquire(self, record: dict[str, Any]) -> bool:
        with _process_mutex:
            if self.key in _process_locks:
                return False
            _process_locks[self.key] = self.record = record
            return True

    def holder(self) -> dict[str, Any] | None:
        return _process_locks.get(self.key)

    def release(self) -> None:
        with _process_mutex:
            if self.record is not None and _process_locks.get(self.key) is self.record:
                del _process_locks[self.key]
            self.record = None


class _S3Lock:
    """A lock object created and renewed with conditional writes (If-None-Match / If-Match on the ETag)."""

    poll = _S3_POLL_SECONDS

    def __init__(self, fs, path: str, ttl: float):
        self.fs, self.path, self.ttl = fs, path, float(ttl)
        self.etag: str | None = None
        self.record: dict[str, Any] | None = None
        self.current: dict[str, Any] | None = None
        self.first_seen: dict[str, float] = {}  # ETag -> when this waiter first saw it (its own clock)
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self, record: dict[str, Any]) -> bool:
        body = _body(record, 0)
        try:
            self._hold(self.fs.pipe_file(self.path, body, mode="create"), record)
            return True
        except FileExistsError:
            pass
        seen = self._read()
        if seen is None:  # released meanwhile: create it at the next poll
            return False
        etag, self.current = seen
        first = self.first_seen.setdefault(etag, time.monotonic())
        ttl = float((self.current or {}).get("ttl_seconds") or self.ttl)
        if time.monotonic() - first < ttl:
            return False
        try:  # its holder has been silent for a whole ttl: take it over, if nobody else did (If-Match)
            self._hold(self.fs.pipe_file(self.path, body, IfMatch=etag), record)
        except OSError as exc:
            if _lost_race(exc):
                return False
            raise
        return True

    def _read(self) -> tuple[str, dict[str, Any] | None] | None:
        for _ in range(5):  # the ETag of the bytes read: the same before and after reading them
            try:
                before = self.fs.info(self.path)["ETag"]
                data = self.fs.cat_file(self.path)
                after = self.fs.info(self.path)["ETag"]
            except FileNotFoundError:
                return None
            if before == after:
                try:
                    return after, json.loads(data)
                except ValueError:
                    return after, None
        return None

    def _hold(self, response: Any, record: dict[str, Any]) -> None:
        self.etag, self.record = response["ETag"], record
        self._beat = threading.Thread(target=self._heartbeat, name="segment1b-lease-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        beat, renewed = 0, time.monotonic()
        while not self._stop.wait(self.ttl / 4):
            beat += 1
            try:
                self.etag = self.fs.pipe_file(self.path, _body(self.record, beat), IfMatch=self.etag)["ETag"]
                renewed = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a heartbeat never raises; it marks the lease lost
                if (isinstance(exc, (OSError, FileNotFoundError)) and _lost_race(exc)) or \
                        time.monotonic() - renewed > self.ttl:
                    self.lost = True
                    return

    def holder(self) -> dict[str, Any] | None:
        if self.lost:
            seen = self._read()
            return seen[1] if seen else None
        return self.current

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        if self.etag is None or self.lost:
            return
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self.etag)
        except OSError:
            pass  # taken over meanwhile: it is the new holder's now


def utc_now() -> str:
    """RFC 3339 UTC time (segment1b.identity imports storage, which imports this module)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _body(record: dict[str, Any] | None, beat: int) -> bytes:
    return json.dumps({**(record or {}), "beat": beat, "renewed_utc": utc_now()}, sort_keys=True).encode()


def _lost_race(exc: BaseException) -> bool:
    """A conditional write refused: the object is not the one we saw (412), or a concurrent write (409)."""
    text = str(exc).lower()
    return isinstance(exc, (FileExistsError, FileNotFoundError)) or "pre-condition" in text or \
        "precondition" in text or "conflict" in text or getattr(exc, "errno", None) == errno.EINVAL


def _io_error(exc: OSError, path: str):
    from .storage import _io_error as io_error

    return io_error(exc, path)
