"""Leases on a data root (segment1b/lease.py, issue 14): one writer per (data root, scope) at a time.

Holders are real processes (a small script): a live holder makes others wait or refuses them with
``E_LEASE_BUSY`` naming it; a SIGKILLed holder's lease is taken over (at once on a local root, where the
kernel drops the lock; after the time-to-live on S3, where the lock object's heartbeat stops).  Every
process started here runs in its own session and is killed in ``finally``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from moto_s3 import moto_s3, storage_options
from cluster_fixtures import die_with_parent
from segment1b.contracts import path_for
from segment1b.errors import BusyError
from segment1b.lease import acquire
from segment1b.storage import Storage, part_name

FP = "ab" * 32
SCOPE = path_for("lease_segment", manifest_fingerprint=FP)
OTHER = path_for("lease_tiles", parameter_hash="cd" * 32)

HOLDER = textwrap.dedent("""
    import json, sys
    from segment1b.storage import Storage
    storage = Storage(sys.argv[1], json.loads(sys.argv[3]), lease_wait=float(sys.argv[4]))
    with storage.lease(sys.argv[2], ttl=float(sys.argv[5])) as lease:
        print("held", lease.attempt, lease.exclusive, flush=True)
        sys.stdin.read()  # hold until stdin is closed (or the process is killed)
    print("released", flush=True)
""")


class Holders:
    """Holder processes in their own sessions; ``close`` kills whatever is left."""

    def __init__(self, tmp_path):
        self.script = tmp_path / "holder.py"
        self.script.write_text(HOLDER)
        self.procs: list[subprocess.Popen] = []

    def start(self, root: str, scope: str = SCOPE, options: dict | None = None, *, wait: float = 0,
              ttl: float = 60) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
        proc = subprocess.Popen([sys.executable, str(self.script), root, scope, json.dumps(options or {}),
                                 str(wait), str(ttl)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                                preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


@pytest.fixture
def holders(tmp_path):
    h = Holders(tmp_path)
    try:
        yield h
    finally:
        h.close()


def held(proc: subprocess.Popen) -> str:
    """Block until the holder says it holds the lease; its attempt id."""
    line = proc.stdout.readline()
    assert line.startswith("held "), line + proc.stderr.read()
    return line.split()[1]


def wait_for(condition, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail("condition not reached in time")


# -- local roots: flock ----------------------------------------------------------------------------------

def test_a_live_holder_makes_others_wait_or_refuses_them_naming_it(holders, tmp_path):
    root = str(tmp_path / "root")
    storage = Storage(root)
    holder = holders.start(root)
    held(holder)
    with pytest.raises(BusyError) as e:  # --no-wait: refused at once
        acquire(storage, SCOPE, wait=0)
    err = e.value
    assert err.code == "E_LEASE_BUSY" and f"pid {holder.pid}" in str(err) and "holder.py" in str(err), str(err)
    assert err.path == storage.url(SCOPE)
    # waiting: the message names the holder; the lease is taken as soon as the holder releases it
    out = io.StringIO()
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(acquire(storage, SCOPE, wait=600, out=out)), daemon=True)
    waiter.start()
    wait_for(lambda: "waiting for" in out.getvalue())
    assert f"pid {holder.pid}" in out.getvalue() and not got
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    waiter.join(120)
    lease = got[0]
    assert lease.exclusive
    other = holders.start(root)  # now this process holds it: another process is refused at once
    assert other.wait(timeout=120) != 0 and "E_LEASE_BUSY" in other.stderr.read()
    lease.release()


def test_the_lease_of_a_sigkilled_holder_is_taken_over_at_once(holders, tmp_path):
    root = str(tmp_path / "root")
    holder = holders.start(root)
    dead = held(holder)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    with acquire(Storage(root), SCOPE, wait=60) as lease:  # the kernel dropped the lock with the process
        assert lease.exclusive and lease.attempt != dead
        info = json.loads(open(Storage(root).abspath(SCOPE) + ".holder.json").read())  # who holds it
        assert info["pid"] == os.getpid() and info["attempt"] == lease.attempt


def test_leases_are_reentrant_per_scope_and_never_nested_across_scopes(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    with acquire(storage, SCOPE, wait=0) as outer:
        with storage.lease(SCOPE) as inner:  # the same scope again (a job inside `run`): the same lease
            assert inner is outer
        assert outer.exclusive
        with pytest.raises(RuntimeError, match="nest"):  # two scopes at once could deadlock: a bug
            acquire(storage, OTHER, wait=0)
    with acquire(storage, OTHER, wait=0) as other:  # released: the other scope is free to take
        assert other.attempt != outer.attempt


def test_staging_belongs_to_one_attempt_and_only_dead_attempts_staging_is_swept(holders, tmp_path):
    root = str(tmp_path / "root")
    storage = Storage(root)
    target = "data/x/seed=1/"
    dead = held(holders.start(root))
    os.killpg(holders.procs[-1].pid, signal.SIGKILL)
    storage.write_part(storage.staging_path(target, dead), part_name(0), b"dead attempt")
    with acquire(storage, SCOPE, wait=60) as lease:
        mine = lease.staging_path(target)
        assert mine != storage.staging_path(target, dead) and lease.attempt in mine
        storage.write_part(mine, part_name(0), b"mine")
        assert storage.staging_siblings(target) == sorted([mine, storage.staging_path(target, dead)])
        lease.sweep(target)  # under the lease nobody else is alive: the dead attempt's staging goes
        assert storage.staging_siblings(target) == [mine]


def test_a_root_that_cannot_hold_a_lock_file_gets_a_lease_that_writes_nothing(tmp_path, monkeypatch):
    """Read-only root (EROFS): nobody can write there, so no lease is needed, and taking one writes nothing."""
    root = tmp_path / "root"
    root.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "makedirs", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "ro")))
    with acquire(Storage(str(root)), SCOPE, wait=0) as lease:
        assert not lease.exclusive
        lease.sweep("data/x/seed=1/")  # never removes anything it cannot know to be dead
    assert list(root.iterdir()) == []


# -- S3: conditional writes, heartbeat, time-to-live --------------------------------------------------------

@pytest.fixture(scope="module")
def s3():
    with moto_s3("segment1b-lease") as endpoint:
        yield storage_options(endpoint)


def test_on_s3_one_of_several_racing_holders_wins_and_a_killed_one_is_taken_over_after_its_ttl(holders, s3):
    root = "s3://segment1b-lease/race-" + os.urandom(4).hex()
    racers = [holders.start(root, options=s3, ttl=3) for _ in range(3)]
    lines = [p.stdout.readline() for p in racers]  # "held ..." or nothing (refused: exit)
    winners = [p for p, line in zip(racers, lines) if line.startswith("held ")]
    assert len(winners) == 1, lines
    for p in racers:
        if p is not winners[0]:
            assert p.wait(timeout=120) != 0 and "E_LEASE_BUSY" in p.stderr.read()
    storage = Storage(root, s3)
    with pytest.raises(BusyError):  # alive: its heartbeat keeps the lease
        acquire(storage, SCOPE, wait=0)
    os.killpg(winners[0].pid, signal.SIGKILL)
    winners[0].wait(timeout=60)
    out = io.StringIO()
    with acquire(storage, SCOPE, wait=300, out=out) as lease:  # taken over once the heartbeat stopped for 3 s
        assert lease.exclusive and "waiting for" in out.getvalue()
    assert not storage.exists(SCOPE)  # released: the lock object is deleted


def test_on_s3_a_holder_whose_lease_was_taken_over_stops_before_publishing(s3):
    storage = Storage("s3://segment1b-lease/lost-" + os.urandom(4).hex(), s3)
    with acquire(storage, SCOPE, wait=0, ttl=1) as lease:
        # another process took the lease (as if this one had been paused for longer than the ttl)
        storage.fs.pipe_file(storage.abspath(SCOPE), b'{"attempt": "intruder"}')
        wait_for(lambda: lease.lost)
        with pytest.raises(BusyError) as e:
            storage.publish_bytes({"a.json": b"{}"}, "data/y/seed=2/", "s3_requirements")
        assert e.value.code == "E_LEASE_BUSY" and "taken over" in str(e.value)
        assert not storage.is_published("data/y/seed=2/")


# -- the command line ---------------------------------------------------------------------------------------

def test_a_second_submission_that_may_not_wait_exits_75_naming_the_holder(holders, tmp_path):
    """`segment1b gate` (S0) of a fingerprint another run holds: --no-wait refuses at once, --lease-wait N after
    N seconds of "waiting for <holder>"; exit 75, E_LEASE_BUSY naming the holder, no traceback, nothing written."""
    root = str(tmp_path / "root")
    holder = holders.start(root, SCOPE)
    held(holder)
    base = [sys.executable, "-m", "jobs.cli", "gate", "--data-root", root, "--fingerprint", FP]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    for flags, said in ((["--no-wait"], "refused at once (--no-wait)"), (["--lease-wait", "1"], "waited ")):
        proc = subprocess.run(base + flags, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"FAILED E_LEASE_BUSY: {SCOPE} of this data root is leased by pid {holder.pid} on " in proc.stderr
        assert said in proc.stderr and "hint: " in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert f"waiting for pid {holder.pid}" in proc.stdout  # the --lease-wait run said whom it waited for
    assert sorted(os.listdir(root)) == ["control"]  # nothing but the lease itself
