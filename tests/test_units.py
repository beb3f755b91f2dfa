import dataclasses
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from jobs import requirement_pairs
from jobs.parts import CatalogueIndex
from jobs.requirement_pairs import part_pairs, part_reads, read_pairs, read_pairs_range
from jobs.units import SMALL_LABEL, CountryPairs, Segment, plan_parts, plan_units
from reference import parts_reference, units_reference
from segment1b.contracts import dataset, path_for
from segment1b.keys import iso_strings, iso_u16
from segment1b.storage import Storage, part_name, write_parquet_bytes


def pairs_strategy():
    return st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["AD", "DE", "FR", "US"]), st.integers(1, 300)),
                    min_size=1, max_size=200, unique_by=lambda t: (t[0], t[1]))


def arrays(pairs):
    pairs = sorted(pairs)
    return (np.array([p[0] * 2**58 for p in pairs], np.uint64), np.array([p[1] for p in pairs]),
            np.array([p[2] for p in pairs], np.int64))


def expand(units, m, iso, n) -> list[tuple]:
    """Units as the reference plans them, each segment's pairs taken from the pairs by its description."""
    pairs = CountryPairs.of(m, iso, n)
    return [(u.label, u.part, u.chunk, tuple((s.country_iso, *(tuple(a.tolist()) for a in pairs.select(s)))
                                             for s in u.segments)) for u in units]


@settings(max_examples=200, deadline=None)
@given(pairs_strategy(), st.integers(1, 2000))
def test_parts_cover_every_pair_once_and_cut_between_merchants(pairs, target):
    m, _, n = arrays(pairs)
    parts = plan_parts(m, n, target)
    assert [(p.merchant_lo, p.merchant_hi, p.pairs, p.sites) for p in parts] == \
        parts_reference(sorted((int(a), b, int(c)) for a, b, c in zip(*arrays(pairs))), target)
    assert plan_parts(m, n.astype(np.uint16), target) == plan_parts(m, n.astype(np.int32), target) == parts
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
    pairs = CountryPairs.of(m, iso, n)
    seen = sorted((int(mm), seg.country_iso) for u in units for seg in u.segments for mm in pairs.select(seg)[0])
    assert seen == sorted((int(a), str(b)) for a, b in zip(m, iso))
    costs = [u.cost for u in units]
    assert costs == sorted(costs, reverse=True)  # largest first
    for u in units:
        p = parts[u.part]
        assert u.countries == tuple(sorted(set(u.countries)))  # one segment per country, ISO order
        assert (u.label == SMALL_LABEL) == (len(u.segments) > 1)
        for seg in u.segments:
            merchants, sites = pairs.select(seg)
            assert p.merchant_lo <= seg.merchant_lo == int(merchants[0]) <= int(merchants[-1]) == seg.merchant_hi \
                <= p.merchant_hi
            assert np.all(np.diff(merchants.astype(np.float64)) > 0)
            assert (seg.pairs, seg.sites, seg.max_n_sites) == (len(sites), int(sites.sum()), int(sites.max()))
        if u.pairs > 1:  # a unit above the bound is a single big pair
            assert u.sites - int(pairs.select(u.segments[-1])[1][-1]) < max_unit
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


# ---------------------------------------------------------------------------------------------------------
# issue 17: units describe their pairs; a part's task reads them from s3_requirements

def reference_of(m, iso, n, parts, **sizing):
    pairs = [(int(a), str(b), int(c)) for a, b, c in zip(m, iso, n)]
    return units_reference(pairs, [p.merchant_hi for p in parts], **sizing)


@settings(max_examples=200, deadline=None)
@given(pairs_strategy(), st.integers(1, 2000), st.integers(1, 500), st.integers(1, 400), st.integers(1, 8),
       st.integers(0, 4))
def test_units_are_the_pairs_the_planning_with_arrays_grouped(pairs, target, max_unit, min_unit, workers, named):
    m, iso, n = arrays(pairs)
    parts = plan_parts(m, n, target)
    sizing = dict(max_unit_sites=max_unit, min_unit_sites=min(min_unit, max_unit), workers=workers, named=named)
    units = plan_units(m, iso, n, parts, **sizing)
    assert expand(units, m, iso, n) == reference_of(m, iso, n, parts, **sizing)
    # the planning reader's narrower n_sites and uint16 countries plan the same units
    for narrow in (np.uint16, np.int32):
        assert plan_units(m, iso_u16(pa.array(iso)), n.astype(narrow), parts, **sizing) == units


@pytest.mark.parametrize("case", ["skewed", "tiny countries", "long tail"])
def test_units_of_the_fixtures_are_those_of_the_planning_with_arrays(case):
    if case == "skewed":
        m, iso, n, parts = skewed_run()
    else:
        m, iso, n = _tiny_countries_and_us()
        parts = plan_parts(m, n, 2000 if case == "tiny countries" else 10**9)
    sizing = dict(min_unit_sites=100, workers=2) if case != "long tail" else dict(min_unit_sites=100, workers=100)
    units = plan_units(m, iso, n, parts, **sizing)
    assert expand(units, m, iso, n) == reference_of(m, iso, n, parts, **sizing)


def test_units_hold_no_pair_arrays():
    """A unit is a small description whatever its size: at x1000 the per-pair arrays of the units were
    ~280 MB of task arguments, held by the client and the scheduler (issue 17)."""
    m, iso, n, parts = skewed_run(parts=4, part_sites=5000)
    units = plan_units(m, iso, n, parts, workers=2)
    for field in dataclasses.fields(Segment):
        assert field.type in ("str", "int"), field
    assert all(isinstance(getattr(s, f.name), (str, int)) for u in units for s in u.segments
               for f in dataclasses.fields(s))
    assert len(pickle.dumps(units)) < 200 * sum(len(u.segments) for u in units)


def publish_requirements(storage, m, iso, n, *, rows_per_file: int, row_group_rows: int) -> str:
    """An s3_requirements partition of several part files of small row groups (written as S3 writes it)."""
    from jobs.s3 import ENCODINGS

    rel = path_for("s3_requirements", seed=1, manifest_fingerprint="a" * 64, parameter_hash="b" * 64)
    table = pa.table({"merchant_id": pa.array(m, pa.uint64()), "legal_country_iso": pa.array(np.asarray(iso, str)),
                      "n_sites": pa.array(n, pa.int64())})
    staging = storage.staging_path(rel, "test")
    files = [storage.write_part(staging, part_name(i), write_parquet_bytes(
        table.slice(a, rows_per_file), dataset("s3_requirements"), row_group_rows=row_group_rows,
        encodings=ENCODINGS)) for i, a in enumerate(range(0, len(m), rows_per_file))]
    storage.publish(staging, rel, "s3_requirements", expected=files)
    return rel


def test_unit_tasks_take_their_pairs_from_their_parts_in_the_published_requirements(tmp_path, monkeypatch):
    """What `segment1b run` does: plan from the compact pairs, then a worker reads a part's row groups once
    for the part's units, which select their segments; the units hold what the planning with arrays
    grouped."""
    m, iso, n, parts = skewed_run(parts=6, part_sites=1000)
    n = n + (m % 3).astype(np.int64)  # pairs of 1-3 sites
    storage = Storage(str(tmp_path))
    rel = publish_requirements(storage, m, iso, n, rows_per_file=1700, row_group_rows=300)
    pairs = read_pairs(storage, rel)
    assert pairs.n_sites.dtype == np.uint16 and pairs.country.dtype == np.uint16
    assert pairs.merchant_id.tolist() == m.tolist() and pairs.n_sites.tolist() == n.tolist()
    assert iso_strings(pairs.country).to_pylist() == iso.tolist()
    parts = plan_parts(pairs.merchant_id, pairs.n_sites, 1000)
    units = plan_units(pairs.merchant_id, pairs.country, pairs.n_sites, parts, min_unit_sites=100, workers=2)
    reads = part_reads(storage, rel, parts)
    calls = []
    monkeypatch.setattr(requirement_pairs, "read_pairs_range", lambda *a: calls.append(a) or read_pairs_range(*a))
    got = []
    for p in parts:
        refs = reads[p.index].refs
        assert 1 <= len(refs) <= 2 and sum(len(r.row_groups) for r in refs) <= 5  # the part's row groups only
        for u in units:
            if u.part == p.index:
                read = part_pairs(storage, reads[p.index])
                got.append((u.label, u.part, u.chunk, tuple((s.country_iso, *(tuple(a.tolist()) for a in read.select(s)))
                                                            for s in u.segments)))
    assert len(calls) == len(parts) < len(units)  # one read per part, whatever its units
    want = reference_of(m, iso, n, parts, min_unit_sites=100, workers=2)
    assert sorted(got, key=lambda u: (u[0], u[2])) == sorted(want, key=lambda u: (u[0], u[2]))
    assert plan_parts(m, n, 1000) == parts and plan_units(m, iso, n, parts, min_unit_sites=100, workers=2) == units


@pytest.mark.parametrize("big, dtype", [(65_535, np.uint16), (65_536, np.int32), (2**31 - 1, np.int32),
                                        (2**31, np.int64), (2**33, np.int64)])
def test_n_sites_are_read_in_the_narrowest_width_that_holds_them(tmp_path, big, dtype):
    m = np.arange(1, 7, dtype=np.uint64)
    n = np.array([1, 2, 3, big, 5, 6], np.int64)
    storage = Storage(str(tmp_path))
    rel = publish_requirements(storage, m, np.array(["DE", "FR"] * 3), n, rows_per_file=4, row_group_rows=2)
    pairs = read_pairs(storage, rel)
    assert pairs.n_sites.dtype == dtype and pairs.n_sites.tolist() == n.tolist()
    parts = plan_parts(pairs.merchant_id, pairs.n_sites, 4)
    assert parts == plan_parts(m, n, 4) and [p.sites for p in parts] == [6, big, 5, 6]
    assert plan_units(m, pairs.country, pairs.n_sites, parts) == plan_units(m, np.array(["DE", "FR"] * 3), n, parts)


def test_a_wide_pair_is_read_whole_and_a_wrong_part_is_refused(tmp_path):
    m = np.arange(1, 7, dtype=np.uint64)
    iso = np.array(["DE", "FR"] * 3)
    n = np.array([1, 2, 3, 2**33, 5, 6], np.int64)
    storage = Storage(str(tmp_path))
    rel = publish_requirements(storage, m, iso, n, rows_per_file=4, row_group_rows=2)
    (unit,) = [u for u in plan_units(m, iso, n, plan_parts(m, n, 10**12), max_unit_sites=10**12, min_unit_sites=10**11)
               if "FR" in u.countries]
    index = CatalogueIndex(storage, rel, "s3_requirements")
    assert read_pairs_range(storage, index.refs(3, 4), 3, 4).merchant_id.tolist() == [3, 4]
    fr = unit.segments[unit.countries.index("FR")]
    assert fr.max_n_sites == 2**33
    assert CountryPairs.of(*read_pairs_range(storage, index.refs(1, 6), 1, 6)).select(fr)[1].tolist() == [2, 2**33, 6]
    with pytest.raises(ValueError, match="requirements differ"):
        CountryPairs.of(*read_pairs_range(storage, index.refs(1, 4), 1, 4)).select(fr)  # merchant 6 is not read


def test_a_worker_reads_a_part_again_when_its_files_changed(tmp_path, monkeypatch):
    m, iso, n = np.arange(1, 7, dtype=np.uint64), np.array(["DE", "FR"] * 3), np.arange(1, 7)
    storage = Storage(str(tmp_path))
    rel = publish_requirements(storage, m, iso, n, rows_per_file=6, row_group_rows=2)
    parts = plan_parts(m, n, 10)
    read = part_reads(storage, rel, parts)[0]
    calls = []
    monkeypatch.setattr(requirement_pairs, "read_pairs_range", lambda *a: calls.append(a) or read_pairs_range(*a))
    first = part_pairs(storage, read)
    assert part_pairs(storage, read) is first and len(calls) == 1
    # the part file written again (another run's requirements on this root): other stamps, read again
    path = storage.abspath(read.refs[0].path)
    data = open(path, "rb").read()
    os.remove(path)
    open(path, "wb").write(data)
    os.utime(path, ns=(1, 1))
    again = part_reads(storage, rel, parts)[0]
    assert again != read and part_pairs(storage, again) is not first and len(calls) == 2
