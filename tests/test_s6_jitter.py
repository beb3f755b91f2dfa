"""S6 jitter: the E613 hint on a sliver tile (kernel), and no site on a sliver after a real prepare (job)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import geo_fixtures as gf
from segment1b import rng
from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import IntegrityError
from segment1b.identity import RunIdentity
from segment1b.s6_jitter import MAX_ATTEMPTS, jitter_sites
from segment1b.storage import Storage, part_name, write_parquet_bytes

FINGERPRINT = "cd" * 32


def test_sliver_tile_exhausts_the_attempts_with_a_hint_that_teaches():
    geom, sliver = gf.sliver_coast()
    shapely.prepare(geom)
    master = rng.master_material(1, FINGERPRINT)
    n = 200  # each site fails all 64 attempts with probability 0.98**64 = 0.27
    with pytest.raises(IntegrityError) as exc:
        jitter_sites(gf.GRID, "PT", geom, np.arange(1, n + 1, dtype=np.uint64), np.ones(n, np.int64),
                     np.full(n, sliver, np.uint64), master, "3c" * 32)
    err = exc.value
    assert err.code == "E613_RESAMPLE_EXHAUSTED" and f"{MAX_ATTEMPTS} attempts" in str(err)
    assert "land share is tiny at this grid" in str(err) and "--grid 30s" in str(err)
    assert "population_proxy" in str(err) and f"tile_id={sliver}" in str(err)


def _publish_requirements(storage: Storage, ident: RunIdentity, pairs: list[tuple[int, str, int]]) -> None:
    req = pa.table({"merchant_id": pa.array([p[0] for p in pairs], pa.uint64()),
                    "legal_country_iso": [p[1] for p in pairs], "n_sites": pa.array([p[2] for p in pairs], pa.int64())})
    target = path_for("s3_requirements", **ident.tokens)
    staging = storage.staging_path(target, "test")
    files = [storage.write_part(staging, part_name(0), write_parquet_bytes(req, dataset("s3_requirements")))]
    storage.publish(staging, target, "s3_requirements", expected=files)


@pytest.mark.cluster
def test_sites_never_land_on_a_sliver_tile_under_the_proxy(tmp_path, client):
    """Prepare (population_proxy) then S4-S6 on a country with a 2 % coastal sliver tile.

    Before land shares, the sliver held 1/65 of the country's mass: ~60 of these 4 000 sites, each
    failing S6 with probability 0.27, so E613 was all but certain.
    """
    from jobs.place import PlaceConfig, run_place
    from jobs.pipeline import prepared_grid
    from jobs.prepare import prepare

    geom, sliver = gf.sliver_coast()
    storage = Storage(str(tmp_path / "root"))
    countries = gf.write_countries(tmp_path / "c.parquet", {"PT": geom})
    prepared = prepare(storage, client, grid=gf.GRID, countries=countries, basis="population_proxy",
                       out=io.StringIO(), show_progress=False)
    ph = prepared["parameter_hash"]
    ident = RunIdentity(seed=7, manifest_fingerprint=FINGERPRINT, parameter_hash=ph, run_id="0" * 31 + "2")
    pairs = [(m, "PT", 40) for m in range(1, 101)]
    _publish_requirements(storage, ident, pairs)
    run_place(storage, client, ident, prepared_grid(prepared), prepared["countries_sha256"], through="s6",
              config=PlaceConfig(part_sites=1000, min_unit_sites=100), out=io.StringIO())

    parts = storage.parquet_parts(path_for("s6_site_jitter", **ident.tokens))
    s6 = pa.concat_tables([pq.read_table(storage.abspath(p)) for p in parts])
    tiles = s6.column("tile_id").to_numpy()
    assert s6.num_rows == 4000 and sliver not in set(tiles.tolist())
    rows, cols = gf.GRID.row_col(tiles)
    assert (rows >= 52).all() and (rows < 60).all() and (cols >= 800).all() and (cols < 808).all()  # the block
    report = json.loads(storage.read_bytes(report_path("s6", **ident.tokens)))
    assert report["attempt_histogram"] == {"1": 4000} and report["outside_country"] == 0


def _vector_sites():
    from pathlib import Path

    vectors = json.loads((Path(__file__).parent / "data" / "rng.json").read_text())["s6_substreams"]
    return [v for v in vectors if v["seed"] == "42"]


def test_first_attempt_uses_the_known_answer_uniforms():
    from segment1b.grid import Grid

    grid = Grid.named("30m")
    world = shapely.box(-180, -90, 180, 90)  # every candidate is inside: one attempt per site
    shapely.prepare(world)
    for vec in _vector_sites():
        master = rng.master_material(int(vec["seed"]), vec["manifest_fingerprint"])
        tile = grid.tile_id(np.array([100]), np.array([300]))
        out = jitter_sites(grid, vec["legal_country_iso"].upper(), world, np.array([int(vec["merchant_id"])], np.uint64),
                           np.array([int(vec["site_order"])]), tile, master, vec["parameter_hash"])
        first = vec["attempts"][0]
        dlon, dlat = grid.jitter_deltas(tile, np.array([float.fromhex(first["u_lon_hex"])]),
                                        np.array([float.fromhex(first["u_lat_hex"])]))
        assert out["attempts"].tolist() == [1] and out["ev_accepted"].tolist() == [True]
        assert out["delta_lon_deg"].tolist() == dlon.tolist() and out["delta_lat_deg"].tolist() == dlat.tolist()
        assert out["ev_before_lo"].tolist() == [int(first["before_lo"])]
        assert out["ev_after_lo"].tolist() == [int(first["after_lo"])]


def test_rejected_attempts_are_logged_in_order_and_only_the_last_is_accepted():
    from segment1b.grid import Grid

    grid = Grid.named("30m")
    tile = grid.tile_id(np.array([100] * 300), np.array([300] * 300))
    west, east, south, north = (float(a[0]) for a in grid.bounds(tile[:1]))
    half = shapely.box(west, south, (west + east) / 2, north)  # half of the cell is in the country
    shapely.prepare(half)
    master = rng.master_material(7, FINGERPRINT)
    out = jitter_sites(grid, "FR", half, np.arange(300, dtype=np.uint64), np.ones(300, np.int64), tile, master,
                       "3c" * 32)
    assert out["attempts"].max() > 1 and out["outside_country"] == len(out["ev_site"]) - 300
    lon, lat = grid.absolute_point(tile, out["delta_lon_deg"], out["delta_lat_deg"])
    assert shapely.intersects_xy(half, lon, lat).all() and grid.contains_point(tile, lon, lat).all()
    for site in range(300):
        ev = out["ev_site"] == site
        attempts = out["ev_attempt"][ev]
        assert attempts.tolist() == list(range(1, out["attempts"][site] + 1))
        assert out["ev_accepted"][ev].tolist() == [False] * (len(attempts) - 1) + [True]
        assert np.all(out["ev_after_lo"][ev] - out["ev_before_lo"][ev] == 1)  # one block per attempt
        assert np.all(np.diff(out["ev_before_lo"][ev].astype(np.int64)) == 1)  # consecutive counters
