"""The files of one run that ``segment1b map`` and ``segment1b report`` read, and where they write.

Everything here reads what a run left in a data root, eagerly and on the client (no Dask cluster): its
identity (:func:`resolve_identity`), its run reports, its S9 status and audit, the reference country
polygons and the sites of ``site_locations``.  Also the formatting both pictures share.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segment1b.contracts import TOKEN_PATTERNS, check_token, path_for, report_path
from segment1b.errors import InputError
from segment1b.identity import RunIdentity
from segment1b.reader import site_locations_parts
from segment1b.storage import Storage

from ..parts import token_values

__all__ = ["resolve_identity", "read_state_report", "run_folder", "validation_status", "latest_audit",
           "write_output", "reference_countries", "read_sites", "plural", "format_lon", "format_lat", "DPI", "INK",
           "add_run_options", "run_from_args"]

DPI = 100
INK = "#222222"


def resolve_identity(storage: Storage, seed: int, fingerprint: str,
                     parameter_hash: str | None = None) -> RunIdentity:
    """The run identity of (seed, fingerprint): the given parameter_hash or the only one published, + run_id.

    The run_id comes from the run receipt, else from the S9/S6/S5 run reports ("" when none has it).

    Raises
    ------
    InputError
        ``E309_VALUE_RANGE`` for malformed tokens; ``E310_PARAMETER_HASH_MISMATCH`` when no run, or several
        parameter hashes, are found for (seed, fingerprint) and none was given.
    """
    seed = int(check_token("seed", seed))
    check_token("manifest_fingerprint", fingerprint)
    if parameter_hash is None:
        parents = [posixpath.dirname(path_for(ds, seed=seed, manifest_fingerprint=fingerprint,
                                              parameter_hash="0" * 64).rstrip("/"))
                   for ds in ("run_folder", "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis")]
        found = sorted({h for parent in parents for h in token_values(storage, parent, "parameter_hash")})
        if len(found) != 1:
            what = f"{len(found)} parameter hashes ({', '.join(found)})" if found else "no run"
            raise InputError("E310_PARAMETER_HASH_MISMATCH",
                             f"{what} found for seed {seed} and fingerprint {fingerprint}",
                             path=storage.url(parents[0]),
                             hint="pass --parameter-hash" if found else
                             "check --data-root/--seed/--fingerprint, or run `segment1b run` first")
        parameter_hash = found[0]
    check_token("parameter_hash", parameter_hash)
    ident = RunIdentity(seed=seed, manifest_fingerprint=fingerprint, parameter_hash=parameter_hash)
    run_id = ""
    receipt = path_for("run_receipt", **ident.tokens)
    if storage.exists(receipt):
        run_id = str(storage.read_json(receipt).get("run_id") or "")
    for state in ("s9", "s6", "s5"):
        if run_id:
            break
        rep = read_state_report(storage, ident, state)
        run_id = str(((rep or {}).get("identity") or {}).get("run_id") or "")
    return replace(ident, run_id=run_id if TOKEN_PATTERNS["run_id"].match(run_id) else "")


def read_state_report(storage: Storage, ident: RunIdentity, state: str) -> dict[str, Any] | None:
    """State ``sN``'s run report of this run (S0 by fingerprint, S1/S2 by parameter_hash), or None."""
    tokens = ({"parameter_hash": ident.parameter_hash} if state in ("s1", "s2") else
              {"manifest_fingerprint": ident.manifest_fingerprint} if state == "s0" else ident.tokens)
    rel = report_path(state, **tokens)
    return storage.read_json(rel) if storage.exists(rel) else None


def run_folder(ident: RunIdentity) -> str:
    """The run folder (``control/run/...``) where ``run`` leaves its summary, reports and pictures."""
    return path_for("run_folder", **ident.tokens)


def validation_status(storage: Storage, ident: RunIdentity) -> tuple[str, dict[str, Any] | None]:
    """("PASS" | "FAIL" | "not validated", the bundle's s9_summary.json or None) of this run.

    The bundle is the one the S9 run report names (a failed validation publishes under ``_failed/``);
    without an S9 report, the passing bundle of the fingerprint if there is one.
    """
    rep = read_state_report(storage, ident, "s9")
    bundle = (rep or {}).get("bundle_path")
    if bundle is None and rep is None:
        candidate = path_for("validation_bundle_1B", manifest_fingerprint=ident.manifest_fingerprint)
        bundle = candidate if storage.exists(candidate + "s9_summary.json") else None
    summary = None
    if bundle and storage.exists(posixpath.join(bundle, "s9_summary.json")):
        summary = storage.read_json(posixpath.join(bundle, "s9_summary.json"))
    status = (rep or {}).get("status") or (summary or {}).get("status") or "not validated"
    return str(status), summary


def latest_audit(storage: Storage, ident: RunIdentity) -> dict[str, Any] | None:
    """The latest audit of this run (``segment1b validate`` after its PASS was published), or None.

    An audit never changes the run's status (:func:`validation_status`); reports show it beside it.
    """
    rel = path_for("s9_audit_report", **ident.tokens)
    if not storage.exists(rel):
        return None
    rep = storage.read_json(rel)
    return {k: rep.get(k) for k in ("status", "failed_codes", "plan_sample", "audit_path", "finished_utc")}


def write_output(storage: Storage, ident: RunIdentity, data: bytes, out: str | None, name: str) -> str:
    """Write ``data`` to ``out`` (local path or fsspec URL) or as ``name`` in the run folder; return where."""
    if out is None:
        rel = run_folder(ident) + name
        storage.write_bytes(rel, data)
        return storage.url(rel)
    import fsspec

    fs, path = fsspec.core.url_to_fs(out)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data)
    return out


def reference_countries(storage: Storage, countries_sha256: str):
    """The published reference country polygons (GeoDataFrame, EPSG:4326), as every state used them."""
    import geopandas as gpd

    rel = path_for("reference_countries", countries_sha256=countries_sha256)
    if not storage.exists(rel):
        raise InputError("E101_TILE_INDEX_MISSING",
                         "reference country polygons are not published in the data root",
                         dataset="reference_countries", path=storage.url(rel),
                         hint="run `segment1b prepare` (or `segment1b run`) for this parameter set")
    with storage.fs.open(storage.abspath(rel), "rb") as fh:
        return gpd.read_parquet(fh)


def read_sites(storage: Storage, ident: RunIdentity,
                country: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """lon, lat of the sites (of one country, or all) and the number of countries they are in."""
    parts = site_locations_parts(storage, ident.seed, ident.manifest_fingerprint)
    lon, lat, isos = [], [], set()
    filters = [("legal_country_iso", "=", country)] if country else None
    for part in parts:
        with storage.fs.open(storage.abspath(part), "rb") as fh:
            table = pq.read_table(fh, columns=["lon_deg", "lat_deg", "legal_country_iso"], filters=filters,
                                  read_dictionary=["legal_country_iso"])
        lon.append(table["lon_deg"].to_numpy())
        lat.append(table["lat_deg"].to_numpy())
        for chunk in table["legal_country_iso"].chunks:
            used = np.unique(chunk.indices.to_numpy(zero_copy_only=False))
            isos.update(chunk.dictionary.take(pa.array(used)).to_pylist())
    return np.concatenate(lon), np.concatenate(lat), len(isos)


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 site``, ``2 sites``."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def format_lon(value: float, _pos=None) -> str:
    """A (display) longitude as 12.5°E / 170°W; display longitudes past 180 wrap."""
    lon = (value + 180.0) % 360.0 - 180.0
    if abs(lon) < 1e-9 or abs(abs(lon) - 180.0) < 1e-9:
        return f"{abs(lon):g}°"
    return f"{abs(lon):g}°{'E' if lon > 0 else 'W'}"


def format_lat(value: float, _pos=None) -> str:
    """A latitude as 48.8°N / 33.9°S."""
    return f"{abs(value):g}°{'N' if value > 0 else 'S' if value < 0 else ''}"


# -- command line: both commands name one run the same way -------------------------------------------------

def add_run_options(p) -> None:
    """``--data-root``, ``--storage-options``, ``--seed``, ``--fingerprint`` and ``--parameter-hash``."""
    from .. import argtypes
    from ..session import add_identity_options, add_root_options

    add_root_options(p)
    add_identity_options(p)
    p.add_argument("--parameter-hash", type=argtypes.hex64, default=None, metavar="H",
                   help="parameter_hash of the run (needed only when several ran for the seed/fingerprint)")


def run_from_args(args) -> tuple[Storage, RunIdentity]:
    """The data root and the run identity the command line names (:func:`resolve_identity`)."""
    from ..session import storage_from_args

    storage = storage_from_args(args)
    return storage, resolve_identity(storage, args.seed, args.fingerprint, args.parameter_hash)
