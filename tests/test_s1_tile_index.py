"""S1 tile index kernels: planning, exact centre rule, runs, tables, duplicate check (no cluster)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

import geo_fixtures as gf
from segment1b import s1_tile_index as s1
from segment1b.contracts import dataset
from segment1b.errors import InputError, IntegrityError
from segment1b.grid import Grid
from segment1b.storage import check_schema

G = gf.GRID


def tiles_of(geom, iso="XX", unit_cells=s1.DEFAULT_UNIT_CELLS, grid=G):
    units = s1.plan_units([(iso, geom)], grid, unit_cells)
    runs = [s1.tile_unit(geom, grid, u) for u in units]
    ids = np.concatenate([r.tile_ids(grid.ncols) for r in runs]) if runs else np.zeros(0, np.uint64)
    return units, runs, ids


# -- planning ----------------------------------------------------------------------------------------


def test_plan_orders_units_by_country_then_band_with_consecutive_parts():
    units = s1.plan_units(list(gf.countries().items())[::-1], G, unit_cells=20)
    assert [u.part for u in units] == list(range(len(units)))
    keys = [(u.country_iso, u.band) for u in units]
    assert keys == sorted(keys)
    assert len({u.country_iso for u in units}) == len(gf.countries())


def test_plan_respects_the_cell_budget_and_covers_every_row_once():
    geom = gf.countries()["BE"]
    units = s1.plan_units([("BE", geom)], G, unit_cells=40)
    assert len(units) > 1
    assert all(u.cells <= 40 for u in units)
    rows = np.concatenate([np.arange(u.row0, u.row1) for u in units])
    assert len(rows) == len(set(rows.tolist()))


def test_antimeridian_country_gets_two_narrow_windows_not_the_whole_width():
    (unit,) = s1.plan_units([("FJ", gf.countries()["FJ"])], G)
    assert len(unit.windows) == 2
    assert unit.windows[0][0] == 0 and unit.windows[-1][1] == G.ncols
    assert sum(c1 - c0 for c0, c1 in unit.windows) < 20


def test_country_outside_the_grid_gets_no_unit():
    assert s1.plan_units([("AQ", gf.box(0, -80, 10, -70))], G) == []


# -- the kernel: exact centre rule ---------------------------------------------------------------------


@pytest.mark.parametrize("iso", sorted(gf.countries()))
@pytest.mark.parametrize("unit_cells", [10**6, 20])
def test_tiles_equal_brute_force_centre_rule(iso, unit_cells):
    geom = gf.countries()[iso]
    _, _, ids = tiles_of(geom, iso, unit_cells)
    assert np.array_equal(ids, gf.cell_grid_brute_force(geom, G))


def test_hole_is_excluded_and_boundary_centres_are_included():
    countries = gf.countries()
    _, _, be = tiles_of(countries["BE"])
    row, col = round((G.north - 2.125) / G.dy - 0.5), round((6.125 - G.west) / G.dx - 0.5)
    assert (G.col_center(col), G.row_center(row)) == (6.125, 2.125)
    hole_centre = int(G.tile_id(row, col))
    assert hole_centre not in set(be.tolist())
    _, runs, li = tiles_of(countries["LI"])
    assert len(li) == 3  # the vertex, a centre on the bottom edge, a centre on the hypotenuse
    assert runs[0].stats["refined"] >= 1  # GDAL alone misses boundary centres: the exact step adds them


def test_micro_islands():
    countries = gf.countries()
    assert len(tiles_of(countries["MC"])[2]) == 0
    assert len(tiles_of(countries["SM"])[2]) == 1


def test_antimeridian_tiles_on_both_edges():
    _, _, ids = tiles_of(gf.countries()["FJ"])
    _, cols = G.row_col(ids)
    assert cols.min() == 0 and cols.max() == G.ncols - 1
    assert np.all(np.diff(ids.astype(np.int64)) > 0)


def test_runs_expand_to_ascending_cells():
    runs = s1.Runs(
        np.array([3, 3, 5], np.uint32), np.array([1, 7, 0], np.uint32), np.array([4, 8, 2], np.uint32)
    )
    rows, cols = s1.runs_to_cells(runs)
    assert rows.tolist() == [3, 3, 3, 3, 5, 5]
    assert cols.tolist() == [1, 2, 3, 7, 0, 1]
    assert runs.n_tiles == 6


def test_unknown_inclusion_rule_is_E008():
    (unit,) = s1.plan_units([("AD", gf.countries()["AD"])], G)
    with pytest.raises(InputError) as exc:
        s1.tile_unit(gf.countries()["AD"], G, unit, rule="any_overlap")
    assert exc.value.code == "E008_INCLUSION_RULE"
    assert "any_overlap" in str(exc.value) and "center" in str(exc.value)


# -- tables ------------------------------------------------------------------------------------------


def test_tables_have_the_contract_schema_and_grid_floats():
    (unit,), (runs,), ids = tiles_of(gf.countries()["AD"], "AD")
    index = check_schema(s1.tile_index_table("AD", runs, G), dataset("tile_index"))
    bounds = check_schema(s1.tile_bounds_table("AD", runs, G), dataset("tile_bounds"))
    assert index.column("tile_id").to_numpy().tolist() == ids.tolist()
    lon, lat = G.centroid(ids)
    assert np.array_equal(index.column("centroid_lon").to_numpy(), lon)
    assert np.array_equal(index.column("centroid_lat").to_numpy(), lat)
    west, east, south, north = G.bounds(ids)
    assert np.array_equal(bounds.column("west_lon").to_numpy(), west)
    assert np.array_equal(bounds.column("north_lat").to_numpy(), north)
    assert np.all(index.column("pixel_area_m2").to_numpy() > 0)
    assert set(index.column("inclusion_rule").to_pylist()) == {"center"}


def test_nonpositive_pixel_area_is_E006(monkeypatch):
    grid = Grid(west=0.0, north=10.0, dx=1.0, dy=1.0, ncols=10, nrows=10)
    areas = grid.row_area_m2.copy()
    areas[5] = 0.0
    grid.__dict__["row_area_m2"] = areas
    (unit,) = s1.plan_units([("AD", gf.box(1, 1, 8, 8))], grid)
    runs = s1.tile_unit(gf.box(1, 1, 8, 8), grid, unit)
    with pytest.raises(IntegrityError) as exc:
        s1.tile_index_table("AD", runs, grid)
    assert exc.value.code == "E006_AREA_NONPOS"
    assert "raster_row=5" in str(exc.value)


# -- duplicates (E003) ---------------------------------------------------------------------------------


def _all_runs(geoms):
    units = s1.plan_units(list(geoms.items()), G, unit_cells=30)
    return [u.country_iso for u in units], [s1.tile_unit(geoms[u.country_iso], G, u) for u in units]


def test_shared_border_between_centres_is_not_a_duplicate():
    c = gf.countries()
    isos, runs = _all_runs({"CH": c["CH"], "DE": c["DE"]})
    assert s1.find_duplicate_tiles(isos, runs, G.ncols) == []


def test_overlapping_polygons_and_centres_on_a_shared_border_are_duplicates():
    # overlap: two columns of centres claimed twice
    isos, runs = _all_runs({"CH": gf.box(9.1, 0.1, 10.6, 1.1), "DE": gf.box(10.1, 0.1, 11.1, 1.1)})
    dups = s1.find_duplicate_tiles(isos, runs, G.ncols)
    assert len(dups) == 8 and {(d["country_iso"], d["other_country_iso"]) for d in dups} == {("CH", "DE")}
    # a border exactly through a column of centres (x = 10.125): both sides claim it
    isos, runs = _all_runs({"CH": gf.box(9.1, 0.1, 10.125, 1.1), "DE": gf.box(10.125, 0.1, 11.1, 1.1)})
    dups = s1.find_duplicate_tiles(isos, runs, G.ncols)
    rows, cols = G.row_col(np.array([d["tile_id"] for d in dups], np.uint64))
    assert len(dups) == 4 and set(G.col_center(cols).tolist()) == {10.125}


def test_sample_agreement_is_complete():
    for iso, geom in gf.countries().items():
        units, runs, ids = tiles_of(geom, iso)
        res = s1.sample_agreement(geom, G, ids, 2000, seed=1)
        assert res["agree"] == res["sampled"], (iso, res)
    res = s1.sample_agreement(gf.countries()["LI"], G, tiles_of(gf.countries()["LI"])[2], 500, seed=2)
    assert res["on_boundary"] > 0 and res["agree"] == res["sampled"]
    wrong = s1.sample_agreement(gf.countries()["AD"], G, np.zeros(0, np.uint64), 500, seed=2)
    assert wrong["agree"] < wrong["sampled"] and wrong["mismatches"]


def test_string_column_roundtrip():
    col = s1.string_column("RU", 5)
    assert col.to_pylist() == ["RU"] * 5
    assert s1.string_column("RU", 0).to_pylist() == []


def test_large_polygon_is_fast_and_exact_on_a_fine_grid():
    # a many-vertex circle on a 30" window: exact agreement with brute force, in well under a second
    grid = Grid(west=0.0, north=2.0, dx=1 / 120, dy=1 / 120, ncols=240, nrows=240)
    circle = shapely.Point(1.0, 1.0).buffer(0.9, quad_segs=256)
    _, _, ids = tiles_of(circle, grid=grid, unit_cells=5000)
    assert np.array_equal(ids, gf.cell_grid_brute_force(circle, grid))


# -- land share (population proxy) -------------------------------------------------------------------

# One-degree cells: cell (row 0, col 0) is [0, 1] x [1, 2]; its lattice points are at k/16 for s = 8.
UNIT_GRID = Grid(west=0.0, north=2.0, dx=1.0, dy=1.0, ncols=4, nrows=2, name="unit")


def _exact_share(geom, grid, rows, cols):
    boxes = shapely.box(grid.col_west(cols), grid.row_south(rows), grid.col_east(cols), grid.row_north(rows))
    return shapely.area(shapely.intersection(boxes, geom)) / shapely.area(boxes)


@pytest.mark.parametrize(
    "name, geom, expected",
    [
        ("interior", shapely.box(-1.0, 0.0, 3.0, 3.0), 1.0),
        ("half, edge through the centre", shapely.box(-1.0, 0.0, 0.5, 3.0), 0.5),
        ("quarter", shapely.box(-1.0, 1.5, 0.5, 3.0), 0.25),
        ("diagonal half", shapely.Polygon([(0, 1), (1, 1), (0, 2)]), 0.5),
        ("sliver spit through the centre", shapely.box(-1.0, 1.49, 0.51, 1.51), 0.0),
        ("outside", shapely.box(2.0, 0.0, 3.0, 1.0), 0.0),
    ],
)
@pytest.mark.parametrize("samples", [4, 8])
def test_land_share_counts_known_answers(name, geom, expected, samples):
    shapely.prepare(geom)
    k = s1.land_share_counts(geom, UNIT_GRID, np.array([0]), np.array([0]), samples)
    assert k.dtype == np.uint16
    est = float(k[0]) / samples**2
    exact = float(_exact_share(geom, UNIT_GRID, np.array([0]), np.array([0]))[0])
    assert exact == pytest.approx(expected, abs=0.03)
    # a straight edge costs at most one lattice column/row (1/s); the sliver holds no lattice point
    assert abs(est - exact) <= 1.0 / samples + 1e-12
    if name.startswith("sliver"):
        assert est < 0.25  # below the proxy's min_land_share: weight 0 in S2


@pytest.mark.parametrize("samples", [4, 8])
def test_land_share_counts_track_exact_areas_on_a_jagged_coast(samples):
    # a star-shaped "island" with many edges at all angles, on a 0.25-degree grid
    t = np.linspace(0, 2 * np.pi, 181)[:-1]
    r = 2.0 + 0.6 * np.sin(7 * t) + 0.3 * np.cos(13 * t)
    geom = shapely.Polygon(np.c_[3.0 + r * np.cos(t), r * np.sin(t)])
    grid = Grid(west=0.0, north=4.0, dx=0.25, dy=0.25, ncols=24, nrows=32)
    rows, cols = np.divmod(np.arange(grid.n_cells), grid.ncols)
    exact = _exact_share(geom, grid, rows, cols)
    partial = (exact > 0) & (exact < 1)
    shapely.prepare(geom)
    est = s1.land_share_counts(geom, grid, rows[partial], cols[partial], samples) / samples**2
    err = np.abs(est - exact[partial])
    # measured: MAE 0.03 (s=4) / 0.01 (s=8) on Natural Earth coastlines; a smooth coast does better
    assert err.mean() < {4: 0.04, 8: 0.015}[samples]
    assert err.max() < 2.0 / samples


def test_tile_unit_land_shares_are_the_boundary_tiles_and_do_not_depend_on_banding():
    t = np.linspace(0, 2 * np.pi, 121)[:-1]
    geom = shapely.Polygon(np.c_[5.0 + (2 + 0.5 * np.sin(5 * t)) * np.cos(t), (2 + 0.5 * np.sin(5 * t)) * np.sin(t)])
    grid = Grid(west=0.0, north=4.0, dx=0.125, dy=0.125, ncols=96, nrows=64)
    got = {}
    for cells in (10**6, 300):
        units = s1.plan_units([("XX", geom)], grid, cells)
        runs = [s1.tile_unit(geom, grid, u, land_samples=8) for u in units]
        plain = [s1.tile_unit(geom, grid, u) for u in units]
        assert all(np.array_equal(a.tile_ids(grid.ncols), b.tile_ids(grid.ncols)) for a, b in zip(runs, plain))
        assert all(p.land is None for p in plain)
        ids = np.concatenate([r.tile_ids(grid.ncols) for r in runs])
        share = np.ones(len(ids))
        off = 0
        for r in runs:
            assert r.land.samples == 8 and np.all(np.diff(r.land.index) > 0)
            assert r.stats["partial_tiles"] == len(r.land.index) <= r.stats["land_tested"]
            share[r.land.index + off] = r.land.share
            off += r.n_tiles
        got[cells] = (ids, share)
        rows, cols = grid.row_col(ids)
        exact = _exact_share(geom, grid, rows, cols)
        assert np.all(exact[share == 1.0] > 1 - 1.0 / 8)  # tiles not listed are (almost) wholly land
        assert np.abs(share - exact).mean() < 0.01
        assert (share < 1).sum() > 50  # the coast is there
    assert np.array_equal(got[10**6][0], got[300][0]) and np.array_equal(got[10**6][1], got[300][1])


def test_land_share_lattice_size_is_checked():
    with pytest.raises(InputError):
        s1.land_share_counts(shapely.box(0, 0, 1, 1), UNIT_GRID, np.array([0]), np.array([0]), 0)
