"""The client process's memory over repeated runs on one long-lived cluster (issue 17).

``runs-N``: one cluster started as ``segment1b run`` starts it (:func:`cluster.open_client`, 2 workers),
then N reference-scale ``run_pipeline`` calls (S0 → S9, a new seed each, so each run does all the work; the
5m tile surfaces are prepared by the first).  After each run it prints the client's RSS and the number of
live Python objects; the table has the first and the last run, and the growth per run after the second
(the first ones load modules and caches).  Before issue 17 the RSS rose by 30-60 MiB per run: every batched
comm kept its last 1000 messages (task graphs included) in the client and the in-process scheduler.

Run: ``python -m benchmarks.run client_memory --scale runs-10 --workdir /tmp/bench-out``.
"""

from __future__ import annotations

import gc
import io
import os

SCALES = {"runs-10": 10, "runs-20": 20, "runs-4": 4}


def run(bench, scale: str, runs: int, workdir: str = "bench-out") -> None:
    import psutil

    from cluster import ClusterOptions, open_client
    from jobs.pipeline import RunRequest, run_pipeline
    from segment1b.storage import Storage

    storage = Storage(os.path.join(workdir, "client-memory"))
    me = psutil.Process()
    rss = []
    with open_client(ClusterOptions(n_workers=2, threads_per_worker=1, dashboard_address=None),
                     out=io.StringIO()) as client:
        for i in range(runs):
            with bench.step(f"run {i + 1}"):
                summary = run_pipeline(storage, client, RunRequest(seed=4242 + i), out=io.StringIO())
            gc.collect()
            rss.append(me.memory_info().rss)
            bench.note(f"run {i + 1}", client_rss_mib=rss[-1] / 2**20, python_objects=len(gc.get_objects()),
                       passed=int(bool(summary.passed)))
    if runs > 2:
        growth = (rss[-1] - rss[1]) / (runs - 2) / 2**20
        bench.note(f"run {runs}", growth_mib_per_run_after_the_second=growth)
