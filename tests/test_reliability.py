"""Faults survived (issue #9): a worker killed in S6, a full or read-only data root, a small memory limit.

Each test runs real Dask worker processes.  The pipeline tests use `segment1b run` on the 30' grid with a
tiny generated catalogue (tests/runs.py); the memory test places one big country of the synthetic world
(tests/world.py).  A client killed in the middle of S5 is covered by tests/test_end_to_end.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import runs
import world
from cluster_fixtures import die_with_parent
from segment1b.contracts import path_for, report_path
from segment1b.storage import Storage

pytestmark = pytest.mark.cluster

NOBODY = 65534


def _cluster(memory_limit: str = "2GiB", threads: int = 1):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=threads, processes=True, dashboard_address=None,
                           silence_logs=50, memory_limit=memory_limit,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def undisturbed(client, tmp_path_factory):
    """One run of `segment1b run` that nothing disturbs: the reference bytes."""
    storage, summary = runs.passed_run(client, str(tmp_path_factory.mktemp("undisturbed")))
    ident = summary.identity
    digests = runs.dataset_digests(storage, ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"])
    assert all(digests.values()), digests
    return ident, digests


# -- a worker killed in the middle of S6 -----------------------------------------------------------------

class KillOnFirstJitter:
    """Worker plugin: SIGKILL this worker's own process when an ``s6-jitter-…`` task starts executing."""

    name = "segment1b-test-kill-on-s6"

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("s6-jitter-"):
            os.kill(os.getpid(), signal.SIGKILL)


def _arm(dask_worker):
    # in the worker process: only this worker gets the plugin; the process the nanny restarts does not
    dask_worker.plugins[KillOnFirstJitter.name] = KillOnFirstJitter()
    return os.getpid()


def test_worker_killed_mid_s6_loses_nothing(undisturbed, client, tmp_path):
    ident, expected = undisturbed
    prepared, _ = runs.prepared_root(client)
    storage = Storage(runs.fresh_root(prepared, str(tmp_path / "root")))
    cluster, c = _cluster()
    try:
        c.wait_for_workers(2)
        before = c.run(os.getpid)
        victim = sorted(before)[0]
        victim_pid = c.run(_arm, workers=[victim])[victim]
        summary = runs.run(storage, c)
        after = c.run(os.getpid)
    finally:
        c.close()
        cluster.close()
    assert summary.passed
    with pytest.raises(ProcessLookupError):  # the victim really died (in its first S6 task) ...
        os.kill(victim_pid, 0)
    assert victim_pid not in after.values() and len(after) == 2  # ... and the nanny replaced it
    got = runs.dataset_digests(storage, ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"])
    assert got == expected


# -- full and read-only data roots -----------------------------------------------------------------------

def _open_dir(path: str) -> str:
    """A folder under /tmp that an unprivileged user may traverse (pytest's tmp_path is private to root)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
    return path


def _cli_run(root: str, *, prefix=(), preexec=None, env=None, memory_limit="2GiB",
             options=()) -> subprocess.CompletedProcess:
    """`segment1b run` in a subprocess (its own LocalCluster, so the workers inherit its limits)."""
    argv = [*prefix, sys.executable, "-m", "jobs.cli", "run", "--data-root", root, "--seed", str(runs.SEED),
            "--grid", runs.GRID, "--scale", runs.SCALE, "--workers", "2", "--threads-per-worker", "1",
            "--memory-limit", memory_limit, *options]

    def start() -> None:
        if preexec is not None:
            preexec()
        die_with_parent()  # after a change of user, which clears it

    return subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=start,
                          env={**os.environ, **(env or {})}, cwd=os.path.dirname(os.path.dirname(__file__)))


def _nothing_visible(storage: Storage, datasets) -> None:
    for ds in datasets:
        assert runs.visible_partitions(storage, ds) == [], f"{ds} has visible files after the failure"
    # no partial file anywhere: temporary files of failed writes are removed, not only hidden
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(storage.root_url) for f in files if ".tmp-" in f]
    assert leftovers == []


def _file_size_limit(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    return preexec


def test_full_location_is_e_publish_io_naming_the_path_and_a_rerun_completes(undisturbed, client, tmp_path):
    """Writes past 1 MB fail (RLIMIT_FSIZE, in every worker too): the plain S5 event log (1.4 MB; compressed it
    would fit) cannot be written."""
    ident, expected = undisturbed
    prepared, _ = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path / "root"))
    proc = _cli_run(root, preexec=_file_size_limit(1_000_000), options=("--rng-logs", "plain"))
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr
    assert "FAILED E_PUBLISH_IO: cannot write: file too large" in err and "(EFBIG)" in err, err[-3000:]
    assert f"path={root}/" in err and "staging-" in err  # names the file it could not write
    storage = Storage(root)
    _nothing_visible(storage, ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter",
                               "s7_site_synthesis", "site_locations"))
    # with space again, the same command resumes and ends with the bytes of an undisturbed run
    summary = runs.run(storage, client)
    assert summary.passed and summary.identity["resumed"]
    got = runs.dataset_digests(storage, ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"])
    assert got == expected


def _can_mount_read_only(probe: str) -> bool:
    os.makedirs(probe, exist_ok=True)
    cmd = ["unshare", "-m", "sh", "-c", _RO_MOUNT + " true", probe]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# in a private mount namespace: bind the folder onto itself read-only, then run the command ($@)
_RO_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _read_only(locked: str, base: str) -> tuple[list[str], object, str]:
    """How to run a command for which ``locked`` is read-only: (argv prefix, preexec_fn, expected reason).

    An unprivileged user gets a folder without write permission.  Root ignores permissions, so for root
    the folder is a read-only bind mount in a private mount namespace (EROFS for everybody), or, where
    mounting is not allowed, the command runs as the unprivileged user ``nobody``.
    """
    if os.geteuid() != 0:
        os.chmod(locked, 0o555)
        return [], None, "permission denied (EACCES)"
    if shutil.which("unshare") and _can_mount_read_only(os.path.join(base, "probe")):
        return ["unshare", "-m", "sh", "-c", _RO_MOUNT, locked], None, "read-only file system (EROFS)"
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_as_nobody, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("root without mount namespaces, and Python is not executable by an unprivileged user")
    os.chmod(locked, 0o555)  # stays owned by root: nobody cannot create anything in it
    return [], _as_nobody, "permission denied (EACCES)"


def test_read_only_location_is_e_publish_io_naming_the_path(client):
    """The S5 dataset folder is read-only for the run: the S5 part writer (a worker task) cannot write."""
    prepared, _ = runs.prepared_root(client)
    base = tempfile.mkdtemp(prefix="segment1b-readonly-", dir="/tmp")
    try:
        root = runs.fresh_root(prepared, os.path.join(_open_dir(base), "root"), link=False)
        locked = os.path.join(root, "data/layer1/1B/s5_site_tile_assignment")
        os.makedirs(locked)
        prefix, preexec, reason = _read_only(locked, base)
        env = None
        if preexec is not None:  # the unprivileged user needs its own data root, cache and HOME
            for d, _, files in os.walk(root):
                if d != locked:
                    os.chown(d, NOBODY, NOBODY)
                for f in files:
                    os.chown(os.path.join(d, f), NOBODY, NOBODY)
            cache = _open_dir(os.path.join(base, "cache"))
            env = {"SEGMENT1B_CACHE": cache, "HOME": cache, "MPLCONFIGDIR": cache}
        proc = _cli_run(root, prefix=prefix, preexec=preexec, env=env)
        assert proc.returncode == 3, proc.stderr[-3000:]
        err = proc.stderr
        assert f"FAILED E_PUBLISH_IO: cannot write: {reason}" in err, err[-3000:]
        assert f"path={locked}/seed={runs.SEED}/" in err  # names the location it could not write
        storage = Storage(root)
        _nothing_visible(storage, ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter",
                                   "s7_site_synthesis", "site_locations"))
        assert os.listdir(locked) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _tree(root: str) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and folder under ``root``: anything written changes it."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(d, name))
            out[os.path.relpath(os.path.join(d, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_a_complete_run_on_a_read_only_root_is_a_no_op_that_passes(client):
    """Issue #14: rerunning a complete run on a read-only data root wrote run_summary.json, the reports and
    re-staged the S9 bundle (EROFS).  Now it finds everything published up front and writes nothing."""
    prepared, _ = runs.prepared_root(client)
    base = tempfile.mkdtemp(prefix="segment1b-complete-", dir="/tmp")
    try:
        root = runs.fresh_root(prepared, os.path.join(_open_dir(base), "root"), link=False)
        assert runs.run(Storage(root), client).passed
        before = _tree(root)
        if os.geteuid() != 0:  # chmod -R a-w (root ignores permissions: _read_only mounts or drops to nobody)
            for d, dirs, files in os.walk(root):
                for name in files:
                    os.chmod(os.path.join(d, name), 0o444)
                for name in dirs:
                    os.chmod(os.path.join(d, name), 0o555)
        prefix, preexec, _ = _read_only(root, base)
        env = None
        if preexec is not None:
            cache = _open_dir(os.path.join(base, "cache"))
            env = {"SEGMENT1B_CACHE": cache, "HOME": cache, "MPLCONFIGDIR": cache}
        proc = _cli_run(root, prefix=prefix, preexec=preexec, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "nothing to do, nothing written" in proc.stdout and "\nPASS" in proc.stdout, proc.stdout
        assert "Dask" not in proc.stdout  # decided before any cluster started
        assert _tree(root) == before
    finally:
        for d, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(d, name), 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_publish_onto_a_full_location_leaves_no_partial_file(tmp_path):
    """Storage level: a staged part that does not fit is E_PUBLISH_IO naming its path, with no partial file."""
    script = (
        "import resource, signal, sys\n"
        "from segment1b.storage import Storage\n"
        "from segment1b.errors import PublishError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "s = Storage(sys.argv[1])\n"
        "staging = s.staging_path('data/x/seed=1/', 'tok')\n"
        "s.write_part(staging, 'part-00000.parquet', b'a' * 50_000)\n"
        "try:\n"
        "    s.write_part(staging, 'part-00001.parquet', b'b' * 200_000)\n"
        "except PublishError as e:\n"
        "    print(e.code, e.path, sep='\\n')\n"
    )
    root = str(tmp_path / "root")
    out = subprocess.run([sys.executable, "-c", script, root], capture_output=True, text=True, check=True).stdout
    code, path = out.split("\n")[:2]
    assert code == "E_PUBLISH_IO" and path == f"{root}/data/x/.seed=1.staging-tok/part-00001.parquet"
    staging = tmp_path / "root/data/x/.seed=1.staging-tok"
    assert sorted(os.listdir(staging)) == ["part-00000.parquet"]  # the failed file's temporary is gone
    assert Storage(root).list_files("data/x") == [] and not Storage(root).is_published("data/x/seed=1/")


# -- a contract failure raised inside a task ---------------------------------------------------------------

def test_a_contract_failure_raised_in_a_task_prints_its_code_dataset_and_rows_without_a_traceback(client, tmp_path):
    """tile_index lost FR's part after publication: the S4 weight task of FR raises E505 on a worker.

    The user sees the contract's code, dataset and offending rows once, on stderr, exit 3; not the worker's
    "Compute Failed" log with Python reprs and ``Traceback:`` lines (issue 14).
    """
    import pyarrow.parquet as pq

    prepared, prep = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path / "root"))
    index = Storage(root).abspath(path_for("tile_index", parameter_hash=prep["parameter_hash"]))
    fr = [f for f in sorted(os.listdir(index))
          if "FR" in pq.read_table(os.path.join(index, f), columns=["country_iso"])["country_iso"].to_pylist()]
    assert len(fr) == 1
    os.unlink(os.path.join(index, fr[0]))  # a hard link of the prepared root: only this root loses it
    argv = [sys.executable, "-m", "jobs.cli", "run", "--data-root", root, "--seed", str(runs.SEED), "--grid",
            runs.GRID, "--scale", runs.SCALE, "--through", "s4", "--workers", "2", "--threads-per-worker", "1",
            "--memory-limit", "2GiB"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=die_with_parent,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr
    assert "FAILED E505_TILE_NOT_IN_INDEX: " in err and "[dataset=tile_weights]" in err, err[-3000:]
    assert re.search(r"^    country_iso='FR' tile_id=\d+$", err, re.M), err[-3000:]
    # the worker's log of the task failure: "Compute Failed", the exception's repr, "Traceback: '  File ..."
    for noise in ("Compute Failed", "InputError(", "Traceback: "):
        assert noise not in err + proc.stdout, err[-3000:]
    assert err.count("E505_TILE_NOT_IN_INDEX") == 1, err[-3000:]
# -- never hang silently (issue #14): paused workers, a lost scheduler, a small memory limit -------------

PAUSE_AT_S4 = os.path.join(os.path.dirname(__file__), "data", "pause_at_s4.py")
PLACED = ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis", "site_locations")


def test_workers_paused_from_s4_on_end_the_run_with_c201_not_a_hang(client, tmp_path):
    """Both workers pause (their memory monitor, as over distributed.worker.memory.pause) when S4 starts.

    Before issue #14 the run waited forever; now the wait fails after segment1b.cluster.pause-timeout (5 s
    here) with C201 and a hint, exit 4 (the subprocess timeout of _cli_run bounds the test).
    """
    prepared, _ = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path / "root"))
    proc = _cli_run(root, env={"DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([PAUSE_AT_S4]),
                               "DASK_SEGMENT1B__CLUSTER__PAUSE_TIMEOUT": "5"})
    err = proc.stderr
    assert proc.returncode == 4, proc.stdout[-2000:] + err[-3000:]
    assert "FAILED C201_WORKERS_PAUSED: 2 of 2 workers stayed paused for 5 s" in err, err[-3000:]
    assert "hint: give the workers more memory (--memory-limit" in err and "Traceback" not in err, err[-3000:]
    assert "[s4-s6 placement]" in proc.stdout and "[s7-s8 synthesis]" not in proc.stdout
    _nothing_visible(Storage(root), PLACED)


@pytest.mark.timeout(400)
def test_a_small_memory_limit_ends_with_a_code_not_a_hang(client, tmp_path):
    """300 MB per worker cannot hold a worker's own floor plus the largest unit: refused up front (C001)
    with the minimum that works, before S1 runs; never a run that waits forever."""
    prepared, _ = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path / "root"))
    proc = _cli_run(root, memory_limit="300MB")
    err = proc.stderr
    assert proc.returncode == 4, proc.stdout[-2000:] + err[-3000:]
    assert "FAILED C001_OPTION_INVALID" in err and "at least" in err and "Traceback" not in err, err[-3000:]
    assert "[s0-s3 requirements]" not in proc.stdout
    _nothing_visible(Storage(root), PLACED)


@pytest.mark.timeout(400)
def test_losing_the_scheduler_mid_run_is_c202_exit_4(client, tmp_path):
    """The scheduler of a remote cluster is killed once S4-S6 has started: exit 4 with C202, no traceback."""
    from cluster_fixtures import repo_env, start_cluster, wait_for_workers

    prepared, _ = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path / "root"))
    procs, _, address = start_cluster(tmp_path, n_workers=2, memory_limit="2GiB")
    try:
        wait_for_workers(address, 2)
        argv = [sys.executable, "-m", "jobs.cli", "run", "--data-root", root, "--seed", str(runs.SEED), "--grid",
                runs.GRID, "--scale", runs.SCALE, "--scheduler", address]
        # the client gives up reconnecting after connect-timeout (default 30 s): 8 s keeps the test short
        env = {**repo_env(), "DASK_SEGMENT1B__CLUSTER__CONNECT_TIMEOUT": "8"}
        run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=os.path.dirname(os.path.dirname(__file__)), preexec_fn=die_with_parent)
        seen = []
        for line in run.stdout:  # wait for the state to start, then kill the scheduler
            seen.append(line)
            if line.startswith("[s4-s6 placement]"):
                os.killpg(procs.procs[0][0].pid, signal.SIGKILL)
                break
        out, err = run.communicate(timeout=300)
    finally:
        procs.stop()
    assert run.returncode == 4, "".join(seen) + out + err[-3000:]
    assert "FAILED C202_SCHEDULER_LOST: lost the connection to the Dask scheduler at " + address in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


# -- a small memory limit --------------------------------------------------------------------------------

MEMORY_LIMIT = "1GiB"
THREADS = 4
BIG = 300_000  # sites of one country, one output part


def _big_country_pairs() -> list[tuple[int, str, int]]:
    return [(10_000 + i, "FR", 200) for i in range(BIG // 200)]


def _publish_catalogue(storage: Storage, ident, pairs) -> None:
    """Publish an outlet catalogue matching ``pairs`` (vectorised: world.publish_catalogue loops per row)."""
    import pyarrow as pa

    from segment1b.contracts import dataset
    from segment1b.storage import part_name, write_parquet_bytes

    m = np.array([p[0] for p in pairs], np.uint64)
    n = np.array([p[2] for p in pairs], np.int64)
    rows = int(n.sum())
    site_order = (np.arange(rows) - np.repeat(np.cumsum(n) - n, n) + 1).astype(np.int32)
    iso = pa.array(np.repeat(np.array([p[1] for p in pairs]), n), pa.string())
    count = pa.array(np.repeat(n, n).astype(np.int32), pa.int32())
    table = pa.table({
        "manifest_fingerprint": pa.array(np.full(rows, ident.manifest_fingerprint), pa.string()),
        "merchant_id": pa.array(np.repeat(m, n), pa.uint64()),
        "site_id": pa.array(np.char.zfill(site_order.astype(str), 6), pa.string()),
        "home_country_iso": iso, "legal_country_iso": iso,
        "single_vs_multi_flag": pa.array(np.repeat(n >= 2, n), pa.bool_()),
        "raw_nb_outlet_draw": count, "final_country_outlet_count": count,
        "site_order": pa.array(site_order, pa.int32()),
        "global_seed": pa.array(np.full(rows, ident.seed, np.uint64), pa.uint64())})
    target = path_for("outlet_catalogue", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    staging = storage.staging_path(target, "test")
    files = [storage.write_part(staging, part_name(0), write_parquet_bytes(table, dataset("outlet_catalogue")))]
    storage.publish(staging, target, "outlet_catalogue", expected=files)


def test_a_unit_too_big_for_the_memory_limit_is_split_and_no_worker_dies(tmp_path):
    """One country of 300 000 sites in one part, on workers of 1 GiB shared by 4 threads.

    Unsplit, its unit is estimated (UNIT_BYTES_PER_SITE) at more than the share of the limit of the thread
    that would run it; the planner cuts it into units of at most a quarter of that share (of what the limit
    leaves below the pause fraction above the worker's floor, jobs.footprint.unit_budget), S4-S9 run on the
    same two worker processes from start to end (none is killed for memory and restarted) and S9 passes.
    Note: a unit larger than the whole limit cannot be shown here, because the part writer holds the whole
    part (about 300-430 bytes a site plus its inputs, docs/failure-codes.md): a part whose one-country unit
    exceeded the limit could not be written by such a worker whatever the units.
    """
    from jobs.footprint import unit_budget
    from jobs.place import MEMORY_FRACTION_PER_UNIT, PlaceConfig, _memory_bound_sites, run_place
    from jobs.synthesis import run_s7_s8
    from jobs.units import UNIT_BYTES_PER_SITE, plan_parts, plan_units
    from jobs.validate import run_s9

    storage = Storage(str(tmp_path / "root"))
    pairs = _big_country_pairs()
    ident = world.build(storage, pairs)
    _publish_catalogue(storage, ident, pairs)
    limit = 2**30
    per_thread = limit // THREADS
    assert BIG * UNIT_BYTES_PER_SITE > per_thread  # unsplit, the unit would not fit its thread's share
    # no size cap but memory: unlimited memory would plan the country as one unit
    config = PlaceConfig(max_unit_sites=10**9, part_sites=1 << 20)  # the whole country in one part
    m = np.array([p[0] for p in pairs], np.uint64)
    n = np.array([p[2] for p in pairs], np.int64)
    iso = np.array([p[1] for p in pairs])
    parts = plan_parts(m, n, config.part_sites)
    assert len(parts) == 1 and len(plan_units(m, iso, n, parts, max_unit_sites=10**9)) == 1

    cluster, c = _cluster(MEMORY_LIMIT, THREADS)
    try:
        c.wait_for_workers(2)
        budget = _memory_bound_sites(c)
        # a quarter of a thread's share of what the limit leaves below the pause fraction above the floor
        assert budget == int(unit_budget(limit, THREADS, 0.8) * MEMORY_FRACTION_PER_UNIT / UNIT_BYTES_PER_SITE) < BIG
        before = c.run(os.getpid)
        out = io.StringIO()
        run_place(storage, c, ident, world.GRID, world.countries_sha256(), config=config, out=out)
        run_s7_s8(storage, c, ident, out=out)
        result = run_s9(storage, c, ident.seed, ident.manifest_fingerprint, out=out)
        after = c.run(os.getpid)
    finally:
        c.close()
        cluster.close()
    assert after == before  # the same two worker processes from start to end: none was killed or restarted
    assert result.passed, result.failed_codes
    s6 = storage.read_json(report_path("s6", **ident.tokens))
    assert s6["rows"] == BIG and s6["units"] == (BIG - 200) // budget + 1 > 1  # chunks of whole pairs
    fr = next(r for r in s6["countries"] if r["country_iso"] == "FR")
    assert fr["units"] == s6["units"]  # several s6-jitter-FR-NNN chunks
    assert max(s6["peak_worker_rss_bytes"].values()) < limit, s6["peak_worker_rss_bytes"]
