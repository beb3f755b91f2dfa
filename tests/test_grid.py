import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from segment1b.errors import InputError
from segment1b.grid import NAMED_GRIDS, Grid, wrap_lon


def zone_area_m2(lat_s: float, lat_n: float, dlon_deg: float) -> float:
    """Independent reference: exact area of a lat/lon rectangle on the WGS84 ellipsoid (authalic formula)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    e = math.sqrt(e2)
    b2 = a * a * (1 - e2)

    def q(phi):
        s = math.sin(math.radians(phi))
        return s / (1 - e2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return abs(math.radians(dlon_deg) * b2 / 2 * (q(lat_n) - q(lat_s)))


@pytest.mark.parametrize("name", sorted(NAMED_GRIDS))
def test_named_grids_cover_the_world_extent(name):
    g = Grid.named(name)
    assert g.west == -180.0 and g.north == 84.0
    assert math.isclose(g.east, 180.0) and math.isclose(g.south, -56.0)
    assert g.ncols * g.dx == pytest.approx(360.0)


def test_30s_grid_has_the_worldpop_like_shape():
    assert Grid.named("30s").shape == (16800, 43200)


def test_unknown_grid_lists_the_choices():
    with pytest.raises(InputError) as e:
        Grid.named("7m")
    assert "30s" in str(e.value) and e.value.code == "E002_RASTER_MISMATCH"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 16799), st.integers(0, 43199))
def test_tile_id_roundtrip(row, col):
    g = Grid.named("30s")
    tid = g.tile_id(row, col)
    assert int(tid) == row * 43200 + col
    r, c = g.row_col(tid)
    assert (int(r), int(c)) == (row, col)


def test_tile_id_outside_grid_is_e004():
    g = Grid.named("5m")
    with pytest.raises(InputError) as e:
        g.row_col(np.array([g.n_cells], dtype=np.uint64))
    assert e.value.code == "E004_BOUNDS" and str(g.n_cells) in str(e.value)


def test_bounds_and_centroid_agree_bitwise():
    g = Grid.named("2.5m")
    rng = np.random.default_rng(0)
    tid = rng.integers(0, g.n_cells, 10_000).astype(np.uint64)
    w, e, s, n = g.bounds(tid)
    cx, cy = g.centroid(tid)
    r, c = g.row_col(tid)
    assert np.array_equal(cx, g.col_center(c)) and np.array_equal(cy, g.row_center(r))
    assert np.all((w < cx) & (cx < e) & (s < cy) & (cy < n))
    # the east edge of a cell is the west edge of the next one, bit for bit
    assert np.array_equal(g.col_east(c[c < g.ncols - 1]), g.col_west(c[c < g.ncols - 1] + 1))


@pytest.mark.parametrize("name", ["5m", "30m"])
def test_pixel_area_matches_the_authalic_formula(name):
    g = Grid.named(name)
    rows = np.arange(g.nrows)
    ref = np.array([zone_area_m2(float(g.row_south(r)), float(g.row_north(r)), g.dx) for r in rows])
    assert np.all(g.row_area_m2 > 0)
    np.testing.assert_allclose(g.row_area_m2, ref, rtol=1e-6)


def test_world_area_of_the_grid():
    g = Grid.named("30m")
    total = g.row_area_m2.sum() * g.ncols
    assert total == pytest.approx(zone_area_m2(-56.0, 84.0, 360.0), rel=1e-6)


def test_wrap_lon():
    x = np.array([-180.0, 179.99, 180.0, 180.004, -180.004])
    out = wrap_lon(x)
    assert out[0] == -180.0 and out[1] == 179.99 and out[2] == -180.0
    assert out[3] == pytest.approx(-179.996) and out[4] == pytest.approx(179.996)
    assert np.all((out >= -180.0) & (out < 180.0))


def test_jitter_point_is_inside_its_cell_even_across_the_antimeridian():
    # a WorldPop-like grid whose first column overhangs -180
    g = Grid(west=-180.0012493, north=83.6329165, dx=1 / 120, dy=1 / 120, ncols=43199, nrows=16755, name="raster")
    tid = g.tile_id(np.array([100, 100, 5000, 16754]), np.array([0, 43198, 21000, 0]))
    for u in (np.full(4, 1e-17), np.full(4, 0.5), np.full(4, float.fromhex('0x1.fffffffffffffp-1'))):
        dlon, dlat = g.jitter_deltas(tid, u, u)
        lon, lat = g.absolute_point(tid, dlon, dlat)
        assert np.all((lon >= -180.0) & (lon < 180.0))
        assert np.all(g.contains_point(tid, lon, lat))
        assert np.all(np.abs(dlon) <= g.dx) and np.all(np.abs(dlat) <= g.dy)
    # a point just west of -180 wraps to the east end and still counts as inside column 0
    dlon, dlat = g.jitter_deltas(tid[:1], np.array([1e-6]), np.array([0.5]))
    lon, _ = g.absolute_point(tid[:1], dlon, dlat)
    assert lon[0] > 179.99


def test_contains_point_rejects_neighbours():
    g = Grid.named("5m")
    tid = g.tile_id(np.array([10]), np.array([10]))
    w, e, s, n = g.bounds(tid)
    assert g.contains_point(tid, w, s)[0] and g.contains_point(tid, e, n)[0]  # edges count as inside
    assert not g.contains_point(tid, e + 1e-9, s)[0] and not g.contains_point(tid, w, n + 1e-9)[0]


def test_from_geotiff_and_crs_checks(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = tmp_path / "pop.tif"
    with rasterio.open(path, "w", driver="GTiff", width=36, height=14, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(-180, 84, 10, 10)) as dst:
        dst.write(np.ones((1, 14, 36), dtype="float32"))
    with pytest.raises(InputError) as e:  # 10-degree pixels exceed the 1-degree delta contract
        Grid.from_geotiff(str(path))
    assert e.value.code == "E004_BOUNDS"
    path2 = tmp_path / "pop2.tif"
    with rasterio.open(path2, "w", driver="GTiff", width=360, height=140, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(-180, 84, 1, 1)) as dst:
        dst.write(np.ones((1, 140, 360), dtype="float32"))
    g = Grid.from_geotiff(str(path2))
    assert g.shape == (140, 360) and g.west == -180 and g.dx == 1
    path3 = tmp_path / "projected.tif"
    with rasterio.open(path3, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32",
                       crs="EPSG:3857", transform=from_origin(0, 0, 1000, 1000)) as dst:
        dst.write(np.ones((1, 10, 10), dtype="float32"))
    with pytest.raises(InputError) as e:
        Grid.from_geotiff(str(path3))
    assert e.value.code == "E007_CRS_MISMATCH"
    with pytest.raises(InputError) as e:
        Grid.from_geotiff(str(tmp_path / "missing.tif"))
    assert e.value.code == "E009_INPUT_UNREADABLE"


def test_params_roundtrip_is_exact():
    g = Grid(west=-180.0012493, north=83.6329165, dx=0.0083333333, dy=0.0083333333, ncols=43199, nrows=16755,
             name="raster")
    assert Grid.from_params(g.to_params()) == g
