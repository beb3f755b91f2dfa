"""S2 tile weights kernels: exact largest remainder, checks, masses (no cluster)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geo_fixtures as gf
from reference import area_total, fk_mismatches, proxy_masses
from segment1b import s1_tile_index as s1
from segment1b import s2_tile_weights as s2
from segment1b.contracts import dataset
from segment1b.errors import InputError, IntegrityError
from segment1b.grid import Grid
from segment1b.storage import check_schema


def reference(masses, dp):
    """Contract §4 with Fractions: floor, then +1 by (remainder desc, index asc)."""
    K = 10**dp
    M = sum(Fraction(m) for m in masses)
    q = [Fraction(m) * K / M for m in masses]
    z = [int(x // 1) for x in q]
    order = sorted(range(len(masses)), key=lambda i: (-(q[i] - z[i]), i))
    for i in order[: K - sum(z)]:
        z[i] += 1
    return z


# -- exact largest remainder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "masses, dp, expected",
    [
        ([1.0, 1.0, 1.0], 1, [4, 3, 3]),  # ties go to the lower tile_id
        ([2.0, 3.0, 2.0, 1.0], 2, [25, 38, 25, 12]),  # equal remainders of different masses: tile_id decides
        ([0.7, 0.3], 0, [1, 0]),
        ([0.1, 0.2, 0.7], 1, [1, 2, 7]),  # 0.1 + 0.2 != 0.3 in float, exact here
        ([5.0, 0.0, 5.0], 3, [500, 0, 500]),
        ([1e-300, 1e300], 18, [0, 10**18]),
        ([1e-310, 3e-310], 2, [25, 75]),  # subnormals
        ([0.0, 1e-300], 12, [0, 10**12]),  # K / M would overflow without scaling
    ],
)
def test_known_answers(masses, dp, expected):
    w = s2.largest_remainder(np.array(masses), dp)
    assert w.tolist() == expected == reference(masses, dp)


finite_masses = st.lists(
    st.one_of(
        st.floats(0, 1e6, allow_nan=False),
        st.sampled_from([0.0, 1.0, 1 / 3, 2 / 3]),
        st.floats(1e-300, 1e300, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=30,
).filter(lambda m: sum(m) > 0)


@settings(max_examples=300, deadline=None)
@given(finite_masses, st.sampled_from([0, 1, 3, 8, 12, 18]))
def test_matches_fraction_reference(masses, dp):
    w = s2.largest_remainder(np.array(masses, dtype=np.float64), dp)
    assert w.tolist() == reference(masses, dp)
    assert int(w.sum()) == 10**dp


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e300, allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_exact_total(masses):
    num, e = s2.exact_total(np.array(masses))
    assert Fraction(num) * Fraction(2) ** e == sum(Fraction(m) for m in masses)


def test_large_uniform_country_is_fast_and_ties_break_by_tile_id():
    n = 3_000_000
    w = s2.largest_remainder(np.ones(n), 8)
    assert int(w.sum()) == 10**8
    assert w[: 10**8 % n].min() == 10**8 // n + 1 and w[10**8 % n :].max() == 10**8 // n


def test_large_row_constant_masses_match_exact_reference_on_the_cut_off():
    # area-like masses (constant per row): many exact ties straddle the cut-off
    rng = np.random.default_rng(3)
    row_mass = rng.random(40) * 1e6
    masses = np.repeat(row_mass, 5000)
    w = s2.largest_remainder(masses, 8)
    K = 10**8
    M = sum(Fraction(m) * 5000 for m in row_mass.tolist())
    per_row = [(Fraction(m) * K / M) for m in row_mass.tolist()]
    floors = np.repeat([int(q // 1) for q in per_row], 5000)
    assert int(w.sum()) == K
    assert np.all((w.astype(np.int64) - floors >= 0) & (w.astype(np.int64) - floors <= 1))
    # inside each row the bonus goes to the lowest tile ids
    bonus = (w.astype(np.int64) - floors).reshape(40, 5000)
    assert all(np.all(np.diff(b) <= 0) for b in bonus)


# -- country_weights and its checks -----------------------------------------------------------------


def test_zero_mass_falls_back_to_uniform():
    w, fallback, total = s2.country_weights(np.zeros(4), np.arange(4, dtype=np.uint64), 2, "AD")
    assert fallback and w.tolist() == [25, 25, 25, 25] and total == (4, 0)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_bad_mass_is_E105_naming_the_tile(bad):
    masses = np.array([1.0, bad, 2.0])
    with pytest.raises(InputError) as exc:
        s2.country_weights(masses, np.array([10, 11, 12], np.uint64), 8, "AD")
    assert exc.value.code == "E105_NORMALIZATION"
    assert "tile_id=11" in str(exc.value) and "AD" in str(exc.value)


def test_monotonicity_violation_is_E106():
    masses = np.array([2.0, 1.0, 0.5])
    with pytest.raises(IntegrityError) as exc:
        s2.check_monotone(masses, np.array([3, 2, 5], np.uint64), np.array([7, 8, 9], np.uint64), "AD")
    assert exc.value.code == "E106_MONOTONICITY"
    assert "tile_id=7" in str(exc.value) and "tile_id=9" in str(exc.value)
    s2.check_monotone(masses, np.array([5, 3, 2], np.uint64), np.arange(3), "AD")  # fine
    s2.check_monotone(np.array([1.0, 1.0]), np.array([2, 1], np.uint64), np.arange(2), "AD")  # ties fine
    # weights above 2**16 go through the sort branch
    s2.check_monotone(np.array([1.0, 3.0, 2.0]), np.array([1, 70000, 66000], np.uint64), np.arange(3), "AD")
    with pytest.raises(IntegrityError):
        s2.check_monotone(
            np.array([1.0, 3.0, 2.0]), np.array([1, 66000, 70000], np.uint64), np.arange(3), "AD"
        )


def test_weights_table_schema():
    t = s2.weights_table("AD", np.array([1, 5], np.uint64), np.array([60, 40], np.uint64), 2, False)
    check_schema(t, dataset("tile_weights"))
    assert t.column("dp").to_pylist() == [2, 2]


def test_fk_mismatches_name_both_sides():
    rows = fk_mismatches(np.array([1, 2, 3], np.uint64), np.array([2, 3, 4], np.uint64), "AD")
    assert {(r["tile_id"], r["missing_from"]) for r in rows} == {(1, "tile_weights"), (4, "tile_index")}


# -- masses ------------------------------------------------------------------------------------------


def test_raster_masses_read_windows_and_zero_nodata():
    rows = np.array([2, 2, 3], np.uint32)
    cols = np.array([1, 9, 9], np.uint32)
    w0 = np.array([[0, 5.0], [0, 0]])  # cols 0..1, rows 2..3
    w1 = np.array([[-99.0, 0], [7.0, 0]])  # cols 9..10
    out = s2.raster_masses(rows, cols, 2, [(0, w0), (9, w1)], nodata=-99.0)
    assert out.tolist() == [5.0, 0.0, 7.0]


def _band_tiles(grid, geom, unit_cells):
    units = s1.plan_units([("XX", geom)], grid, unit_cells)
    return units, [s1.tile_unit(geom, grid, u).tile_ids(grid.ncols) for u in units]


def test_proxy_kernel_is_independent_of_banding_and_conserves_inland_mass():
    grid = Grid(west=0.0, north=2.0, dx=1 / 120, dy=1 / 120, ncols=240, nrows=240)
    geom = gf.box(0.0, 0.0, 2.0, 2.0)
    lon, lat, pop = np.array([1.0, 1.5, 0.01]), np.array([1.0, 0.5, 1.0]), np.array([4e5, 2e4, 1e5])
    params = s2.ProxyParams()
    out = {}
    for cells in (10**6, 3000):
        units, ids = _band_tiles(grid, geom, cells)
        all_ids = np.concatenate(ids)
        acc = np.zeros(len(all_ids))
        off = 0
        for u, band_ids in zip(units, ids):
            idx, m = s2.proxy_kernel_mass(band_ids, grid, lon, lat, pop, params, u.row0, u.row1)
            acc[idx + off] = m
            off += len(band_ids)
        out[cells] = acc
    assert np.array_equal(out[10**6], out[3000])  # bit-identical whatever the chunking
    # every disk lies on tiles of the country (off-grid cells do not count): population is conserved
    assert out[10**6].sum() == pytest.approx(5.2e5, rel=1e-12)
    # a town on the coast keeps only the share of its disk that falls on the country's tiles
    units, ids = _band_tiles(grid, gf.box(1.0, 0.0, 2.0, 2.0), 10**6)
    _, m = s2.proxy_kernel_mass(
        ids[0], grid, np.array([1.0]), np.array([1.0]), np.array([4e5]), params, units[0].row0, units[0].row1
    )
    assert 0.4 * 4e5 < m.sum() < 0.6 * 4e5


def test_proxy_kernel_wraps_the_antimeridian():
    grid = gf.GRID
    geom = gf.countries()["FJ"]
    units, ids = _band_tiles(grid, geom, 10**6)
    idx, m = s2.proxy_kernel_mass(
        ids[0],
        grid,
        np.array([179.99]),
        np.array([-1.6]),
        np.array([3e6]),
        s2.ProxyParams(radius_max_km=60.0),
        units[0].row0,
        units[0].row1,
    )
    _, cols = grid.row_col(ids[0][idx])
    assert cols.min() == 0 and cols.max() == grid.ncols - 1  # mass on both sides of 180


def test_proxy_masses_rural_floor_and_no_towns():
    params = s2.ProxyParams()
    area = np.array([2.0, 1.0, 1.0])
    m = proxy_masses(area, np.array([1]), np.array([50.0]), 100.0, 4.0, params)
    assert m.tolist() == [5.0, 52.5, 2.5]
    assert proxy_masses(area, np.zeros(0, int), np.zeros(0), 0.0, 4.0, params).tolist() == area.tolist()
    assert (
        s2.proxy_masses_inplace(area.copy(), np.array([1]), np.array([50.0]), 100.0, 4.0, params).tolist()
        == m.tolist()
    )


def test_proxy_params_are_canonical_and_exact():
    c = s2.ProxyParams().canonical()
    assert c["rural_share"] == (0.1).hex() and c["version"] == 2
    assert c["land_samples"] == 8 and c["min_land_share"] == (0.25).hex()
    assert 0.75**64 < 1e-7  # a tile at the minimum land share exhausts S6's 64 attempts this rarely
    for bad in ({"land_samples": 0}, {"land_samples": 17}, {"min_land_share": 1.5}):
        with pytest.raises(InputError):
            s2.ProxyParams(**bad)


def test_proxy_masses_take_the_land_share_and_drop_slivers():
    params = s2.ProxyParams()
    area = np.array([2.0, 1.0, 1.0, 1.0])
    share = np.array([0.5, 0.25, 0.125])  # tiles 0, 2, 3 are coastal; 3 is a sliver below 0.25
    land = float((area * np.r_[0.5, 1.0, 0.25, 0.125]).sum())  # A_c = sum f a = 2.375
    m = proxy_masses(area, np.array([1, 3]), np.array([50.0, 80.0]), 100.0, land, params, np.array([0, 2, 3]), share)
    c = 0.1 * 100.0 / land
    assert m.tolist() == [0.5 * (2.0 * c), 50.0 + c, 0.25 * c, 0.0]
    # no towns: land area; slivers still 0
    m0 = proxy_masses(area, np.zeros(0, int), np.zeros(0), 0.0, land, params, np.array([0, 2, 3]), share)
    assert m0.tolist() == [1.0, 1.0, 0.25, 0.0]
    # boundary: exactly the minimum share is kept
    assert proxy_masses(area[:1], np.zeros(0, int), np.zeros(0), 0.0, 0.5, params, np.array([0]),
                           np.array([0.25])).tolist() == [0.5]


def test_all_sliver_country_gets_the_zero_mass_fallback():
    params = s2.ProxyParams()
    area = np.array([3.0, 2.0, 1.0])
    share = np.array([0.2, 0.0, 0.125])
    land = float((area * share).sum())
    m = proxy_masses(area, np.array([0]), np.array([7.0]), 7.0, land, params, np.arange(3), share)
    assert m.tolist() == [0.0, 0.0, 0.0]
    w, fallback, _ = s2.country_weights(m, np.arange(3, dtype=np.uint64), 2, "MO")
    assert fallback and w.tolist() == [34, 33, 33]


def test_land_area_total_is_exact_per_row_and_matches_area_total_without_coast():
    rows_count, row_area = np.array([3, 1]), np.array([0.1, 0.2])
    assert s2.land_area_total(rows_count, row_area, np.zeros(2, np.int64), 8) == area_total(rows_count, row_area)
    # row 0 loses 64 - 16 lattice points (one tile at f = 0.25): 0.1 * 2.25 + 0.2
    assert s2.land_area_total(rows_count, row_area, np.array([48, 0]), 8) == pytest.approx(0.425, rel=1e-15)


def test_area_total_is_exact_sum():
    assert area_total(np.array([3, 1]), np.array([0.1, 0.2])) == 0.1 * 3 + 0.2
