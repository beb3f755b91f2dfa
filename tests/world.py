"""A tiny synthetic world for job tests, built without the S1/S2 code under test.

Countries (on the 30-arc-minute grid, cells of 0.5 degree):
- FR: a rectangle with a hole (a lake) and a jagged coast;
- FJ: two parts on both sides of the antimeridian;
- MC: a single small island of about one cell;
- DE: a rectangle sharing a border with FR.
Tiles are the cells whose centre is covered by the polygon (shapely, boundary inclusive), weights
are integer shares of K by pixel area with a plain largest remainder, and requirements are given.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from jobs.runtime import write_state_report
from segment1b.contracts import dataset, path_for
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, SegmentParameters
from segment1b.storage import Storage, part_name, write_parquet_bytes

GRID = Grid.named("30m")
FINGERPRINT = "ab" * 32


def countries() -> dict[str, object]:
    fr = Polygon([(-2, 43), (7, 43), (7, 50), (3, 51.3), (-2, 48.6)], holes=[[(2, 45), (3, 45), (3, 46), (2, 46)]])
    de = box(7, 47, 14, 54)
    fj = MultiPolygon([box(177.2, -19.2, 180.0, -16.1), box(-180.0, -18.3, -178.6, -16.4)])
    mc = box(7.35, 43.6, 7.9, 44.1)  # covers the centre (7.75, 43.75) of one cell only
    return {"DE": de, "FJ": fj, "FR": fr, "MC": mc}


def tiles_of(geom) -> np.ndarray:
    """Tile ids whose centre the geometry covers (independent of segment1b.s1_tile_index)."""
    west, south, east, north = shapely.bounds(geom)
    c0 = max(int((west - GRID.west) / GRID.dx) - 1, 0)
    c1 = min(int((east - GRID.west) / GRID.dx) + 2, GRID.ncols)
    r0 = max(int((GRID.north - north) / GRID.dy) - 1, 0)
    r1 = min(int((GRID.north - south) / GRID.dy) + 2, GRID.nrows)
    rows, cols = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    inside = shapely.intersects_xy(geom, GRID.col_center(cols), GRID.row_center(rows))
    return np.sort(GRID.tile_id(rows[inside], cols[inside]))


def weights_of(tile_id: np.ndarray, dp: int) -> np.ndarray:
    K = 10**dp
    rows, _ = GRID.row_col(tile_id)
    mass = (GRID.pixel_area_m2(rows) * 1000).astype(np.int64)  # integers: exact shares
    total = int(mass.sum())
    z = [int(m) * K // total for m in mass]
    rem = sorted(range(len(mass)), key=lambda i: (-(int(mass[i]) * K % total), int(tile_id[i])))
    for i in rem[: K - sum(z)]:
        z[i] += 1
    return np.array(z, dtype=np.uint64)


def countries_sha256() -> str:
    h = hashlib.sha256()
    for iso, geom in sorted(countries().items()):
        h.update(iso.encode() + shapely.to_wkb(geom))
    return h.hexdigest()


def build(storage: Storage, pairs: list[tuple[int, str, int]], *, seed: int = 42, dp: int = 8) -> RunIdentity:
    """Publish tile_index, tile_bounds, tile_weights (with S1/S2 run reports), reference countries and
    s3_requirements; return the identity."""
    import geopandas as gpd

    geoms = countries()
    params = SegmentParameters(grid=GRID.to_params(), countries_sha256=countries_sha256(), basis="area_m2", dp=dp)
    ph = params.parameter_hash
    index_parts, bounds_parts, weight_parts = [], [], []
    for iso, geom in sorted(geoms.items()):
        tid = tiles_of(geom)
        rows, cols = GRID.row_col(tid)
        cx, cy = GRID.centroid(tid)
        west, east, south, north = GRID.bounds(tid)
        n = len(tid)
        bounds_parts.append(pa.table({
            "country_iso": [iso] * n, "tile_id": pa.array(tid, pa.uint64()), "west_lon": west,
            "east_lon": east, "south_lat": south, "north_lat": north}))
        index_parts.append(pa.table({
            "country_iso": [iso] * n, "tile_id": pa.array(tid, pa.uint64()), "inclusion_rule": ["center"] * n,
            "raster_row": pa.array(rows, pa.uint32()), "raster_col": pa.array(cols, pa.uint32()),
            "centroid_lon": cx, "centroid_lat": cy, "pixel_area_m2": GRID.pixel_area_m2(rows)}))
        weight_parts.append(pa.table({
            "country_iso": [iso] * n, "tile_id": pa.array(tid, pa.uint64()),
            "weight_fp": pa.array(weights_of(tid, dp), pa.uint64()), "dp": pa.array([dp] * n, pa.uint32()),
            "zero_mass_fallback": [False] * n}))
    receipts = {}
    surfaces = {"tile_index": index_parts, "tile_bounds": bounds_parts, "tile_weights": weight_parts}
    for ds, parts in surfaces.items():
        target = path_for(ds, parameter_hash=ph)
        staging = storage.staging_path(target, "world")
        files = [storage.write_part(staging, part_name(i), write_parquet_bytes(t, dataset(ds), row_group_rows=64))
                 for i, t in enumerate(parts)]
        digest = storage.publish(staging, target, ds, expected=files)
        receipts[ds] = {"partition_path": target, "sha256_hex": digest}
    # the S1/S2 run reports' determinism receipts (contract §11), which S9 checks the surfaces against
    tiles = sum(t.num_rows for t in index_parts)
    for state, names in (("s1", ("tile_index", "tile_bounds")), ("s2", ("tile_weights",))):
        write_state_report(storage, state, {"parameter_hash": ph}, rows=tiles, receipts=[receipts[n] for n in names])
    gdf = gpd.GeoDataFrame({"country_iso": sorted(geoms)}, geometry=[geoms[k] for k in sorted(geoms)], crs="EPSG:4326")
    ref = path_for("reference_countries", countries_sha256=params.countries_sha256)
    storage.fs.makedirs(storage.abspath(ref.rsplit("/", 1)[0]), exist_ok=True)
    gdf.to_parquet(storage.abspath(ref))
    storage.write_json(path_for("parameters", parameter_hash=ph), params.canonical())
    ident = RunIdentity(seed=seed, manifest_fingerprint=FINGERPRINT, parameter_hash=ph, run_id="0" * 31 + "1")
    pairs = sorted(pairs)
    req = pa.table({"merchant_id": pa.array([p[0] for p in pairs], pa.uint64()),
                    "legal_country_iso": [p[1] for p in pairs], "n_sites": pa.array([p[2] for p in pairs], pa.int64())})
    target = path_for("s3_requirements", **ident.tokens)
    staging = storage.staging_path(target, "world")
    files = [storage.write_part(staging, part_name(0), write_parquet_bytes(req, dataset("s3_requirements")))]
    storage.publish(staging, target, "s3_requirements", expected=files)
    return ident


def random_pairs(n_merchants: int, seed: int = 7) -> list[tuple[int, str, int]]:
    """Merchants over the full u64 range with 1-3 countries each and a heavy tail of sites."""
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(0, 2**64, n_merchants, dtype=np.uint64))
    out = []
    for m in ids:
        k = int(rng.integers(1, 4))
        for iso in rng.choice(["DE", "FJ", "FR", "MC"], size=k, replace=False, p=[0.35, 0.15, 0.4, 0.1]):
            n = int(rng.pareto(1.3) * 3) + 1
            out.append((int(m), str(iso), min(n, 400)))
    return out


def catalogue_table(ident: RunIdentity, pairs: list[tuple[int, str, int]]) -> pa.Table:
    """Outlet catalogue rows matching ``pairs`` (one row per site), in writer-sort order."""
    pairs = sorted(pairs)
    total: dict[int, int] = {}
    home: dict[int, str] = {}
    for m, iso, n in pairs:
        total[m] = total.get(m, 0) + n
        home.setdefault(m, iso)
    names = ("merchant_id", "site_id", "home_country_iso", "legal_country_iso", "single_vs_multi_flag",
             "raw_nb_outlet_draw", "final_country_outlet_count", "site_order")
    cols: dict[str, list] = {k: [] for k in names}
    for m, iso, n in pairs:
        for k in range(1, n + 1):
            cols["merchant_id"].append(m)
            cols["site_id"].append(f"{k:06d}")
            cols["home_country_iso"].append(home[m])
            cols["legal_country_iso"].append(iso)
            cols["single_vs_multi_flag"].append(total[m] >= 2)
            cols["raw_nb_outlet_draw"].append(total[m])
            cols["final_country_outlet_count"].append(n)
            cols["site_order"].append(k)
    rows = len(cols["merchant_id"])
    return pa.table({
        "manifest_fingerprint": [ident.manifest_fingerprint] * rows,
        "merchant_id": pa.array(cols["merchant_id"], pa.uint64()), "site_id": cols["site_id"],
        "home_country_iso": cols["home_country_iso"], "legal_country_iso": cols["legal_country_iso"],
        "single_vs_multi_flag": cols["single_vs_multi_flag"],
        "raw_nb_outlet_draw": pa.array(cols["raw_nb_outlet_draw"], pa.int32()),
        "final_country_outlet_count": pa.array(cols["final_country_outlet_count"], pa.int32()),
        "site_order": pa.array(cols["site_order"], pa.int32()),
        "global_seed": pa.array([ident.seed] * rows, pa.uint64())})


def publish_catalogue(storage: Storage, ident: RunIdentity, pairs: list[tuple[int, str, int]], *,
                      part_rows: int = 2_000, row_group_rows: int = 500) -> str:
    """Publish an outlet catalogue matching ``pairs`` (several parts, small row groups); return its path."""
    table = catalogue_table(ident, pairs)
    target = path_for("outlet_catalogue", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    staging = storage.staging_path(target, "world")
    files = [storage.write_part(staging, part_name(i), write_parquet_bytes(
        table.slice(start, part_rows), dataset("outlet_catalogue"), row_group_rows=row_group_rows))
        for i, start in enumerate(range(0, max(table.num_rows, 1), part_rows))]
    storage.publish(staging, target, "outlet_catalogue", expected=files)
    return target


def placed(storage: Storage, client, pairs: list[tuple[int, str, int]], *,
           part_sites: int = 400, rng_logs: str = "zstd") -> RunIdentity:
    """The synthetic world with its catalogue, S4-S6 and S7/S8 published (for S7-S9 and reader tests);
    RNG event parts in the form ``rng_logs``."""
    import io

    from jobs.place import PlaceConfig, run_place
    from jobs.synthesis import run_s7_s8

    ident = build(storage, pairs)
    publish_catalogue(storage, ident, pairs)
    run_place(storage, client, ident, GRID, countries_sha256(),
              config=PlaceConfig(part_sites=part_sites, min_unit_sites=50, rng_logs=rng_logs), out=io.StringIO())
    run_s7_s8(storage, client, ident, out=io.StringIO())
    return ident


def event_part(storage: Storage, ident: RunIdentity, label: str, part: int) -> str:
    """The path of event part ``part`` of ``label``, whichever form (``.jsonl.zst`` or ``.jsonl``) it has."""
    from segment1b.contracts import path_for

    folder = path_for("rng_events", substream_label=label, **ident.log_tokens)
    name = f"part-{part:05d}."
    return folder + next(f for f in storage.list_files(folder) if f.startswith(name))


def event_lines(storage: Storage, ident: RunIdentity, label: str) -> bytes:
    """Every event line of ``label``'s log, parts in order, decompressed when they are ``.jsonl.zst``."""
    from segment1b.contracts import path_for
    from segment1b.rng_log_files import form_of_name, read_lines

    folder = path_for("rng_events", substream_label=label, **ident.log_tokens)
    return b"".join(read_lines(storage.read_bytes(folder + f), form_of_name(f)) for f in storage.list_files(folder))


def rewrite_event_part(storage: Storage, rel: str, lines: bytes) -> None:
    """Replace an event part by ``lines``, in the part's own form (a tampering step of the tests)."""
    from segment1b.rng_log_files import encode_chunks, form_of_name

    with open(storage.abspath(rel), "wb") as fh:
        fh.write(b"".join(encode_chunks([lines], form_of_name(rel))))
