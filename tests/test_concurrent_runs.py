"""Several `segment1b run` submissions on one data root at once never corrupt it (issue 14, item 1).

Real command lines in subprocesses, each in its own session (its LocalCluster's processes in the same
process group), all started together on a new, empty data root so that S1 runs:

* two clients on one shared ``dask scheduler``/``dask worker`` cluster;
* four runs with their own LocalClusters: the one running S1 is interrupted with SIGINT (its whole process
  group, as a terminal's Ctrl-C: only the clean line may be printed), the one running S4-S6 is SIGKILLed
  with its whole process group once a part is recorded.

Every run that is not disturbed ends PASS (or with the documented "busy" code), a final rerun ends PASS,
no hidden or temporary file is inside any published partition, no staging folder is left, and every
dataset has the bytes of one undisturbed run.  Kill points are taken from the runs' output and from files
appearing, never from sleeps; every process started here is killed in ``finally`` (process groups).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import runs
from cluster_fixtures import die_with_parent, group_gone, repo_env, start_cluster, wait_for_workers
from segment1b.contracts import DATASETS, path_for
from segment1b.storage import Storage

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PART_SITES = 256  # several S4-S8 parts, so that S4-S6 can be killed half-way and resumed from staging
RUN_ARGS = ["--seed", str(runs.SEED), "--grid", runs.GRID, "--scale", runs.SCALE, "--part-sites", str(PART_SITES)]
TILES = ("tile_index", "tile_bounds", "tile_weights")
EXIT_BUSY = 75
RUN_TIMEOUT = 900  # seconds for one run on a loaded 2-core machine, waiting for the others included


@pytest.fixture(scope="module")
def undisturbed(client, tmp_path_factory):
    """Partition digests of the tile data and of every dataset of one undisturbed run (same arguments)."""
    prepared, prep = runs.prepared_root(client)
    storage = Storage(runs.fresh_root(prepared, str(tmp_path_factory.mktemp("undisturbed") / "root")))
    summary = runs.run(storage, client, part_sites=PART_SITES)
    assert summary.passed
    ident = summary.identity
    digests = runs.dataset_digests(storage, ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"])
    ph = prep["parameter_hash"]
    digests.update({ds: storage.partition_digest(path_for(ds, parameter_hash=ph)) for ds in TILES})
    assert all(digests.values()), digests
    return ident, digests


class Submissions:
    """`segment1b run` subprocesses in their own sessions, their output lines read as they come."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.procs: list[subprocess.Popen] = []
        self.lines: list[list[str]] = []
        self.errors: list[list[str]] = []
        self.readers: list[threading.Thread] = []

    def start(self, argv: list[str]) -> int:
        env = repo_env()
        for name in list(env):  # no cluster settings of the machine running the tests
            if name.startswith(("DASK_SEGMENT1B__", "DASK_DISTRIBUTED__COMM__")) or name == "DASK_CONFIG":
                del env[name]
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], cwd=self.cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=die_with_parent)
        out: list[str] = []
        err: list[str] = []
        for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
            reader = threading.Thread(target=_read_lines, args=(stream, sink), daemon=True)
            reader.start()
            self.readers.append(reader)
        self.procs.append(proc)
        self.lines.append(out)
        self.errors.append(err)
        return len(self.procs) - 1

    def wait_until(self, condition, what: str, timeout: float = RUN_TIMEOUT):
        """Poll ``condition()`` (every 10 ms) until it returns something true; fail with every output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(0.01)
        pytest.fail(f"{what}: not reached within {timeout} s\n{self.report()}")

    def first_printing(self, pattern: str) -> int | None:
        """Index of the first run (by output order) that printed a line matching ``pattern``."""
        for i, lines in enumerate(self.lines):
            if self.procs[i].poll() is None and any(re.search(pattern, line) for line in list(lines)):
                return i
        return None

    def wait(self, i: int, timeout: float = RUN_TIMEOUT) -> int:
        try:
            code = self.procs[i].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {i} did not end within {timeout} s\n{self.report()}")
        for reader in self.readers:
            reader.join(0.01)
        return code

    def output(self, i: int) -> str:
        return "\n".join(self.lines[i]) + "\n--- stderr\n" + "\n".join(self.errors[i])

    def report(self) -> str:
        return "\n".join(f"=== run {i} (exit {p.poll()})\n{self.output(i)[-4000:]}" for i, p in enumerate(self.procs))

    def kill_group(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            proc.wait(timeout=60)
            _wait_group_gone(proc.pid)

    def close(self) -> None:
        """Kill every process group started here (runs that are still alive, and what they left)."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            _wait_group_gone(proc.pid)


def _read_lines(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))


def _wait_group_gone(pgid: int, timeout: float = 60) -> None:
    if not group_gone(pgid, timeout):
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def submissions(tmp_path):
    subs = Submissions(tmp_path)
    try:
        yield subs
    finally:
        subs.close()


def run_argv(root: str, *extra: str) -> list[str]:
    return ["run", "--data-root", root, *RUN_ARGS, *extra]


def assert_pass_or_busy(subs: Submissions, i: int, code: int) -> bool:
    """A run that was not disturbed ends PASS (exit 0) or busy (exit 75, E_LEASE_BUSY); True when PASS."""
    out = subs.output(i)
    assert "Traceback" not in out, out[-6000:]
    if code == EXIT_BUSY:
        assert "FAILED E_LEASE_BUSY" in out, out[-6000:]
        return False
    assert code == 0 and re.search(r"^PASS\b", out, re.M), f"exit {code}\n{out[-6000:]}"
    return True


def assert_root_intact(root: str, undisturbed) -> None:
    """Every dataset has the undisturbed bytes; no hidden or temporary file in any published partition;
    no staging folder or progress record is left anywhere."""
    ident, expected = undisturbed
    storage = Storage(root)
    got = runs.dataset_digests(storage, ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"])
    got.update({ds: storage.partition_digest(path_for(ds, parameter_hash=ident["parameter_hash"])) for ds in TILES})
    assert got == expected
    partitions = published_partitions(root)
    assert len(partitions) >= 12, partitions  # tiles, catalogue and its bundle, S3-S8, logs, the S9 bundle
    inside = [os.path.join(d, name) for p in partitions for d, dirs, files in os.walk(p)
              for name in dirs + files if name.startswith(".") or ".tmp-" in name or "staging" in name]
    assert inside == []
    left = [os.path.relpath(os.path.join(d, name), root) for d, dirs, files in os.walk(root)
            for name in dirs + files if ".staging-" in name or "place-progress-" in name or ".tmp-" in name]
    assert left == []


def published_partitions(root: str) -> list[str]:
    """Folders of the dataset dictionary's partitions that exist under ``root`` (any token values)."""
    found = set()
    for spec in DATASETS.values():
        if not spec.template.endswith("/") or spec.id == "run_folder":
            continue
        pattern = re.sub(r"\{[a-z_]+\}", "*", spec.template)
        found.update(p for p in glob.glob(os.path.join(root, pattern)) if os.path.isdir(p))
    return sorted(found)


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_two_clients_on_one_shared_cluster_submit_the_same_run(undisturbed, submissions, tmp_path):
    procs, _, address = start_cluster(tmp_path, n_workers=2, memory_limit="3GiB")
    try:
        wait_for_workers(address, 2)
        root = str(tmp_path / "root")
        runs_ = [submissions.start(run_argv(root, "--scheduler", address)) for _ in range(2)]
        codes = [submissions.wait(i) for i in runs_]
        passed = [assert_pass_or_busy(submissions, i, c) for i, c in zip(runs_, codes)]
        assert any(passed), submissions.report()
    finally:
        procs.stop()
    final = submissions.start(run_argv(root, "--workers", "1"))
    assert submissions.wait(final) == 0, submissions.output(final)[-6000:]
    print(_story(submissions))
    assert_root_intact(root, undisturbed)


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_four_runs_on_one_new_root_one_interrupted_in_s1_one_killed_in_s4_s6(undisturbed, submissions, tmp_path):
    root = str(tmp_path / "root")
    local = ["--workers", "1", "--threads-per-worker", "1", "--memory-limit", "2GiB"]
    started = [submissions.start(run_argv(root, *local)) for _ in range(4)]
    # the run that is computing S1 (the others wait for it): Ctrl-C, which a terminal sends to the whole
    # process group, its LocalCluster's worker processes included (issue 15, item 4)
    interrupted = submissions.wait_until(lambda: _plus_one(submissions.first_printing(r"^prepare: grid ")),
                                         "a run starting S1") - 1
    workers = psutil.Process(submissions.procs[interrupted].pid).children(recursive=True)
    assert len(workers) >= 1, workers
    submissions.kill_group(interrupted, signal.SIGINT)
    # the run that is computing S4-S6, once a part is recorded by S4, S5 and S6: SIGKILL, LocalCluster included
    progress = os.path.join(root, "control/run/*/*/*/place-progress-*/s6-part-*.json")

    def part_recorded() -> bool:
        return any(all(os.path.exists(p.replace("/s6-part-", f"/{k}-part-")) for k in ("s4", "s5"))
                   for p in glob.glob(progress))

    def placing():
        i = submissions.first_printing(r"^\[s4-s6 placement\]")
        return _plus_one(i) if i is not None and part_recorded() else None

    killed = submissions.wait_until(placing, "a run in S4-S6 with a recorded part") - 1
    assert killed != interrupted
    submissions.kill_group(killed)
    s6_published = bool(glob.glob(os.path.join(root, "data/layer1/1B/s6_site_jitter/seed=*/fingerprint=*/*/")))
    code = submissions.wait(interrupted)
    out = submissions.output(interrupted)
    assert code == 130 and "interrupted; published partitions are intact" in out, out[-6000:]
    # only the client's clean line: no traceback of the workers (nor of the client), and no process left
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-6000:]
    assert psutil.wait_procs(workers, timeout=60)[1] == []
    others = [i for i in started if i not in (interrupted, killed)]
    passed = [assert_pass_or_busy(submissions, i, submissions.wait(i)) for i in others]
    final = submissions.start(run_argv(root, *local))
    assert submissions.wait(final) == 0, submissions.output(final)[-6000:]
    assert any(passed) or "(resumed)" in submissions.output(final)
    if not s6_published:  # the next holder adopted the killed run's finished parts (checked file by file)
        assert any(re.search(r"s4-s6: [1-9]\d* of \d+ parts finished by an earlier attempt are reused",
                             submissions.output(i)) for i in [*others, final]), submissions.report()
    print(_story(submissions, interrupted=interrupted, killed=killed, s6_published=s6_published))
    assert_root_intact(root, undisturbed)


def _story(subs: Submissions, **facts) -> str:
    """What each run did, for the test log (``pytest -s``): exit code, waits, resumes and the verdict."""
    keys = ("waiting for", "acquired after", "are reused", "already published", "PASS", "FAILED", "interrupted")
    lines = [f"{k}={v}" for k, v in facts.items()]
    for i, proc in enumerate(subs.procs):
        said = [line.strip()[:150] for line in subs.lines[i] + subs.errors[i] if any(k in line for k in keys)]
        lines.append(f"run {i}: exit {proc.poll()}\n    " + "\n    ".join(said))
    return "\n".join(lines)


def _plus_one(i: int | None) -> int | None:
    """``i + 1`` (so that run 0 counts as found), or None."""
    return None if i is None else i + 1


def test_a_ctrl_c_swallowed_by_a_gc_callback_is_delivered_again():
    """The LocalCluster's scheduler hooks a Python callback into every garbage collection of the client's
    process; a Ctrl-C landing there is "ignored" by Python, and the run would go on (issue 15, item 4)."""
    import gc

    from jobs.cli import _interrupt_never_swallowed

    def callback(phase, info):
        gc.callbacks.remove(callback)
        raise KeyboardInterrupt

    reached = []
    with _interrupt_never_swallowed():
        gc.callbacks.append(callback)
        with pytest.raises(KeyboardInterrupt):
            gc.collect()  # the callback's KeyboardInterrupt is swallowed here...
            reached.append("after the collection")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # ...and raised again in ordinary code
                pass
    assert reached == ["after the collection"] and callback not in gc.callbacks
