"""Soak: consecutive `segment1b run`s with a random worker SIGKILLed during S4-S6 in half of them.

Workload per scale: the embedded Natural Earth countries and GeoNames population proxy on a named grid
(S1/S2 prepared once into ``<workdir>/pipeline-<grid>/`` as in ``bench_pipeline``, not timed), then ``runs``
consecutive runs of ``jobs.pipeline.run_pipeline`` (generate the catalogue, S0-S9, reports) on one
LocalCluster of 2 nanny-managed worker processes (1 thread, 4 GiB each), each into a fresh data root that
shares the prepared tile data by hard links.

Faults: a seeded random half of the runs gets one kill.  For such a run a victim worker, a task family
(``s4-weights``, a country's weight prefix, or ``s6-jitter``, a fused S4→S5→S6 unit — the task families a
full run has in S4-S6) and an ordinal ``k`` (1..5) are drawn; a worker plugin in the victim SIGKILLs its own
process when its ``k``-th task of that family starts executing, so the kill lands inside S4-S6 (if the
victim runs fewer than ``k`` such tasks, the run is reported as "not landed").  The
nanny restarts the worker and the later runs use the new process.

Checks: every run passes S9 and its datasets (catalogue, S3-S7, site_locations) have the digests of the
first run.  The report prints per run the wall time, the kill and whether it landed, and the digest check;
the baseline is the mean wall of the undisturbed runs, and ``ratio`` = disturbed mean / undisturbed mean.

Run: ``python -m benchmarks.run soak --scale smoke`` (4 runs, 30' grid, tiny catalogue) or
``python -m benchmarks.run soak --scale reference-5m --workdir /work/bench-out`` (20 runs at reference scale).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import statistics
import time

SCALES = {
    "reference-5m": {"grid": "5m", "scale": "reference", "runs": 20},
    "smoke": {"grid": "30m", "scale": "tiny", "runs": 4},
}
SEED = 20261125
FAULT_SEED = 9
FAMILIES = ("s4-weights-", "s6-jitter-")
DATASETS = ("outlet_catalogue", "s3_requirements", "s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter",
            "s7_site_synthesis", "site_locations")


class KillOnTask:
    """Worker plugin: SIGKILL this worker process when its ``nth`` task whose key starts with ``prefix``
    starts executing."""

    name = "segment1b-soak-kill"

    def __init__(self, prefix: str, nth: int):
        self.prefix, self.nth, self.seen = prefix, nth, 0

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith(self.prefix):
            self.seen += 1
            if self.seen == self.nth:
                os.kill(os.getpid(), signal.SIGKILL)


def _arm(prefix: str, nth: int, dask_worker=None) -> int:
    # runs in the victim worker (Client.run passes it as ``dask_worker``)
    dask_worker.plugins[KillOnTask.name] = KillOnTask(prefix, nth)
    return os.getpid()


def _disarm(dask_worker) -> bool:
    return dask_worker.plugins.pop(KillOnTask.name, None) is not None


def plan_faults(runs: int, seed: int = FAULT_SEED) -> dict[int, tuple[int, str, int]]:
    """Run index -> (victim worker rank, task family prefix, k) for a seeded random half of the runs."""
    rnd = random.Random(seed)
    killed = sorted(rnd.sample(range(runs), runs // 2))
    return {i: (rnd.randrange(2), rnd.choice(FAMILIES), rnd.randint(1, 5)) for i in killed}


def _digests(storage, ident: dict) -> dict[str, str | None]:
    from segment1b.contracts import path_for

    out = {}
    for ds in DATASETS:
        if ds in ("outlet_catalogue", "site_locations"):
            rel = path_for(ds, seed=ident["seed"], manifest_fingerprint=ident["manifest_fingerprint"])
        else:
            rel = path_for(ds, seed=ident["seed"], manifest_fingerprint=ident["manifest_fingerprint"],
                           parameter_hash=ident["parameter_hash"])
        out[ds] = storage.partition_digest(rel) if storage.is_published(rel) else None
    return out


def run(bench, scale: str, params: dict, workdir: str = "bench-out") -> None:
    from distributed import Client, LocalCluster

    from jobs.pipeline import RunRequest, run_pipeline
    from segment1b.storage import Storage

    from .bench_pipeline import _fresh_root, _prepared_root

    prepared, _ = _prepared_root(workdir, params["grid"])
    faults = plan_faults(params["runs"])
    request = RunRequest(seed=SEED, scale=params["scale"], grid=params["grid"])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50, memory_limit="4GiB",
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    client = Client(cluster)
    rows: list[dict] = []
    reference: dict | None = None
    try:
        for i in range(params["runs"]):
            client.wait_for_workers(2)
            root = os.path.join(workdir, f"soak-{scale}", f"run-{i:02d}")
            _fresh_root(prepared, root)
            storage = Storage(root)
            pids = client.run(os.getpid)
            fault = faults.get(i)
            victim_pid = None
            if fault is not None:
                rank, prefix, nth = fault
                victim = sorted(pids)[rank]
                victim_pid = client.run(_arm, prefix, nth, workers=[victim])[victim]
            label = f"run {i:02d}" + (f" (kill {fault[1]}{fault[2]})" if fault else "")
            t0 = time.perf_counter()
            with bench.step(label):
                summary = run_pipeline(storage, client, request, out=io.StringIO())
            wall = time.perf_counter() - t0
            client.wait_for_workers(2)
            after = client.run(os.getpid)
            landed = victim_pid is not None and victim_pid not in after.values()
            if fault is not None and not landed:
                client.run(_disarm)  # the victim never reached its k-th task: do not carry the plugin over
            digests = _digests(storage, summary.identity)
            if reference is None:
                reference = digests
            same = digests == reference and all(digests.values())
            row = {"run": i, "wall_s": round(wall, 3), "passed": bool(summary.passed), "fault": fault,
                   "landed": landed, "identical": same,
                   "restarted_workers": len(set(pids.values()) - set(after.values()))}
            rows.append(row)
            bench.note(label, passed="yes" if row["passed"] else "NO",
                       killed=("landed" if landed else "not landed") if fault else "no",
                       identical_to_run_00="yes" if same else "NO", restarted_workers=row["restarted_workers"])
            shutil.rmtree(root, ignore_errors=True)
    finally:
        client.close()
        cluster.close()

    undisturbed = [r["wall_s"] for r in rows if not r["landed"]]
    disturbed = [r["wall_s"] for r in rows if r["landed"]]
    print(f"\n{'run':>4} {'wall s':>8}  {'kill':<18} {'landed':<7} {'PASS':<5} identical", file=bench.out)
    for r in rows:
        kill = f"w{r['fault'][0]} {r['fault'][1]}{r['fault'][2]}" if r["fault"] else "-"
        print(f"{r['run']:>4} {r['wall_s']:>8.2f}  {kill:<18} {str(r['landed']):<7} {str(r['passed']):<5} "
              f"{r['identical']}", file=bench.out)
    base = statistics.mean(undisturbed) if undisturbed else float("nan")
    hit = statistics.mean(disturbed) if disturbed else float("nan")
    print(f"  undisturbed runs: {len(undisturbed)}, mean wall {base:.2f} s (baseline); runs with a worker killed: "
          f"{len(disturbed)}, mean wall {hit:.2f} s; ratio disturbed/undisturbed {hit / base:.2f}", file=bench.out)
    ok = all(r["passed"] and r["identical"] for r in rows)
    print(f"  every run passed and is byte-identical to run 00: {ok}", file=bench.out)
    if not ok:
        raise RuntimeError(f"soak failed: {[r for r in rows if not (r['passed'] and r['identical'])]}")
