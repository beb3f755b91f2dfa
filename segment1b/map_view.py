"""Map views in lon/lat: the box that shows the world or one country, across the antimeridian when needed.

A :class:`MapView` is a lon/lat box in *display longitudes*: plain longitudes, or, for a country with
parts on both sides of ±180° (Fiji, Russia, the United States with the western Aleutians), longitudes
shifted into 0..360 (``lon + 360`` where ``lon < 0``) so that the country is drawn in one piece.

Which box shows a country (:func:`country_view`):

1. take the representation (plain or shifted) in which the bounding box of all the country's polygons is
   narrower (ties: plain);
2. keep the main polygon (the one holding most of the given sites; without sites, the largest) and every
   polygon whose bounding box meets the main polygon's box widened by ``near`` times its larger side (at
   least 1°): Corsica stays with France, French Guiana and Réunion don't (the map says how many sites
   fall outside the view), and Kiribati is shown around Tarawa, where its people and sites are, rather
   than around its largest atoll;
3. pad the union of their boxes by ``pad`` of its size, at least ``min_span`` degrees wide and high.

Pure geometry on Shapely/NumPy: no I/O, no plotting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

__all__ = ["MapView", "country_view", "world_view"]


@dataclass(frozen=True)
class MapView:
    """A lon/lat box in display longitudes (see the module docstring)."""

    west: float
    east: float
    south: float
    north: float
    shifted: bool = False

    def display_lon(self, lon) -> np.ndarray:
        """Longitudes in this view's display coordinates (``lon + 360`` for ``lon < 0`` when shifted).

        >>> MapView(170.0, 190.0, -20.0, -10.0, shifted=True).display_lon([179.5, -179.5]).tolist()
        [179.5, 180.5]
        """
        lon = np.asarray(lon, dtype=np.float64)
        return np.where(lon < 0, lon + 360.0, lon) if self.shifted else lon

    def contains(self, lon, lat) -> np.ndarray:
        """Which points (plain lon/lat) fall inside the box (boundary included)."""
        x, y = self.display_lon(lon), np.asarray(lat, dtype=np.float64)
        return (x >= self.west) & (x <= self.east) & (y >= self.south) & (y <= self.north)

    @property
    def aspect(self) -> float:
        """Data aspect (y/x) of the drawing: 1/cos(mid-latitude), so regional shapes look right.

        Views wider than a hemisphere use 1 (plate carrée): no single latitude is right for the world.

        >>> round(MapView(0.0, 10.0, 50.0, 70.0).aspect, 3), world_view().aspect
        (2.0, 1.0)
        """
        if self.east - self.west >= 180.0:
            return 1.0
        mid = min(abs(0.5 * (self.south + self.north)), 80.0)
        return float(1.0 / np.cos(np.radians(mid)))

    def fit(self, width_px: float, height_px: float, aspect: float | None = None) -> MapView:
        """The view widened (in lon or lat, about its centre) to fill a ``width_px`` x ``height_px`` frame.

        ``aspect`` defaults to :attr:`aspect`.  Latitudes stay within [-90, 90]: the window slides, and a
        frame too tall for the whole globe keeps the globe's height (the drawing then leaves a margin).

        >>> v = MapView(0.0, 10.0, 40.0, 50.0).fit(400, 200, aspect=1.0)
        >>> v.west, v.east, v.south, v.north
        (-5.0, 15.0, 40.0, 50.0)
        >>> v = MapView(0.0, 10.0, 40.0, 50.0).fit(200, 400, aspect=1.0)
        >>> v.west, v.east, v.south, v.north
        (0.0, 10.0, 35.0, 55.0)
        """
        a = self.aspect if aspect is None else float(aspect)
        dx, dy = self.east - self.west, self.north - self.south
        want = width_px / height_px  # screen width / height = dx / (a * dy)
        west, east, south, north = self.west, self.east, self.south, self.north
        if dx / (a * dy) < want:
            mid, half = 0.5 * (west + east), 0.5 * want * a * dy
            west, east = mid - half, mid + half
        else:
            mid, half = 0.5 * (south + north), min(0.5 * dx / (want * a), 90.0)
            south, north = mid - half, mid + half
            if south < -90.0:
                south, north = -90.0, north - 90.0 - south
            if north > 90.0:
                south, north = south - (north - 90.0), 90.0
        return MapView(float(west), float(east), float(south), float(north), self.shifted)


def world_view(south: float = -56.0, north: float = 84.0, margin: float = 2.0) -> MapView:
    """The whole world between two latitudes (default: the built-in grids' 56S..84N) plus a margin.

    >>> world_view()
    MapView(west=-180.0, east=180.0, south=-58.0, north=86.0, shifted=False)
    """
    return MapView(-180.0, 180.0, max(south - margin, -90.0), min(north + margin, 90.0), False)


# sites used to find the main polygon: an even-strided sample is plenty and keeps the query cheap
MAX_SAMPLE_SITES = 20_000


def _main_part(parts: np.ndarray, area: np.ndarray, lon, lat) -> int:
    """Index of the polygon holding most of the sites (ties and no sites: the largest polygon)."""
    if lon is None or not len(lon):
        return int(np.argmax(area))
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    step = max(len(lon) // MAX_SAMPLE_SITES, 1)
    points = shapely.points(lon[::step], lat[::step])
    _, part = shapely.STRtree(parts).query(points, predicate="intersects")
    hits = np.bincount(part, minlength=len(parts))
    if not hits.any():
        return int(np.argmax(area))
    return int(np.lexsort((-area, -hits))[0])


def country_view(geometry, *, sites_lon=None, sites_lat=None, pad: float = 0.05, near: float = 0.25,
                 min_span: float = 0.25) -> MapView:
    """The view of one country (see the module docstring for the rule).

    Parameters
    ----------
    geometry : shapely geometry
        The country's (multi)polygon in EPSG:4326, split at the antimeridian as usual.
    sites_lon, sites_lat : array-like, optional
        The country's sites (plain lon/lat); the polygon holding most of them is the main one.
    pad : float
        Margin around the kept polygons, as a fraction of their extent.
    near : float
        Polygons within ``near`` times the main polygon's larger side are kept with it.
    min_span : float
        Smallest width and height of the view in degrees (a micro-state still gets some context).

    Returns
    -------
    MapView

    Raises
    ------
    ValueError
        The geometry has no non-empty polygon.

    Examples
    --------
    >>> from shapely.geometry import MultiPolygon, box
    >>> fj = MultiPolygon([box(177.2, -19.2, 180.0, -16.1), box(-180.0, -18.3, -178.6, -16.4)])
    >>> v = country_view(fj, pad=0.0)
    >>> v.shifted, v.west, v.east
    (True, 177.2, 181.4)
    >>> fr = MultiPolygon([box(-5, 42, 8, 51), box(8.5, 41.3, 9.6, 43), box(55.2, -21.4, 55.8, -20.9)])
    >>> v = country_view(fr, pad=0.0)
    >>> v.shifted, v.west, v.east, v.south, v.north
    (False, -5.0, 9.6, 41.3, 51.0)
    >>> country_view(fr, sites_lon=[55.5, 55.6, 2.0], sites_lat=[-21.0, -21.1, 48.0], pad=0.0).west
    55.2
    """
    parts = shapely.get_parts(geometry)
    parts = parts[~shapely.is_empty(parts)]
    if not len(parts):
        raise ValueError("the country geometry is empty; nothing to show")
    bounds, area = shapely.bounds(parts), shapely.area(parts)
    shifted_bounds = bounds.copy()
    west_of_0 = bounds[:, 2] <= 0.0
    shifted_bounds[west_of_0, 0] += 360.0
    shifted_bounds[west_of_0, 2] += 360.0

    def width(b: np.ndarray) -> float:
        return float(b[:, 2].max() - b[:, 0].min())

    shifted = width(shifted_bounds) < width(bounds)
    b = shifted_bounds if shifted else bounds
    main = b[_main_part(parts, area, sites_lon, sites_lat)]
    reach = max(near * max(main[2] - main[0], main[3] - main[1]), 1.0)
    keep = ((b[:, 0] <= main[2] + reach) & (b[:, 2] >= main[0] - reach)
            & (b[:, 1] <= main[3] + reach) & (b[:, 3] >= main[1] - reach))
    west, south = b[keep, 0].min(), b[keep, 1].min()
    east, north = b[keep, 2].max(), b[keep, 3].max()
    dx, dy = east - west, north - south
    west, east = west - pad * dx, east + pad * dx
    south, north = south - pad * dy, north + pad * dy
    if east - west < min_span:
        mid = 0.5 * (west + east)
        west, east = mid - 0.5 * min_span, mid + 0.5 * min_span
    if north - south < min_span:
        mid = 0.5 * (south + north)
        south, north = mid - 0.5 * min_span, mid + 0.5 * min_span
    return MapView(float(west), float(east), float(max(south, -90.0)), float(min(north, 90.0)), bool(shifted))
