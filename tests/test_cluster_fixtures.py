"""tests/cluster_fixtures.py: a test session that is killed leaves no Dask process behind (issue 15, item 10).

A pytest session in a subprocess starts a ``dask scheduler`` + ``dask worker`` cluster the way the test
modules do (a fixture, stopped in its finalizer), signals when the worker has joined, and is then
interrupted (SIGINT, as Ctrl-C) or killed (SIGKILL, as an out-of-memory kill or a CI timeout).  Every
process it started must be gone soon after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cluster_fixtures import REPO_ROOT, START_TIMEOUT, die_with_parent, repo_env

pytestmark = [pytest.mark.cluster]

SESSION = '''
import json, os, threading
from pathlib import Path

import pytest

from cluster_fixtures import start_cluster, wait_for_workers


@pytest.fixture
def cluster(tmp_path):
    procs, _, address = start_cluster(tmp_path, n_workers=1)
    yield procs, address
    procs.stop()


def test_holds_a_cluster(cluster):
    procs, address = cluster
    wait_for_workers(address, 1)
    Path(os.environ["CLUSTER_UP"]).write_text(json.dumps([p.pid for p, _ in procs.procs]))
    threading.Event().wait(600)  # until the outer test interrupts or kills this session
'''


@pytest.mark.timeout(4 * START_TIMEOUT)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_test_session_leaves_no_dask_process(tmp_path, sig):
    (tmp_path / "test_session.py").write_text(SESSION)
    up = tmp_path / "cluster-up.json"
    env = repo_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "tests"), env["PYTHONPATH"]])
    env["CLUSTER_UP"] = str(up)
    session = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                                "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"),
                                str(tmp_path / "test_session.py")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=die_with_parent)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 3 * START_TIMEOUT
        while not up.exists():
            assert session.poll() is None and time.monotonic() < deadline, session.communicate()[0][-3000:]
            time.sleep(0.05)
        started = psutil.Process(session.pid).children(recursive=True)
        pids = {p.pid for p in started}
        assert set(json.loads(up.read_text())) <= pids and len(pids) >= 3  # scheduler, worker, its worker process
        os.kill(session.pid, sig)
        session.wait(timeout=2 * START_TIMEOUT)
        _, alive = psutil.wait_procs(started, timeout=START_TIMEOUT)
        assert alive == [], [(p.pid, p.cmdline()) for p in alive]
    finally:
        for proc in [*started, psutil.Process(session.pid)] if session.poll() is None else started:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        session.communicate()
