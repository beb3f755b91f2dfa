"""Per-worker caches of reference data: country geometries, prepared once per process and country.

Tasks receive a :class:`~segment1b.storage.Storage` recipe and the ``countries_sha256`` of the published
reference polygons; the first task on a worker that needs a country reads the GeoParquet (once per
process), builds and prepares that country's geometry, and later tasks on the same worker reuse it.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

import pyarrow.parquet as pq
import shapely

from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.storage import Storage

__all__ = ["country_geometry", "country_wkb"]

_lock = threading.RLock()


@lru_cache(maxsize=8)
def _wkb_by_country(root_url: str, options_json: str, countries_sha256: str) -> dict[str, bytes]:
    storage = Storage(root_url, json.loads(options_json))
    rel = path_for("reference_countries", countries_sha256=countries_sha256)
    if not storage.exists(rel):
        raise InputError("E101_TILE_INDEX_MISSING", "reference country polygons are not published in the data root",
                         dataset="reference_countries", path=storage.url(rel),
                         hint="run `segment1b prepare` for this parameter set")
    with storage.fs.open(storage.abspath(rel), "rb") as fh:
        table = pq.read_table(fh, columns=["country_iso", "geometry"])
    return dict(zip(table["country_iso"].to_pylist(), table["geometry"].to_pylist()))


def country_wkb(storage: Storage, countries_sha256: str, country_iso: str) -> bytes:
    """WKB of one country's polygons from the published reference (cached per process)."""
    with _lock:
        table = _wkb_by_country(storage.root_url, _options_json(storage), countries_sha256)
    if country_iso not in table:
        raise InputError("E302_FK_COUNTRY", f"{country_iso} has no polygon in the reference countries",
                         dataset="reference_countries", rows=[{"country_iso": country_iso}])
    return table[country_iso]


@lru_cache(maxsize=512)
def _prepared(root_url: str, options_json: str, countries_sha256: str, country_iso: str):
    geom = shapely.from_wkb(country_wkb(Storage(root_url, json.loads(options_json)), countries_sha256, country_iso))
    shapely.prepare(geom)
    return geom


def country_geometry(storage: Storage, countries_sha256: str, country_iso: str):
    """The country's prepared Shapely geometry, built once per worker process."""
    with _lock:
        return _prepared(storage.root_url, _options_json(storage), countries_sha256, country_iso)


def _options_json(storage: Storage) -> str:
    return json.dumps(storage.storage_options, sort_keys=True, default=str)
