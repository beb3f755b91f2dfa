"""Map and HTML run report rendering (issue #10) vs a plain matplotlib scatter of every site.

Workload: a real run in ``<workdir>/<scale>`` (``reference`` ≈ 32 k sites, ``x100`` ≈ 3.2 M sites), made with
``jobs.pipeline.run_pipeline`` on a 2-worker LocalCluster when the data root has no passing run yet (the
same as ``segment1b run --data-root <workdir>/<scale> --seed 1 --scale <scale>``; not timed), then reused.

Steps (each in this process, no cluster):

1. baseline: read lon/lat of every site and draw them with one plain ``ax.scatter`` (no outlines) on an
   Agg canvas, saved as a 1600x800 PNG: the obvious way to "just plot the points";
2. ``render_map`` of the world (outlines, titles, and a density grid above 50 000 sites);
3. ``render_map`` zoomed on the country with most sites;
4. ``write_report_html``: every run report, the S9 bundle, S5 concentration, four charts and the world map.

Bar: x100 renders in ≤ 30 s (each of steps 2-4).

Run: ``python -m benchmarks.run pictures --scale x100 --workdir /work/bench-out``.
"""

from __future__ import annotations

import io
import json
import posixpath
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

SCALES = {"reference": {"scale": "reference", "seed": 1}, "x100": {"scale": "x100", "seed": 1}}
BASELINE = "baseline: plain matplotlib scatter of every site (1600x800 PNG)"
WORLD = "segment1b map: world"
REPORT = "segment1b report: HTML with charts and map"


def _find_run(storage, seed: int):
    """(fingerprint, parameter_hash) of a passing run of ``seed`` (its run_summary.json says so), or None."""
    from segment1b.contracts import path_for

    folder = path_for("run_folder", seed=seed, manifest_fingerprint="0" * 64, parameter_hash="0" * 64)
    seed_dir = Path(storage.abspath(posixpath.dirname(posixpath.dirname(folder.rstrip("/")))))
    for summary in sorted(seed_dir.glob("fingerprint=*/parameter_hash=*/run_summary.json")):
        if json.loads(summary.read_text()).get("passed"):
            return summary.parent.parent.name.split("=", 1)[1], summary.parent.name.split("=", 1)[1]
    return None


def _ensure_run(storage, scale: str, seed: int) -> tuple[str, str]:
    found = _find_run(storage, seed)
    if found:
        return found
    from cluster import ClusterOptions, open_client
    from jobs.pipeline import RunRequest, run_pipeline

    with open_client(ClusterOptions(n_workers=2, threads_per_worker=1, dashboard_address=None),
                     out=io.StringIO()) as client:
        summary = run_pipeline(storage, client, RunRequest(seed=seed, scale=scale), out=io.StringIO())
    if not summary.passed:
        raise AssertionError(f"the benchmark run did not pass: {summary.failure}")
    return summary.identity["manifest_fingerprint"], summary.identity["parameter_hash"]


def _baseline(storage, ident, path: str) -> int:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from segment1b.contracts import path_for

    rel = path_for("site_locations", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    lon, lat = [], []
    for part in storage.parquet_parts(rel):
        t = pq.read_table(storage.abspath(part), columns=["lon_deg", "lat_deg"])
        lon.append(t["lon_deg"].to_numpy())
        lat.append(t["lat_deg"].to_numpy())
    lon, lat = np.concatenate(lon), np.concatenate(lat)
    fig = Figure(figsize=(16, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(lon, lat, s=1, c="#d62728", linewidths=0)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-58, 86)
    fig.savefig(path, format="png")
    return len(lon)


def run(bench, scale_name, params, workdir):
    from jobs.report import map as report_map
    from jobs.report import run_report
    from jobs.report.run_files import resolve_identity
    from segment1b.contracts import report_path
    from segment1b.storage import Storage

    storage = Storage(str(Path(workdir) / scale_name))
    with bench.step(f"setup: segment1b run --scale {params['scale']} (skipped when the data root has one)"):
        fp, ph = _ensure_run(storage, params["scale"], params["seed"])
    ident = resolve_identity(storage, params["seed"], fp, ph)
    out = Path(workdir) / f"pictures-{scale_name}"
    out.mkdir(parents=True, exist_ok=True)

    with bench.step(BASELINE):
        n = _baseline(storage, ident, str(out / "baseline-scatter.png"))
    bench.note(BASELINE, sites=n)

    with bench.step(WORLD, baseline=BASELINE):
        res = report_map.render_map(storage, ident, out=str(out / "map.png"))
    bench.note(WORLD, sites=res.sites, mode=res.mode)

    s8 = json.loads(storage.read_bytes(report_path("s8", **ident.tokens)))
    biggest = max(s8["rows_by_country"].items(), key=lambda kv: (kv[1], kv[0]))[0]
    label = f"segment1b map --country {biggest}"
    with bench.step(label, baseline=BASELINE):
        res = report_map.render_map(storage, ident, country=biggest, out=str(out / f"map-{biggest}.png"))
    bench.note(label, sites=res.sites, sites_in_view=res.sites_in_view, mode=res.mode)

    with bench.step(REPORT, baseline=BASELINE):
        _, data = run_report.write_report_html(storage, ident, out=str(out / "run_report.html"))
    bench.note(REPORT, status=data["status"], countries=len(data["concentration"]),
               html_bytes=(out / "run_report.html").stat().st_size)
