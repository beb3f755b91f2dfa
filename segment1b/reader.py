"""Reading ``site_locations`` as a consumer: verify the S9 PASS flag first, then read (contract §10).

No PASS flag, no read.  :func:`verify_passed_flag` recomputes the flag of the Segment 1B validation
bundle from ``index.json`` and the indexed files, checks every ``site_locations`` file against the
bundle's ``egress_checksums.json``, and compares the listing of every folder the bundle's ``MANIFEST.json``
lists (tile surfaces, S3-S8, the catalogue, every RNG log part) with the listed names and sizes, so a flag
left over from before a later edit, deletion or addition does not vouch for the changed files (issue 14).
``deep=True`` also reads every listed file again and compares its SHA-256 (:func:`check_flag` says what was
checked).  :func:`open_site_locations` returns a lazy dask-geopandas GeoDataFrame of
points (EPSG:4326) over the parts in name (= writer-sort) order; :func:`export_geoparquet` writes one
GeoParquet file that plain geopandas reads.

This module works with any Dask scheduler (or none): it builds collections, it never imports
``distributed``.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import s9_manifest
from .bundle import EGRESS_CHECKSUMS_NAME, FLAG_NAME, INDEX_NAME, SEGMENT_1B, verify_bundle, verify_egress
from .contracts import check_token, path_for
from .errors import IntegrityError
from .storage import Storage

__all__ = ["verify_passed_flag", "check_flag", "FlagCheck", "open_site_locations", "export_geoparquet",
           "site_locations_parts", "GEOPARQUET_VERSION"]

GEOPARQUET_VERSION = "1.1.0"
CRS = "EPSG:4326"


def _storage(data_root: str, storage_options: dict | None) -> Storage:
    return Storage(data_root, storage_options)


def _read_optional(storage: Storage, rel: str) -> bytes | None:
    return storage.read_bytes(rel) if storage.exists(rel) else None


@dataclass(frozen=True)
class FlagCheck:
    """What :func:`check_flag` verified."""

    flag_sha256_hex: str
    #: files the bundle lists (besides its own), and the folders they are in
    files: int
    folders: int
    #: bytes of the listed files; bytes read and hashed (site_locations, and with ``deep`` every listed file)
    listed_bytes: int
    hashed_bytes: int
    deep: bool


def verify_passed_flag(data_root: str, seed: int, fingerprint: str, *, storage_options: dict | None = None,
                       deep: bool = False) -> str:
    """Check the S9 ``_passed.flag`` of (seed, fingerprint) and that the published files are what it checked.

    Reads the bundle, hashes every ``site_locations`` file and lists every folder the bundle lists
    (eagerly, in this process); ``deep`` also rehashes every listed file (RNG logs, tile surfaces, S3-S8).

    Parameters
    ----------
    data_root : str
        Folder or fsspec URL of the data root.
    seed : int
    fingerprint : str
        ``manifest_fingerprint`` (64 lowercase hex).
    storage_options : dict, optional
        fsspec options of the data root.
    deep : bool
        Compare the SHA-256 of every listed file too, not only names and sizes.

    Returns
    -------
    str
        The flag's ``sha256_hex``.

    Raises
    ------
    IntegrityError
        ``E910_FLAG`` (no flag: the validation failed or never ran; malformed flag; flag digest differs from
        the files; the bundle does not vouch for this seed), ``E909_INDEX`` (index missing, malformed, or a
        bundle file differs from its index entry), ``E908_BUNDLE_CONTENTS`` (a member is missing or
        malformed), ``E911_FINALITY`` (a ``site_locations`` file was added, removed or changed after
        validation; a listed file — an RNG log part, a tile surface or dataset part — is missing, has another
        size or, with ``deep``, other bytes; a listed folder holds a file that was not validated).
    InputError
        ``E309_VALUE_RANGE`` for a malformed seed or fingerprint.

    Examples
    --------
    >>> verify_passed_flag("/data/root", 42, "ab" * 32)  # doctest: +SKIP
    '5f0c...'
    """
    check = check_flag(data_root, seed, fingerprint, storage_options=storage_options, deep=deep)
    return check.flag_sha256_hex


def check_flag(data_root: str, seed: int, fingerprint: str, *, storage_options: dict | None = None,
               deep: bool = False) -> FlagCheck:
    """:func:`verify_passed_flag`, returning what was checked (for ``segment1b verify-flag``)."""
    seed = int(check_token("seed", seed))
    check_token("manifest_fingerprint", fingerprint)
    storage = _storage(data_root, storage_options)
    bundle = path_for("validation_bundle_1B", manifest_fingerprint=fingerprint)
    where = storage.url(bundle)

    def read_member(p: str) -> bytes:
        data = _read_optional(storage, posixpath.join(bundle, p))
        if data is None:
            raise FileNotFoundError(p)
        return data

    digest = verify_bundle(_read_optional(storage, bundle + INDEX_NAME), _read_optional(storage, bundle + FLAG_NAME),
                           read_member, rules=SEGMENT_1B, where=where).flag_sha256_hex
    rel = path_for("site_locations", seed=seed, manifest_fingerprint=fingerprint)
    egress = ({name: storage.file_sha256(rel + name) for name in storage.list_files(rel)}
              if storage.is_published(rel) else {})
    verify_egress(read_member(EGRESS_CHECKSUMS_NAME), rel, egress, where=where)
    try:
        manifest = json.loads(read_member("MANIFEST.json"))
        files = s9_manifest.listed_files(manifest)
        partitions = s9_manifest.unlisted_partitions(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"MANIFEST.json is malformed: {exc}",
                             dataset="validation_bundle_1B", path=where) from None
    folders = s9_manifest.listed_folders(files)
    rows = s9_manifest.listing_differences(files, {f: _sizes(storage, f) for f in folders})
    hashed = sum(storage.fs.size(storage.abspath(rel + name)) for name in egress)
    if deep and not rows:
        # site_locations was hashed above; every other listed file and unlisted partition is read again, a
        # few at a time (hashlib releases the GIL while it hashes; remote stores answer in parallel)
        paths = [p for p in files if not p.startswith(rel)]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            again = dict(zip(paths, pool.map(storage.file_sha256, paths)))
        hashed += sum(int(files[p]["bytes"] or 0) for p in again)
        rows = s9_manifest.digest_differences({p: f["sha256_hex"] for p, f in files.items()}, again)
        actual = {p: storage.partition_digest(p) for p in partitions if storage.is_published(p)}
        rows += [{"path": p, "problem": "missing"} for p in sorted(set(partitions) - set(actual))]
        rows += s9_manifest.digest_differences(partitions, actual)
    if rows:
        what = f"{len(rows)} file(s) the bundle validated are missing, changed or joined by unvalidated files"
        raise IntegrityError("E911_FINALITY", what, dataset="validation_bundle_1B", path=where, rows=rows,
                             hint="the data was modified after validation: do not use it; re-run the "
                             "segment, or `segment1b validate` to see what no longer checks out")
    listed = sum(int(f["bytes"] or 0) for f in files.values())
    return FlagCheck(digest, len(files), len(folders), listed, hashed, deep)


def _sizes(storage: Storage, folder: str) -> dict[str, int]:
    """File name -> size of a folder's published files (hidden staging and marker entries left out)."""
    base = storage.abspath(folder).rstrip("/")
    if not storage.fs.exists(base):
        return {}
    out = {}
    for path, info in storage.fs.find(base, detail=True).items():
        sub = path[len(base):].lstrip("/") if path.startswith(base) else path
        if not any(p.startswith(".") for p in sub.split("/")):
            out[sub] = int(info["size"])
    return out


def site_locations_parts(storage: Storage, seed: int, fingerprint: str) -> list[str]:
    """Part files of the published ``site_locations`` of (seed, fingerprint), in name (= merchant) order.

    Does not look at the flag (the pictures draw failed runs too); raises ``E901_ROW_MISSING`` when nothing
    is published.
    """
    rel = path_for("site_locations", seed=seed, manifest_fingerprint=fingerprint)
    parts = storage.parquet_parts(rel) if storage.is_published(rel) else []
    if not parts:
        raise IntegrityError("E901_ROW_MISSING",
                             "site_locations is not published for this seed and fingerprint",
                             dataset="site_locations", path=storage.url(rel),
                             hint="run `segment1b run` through s8 (or check --seed/--fingerprint)")
    return parts


def open_site_locations(data_root: str, seed: int, fingerprint: str, *, storage_options: dict | None = None,
                        verify: bool = True):
    """``site_locations`` as a lazy dask-geopandas GeoDataFrame of points in EPSG:4326.

    Columns: ``merchant_id, legal_country_iso, site_order, lon_deg, lat_deg`` and the ``geometry``
    points built from lon/lat.  Partitions follow the part files in name order, so the frame is in
    writer-sort order (merchant_id, legal_country_iso, site_order).  With ``verify`` (the default) the
    PASS flag and the egress checksums are checked first, eagerly (:func:`verify_passed_flag`); reading
    the data is lazy and runs on whatever Dask scheduler is active.

    Parameters
    ----------
    data_root : str
    seed : int
    fingerprint : str
    storage_options : dict, optional
        fsspec options of the data root (also used by the Parquet reader).
    verify : bool
        Refuse to open unless the flag verifies.  ``False`` is for inspecting failed runs.

    Returns
    -------
    dask_geopandas.GeoDataFrame

    Raises
    ------
    IntegrityError
        As :func:`verify_passed_flag`; ``E901_ROW_MISSING`` when ``site_locations`` is not published.

    Examples
    --------
    >>> gdf = open_site_locations("/data/root", 42, "ab" * 32)  # doctest: +SKIP
    >>> gdf.crs.to_epsg(), gdf.npartitions  # doctest: +SKIP
    (4326, 4)
    """
    import dask.dataframe as dd
    import dask_geopandas

    if verify:
        verify_passed_flag(data_root, seed, fingerprint, storage_options=storage_options)
    storage = _storage(data_root, storage_options)
    urls = [storage.fs.unstrip_protocol(storage.abspath(p))
            for p in site_locations_parts(storage, seed, fingerprint)]
    # partitioning=None: the seed=/fingerprint= folders are identity tokens, not data columns
    frame = dd.read_parquet(urls, storage_options=storage_options or None, index=False,
                            dataset={"partitioning": None})
    points = dask_geopandas.points_from_xy(frame, "lon_deg", "lat_deg", crs=CRS)
    # from_dask_dataframe drops the series' CRS from the collection's metadata; set it on the frame
    return dask_geopandas.from_dask_dataframe(frame, geometry=points).set_crs(CRS)


def _bbox(storage: Storage, parts: list[str]) -> list[float] | None:
    """[xmin, ymin, xmax, ymax] of all parts from their footer statistics (no data read)."""
    lo = np.array([np.inf, np.inf])
    hi = -lo
    for rel in parts:
        meta = storage.parquet_metadata(rel, dataset_id="site_locations")
        names = meta.schema.to_arrow_schema().names
        for rg in range(meta.num_row_groups):
            if meta.row_group(rg).num_rows == 0:
                continue
            for k, col in enumerate(("lon_deg", "lat_deg")):
                st = meta.row_group(rg).column(names.index(col)).statistics
                if st is None or not st.has_min_max:
                    return None
                lo[k], hi[k] = min(lo[k], st.min), max(hi[k], st.max)
    return None if not np.isfinite(lo).all() else [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]


def export_geoparquet(data_root: str, seed: int, fingerprint: str, out: str, *,
                      storage_options: dict | None = None, verify: bool = True) -> dict[str, Any]:
    """Write ``site_locations`` as one GeoParquet file (WKB points, EPSG:4326) for ``geopandas.read_parquet``.

    Streams part by part (memory bounded by one part), in writer-sort order, one row group per part.
    Local targets are written to a temporary sibling and renamed, so a reader never sees half a file.

    Parameters
    ----------
    data_root, seed, fingerprint, storage_options, verify
        As :func:`open_site_locations`.
    out : str
        Target file: a local path or an fsspec URL.

    Returns
    -------
    dict
        ``{"path", "rows", "bbox", "parts"}``.

    Raises
    ------
    IntegrityError
        As :func:`open_site_locations`.

    Examples
    --------
    >>> export_geoparquet("/data/root", 42, "ab" * 32, "sites.parquet")["rows"]  # doctest: +SKIP
    32187
    >>> import geopandas; geopandas.read_parquet("sites.parquet").crs.to_epsg()  # doctest: +SKIP
    4326
    """
    import fsspec
    import shapely
    from pyproj import CRS as ProjCRS

    if verify:
        verify_passed_flag(data_root, seed, fingerprint, storage_options=storage_options)
    storage = _storage(data_root, storage_options)
    parts = site_locations_parts(storage, seed, fingerprint)
    column = {"encoding": "WKB", "geometry_types": ["Point"], "crs": ProjCRS(CRS).to_json_dict()}
    bbox = _bbox(storage, parts)
    if bbox is not None:
        column["bbox"] = bbox
    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}
    first = storage.read_parquet(parts[0], dataset_id="site_locations")
    schema = first.schema.append(pa.field("geometry", pa.binary(), nullable=False)).with_metadata(
        {b"geo": json.dumps(geo).encode("utf-8")})
    local = "://" not in out or out.startswith("file://")
    target = out[len("file://"):] if out.startswith("file://") else out
    tmp = (posixpath.join(os.path.dirname(os.path.abspath(target)),
                          f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex}") if local else target)
    rows = 0
    try:
        with fsspec.open(tmp, "wb") as fh, pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for i, rel in enumerate(parts):
                table = first if i == 0 else storage.read_parquet(rel, dataset_id="site_locations")
                points = shapely.points(table["lon_deg"].to_numpy(), table["lat_deg"].to_numpy())
                wkb = pa.array(shapely.to_wkb(points), pa.binary())
                writer.write_table(pa.Table.from_arrays([*table.columns, wkb], schema=schema))
                rows += table.num_rows
        if local:
            os.replace(tmp, target)
    finally:
        if local and os.path.exists(tmp):
            os.remove(tmp)
    return {"path": out, "rows": rows, "bbox": bbox, "parts": len(parts)}
