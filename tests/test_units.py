import numpy as np
from hypothesis import given, settings, strategies as st

from jobs.units import SMALL_LABEL, plan_parts, plan_units


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
    seen = sorted((int(mm), seg.country_iso) for u in units for seg in u.segments for mm in seg.merchant_id)
    assert seen == sorted((int(a), str(b)) for a, b in zip(m, iso))
    costs = [u.cost for u in units]
    assert costs == sorted(costs, reverse=True)  # largest first
    for u in units:
        p = parts[u.part]
        assert u.countries == tuple(sorted(set(u.countries)))  # one segment per country, ISO order
        assert (u.label == SMALL_LABEL) == (len(u.segments) > 1)
        for seg in u.segments:
            assert p.merchant_lo <= int(seg.merchant_id.min()) and int(seg.merchant_id.max()) <= p.merchant_hi
            assert np.all(np.diff(seg.merchant_id.astype(np.float64)) > 0)
        if u.pairs > 1:  # a unit above the bound is a single big pair
            assert u.sites - int(u.segments[-1].n_sites[-1]) < max_unit
    chunks = {}
    for u in units:
        chunks.setdefault(u.label, []).append(u.chunk)
    assert all(sorted(c) == list(range(len(c))) for c in chunks.values())


def test_long_tail_country_is_split_and_small_ones_are_packed():
    rng = np.random.default_rng(3)
    m = np.unique(rng.integers(0, 2**64, 3000, dtype=np.uint64))[:3000]
    assert len(m) == 3000
    iso = np.where(np.arange(3000) % 3 == 0, "US", np.array(["AD", "MC", "LI", "SM"])[np.arange(3000) % 4])
    n = np.where(iso == "US", 40, 1)
    units = plan_units(m, iso, n, plan_parts(m, n, 10**9), max_unit_sites=10_000, min_unit_sites=100, workers=100)
    us = [u for u in units if u.label == "US"]
    assert len(us) == 20  # 40 000 sites in units of 4 x the median (500)
    assert max(u.sites for u in units) <= 4 * 500 + 40
    # four countries of 500 sites each (a quarter of the target or more) stay units of their own
    assert {u.label for u in units} == {"US", "AD", "MC", "LI", "SM"}


def _tiny_countries_and_us():
    """64 countries of 3 pairs of one site each, and US with 1000 pairs of 10 sites; merchant order."""
    countries = [a + b for a in "ABCDEFGH" for b in "ABCDEFGH"]
    m = np.arange(64 * 3 + 1000, dtype=np.uint64)
    iso = np.array(countries * 3 + ["US"] * 1000)
    order = np.lexsort((iso, m))
    m, iso = m[order], iso[order]
    n = np.where(iso == "US", 10, 1)
    return m, iso, n


def test_many_tiny_countries_become_a_few_packed_units():
    m, iso, n = _tiny_countries_and_us()
    units = plan_units(m, iso, n, plan_parts(m, n, 10**9), min_unit_sites=100, workers=100)
    small = [u for u in units if u.label == SMALL_LABEL]
    assert 1 <= len(small) <= 2 and sum(len(u.segments) for u in small) == 64
    assert all(u.sites <= 100 for u in small)


def test_big_runs_get_a_few_units_per_worker():
    # a long tail (US: 1 M sites) and 200 countries of 10 sites: units of all sites / (16 x workers)
    countries = [a + b for a in "ABCDEFGHIJ" for b in "ABCDEFGHIJKLMNOPQRST"]
    m = np.arange(100_200, dtype=np.uint64)
    iso = np.array(["US"] * 100_000 + countries)
    n = np.where(iso == "US", 10, 10)
    for workers in (1, 2, 8):
        units = plan_units(m, iso, n, plan_parts(m, n, 10**9), workers=workers)
        us = [u for u in units if u.label == "US"]
        assert 16 * workers <= len(us) <= 16 * workers + 1
        assert [u.label for u in units if u.label != "US"] == [SMALL_LABEL]  # the 200 small ones: one pack


def skewed_run(parts: int = 12, part_sites: int = 1000):
    """An x100-like skew: CN holds a quarter of the sites, US and IN 8 % and 6 %, 7 more countries 1-3 %,
    and 150 countries share the rest; merchants interleave countries, so every part holds some of each."""
    big = {"CN": 250, "US": 80, "IN": 60, "BR": 30, "DE": 25, "FR": 20, "JP": 15, "MX": 12, "GB": 11, "IT": 10}
    tail = [a + b for a in "KLNOPQRSTVWXYZ" for b in "ABCDEFGHIJK"][:150]
    per_part = [*(iso for iso, k in big.items() for _ in range(k)), *tail[: part_sites - sum(big.values())]]
    iso = np.array(per_part * parts)
    m = np.arange(len(iso), dtype=np.uint64)  # one pair per merchant, one site per pair
    n = np.ones(len(iso), np.int64)
    return m, iso, n, plan_parts(m, n, part_sites)


def test_the_biggest_countries_of_a_run_get_units_of_their_own_in_every_part():
    """Issue 15: at x100 only CN had `s6-jitter-CN-…` units; US and IN were inside `small` packs."""
    m, iso, n, parts = skewed_run()
    units = plan_units(m, iso, n, parts, workers=2)
    labels = {u.label for u in units}
    named = ["CN", "US", "IN", "BR", "DE", "FR", "JP", "MX", "GB", "IT"]  # the ten biggest, all above 1 %
    for country in named:
        assert sorted(u.part for u in units if u.label == country) == list(range(len(parts))), country
    assert not any(set(named) & set(u.countries) for u in units if u.label == SMALL_LABEL)
    # the 150 small ones stay packed: a few packs per part, never a unit each
    assert labels - set(named) == {SMALL_LABEL}
    assert len(units) <= len(parts) * (len(named) + 2)
    # without the rule the same plan hides all but CN inside packs (what issue 15 saw)
    old = plan_units(m, iso, n, parts, workers=2, named=0)
    assert {u.label for u in old} == {"CN", SMALL_LABEL}


def test_only_countries_with_a_share_of_the_run_are_named():
    m, iso, n = _tiny_countries_and_us()
    parts = plan_parts(m, n, 2000)
    assert len(parts) == 6
    units = plan_units(m, iso, n, parts, min_unit_sites=100_000, workers=1)
    # US (98 % of the sites) has its own unit in each part it is in; 3 sites of 10 192 are no long tail
    assert {u.label for u in units} == {"US", SMALL_LABEL}
    assert len({u.part for u in units if u.label == "US"}) == len(parts)
