"""End to end: ``segment1b run`` S0→S9 on a LocalCluster, on real multi-process and TLS clusters, on an
S3-compatible object store, and resumed after the client was killed — byte-identical datasets every time.

Most runs use a small world (a dozen Natural Earth countries on the 30′ grid, the ``tiny`` catalogue,
parts of 256 sites so that S4-S9 have several parts) so that each run takes seconds; one run uses the
embedded default countries.  The uninterrupted LocalCluster run of the small world (``reference``) gives
the digests that every other run must reproduce: Storage.partition_digest of every S1-S8 dataset.

Each run is the real command in a subprocess (``python -m jobs.cli run ...``), except the first, which
calls ``jobs.cli.main`` in-process.  Cluster processes bind 127.0.0.1 (see ``cluster_fixtures``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed  # noqa: F401  imported before any dask.config.set (see cluster_fixtures.tls_config)
import pytest

from moto_s3 import moto_s3, storage_options
from cluster_fixtures import (START_TIMEOUT, die_with_parent, group_gone, make_pki, repo_env, start_cluster,
                              wait_for_workers)
from segment1b.contracts import dataset, path_for, report_path
from segment1b.storage import Storage

pytestmark = pytest.mark.cluster

SEED = 42
SMALL_WORLD = ("AU", "BR", "CA", "CL", "DE", "FJ", "FR", "GB", "JP", "NZ", "US", "ZA")
RUN_ARGS = ["--seed", str(SEED), "--grid", "30m", "--scale", "tiny", "--part-sites", "256"]
# every dataset of S1-S8 (and the generated input); RNG logs differ by design (ts_utc, run_id)
DATASETS = ("tile_index", "tile_bounds", "tile_weights", "outlet_catalogue", "s3_requirements", "s4_alloc_plan",
            "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis", "site_locations")
STATES = ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9")
RUN_TIMEOUT = 300
TASK_KEY = re.compile(r"^(?P<state>s[0-9])-(?P<action>[a-z0-9]+)(?:-(?P<iso>[A-Z]{2}|small))?(?:-(?P<index>\d{3}))?"
                      r"-(?P<token>[0-9a-f]{8})$")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> str:
    """A GeoParquet of a dozen embedded Natural Earth countries (antimeridian: FJ, US; islands: JP, NZ)."""
    import geopandas

    from segment1b import refdata

    countries = refdata.default_countries()
    path = tmp_path_factory.mktemp("world") / "countries.parquet"
    geopandas.GeoDataFrame({"iso_a2": list(SMALL_WORLD)}, geometry=[countries.get(c) for c in SMALL_WORLD],
                           crs="EPSG:4326").to_parquet(path)
    return str(path)


def run_argv(root: str, small_world: str, *extra: str) -> list[str]:
    return ["run", "--data-root", root, *RUN_ARGS, "--countries", small_world, *extra]


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = repo_env()
    for name in list(env):  # no cluster or TLS settings of the machine running the tests
        if name.startswith(("DASK_SEGMENT1B__", "DASK_DISTRIBUTED__COMM__")) or name == "DASK_CONFIG":
            del env[name]
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def segment1b(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
              timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the command line in a fresh interpreter; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=cwd, env=subprocess_env(env),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=die_with_parent)


def assert_passed(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert re.search(r"^PASS\b", proc.stdout, re.M), proc.stdout[-3000:]
    return proc.stdout


def run_identity(storage: Storage) -> dict:
    """The run receipt of the data root's only run: seed, manifest_fingerprint, parameter_hash, run_id."""
    pattern = storage.abspath("control/run/seed=*/fingerprint=*/parameter_hash=*/run_receipt.json")
    found = storage.fs.glob(pattern)
    assert len(found) == 1, found
    return json.loads(storage.fs.cat_file(found[0]))


def dataset_rel(ds: str, receipt: dict) -> str:
    tokens = {k: receipt[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")}
    return path_for(ds, **{k: v for k, v in tokens.items() if k in dataset(ds).tokens})


def digests(storage: Storage, receipt: dict | None = None) -> dict[str, str]:
    """Partition digest of every S1-S8 dataset (all must be published)."""
    receipt = receipt or run_identity(storage)
    out = {}
    for ds in DATASETS:
        rel = dataset_rel(ds, receipt)
        assert storage.is_published(rel), f"{ds} is not published at {storage.url(rel)}"
        out[ds] = storage.partition_digest(rel)
    return out


def staging_leftovers(storage: Storage) -> list[str]:
    return [p for p in storage.fs.find(storage.abspath(""), withdirs=True)
            if ".staging-" in p or "place-progress-" in p]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_world):
    """The small world, uninterrupted, on a 2-worker LocalCluster: digests and identity."""
    folder = tmp_path_factory.mktemp("reference")
    root = str(folder / "root")
    out = assert_passed(segment1b(run_argv(root, small_world, "--workers", "2"), folder))
    storage = Storage(root)
    receipt = run_identity(storage)
    return {"root": root, "receipt": receipt, "digests": digests(storage, receipt), "stdout": out}


def event_parts(storage: Storage, receipt: dict) -> dict[str, list[str]]:
    out = {}
    for label in ("site_tile_assign", "in_cell_jitter"):
        rel = path_for("rng_events", substream_label=label, seed=receipt["seed"],
                       parameter_hash=receipt["parameter_hash"], run_id=receipt["run_id"])
        out[label] = storage.list_files(rel) if storage.is_published(rel) else []
    return out


def report_rel(state: str, receipt: dict) -> str:
    return report_path(state, **{k: receipt[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")})


def run_until_killed(argv: list[str], cwd: Path, when, *, env: dict[str, str] | None = None,
                     timeout: float = RUN_TIMEOUT) -> list[str]:
    """Start the command in its own process group and SIGKILL the whole group (client, LocalCluster
    scheduler, nannies, workers) as soon as ``when(lines)`` is true; returns the lines printed so far."""
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], cwd=cwd, env=subprocess_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=die_with_parent)
    lines: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not when(list(lines)):
            if proc.poll() is not None:
                reader.join(5)
                pytest.fail("the run ended before the kill point:\n" + "\n".join(lines[-60:]))
            if time.monotonic() > deadline:
                pytest.fail("kill point not reached in time:\n" + "\n".join(lines[-60:]))
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_group_gone(proc.pid)
    reader.join(5)
    return lines


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    if not group_gone(pgid, timeout):
        pytest.fail(f"processes of group {pgid} survived SIGKILL")


def after(marker: str, seconds: float = 0.0):
    """A kill condition: ``seconds`` after a line starting with ``marker`` was printed."""
    seen: list[float] = []

    def when(lines: list[str]) -> bool:
        if not seen and any(line.startswith(marker) for line in lines):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= seconds

    return when


def assert_no_partial_partitions(storage: Storage, receipt: dict, reference: dict) -> None:
    """Every dataset partition a reader can see is whole: published, with the uninterrupted run's bytes."""
    for ds in DATASETS:
        rel = dataset_rel(ds, receipt)
        if storage.is_published(rel):
            assert storage.partition_digest(rel) == reference["digests"][ds], ds
        elif storage.is_local:
            assert not storage.exists(rel), f"{ds}: a folder without its publication"
    ref_events = event_parts(Storage(reference["root"]), reference["receipt"])
    for label, files in event_parts(storage, receipt).items():
        assert files in ([], ref_events[label]), label


# ------------------------------------------------------------------------------------------------
# LocalCluster, the embedded default countries, the command line's summary and reports
# ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(RUN_TIMEOUT)
def test_run_on_a_local_cluster_prints_the_summary_and_saves_the_reports(tmp_path, capsys):
    from jobs.cli import main

    root = str(tmp_path / "root")
    assert main(["run", "--data-root", root, "--seed", str(SEED), "--grid", "30m", "--scale", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Dask LocalCluster tcp://127.0.0.1:") and "dashboard http://" in out.splitlines()[0]
    assert re.search(r"^PASS\b", out, re.M)
    summary = out[out.index("== summary =="):]
    storage = Storage(root)
    receipt = run_identity(storage)
    assert f"run_id {receipt['run_id']}  seed {SEED}" in summary and "(resumed)" not in summary
    # rows and seconds of every state, from the run reports
    reports = json.loads(storage.read_bytes(path_for("run_folder", **{k: receipt[k] for k in (
        "seed", "manifest_fingerprint", "parameter_hash")}) + "run_summary.json"))
    rows = {r["state"]: r for r in reports["states"] if "state" in r and r["state"] in STATES}
    assert list(rows) == list(STATES)
    for state, row in rows.items():
        assert row["rows"] > 0 and row["seconds"] > 0, row
        assert re.search(rf"^  {state}\s+{row['rows']:,} rows\s+{row['seconds']:.2f} s", summary, re.M), state
    assert rows["s8"]["rows"] == rows["s7"]["rows"] == rows["s6"]["rows"] == rows["s5"]["rows"]
    # the ten slowest countries
    slow = re.search(r"slowest countries \(S4-S6 task seconds\): (.*)$", summary, re.M).group(1).split(", ")
    assert len(slow) == 10 and all(re.fullmatch(r"[A-Z]{2} \d+\.\d\ds", c) for c in slow)
    assert [c["country_iso"] for c in reports["slowest_countries"]] == [c.split()[0] for c in slow]
    # where the outputs and reports are; all of them exist
    run_folder = Path(reports["outputs"]["run_folder"])
    for name in ("run_folder", "performance_report", "reports", "site_locations", "validation_bundle"):
        assert f"  {name}: {reports['outputs'][name]}" in summary
        assert Path(reports["outputs"][name]).exists(), name
    assert (Path(reports["outputs"]["validation_bundle"]) / "_passed.flag").is_file()
    # the run report and the map are listed too, and the verdict is the last line (issue 15)
    for name, file in (("run_report", "run_report.html"), ("map", "map.png")):
        assert reports["outputs"][name] == str(run_folder / file) and f"  {name}: {run_folder / file}" in summary
        assert (run_folder / file).is_file(), name
    assert out.rstrip("\n").splitlines()[-1] == "PASS  _passed.flag written; site_locations validated"
    # the performance report covers the whole run, and task keys name the state and the country
    html = (run_folder / "performance_report.html").read_text()
    keys = set(re.findall(r"s[0-9]-[a-z]+(?:-[A-Z]{2}|-small)?(?:-\d{3})?-[0-9a-f]{8}", html))
    jitter = {k for k in keys if k.startswith("s6-jitter-")}
    # S4-S6 units are named by their country, or `small` for a pack of countries with few sites each
    assert jitter and all(TASK_KEY.match(k)["index"] and TASK_KEY.match(k)["iso"] for k in jitter)
    weights = {TASK_KEY.match(k)["iso"] for k in keys if k.startswith("s4-weights-")}
    assert "US" in weights and len(weights) >= 50  # one weight-prefix task per country with sites
    # per-country work of the other states too (S4-S6 of a unit are one fused task, named for S6; S4's
    # per-country weight prefixes are `s4-weights-<ISO>`)
    for state in ("s1", "s2", "s4"):
        assert any(TASK_KEY.match(k)["state"] == state and TASK_KEY.match(k)["iso"] == "US" for k in keys), state
    assert any(k.startswith("s7-synth-") for k in keys) and any(k.startswith("s9-tables-") for k in keys)


@pytest.mark.timeout(RUN_TIMEOUT)
def test_a_failing_run_prints_the_failing_code_and_exits_non_zero(tmp_path, small_world, reference):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(reference["root"], root)
    receipt = reference["receipt"]
    # a published S6 part changed after its run report recorded the digest: S9 fails, the summary says why
    part = next((root / dataset_rel("s6_site_jitter", receipt)).glob("part-*.parquet"))
    part.write_bytes(part.read_bytes() + b"\0")
    proc = segment1b(run_argv(str(root), small_world), tmp_path)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"run_id {receipt['run_id']} (resumed)" in proc.stdout
    fail = re.search(r"^FAIL  (.*) \(see the validation bundle\)$", proc.stdout, re.M)
    assert fail and "E911_FINALITY" in fail.group(1).split(", "), proc.stdout[-3000:]
    assert not re.search(r"^PASS\b", proc.stdout, re.M)
    # a contract failure before S9 (no upstream PASS flag for this catalogue): its code, exit 3
    proc = segment1b(run_argv(str(root), small_world, "--fingerprint", "ab" * 32), tmp_path)
    assert proc.returncode == 3 and "E301_NO_PASS_FLAG" in proc.stderr, proc.stdout[-3000:] + proc.stderr
    assert re.search(r"^FAIL  E301_NO_PASS_FLAG$", proc.stdout, re.M)


# ------------------------------------------------------------------------------------------------
# real multi-process clusters: by address, by scheduler file, by Dask config; 1 worker
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("plain")
    procs, scheduler_file, address = start_cluster(folder, n_workers=2, memory_limit="3GiB")
    try:
        wait_for_workers(address, 2)
        yield {"scheduler_file": scheduler_file, "address": address, "folder": folder}
    finally:
        procs.stop()


def cluster_task_keys(address: str) -> set[str]:
    """Every task key the scheduler's task stream has recorded."""
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT) as client:
        return {t["key"] if isinstance(t["key"], str) else str(t["key"]) for t in client.get_task_stream(start=0)}


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_multi_process_cluster_by_address_gives_the_local_cluster_bytes(tmp_path, small_world, plain_cluster,
                                                                        reference):
    address = plain_cluster["address"]
    root = str(tmp_path / "root")
    env = {"DASK_SEGMENT1B__CLUSTER__WORKER_TIMEOUT": str(START_TIMEOUT)}
    out = assert_passed(segment1b(run_argv(root, small_world, "--scheduler", address), tmp_path, env))
    assert out.startswith(f"Dask cluster {address}: 2 workers x 1 thread")
    storage = Storage(root)
    assert digests(storage) == reference["digests"]
    # the workers ran the tasks, whose keys name state and country (the dashboard groups them so)
    keys = {k for k in cluster_task_keys(address) if TASK_KEY.match(k)}
    jitter = [TASK_KEY.match(k) for k in keys if k.startswith("s6-jitter-")]
    assert jitter and {m["iso"] for m in jitter} <= set(SMALL_WORLD) | {"small"} and all(m["index"] for m in jitter)
    weights = {TASK_KEY.match(k)["iso"] for k in keys if k.startswith("s4-weights-")}
    assert {"US", "FR", "BR"} <= weights <= set(SMALL_WORLD)
    assert {TASK_KEY.match(k)["state"] for k in keys} >= {"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s9"}


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_multi_process_cluster_by_scheduler_file_and_by_dask_config(tmp_path, small_world, plain_cluster,
                                                                    reference):
    env = {"DASK_SEGMENT1B__CLUSTER__WORKER_TIMEOUT": str(START_TIMEOUT)}
    by_file = str(tmp_path / "by-file")
    out = assert_passed(segment1b(run_argv(by_file, small_world, "--scheduler-file",
                                           str(plain_cluster["scheduler_file"])), tmp_path, env))
    assert out.startswith(f"Dask cluster {plain_cluster['address']}:")
    assert digests(Storage(by_file)) == reference["digests"]
    # a Dask config file naming the cluster (as in cluster/examples/dask-config.yaml); no cluster flags
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "segment1b.yaml").write_text(
        f"segment1b:\n  cluster:\n    scheduler-address: {plain_cluster['address']}\n"
        f"    worker-timeout: {START_TIMEOUT}s\n")
    by_config = tmp_path / "by-config"
    argv, env = run_argv(str(by_config), small_world), {"DASK_CONFIG": str(config)}
    # the client killed while S4-S6 run (the cluster lives on), then the same command again
    run_until_killed(argv, tmp_path, lambda _: bool(list(by_config.glob("control/run/*/*/*/place-progress-*/s6-*"))),
                     env=env)
    receipt = run_identity(Storage(str(by_config)))
    out = assert_passed(segment1b(argv, tmp_path, env))
    assert out.startswith(f"Dask cluster {plain_cluster['address']}:")
    assert f"run_id {receipt['run_id']} (resumed)" in out
    assert digests(Storage(str(by_config))) == reference["digests"]
    # the killed client's tasks that were running finished into its own folders; the rerun removed them
    assert staging_leftovers(Storage(str(by_config))) == []


@pytest.mark.timeout(RUN_TIMEOUT)
def test_one_worker_gives_the_same_bytes(tmp_path, small_world, reference):
    root = str(tmp_path / "root")
    out = assert_passed(segment1b(run_argv(root, small_world, "--workers", "1"), tmp_path))
    assert out.startswith("Dask LocalCluster tcp://127.0.0.1:") and ": 1 worker x 1 thread" in out.splitlines()[0]
    assert digests(Storage(root)) == reference["digests"]


# ------------------------------------------------------------------------------------------------
# TLS on loopback
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    pytest.importorskip("cryptography")
    folder = tmp_path_factory.mktemp("tls")
    pki = make_pki(folder, "cluster")
    procs, scheduler_file, address = start_cluster(folder, n_workers=2, tls=pki, memory_limit="3GiB")
    try:
        wait_for_workers(address, 2, tls=pki)
        yield {"pki": pki, "address": address, "folder": folder}
    finally:
        procs.stop()


def tls_env(pki: dict[str, Path]) -> dict[str, str]:
    """Dask config TLS keys as environment variables (what distributed.Security reads)."""
    return {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(pki["ca"]),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(pki["cert"]),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(pki["key"])}


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_tls_cluster_runs_with_the_certificate_and_refuses_clients_without_it(tmp_path, small_world, tls_cluster,
                                                                              reference):
    address = tls_cluster["address"]
    assert address.startswith("tls://127.0.0.1:")
    root = str(tmp_path / "root")
    env = {**tls_env(tls_cluster["pki"]), "DASK_SEGMENT1B__CLUSTER__SCHEDULER_ADDRESS": address,
           "DASK_SEGMENT1B__CLUSTER__WORKER_TIMEOUT": str(START_TIMEOUT)}
    out = assert_passed(segment1b(run_argv(root, small_world), tmp_path, env))
    assert out.startswith(f"Dask cluster {address}: 2 workers")
    assert digests(Storage(root)) == reference["digests"]

    refused = str(tmp_path / "refused")
    fast = {"DASK_SEGMENT1B__CLUSTER__CONNECT_TIMEOUT": "5"}
    # no certificate configured: refused before connecting, naming the config keys to set
    proc = segment1b(run_argv(refused, small_world, "--scheduler", address), tmp_path, fast, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "C003_TLS_CONFIG" in proc.stderr and "distributed.comm.tls.ca-file" in proc.stderr
    # a certificate of another CA: the scheduler refuses the handshake
    rogue = make_pki(tmp_path, "rogue")
    proc = segment1b(run_argv(refused, small_world, "--scheduler", address), tmp_path, {**fast, **tls_env(rogue)},
                     timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "C102_SCHEDULER_UNREACHABLE" in proc.stderr and address in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(refused, "data").exists()  # nothing was computed or published


# ------------------------------------------------------------------------------------------------
# an S3-compatible object store as the data root (moto's server on 127.0.0.1)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    with moto_s3("segment1b-e2e") as endpoint:
        yield storage_options(endpoint)


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_object_store_data_root_end_to_end_and_the_consumer_reader(tmp_path, small_world, s3_server, reference):
    from segment1b.reader import open_site_locations, verify_passed_flag

    root = "s3://segment1b-e2e/runs/small"
    argv = run_argv(root, small_world, "--storage-options", json.dumps(s3_server))
    ttl = {"DASK_SEGMENT1B__LEASE__TTL": "5"}  # object-store leases: a killed holder's lapses after 5 s
    # killed while S4-S6 run, then resumed: object stores have no atomic rename (copy + marker)
    storage = Storage(root, s3_server)
    killed = run_until_killed(argv, tmp_path, lambda lines: any(line.startswith("  s6 units") for line in lines),
                              env=ttl)
    receipt = run_identity(storage)
    assert_no_partial_partitions(storage, receipt, reference)
    out = assert_passed(segment1b(argv, tmp_path, ttl))
    assert f"run_id {receipt['run_id']} (resumed)" in out, killed
    # the killed run's lease object stayed: the rerun waited for its heartbeat to lapse, then took it over
    assert re.search(r"lease control/lease/segment/fingerprint=\w+\.lock: waiting for pid \d+", out), out[-3000:]
    assert not storage.exists(path_for("lease_segment", manifest_fingerprint=receipt["manifest_fingerprint"]))
    assert digests(storage, receipt) == reference["digests"]
    assert staging_leftovers(storage) == []
    run_folder = dataset_rel("run_folder", receipt)
    assert storage.exists(run_folder + "performance_report.html") and storage.exists(run_folder + "run_summary.json")
    # a consumer: flag first, then the points
    flag = verify_passed_flag(root, SEED, receipt["manifest_fingerprint"], storage_options=s3_server)
    assert re.fullmatch(r"[0-9a-f]{64}", flag)
    frame = open_site_locations(root, SEED, receipt["manifest_fingerprint"], storage_options=s3_server).compute()
    assert len(frame) == json.loads(storage.read_bytes(report_rel("s8", receipt)))["rows"] > 1000
    assert set(frame["legal_country_iso"]) <= set(SMALL_WORLD)


# ------------------------------------------------------------------------------------------------
# resume: the client (and its LocalCluster) killed at several points, then the same command again
# ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_killed_runs_resume_under_the_same_run_id_and_end_byte_identical(tmp_path, small_world, reference):
    root = tmp_path / "root"
    storage = Storage(str(root))
    argv = run_argv(str(root), small_world)

    def s6_part_recorded(lines):  # part 0 finished by S4, S5 and S6, not yet published
        found = list(root.glob("control/run/*/*/*/place-progress-*/s6-part-00000.json"))
        return bool(found) and all((found[0].parent / f"{k}-part-00000.json").exists() for k in ("s4", "s5"))

    # 1. during S1/S2: no identity yet, the rerun starts it again
    run_until_killed(argv, tmp_path, after("prepare: grid", 0.3))
    assert not list(root.glob("control/run/*/*/*/run_receipt.json"))
    # 2. during S4-S6, once part 0 is written by all three
    run_until_killed(argv, tmp_path, s6_part_recorded)
    receipt = run_identity(storage)
    progress = next(root.glob(f"control/run/*/*/*/place-progress-{receipt['run_id']}-*"))  # the killed attempt's
    finished = [p for p in range(100)
                if all((progress / f"{k}-part-{p:05d}.json").exists() for k in ("s4", "s5", "s6"))]
    assert 0 in finished
    s6_published_at_kill = storage.is_published(dataset_rel("s6_site_jitter", receipt))
    assert_no_partial_partitions(storage, receipt, reference)
    # 3. during S7/S8, once a part is written (the rerun resumes S4-S6 first: parts of step 2 are reused)
    s7_parent = (root / dataset_rel("s7_site_synthesis", receipt)).parent
    lines = run_until_killed(argv, tmp_path, lambda _: bool(list(s7_parent.glob(".*.staging-*/part-*.parquet"))))
    assert f"run_id {receipt['run_id']} (resumed)" in "\n".join(lines)
    assert not storage.is_published(dataset_rel("s7_site_synthesis", receipt))
    if not s6_published_at_kill:  # (a starved test process could in principle have looked too late)
        s6_report = json.loads(storage.read_bytes(report_rel("s6", receipt)))
        assert s6_report["parts_reused_on_resume"] == len(finished) >= 1
    assert_no_partial_partitions(storage, receipt, reference)
    # 4. during S9
    run_until_killed(argv, tmp_path, lambda lines: any(line.startswith("  s9 ") and "tasks done" in line
                                                       for line in lines))
    assert_no_partial_partitions(storage, receipt, reference)
    # 5. the same command once more: it finishes under the same run_id with the uninterrupted run's bytes
    out = assert_passed(segment1b(argv, tmp_path))
    assert f"run_id {receipt['run_id']} (resumed)" in out
    assert run_identity(storage) == receipt
    assert digests(storage, receipt) == reference["digests"]
    assert staging_leftovers(storage) == []
    # 6. and again: everything is published and intact: a no-op that starts no cluster and writes nothing
    # (issue #14: it used to rewrite the run summary and the reports, and restage the S9 bundle)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    out = assert_passed(segment1b(argv, tmp_path))
    assert re.search(r"^run: everything of this run is already published \(run_id " + receipt["run_id"], out, re.M)
    assert "nothing to do, nothing written" in out and "Dask" not in out, out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert digests(storage, receipt) == reference["digests"]
