"""Outlet catalogue generator: the vectorised block kernel vs a per-merchant Python loop, and the job.

Workload: the catalogue of a named scale (``reference`` ≈ 32 k outlets ... ``x1000`` ≈ 32 M) over the
~245 GeoNames countries of ``tests/data/countries_population.csv``.

Steps:

1. baseline — a plain per-merchant Python loop (``random.Random``, ``random.choices`` by population,
   list appends) producing the same columns for a subset of ``loop_merchants`` merchants;
2. ``generate_block`` on the same number of merchants (the ratio compares these two, same work);
3. the whole job at the scale on a 2-worker LocalCluster: generate every block, write zstd Parquet parts,
   publish, build and publish the PASS bundle (bar: x100 ≤ 60 s).  Cluster start-up is its own step.

Run: ``python -m benchmarks.run generate --scale x100``.
"""

from __future__ import annotations

import itertools
import random
import shutil
from pathlib import Path

import pyarrow as pa

from segment1b.contracts import dataset
from segment1b.generator import MAX_OUTLETS, Block, CountryTable, generate_block
from segment1b.generator import SCALES as GEN_SCALES

SCALES = {name: {"scale": name, "loop_merchants": min(GEN_SCALES[name], 100_000)}
          for name in ("reference", "x10", "x100", "x1000")}
COUNTRIES_CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "countries_population.csv"
SEED = 20250131


def python_loop(merchants: int, countries: CountryTable, seed: int) -> pa.Table:
    """The obvious implementation: one merchant at a time, rows appended to Python lists."""
    r = random.Random(seed)
    sizes = range(1, MAX_OUTLETS + 1)
    cum_n = list(itertools.accumulate(n ** -2.5 for n in sizes))
    cum_c = list(itertools.accumulate(countries.population))
    ids: set[int] = set()
    while len(ids) < merchants:  # distinct u64
        ids.add(r.getrandbits(64))
    cols = {name: [] for name in dataset("outlet_catalogue").schema.names}
    for m in sorted(ids):
        total = r.choices(sizes, cum_weights=cum_n)[0]
        home = r.choices(countries.iso, cum_weights=cum_c)[0]
        chosen = [home]
        if total > 1 and r.random() < 0.3:
            for _ in range(r.randint(1, min(3, total - 1))):
                c = r.choices(countries.iso, cum_weights=cum_c)[0]
                if c not in chosen:
                    chosen.append(c)
        n = {c: 1 for c in chosen}
        for _ in range(total - len(chosen)):
            n[home if r.random() < 0.6 else r.choice(chosen)] += 1
        for c in sorted(chosen):
            for k in range(1, n[c] + 1):
                cols["manifest_fingerprint"].append("0" * 64)
                cols["merchant_id"].append(m)
                cols["site_id"].append(f"{k:06d}")
                cols["home_country_iso"].append(home)
                cols["legal_country_iso"].append(c)
                cols["single_vs_multi_flag"].append(total > 1)
                cols["raw_nb_outlet_draw"].append(total)
                cols["final_country_outlet_count"].append(n[c])
                cols["site_order"].append(k)
                cols["global_seed"].append(seed)
    return pa.Table.from_pydict(cols, schema=dataset("outlet_catalogue").schema)


def run(bench, scale_name, params, workdir):
    from cluster import ClusterOptions, open_client, reset_worker_memory_peaks, worker_memory_peaks
    from jobs.generate import run_generate
    from segment1b.storage import Storage

    countries = CountryTable.from_csv_text(COUNTRIES_CSV.read_text())
    m = params["loop_merchants"]

    baseline = f"python per-merchant loop, {m:,} merchants (baseline)"
    with bench.step(baseline):
        rows_loop = python_loop(m, countries, SEED).num_rows
    bench.note(baseline, rows=rows_loop, rows_per_s=round(rows_loop / bench.steps[baseline].wall_s))

    kernel = f"generate_block, {m:,} merchants"
    with bench.step(kernel, baseline=baseline):
        rows_kernel = generate_block(Block(0, 1, m), seed=SEED, countries=countries,
                                     manifest_fingerprint="0" * 64).rows
    bench.note(kernel, rows=rows_kernel, rows_per_s=round(rows_kernel / bench.steps[kernel].wall_s))

    root = Path(workdir) / f"generate-{scale_name}"
    shutil.rmtree(root, ignore_errors=True)
    storage = Storage(str(root))
    with bench.step("start LocalCluster (2 workers)"):
        session = open_client(ClusterOptions(n_workers=2, threads_per_worker=1, dashboard_address=None))
        client = session.__enter__()
    try:
        reset_worker_memory_peaks(client)
        label = f"generate job {scale_name} (2 workers, write + publish + bundle)"
        with bench.step(label):
            result = run_generate(storage, client, countries, scale=scale_name, seed=SEED, show=False)
        s = result["summary"]
        bench.note(label, rows=s["rows"], pairs=s["pairs"], merchants=s["merchants"], parts=s["parts"],
                   countries_with_sites=s["countries_with_sites"],
                   rows_per_s=round(s["rows"] / bench.steps[label].wall_s))
        bench.note_workers(label, worker_memory_peaks(client))
    finally:
        session.__exit__(None, None, None)
