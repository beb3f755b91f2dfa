"""What ``segment1b prepare`` works from, resolved on the client before anything is written.

:func:`resolve_inputs` reads the grid (a named one or a raster's), the country polygons and the population
source, and gives their ``parameter_hash``; ``segment1b run`` also calls it to find out whether a run is
complete.  :func:`publish_reference` records, write-once, what a ``parameter_hash`` stands for (the parameters
and the cleaned polygons) where every worker of S6-S9 can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from segment1b import refdata
from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.grid import NAMED_GRIDS, Grid
from segment1b.identity import WEIGHT_BASES, SegmentParameters
from segment1b.population_proxy import ProxyParams
from segment1b.storage import Storage, canonical_json

__all__ = ["ResolvedInputs", "resolve_inputs", "resolve_grid", "publish_reference"]


def resolve_grid(grid: str | Grid | None, raster: str | None) -> Grid:
    """The grid: from the raster when given (a named grid must then match it: E002), else the named grid."""
    named = Grid.named(grid) if isinstance(grid, str) else grid
    if raster is None:
        if named is None:
            raise InputError(
                "E002_RASTER_MISMATCH",
                f"no grid: give a named grid ({sorted(NAMED_GRIDS)}) or a population raster",
            )
        return named
    from_raster = Grid.from_geotiff(raster)
    if named is not None:
        tol = 1e-9 * named.dx
        same = (
            named.shape == from_raster.shape
            and abs(named.west - from_raster.west) <= tol
            and abs(named.north - from_raster.north) <= tol
            and abs(named.dx - from_raster.dx) <= tol
            and abs(named.dy - from_raster.dy) <= tol
        )
        if not same:
            raise InputError(
                "E002_RASTER_MISMATCH",
                "the population raster's grid differs from the requested grid",
                path=raster,
                rows=[
                    {"source": "grid " + named.name, **_grid_row(named)},
                    {"source": "raster", **_grid_row(from_raster)},
                ],
                hint="omit --grid: the raster defines the grid",
            )
    return from_raster


def _grid_row(g: Grid) -> dict:
    return {"west": g.west, "north": g.north, "dx": g.dx, "dy": g.dy, "ncols": g.ncols, "nrows": g.nrows}


@dataclass(frozen=True)
class ResolvedInputs:
    """What prepare works from: the grid, the polygons, the population source and the parameters."""

    grid: Grid
    polys: refdata.Countries
    places: refdata.Places | None
    proxy: ProxyParams | None
    basis: str
    params: SegmentParameters
    raster: str | None = None  # the population GeoTIFF of basis ``population``


def resolve_inputs(*, grid: str | Grid | None = None, countries: str | None = None, raster: str | None = None,
                   basis: str | None = None, dp: int = 8, iso_column: str | None = None) -> ResolvedInputs:
    """Resolve prepare's inputs and their ``parameter_hash`` (reads the inputs; writes nothing).

    ``segment1b run`` uses it to find out, before anything is written, whether a run is already complete.

    Raises
    ------
    Segment1BError
        E001-E009 for unreadable or invalid inputs, E105 for an unknown basis, E104 for dp.
    """
    the_grid = resolve_grid(grid, raster)
    basis = basis or ("population" if raster else "population_proxy")
    if basis not in WEIGHT_BASES:
        raise InputError(
            "E105_NORMALIZATION", f"weight basis {basis!r} unknown; choose one of {WEIGHT_BASES}"
        )
    if basis == "population" and raster is None:
        raise InputError(
            "E002_RASTER_MISMATCH",
            "basis 'population' needs a population raster (--raster)",
            hint="give --raster pop.tif, or use --basis population_proxy",
        )
    polys = refdata.load_countries(countries, iso_column) if countries else refdata.default_countries()
    places = refdata.default_places() if basis == "population_proxy" else None
    proxy = ProxyParams() if basis == "population_proxy" else None
    population_sha = (
        places.sha256 if places is not None else refdata.file_sha256(raster) if basis == "population" else ""
    )
    params = SegmentParameters(
        grid=the_grid.to_params(),
        countries_sha256=polys.sha256,
        basis=basis,
        dp=dp,
        population_sha256=population_sha,
        proxy=proxy.canonical() if proxy else {},
    )
    return ResolvedInputs(the_grid, polys, places, proxy, basis, params, raster)


def publish_reference(storage: Storage, polys: refdata.Countries, params: SegmentParameters) -> None:
    """Record what a parameter_hash stands for where every worker can read it (write-once).

    * ``parameters``: the canonical :class:`SegmentParameters` JSON (the grid and digests for S6-S9);
    * ``reference_countries``: the cleaned polygons as GeoParquet (EPSG:4326), for S6 jitter and S9 checks.
    """
    import io

    import geopandas as gpd

    storage.publish_file(path_for("parameters", parameter_hash=params.parameter_hash),
                         canonical_json(params.canonical()), "parameters")
    rel = path_for("reference_countries", countries_sha256=polys.sha256)
    if not storage.exists(rel):
        frame = gpd.GeoDataFrame({"country_iso": list(polys.iso)}, geometry=list(polys.geometry), crs="EPSG:4326")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        storage.write_bytes(rel, buf.getvalue())
