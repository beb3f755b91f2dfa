"""The prepare job (S1 + S2) on a small LocalCluster: outputs, determinism, failure codes, CLI."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

import geo_fixtures as gf
from jobs.prepare import DATASETS, prepare
from reference import check_published_weights
from segment1b.contracts import path_for
from segment1b.errors import IntegrityError, Segment1BError
from segment1b.grid import Grid
from segment1b.storage import Storage

pytestmark = pytest.mark.cluster

G = gf.GRID


@pytest.fixture
def countries_file(tmp_path):
    return gf.write_countries(tmp_path / "countries.parquet", gf.countries())


def run(storage, client, **kw):
    kw.setdefault("grid", G)
    kw.setdefault("basis", "uniform")
    return prepare(storage, client, out=io.StringIO(), show_progress=False, **kw)


def published_files(storage: Storage) -> list[str]:
    return [f for f in storage.list_files("data")] + [
        f for f in storage.fs.find(storage.abspath("")) if "staging" in f
    ]


def read_dataset(storage, dataset_id, ph):
    parts = storage.parquet_parts(path_for(dataset_id, parameter_hash=ph))
    return pq.read_table([storage.abspath(p) for p in parts]) if parts else None


def test_prepare_publishes_three_datasets_and_reports(storage, client, countries_file):
    summary = run(storage, client, countries=countries_file, unit_cells=40)
    ph = summary["parameter_hash"]
    index = read_dataset(storage, "tile_index", ph)
    bounds = read_dataset(storage, "tile_bounds", ph)
    weights = read_dataset(storage, "tile_weights", ph)
    # writer sort: country_iso, tile_id over the files in name order
    keys = list(zip(index.column("country_iso").to_pylist(), index.column("tile_id").to_pylist()))
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == summary["tiles"]
    assert index.column("tile_id").equals(bounds.column("tile_id"))
    assert index.column("tile_id").equals(weights.column("tile_id"))
    per_country = weights.to_pandas().groupby("country_iso")["weight_fp"].sum()
    assert set(per_country.tolist()) == {10**8}
    assert "MC" not in per_country.index and "SM" in per_country.index  # no-tile countries have no rows
    assert summary["countries_without_tiles"] == ["MC"]
    counts = check_published_weights(storage, ph)
    assert sum(counts.values()) == summary["tiles"]
    s1 = storage.read_json(f"control/tile_index/parameter_hash={ph}/s1_run_report.json")
    s2 = storage.read_json(f"control/tile_weights/parameter_hash={ph}/s2_run_report.json")
    assert s1["rows"] == s2["rows"] == summary["tiles"]
    assert {r["partition_path"] for r in s1["determinism_receipt"] + s2["determinism_receipt"]} == {
        path_for(d, parameter_hash=ph) for d in ("tile_index", "tile_bounds", "tile_weights")
    }
    assert {c["country_iso"] for c in s1["countries"]} >= {"AD", "BE", "FJ"}
    assert all(c["weight_sum"] == 10**8 for c in s2["countries"])
    # what S9's plan recomputation holds per country (jobs.footprint): uniform weights, every tile weighted
    assert {c["country_iso"]: c["weighted_tiles"] for c in s2["countries"]} == \
        weights.to_pandas().groupby("country_iso")["weight_fp"].count().to_dict()
    assert s1["peak_worker_rss_max_bytes"] > 0 and s1["workers"] == 2
    # a rerun is a no-op that says so
    out = io.StringIO()
    again = prepare(
        storage, client, grid=G, basis="uniform", countries=countries_file, unit_cells=40, out=out
    )
    assert again["skipped"] and "already published" in out.getvalue() and again["parameter_hash"] == ph
    # killed between publishing and reporting: S9 needs the S1/S2 receipts (issue 14), so a rerun finishes
    # the work again (the same bytes: the publish is a no-op) and writes the reports
    s1_rel = f"control/tile_index/parameter_hash={ph}/s1_run_report.json"
    storage.remove(s1_rel)
    before = {d: storage.partition_digest(path_for(d, parameter_hash=ph)) for d in DATASETS}
    out = io.StringIO()
    third = prepare(storage, client, grid=G, basis="uniform", countries=countries_file, unit_cells=40,
                    out=out)
    assert not third["skipped"] and "already published" not in out.getvalue()
    assert storage.read_json(s1_rel)["determinism_receipt"] == s1["determinism_receipt"]
    assert {d: storage.partition_digest(path_for(d, parameter_hash=ph)) for d in DATASETS} == before


def test_identical_bytes_with_one_and_two_workers(tmp_path, client, client1, countries_file):
    digests = []
    for c, name in ((client, "two"), (client1, "one")):
        storage = Storage(str(tmp_path / name))
        s = run(storage, c, countries=countries_file, basis="area_m2", unit_cells=40)
        digests.append(
            {
                d: storage.partition_digest(path_for(d, parameter_hash=s["parameter_hash"]))
                for d in ("tile_index", "tile_bounds", "tile_weights")
            }
        )
    assert digests[0] == digests[1]


def test_proxy_gives_slivers_no_weight_and_is_identical_with_one_and_two_workers(tmp_path, client, client1):
    from jobs.generate import catalogue_countries

    pt, sliver = gf.sliver_coast()
    # SM: a micro-island around one cell centre (4 % of the cell): every tile is a sliver -> fallback
    path = gf.write_countries(tmp_path / "c.parquet", {**gf.countries(), "PT": pt})
    digests = []
    for c, name in ((client, "two"), (client1, "one")):
        storage = Storage(str(tmp_path / name))
        s = run(storage, c, countries=path, basis="population_proxy", unit_cells=40)
        ph = s["parameter_hash"]
        digests.append(
            {d: storage.partition_digest(path_for(d, parameter_hash=ph)) for d in ("tile_index", "tile_weights")}
        )
    assert digests[0] == digests[1]
    weights = read_dataset(storage, "tile_weights", ph).to_pandas()
    pt_w = weights[weights.country_iso == "PT"].set_index("tile_id")
    assert len(pt_w) == 65 and pt_w.weight_fp.sum() == 10**8 and not pt_w.zero_mass_fallback.any()
    assert pt_w.weight_fp[sliver] == 0  # in tile_index (centre rule), but S4 never allocates to it
    assert (pt_w.drop(sliver).weight_fp > 0).all()
    sm = weights[weights.country_iso == "SM"]
    assert len(sm) == 1 and sm.zero_mass_fallback.all() and sm.weight_fp.sum() == 10**8
    assert "SM" not in catalogue_countries(storage, ph) and "PT" in catalogue_countries(storage, ph)
    s1r = storage.read_json(f"control/tile_index/parameter_hash={ph}/s1_run_report.json")
    s2r = storage.read_json(f"control/tile_weights/parameter_hash={ph}/s2_run_report.json")
    assert s1r["land_share_partial_tiles"] > 0 and "SM" in s2r["zero_mass_fallback_countries"]
    pt_r = next(c for c in s2r["countries"] if c["country_iso"] == "PT")
    assert pt_r["partial_tiles"] == pt_r["tiles_below_min_land_share"] == 1
    assert s2r["proxy"]["min_land_share"] == (0.25).hex() and s2r["proxy"]["land_samples"] == 8


def test_population_raster_defines_the_grid_and_zero_mass_falls_back(
    storage, client, tmp_path, countries_file
):
    values = np.zeros(G.shape, dtype=np.float32)
    values[30:40, 720:730] = 5.0  # AD gets population
    values[32, 721] = -1.0  # nodata inside AD -> 0
    tif = gf.write_geotiff(tmp_path / "pop.tif", G, values, nodata=-1.0)
    summary = run(storage, client, raster=tif, basis=None, countries=countries_file)
    weights = read_dataset(storage, "tile_weights", summary["parameter_hash"]).to_pandas()
    ad = weights[weights.country_iso == "AD"]
    assert not ad.zero_mass_fallback.any() and ad.weight_fp.sum() == 10**8
    assert (ad.weight_fp == 0).sum() == 1  # the nodata cell
    be = weights[weights.country_iso == "BE"]
    assert be.zero_mass_fallback.all() and be.weight_fp.sum() == 10**8
    s2 = storage.read_json(
        f"control/tile_weights/parameter_hash={summary['parameter_hash']}/s2_run_report.json"
    )
    assert s2["basis"] == "population" and "BE" in s2["zero_mass_fallback_countries"]


# -- failure codes: each names the culprit and publishes nothing -------------------------------------


def assert_fails(code, storage, fn, *names):
    with pytest.raises(Segment1BError) as exc:
        fn()
    assert exc.value.code == code, str(exc.value)
    for name in names:
        assert name in str(exc.value), str(exc.value)
    assert published_files(storage) == []
    return exc.value


def test_overlapping_countries_are_E003(storage, client, tmp_path):
    path = gf.write_countries(
        tmp_path / "c.gpkg", {"CH": gf.box(9.1, 0.1, 10.6, 1.1), "DE": gf.box(10.1, 0.1, 11.1, 1.1)}
    )
    err = assert_fails(
        "E003_DUP_TILE", storage, lambda: run(storage, client, countries=path), "CH", "DE", "tile_id="
    )
    assert isinstance(err, IntegrityError) and len(err.rows) == 8


def test_required_country_without_tiles_is_E103(storage, client, countries_file):
    assert_fails(
        "E103_ZERO_COUNTRY",
        storage,
        lambda: run(storage, client, countries=countries_file, require=["AD", "MC"]),
        "country_iso='MC'",
    )


def test_raster_not_matching_the_grid_is_E002(storage, client, tmp_path, countries_file):
    other = Grid(west=-180.0, north=10.0, dx=0.5, dy=0.5, ncols=720, nrows=40)
    tif = gf.write_geotiff(tmp_path / "pop.tif", other, np.ones(other.shape))
    assert_fails(
        "E002_RASTER_MISMATCH",
        storage,
        lambda: run(storage, client, raster=tif, countries=countries_file),
        "0.5",
        "0.25",
    )


def test_projected_raster_is_E007(storage, client, tmp_path, countries_file):
    tif = gf.write_geotiff(tmp_path / "pop.tif", G, np.ones(G.shape), crs="EPSG:3857")
    assert_fails(
        "E007_CRS_MISMATCH",
        storage,
        lambda: run(storage, client, grid=None, raster=tif, countries=countries_file),
        "3857",
    )


@pytest.mark.parametrize("bad", [-5.0, np.nan])
def test_bad_raster_values_are_E105(storage, client, tmp_path, countries_file, bad):
    values = np.ones(G.shape, dtype=np.float32)
    values[33, 722] = bad  # inside AD
    tif = gf.write_geotiff(tmp_path / "pop.tif", G, values, nodata=-99.0)
    assert_fails(
        "E105_NORMALIZATION",
        storage,
        lambda: run(storage, client, grid=None, raster=tif, basis="population", countries=countries_file),
        "AD",
        f"tile_id={int(G.tile_id(33, 722))}",
    )


@pytest.mark.parametrize(
    "geoms, code, name",
    [
        ({"AD": gf.box(0, 0, 1, 1), "fr": gf.box(2, 2, 3, 3)}, "E005_ISO_FK", "'fr'"),
        ({"AD": gf.box(0, 0, 1, 1), "FR": gf.box(179, 0, 181, 1)}, "E004_BOUNDS", "'FR'"),
    ],
)
def test_bad_user_polygons_fail_before_any_work(storage, client, tmp_path, geoms, code, name):
    path = gf.write_countries(tmp_path / "c.parquet", geoms)
    assert_fails(code, storage, lambda: run(storage, client, countries=path), name)


def test_dp_out_of_range_is_E104(storage, client, countries_file):
    assert_fails(
        "E104_DP_RANGE", storage, lambda: run(storage, client, countries=countries_file, dp=19), "dp=19"
    )


def test_published_checks_E101_and_E102(storage, client, countries_file):
    with pytest.raises(IntegrityError) as exc:
        check_published_weights(storage, "0" * 64)
    assert exc.value.code == "E101_TILE_INDEX_MISSING" and "0" * 64 in str(exc.value)
    ph = run(storage, client, countries=countries_file)["parameter_hash"]
    # drop the last row of one tile_weights part behind the publisher's back
    part = storage.parquet_parts(path_for("tile_weights", parameter_hash=ph))[0]
    table = pq.read_table(storage.abspath(part))
    pq.write_table(table.slice(0, table.num_rows - 1), storage.abspath(part))
    missing = int(table.column("tile_id")[-1].as_py())
    with pytest.raises(IntegrityError) as exc:
        check_published_weights(storage, ph)
    assert exc.value.code == "E102_FK_MISMATCH" and f"tile_id={missing}" in str(exc.value)


def test_cli_prepare(tmp_path, capsys, countries_file):
    from jobs.cli import main

    values = np.ones(G.shape, dtype=np.float32)
    tif = gf.write_geotiff(tmp_path / "pop.tif", G, values)
    root = str(tmp_path / "root")
    argv = [
        "prepare",
        "--data-root",
        root,
        "--raster",
        tif,
        "--countries",
        countries_file,
        "--workers",
        "1",
        "--threads-per-worker",
        "1",
        "--memory-limit",
        "2GiB",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "parameter_hash" in out and "tile_weights" in out
    assert main(argv) == 0 and "already published" in capsys.readouterr().out
    assert main(argv + ["--dp", "30"]) == 3
    assert "E104_DP_RANGE" in capsys.readouterr().err
