"""S3 requirements on Dask vs a plain pandas groupby over the whole catalogue.

Workload: a generated catalogue of a named scale (``x100`` ≈ 3.2 M rows in 8 parts), generated once in
``workdir`` (not timed when it is already there).

Steps:

1. baseline — read the two key columns of every part with pyarrow into one pandas frame and
   ``groupby([merchant_id, legal_country_iso]).size()`` (no checks, nothing written);
2. ``run_s3`` on a 2-worker LocalCluster: S0 gate (flag + catalogue digest), footers, every S3 check,
   the reduction, writing and publishing ``s3_requirements`` and its run report (bar: x100 ≤ 30 s);
   its output is compared with the baseline's before the ratio is reported.

Run: ``python -m benchmarks.run s3 --scale x100``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segment1b.generator import CountryTable

SCALES = {name: {"scale": name} for name in ("reference", "x10", "x100", "x1000")}
COUNTRIES_CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "countries_population.csv"
SEED = 20250131
PARAMETER_HASH = "5e" * 32
BASELINE = "pandas groupby over the whole catalogue (baseline)"


def pandas_groupby(storage, partition: str) -> pd.DataFrame:
    table = pa.concat_tables(pq.read_table(storage.abspath(p), columns=["merchant_id", "legal_country_iso"])
                             for p in storage.parquet_parts(partition))
    return (table.to_pandas().groupby(["merchant_id", "legal_country_iso"], sort=True).size()
            .rename("n_sites").reset_index())


def run(bench, scale_name, params, workdir):
    from cluster import ClusterOptions, open_client
    from jobs.generate import run_generate
    from jobs.s3 import run_s3
    from segment1b.contracts import path_for
    from segment1b.identity import RunIdentity
    from segment1b.storage import Storage

    countries = CountryTable.from_csv_text(COUNTRIES_CSV.read_text())
    storage = Storage(str(Path(workdir) / f"s3-{scale_name}"))
    with open_client(ClusterOptions(n_workers=2, threads_per_worker=1, dashboard_address=None)) as client:
        with bench.step("catalogue (generated once, then reused)"):
            g = run_generate(storage, client, countries, scale=scale_name, seed=SEED, show=False)
        identity = RunIdentity(SEED, g["manifest_fingerprint"], PARAMETER_HASH)
        out = path_for("s3_requirements", **identity.tokens)
        storage.remove(out)  # time a real run, not the write-once no-op

        with bench.step(BASELINE):
            expected = pandas_groupby(storage, g["catalogue"]["partition_path"])
        rows = g["summary"]["rows"]
        bench.note(BASELINE, rows=rows, rows_per_s=round(rows / bench.steps[BASELINE].wall_s))

        label = f"run_s3 {scale_name} (2 workers: gate, checks, write, publish)"
        with bench.step(label, baseline=BASELINE):
            report = run_s3(storage, client, identity, countries_with_weights=set(countries.iso), show=False)
        bench.note(label, rows=rows, pairs=report["pairs"], output_parts=report["output_parts"],
                   rows_per_s=round(rows / bench.steps[label].wall_s), **{f"{k}_s": v for k, v in
                                                                           report["timings_seconds"].items()})
        bench.note_workers(label, report["peak_worker_rss_bytes"])

    got = pa.concat_tables(storage.read_parquet(p) for p in storage.parquet_parts(out)).to_pandas()
    if not (got["merchant_id"].to_numpy() == expected["merchant_id"].to_numpy()).all() or \
            got["legal_country_iso"].astype(str).tolist() != expected["legal_country_iso"].astype(str).tolist() or \
            not (got["n_sites"].to_numpy() == expected["n_sites"].to_numpy()).all():
        raise AssertionError("s3_requirements differs from the pandas groupby: a bug in S3")
