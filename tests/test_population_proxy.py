"""The population proxy's kernels (segment1b/population_proxy.py): town kernel, rural floor, land shares and
land area, on literals and tiny grids (no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

import geo_fixtures as gf
from reference import area_total, proxy_masses
from segment1b import population_proxy as pp
from segment1b import s1_tile_index as s1
from segment1b.errors import InputError
from segment1b.grid import Grid


def _band_tiles(grid, geom, unit_cells):
    units = s1.plan_units([("XX", geom)], grid, unit_cells)
    return units, [s1.tile_unit(geom, grid, u).tile_ids(grid.ncols) for u in units]


def test_proxy_kernel_is_independent_of_banding_and_conserves_inland_mass():
    grid = Grid(west=0.0, north=2.0, dx=1 / 120, dy=1 / 120, ncols=240, nrows=240)
    geom = gf.box(0.0, 0.0, 2.0, 2.0)
    lon, lat, pop = np.array([1.0, 1.5, 0.01]), np.array([1.0, 0.5, 1.0]), np.array([4e5, 2e4, 1e5])
    params = pp.ProxyParams()
    out = {}
    for cells in (10**6, 3000):
        units, ids = _band_tiles(grid, geom, cells)
        all_ids = np.concatenate(ids)
        acc = np.zeros(len(all_ids))
        off = 0
        for u, band_ids in zip(units, ids):
            idx, m = pp.proxy_kernel_mass(band_ids, grid, lon, lat, pop, params, u.row0, u.row1)
            acc[idx + off] = m
            off += len(band_ids)
        out[cells] = acc
    assert np.array_equal(out[10**6], out[3000])  # bit-identical whatever the chunking
    # every disk lies on tiles of the country (off-grid cells do not count): population is conserved
    assert out[10**6].sum() == pytest.approx(5.2e5, rel=1e-12)
    # a town on the coast keeps only the share of its disk that falls on the country's tiles
    units, ids = _band_tiles(grid, gf.box(1.0, 0.0, 2.0, 2.0), 10**6)
    _, m = pp.proxy_kernel_mass(
        ids[0], grid, np.array([1.0]), np.array([1.0]), np.array([4e5]), params, units[0].row0, units[0].row1
    )
    assert 0.4 * 4e5 < m.sum() < 0.6 * 4e5


def test_proxy_kernel_wraps_the_antimeridian():
    grid = gf.GRID
    geom = gf.countries()["FJ"]
    units, ids = _band_tiles(grid, geom, 10**6)
    idx, m = pp.proxy_kernel_mass(
        ids[0],
        grid,
        np.array([179.99]),
        np.array([-1.6]),
        np.array([3e6]),
        pp.ProxyParams(radius_max_km=60.0),
        units[0].row0,
        units[0].row1,
    )
    _, cols = grid.row_col(ids[0][idx])
    assert cols.min() == 0 and cols.max() == grid.ncols - 1  # mass on both sides of 180


def test_proxy_masses_rural_floor_and_no_towns():
    params = pp.ProxyParams()
    area = np.array([2.0, 1.0, 1.0])
    m = proxy_masses(area, np.array([1]), np.array([50.0]), 100.0, 4.0, params)
    assert m.tolist() == [5.0, 52.5, 2.5]
    assert proxy_masses(area, np.zeros(0, int), np.zeros(0), 0.0, 4.0, params).tolist() == area.tolist()
    assert (
        pp.proxy_masses_inplace(area.copy(), np.array([1]), np.array([50.0]), 100.0, 4.0, params).tolist()
        == m.tolist()
    )


def test_proxy_params_are_canonical_and_exact():
    c = pp.ProxyParams().canonical()
    assert c["rural_share"] == (0.1).hex() and c["version"] == 2
    assert c["land_samples"] == 8 and c["min_land_share"] == (0.25).hex()
    assert 0.75**64 < 1e-7  # a tile at the minimum land share exhausts S6's 64 attempts this rarely
    for bad in ({"land_samples": 0}, {"land_samples": 17}, {"min_land_share": 1.5}):
        with pytest.raises(InputError):
            pp.ProxyParams(**bad)


def test_proxy_masses_take_the_land_share_and_drop_slivers():
    params = pp.ProxyParams()
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


def test_land_area_total_is_exact_per_row_and_matches_area_total_without_coast():
    rows_count, row_area = np.array([3, 1]), np.array([0.1, 0.2])
    assert pp.land_area_total(rows_count, row_area, np.zeros(2, np.int64), 8) == area_total(rows_count, row_area)
    # row 0 loses 64 - 16 lattice points (one tile at f = 0.25): 0.1 * 2.25 + 0.2
    assert pp.land_area_total(rows_count, row_area, np.array([48, 0]), 8) == pytest.approx(0.425, rel=1e-15)


def test_area_total_is_exact_sum():
    assert area_total(np.array([3, 1]), np.array([0.1, 0.2])) == 0.1 * 3 + 0.2
