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
    storage.write_part(staging, part_name(0), write_parquet_bytes(req, dataset("s3_requirements")))
    storage.publish(staging, target, "s3_requirements")


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
