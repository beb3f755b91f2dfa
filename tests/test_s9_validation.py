"""S9 pure checks (segment1b.s9) on literals: findings, events, logs, totals, receipts, plan, surfaces."""

from operator import itemgetter

import numpy as np
import pytest

from segment1b import rng, rng_events, s9
from segment1b.errors import IntegrityError

FP, PH, RUN = "ab" * 32, "3c" * 32, "0" * 31 + "1"
EXPECT = s9.Expect(42, FP, PH, RUN)
ENV = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": RUN, "seed": 42, "parameter_hash": PH,
       "manifest_fingerprint": FP}


def test_findings_merge_cap_examples_and_refuse_foreign_codes():
    f = s9.Findings()
    for part in range(30):
        f.add("sort", "E906_SORT", "rows out of order", 2, [{"part": part}])
    f.add("sort", "E906_SORT", "rows out of order", 0, [{"part": 99}])  # zero counts are not failures
    (item,) = f.to_list()
    assert item["count"] == 60 and len(item["examples"]) == s9.MAX_EXAMPLES
    assert s9.Findings(f.to_list()).to_list() == f.to_list()  # survives a trip through plain data
    with pytest.raises(ValueError, match="bug"):
        f.add("sort", "E903_DUP_KEY", "not a sort code")
    summary = {c["check"]: c for c in f.summary()}
    assert list(summary) == list(s9.CHECKS)
    assert summary["sort"]["status"] == "FAIL" and summary["schema"]["status"] == "PASS"


def s5_lines(n=3, **override):
    master = rng.master_material(42, FP)
    m = np.array([5] * n, np.uint64)
    key, hi, lo = rng.s5_substreams(master, m, ["FR"] * n, PH)
    so = np.arange(1, n + 1)
    x0, _, bhi, blo, ahi, alo = rng.block_at(key, hi, lo, so - 1)
    return rng_events.s5_events_jsonl({**ENV, **override}, m, ["FR"] * n, so, [7] * n, rng.u01(x0), bhi, blo,
                                      ahi, alo)


def test_parse_events_records_envelope_mismatches_with_line_numbers():
    data = s5_lines(3) + s5_lines(2, run_id="f" * 32)
    chunks = [data[:100], data[100:]]  # the job cuts at line ends; here a line is split to prove the
    with pytest.raises(ValueError):    # parser refuses partial lines instead of guessing
        s9.parse_events(chunks, rng.S5_LABEL, EXPECT)
    ev = s9.parse_events([data], rng.S5_LABEL, EXPECT)
    assert ev.lines == 5 and ev.draws == {"1": 5} and ev.run_ids == {RUN, "f" * 32}
    assert ev.mismatches["run_id"]["count"] == 2
    assert [e["event"] for e in ev.mismatches["run_id"]["examples"]] == [4, 5]
    with pytest.raises(ValueError):
        s9.parse_events([b'{"not": "an event"}\n'], rng.S5_LABEL, EXPECT)


def test_trace_totals_audit_and_receipts():
    env = dict(ENV)
    trace = rng_events.jsonl_lines([rng_events.trace_record(env, rng.S5_MODULE, rng.S5_LABEL, 2, 2, 2),
                                    rng_events.trace_record(env, rng.S5_MODULE, rng.S5_LABEL, 5, 5, 5)])
    f = s9.Findings()
    final = s9.check_trace(trace, {rng.S5_LABEL: {"events": 5, "draws": 5, "blocks": 5}}, EXPECT, f)
    assert not f and final[rng.S5_LABEL]["events_total"] == 5
    s9.check_trace(trace, {rng.S5_LABEL: {"events": 6, "draws": 5, "blocks": 5},
                           rng.S6_LABEL: {"events": 1, "draws": 2, "blocks": 1}}, EXPECT, f)
    assert f.codes() == ["E907_RNG_BUDGET"] and len(f.to_list()) == 2
    audit = rng_events.jsonl_lines([rng_events.audit_record(env, "abc")])
    for data, code in [(audit, None), (None, "E907_RNG_BUDGET"), (audit + audit, "E907_RNG_BUDGET"),
                       (audit.replace(PH.encode(), b"4d" * 32), "E912_IDENTITY_COHERENCE")]:
        f = s9.Findings()
        s9.check_audit(data, EXPECT, f)
        assert f.codes() == ([code] if code else [])
    f = s9.Findings()
    s9.check_receipts({"a": "1", "b": "2", "c": "3"},
                      {"a": {"sha256_hex": "1"}, "b": {"sha256_hex": "x"}, "c": None}, f)
    assert f.codes() == ["E911_FINALITY"] and sum(i["count"] for i in f.to_list()) == 2
    f = s9.Findings()
    s9.check_row_counts(9, 10, 11, f)
    assert f.codes() == ["E901_ROW_MISSING"]


# --- S4 plan: the validator's own reference and the per-part checks ---------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402
import pyarrow as pa  # noqa: E402

from segment1b.contracts import dataset  # noqa: E402
from reference import allocate_reference  # noqa: E402
from segment1b.s4_alloc_plan import allocate_pairs, weight_prefix  # noqa: E402


def _weights(raw, dp):
    K, total = 10**dp, sum(raw)
    z = [w * K // total for w in raw]
    for i in sorted(range(len(raw)), key=lambda i: (-(raw[i] * K % total), i))[:K - sum(z)]:
        z[i] += 1
    return z


def test_allocate_all_tiles_worked_example_and_errors():
    t, c = s9.allocate_all_tiles([11, 10], [300, 700], 5, dp=3)
    assert t.tolist() == [10, 11] and c.tolist() == [4, 1]  # the tie at 500 goes to the lower tile_id
    with pytest.raises(IntegrityError) as e:
        s9.allocate_all_tiles([1, 2], [10**18 - 1, 1], 19, dp=18)
    assert e.value.code == "E416_NUMERIC_OVERFLOW"
    with pytest.raises(IntegrityError) as e:  # weights summing to less than K cannot give n sites
        s9.allocate_all_tiles([1, 2], [100, 100], 20, dp=3)
    assert e.value.code == "E404_ALLOCATION_MISMATCH"
    with pytest.raises(IntegrityError) as e:  # nor can weights above K
        s9.allocate_all_tiles([1, 2], [900, 900], 3, dp=3)
    assert e.value.code == "E404_ALLOCATION_MISMATCH"
    assert [a.tolist() for a in s9.allocate_all_tiles([], [], 0, dp=3)] == [[], []]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=50).filter(lambda w: sum(w) > 0),
       st.integers(0, 300), st.integers(0, 6), st.randoms(use_true_random=False))
def test_allocate_all_tiles_equals_the_python_reference_and_the_production_kernel(raw, n, dp, rnd):
    w = _weights(raw, dp)
    tiles = sorted(rnd.sample(range(10**6), len(w)))
    t, c = s9.allocate_all_tiles(tiles, w, n, dp)
    assert dict(zip(t.tolist(), c.tolist())) == allocate_reference(tiles, w, n, dp)
    if n:
        prefix = weight_prefix("FR", np.array(tiles, np.uint64), np.array(w, np.uint64), dp, n)
        out = allocate_pairs(prefix, np.array([7], np.uint64), np.array([n], np.int64))
        assert out["tile_id"].tolist() == t.tolist() and out["n_sites_tile"].tolist() == c.tolist()


def _table(ds, rows):
    spec = dataset(ds).schema
    return pa.Table.from_pylist([dict(zip(spec.names, r)) for r in rows], schema=spec)


PLAN = [(1, "DE", 10, 2), (1, "DE", 12, 1), (1, "FR", 5, 1), (2, "DE", 10, 1)]
SITES = [(1, "DE", 1, 12), (1, "DE", 2, 10), (1, "DE", 3, 10), (1, "FR", 1, 5), (2, "DE", 1, 10)]
NEEDS = [(1, "DE", 3), (1, "FR", 1), (2, "DE", 1)]


def _plan_findings(plan=PLAN, sites=SITES, needs=NEEDS):
    f = s9.Findings()
    summary = s9.check_part_plan(3, _table("s4_alloc_plan", plan), _table("s5_site_tile_assignment", sites),
                                 _table("s3_requirements", needs), f)
    return f.to_list(), summary


def test_part_plan_passes_when_quotas_and_sums_agree():
    items, summary = _plan_findings()
    assert items == [] and summary == {"rows": 4, "pairs": 3, "sites": 5}


def test_part_plan_quota_sum_order_and_zero_rows():
    moved = [(1, "DE", 1, 12), (1, "DE", 2, 12), (1, "DE", 3, 10), (1, "FR", 1, 5), (2, "DE", 1, 10)]
    items, _ = _plan_findings(sites=moved)  # S5 put a site on tile 12 that the plan gives to tile 10
    assert {i["code"] for i in items} == {"E503_TILE_QUOTA_MISMATCH"}
    examples = [e for i in items for e in i["examples"]]
    assert {"part": 3, "merchant_id": 1, "legal_country_iso": "DE", "tile_id": 10} in examples
    assert {"part": 3, "merchant_id": 1, "legal_country_iso": "DE", "tile_id": 12, "site": 2} in examples

    items, _ = _plan_findings(needs=[(1, "DE", 4), (1, "FR", 1), (2, "DE", 1)])  # S3 says 4 sites
    (item,) = [i for i in items if i["code"] == "E404_ALLOCATION_MISMATCH" and "do not sum" in i["message"]]
    assert item["examples"] == [{"part": 3, "merchant_id": 1, "legal_country_iso": "DE", "n_sites": 4}]

    zero = [(1, "DE", 10, 2), (1, "DE", 11, 0), (1, "DE", 12, 1), (1, "FR", 5, 1), (2, "DE", 10, 1)]
    items, _ = _plan_findings(plan=zero)
    assert [i["examples"][0]["tile_id"] for i in items if "n_sites_tile < 1" in i["message"]] == [11]

    unsorted = [PLAN[1], PLAN[0], PLAN[2], PLAN[3]]
    items, _ = _plan_findings(plan=unsorted)
    assert {i["code"] for i in items} == {"E906_SORT"}
    items, _ = _plan_findings(plan=PLAN + [(2, "DE", 10, 1)])
    assert "E903_DUP_KEY" in {i["code"] for i in items}


def test_plan_recompute_names_the_differing_tiles():
    f = s9.Findings()
    tiles, weights = np.array([10, 11, 12], np.uint64), np.array([500, 300, 200], np.uint64)
    good = {"merchant_id": 1, "n_sites": 10, "tile_id": [10, 11, 12], "n_sites_tile": [5, 3, 2]}
    bad = {"merchant_id": 2, "n_sites": 10, "tile_id": [10, 11, 12], "n_sites_tile": [6, 2, 2]}
    summary = s9.check_plan_recompute("FR", tiles, weights, 3, [good, bad], f)
    assert summary == {"country_iso": "FR", "pairs": 2, "mismatched": 1, "tiles": 3, "plans": 1}  # same n
    (item,) = f.to_list()
    assert item["code"] == "E404_ALLOCATION_MISMATCH" and item["examples"] == [
        {"merchant_id": 2, "legal_country_iso": "FR", "n_sites": 10, "tile_id": 10, "n_sites_tile": 6, "expected": 5},
        {"merchant_id": 2, "legal_country_iso": "FR", "n_sites": 10, "tile_id": 11, "n_sites_tile": 2, "expected": 3}]


def test_plan_sample_rank_is_salted_and_deterministic():
    m = np.arange(1000, dtype=np.uint64)
    iso = np.full(1000, ord("D") << 8 | ord("E"), np.uint16)
    a = s9.plan_sample_rank(m, iso, s9.plan_sample_salt(42, FP))
    assert np.array_equal(a, s9.plan_sample_rank(m, iso, s9.plan_sample_salt(42, FP)))
    b = s9.plan_sample_rank(m, iso, s9.plan_sample_salt(43, FP))
    assert len(set(np.argsort(a)[:50]) & set(np.argsort(b)[:50])) < 20  # another run samples other pairs
    assert len(np.unique(a)) == 1000
    # roughly uniform: the 100 smallest ranks are spread over the merchants, not the first ones
    assert np.argsort(a)[:100].mean() > 300


def test_plan_sample_does_not_depend_on_how_s3_is_cut():
    rnd = np.random.default_rng(3)
    m = np.sort(rnd.choice(10**6, 500, replace=False)).astype(np.uint64)
    iso = np.full(500, ord("D") << 8 | ord("E"), np.uint16)
    n = rnd.integers(1, 50, 500)
    whole = s9.PlanSample(20, seed=42, manifest_fingerprint=FP)
    whole.add(m, iso, n)
    cut = s9.PlanSample(20, seed=42, manifest_fingerprint=FP)
    for a, b in ((0, 100), (100, 100), (100, 101), (101, 500)):
        cut.add(m[a:b], iso[a:b], n[a:b])
    assert whole.pairs() == cut.pairs() and len(whole.pairs()) in (20, 21)
    first_largest = int(np.argmax(n))
    assert (int(m[first_largest]), "DE", int(n[first_largest])) in whole.pairs()
    assert s9.PlanSample(0, seed=42, manifest_fingerprint=FP).pairs() == []


# --- tile surfaces: one tile set in tile_index, tile_bounds and tile_weights; weights sum to 10^dp ----------

TILES = [("DE", 10), ("DE", 12), ("FR", 5)]


def _surfaces(index=TILES, bounds=TILES, weights=(("DE", 10, 600), ("DE", 12, 400), ("FR", 5, 1000)), dp=3):
    return {"tile_index": None if index is None else
            _table("tile_index", [(c, t, "center", 0, 0, 0.0, 0.0, 1.0) for c, t in index]),
            "tile_bounds": None if bounds is None else
            _table("tile_bounds", [(c, t, 0.0, 1.0, 0.0, 1.0) for c, t in bounds]),
            "tile_weights": None if weights is None else
            _table("tile_weights", [(c, t, w, dp, False) for c, t, w in weights])}


def test_part_surfaces_pass_and_sum_weights_per_country():
    f = s9.Findings()
    summary = s9.check_part_surfaces(4, _surfaces(), f)
    assert f.to_list() == []
    assert summary == {"part": 4, "rows": {"tile_index": 3, "tile_bounds": 3, "tile_weights": 3},
                       "weights": {"DE": {"sum": 1000, "dp": [3], "tiles": 2},
                                   "FR": {"sum": 1000, "dp": [3], "tiles": 1}}}
    assert s9.check_weight_sums([summary["weights"]], 3, f) == {"countries": 2, "tiles": 3}
    assert f.to_list() == []


def _gone(iso, tile, surface):
    return {"part": 4, "country_iso": iso, "tile_id": tile, "missing_from": surface}


@pytest.mark.parametrize("change,expected", [
    ({"bounds": TILES[:1] + TILES[2:]}, [_gone("DE", 12, "tile_bounds")]),
    ({"index": TILES + [("FR", 6)]}, [_gone("FR", 6, "tile_bounds"), _gone("FR", 6, "tile_weights")]),
    ({"weights": [("DE", 10, 600), ("DE", 12, 400), ("FR", 7, 1000)]},
     [_gone("FR", 5, "tile_weights"), _gone("FR", 7, "tile_bounds"), _gone("FR", 7, "tile_index")]),
    ({"bounds": [("DE", 10), ("FR", 12), ("FR", 5)]},  # same tile ids, another country
     [_gone("DE", 12, "tile_bounds"), _gone("FR", 12, "tile_index"), _gone("FR", 12, "tile_weights")]),
    ({"weights": None}, [_gone(c, t, "tile_weights") for c, t in TILES]),
])
def test_part_surfaces_name_every_tile_missing_from_a_surface(change, expected):
    f = s9.Findings()
    s9.check_part_surfaces(4, _surfaces(**change), f)
    (item,) = f.to_list()
    assert item["code"] == "E102_FK_MISMATCH" and item["check"] == "surface_tiles"
    assert sorted(item["examples"], key=itemgetter("country_iso", "tile_id", "missing_from")) == expected


def test_weight_sums_across_parts_dp_and_overflow():
    part = {"DE": {"sum": 600, "dp": [3], "tiles": 1}}
    f = s9.Findings()
    s9.check_weight_sums([part, {"DE": {"sum": 400, "dp": [3], "tiles": 1}}], 3, f)  # one country, two parts
    assert f.to_list() == []
    f = s9.Findings()
    s9.check_weight_sums([part, {"DE": {"sum": 400 + 12345, "dp": [3], "tiles": 1}}], 3, f)
    (item,) = f.to_list()
    assert item["code"] == "E105_NORMALIZATION" and item["examples"] == [
        {"country_iso": "DE", "dp": 3, "weight_fp_sum": 13345, "expected": 1000}]
    f = s9.Findings()
    s9.check_weight_sums([part, {"DE": {"sum": 400, "dp": [4], "tiles": 1}}], 3, f)
    assert [e for i in f.to_list() for e in i["examples"]] == [{"country_iso": "DE", "dp_values": [3, 4]}]
    f = s9.Findings()
    s9.check_weight_sums([{"FR": {"sum": 10**4, "dp": [4], "tiles": 1}}], 3, f)
    assert [e for i in f.to_list() for e in i["examples"]] == [
        {"country_iso": "FR", "dp": 4, "expected_dp": 3}]
    # exact sums beyond 2^64 (uint64 arithmetic would wrap to 10^dp)
    f = s9.Findings()
    big = _surfaces(weights=[("DE", 10, 2**63), ("DE", 12, 2**63 + 1000), ("FR", 5, 1000)])
    summary = s9.check_part_surfaces(0, big, f)
    assert summary["weights"]["DE"]["sum"] == 2**64 + 1000
    s9.check_weight_sums([summary["weights"]], 3, f)
    assert f.codes() == ["E105_NORMALIZATION"]
