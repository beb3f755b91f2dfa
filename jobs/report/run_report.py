"""``segment1b report``: the HTML run report, and what ``segment1b run`` calls to write it (issue #10).

``run_report.html`` is one self-contained file in the run folder (inline CSS, inline SVG charts drawn with
matplotlib, the world map of :mod:`jobs.report.map` as an embedded PNG, no scripts, nothing fetched):

* the run's identity, and PASS/FAIL with the failing checks (code, count, message, examples) of the S9
  bundle's ``s9_summary.json``;
* rows, wall and task-CPU seconds and peak worker RSS per state from the ``sN`` run reports, and the wall
  seconds of each step of ``segment1b run`` from ``run_summary.json``;
* the slowest countries of S4-S6 (task seconds per state, from the reports' ``countries``);
* the S6 attempt histogram and the rejected candidates per country (S6 report);
* the concentration of each country's sites over tiles (:mod:`segment1b.concentration`, counted from S5):
  top-tile share next to that tile's weight, and the Gini coefficient.

Every number is read from those files, eagerly and on the client (no cluster); numeric cells carry the raw
value in ``data-value``, so tests compare the page with the reports.  A missing piece (a run stopped
early) is shown as missing, never guessed, and :func:`report_after_run` never raises.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segment1b.concentration import concentration, tile_site_counts
from segment1b.contracts import iso_table, path_for
from segment1b.errors import InputError
from segment1b.identity import RunIdentity
from segment1b.storage import Storage

from .charts import BAR, PLACE_STATES, RED, chart_concentration, chart_histogram, chart_slowest, chart_steps
from .map import draw_map
from .run_files import (add_run_options, format_lat, format_lon, latest_audit, read_state_report, run_folder,
                        run_from_args, validation_status, write_output)

__all__ = ["REPORT_NAME", "collect_report", "register", "render_run_report", "report_after_run",
           "site_concentration", "write_report_html"]

REPORT_NAME = "run_report.html"
REPORT_MAP_SIZE = (1400, 700)
STATES = ("s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9")
SLOWEST = 15  # countries in the slowest-countries chart


# ---------------------------------------------------------------------------------------------------------
# data


def _tiles_per_country(storage: Storage, ident: RunIdentity) -> dict[str, int]:
    """Tiles of each country in tile_index: from the S1 run report, else counted from the dataset."""
    rep = read_state_report(storage, ident, "s1")
    if rep and rep.get("countries"):
        return {c["country_iso"]: int(c["rows"]) for c in rep["countries"]}
    rel = path_for("tile_index", parameter_hash=ident.parameter_hash)
    counts: dict[str, int] = {}
    for part in (storage.parquet_parts(rel) if storage.is_published(rel) else []):
        with storage.fs.open(storage.abspath(part), "rb") as fh:
            col = pq.read_table(fh, columns=["country_iso"], read_dictionary=["country_iso"])["country_iso"]
        for chunk in col.chunks:
            n = np.bincount(chunk.indices.to_numpy(zero_copy_only=False), minlength=len(chunk.dictionary))
            for name, k in zip(chunk.dictionary.to_pylist(), n.tolist()):
                if k:
                    counts[name] = counts.get(name, 0) + k
    return counts


def _tile_weights(storage: Storage, ident: RunIdentity, tile_ids) -> dict[int, float]:
    """weight_fp / 10^dp of some tiles (Parquet statistics skip the row groups that cannot hold them)."""
    import pyarrow.dataset as pads

    rel = path_for("tile_weights", parameter_hash=ident.parameter_hash)
    ids = sorted({int(t) for t in tile_ids})
    if not ids or not storage.is_published(rel):
        return {}
    # one dataset over the parts: footers are read in parallel, row groups skipped by their statistics
    parts = pads.dataset([storage.abspath(p) for p in storage.parquet_parts(rel)], format="parquet",
                         filesystem=storage.fs)
    t = parts.to_table(columns=["tile_id", "weight_fp", "dp"], filter=pads.field("tile_id").isin(ids))
    return {tid: w / 10**dp for tid, w, dp in zip(t["tile_id"].to_pylist(), t["weight_fp"].to_pylist(),
                                                  t["dp"].to_pylist())}


def site_concentration(storage: Storage, ident: RunIdentity):
    """Per-country concentration of sites over tiles, counted from S5 (pandas, most clumped first), or None.

    Reads ``legal_country_iso`` (dictionary-encoded) and ``tile_id`` part by part and merges the per-part
    counts, so memory follows the distinct (country, tile) pairs, not the sites.  Eager, on the client.
    """
    rel = path_for("s5_site_tile_assignment", **ident.tokens)
    parts = storage.parquet_parts(rel) if storage.is_published(rel) else []
    if not parts:
        return None
    counts = []
    for part in parts:
        with storage.fs.open(storage.abspath(part), "rb") as fh:
            t = pq.read_table(fh, columns=["legal_country_iso", "tile_id"],
                              read_dictionary=["legal_country_iso"])
        counts.append(tile_site_counts(t["legal_country_iso"], t["tile_id"]))
    merged = pa.concat_tables(counts)
    if len(counts) > 1:
        merged = tile_site_counts(merged["country_iso"], merged["tile_id"], merged["sites"])
    return concentration(merged, _tiles_per_country(storage, ident))


def _slowest(reports: dict[str, dict | None]) -> list[dict[str, Any]]:
    """Countries by task seconds summed over S4-S6, with the seconds of each state and the S6 sites."""
    per_state: dict[str, dict[str, float]] = {}
    sites: dict[str, int] = {}
    for s in PLACE_STATES:
        for c in (reports[s] or {}).get("countries", []):
            per_state.setdefault(c["country_iso"], {})[s] = float(c.get("seconds", 0.0))
            if s == "s6":
                sites[c["country_iso"]] = int(c.get("rows", 0))
    rows = [{"country_iso": c, "seconds": v, "total": sum(v.values()), "sites": sites.get(c)}
            for c, v in per_state.items()]
    return sorted(rows, key=lambda r: (-r["total"], r["country_iso"]))[:SLOWEST]


def _with_top_tiles(storage: Storage, ident: RunIdentity, conc):
    """Add the top tile's centre (from the grid) and its S2 weight to the concentration table."""
    from ..parameters import load_parameters

    top = conc["top_tile_id"].to_numpy().astype(np.uint64)
    try:
        lon, lat = load_parameters(storage, ident.parameter_hash).grid.centroid(top)
        conc = conc.assign(top_tile_lon=lon, top_tile_lat=lat)
    except InputError:  # no recorded parameters: no centres
        pass
    weights = _tile_weights(storage, ident, top)
    # the share the top tile would get if every site were drawn from the weights
    return conc.assign(top_tile_weight=[weights.get(int(t), np.nan) for t in top])


def collect_report(storage: Storage, ident: RunIdentity, *, include_map: bool = True) -> dict[str, Any]:
    """Everything the HTML report shows, as plain data read from the run's reports, bundle and datasets.

    Eager, on the client.  Missing pieces (a run stopped early, a data root without run receipt) are
    ``None``/empty, and the report says so instead of failing.
    """
    reports = {s: read_state_report(storage, ident, s) for s in STATES}
    folder = run_folder(ident)

    def optional_json(name: str) -> dict[str, Any] | None:
        return storage.read_json(folder + name) if storage.exists(folder + name) else None

    receipt, summary = optional_json("run_receipt.json"), optional_json("run_summary.json")
    status, s9_summary = validation_status(storage, ident)
    s9 = reports["s9"] or {}
    s6 = reports["s6"] or {}
    flag = (s9.get("determinism_receipt") or [{}])[0].get("sha256_hex") if status == "PASS" else None
    s6_keys = ("rows", "rng_events", "outside_pixel", "outside_country")
    totals = {k: s6.get(k) for k in s6_keys} if s6 else None
    states = [{"state": s, "dataset": rep.get("dataset"), "rows": rep.get("rows"),
               "wall_seconds": rep.get("wall_seconds"), "task_cpu_seconds": rep.get("task_cpu_seconds"),
               "workers": rep.get("workers"), "peak_worker_rss_bytes": rep.get("peak_worker_rss_max_bytes"),
               "started_utc": rep.get("started_utc")}
              for s, rep in reports.items() if rep is not None]
    conc = site_concentration(storage, ident)
    if conc is not None and len(conc):
        conc = _with_top_tiles(storage, ident, conc)
    map_png, map_info, map_error = None, None, None
    if include_map:
        try:
            map_png, map_info = draw_map(storage, ident, size=REPORT_MAP_SIZE)
        except Exception as exc:  # noqa: BLE001 - the report is still useful without its picture
            map_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {
        "identity": {"seed": ident.seed, "manifest_fingerprint": ident.manifest_fingerprint,
                     "parameter_hash": ident.parameter_hash, "run_id": ident.run_id or None,
                     "build_commit": (receipt or s9).get("build_commit"),
                     "created_utc": (receipt or {}).get("created_utc"),
                     "scale": ((receipt or {}).get("request") or {}).get("scale")},
        "status": status,
        "failed_codes": list(s9.get("failed_codes") or (s9_summary or {}).get("failed_codes") or []),
        "checks": (s9_summary or {}).get("checks", []),
        "bundle_path": s9.get("bundle_path"),
        "flag_sha256_hex": flag,
        "audit": latest_audit(storage, ident),
        "states": states,
        "steps": [r for r in (summary or {}).get("states", []) if "step" in r],
        "run_wall_seconds": (summary or {}).get("wall_seconds"),
        "slowest": _slowest(reports),
        "attempt_histogram": sorted((int(k), int(v)) for k, v in (s6.get("attempt_histogram") or {}).items()),
        "s6": totals,
        "s6_per_country": list(s6.get("per_country") or []),
        "concentration": conc,
        "map_png": map_png, "map_info": map_info, "map_error": map_error,
        "links": {name: name for name in ("performance_report.html", "run_summary.json", "run_receipt.json")
                  if storage.exists(folder + name)},
    }


# ---------------------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;
background:#f6f6f4}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:34px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 14px}.muted{color:#777}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.status{font-size:22px;font-weight:700;padding:10px 16px;border-radius:6px;display:inline-block;margin:8px 0}
.status.PASS{background:#e3f4e1;color:#1d6b1a}.status.FAIL{background:#fbe3e1;color:#a11a12}
.status.other{background:#eee;color:#555}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;margin:2px 0;max-width:640px}
.bar{display:inline-block;height:9px;background:#4c78a8;vertical-align:middle;margin-right:6px}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}
img.map{width:100%;height:auto;border:1px solid #ddd}
svg{max-width:100%;height:auto}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = "{:,}", col: str = "") -> str:
    """A numeric cell: formatted text, the raw value in data-value (for tests and copy-paste)."""
    attr = f' data-col="{col}"' if col else ""
    if value is None:
        return f'<td class="n"{attr} data-value="">–</td>'
    return f'<td class="n"{attr} data-value="{_e(value)}">{_e(fmt.format(value))}</td>'


def _bar_cell(value: float, col: str, colour: str) -> str:
    """A 0..1 value with a small inline bar."""
    return (f'<td class="n" data-col="{col}" data-value="{value!r}"><span class="bar" '
            f'style="width:{60 * value:.0f}px;background:{colour}"></span>{value:.3f}</td>')


def _table(table_id: str, headers: list[str], rows: list[str], scroll: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    text = f'<table id="{table_id}"><tr>{head}</tr>{"".join(rows)}</table>'
    return f'<div class="scroll">{text}</div>' if scroll else text


def _result_html(data: dict[str, Any]) -> str:
    status = data["status"]
    if status == "PASS":
        line = f"PASS: every S9 check passed; _passed.flag sha256_hex = {data['flag_sha256_hex']}"
    elif status == "FAIL":
        line = f"FAIL: {', '.join(data['failed_codes'])}"
    else:
        line = "NOT VALIDATED: S9 has not run for this run"
    cls = status if status in ("PASS", "FAIL") else "other"
    out = [f'<p id="status" class="status {cls}" data-status="{_e(status)}">{_e(line)}</p>']
    if data.get("bundle_path"):
        out.append(f'<p class="muted">bundle: <code>{_e(data["bundle_path"])}</code></p>')
    audit = data.get("audit")
    if audit:  # a later `segment1b validate` over the PASS; it never changes the run's status (issue 14)
        codes = f": {', '.join(audit.get('failed_codes') or [])}" if audit.get("status") == "FAIL" else ""
        out.append(f'<p id="audit" data-status="{_e(audit.get("status"))}">latest audit '
                   f'({_e(audit.get("finished_utc"))}, plan sample {_e(audit.get("plan_sample"))}): '
                   f'<b>{_e(audit.get("status"))}</b>{_e(codes)}; audit bundle '
                   f'<code>{_e(audit.get("audit_path"))}</code></p>')
    rows = []
    for check in data["checks"]:
        for f in check.get("failures", []) if check.get("status") == "FAIL" else []:
            examples = "".join(f"<pre>{_e(json.dumps(e, sort_keys=True)[:400])}</pre>"
                               for e in f.get("examples", [])[:3])
            rows.append(f'<tr data-code="{_e(f["code"])}"><td>{_e(check["check"])}</td>'
                        f'<td><code>{_e(f["code"])}</code></td>{_num(f.get("count"), col="count")}'
                        f'<td>{_e(f.get("message", ""))}</td><td>{examples}</td></tr>')
    if rows:
        out.append("<h3>Failing checks</h3>"
                   + _table("failing-checks", ["check", "code", "count", "message", "examples"], rows))
    if data["checks"]:
        cells = [f'<tr data-check="{_e(c["check"])}"><td>{_e(c["check"])}</td>'
                 f'<td data-col="status">{_e(c["status"])}</td>'
                 f'<td class="muted">{_e(c.get("verifies", ""))}</td></tr>' for c in data["checks"]]
        out.append(f'<details{" open" if rows else ""}><summary>All {len(cells)} checks</summary>'
                   + _table("checks", ["check", "status", "verifies"], cells) + "</details>")
    return "".join(out)


def _states_html(data: dict[str, Any]) -> str:
    if not data["states"]:
        return '<p class="muted">No state run reports found.</p>'
    rows = []
    for r in data["states"]:
        rss = r["peak_worker_rss_bytes"]
        rows.append(f'<tr data-state="{_e(r["state"])}"><td>{_e(r["state"].upper())}</td>'
                    f'<td><code>{_e(r["dataset"])}</code></td>'
                    + _num(r["rows"], col="rows") + _num(r["wall_seconds"], "{:,.3f}", "wall_seconds")
                    + _num(r["task_cpu_seconds"], "{:,.3f}", "task_cpu_seconds")
                    + _num(r["workers"], col="workers")
                    + (f'<td class="n" data-col="peak_worker_rss_bytes" data-value="{rss}">'
                       f"{rss / 2**20:,.0f} MiB</td>" if rss else _num(None, col="peak_worker_rss_bytes"))
                    + "</tr>")
    jobs: dict[tuple, list[str]] = {}
    for r in data["states"]:
        jobs.setdefault((r["started_utc"], r["wall_seconds"]), []).append(r["state"].upper())
    notes = [f"{', '.join(v)} ran as one job; each reports that job's wall time."
             for v in jobs.values() if len(v) > 1]
    notes.append("S1/S2 belong to the parameter_hash and are shared by every run that uses it.")
    headers = ["state", "dataset", "rows", "wall s", "task CPU s", "workers", "peak worker RSS"]
    out = (_table("states", headers, rows)
           + "".join(f'<p class="muted">{_e(n)}</p>' for n in notes))
    if data["steps"]:
        out += "<h3>Steps of <code>segment1b run</code></h3>" + chart_steps(data["steps"])
    if data["run_wall_seconds"] is not None:
        out += (f'<p class="muted">whole run: <span id="run-wall" data-value="{data["run_wall_seconds"]}">'
                f'{data["run_wall_seconds"]:,.1f} s</span></p>')
    return out


def _slowest_html(data: dict[str, Any]) -> str:
    if not data["slowest"]:
        return '<p class="muted">No S4-S6 run reports found.</p>'
    names = iso_table()
    rows = [(f'<tr data-country="{_e(r["country_iso"])}"><td>{_e(r["country_iso"])}</td>'
             f'<td>{_e(names.get(r["country_iso"], ""))}</td>') + _num(r["sites"], col="sites")
            + "".join(_num(r["seconds"].get(s), "{:.4f}", s) for s in PLACE_STATES)
            + _num(round(r["total"], 4), "{:.4f}", "total") + "</tr>" for r in data["slowest"]]
    return (chart_slowest(data["slowest"])
            + _table("slowest", ["country", "", "sites", "S4 s", "S5 s", "S6 s", "total s"], rows))


def _s6_html(data: dict[str, Any]) -> str:
    s6 = data["s6"]
    if not s6:
        return '<p class="muted">No S6 run report found.</p>'
    totals = (f'<p id="s6-totals" data-sites="{s6["rows"]}" data-rng-events="{s6["rng_events"]}" '
              f'data-outside-pixel="{s6["outside_pixel"]}" data-outside-country="{s6["outside_country"]}">'
              f'{s6["rows"]:,} sites took {s6["rng_events"]:,} attempts: {s6["outside_country"]:,} '
              f'candidates fell outside their country and {s6["outside_pixel"]:,} outside their pixel, and '
              "were drawn again.</p>")
    out = [totals]
    if data["attempt_histogram"]:
        rows = [f'<tr data-attempts="{a}"><td class="n">{a}</td>{_num(n, col="sites")}</tr>'
                for a, n in data["attempt_histogram"]]
        out.append(chart_histogram(data["attempt_histogram"])
                   + _table("attempt-histogram", ["attempts", "sites"], rows, scroll=len(rows) > 16))
    per = data["s6_per_country"]
    rejected = sorted((r for r in per if r.get("outside_pixel") or r.get("outside_country")),
                      key=lambda r: (-(r["outside_pixel"] + r["outside_country"]), r["country_iso"]))
    out.append(f'<h3>Rejected attempts by country</h3><p class="muted">{len(rejected)} countries had '
               f"rejected candidates; {len(per) - len(rejected)} had none.</p>")
    if rejected:
        rows = [f'<tr data-country="{_e(r["country_iso"])}"><td>{_e(r["country_iso"])}</td>'
                + _num(r["sites"], col="sites") + _num(r["rng_events"], col="rng_events")
                + _num(r["outside_pixel"], col="outside_pixel")
                + _num(r["outside_country"], col="outside_country")
                + _num(r["rng_events"] / max(r["sites"], 1), "{:.3f}", "attempts_per_site") + "</tr>"
                for r in rejected]
        headers = ["country", "sites", "RNG events", "outside pixel", "outside country", "attempts per site"]
        out.append(_table("s6-countries", headers, rows, scroll=True))
    return "".join(out)


CONCENTRATION_NOTE = (
    "<b>Top-tile share</b>: the fraction of the country's sites in its busiest tile; <b>top tile weight</b>: "
    "that tile's S2 weight, the share it would get if every site were drawn from the weights. <b>Gini</b>: "
    "the Gini coefficient of the sites per tile over min(sites, tiles in the country) tiles, tiles without "
    "sites counting as zeros: 0 when the sites are as spread as they can be (one per tile), close to 1 when "
    "they sit in one tile (segment1b/concentration.py). Sorted most clumped first.")


def _concentration_html(data: dict[str, Any]) -> str:
    conc = data["concentration"]
    if conc is None or not len(conc):
        return '<p class="muted">S5 is not published for this run.</p>'
    names = iso_table()
    has_xy, has_w = "top_tile_lon" in conc.columns, "top_tile_weight" in conc.columns
    rows = []
    for r in conc.itertuples(index=False):
        centre = (f"{format_lat(round(r.top_tile_lat, 2))} {format_lon(round(r.top_tile_lon, 2))}"
                  if has_xy else "")
        tiles = int(r.tiles_in_country) if r.tiles_in_country >= 0 else None
        weight = r.top_tile_weight if has_w and np.isfinite(r.top_tile_weight) else None
        rows.append(f'<tr data-country="{_e(r.country_iso)}"><td>{_e(r.country_iso)}</td>'
                    f'<td>{_e(names.get(r.country_iso, ""))}</td>'
                    + _num(int(r.sites), col="sites") + _num(int(r.tiles_used), col="tiles_used")
                    + _num(tiles, col="tiles_in_country")
                    + _num(int(r.top_tile_id), "{}", "top_tile_id") + f"<td>{_e(centre)}</td>"
                    + _num(int(r.top_tile_sites), col="top_tile_sites")
                    + _bar_cell(float(r.top_tile_share), "top_tile_share", BAR)
                    + _num(weight, "{:.4f}", "top_tile_weight") + _bar_cell(float(r.gini), "gini", RED)
                    + "</tr>")
    headers = ["country", "", "sites", "tiles used", "tiles in country", "top tile", "top tile centre",
               "sites in top tile", "top-tile share", "top tile weight", "Gini"]
    return (chart_concentration(conc) + f'<p class="muted">{CONCENTRATION_NOTE}</p>'
            + _table("concentration", headers, rows, scroll=True))


def _map_html(data: dict[str, Any]) -> str:
    if data["map_png"] is None:
        return f'<p class="muted">No map: {_e(data.get("map_error") or "not drawn")}</p>'
    info = data["map_info"]
    b64 = base64.b64encode(data["map_png"]).decode("ascii")
    return (f'<img class="map" id="map" alt="map of {info.sites:,} sites" width="{info.width}" '
            f'height="{info.height}" src="data:image/png;base64,{b64}">'
            '<p class="muted">Zoom on one country: <code>segment1b map --country FR</code> with the same '
            "--data-root, --seed and --fingerprint.</p>")


def _identity_html(data: dict[str, Any]) -> str:
    rows = [f'<tr><th>{_e(k)}</th><td data-col="{_e(k)}"><code>{_e(v if v is not None else "–")}</code>'
            "</td></tr>" for k, v in data["identity"].items()]
    return f'<table id="identity">{"".join(rows)}</table>'


def render_run_report(data: dict[str, Any]) -> str:
    """The HTML text of the run report for :func:`collect_report` data (pure: no I/O)."""
    ident = data["identity"]
    links = " · ".join(f'<a href="{_e(v)}">{_e(k)}</a>' for k, v in data["links"].items())
    sections = [
        ("result", "Result", _result_html(data)),
        ("map", "Where the sites landed", _map_html(data)),
        ("timings", "Rows, time and memory per state", _states_html(data)),
        ("slowest-countries", f"Slowest countries (S4-S6, top {SLOWEST})", _slowest_html(data)),
        ("attempts", "S6 jitter attempts", _s6_html(data)),
        ("clumping", "Concentration of sites over tiles (S5)", _concentration_html(data)),
        ("run", "Identity", _identity_html(data)),
    ]
    body = "".join(f'<section id="sec-{sid}"><h2>{_e(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Segment 1B run report: seed {_e(ident['seed'])} ({_e(data['status'])})</title>"
            f"<style>{CSS}</style></head><body><main>"
            f"<h1>Segment 1B run report</h1><p class=\"sub\">seed {_e(ident['seed'])} · fingerprint "
            f"<code>{_e(ident['manifest_fingerprint'][:16])}…</code> · parameter_hash "
            f"<code>{_e(ident['parameter_hash'][:16])}…</code>" + (f" · {links}" if links else "") + "</p>"
            + body + "</main></body></html>\n")


def write_report_html(storage: Storage, ident: RunIdentity, *, out: str | None = None,
                      include_map: bool = True) -> tuple[str, dict[str, Any]]:
    """Collect, render and write ``run_report.html`` (default: in the run folder, next to ``map.png``).

    Eager, on the client.  Returns (where it was written, the collected data).

    Examples
    --------
    >>> write_report_html(Storage("/data/root"), ident)[0]  # doctest: +SKIP
    '/data/root/control/run/seed=42/.../run_report.html'
    """
    data = collect_report(storage, ident, include_map=include_map)
    text = render_run_report(data).encode("utf-8")
    if data["map_png"] is not None and out is None:
        write_output(storage, ident, data["map_png"], None, "map.png")
    return write_output(storage, ident, text, out, REPORT_NAME), data


def report_after_run(storage: Storage, ident: RunIdentity, out=None) -> str | None:
    """Write the run report after ``segment1b run`` and print its path; never raises (issue #10).

    A failure is printed as one line and the run's own result stands; returns the path or None.
    """
    out = out if out is not None else sys.stdout
    t0 = time.perf_counter()
    try:
        path, _ = write_report_html(storage, ident)
    except Exception as exc:  # noqa: BLE001 - a picture must never hide the run's outcome
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"  run report not written: {type(exc).__name__}: {first}", file=out, flush=True)
        return None
    print(f"  run report: {path} ({time.perf_counter() - t0:.1f} s)", file=out, flush=True)
    return path


# ---------------------------------------------------------------------------------------------------------
# command line


def register(sub) -> None:
    """``segment1b report --data-root D --seed N --fingerprint F [--parameter-hash H]`` (no cluster)."""
    p = sub.add_parser("report", help="write the HTML run report (PASS/FAIL, timings, slow countries, S6 "
                       "attempts, clumping of sites, map)",
                       description="Write run_report.html (one self-contained file) and map.png into the run "
                       "folder, from the run reports, the S9 bundle and the datasets of one run.")
    add_run_options(p)
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the HTML here instead of the run folder")
    p.add_argument("--no-map", action="store_true", help="leave the map out (faster)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    storage, ident = run_from_args(args)
    t0 = time.perf_counter()
    path, data = write_report_html(storage, ident, out=args.out, include_map=not args.no_map)
    print(f"wrote {path} ({data['status']}, {time.perf_counter() - t0:.1f} s)", file=out)
    return 0
