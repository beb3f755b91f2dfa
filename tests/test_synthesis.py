"""S7/S8 job on the synthetic world: datasets, part layout, reports, no-op reruns, nothing on failure."""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import world
from jobs.synthesis import run_s7_s8
from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import IntegrityError
from segment1b.storage import Storage, write_parquet_bytes

PAIRS = world.random_pairs(120, seed=11)


def read(storage, rel):
    return pa.concat_tables([pq.read_table(storage.abspath(p)) for p in storage.parquet_parts(rel)])


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory, client):
    storage = Storage(str(tmp_path_factory.mktemp("s7")))
    return storage, world.placed(storage, client, PAIRS)


def test_s7_and_s8_are_published_merchant_major_with_the_s5_part_layout(synthesised):
    storage, ident = synthesised
    rel7 = path_for("s7_site_synthesis", **ident.tokens)
    rel8 = path_for("site_locations", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    s5 = path_for("s5_site_tile_assignment", **ident.tokens)
    names = [p.rsplit("/", 1)[1] for p in storage.parquet_parts(s5)]
    assert [p.rsplit("/", 1)[1] for p in storage.parquet_parts(rel7)] == names
    assert [p.rsplit("/", 1)[1] for p in storage.parquet_parts(rel8)] == names and len(names) > 1
    s7, s8 = read(storage, rel7), read(storage, rel8)
    s6 = read(storage, path_for("s6_site_jitter", **ident.tokens))
    assert s7.schema == dataset("s7_site_synthesis").schema and s8.schema == dataset("site_locations").schema
    assert s7.num_rows == s8.num_rows == sum(n for _, _, n in PAIRS)
    assert s8.equals(s7.drop_columns(["tile_id"]))
    lon, lat = world.GRID.absolute_point(s6["tile_id"].to_numpy(), s6["delta_lon_deg"].to_numpy(),
                                         s6["delta_lat_deg"].to_numpy())
    assert np.array_equal(lon, s7["lon_deg"].to_numpy()) and np.array_equal(lat, s7["lat_deg"].to_numpy())
    keys = list(zip(*(s8[c].to_pylist() for c in ("merchant_id", "legal_country_iso", "site_order"))))
    assert keys == sorted(keys)
    geoms = world.countries()
    iso = np.asarray(s7["legal_country_iso"].to_pylist())
    for c in geoms:
        assert shapely.intersects_xy(geoms[c], lon[iso == c], lat[iso == c]).all()


def test_reports_and_rerun(synthesised, client):
    storage, ident = synthesised
    for state in ("s7", "s8"):
        rep = json.loads(storage.read_bytes(report_path(state, **ident.tokens)))
        assert rep["rows"] == sum(n for _, _, n in PAIRS) and rep["catalogue_rows"] == rep["rows"]
        assert rep["determinism_receipt"][0]["sha256_hex"] == storage.partition_digest(
            rep["determinism_receipt"][0]["partition_path"])
        assert {c["country_iso"] for c in rep["countries"]} == {"DE", "FJ", "FR", "MC"}
    assert run_s7_s8(storage, client, ident, out=io.StringIO()) == {"s7": {"skipped": True},
                                                                    "s8": {"skipped": True}}


def test_a_failing_part_publishes_nothing(tmp_path, client):
    storage = Storage(str(tmp_path))
    pairs = world.random_pairs(40, seed=3)
    ident = world.build(storage, pairs)
    cat = world.publish_catalogue(storage, ident, pairs)
    from jobs.place import PlaceConfig, run_place

    run_place(storage, client, ident, world.GRID, world.countries_sha256(),
              config=PlaceConfig(part_sites=200),
              out=io.StringIO())
    # the catalogue gains a site that S3-S6 never saw: coverage fails in one part
    table = pa.concat_tables([pq.read_table(storage.abspath(p)) for p in storage.parquet_parts(cat)])
    extra = table.slice(table.num_rows - 1, 1).set_column(8,
                                                          pa.field("site_order", pa.int32(), nullable=False),
                                                          pa.array([999], pa.int32()))
    part = storage.parquet_parts(cat)[-1]
    data = write_parquet_bytes(pa.concat_tables([pq.read_table(storage.abspath(part)), extra]),
                               dataset("outlet_catalogue"))
    with open(storage.abspath(part), "wb") as fh:
        fh.write(data)
    with pytest.raises(IntegrityError) as e:
        run_s7_s8(storage, client, ident, out=io.StringIO())
    assert e.value.code == "E708_1A_COVERAGE_FAIL" and e.value.rows[0]["site_order"] == 999
    for rel in (path_for("s7_site_synthesis", **ident.tokens),
                path_for("site_locations", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)):
        parent = os.path.dirname(storage.abspath(rel).rstrip("/"))
        assert not storage.exists(rel)
        assert not os.path.isdir(parent) or os.listdir(parent) == []  # no staging leftovers either
