"""``segment1b report`` on the synthetic world: the HTML parses, is self-contained, and its numbers equal the
run reports, the S9 bundle and a recount of S5; ``run``'s hook never raises."""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import world
from jobs.cli import main as cli_main
from jobs.report import run_report
from jobs.validate import run_s9
from report_world import FP, validated_world
from segment1b.contracts import dataset, path_for, report_path
from segment1b.identity import RunIdentity
from segment1b.s8_egress import ENCODINGS
from segment1b.storage import Storage, write_parquet_bytes


class Tables(HTMLParser):
    """Tables by id: rows as dicts of the row's data-* attributes plus {data-col: data-value} of its cells;
    and the attributes of every element with an id."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self._table, self._row = {}, {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
            self._table.append(self._row)
        elif tag == "td" and self._row is not None and "data-col" in a:
            self._row[a["data-col"]] = a.get("data-value")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def run(tmp_path_factory, client):
    return validated_world(tmp_path_factory, client)


def parse(text):
    p = Tables()
    p.feed(text)
    return p


def test_report_numbers_equal_the_run_reports(run):
    storage, ident = run
    path, _ = run_report.write_report_html(storage, ident)
    folder = path_for("run_folder", **ident.tokens)
    assert path == storage.url(folder + "run_report.html")
    text = storage.read_bytes(folder + "run_report.html").decode("utf-8")
    # self-contained: no scripts, no stylesheets or images fetched from anywhere (namespaces are not fetches)
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    doc = parse(text)
    assert doc.ids["status"]["data-status"] == "PASS"
    assert "PASS: every S9 check passed" in text
    reports = {s: json.loads(storage.read_bytes(report_path(s, **ident.tokens))) for s in
               ("s1", "s2", "s4", "s5", "s6", "s7", "s8", "s9")}
    # per-state rows, seconds, peak RSS
    states = {r["state"]: r for r in doc.tables["states"] if "state" in r}
    assert set(states) == set(reports)  # no S0 or S3 reports in this world
    for s, rep in reports.items():
        assert int(states[s]["rows"]) == rep["rows"]
        assert float(states[s]["wall_seconds"]) == rep["wall_seconds"]
        # (the world's S1/S2 reports record no RSS: shown as "–")
        assert int(states[s]["peak_worker_rss_bytes"] or 0) == rep["peak_worker_rss_max_bytes"]
    # S6 attempt histogram and rejections
    hist = {r["attempts"]: int(r["sites"]) for r in doc.tables["attempt-histogram"] if "attempts" in r}
    assert hist == {k: v for k, v in reports["s6"]["attempt_histogram"].items()}
    totals = doc.ids["s6-totals"]
    assert int(totals["data-outside-country"]) == reports["s6"]["outside_country"]
    assert int(totals["data-rng-events"]) == reports["s6"]["rng_events"]
    per = {r["country_iso"]: r for r in reports["s6"]["per_country"]}
    shown = {r["country"]: r for r in doc.tables.get("s6-countries", []) if "country" in r}
    assert set(shown) == {c for c, r in per.items() if r["outside_pixel"] or r["outside_country"]}
    for c, r in shown.items():
        assert (int(r["outside_country"]), int(r["outside_pixel"]), int(r["rng_events"])) == (
            per[c]["outside_country"], per[c]["outside_pixel"], per[c]["rng_events"])
    # slowest countries: seconds per state from the S4-S6 reports
    slow = {r["country"]: r for r in doc.tables["slowest"] if "country" in r}
    assert set(slow) == {c["country_iso"] for c in reports["s6"]["countries"]}  # 4 countries < top 15
    for s in ("s4", "s5", "s6"):
        for c in reports[s]["countries"]:
            assert float(slow[c["country_iso"]][s]) == c["seconds"]


def test_report_concentration_equals_a_recount_of_s5(run):
    storage, ident = run
    _, data = run_report.write_report_html(storage, ident, include_map=False)
    doc = parse(run_report.render_run_report(data))
    rel = path_for("s5_site_tile_assignment", **ident.tokens)
    assert len(storage.parquet_parts(rel)) > 1  # counts are merged across parts
    s5 = pa.concat_tables([pq.read_table(storage.abspath(p)) for p in storage.parquet_parts(rel)]).to_pandas()
    rows = {r["country"]: r for r in doc.tables["concentration"] if "country" in r}
    assert set(rows) == set(s5.legal_country_iso)
    order = [r["country"] for r in doc.tables["concentration"] if "country" in r]
    ginis = [float(rows[c]["gini"]) for c in order]
    assert ginis == sorted(ginis, reverse=True)
    geoms = world.countries()
    for iso, g in s5.groupby("legal_country_iso"):
        counts = g.groupby("tile_id").size()
        r = rows[iso]
        n_tiles = len(world.tiles_of(geoms[iso]))
        assert int(r["sites"]) == len(g) and int(r["tiles_used"]) == len(counts)
        assert int(r["tiles_in_country"]) == n_tiles
        top = counts[counts == counts.max()].index.min()
        assert int(r["top_tile_id"]) == top and int(r["top_tile_sites"]) == counts.max()
        assert float(r["top_tile_share"]) == pytest.approx(counts.max() / len(g), rel=1e-15)
        k = min(len(g), n_tiles)
        x = np.concatenate([counts.to_numpy(float), np.zeros(k - len(counts))])
        expect = np.abs(x[:, None] - x[None, :]).sum() / (2 * k * x.sum())
        assert float(r["gini"]) == pytest.approx(expect, abs=1e-12)


def test_report_embeds_the_map_and_links_nothing_external(run):
    storage, ident = run
    run_report.write_report_html(storage, ident)
    text = storage.read_bytes(path_for("run_folder", **ident.tokens) + "run_report.html").decode("utf-8")
    img = parse(text).ids["map"]
    raw = base64.b64decode(img["src"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == run_report.REPORT_MAP_SIZE
    assert storage.exists(path_for("run_folder", **ident.tokens) + "map.png")
    assert text.count("<svg") == 3  # slowest countries, attempts, concentration (no run_summary here)


def test_report_shows_the_failing_checks(run, client, tmp_path):
    storage, ident = run
    dst = tmp_path / "copy"
    shutil.copytree(storage.root_url, dst)
    shutil.rmtree(dst / "data/layer1/1B/validation")
    copy = Storage(str(dst))
    part = copy.parquet_parts(path_for("site_locations", seed=ident.seed, manifest_fingerprint=FP))[0]
    table = pq.read_table(copy.abspath(part))
    with open(copy.abspath(part), "wb") as fh:  # drop one row
        fh.write(write_parquet_bytes(pa.concat_tables([table.slice(0, 3), table.slice(4)]),
                                     dataset("site_locations"), encodings=ENCODINGS))
    result = run_s9(copy, client, ident.seed, FP, out=io.StringIO())
    assert not result.passed
    run_report.write_report_html(copy, ident, include_map=False)
    text = copy.read_bytes(path_for("run_folder", **ident.tokens) + "run_report.html").decode("utf-8")
    doc = parse(text)
    assert doc.ids["status"]["data-status"] == "FAIL"
    assert f"FAIL: {', '.join(result.failed_codes)}" in text
    failing = {r["code"] for r in doc.tables["failing-checks"] if "code" in r}
    assert failing == set(result.failed_codes) and "E901_ROW_MISSING" in failing
    counts = {(f["code"]): f["count"] for f in result.findings}
    for r in doc.tables["failing-checks"]:
        if "code" in r:
            assert int(r["count"]) == counts[r["code"]]


def test_report_after_run_never_raises(tmp_path, monkeypatch):
    storage = Storage(str(tmp_path / "empty"))
    ident = RunIdentity(seed=1, manifest_fingerprint=FP, parameter_hash="cd" * 32)
    out = io.StringIO()
    # nothing in the data root: the report is still written and says what is missing
    assert run_report.report_after_run(storage, ident, out=out) is not None
    text = storage.read_bytes(path_for("run_folder", **ident.tokens) + "run_report.html").decode("utf-8")
    assert parse(text).ids["status"]["data-status"] == "not validated" and "No map: " in text

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_report, "collect_report", boom)
    out = io.StringIO()
    assert run_report.report_after_run(storage, ident, out=out) is None
    assert "run report not written: RuntimeError: disk on fire" in out.getvalue()


def test_report_after_run_prints_the_path(run):
    storage, ident = run
    out = io.StringIO()
    path = run_report.report_after_run(storage, ident, out=out)
    assert path.endswith("/run_report.html") and f"run report: {path}" in out.getvalue()


# ---------------------------------------------------------------------------------------------------------
# command line


def test_cli_report(run, tmp_path, capsys):
    storage, ident = run
    base = ["--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP]
    out = tmp_path / "elsewhere" / "report.html"
    argv = ["report", *base, "--parameter-hash", ident.parameter_hash, "--no-map", "--out", str(out)]
    assert cli_main(argv) == 0
    assert f"wrote {out} (PASS" in capsys.readouterr().out
    assert 'id="status"' in out.read_text() and "No map: not drawn" in out.read_text()
