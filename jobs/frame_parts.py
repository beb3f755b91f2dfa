"""Per-partition functions of :mod:`jobs.frames`: pandas partitions in, the CLI's kernels, pandas out.

Each function takes one partition (any mix of countries, in any order), splits it by country, calls the
same ``segment1b`` kernel as ``segment1b run`` (:mod:`jobs.place`) on each country's rows, and returns a
frame in the contract's writer-sort order.  Every draw is keyed by (merchant, country, site), so a row
does not depend on which partition it is in.  The recipes :class:`Surfaces` and :class:`Streams` are
what travels to the workers; the published surfaces behind them are read on the worker, once per process.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import geopandas
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from segment1b import rng
from segment1b.contracts import check_token
from segment1b.errors import InputError
from segment1b.keys import iso_code, iso_of, iso_strings, iso_u16
from segment1b.s4_alloc_plan import WeightPrefix, allocate_pairs
from segment1b.s5_site_tile import assign_sites
from segment1b.s6_jitter import jitter_sites
from segment1b.storage import Storage

from .parameters import RunParameters, load_parameters
from .place_tasks import country_prefix  # the CLI's S4 weight prefix of one country (issue 16: one engine)
from .refcache import country_geometry
from .tiles import country_row_groups

__all__ = ["Surfaces", "Streams", "CRS", "ISO_DTYPE", "REQUIREMENTS_META", "COUNTRIES_META", "PREFIX_META",
           "PLAN_META", "SITES_META", "S5_EVENTS_META", "S6_EVENTS_META", "LOCATED_META", "iso_array",
           "country_rows", "prefix_part", "prefix_table", "allocate_part", "assign_part", "sites_part", "jitter_part",
           "locate_part"]

CRS = "EPSG:4326"
ISO_DTYPE = pd.StringDtype("pyarrow")  # what dask.dataframe gives string columns read from Parquet
U64, I64, U16, F64 = np.dtype("uint64"), np.dtype("int64"), np.dtype("uint16"), np.dtype("float64")
COUNTERS = {"rng_counter_before_lo": U64, "rng_counter_before_hi": U64, "rng_counter_after_lo": U64,
            "rng_counter_after_hi": U64}


def _meta(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


KEYS = {"merchant_id": U64, "legal_country_iso": ISO_DTYPE}
SITE = {**KEYS, "site_order": I64, "tile_id": U64}
REQUIREMENTS_META = _meta({**KEYS, "n_sites": I64})  # s3_requirements
COUNTRIES_META = _meta({"country": U16})  # ISO code (segment1b.keys.iso_code)
# the S4 weight prefix of every country, rows in S4 order per country (WeightPrefix)
PREFIX_META = _meta({"country": U16, "tile_id": U64, "weight_fp": U64, "K": U64, "n_tiles": I64})
PLAN_META = _meta({**KEYS, "tile_id": U64, "n_sites_tile": I64})  # s4_alloc_plan
SITES_META = _meta(SITE)  # s5_site_tile_assignment
# RNG events as the contract's JSON lines carry them, without the per-run and constant envelope fields
S5_EVENTS_META = _meta({**SITE, "u": F64, **COUNTERS})
S6_EVENTS_META = _meta({**SITE, "attempt_index": I64, "accepted": np.dtype(bool), "delta_lat_deg": F64,
                        "delta_lon_deg": F64, **COUNTERS})
LOCATED_META = geopandas.GeoDataFrame(
    _meta({**SITE, "delta_lat_deg": F64, "delta_lon_deg": F64, "lon_deg": F64, "lat_deg": F64}),
    geometry=geopandas.GeoSeries([], crs=CRS))


def iso_array(codes: np.ndarray) -> pd.arrays.ArrowStringArray:
    """uint16 ISO codes as a pandas string column of :data:`ISO_DTYPE`."""
    return pd.arrays.ArrowStringArray(iso_strings(codes))


def _codes(column: pd.Series) -> np.ndarray:
    return iso_u16(pa.array(column))


# ---------------------------------------------------------------------------------------------------------
# recipes

def _options_json(options: dict | None) -> str:
    return json.dumps(options or {}, sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _parameters(root: str, options_json: str, parameter_hash: str) -> RunParameters:
    return load_parameters(Storage(root, json.loads(options_json)), parameter_hash)


@functools.lru_cache(maxsize=8)
def _row_groups(root: str, options_json: str, parameter_hash: str) -> tuple[dict, dict]:
    storage = Storage(root, json.loads(options_json))
    return (country_row_groups(storage, "tile_weights", parameter_hash),
            country_row_groups(storage, "tile_index", parameter_hash))


@dataclass(frozen=True)
class Surfaces:
    """The prepared tile surfaces of one ``parameter_hash`` in a data root (S1/S2, grid, polygons).

    A recipe: building it reads nothing.  On a worker, the recorded parameters (grid, polygons' digest),
    the tile datasets' row-group index and each country's prepared polygon are read once per process.

    Parameters
    ----------
    root : str
        Data root: a folder or an fsspec URL every worker can reach.
    parameter_hash : str
        64 lowercase hex (printed by ``segment1b prepare`` and ``segment1b run``).
    storage_options : dict, optional
        fsspec options of the data root.
    """

    root: str
    parameter_hash: str
    storage_options: dict | None = field(default=None, hash=False)

    def __post_init__(self):
        check_token("parameter_hash", self.parameter_hash)

    @property
    def storage(self) -> Storage:
        return Storage(self.root, self.storage_options)

    def parameters(self) -> RunParameters:
        """Grid and polygons recorded for ``parameter_hash`` (E310 unless the record hashes to it)."""
        return _parameters(self.root, _options_json(self.storage_options), self.parameter_hash)

    def row_groups(self) -> tuple[dict, dict]:
        """Country -> row groups of ``tile_weights`` and of ``tile_index`` (footers only)."""
        return _row_groups(self.root, _options_json(self.storage_options), self.parameter_hash)


@dataclass(frozen=True)
class Streams:
    """The Philox substreams of one run identity: seed + manifest_fingerprint -> master material.

    ``parameter_hash`` is one of the substream components (contract §9).  A recipe: small and picklable.
    """

    seed: int
    manifest_fingerprint: str
    parameter_hash: str

    def __post_init__(self):
        object.__setattr__(self, "seed", int(check_token("seed", self.seed)))
        check_token("manifest_fingerprint", self.manifest_fingerprint)
        check_token("parameter_hash", self.parameter_hash)

    @functools.cached_property
    def master(self) -> bytes:
        return rng.master_material(self.seed, self.manifest_fingerprint)


# ---------------------------------------------------------------------------------------------------------
# partition functions

def _by_country(codes: np.ndarray, order: np.ndarray):
    """(code, positions) of each country, positions taken in ``order`` (which sorts by country first)."""
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(order) else []
    bounds = list(starts) + [len(order)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(sorted_codes[a]), order[a:b]


def _frame(columns: dict[str, np.ndarray], codes: np.ndarray, order_keys: tuple[str, ...],
           meta: pd.DataFrame) -> pd.DataFrame:
    """A partition in writer-sort order: ``order_keys`` are (merchant_id, <country>, then the rest)."""
    if not len(codes):
        return meta.copy()
    keys = [columns[k] for k in reversed(order_keys[2:])] + [codes, columns["merchant_id"]]
    order = np.lexsort(keys)
    data = {"merchant_id": columns["merchant_id"][order], "legal_country_iso": iso_array(codes[order])}
    data.update({k: columns[k][order] for k in meta.columns if k not in data})
    return pd.DataFrame(data)[list(meta.columns)].astype(meta.dtypes.to_dict())


def _stack(pieces: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([p[n] for p in pieces]) for n in names}


def country_rows(isos: tuple[str, ...]) -> pd.DataFrame:
    """A partition of ISO codes (of the ISO table) whose S4 weight prefixes one task computes."""
    return pd.DataFrame({"country": np.array([iso_code(iso) for iso in isos], U16)})


def prefix_part(countries: pd.DataFrame, max_n: pd.Series, surfaces: Surfaces) -> pd.DataFrame:
    """S4 weight prefix (``2·max n_sites`` heaviest tiles) of each country that has sites, as rows.

    Raises
    ------
    InputError
        ``E303_MISSING_WEIGHTS`` for a country with sites and no tile weights; ``E105``/``E505`` as the CLI
        (:func:`jobs.place_tasks.country_prefix`).
    """
    prefixes: list[WeightPrefix] = []
    for iso in map(iso_of, countries["country"].to_numpy(U16)):
        if iso not in max_n.index:
            continue
        weight_refs, index_refs = surfaces.row_groups()
        if iso not in weight_refs:
            raise InputError("E303_MISSING_WEIGHTS", f"{iso} has sites but no tile weights", dataset="tile_weights",
                             rows=[{"country_iso": iso}])
        prefixes.append(country_prefix(surfaces.storage, weight_refs[iso], index_refs.get(iso, []), iso,
                                        int(max_n[iso])))
    if not prefixes:
        return PREFIX_META.copy()
    return pd.DataFrame({
        "country": np.concatenate([np.full(len(p.tile_id), iso_code(p.country_iso), U16) for p in prefixes]),
        "tile_id": np.concatenate([p.tile_id for p in prefixes]),
        "weight_fp": np.concatenate([p.weight_fp for p in prefixes]),
        "K": np.concatenate([np.full(len(p.tile_id), p.K, U64) for p in prefixes]),
        "n_tiles": np.concatenate([np.full(len(p.tile_id), p.n_tiles, I64) for p in prefixes])})


def prefix_table(prefixes: pd.DataFrame) -> pd.DataFrame:
    """The prefixes of several ISO groups, gathered (chunk and aggregate of a reduction)."""
    return prefixes.reset_index(drop=True)


def _prefixes(table: pd.DataFrame, wanted: np.ndarray) -> dict[int, WeightPrefix]:
    """The prefixes of the ``wanted`` countries from the table (each country's rows are contiguous)."""
    country = table["country"].to_numpy(U16)
    starts = np.flatnonzero(np.r_[True, country[1:] != country[:-1]]) if len(country) else np.empty(0, int)
    where = {int(country[a]): (a, b) for a, b in zip(starts, np.r_[starts[1:], len(country)])}
    tile_id, weight_fp = table["tile_id"].to_numpy(U64), table["weight_fp"].to_numpy(U64)
    K, n_tiles = table["K"].to_numpy(U64), table["n_tiles"].to_numpy(I64)
    out = {}
    for code in map(int, wanted):
        if code not in where:
            raise ValueError(f"no S4 weight prefix for {iso_of(code)}; this is a bug in jobs.frames")
        a, b = where[code]  # rows in S4 order (weight desc, tile_id asc)
        out[code] = WeightPrefix(iso_of(code), tile_id[a:b], weight_fp[a:b], int(K[a]), int(n_tiles[a]))
    return out


def allocate_part(requirements: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """S4 rows (``s4_alloc_plan``) of the pairs of one partition; ``table`` holds every country's prefix."""
    merchant_id = requirements["merchant_id"].to_numpy(U64)
    codes = _codes(requirements["legal_country_iso"])
    n_sites = requirements["n_sites"].to_numpy(I64)
    prefixes = _prefixes(table, np.unique(codes))
    pieces = []
    for code, idx in _by_country(codes, np.lexsort((merchant_id, codes))):
        out = allocate_pairs(prefixes[code], merchant_id[idx], n_sites[idx])
        pieces.append({**out, "code": np.full(len(out["tile_id"]), code, U16)})
    if not pieces:
        return PLAN_META.copy()
    cols = _stack(pieces, ["merchant_id", "tile_id", "n_sites_tile", "code"])
    return _frame(cols, cols["code"], ("merchant_id", "code", "tile_id"), PLAN_META)


def assign_part(plan: pd.DataFrame, streams: Streams) -> pd.DataFrame:
    """S5 of one partition: each site's tile and its ``site_tile_assign`` draw (u and counters).

    Every plan row of a pair must be in the partition (as :func:`allocate_part` leaves them): a pair's
    n_sites is the sum of its plan rows.
    """
    merchant_id = plan["merchant_id"].to_numpy(U64)
    codes = _codes(plan["legal_country_iso"])
    tile_id, count = plan["tile_id"].to_numpy(U64), plan["n_sites_tile"].to_numpy(I64)
    pieces = []
    for code, idx in _by_country(codes, np.lexsort((tile_id, merchant_id, codes))):
        m = merchant_id[idx]
        starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]])
        out = assign_sites(iso_of(code), m[starts], np.add.reduceat(count[idx], starts), m, tile_id[idx],
                           count[idx], streams.master, streams.parameter_hash)
        pieces.append({**out, "code": np.full(len(out["tile_id"]), code, U16)})
    if not pieces:
        return S5_EVENTS_META.copy()
    cols = _stack(pieces, ["merchant_id", "site_order", "tile_id", "u", "before_lo", "before_hi", "after_lo",
                           "after_hi", "code"])
    cols.update(rng_counter_before_lo=cols["before_lo"], rng_counter_before_hi=cols["before_hi"],
                rng_counter_after_lo=cols["after_lo"], rng_counter_after_hi=cols["after_hi"])
    return _frame(cols, cols["code"], ("merchant_id", "code", "site_order"), S5_EVENTS_META)


def sites_part(events: pd.DataFrame) -> pd.DataFrame:
    """The ``s5_site_tile_assignment`` columns of :func:`assign_part`'s rows (one event per site)."""
    return events[list(SITES_META.columns)]


def jitter_part(sites: pd.DataFrame, surfaces: Surfaces, streams: Streams) -> pd.DataFrame:
    """S6 of one partition: every ``in_cell_jitter`` attempt of every site (the accepted one is the row).

    Raises
    ------
    IntegrityError
        ``E613_RESAMPLE_EXHAUSTED`` from :func:`segment1b.s6_jitter.jitter_sites`.
    """
    merchant_id = sites["merchant_id"].to_numpy(U64)
    codes = _codes(sites["legal_country_iso"])
    site_order, tile_id = sites["site_order"].to_numpy(I64), sites["tile_id"].to_numpy(U64)
    params = surfaces.parameters()
    pieces = []
    for code, idx in _by_country(codes, np.lexsort((site_order, merchant_id, codes))):
        iso = iso_of(code)
        geom = country_geometry(surfaces.storage, params.countries_sha256, iso)
        out = jitter_sites(params.grid, iso, geom, merchant_id[idx], site_order[idx], tile_id[idx], streams.master,
                           streams.parameter_hash)
        s = idx[out["ev_site"]]
        pieces.append({"merchant_id": merchant_id[s], "site_order": site_order[s], "tile_id": tile_id[s],
                       "attempt_index": out["ev_attempt"], "accepted": out["ev_accepted"],
                       "delta_lat_deg": out["ev_delta_lat"], "delta_lon_deg": out["ev_delta_lon"],
                       "rng_counter_before_lo": out["ev_before_lo"], "rng_counter_before_hi": out["ev_before_hi"],
                       "rng_counter_after_lo": out["ev_after_lo"], "rng_counter_after_hi": out["ev_after_hi"],
                       "code": np.full(len(s), code, U16)})
    if not pieces:
        return S6_EVENTS_META.copy()
    cols = _stack(pieces, list(pieces[0]))
    return _frame(cols, cols["code"], ("merchant_id", "code", "site_order", "attempt_index"), S6_EVENTS_META)


def locate_part(attempts: pd.DataFrame, surfaces: Surfaces) -> geopandas.GeoDataFrame:
    """S7 of one partition: the accepted attempts, at centroid + delta (the S7 arithmetic), as points."""
    rows = attempts[attempts["accepted"].to_numpy(bool)].reset_index(drop=True)
    tile_id = rows["tile_id"].to_numpy(U64)
    lon, lat = surfaces.parameters().grid.absolute_point(tile_id, rows["delta_lon_deg"].to_numpy(F64),
                                                         rows["delta_lat_deg"].to_numpy(F64))
    frame = rows[list(SITES_META.columns) + ["delta_lat_deg", "delta_lon_deg"]].assign(lon_deg=lon, lat_deg=lat)
    return geopandas.GeoDataFrame(frame, geometry=geopandas.GeoSeries(shapely.points(lon, lat), crs=CRS))
