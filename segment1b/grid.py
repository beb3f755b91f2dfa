"""The world grid: tile ids, rows/cols, bounds, centroids and ellipsoidal pixel areas (contract §3).

Every float that S1, S6, S7 and S9 derive from a tile comes from the functions here, so all states get
bit-identical values.  A grid is north-up lon/lat: origin (west, north), pixel size (dx, dy), ``ncols``,
``nrows``; ``tile_id = row * ncols + col``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import InputError

__all__ = ["Grid", "NAMED_GRIDS", "wrap_lon"]

# Named built-in grids: same extent as the common 30" population rasters (84N..56S), any resolution.
NAMED_GRIDS: dict[str, float] = {
    "30s": 1.0 / 120.0,
    "1m": 1.0 / 60.0,
    "2.5m": 1.0 / 24.0,
    "5m": 1.0 / 12.0,
    "10m": 1.0 / 6.0,
    "30m": 0.5,
    "1d": 1.0,
}
WORLD_NORTH = 84.0
WORLD_SOUTH = -56.0


def wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Wrap longitudes into [-180, 180) with one exact add per value (cells overhang +-180 by < 1 cell)."""
    lon = np.asarray(lon, dtype=np.float64)
    return np.where(lon >= 180.0, lon - 360.0, np.where(lon < -180.0, lon + 360.0, lon))


@dataclass(frozen=True)
class Grid:
    """A north-up lon/lat raster grid.

    Parameters
    ----------
    west, north : float
        Origin: the west edge of column 0 and the north edge of row 0, in degrees.
    dx, dy : float
        Pixel width and height in degrees (both positive).
    ncols, nrows : int
        Grid size.
    name : str
        Built-in name (``30s``, ``5m`` ...) or ``raster`` for a grid read from a GeoTIFF.
    """

    west: float
    north: float
    dx: float
    dy: float
    ncols: int
    nrows: int
    name: str = "custom"

    def __post_init__(self):
        if not (self.dx > 0 and self.dy > 0 and self.ncols > 0 and self.nrows > 0):
            raise InputError("E004_BOUNDS", f"grid needs positive pixel size and shape, got {self}")
        if self.dx > 1.0 or self.dy > 1.0:
            # jitter deltas are contracted to [-1, 1] degrees (§2)
            raise InputError("E004_BOUNDS", f"pixel size {self.dx}x{self.dy} deg exceeds 1 degree")
        if self.north > 90.0 or self.south < -90.0 or self.west < -181.0 or self.east > 181.0:
            raise InputError("E004_BOUNDS", f"grid extent {self.extent} is outside lon/lat range")

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def named(cls, name: str) -> "Grid":
        """A built-in world grid (84N to 56S, 180W to 180E).

        >>> Grid.named("5m").shape
        (1680, 4320)
        """
        if name not in NAMED_GRIDS:
            raise InputError("E002_RASTER_MISMATCH", f"unknown grid {name!r}; built-in grids: {sorted(NAMED_GRIDS)}")
        d = NAMED_GRIDS[name]
        return cls(west=-180.0, north=WORLD_NORTH, dx=d, dy=d, ncols=int(round(360.0 / d)),
                   nrows=int(round((WORLD_NORTH - WORLD_SOUTH) / d)), name=name)

    @classmethod
    def from_transform(cls, transform, width: int, height: int, name: str = "raster") -> "Grid":
        """A grid from an affine transform (rasterio/affine ``Affine``) of a north-up raster."""
        a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
        if b != 0.0 or d != 0.0 or a <= 0.0 or e >= 0.0:
            raise InputError("E002_RASTER_MISMATCH", f"raster is not north-up lon/lat (transform {tuple(transform)[:6]})")
        return cls(west=c, north=f, dx=a, dy=-e, ncols=int(width), nrows=int(height), name=name)

    @classmethod
    def from_geotiff(cls, path: str) -> "Grid":
        """The grid of a GeoTIFF; the raster must be geographic (EPSG:4326)."""
        import rasterio

        try:
            with rasterio.open(path) as src:
                if src.crs is None or not src.crs.is_geographic:
                    raise InputError("E007_CRS_MISMATCH", f"raster CRS is {src.crs}, expected geographic lon/lat",
                                     path=path)
                return cls.from_transform(src.transform, src.width, src.height)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError("E009_INPUT_UNREADABLE", f"cannot read raster: {exc}", path=path) from exc

    @classmethod
    def from_params(cls, params: dict) -> "Grid":
        """Inverse of :meth:`to_params`."""
        floats = {k: float.fromhex(params[k]) if isinstance(params[k], str) else float(params[k])
                  for k in ("west", "north", "dx", "dy")}
        return cls(**floats, ncols=int(params["ncols"]), nrows=int(params["nrows"]), name=params["name"])

    def to_params(self) -> dict:
        """Canonical parameters (floats as ``float.hex`` so the parameter hash is exact)."""
        return {"name": self.name, "west": self.west.hex(), "north": self.north.hex(), "dx": self.dx.hex(),
                "dy": self.dy.hex(), "ncols": self.ncols, "nrows": self.nrows}

    # -- shape --------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrows, self.ncols)

    @property
    def east(self) -> float:
        return self.west + self.ncols * self.dx

    @property
    def south(self) -> float:
        return self.north - self.nrows * self.dy

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north)."""
        return (self.west, self.south, self.east, self.north)

    @property
    def n_cells(self) -> int:
        return self.nrows * self.ncols

    def window_transform(self, row0: int, col0: int):
        """Affine transform of a window whose top-left cell is (row0, col0)."""
        from affine import Affine

        return Affine(self.dx, 0.0, self.west + col0 * self.dx, 0.0, -self.dy, self.north - row0 * self.dy)

    # -- ids ----------------------------------------------------------------------------------------
    def tile_id(self, row, col) -> np.ndarray:
        """``row * ncols + col`` as uint64."""
        return np.asarray(row, dtype=np.uint64) * np.uint64(self.ncols) + np.asarray(col, dtype=np.uint64)

    def row_col(self, tile_id) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) as uint32; ids outside the grid raise E004_BOUNDS."""
        tid = np.asarray(tile_id, dtype=np.uint64)
        if tid.size and int(tid.max()) >= self.n_cells:
            bad = tid[tid >= np.uint64(self.n_cells)]
            raise InputError("E004_BOUNDS", f"tile_id outside the {self.nrows}x{self.ncols} grid",
                             rows=[{"tile_id": int(t)} for t in bad[:20]])
        ncols = np.uint64(self.ncols)
        return (tid // ncols).astype(np.uint32), (tid % ncols).astype(np.uint32)

    # -- geometry of cells (the single source of these floats) --------------------------------------
    def col_west(self, col) -> np.ndarray:
        return self.west + np.asarray(col, dtype=np.float64) * self.dx

    def col_east(self, col) -> np.ndarray:
        return self.west + (np.asarray(col, dtype=np.float64) + 1.0) * self.dx

    def row_north(self, row) -> np.ndarray:
        return self.north - np.asarray(row, dtype=np.float64) * self.dy

    def row_south(self, row) -> np.ndarray:
        return self.north - (np.asarray(row, dtype=np.float64) + 1.0) * self.dy

    def col_center(self, col) -> np.ndarray:
        return self.west + (np.asarray(col, dtype=np.float64) + 0.5) * self.dx

    def row_center(self, row) -> np.ndarray:
        return self.north - (np.asarray(row, dtype=np.float64) + 0.5) * self.dy

    def bounds(self, tile_id) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(west_lon, east_lon, south_lat, north_lat) of tiles, unwrapped (may overhang +-180 slightly)."""
        row, col = self.row_col(tile_id)
        return self.col_west(col), self.col_east(col), self.row_south(row), self.row_north(row)

    def centroid(self, tile_id) -> tuple[np.ndarray, np.ndarray]:
        """(centroid_lon, centroid_lat) of tiles."""
        row, col = self.row_col(tile_id)
        return self.col_center(col), self.row_center(row)

    @cached_property
    def row_area_m2(self) -> np.ndarray:
        """Ellipsoidal (WGS84) area of one cell in each row, in m^2 (cells of a row are congruent).

        Uses ``pyproj.Geod`` on the cell outline with its east-west edges densified so they follow the
        parallels rather than a geodesic chord.
        """
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        n_edge = 16
        lon_s = np.linspace(0.0, self.dx, n_edge + 1)
        lons = np.concatenate([lon_s, lon_s[::-1]])
        out = np.empty(self.nrows, dtype=np.float64)
        for r in range(self.nrows):
            south, north = float(self.row_south(r)), float(self.row_north(r))
            lats = np.concatenate([np.full(n_edge + 1, south), np.full(n_edge + 1, north)])
            area, _ = geod.polygon_area_perimeter(lons, lats)
            out[r] = abs(area)
        return out

    def pixel_area_m2(self, row) -> np.ndarray:
        return self.row_area_m2[np.asarray(row, dtype=np.int64)]

    # -- points in cells (S6 jitter, S7 synthesis, S9 checks) ---------------------------------------
    def jitter_deltas(self, tile_id, u_lon, u_lat) -> tuple[np.ndarray, np.ndarray]:
        """Candidate (delta_lon, delta_lat) of a uniform point in each tile (contract §8).

        ``lon = west + u_lon * width`` and ``lat = south + u_lat * height``; the deltas are relative to the
        centroid, in unwrapped degrees.  The absolute point is :meth:`absolute_point` of these deltas, which
        is what S6 tests and S7 publishes, so both see the same floats.
        """
        west, east, south, north = self.bounds(tile_id)
        width = east - west
        width = np.where(width < 0.0, width + 360.0, width)
        lon = west + np.asarray(u_lon) * width
        lat = south + np.asarray(u_lat) * (north - south)
        c_lon, c_lat = self.centroid(tile_id)
        return lon - c_lon, lat - c_lat

    def absolute_point(self, tile_id, delta_lon, delta_lat) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) = centroid + delta, lon wrapped into [-180, 180)."""
        c_lon, c_lat = self.centroid(tile_id)
        return wrap_lon(c_lon + np.asarray(delta_lon)), c_lat + np.asarray(delta_lat)

    def contains_point(self, tile_id, lon, lat) -> np.ndarray:
        """True where (lon, lat) is inside its tile or on its edge, across the antimeridian too."""
        west, east, south, north = self.bounds(tile_id)
        lon = np.asarray(lon, dtype=np.float64)
        c_lon = (west + east) * 0.5
        # bring lon to the copy nearest the cell (a cell overhanging 180 may hold a wrapped point)
        lon = np.where(lon - c_lon > 180.0, lon - 360.0, np.where(lon - c_lon < -180.0, lon + 360.0, lon))
        return (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
