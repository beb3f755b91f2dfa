"""The client's S4-S6 planning on a data root where S3 is published (issue 17): memory and task arguments.

Runs ``jobs.place._plan_work`` (what ``segment1b run`` does before submitting S4-S6) against a stand-in
client (two workers, the given memory limit; no cluster is started), then ``_submit_prefixes`` and
``_submit_units`` into a recording client that pickles each unit task's arguments instead of sending them.
Nothing is written to the data root.  Prints: the client's RSS before planning, its peak during planning
(VmHWM after a reset) and after (gc, Arrow pool and malloc_trim), the planning seconds, the number of parts
and units, and the pickled bytes of all unit tasks' arguments (with the per-part tasks' arguments, where the
revision has them).  With ``--trace``: tracemalloc's peak
instead (slower; NumPy's allocations are traced, Arrow's pool is not).

Works on any revision with the same private functions, so that before/after can be compared: run it from
outside the worktree with the interpreter of the revision to measure, e.g.
``cd /tmp && /work/main/.venv/bin/python /work/wt/units/benchmarks/plan_client.py --data-root D --seed 42``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import pickle
import time
import tracemalloc


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak RSS (VmHWM) to the current RSS
        fh.write("5")


class StandInClient:
    """What planning and submission ask of a Client, without a cluster; ``map`` pickles each task's args."""

    def __init__(self, workers: int, limit: int):
        self.workers, self.limit = workers, limit
        self.unit_arg_bytes = 0
        self.unit_tasks = 0
        self.part_tasks = 0
        self.shared_arg_bytes = 0

    def run(self, fn):
        return {f"w{i}": (self.limit, 1, 0.8) for i in range(self.workers)}

    def scheduler_info(self, **_):
        return {"workers": {f"w{i}": {} for i in range(self.workers)}}

    def map(self, fn, *iterables, key=None, priority=0, **kwargs):
        if fn.__name__ != "country_prefix":
            self.unit_tasks += len(key)
            for args in zip(*iterables):
                self.unit_arg_bytes += len(pickle.dumps(args, protocol=5))
            self.shared_arg_bytes = len(pickle.dumps(kwargs, protocol=5))
        return [f"future-{k}" for k in key]  # a future pickles as its key

    def submit(self, fn, *args, key=None, priority=0, **kwargs):
        """Issue 17's per-part reads of the pairs (their arguments count with the units')."""
        self.part_tasks += 1
        self.unit_arg_bytes += len(pickle.dumps((args, kwargs), protocol=5))
        return f"future-{key}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", type=float, default=11.54 * 2**30, help="bytes per worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trace", action="store_true", help="tracemalloc peak of planning (slower)")
    args = ap.parse_args()

    import jobs
    from jobs import place
    from jobs.parameters import load_parameters
    from jobs.pipeline import release_freed_memory
    from segment1b.contracts import path_for
    from segment1b.identity import RunIdentity
    from segment1b.storage import Storage

    storage = Storage(args.data_root)
    summary = _run_tokens(storage, args.seed)
    ident = RunIdentity(args.seed, summary["manifest_fingerprint"], summary["parameter_hash"], summary["run_id"])
    states = place.STATES
    attempt = place.Attempt(states, {s: path_for(place.DATASET_OF[s], **ident.tokens) for s in states}, {},
                            list(states), {s: {"data": None, "events": None} for s in states},
                            "control/.plan-client-none/", 0)
    client = StandInClient(args.workers, int(args.memory_limit))
    gc.collect()
    rss0 = _status("VmRSS")
    if args.trace:
        tracemalloc.start()
    _reset_peak()
    t0 = time.perf_counter()
    work = place._plan_work(storage, client, ident, attempt, place.PlaceConfig(), io.StringIO())
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    traced = tracemalloc.get_traced_memory()[1] if args.trace else None
    tracemalloc.stop()
    gc.collect()
    release_freed_memory()
    rss1 = _status("VmRSS")
    params = load_parameters(storage, ident.parameter_hash)
    futures, stage_of = {}, {}
    prefixes = place._submit_prefixes(storage, client, ident, work, "tok", futures, stage_of)
    place._submit_units(storage, client, ident, params.grid, params.countries_sha256, "s6", work, prefixes, "tok",
                        futures, stage_of)
    mib = 2**20
    print(json.dumps({"jobs": jobs.__file__, "pairs_sites_parts": [sum(p.pairs for p in work.parts),
                                                                   sum(p.sites for p in work.parts), len(work.parts)],
                      "units": len(work.live_units), "plan_seconds": round(seconds, 2),
                      "rss_before_mib": round(rss0 / mib, 1), "rss_peak_mib": round(peak / mib, 1),
                      "rss_after_mib": round(rss1 / mib, 1),
                      "tracemalloc_peak_mib": None if traced is None else round(traced / mib, 1),
                      "unit_tasks": client.unit_tasks, "part_tasks": client.part_tasks, "unit_args_mib": round(client.unit_arg_bytes / mib, 2),
                      "shared_kwargs_bytes": client.shared_arg_bytes}, indent=1))


def _run_tokens(storage, seed: int) -> dict:
    """Fingerprint, parameter_hash and run_id of the (only) run of ``seed`` in the data root."""
    import glob
    import os

    found = glob.glob(os.path.join(storage.abspath("control/run"), f"seed={seed}", "fingerprint=*",
                                   "parameter_hash=*", "run_receipt.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one run receipt of seed {seed}, found {found}")
    data = json.load(open(found[0]))
    parts = found[0].split(os.sep)
    return {"manifest_fingerprint": parts[-3].split("=", 1)[1], "parameter_hash": parts[-2].split("=", 1)[1],
            "run_id": data["run_id"]}


if __name__ == "__main__":
    main()
