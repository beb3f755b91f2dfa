import numpy as np
from hypothesis import given, settings, strategies as st

from jobs.units import plan_parts, plan_units


def pairs_strategy():
    return st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["AD", "DE", "FR", "US"]), st.integers(1, 300)),
                    min_size=1, max_size=200, unique_by=lambda t: (t[0], t[1]))


def arrays(pairs):
    pairs = sorted(pairs)
    return (np.array([p[0] * 2**58 for p in pairs], np.uint64), np.array([p[1] for p in pairs]),
            np.array([p[2] for p in pairs], np.int64))


@settings(max_examples=200, deadline=None)
@given(pairs_strategy(), st.integers(1, 2000))
def test_parts_cover_every_pair_once_and_cut_between_merchants(pairs, target):
    m, _, n = arrays(pairs)
    parts = plan_parts(m, n, target)
    assert sum(p.pairs for p in parts) == len(m) and sum(p.sites for p in parts) == int(n.sum())
    for a, b in zip(parts, parts[1:]):
        assert a.merchant_hi < b.merchant_lo
    for p in parts[:-1]:
        assert p.sites >= target  # only the last part may be short


@settings(max_examples=200, deadline=None)
@given(pairs_strategy(), st.integers(1, 2000), st.integers(1, 500), st.integers(1, 400))
def test_units_partition_the_pairs_and_respect_the_bound(pairs, target, max_unit, min_unit):
    m, iso, n = arrays(pairs)
    parts = plan_parts(m, n, target)
    units = plan_units(m, iso, n, parts, max_unit_sites=max_unit, min_unit_sites=min(min_unit, max_unit))
    seen = sorted((int(mm), u.country_iso) for u in units for mm in u.merchant_id)
    assert seen == sorted((int(a), str(b)) for a, b in zip(m, iso))
    costs = [u.cost for u in units]
    assert costs == sorted(costs, reverse=True)  # largest first
    for u in units:
        p = parts[u.part]
        assert p.merchant_lo <= int(u.merchant_id.min()) and int(u.merchant_id.max()) <= p.merchant_hi
        assert np.all(np.diff(u.merchant_id.astype(np.float64)) > 0)
        if u.pairs > 1:  # a unit above the bound is a single big pair
            assert u.sites - int(u.n_sites[-1]) < max_unit
    chunks = {}
    for u in units:
        chunks.setdefault(u.country_iso, []).append(u.chunk)
    assert all(sorted(c) == list(range(len(c))) for c in chunks.values())


def test_long_tail_country_is_split_and_small_ones_are_not():
    rng = np.random.default_rng(3)
    m = np.unique(rng.integers(0, 2**64, 3000, dtype=np.uint64))[:3000]
    assert len(m) == 3000
    iso = np.where(np.arange(3000) % 3 == 0, "US", np.array(["AD", "MC", "LI", "SM"])[np.arange(3000) % 4])
    n = np.where(iso == "US", 40, 1)
    units = plan_units(m, iso, n, plan_parts(m, n, 10**9), max_unit_sites=10_000, min_unit_sites=100)
    us = [u for u in units if u.country_iso == "US"]
    assert len(us) == 20  # 40 000 sites in units of 4 x the median (500)
    assert max(u.sites for u in units) <= 4 * 500 + 40
    assert {u.country_iso for u in units if u.chunk == 0} == {"US", "AD", "MC", "LI", "SM"}
