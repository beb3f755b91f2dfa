"""``segment1b map``: where the sites of a run landed, as a PNG (issue #10).

Reads what a run left in a data root, on the client and eagerly (no Dask cluster).  :func:`render_map`
draws ``site_locations`` over the published reference country polygons (geopandas on matplotlib's Agg
canvas): the world, or one country (``country="FR"``) in the view of
:func:`segment1b.map_view.country_view` (countries across ±180° in 0..360 longitudes).  Up to
:data:`DENSITY_THRESHOLD` sites in view are drawn one dot each; above that a 2-D histogram in lon/lat (bins
of :data:`BIN_PX` x :data:`BIN_PX` pixels, log colour scale) shows the density: millions of dots only paint
the land one colour and hide where they pile up (a tile of 200 000 sites looks like a tile of 2).

Reading is column-projected Parquet (lon/lat and the dictionary-encoded country of ``site_locations``);
outlines are simplified to half a pixel before drawing, so a 3.2 M-site run draws in a couple of seconds
(``benchmarks/bench_pictures.py``).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from segment1b.contracts import iso_table
from segment1b.errors import InputError
from segment1b.identity import RunIdentity
from segment1b.storage import Storage

from .run_files import (DPI, INK, add_run_options, format_lat, format_lon, plural, read_sites, reference_countries,
                        run_from_args, validation_status, write_output)

if TYPE_CHECKING:
    from segment1b.map_view import MapView

__all__ = ["DENSITY_THRESHOLD", "MAP_MODES", "MAP_SIZE", "MapResult", "draw_map", "register", "render_map"]

MAP_MODES = ("auto", "points", "density")
DENSITY_THRESHOLD = 50_000  # above this many sites in view, "auto" draws a density grid instead of dots
BIN_PX = 2  # density bins are BIN_PX x BIN_PX pixels
MAP_SIZE = (1600, 800)  # default PNG size in pixels
SIZE_RANGE = (200, 8000)
MARGINS = {"left": 64, "right": 24, "top": 74, "bottom": 78}  # pixels: title above, colour bar/legend below

OCEAN, LAND, BORDER = "#dce9f2", "#f3f0ea", "#9b9b9b"
FOCUS_LAND, FOCUS_BORDER = "#e9e2d3", "#5a5a5a"
POINT = "#d62728"


@dataclass(frozen=True)
class MapResult:
    """What :func:`render_map` drew, and where.

    ``view`` is the final lon/lat box of the map area (display longitudes, see
    :class:`~segment1b.map_view.MapView`) and ``axes_box`` that area in image pixels
    ``(left, top, right, bottom)``, origin top-left, so :meth:`pixel_of` maps a site to its pixel.
    """

    path: str
    width: int
    height: int
    mode: str  # "points" | "density"
    country: str | None
    sites: int  # sites of the selection (all, or the country's)
    sites_in_view: int
    view: MapView
    axes_box: tuple[float, float, float, float]

    def pixel_of(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """(column, row) image coordinates of plain lon/lat points (floats; may lie outside the map)."""
        x = self.view.display_lon(lon)
        left, top, right, bottom = self.axes_box
        v = self.view
        col = left + (x - v.west) / (v.east - v.west) * (right - left)
        row = top + (v.north - np.asarray(lat, dtype=np.float64)) / (v.north - v.south) * (bottom - top)
        return col, row


def _check_map_args(country: str | None, width: int, height: int, mode: str) -> str | None:
    """Validate the options at the edge; return the ISO code (uppercase) or None."""
    if mode not in MAP_MODES:
        raise ValueError(f"mode must be one of {list(MAP_MODES)}, got {mode!r}")
    for name, v in (("width", width), ("height", height)):
        if not SIZE_RANGE[0] <= int(v) <= SIZE_RANGE[1]:
            raise ValueError(f"{name} must be {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, got {v}")
    if country is None:
        return None
    iso = str(country).upper()
    if iso not in iso_table():
        raise InputError("E302_FK_COUNTRY", f"{country!r} is not an ISO 3166-1 alpha-2 code of the ISO table",
                         hint="use a two-letter code such as FR, US or FJ")
    return iso


def _map_axes(fig, width: int, height: int, view: MapView, zoom: bool):
    """The map axes, its final view and aspect.  A zoom widens its view to fill the frame (more context
    around the country); the world keeps its box and the axes shrink to it (plate carrée, aspect 1)."""
    from segment1b.map_view import MapView

    m = MARGINS
    ax = fig.add_axes((m["left"] / width, m["bottom"] / height, 1 - (m["left"] + m["right"]) / width,
                       1 - (m["top"] + m["bottom"]) / height))
    ax.set_facecolor(OCEAN)
    aspect = view.aspect
    if zoom:
        frame = ax.get_window_extent()
        view = view.fit(frame.width, frame.height, aspect)
    ax.set_xlim(view.west, view.east)
    ax.set_ylim(view.south, view.north)
    ax.set_aspect(aspect, adjustable="box")
    ax.apply_aspect()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return ax, MapView(float(x0), float(x1), float(y0), float(y1), view.shifted), aspect


def _draw_outlines(ax, countries, view: MapView, focus_iso: str | None) -> None:
    """Country polygons that meet the view (and their +360 copies in a shifted view), simplified to half a
    pixel: the 10 m Natural Earth coasts have ~550 k vertices, most of them closer than a pixel."""
    import shapely

    tolerance = 0.5 * (view.east - view.west) / ax.get_window_extent().width
    shapes = countries[["country_iso", "geometry"]]
    layers = [shapes] + ([shapes.assign(geometry=shapes.translate(xoff=360.0))] if view.shifted else [])
    for layer in layers:
        seen = layer.cx[view.west:view.east, view.south:view.north]
        if not len(seen):
            continue
        simple = shapely.simplify(seen.geometry.values, tolerance, preserve_topology=False)
        seen = seen.assign(geometry=simple)
        focus = seen["country_iso"] == focus_iso
        # aspect=None: geopandas would otherwise set its own aspect and move the limits
        if (~focus).any():
            seen[~focus].plot(ax=ax, facecolor=LAND, edgecolor=BORDER, linewidth=0.35, zorder=1, aspect=None)
        if focus.any():
            seen[focus].plot(ax=ax, facecolor=FOCUS_LAND, edgecolor=FOCUS_BORDER, linewidth=0.8, zorder=2,
                             aspect=None)
    ax.set_xlim(view.west, view.east)
    ax.set_ylim(view.south, view.north)


def _draw_points(ax, x: np.ndarray, y: np.ndarray) -> None:
    s = float(np.clip(4.0e4 / max(len(x), 1), 1.0, 16.0))  # marker area in pt^2: smaller when many
    ax.scatter(x, y, s=s, c=POINT, linewidths=0, zorder=3, label="one dot per site")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.045), frameon=False, fontsize=10,
              markerscale=max(1.0, 6.0 / np.sqrt(s)))


def _draw_density(fig, ax, x: np.ndarray, y: np.ndarray, view: MapView, aspect: float) -> None:
    """A 2-D histogram of the points in bins of BIN_PX x BIN_PX pixels, log colours, empty bins clear."""
    from matplotlib.colors import LogNorm

    box = ax.get_window_extent()
    width, height = fig.bbox.width, fig.bbox.height
    nx, ny = max(int(box.width / BIN_PX), 1), max(int(box.height / BIN_PX), 1)
    extent = (view.west, view.east, view.south, view.north)
    hist, _, _ = np.histogram2d(x, y, bins=(nx, ny), range=(extent[:2], extent[2:]))
    image = ax.imshow(np.ma.masked_equal(hist.T, 0), origin="lower", extent=extent, cmap="plasma",
                      norm=LogNorm(vmin=1, vmax=max(float(hist.max()), 2.0)), interpolation="nearest",
                      zorder=3, aspect=aspect)
    ax.set_xlim(view.west, view.east)
    ax.set_ylim(view.south, view.north)
    km = (view.east - view.west) / nx * 111.32 * np.cos(np.radians(0.5 * (view.south + view.north)))
    left, bar_w = MARGINS["left"] / width, min(0.3, 360 / width)
    cax = fig.add_axes((left, 36 / height, bar_w, 11 / height))
    fig.colorbar(image, cax=cax, orientation="horizontal").ax.tick_params(labelsize=8)
    fig.text(left + bar_w + 12 / width, 36 / height,
             f"sites per bin of {BIN_PX}x{BIN_PX} px (about {km:,.0f} km wide at mid-latitude), log scale",
             fontsize=9, color="#444444")


def draw_map(storage: Storage, ident: RunIdentity, *, country: str | None = None,
             size: tuple[int, int] = MAP_SIZE, mode: str = "auto",
             density_threshold: int = DENSITY_THRESHOLD) -> tuple[bytes, MapResult]:
    """Draw the map of :func:`render_map` without writing it: (PNG bytes, result with ``path=""``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..parameters import load_parameters

    width, height = int(size[0]), int(size[1])
    iso = _check_map_args(country, width, height, mode)
    params = load_parameters(storage, ident.parameter_hash)
    countries = reference_countries(storage, params.countries_sha256)
    lon, lat, n_countries = read_sites(storage, ident, iso)
    status, _ = validation_status(storage, ident)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax, view, aspect = _map_axes(fig, width, height, _first_view(countries, iso, lon, lat, params.grid),
                                 zoom=iso is not None)
    _draw_outlines(ax, countries, view, iso)
    inside = view.contains(lon, lat)
    x, y = view.display_lon(lon)[inside], lat[inside]
    n, n_view = len(lon), int(inside.sum())
    drawn = "density" if mode == "density" or (mode == "auto" and n_view > density_threshold) else "points"
    if drawn == "points":
        _draw_points(ax, x, y)
    else:
        _draw_density(fig, ax, x, y, view, aspect)
    _style_axes(ax)
    _draw_titles(fig, (width, height), ident, iso, (n, n_view, n_countries), drawn, status)
    fig.canvas.draw()
    box = ax.get_window_extent()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue(), MapResult(
        path="", width=width, height=height, mode=drawn, country=iso, sites=n, sites_in_view=n_view,
        view=view, axes_box=(float(box.x0), float(height - box.y1), float(box.x1), float(height - box.y0)))


def _first_view(countries, iso: str | None, lon: np.ndarray, lat: np.ndarray, grid) -> MapView:
    """The world within the grid's latitudes, or the country's view (E302 when it has no polygon)."""
    from segment1b.map_view import country_view, world_view

    if iso is None:
        return world_view(grid.south, grid.north)
    geom = countries.loc[countries["country_iso"] == iso, "geometry"]
    if not len(geom):
        raise InputError("E302_FK_COUNTRY", f"{iso} has no polygon in the reference countries",
                         dataset="reference_countries",
                         hint=f"countries with polygons: {' '.join(sorted(countries['country_iso']))}")
    return country_view(geom.iloc[0], sites_lon=lon, sites_lat=lat)


def _style_axes(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xlabel("")  # geopandas labels the axes from the CRS; the tick labels already say °E/°N
    ax.set_ylabel("")
    ax.xaxis.set_major_formatter(FuncFormatter(format_lon))
    ax.yaxis.set_major_formatter(FuncFormatter(format_lat))
    ax.tick_params(labelsize=8, colors="#555555")
    ax.grid(color="white", linewidth=0.5, alpha=0.7, zorder=0)
    for spine in ax.spines.values():
        spine.set_edgecolor("#888888")


def _draw_titles(fig, size: tuple[int, int], ident: RunIdentity, iso: str | None, counts: tuple[int, int, int],
                 drawn: str, status: str) -> None:
    """Title (what is shown: sites, countries or the country) and subtitle (the run, its S9 status, how)."""
    n, n_view, n_countries = counts
    if iso is None:
        title = (f"Where the sites landed: {plural(n, 'site')} in "
                 f"{plural(n_countries, 'country', 'countries')}")
    else:
        outside = n - n_view
        title = (f"{iso_table().get(iso, iso)} ({iso}): {plural(n, 'site')}"
                 + (f", {outside:,} outside this view (other territories)" if outside else ""))
    how = "one dot per site" if drawn == "points" else "density of sites (log colour scale)"
    subtitle = (f"seed {ident.seed} · manifest_fingerprint {ident.manifest_fingerprint[:12]}… · "
                f"parameter_hash {ident.parameter_hash[:12]}… · S9 {status} · {how}")
    width, height = size
    fig.text(MARGINS["left"] / width, 1 - 30 / height, title, fontsize=15, weight="bold", color=INK)
    fig.text(MARGINS["left"] / width, 1 - 54 / height, subtitle, fontsize=9.5, color="#555555")


def render_map(storage: Storage, ident: RunIdentity, *, country: str | None = None, out: str | None = None,
               size: tuple[int, int] = MAP_SIZE, mode: str = "auto",
               density_threshold: int = DENSITY_THRESHOLD) -> MapResult:
    """Draw where the sites of a run landed and write a PNG (eager, on the client).

    Parameters
    ----------
    storage : Storage
        The data root of the run.
    ident : RunIdentity
        Seed, fingerprint and parameter_hash (see :func:`jobs.report.run_files.resolve_identity`).
    country : str, optional
        ISO code to zoom on; only its sites are drawn, over every outline in the view.
    out : str, optional
        Target file (local path or fsspec URL); default ``map.png`` / ``map-<ISO>.png`` in the run folder.
    size : (int, int)
        Width and height of the PNG in pixels.
    mode : {"auto", "points", "density"}
        One dot per site, a density grid, or dots up to ``density_threshold`` sites in the view.
    density_threshold : int
        See ``mode``.

    Returns
    -------
    MapResult

    Raises
    ------
    IntegrityError
        ``E901_ROW_MISSING`` when ``site_locations`` is not published.
    InputError
        ``E302_FK_COUNTRY`` for an unknown country or one without a polygon; ``E310_PARAMETER_HASH_MISMATCH``
        and ``E101_TILE_INDEX_MISSING`` when the parameters or reference polygons are missing.
    ValueError
        Bad ``mode`` or size.

    Examples
    --------
    >>> ident = resolve_identity(Storage("/data/root"), 42, "ab" * 32)  # doctest: +SKIP
    >>> render_map(Storage("/data/root"), ident, country="FR").path  # doctest: +SKIP
    '/data/root/control/run/seed=42/.../map-FR.png'
    """
    png, result = draw_map(storage, ident, country=country, size=size, mode=mode,
                           density_threshold=density_threshold)
    name = "map.png" if result.country is None else f"map-{result.country}.png"
    return replace(result, path=write_output(storage, ident, png, out, name))


# ---------------------------------------------------------------------------------------------------------
# command line


def _iso(text: str) -> str:
    if not (len(text) == 2 and text.isalpha()):
        raise argparse.ArgumentTypeError(f"expected a two-letter ISO country code such as FR, got {text!r}")
    return text.upper()


def _pixels(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not SIZE_RANGE[0] <= v <= SIZE_RANGE[1]:
        raise argparse.ArgumentTypeError(f"expected {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, got {v}")
    return v


def register(sub) -> None:
    """``segment1b map --data-root D --seed N --fingerprint F [--country ISO] ...`` (no cluster needed)."""
    p = sub.add_parser("map", help="draw where the sites landed (PNG: the world or one country)",
                       description="Draw site_locations over the reference country outlines as a PNG: "
                       f"the world, or one country with --country.  Up to {DENSITY_THRESHOLD:,} sites in "
                       "view are drawn as dots, more as a density grid (--mode to choose).  Default output: "
                       "map.png or map-<ISO>.png in the run folder (control/run/seed=.../fingerprint=.../"
                       "parameter_hash=.../).")
    add_run_options(p)
    p.add_argument("--country", type=_iso, default=None, metavar="ISO", help="zoom on one country (e.g. FR)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the PNG here instead of the run folder")
    p.add_argument("--width", type=_pixels, default=MAP_SIZE[0], metavar="PX", help=f"default {MAP_SIZE[0]}")
    p.add_argument("--height", type=_pixels, default=MAP_SIZE[1], metavar="PX", help=f"default {MAP_SIZE[1]}")
    p.add_argument("--mode", choices=MAP_MODES, default="auto",
                   help="points: one dot per site; density: 2-D histogram; auto (default): density above "
                   f"{DENSITY_THRESHOLD:,} sites in view")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    storage, ident = run_from_args(args)
    t0 = time.perf_counter()
    res = render_map(storage, ident, country=args.country, out=args.out, size=(args.width, args.height),
                     mode=args.mode)
    hidden = res.sites - res.sites_in_view
    print(f"wrote {res.path} ({res.width}x{res.height} px, {plural(res.sites, 'site')}"
          + (f", {hidden:,} outside the view" if hidden else "")
          + f", {res.mode}, {time.perf_counter() - t0:.1f} s)", file=out)
    return 0
