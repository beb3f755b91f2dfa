"""Tests for cluster/: options and precedence, LocalCluster sizing, remote, scheduler-file and TLS clusters.

Pure tests (options, sizing, errors) run without Dask processes.  Tests marked ``cluster`` start real
``dask scheduler`` / ``dask worker`` processes (``python -m dask ...`` of this interpreter) bound to
127.0.0.1, or a process-based LocalCluster; every process is stopped in a ``finally``.
"""

from __future__ import annotations

import io
import operator
import os
import pickle
import socket
import sys
import time

import dask
import distributed  # imported before any dask.config.set: see cluster_fixtures.tls_config
import pytest

from cluster import (
    CLUSTER_ERROR_CODES,
    OPTIONS,
    ClusterConfigError,
    ClusterConnectError,
    ClusterError,
    ClusterOptions,
    describe,
    local_layout,
    machine_resources,
    open_client,
    reset_worker_memory_peaks,
    security_from_files,
    worker_memory_peaks,
)
from cluster.local import LOCAL_MAX_WORKERS, LOCAL_MIN_WORKER_MEMORY
from cluster_fixtures import REPO_ROOT, START_TIMEOUT, make_pki, start_cluster, tls_config

GiB = 2**30


@pytest.fixture(autouse=True)
def clean_config():
    """No segment1b.cluster.* keys and no Dask scheduler-address, whatever the environment says."""
    with dask.config.set({"segment1b": {}, "scheduler-address": None}):
        yield


def _open_must_fail(options: ClusterOptions) -> None:
    """Open a client that the test expects open_client to refuse; reaching the body fails the test."""
    with open_client(options, out=io.StringIO()):
        pytest.fail(f"open_client({options}) should have raised")


# ------------------------------------------------------------------------------------------------
# options: defaults, normalisation, validation
# ------------------------------------------------------------------------------------------------


def test_defaults_are_documented_defaults():
    options = ClusterOptions()
    for spec in OPTIONS:
        assert getattr(options, spec.name) == spec.default, spec.name
    assert not options.is_remote
    assert options.threads_per_worker == 1 and options.dashboard_address == ":0"


@pytest.mark.parametrize(
    "given, expected",
    [
        ("tcp://10.1.2.3:8786", "tcp://10.1.2.3:8786"),
        ("scheduler-host", "tcp://scheduler-host:8786"),
        ("scheduler-host:9000", "tcp://scheduler-host:9000"),
        ("TLS://scheduler-host", "tls://scheduler-host:8786"),
        ("tls://[::1]:8786", "tls://[::1]:8786"),
        (" tcp://h:1 ", "tcp://h:1"),
        ("gateway://proxy:8000/default.abc123", "gateway://proxy:8000/default.abc123"),
        ("local", None),
        ("LOCAL", None),
    ],
)
def test_scheduler_address_is_normalised(given, expected):
    assert ClusterOptions(scheduler=given).scheduler == expected


@pytest.mark.parametrize(
    "field, value, expected_words",
    [
        ("scheduler", "http://h:8786", ["'http://h:8786'", "tcp", "tls", "gateway"]),
        ("scheduler", "ucx://h:8786", ["'ucx'", "tcp", "tls"]),
        ("scheduler", "tcp://h:99999", ["99999", "between 1 and 65535"]),
        ("scheduler", "tcp://:8786", ["host"]),
        ("scheduler", "gateway://proxy:8000", ["gateway://HOST:PORT/CLUSTER-NAME"]),
        ("scheduler", "", ["scheduler address"]),
        ("n_workers", 0, ["n_workers is 0", ">= 1"]),
        ("n_workers", 2.5, ["2.5", ">= 1"]),
        ("n_workers", True, ["True"]),
        ("threads_per_worker", -1, ["-1", ">= 1"]),
        ("memory_limit", "4 parsecs", ["'4 parsecs'", "4GiB", "auto"]),
        ("memory_limit", -5, ["-5", "bytes > 0"]),
        ("dashboard_address", "localhost", ["'localhost'", ":0", "no dashboard"]),
        ("dashboard_address", "http://h:8787", ["'http://h:8787'"]),
        ("processes", "maybe", ["'maybe'", "true or false"]),
        ("connect_timeout", 0, ["0", "duration > 0"]),
        ("worker_timeout", "soon", ["'soon'", "'30s'"]),
        ("scheduler_file", 42, ["42", "path"]),
    ],
)
def test_bad_values_are_named_with_the_valid_choices(field, value, expected_words):
    with pytest.raises(ClusterConfigError) as info:
        ClusterOptions(**{field: value})
    assert info.value.code == "C001_OPTION_INVALID"
    assert f"argument {field} is" in str(info.value)
    for word in expected_words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "value, expected",
    [("4GiB", 4 * GiB), ("500 MB", 500 * 10**6), (300 * 2**20, 300 * 2**20), (2.0**30, GiB), ("auto", None),
     (None, None)],
)
def test_memory_limit_is_parsed_to_bytes(value, expected):
    assert ClusterOptions(memory_limit=value).memory_limit == expected


@pytest.mark.parametrize("value", ["100MB", 1024])
def test_a_memory_limit_a_worker_cannot_start_in_is_c001(value):
    # Seen: `run --memory-limit 100MB` started workers that the nanny killed at once, and the run failed as a
    # lost scheduler (C202) with distributed's error logs, instead of naming the limit
    with pytest.raises(ClusterConfigError) as info:
        ClusterOptions(memory_limit=value)
    assert info.value.code == "C001_OPTION_INVALID" and "256 MiB" in str(info.value)


@pytest.mark.parametrize("value", [None, False, "off", "None", "false"])
def test_dashboard_can_be_disabled(value):
    assert ClusterOptions(dashboard_address=value).dashboard_address is None


def test_scheduler_and_scheduler_file_conflict():
    with pytest.raises(ClusterConfigError) as info:
        ClusterOptions(scheduler="tcp://h:1", scheduler_file="s.json")
    assert info.value.code == "C002_OPTION_CONFLICT"
    assert "tcp://h:1" in str(info.value) and "s.json" in str(info.value)


# ------------------------------------------------------------------------------------------------
# precedence: explicit argument > Dask config (and environment) > default
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, config_value, explicit_value, from_config, from_explicit",
    [
        ("n_workers", 3, 5, 3, 5),
        ("threads_per_worker", "2", 4, 2, 4),
        ("memory_limit", "2GiB", "1GiB", 2 * GiB, GiB),
        ("dashboard_address", ":8787", ":0", ":8787", ":0"),
        ("dashboard_address", False, ":0", None, ":0"),
        ("dashboard_address", ":8787", False, ":8787", None),
        ("dashboard_address", ":8787", None, ":8787", None),  # explicit None disables, as documented
        ("local_directory", "/scratch/cfg", "/scratch/arg", "/scratch/cfg", "/scratch/arg"),
        ("processes", "false", True, False, True),
        ("connect_timeout", "2m", 5, 120.0, 5.0),
        ("worker_timeout", 10, "1s", 10.0, 1.0),
    ],
)
def test_precedence_explicit_over_config_over_default(clean_config, name, config_value, explicit_value,
                                                      from_config, from_explicit):
    spec = {s.name: s for s in OPTIONS}[name]
    assert getattr(ClusterOptions(), name) == spec.default
    with dask.config.set({spec.config_key: config_value}):
        assert getattr(ClusterOptions(), name) == from_config
        assert getattr(ClusterOptions(**{name: explicit_value}), name) == from_explicit


def test_none_means_not_given_so_cli_flags_pass_straight_through(clean_config):
    """jobs/session.py passes every parsed flag, None when the flag was not used."""
    flags = {"scheduler": None, "scheduler_file": None, "n_workers": None, "threads_per_worker": None,
             "memory_limit": None}
    with dask.config.set({"segment1b.cluster.scheduler-file": "/shared/s.json",
                          "segment1b.cluster.n-workers": 4, "segment1b.cluster.memory-limit": "3GiB"}):
        resolved = ClusterOptions(**flags)
        assert (resolved.scheduler_file, resolved.n_workers, resolved.memory_limit) == ("/shared/s.json", 4, 3 * GiB)
        assert resolved.threads_per_worker == 1 and resolved.dashboard_address == ":0"
        resolved = ClusterOptions(**{**flags, "scheduler": "tcp://cli:1", "n_workers": 2})
        assert (resolved.scheduler, resolved.scheduler_file, resolved.n_workers) == ("tcp://cli:1", None, 2)


def test_options_round_trip_and_report(clean_config):
    options = ClusterOptions(n_workers=2, memory_limit="1GiB", dashboard_address=None)
    assert ClusterOptions(**options.to_dict()) == options
    assert options.to_dict()["memory_limit"] == GiB and options.to_dict()["dashboard_address"] is None


def test_scheduler_precedence(clean_config):
    assert not ClusterOptions().is_remote
    with dask.config.set({"scheduler-address": "tcp://dask-default:8786"}):  # Dask's own key (DaskJob)
        assert ClusterOptions().scheduler == "tcp://dask-default:8786"
        with dask.config.set({"segment1b.cluster.scheduler-file": "/shared/sched.json"}):
            resolved = ClusterOptions()
            assert (resolved.scheduler, resolved.scheduler_file) == (None, "/shared/sched.json")
            # an explicit address hides the configured scheduler file instead of conflicting with it
            resolved = ClusterOptions(scheduler="tcp://explicit:1")
            assert (resolved.scheduler, resolved.scheduler_file) == ("tcp://explicit:1", None)
            # "local" forces a LocalCluster whatever the config names
            assert not ClusterOptions(scheduler="local").is_remote
        with dask.config.set({"segment1b.cluster.scheduler-address": "cfg-host"}):
            assert ClusterOptions().scheduler == "tcp://cfg-host:8786"


def test_conflict_within_config_names_both_keys(clean_config):
    with dask.config.set({"segment1b.cluster.scheduler-address": "tcp://a:1",
                          "segment1b.cluster.scheduler-file": "/x.json"}), \
            pytest.raises(ClusterConfigError) as info:
        ClusterOptions()
    assert info.value.code == "C002_OPTION_CONFLICT"
    assert "segment1b.cluster.scheduler-address" in str(info.value)
    assert "segment1b.cluster.scheduler-file" in str(info.value)


def test_bad_config_value_names_the_config_key(clean_config):
    with dask.config.set({"segment1b.cluster.n-workers": "many"}):
        with pytest.raises(ClusterConfigError, match=r"Dask config segment1b\.cluster\.n-workers is 'many'"):
            ClusterOptions()
        assert ClusterOptions(n_workers=2).n_workers == 2  # explicit wins, config not read


def test_environment_variables_map_to_the_config_keys(clean_config):
    """DASK_SEGMENT1B__CLUSTER__* variables become segment1b.cluster.* keys (Dask's own mapping)."""
    env = {spec.env_var: value for spec, value in zip(OPTIONS[:4], ["tls://h:1", "/s.json", "6", "2"])}
    assert list(env) == ["DASK_SEGMENT1B__CLUSTER__SCHEDULER_ADDRESS", "DASK_SEGMENT1B__CLUSTER__SCHEDULER_FILE",
                         "DASK_SEGMENT1B__CLUSTER__N_WORKERS", "DASK_SEGMENT1B__CLUSTER__THREADS_PER_WORKER"]
    collected = dask.config.collect_env(env)
    del collected["segment1b"]["cluster"]["scheduler_address"]  # both target keys together would conflict
    with dask.config.set(collected):
        resolved = ClusterOptions()
    assert (resolved.scheduler_file, resolved.n_workers, resolved.threads_per_worker) == ("/s.json", 6, 2)


# ------------------------------------------------------------------------------------------------
# LocalCluster sizing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, cores, memory, expected",
    [
        ({}, 8, 32 * GiB, (8, 1, 4 * GiB)),
        ({}, 2, 24 * GiB, (2, 1, 12 * GiB)),
        ({}, 1, 512 * 2**20, (1, 1, 512 * 2**20)),  # small machine: still one worker
        ({}, 8, 5 * GiB, (2, 1, 5 * GiB // 2)),  # memory caps the workers at 2 GiB each
        ({}, 256, 4096 * GiB, (LOCAL_MAX_WORKERS, 1, 128 * GiB)),
        ({"threads_per_worker": 2}, 8, 32 * GiB, (4, 2, 8 * GiB)),
        ({"threads_per_worker": 4}, 2, 8 * GiB, (1, 4, 8 * GiB)),
        ({"memory_limit": "6GiB"}, 8, 32 * GiB, (5, 1, 6 * GiB)),
        ({"n_workers": 3}, 8, 30 * GiB, (3, 1, 10 * GiB)),
        ({"n_workers": 3, "memory_limit": "1GiB"}, 2, GiB, (3, 1, GiB)),  # explicit wins over the machine
    ],
)
def test_local_layout(given, cores, memory, expected):
    layout = local_layout(ClusterOptions(**given), cores=cores, available_memory=memory)
    assert (layout.n_workers, layout.threads_per_worker, layout.memory_limit) == expected
    assert LOCAL_MIN_WORKER_MEMORY == 2 * GiB


def test_machine_resources_are_plausible():
    cores, available = machine_resources()
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))
    assert 0 < available


def test_threaded_local_cluster_sized_to_the_machine_without_dashboard():
    out = io.StringIO()
    with open_client(ClusterOptions(processes=False, dashboard_address=None), out=out) as client:
        facts = describe(client)
        assert client.submit(sum, [1, 2, 3]).result() == 6
    cores, available = machine_resources()
    expected = local_layout(ClusterOptions(), cores=cores, available_memory=available)
    assert facts["local"] and facts["n_workers"] == expected.n_workers
    assert {w["threads"] for w in facts["workers"].values()} == {1}
    assert facts["dashboard_link"] is None
    assert out.getvalue().count("\n") == 1 and out.getvalue().rstrip().endswith("no dashboard")
    assert client.status == "closed"


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_local_cluster_from_options_prints_layout_and_dashboard():
    out = io.StringIO()
    options = ClusterOptions(n_workers=2, threads_per_worker=1, memory_limit="1GiB")
    with open_client(options, out=out) as client:
        facts = describe(client)
        cluster = client.cluster
        assert client.submit(lambda x: x + 1, 41).result() == 42
        # touch 256 MiB on every worker and free it: the peaks show it, a reset forgets it
        client.run(lambda: len(b"x" * (256 * 2**20)))
        peaks = worker_memory_peaks(client)
        assert set(peaks) == set(facts["workers"]) and min(peaks.values()) > 256 * 2**20
        resets = reset_worker_memory_peaks(client)
        assert set(resets) == set(peaks)
        after = worker_memory_peaks(client)
        for worker, done in resets.items():
            if done:  # Linux with /proc/self/clear_refs: the peak is back to the current RSS
                assert after[worker] < peaks[worker] - 128 * 2**20
    line = out.getvalue()
    assert line.count("\n") == 1
    assert facts["n_workers"] == 2 and facts["total_threads"] == 2
    assert {w["memory_limit"] for w in facts["workers"].values()} == {GiB}
    assert facts["dashboard_link"].startswith("http://") and facts["dashboard_link"] in line
    assert "2 workers x 1 thread, 1.00 GiB memory limit each" in line
    assert facts["scheduler_address"] in line
    assert client.status == "closed" and cluster.status.name == "closed"


def test_peak_rss_falls_back_to_getrusage(monkeypatch, tmp_path):
    from cluster import memory

    monkeypatch.setattr(memory, "_STATUS", str(tmp_path / "no-proc-status"))
    monkeypatch.setattr(memory, "_CLEAR_REFS", str(tmp_path / "no-dir" / "clear_refs"))
    assert memory.peak_rss() > 10 * 2**20  # ru_maxrss of this test process, converted to bytes
    assert memory.reset_peak_rss() is False


# ------------------------------------------------------------------------------------------------
# real scheduler and worker processes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    procs, scheduler_file, address = start_cluster(tmp_path_factory.mktemp("plain"), n_workers=2)
    try:
        yield scheduler_file, address
    finally:
        procs.stop()


@pytest.mark.cluster
@pytest.mark.timeout(180)
@pytest.mark.parametrize("by", ["address", "scheduler_file"])
def test_remote_cluster_by_address_and_by_scheduler_file(plain_cluster, clean_config, by):
    scheduler_file, address = plain_cluster
    if by == "address":
        options = ClusterOptions(scheduler=address, worker_timeout=START_TIMEOUT)
    else:  # through Dask config, as a config file or DASK_SEGMENT1B__CLUSTER__SCHEDULER_FILE would give it
        with dask.config.set({"segment1b.cluster.scheduler-file": str(scheduler_file),
                              "segment1b.cluster.worker-timeout": START_TIMEOUT}):
            options = ClusterOptions()
    out = io.StringIO()
    with open_client(options, out=out) as client:
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        # one task pinned to each worker (builtins only: the scheduler unpickles the graph and cannot
        # import this test module); who_has shows that each result was computed on its own process
        futures = [client.submit(operator.mul, i, 10, workers=[w], pure=False) for i, w in enumerate(workers)]
        assert client.gather(futures) == [0, 10]
        holders = client.who_has(futures)
        assert sorted(w for f in futures for w in holders[f.key]) == workers
        assert dask.delayed(sum)([1, 2, 3]).compute() == 6  # the client is the default scheduler
        facts = describe(client)
        peaks = worker_memory_peaks(client)
        resets = reset_worker_memory_peaks(client)
    assert len(workers) == 2 and facts["n_workers"] == 2 and not facts["local"]
    assert facts["scheduler_address"] == address
    assert {w["name"] for w in facts["workers"].values()} == {"w0", "w1"}
    assert facts["total_memory_limit"] == 2 * GiB
    assert set(peaks) == set(workers) and min(peaks.values()) > 10 * 2**20
    assert set(resets) == set(workers)
    line = out.getvalue()
    assert line.startswith(f"Dask cluster {address}:") and facts["dashboard_link"] in line
    assert client.status == "closed"
    # the remote cluster outlives our client: open_client never shuts it down
    with open_client(ClusterOptions(scheduler=address), out=io.StringIO()) as again:
        assert len(again.scheduler_info(n_workers=-1)["workers"]) == 2


@pytest.mark.timeout(60)
def test_unreachable_scheduler_fails_quickly_and_clearly(clean_config):
    with socket.socket() as probe:  # a port that nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{free_port}"
    started = time.monotonic()
    with pytest.raises(ClusterConnectError) as info:
        _open_must_fail(ClusterOptions(scheduler=address, connect_timeout=2))
    assert time.monotonic() - started < 15
    error = info.value
    assert error.code == "C102_SCHEDULER_UNREACHABLE" and isinstance(error, ConnectionError)
    assert address in error.message and "connect timeout 2 s" in error.tried
    assert "scheduler is running" in error.hint and "connect-timeout" in error.hint


@pytest.mark.timeout(60)
def test_scheduler_without_workers_fails_with_no_workers(clean_config):
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None, silence_logs=40,
                                  scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as empty:
        started = time.monotonic()
        with pytest.raises(ClusterConnectError) as info:
            _open_must_fail(ClusterOptions(scheduler=empty.scheduler_address, worker_timeout=1))
        assert time.monotonic() - started < 15
        assert empty.status.name == "running"  # refused, but the cluster is left alone
    assert info.value.code == "C103_NO_WORKERS" and empty.scheduler_address in info.value.message
    assert "dask worker" in info.value.hint and "worker-timeout" in info.value.hint


@pytest.mark.timeout(60)
def test_missing_scheduler_file_fails_quickly_and_clearly(tmp_path, clean_config):
    path = tmp_path / "nowhere.json"
    started = time.monotonic()
    with pytest.raises(ClusterConnectError) as info:
        _open_must_fail(ClusterOptions(scheduler_file=path, connect_timeout=0.5))
    assert time.monotonic() - started < 10
    assert info.value.code == "C101_SCHEDULER_FILE_MISSING"
    assert str(path) in str(info.value) and "dask scheduler --scheduler-file" in info.value.hint
    path.write_text("{not json")
    with pytest.raises(ClusterConnectError, match="not a JSON object"):
        _open_must_fail(ClusterOptions(scheduler_file=path, connect_timeout=0.3))


# ------------------------------------------------------------------------------------------------
# TLS on loopback
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    pytest.importorskip("cryptography")
    folder = tmp_path_factory.mktemp("tls")
    pki = make_pki(folder, "cluster")
    procs, scheduler_file, address = start_cluster(folder, n_workers=1, tls=pki)
    try:
        yield pki, scheduler_file, address
    finally:
        procs.stop()


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_tls_cluster_with_security_from_dask_config(tls_cluster, clean_config):
    pki, scheduler_file, address = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    with dask.config.set({**tls_config(pki), "segment1b.cluster.scheduler-file": str(scheduler_file),
                          "segment1b.cluster.worker-timeout": START_TIMEOUT}):
        out = io.StringIO()
        with open_client(out=out) as client:
            assert client.submit(sum, [1, 2, 3]).result() == 6
            assert describe(client)["scheduler_address"] == address
            assert len(worker_memory_peaks(client)) == 1
    assert out.getvalue().startswith(f"Dask cluster {address}: 1 worker x 1 thread")
    # the same certificates given as files instead of config
    with open_client(ClusterOptions(scheduler=address), security=security_from_files(ca_file=pki["ca"], cert=pki["cert"], key=pki["key"]), out=io.StringIO()) as client:
        assert client.submit(pow, 2, 10).result() == 1024


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_tls_cluster_refuses_clients_without_its_certificate(tls_cluster, tmp_path, clean_config):
    _, _, address = tls_cluster
    # no certificate configured at all: refused before any connection, naming the keys to set
    with pytest.raises(ClusterConfigError) as info:
        _open_must_fail(ClusterOptions(scheduler=address, connect_timeout=3))
    assert info.value.code == "C003_TLS_CONFIG"
    assert "distributed.comm.tls.ca-file" in str(info.value) and "distributed.comm.tls.client.cert" in str(info.value)
    # a certificate from another CA: the TLS handshake fails and the connection is refused
    rogue = make_pki(tmp_path, "rogue")
    started = time.monotonic()
    with dask.config.set(tls_config(rogue)), pytest.raises(ClusterConnectError) as info:
        _open_must_fail(ClusterOptions(scheduler=address, connect_timeout=3))
    assert info.value.code == "C102_SCHEDULER_UNREACHABLE" and address in str(info.value)
    assert "certificate" in info.value.message and "certificate" in info.value.hint
    assert time.monotonic() - started < 30
    # plain TCP to the TLS port does not get through either
    with pytest.raises(ClusterConnectError):
        _open_must_fail(ClusterOptions(scheduler=address.replace("tls://", "tcp://"), connect_timeout=3))


def test_local_cluster_uses_tls_when_security_requires_it(tmp_path):
    pytest.importorskip("cryptography")
    pki = make_pki(tmp_path, "local")
    security = security_from_files(pki["ca"], pki["cert"], pki["key"])
    options = ClusterOptions(n_workers=1, processes=False, dashboard_address=None)
    with open_client(options, security=security, out=io.StringIO()) as client:
        assert describe(client)["scheduler_address"].startswith("tls://")
        assert client.submit(sum, [2, 3]).result() == 5


def test_tls_misconfiguration_is_reported_before_connecting(tmp_path, clean_config):
    with dask.config.set({"distributed.comm.require-encryption": True}):
        with pytest.raises(ClusterConfigError, match="plain TCP"):
            _open_must_fail(ClusterOptions(scheduler="tcp://127.0.0.1:1"))
        with pytest.raises(ClusterConfigError, match="distributed.comm.tls.scheduler.cert"):
            _open_must_fail(ClusterOptions(processes=False))
    with dask.config.set({"distributed.comm.tls.ca-file": str(tmp_path / "missing-ca.pem"),
                          "distributed.comm.tls.client.cert": str(tmp_path / "missing-cert.pem")}), \
            pytest.raises(ClusterConfigError, match="missing-ca.pem.*not a file"):
        _open_must_fail(ClusterOptions(scheduler="tls://127.0.0.1:1"))
    with pytest.raises(ClusterConfigError, match="not a readable file"):
        security_from_files(tmp_path / "nope.pem", tmp_path / "nope.pem")


def test_gateway_protocol_needs_dask_gateway(clean_config, monkeypatch, tmp_path):
    pytest.importorskip("cryptography")
    pki = make_pki(tmp_path, "gw")
    monkeypatch.setitem(sys.modules, "dask_gateway", None)  # as if not installed
    with dask.config.set(tls_config(pki)), pytest.raises(ClusterConfigError) as info:
        _open_must_fail(ClusterOptions(scheduler="gateway://127.0.0.1:1/default.abc"))
    assert info.value.code == "C004_PROTOCOL_UNAVAILABLE" and "pip install dask-gateway" in info.value.hint


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def test_errors_carry_codes_and_survive_pickling():
    error = ClusterConnectError("C103_NO_WORKERS", "no worker", tried="Client('tcp://h:1')", hint="start one")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ClusterConnectError and again.to_dict() == error.to_dict()
    assert str(again) == "C103_NO_WORKERS: no worker\n  tried: Client('tcp://h:1')\n  hint: start one"
    assert isinstance(again, ClusterError) and isinstance(again, ConnectionError)
    assert issubclass(ClusterConfigError, ValueError)
    with pytest.raises(ValueError, match="bug in cluster"):
        ClusterError("C999_NOT_A_CODE", "x")
    assert all(code[:1] == "C" and code[1:4].isdigit() for code in CLUSTER_ERROR_CODES)


# ------------------------------------------------------------------------------------------------
# waiting without hanging (issue #14): paused workers, a lost scheduler
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paused_since, last_progress, now, expected", [
    ({}, 0.0, 100.0, []),                                 # nothing paused
    ({"w1": 0.0}, 0.0, 59.9, []),                         # not for long enough yet
    ({"w1": 0.0, "w2": 0.0}, 0.0, 60.0, ["w1", "w2"]),    # both paused, nothing finished (the S4 hang)
    ({"w1": 0.0}, 0.0, 60.0, ["w1"]),                     # one paused holding the last task (the S9 hang)
    ({"w1": 0.0}, 30.0, 60.0, []),                        # a task finished 30 s ago: the cluster moves
    ({"w1": 0.0, "w2": 50.0}, 0.0, 60.0, ["w1"]),         # w2 paused only 10 s ago
])
def test_stall_rule(paused_since, last_progress, now, expected):
    from cluster.watchdog import stalled_workers

    assert stalled_workers(paused_since, last_progress, now, 60.0) == expected


def _wait_until_paused(client, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(w.get("status") == "paused" for w in client.scheduler_info()["workers"].values()) < n:
        assert time.monotonic() < deadline, client.scheduler_info()["workers"]
        time.sleep(0.1)


def _pause(dask_worker):
    """Pause this worker through its own memory monitor, as a worker over distributed.worker.memory.pause is."""
    memory = dask_worker.memory_manager
    memory.memory_pause_fraction = 1e-9  # any process memory is above it
    memory.memory_spill_fraction = memory.memory_target_fraction = False
    return True


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_workers_that_stay_paused_fail_the_wait_with_c201():
    from distributed import LocalCluster, as_completed

    from cluster import ClusterRunError, PauseWatchdog

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50,
                      memory_limit="1GiB", scheduler_kwargs={"dashboard": False}) as local, \
            distributed.Client(local) as client:
        client.wait_for_workers(2)
        client.run(_pause)
        _wait_until_paused(client, 2)  # both, before the watchdog starts (a loaded machine pauses them apart)
        futures = client.map(operator.neg, range(8))
        with PauseWatchdog(client, lambda: client.cancel(futures), timeout=2.0, poll=0.2) as watchdog:
            finished = [f.status for f in as_completed(futures)]  # returns once the watchdog cancels
        assert set(finished) == {"cancelled"}
        error = watchdog.error
        assert isinstance(error, ClusterRunError) and error.code == "C201_WORKERS_PAUSED", error
        assert "2 of 2 workers stayed paused for 2 s" in error.message and "distributed.worker.memory.pause" in error.message
        assert "--memory-limit" in error.hint and all(a in error.message for a in client.scheduler_info()["workers"])


def test_a_lost_scheduler_is_c202_and_other_errors_are_not():
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    from cluster import scheduler_lost

    class Client:  # what scheduler_lost reads of a client
        status = "running"
        scheduler = type("rpc", (), {"address": "tcp://10.0.0.1:8786"})()

    for error in (CommClosedError("in <TCP>: Stream is closed"),
                  FutureCancelledError("s4-write-000-1a2b3c4d", reason="scheduler-connection-lost")):
        lost = scheduler_lost(Client(), error)
        assert lost.code == "C202_SCHEDULER_LOST" and "tcp://10.0.0.1:8786" in lost.message, lost
        assert "rerun the same command" in lost.hint
    assert scheduler_lost(Client(), ValueError("a bug")) is None
    assert scheduler_lost(Client(), FutureCancelledError("k", reason="cancelled by the user")) is None
    assert scheduler_lost(Client(), OSError("disk full")) is None  # the client is still connected
    Client.status = "connecting"
    assert scheduler_lost(Client(), OSError("Timed out trying to connect")).code == "C202_SCHEDULER_LOST"


def test_a_client_that_gave_up_reconnecting_still_names_the_lost_scheduler():
    # Seen under load: once the client closes after failing to reconnect, its rpc no longer has an address
    from cluster import scheduler_lost

    class Closed:
        status = "closed"
        scheduler = type("rpc", (), {"address": None})()

    error = OSError("Timed out trying to connect to tcp://127.0.0.1:38825 after 30 s")
    assert "at tcp://127.0.0.1:38825 while" in scheduler_lost(Closed(), error).message
    Closed._scheduler_identity = {"address": "tcp://10.0.0.2:8786"}  # what the client learnt when it connected
    assert "at tcp://10.0.0.2:8786 while" in scheduler_lost(Closed(), error).message


def test_cluster_package_has_no_domain_imports():
    """cluster/ must not import segment1b or jobs (layering rule in DESIGN.md)."""
    import ast

    for path in (REPO_ROOT / "cluster").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("segment1b", "jobs"), f"{path.name} imports {name}"


# ------------------------------------------------------------------------------------------------
# documentation: README and examples stay in step with the option table
# ------------------------------------------------------------------------------------------------

EXAMPLES = REPO_ROOT / "cluster" / "examples"


def test_readme_documents_every_option():
    readme = (REPO_ROOT / "cluster" / "README.md").read_text()
    for spec in OPTIONS:
        assert f"`{spec.name}`" in readme and f"`{spec.config_key}`" in readme and f"`{spec.env_var}`" in readme
    for code in CLUSTER_ERROR_CODES:
        assert f"`{code}`" in readme


def test_readme_lists_every_example_and_each_exists():
    listed = set()
    for readme in (REPO_ROOT / "cluster" / "README.md", EXAMPLES / "README.md"):
        text = readme.read_text()
        listed |= {name for name in (p.name for p in EXAMPLES.iterdir()) if name in text}
    assert listed == {p.name for p in EXAMPLES.iterdir()}
    for name in ["ssh-hosts.md", "slurm-scheduler-file.sbatch", "hpc-jobqueue.py", "kubernetes-daskjob.yaml",
                 "kubernetes-daskcluster.yaml", "kubernetes-kubecluster.py", "dask-gateway.py",
                 "dask-config.yaml", "tls.md"]:
        text = (EXAMPLES / name).read_text()
        assert "segment1b run" in text, f"{name} does not say how to run segment1b"


def test_example_python_files_parse():
    import ast

    for path in EXAMPLES.glob("*.py"):
        ast.parse(path.read_text(), filename=str(path))


def test_example_config_file_is_valid(tmp_path):
    import yaml

    config = yaml.safe_load((EXAMPLES / "dask-config.yaml").read_text())
    assert set(config["segment1b"]["cluster"]) == {spec.key for spec in OPTIONS}
    for doc in ("kubernetes-daskjob.yaml", "kubernetes-daskcluster.yaml"):
        assert yaml.safe_load((EXAMPLES / doc).read_text())["apiVersion"] == "kubernetes.dask.org/v1"
    with dask.config.set({"segment1b": config["segment1b"]}):
        options = ClusterOptions()
    assert options.scheduler == "tls://dask-scheduler.example.org:8786" and options.worker_timeout == 300.0
    # the TLS block names the files that distributed.Security reads
    tls = config["distributed"]["comm"]["tls"]
    with dask.config.set({"distributed.comm.tls.ca-file": tls["ca-file"],
                          "distributed.comm.tls.client.cert": tls["client"]["cert"],
                          "distributed.comm.tls.client.key": tls["client"]["key"]}):
        security = distributed.Security()
    assert security.tls_ca_file == tls["ca-file"] and security.tls_client_key == tls["client"]["key"]
