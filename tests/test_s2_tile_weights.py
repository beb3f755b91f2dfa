"""S2 tile weights kernels: exact largest remainder, checks, masses (no cluster)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import fk_mismatches, proxy_masses
from segment1b import s2_tile_weights as s2
from segment1b.contracts import dataset
from segment1b.errors import InputError, IntegrityError
from segment1b.population_proxy import ProxyParams
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


def test_all_sliver_country_gets_the_zero_mass_fallback():
    params = ProxyParams()
    area = np.array([3.0, 2.0, 1.0])
    share = np.array([0.2, 0.0, 0.125])
    land = float((area * share).sum())
    m = proxy_masses(area, np.array([0]), np.array([7.0]), 7.0, land, params, np.arange(3), share)
    assert m.tolist() == [0.0, 0.0, 0.0]
    w, fallback, _ = s2.country_weights(m, np.arange(3, dtype=np.uint64), 2, "MO")
    assert fallback and w.tolist() == [34, 33, 33]





# -- a country's masses over its units -------------------------------------------------------------------

def _runs(rows, col0, col1, land):
    from segment1b.s1_tile_index import Runs

    return Runs(np.array(rows, np.uint32), np.array(col0, np.uint32), np.array(col1, np.uint32), land=land)


def test_country_masses_by_basis_are_the_same_whatever_the_units():
    from segment1b.grid import Grid
    from segment1b.s1_tile_index import LandShares

    grid = Grid(west=0.0, north=60.0, dx=1.0, dy=1.0, ncols=8, nrows=8)
    a = grid.row_area_m2
    # one country of 6 tiles: row 0 cols 1-3, row 1 cols 2-4; its 2nd tile is half land, its 6th a sliver
    # (8 of the 8 x 8 lattice points: f = 0.125, below the minimum share 0.25)
    whole = [_runs([0, 1], [1, 2], [4, 5], LandShares(np.array([1, 5]), np.array([32, 8], np.uint16), 8))]
    split = [_runs([0], [1], [4], LandShares(np.array([1]), np.array([32], np.uint16), 8)),
             _runs([1], [2], [5], LandShares(np.array([2]), np.array([8], np.uint16), 8))]
    kernels = {1: [(np.array([0, 4]), np.array([50.0, 30.0]))],
               2: [(np.array([0]), np.array([50.0])), (np.array([1]), np.array([30.0]))]}
    rasters = {1: [np.arange(6.0)], 2: [np.arange(3.0), np.arange(3.0, 6.0)]}
    params = ProxyParams()
    land = a[0] * (2 + 0.5) + a[1] * (2 + 0.125)  # A_c = sum f_t a_t
    expected = proxy_masses(np.repeat(a[:2], 3), np.array([0, 4]), np.array([50.0, 30.0]), 100.0, land, params,
                            np.array([1, 5]), np.array([0.5, 0.125]))
    got = {}
    for runs in (whole, split):
        none = [None] * len(runs)
        assert s2.country_masses("uniform", grid, runs, none, 0.0, None)[0].tolist() == [1.0] * 6
        area, stats = s2.country_masses("area_m2", grid, runs, none, 0.0, None)
        assert area.tolist() == [a[0]] * 3 + [a[1]] * 3 and stats is None
        assert s2.country_masses("population", grid, runs, rasters[len(runs)], 0.0, None)[0].tolist() == \
            list(range(6))
        masses, stats = s2.country_masses("population_proxy", grid, runs, kernels[len(runs)], 100.0, params)
        assert (stats.partial_tiles, stats.tiles_below_min_land_share) == (2, 1)
        assert stats.land_area_m2 == pytest.approx(land, rel=1e-15)
        assert masses.tolist() == pytest.approx(expected.tolist(), rel=1e-15) and masses[5] == 0.0
        got[len(runs)] = (masses, stats)
    assert got[1][0].tolist() == got[2][0].tolist() and got[1][1] == got[2][1]  # bit-identical across units


def test_total_as_float_saturates_above_float64():
    assert s2.total_as_float((3, -1)) == 1.5
    assert s2.total_as_float(s2.exact_total(np.array([0.5, 0.25]))) == 0.75
    assert s2.total_as_float((1, 1024)) == float("inf")
