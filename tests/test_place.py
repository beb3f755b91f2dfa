"""S4 -> S5 -> S6 job on a synthetic world: contract properties, logs, determinism across workers and sizing."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import world
from reference import allocate_reference
from jobs.place import PlaceConfig, run_place
from segment1b import rng, rng_events
from segment1b.contracts import path_for, report_path
from segment1b.storage import Storage

PAIRS = world.random_pairs(300)


def read(storage, dataset_id, **tokens):
    parts = storage.parquet_parts(path_for(dataset_id, **tokens))
    return pa.concat_tables([pq.read_table(storage.abspath(p)) for p in parts])


def digests(storage, ident):
    return {ds: storage.partition_digest(path_for(ds, **ident.tokens))
            for ds in ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter")}


@pytest.fixture(scope="module")
def placed(tmp_path_factory, client):
    storage = Storage(str(tmp_path_factory.mktemp("place")))
    ident = world.build(storage, PAIRS)
    summary = run_place(storage, client, ident, world.GRID, world.countries_sha256(), through="s6",
                        config=PlaceConfig(part_sites=400, min_unit_sites=50), out=open("/dev/null", "w"))
    return storage, ident, summary


def test_s4_matches_the_reference_on_every_pair(placed):
    storage, ident, _ = placed
    plan = read(storage, "s4_alloc_plan", **ident.tokens).to_pandas()
    weights = read(storage, "tile_weights", parameter_hash=ident.parameter_hash).to_pandas()
    by_country = {c: g for c, g in weights.groupby("country_iso")}
    got = {k: dict(zip(g.tile_id, g.n_sites_tile)) for k, g in plan.groupby(["merchant_id", "legal_country_iso"])}
    assert len(got) == len(PAIRS)
    for m, iso, n in PAIRS:
        w = by_country[iso]
        assert got[(m, iso)] == allocate_reference(w.tile_id, w.weight_fp, n, 8)
    keys = list(zip(plan.merchant_id, plan.legal_country_iso, plan.tile_id))
    assert keys == sorted(keys)


def test_s5_fills_every_slot_and_matches_the_rng(placed):
    storage, ident, _ = placed
    s5 = read(storage, "s5_site_tile_assignment", **ident.tokens).to_pandas()
    plan = read(storage, "s4_alloc_plan", **ident.tokens).to_pandas()
    quota = plan.set_index(["merchant_id", "legal_country_iso", "tile_id"]).n_sites_tile
    got = s5.groupby(["merchant_id", "legal_country_iso", "tile_id"]).size()
    assert got.sort_index().equals(quota.sort_index().rename(None).astype(got.dtype))
    keys = list(zip(s5.merchant_id, s5.legal_country_iso, s5.site_order))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # recompute one pair by hand with the RNG and the S5 rule
    master = rng.master_material(ident.seed, ident.manifest_fingerprint)
    m, iso, n = max(PAIRS, key=lambda p: p[2])
    pair = s5[(s5.merchant_id == m) & (s5.legal_country_iso == iso)].sort_values("site_order")
    key, hi, lo = rng.s5_substreams(master, np.array([m], np.uint64), [iso], ident.parameter_hash)
    x0 = rng.block_at(key, hi, lo, np.arange(n, dtype=np.uint64))[0]
    u = rng.u01(x0)
    order = sorted(range(n), key=lambda i: (u[i], i + 1))
    slots = sorted(pair.tile_id.tolist())
    expect = [0] * n
    for k, i in enumerate(order):
        expect[i] = slots[k]
    assert pair.tile_id.tolist() == expect


def test_every_s6_point_is_inside_its_pixel_and_country(placed):
    storage, ident, summary = placed
    s6 = read(storage, "s6_site_jitter", **ident.tokens).to_pandas()
    s5 = read(storage, "s5_site_tile_assignment", **ident.tokens).to_pandas()
    assert (s6[["merchant_id", "legal_country_iso", "site_order", "tile_id"]].values == s5.values).all()
    assert (s6.manifest_fingerprint == ident.manifest_fingerprint).all()
    assert s6.delta_lat_deg.abs().max() <= 1 and s6.delta_lon_deg.abs().max() <= 1
    g = world.GRID
    lon, lat = g.absolute_point(s6.tile_id.to_numpy(np.uint64), s6.delta_lon_deg, s6.delta_lat_deg)
    assert g.contains_point(s6.tile_id.to_numpy(np.uint64), lon, lat).all()
    geoms = world.countries()
    for iso, idx in s6.groupby("legal_country_iso").indices.items():
        assert shapely.intersects_xy(geoms[iso], lon[idx], lat[idx]).all(), iso
    fj = s6.legal_country_iso == "FJ"
    assert (lon[fj.to_numpy()] > 179).any() and (lon[fj.to_numpy()] < -179).any()  # both sides of 180


def test_rng_logs_account_for_every_draw(placed):
    storage, ident, _ = placed
    n_sites = sum(p[2] for p in PAIRS)
    ev5_dir = path_for("rng_events", substream_label="site_tile_assign", **ident.log_tokens)
    assert all(f.endswith(".jsonl.zst") for f in storage.list_files(ev5_dir))  # the default form (contract §9)
    t5 = rng_events.read_events(world.event_lines(storage, ident, "site_tile_assign"), "site_tile_assign")
    assert t5.num_rows == n_sites
    t6 = rng_events.read_events(world.event_lines(storage, ident, "in_cell_jitter"), "in_cell_jitter")
    report = json.loads(storage.read_bytes(report_path("s6", **ident.tokens)))
    assert t6.num_rows == report["rng_events"] >= n_sites
    assert sum(report["attempt_histogram"].values()) == n_sites
    accepted = t6.filter(pa.compute.equal(t6["accepted"], True))
    assert accepted.num_rows == n_sites
    assert report["outside_country"] == t6.num_rows - n_sites  # MC and coastal cells reject some draws
    trace = [json.loads(line) for line in storage.read_bytes(path_for("rng_trace_log", **ident.log_tokens)).splitlines()]
    final = {}
    for row in trace:
        final[row["substream_label"]] = max(final.get(row["substream_label"], 0), row["events_total"])
    assert final == {"site_tile_assign": n_sites, "in_cell_jitter": t6.num_rows}
    audit = storage.read_bytes(path_for("rng_audit_log", **ident.log_tokens)).splitlines()
    assert len(audit) == 1 and json.loads(audit[0])["algorithm"] == "philox2x64-10"


def test_reports_name_countries_and_timings(placed):
    storage, ident, summary = placed
    for s in ("s4", "s5", "s6"):
        rep = json.loads(storage.read_bytes(report_path(s, **ident.tokens)))
        assert rep["rows"] == summary[s]["rows"] and rep["determinism_receipt"][0]["sha256_hex"]
        assert {c["country_iso"] for c in rep["countries"]} == {"DE", "FJ", "FR", "MC"}
        assert rep["parts"] > 1 and rep["units"] > 4


def test_bytes_do_not_depend_on_workers_or_sizing(placed, tmp_path, client1):
    storage, ident, _ = placed
    expected = digests(storage, ident)
    other = Storage(str(tmp_path / "other"))
    ident2 = world.build(other, PAIRS)
    run_place(other, client1, ident2, world.GRID, world.countries_sha256(), through="s6",
              config=PlaceConfig(part_sites=400, max_unit_sites=60, min_unit_sites=10), out=open("/dev/null", "w"))
    assert digests(other, ident2) == expected


def test_bytes_identical_with_four_workers(placed, tmp_path):
    """1 worker (above), 2 (the fixture) and 4 worker processes, with yet other unit sizes: same bytes."""
    from conftest import _local_client

    storage, ident, _ = placed
    cluster, client4 = _local_client(4)
    try:
        assert len(client4.scheduler_info()["workers"]) == 4
        other = Storage(str(tmp_path / "four"))
        ident4 = world.build(other, PAIRS)
        run_place(other, client4, ident4, world.GRID, world.countries_sha256(), through="s6",
                  config=PlaceConfig(part_sites=400, max_unit_sites=35, min_unit_sites=5), out=open("/dev/null", "w"))
    finally:
        client4.close()
        cluster.close()
    assert digests(other, ident4) == digests(storage, ident)


def test_rerun_is_a_noop(placed, client):
    storage, ident, _ = placed
    before = digests(storage, ident)
    summary = run_place(storage, client, ident, world.GRID, world.countries_sha256(), through="s6",
                        out=open("/dev/null", "w"))
    assert all(v.get("skipped") for v in summary.values()) and digests(storage, ident) == before


class _Died(BaseException):
    """The client died (a BaseException: no ``except Exception`` of the jobs handles it)."""


class _DiesAtFirstPublish(Storage):
    """A client that dies right before its first publish: every part is staged and has its record."""

    def publish(self, *args, **kwargs):
        raise _Died("killed before publishing")


def test_a_dead_attempts_parts_are_adopted_only_when_they_check_out(placed, tmp_path, client):
    """Issue 14: the next attempt adopts the dead attempt's finished parts file by file after checking size and
    SHA-256; a staged file changed after its record was written is not adopted, its part is computed again;
    the result has the bytes of an undisturbed run and no staging or progress folder is left."""
    import glob
    import io
    import os

    storage, ident, _ = placed
    root = str(tmp_path / "root")
    ident2 = world.build(Storage(root), PAIRS)
    config = PlaceConfig(part_sites=400, min_unit_sites=50)
    with pytest.raises(_Died):
        run_place(_DiesAtFirstPublish(root), client, ident2, world.GRID, world.countries_sha256(), through="s6",
                  config=config, out=io.StringIO())
    [dead] = glob.glob(os.path.join(root, f"control/run/*/*/*/place-progress-{ident2.run_id}-*"))
    n_parts = len(glob.glob(os.path.join(dead, "s6-part-*.json")))
    assert n_parts > 2 and len(os.listdir(dead)) == 3 * n_parts  # every part of S4, S5 and S6 recorded
    # one staged S5 part changes after its record was written (same size, other bytes)
    [part] = glob.glob(os.path.join(root, "data/layer1/1B/s5_site_tile_assignment/*/*/.*.staging-*/part-00001.parquet"))
    data = bytearray(open(part, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(part, "wb").write(bytes(data))
    out = io.StringIO()
    run_place(Storage(root), client, ident2, world.GRID, world.countries_sha256(), through="s6", config=config,
              out=out)
    assert f"s4-s6: {n_parts - 1} of {n_parts} parts finished by an earlier attempt are reused" in out.getvalue()
    s6 = Storage(root).read_json(report_path("s6", **ident2.tokens))
    assert s6["parts_reused_on_resume"] == n_parts - 1
    assert digests(Storage(root), ident2) == digests(storage, ident)
    left = [p for p in glob.glob(os.path.join(root, "**"), recursive=True) + glob.glob(os.path.join(root, "**/.*"),
                                                                                    recursive=True)
            if ".staging-" in p or "place-progress-" in p]
    assert left == []


@pytest.fixture(scope="module")
def placed_plain(tmp_path_factory, client):
    """The same world placed with plain ``.jsonl`` event parts (``--rng-logs plain``)."""
    storage = Storage(str(tmp_path_factory.mktemp("place_plain")))
    ident = world.build(storage, PAIRS)
    run_place(storage, client, ident, world.GRID, world.countries_sha256(), through="s6",
              config=PlaceConfig(part_sites=400, min_unit_sites=50, rng_logs="plain"), out=open("/dev/null", "w"))
    return storage, ident


def _without_ts(lines: bytes) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "ts_utc"} for line in lines.splitlines()]


def test_plain_and_zstd_logs_hold_the_same_events_and_the_same_datasets(placed, placed_plain):
    """Issue 17: the form changes the files, never the lines (but ts_utc and run_id) or a dataset byte."""
    (zs, zid, _), (ps, pid) = placed, placed_plain
    assert digests(zs, zid) == digests(ps, pid)
    for label, suffix in (("site_tile_assign", ".jsonl"), ("in_cell_jitter", ".jsonl")):
        names = ps.list_files(path_for("rng_events", substream_label=label, **pid.log_tokens))
        assert names and all(n.endswith(suffix) and not n.endswith(".zst") for n in names)
        zipped = zs.list_files(path_for("rng_events", substream_label=label, **zid.log_tokens))
        assert [n + ".zst" for n in names] == zipped
        plain, packed = world.event_lines(ps, pid, label), world.event_lines(zs, zid, label)
        drop_run = lambda events: [{k: v for k, v in e.items() if k != "run_id"} for e in events]  # noqa: E731
        assert drop_run(_without_ts(plain)) == drop_run(_without_ts(packed))
        size_plain = sum(ps.fs.size(ps.abspath(path_for("rng_events", substream_label=label, **pid.log_tokens) + n))
                         for n in names)
        size_zstd = sum(zs.fs.size(zs.abspath(path_for("rng_events", substream_label=label, **zid.log_tokens) + n))
                        for n in zipped)
        assert size_zstd * 4 < size_plain


@pytest.mark.parametrize("form", ["zstd", "plain"])
def test_logs_replay_event_for_event(placed, placed_plain, form):
    """Read every event back (either form) and recompute it with the RNG: S5 u at its counter and the
    S5 tile, S6 deltas at their counters and the accepted ones equal to s6_site_jitter."""
    storage, ident = placed[:2] if form == "zstd" else placed_plain
    master = rng.master_material(ident.seed, ident.manifest_fingerprint)
    t5 = rng_events.read_events(world.event_lines(storage, ident, rng.S5_LABEL), rng.S5_LABEL)
    s5 = read(storage, "s5_site_tile_assignment", **ident.tokens)
    for col in ("merchant_id", "legal_country_iso", "site_order", "tile_id"):
        assert t5[col].to_pylist() == s5[col].to_pylist()
    mid = t5["merchant_id"].to_numpy()
    iso = t5["legal_country_iso"].to_numpy(zero_copy_only=False)
    key, hi, lo = rng.s5_substreams(master, mid, iso, ident.parameter_hash)
    offset = t5["site_order"].to_numpy().astype(np.uint64) - np.uint64(1)
    bhi, blo = rng.counter_add(hi, lo, offset)
    assert (bhi == t5["rng_counter_before_hi"].to_numpy()).all() and (blo == t5["rng_counter_before_lo"].to_numpy()).all()
    x0, _ = rng.philox2x64_10(key, bhi, blo)
    assert (rng.u01(x0) == t5["u"].to_numpy()).all()
    t6 = rng_events.read_events(world.event_lines(storage, ident, rng.S6_LABEL), rng.S6_LABEL)
    so = t6["site_order"].to_numpy().astype(np.uint64)
    key, hi, lo = rng.s6_substreams(master, t6["merchant_id"].to_numpy(),
                                    t6["legal_country_iso"].to_numpy(zero_copy_only=False), so, ident.parameter_hash)
    bhi, blo = rng.counter_add(hi, lo, t6["attempt_index"].to_numpy().astype(np.uint64) - np.uint64(1))
    x0, x1 = rng.philox2x64_10(key, bhi, blo)
    dlon, dlat = world.GRID.jitter_deltas(t6["tile_id"].to_numpy(), rng.u01(x0), rng.u01(x1))
    assert (dlon == t6["delta_lon_deg"].to_numpy()).all() and (dlat == t6["delta_lat_deg"].to_numpy()).all()
    accepted = t6.filter(t6["accepted"])
    s6 = read(storage, "s6_site_jitter", **ident.tokens)
    for col in ("merchant_id", "site_order", "tile_id", "delta_lat_deg", "delta_lon_deg"):
        assert accepted[col].to_pylist() == s6[col].to_pylist()


class _RecordingClient:
    """What S4-S6 planning and submission ask of a client (two workers), recording tasks instead of running."""

    def __init__(self):
        self.tasks = []

    def run(self, fn):
        return {"a": (4 * 2**30, 1, 0.8), "b": (4 * 2**30, 1, 0.8)}

    def scheduler_info(self, **_):
        return {"workers": {"a": {}, "b": {}}}

    def map(self, fn, *iterables, key, priority, **kwargs):
        self.tasks += [(fn, args, k) for args, k in zip(zip(*iterables), key)]
        return list(key)


def _holds_array(obj) -> bool:
    """Whether a NumPy array is reachable from ``obj`` (through containers, dataclasses, instances)."""
    import gc
    import types

    seen, todo = set(), [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            return True
        todo.extend(gc.get_referents(o))
    return False


def test_the_plan_and_the_unit_tasks_hold_no_pair_and_each_unit_takes_its_pairs_from_its_part(tmp_path):
    """Issue 17: at x1000 the units' pair arrays were ~280 MB of task arguments, held by the client (and the
    in-process scheduler) until the end.  Now the plan holds descriptions; a unit task reads its part's pairs
    from s3_requirements (once per worker and part) and selects its own: every pair is placed once."""
    import io

    from jobs import place
    from jobs.place_tasks import place_unit
    from jobs.requirement_pairs import part_pairs
    from jobs.units import Segment

    assert _holds_array({"x": [Segment("FR", 1, 2, 2, 3, 2), np.zeros(1)]})  # the check sees arrays in there
    storage = Storage(str(tmp_path))
    ident = world.build(storage, PAIRS)
    states = place.STATES
    attempt = place.Attempt(states, {s: path_for(place.DATASET_OF[s], **ident.tokens) for s in states}, {},
                            list(states), {s: {"data": None, "events": None} for s in states}, "control/none/", 0)
    client = _RecordingClient()
    work = place._plan_work(storage, client, ident, attempt, PlaceConfig(part_sites=400, min_unit_sites=50),
                            io.StringIO())
    assert len(work.parts) > 2 and len(work.live_units) > len(work.parts) and not _holds_array(work)
    prefixes = {c: f"prefix-{c}" for u in work.live_units for c in u.countries}
    place._submit_units(storage, client, ident, world.GRID, world.countries_sha256(), "s6", work, prefixes, "tok",
                        {}, {})
    assert {fn for fn, _, _ in client.tasks} == {place_unit} and len(client.tasks) == len(work.live_units)
    placed = {}
    for fn, args, key in client.tasks:
        unit_prefixes, part, segments = args
        assert not _holds_array(args) and unit_prefixes == [f"prefix-{s.country_iso}" for s in segments]
        assert all(part.merchant_lo <= s.merchant_lo <= s.merchant_hi <= part.merchant_hi for s in segments)
        for seg in segments:
            merchant_id, n_sites = part_pairs(storage, part).select(seg)
            for m, n in zip(merchant_id.tolist(), n_sites.tolist()):
                assert (m, seg.country_iso) not in placed
                placed[(m, seg.country_iso)] = n
    assert placed == {(m, iso): n for m, iso, n in PAIRS}
