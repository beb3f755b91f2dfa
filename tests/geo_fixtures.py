"""Shared geometry fixtures: tiny countries, a hole, the antimeridian, a micro-island, shared borders.

Plus writers for the inputs the jobs read: a small GeoTIFF (rasterio) and country files (GeoPackage,
GeoParquet).  Everything is small enough for a test to rasterise in milliseconds.
"""

from __future__ import annotations

import numpy as np
import shapely

from segment1b.grid import Grid

# Cell centres are at x.125, x.375, x.625, x.875 degrees.
# A 0.25-degree grid, 360 degrees wide (so the antimeridian is inside it), from 10N to 10S.
GRID = Grid(west=-180.0, north=10.0, dx=0.25, dy=0.25, ncols=1440, nrows=80, name="test")


def box(x0, y0, x1, y1):
    return shapely.box(x0, y0, x1, y1)


def countries() -> dict[str, object]:
    """ISO -> geometry, all valid and disjoint (touching borders allowed)."""
    return {
        "AD": box(0.1, 0.1, 2.1, 2.1),  # small square: 8 x 8 centres
        "BE": shapely.difference(box(4.1, 0.1, 8.1, 4.1), box(5.1, 1.1, 7.1, 3.1)),  # with a hole
        "CH": box(9.1, 0.1, 10.1, 2.1),  # CH | DE share x = 10.1
        "DE": box(10.1, 0.1, 11.1, 2.1),
        "FJ": shapely.multipolygons([box(179.1, -2.1, 180.0, -1.1), box(-180.0, -2.1, -179.4, -1.1)]),
        "MC": box(20.13, 5.13, 20.2, 5.2),  # micro-island: no cell centre
        "SM": box(40.1, 5.1, 40.15, 5.15),  # micro-island around one centre
        "LI": shapely.Polygon([(50.125, 5.125), (50.5, 5.125), (50.5, 5.5)]),  # edge through centres
    }


def sliver_coast() -> tuple[object, int]:
    """A country with a coastal sliver tile, and that tile's id on :data:`GRID`.

    An 8 x 8-cell block ([20, 22] x [-5, -3], every tile wholly land) plus a thin spit (0.13 x 0.01 degree)
    that covers the centre (22.125, -3.875) of the next cell: the centre rule admits that tile although
    only 2 % of it is land, so a uniform point in it is in the country with probability 0.02 and S6 would
    exhaust its 64 attempts 27 % of the time.  The spit misses every point of an s x s land-share lattice
    (s <= 16), so its land share is estimated as 0.
    """
    geom = shapely.union(box(20.0, -5.0, 22.0, -3.0), box(22.0, -3.88, 22.13, -3.87))
    return geom, int(GRID.tile_id(55, 808))


def cell_grid_brute_force(geom, grid: Grid) -> np.ndarray:
    """Sorted tile ids whose centre is covered by ``geom`` (slow reference: every cell of the grid)."""
    rows, cols = np.divmod(np.arange(grid.n_cells), grid.ncols)
    x, y = grid.col_center(cols), grid.row_center(rows)
    inside = shapely.covers(geom, shapely.points(x, y))
    return grid.tile_id(rows[inside], cols[inside])


def write_geotiff(
    path, grid: Grid, values: np.ndarray, *, nodata=None, crs="EPSG:4326", dtype="float32"
) -> str:
    """Write a one-band GeoTIFF of ``values`` (shape grid.shape) on ``grid``."""
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.ncols,
        height=grid.nrows,
        count=1,
        dtype=dtype,
        crs=crs,
        transform=grid.window_transform(0, 0),
        nodata=nodata,
    ) as dst:
        dst.write(values.astype(dtype), 1)
    return str(path)


def write_countries(path, geoms: dict[str, object], *, iso_column="iso_a2", crs="EPSG:4326") -> str:
    """Write countries as GeoParquet (``.parquet``) or with pyogrio (``.gpkg``, ``.shp``)."""
    import geopandas

    gdf = geopandas.GeoDataFrame({iso_column: list(geoms)}, geometry=list(geoms.values()), crs="EPSG:4326")
    if crs != "EPSG:4326":
        gdf = gdf.to_crs(crs)
    if str(path).endswith(".parquet"):
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    return str(path)
