"""Bad inputs refused (issue #9): the contract code, the offending rows or values in the message, a non-zero
exit through the command line, and nothing published.

This file holds the cases that need a whole job (or the command line) and were not covered next to their
module; docs/failure-codes.md lists every case of the issue with its code and test, here or elsewhere.
Each job case asserts the failing state's partitions are absent and nothing of them is visible (staging
folders are hidden).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import geo_fixtures as gf
import world
from catalogue_fixtures import FP, SEED, catalogue, publish_catalogue, raw_parquet, set_values, split
from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import Segment1BError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity
from segment1b.storage import Storage, part_name, write_parquet_bytes

pytestmark = pytest.mark.cluster

PLACE = ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter")


def refused(fn, code: str, *words: str) -> Segment1BError:
    """Run ``fn``; it must raise ``code`` with every one of ``words`` in its message (rows included)."""
    with pytest.raises(Segment1BError) as e:
        fn()
    err = e.value
    assert err.code == code, str(err)
    for w in words:
        assert w in str(err), f"{w!r} not in:\n{err}"
    return err


def nothing_visible(storage: Storage, *datasets: str, **tokens) -> None:
    """The datasets' partitions are not published and no visible file exists under their folders."""
    for ds in datasets:
        rel = path_for(ds, **tokens)
        assert not storage.is_published(rel), ds
        top = rel.split("/seed=")[0].split("/parameter_hash=")[0]
        assert storage.list_files(top) == [], f"{ds}: {storage.list_files(top)}"


# -- S1/S2: user polygons through prepare ----------------------------------------------------------------

def prepare(storage, client, countries, **kw):
    from jobs.prepare import prepare as run_prepare

    return run_prepare(storage, client, grid=gf.GRID, basis="uniform", countries=countries, out=io.StringIO(),
                       show_progress=False, **kw)


BOWTIE = shapely.Polygon([(4.1, 0.1), (6.1, 2.1), (6.1, 0.1), (4.1, 2.1)])  # a self-intersecting ring


def test_self_intersecting_polygon_is_e001_and_prepare_publishes_nothing(client, storage, tmp_path):
    path = gf.write_countries(tmp_path / "c.parquet", {"AD": gf.box(0.1, 0.1, 2.1, 2.1), "BE": BOWTIE})
    err = refused(lambda: prepare(storage, client, path), "E001_GEO_INVALID", "country_iso='BE'",
                  "Self-intersection[", "feature=1")
    assert err.path == path
    assert storage.list_files("data") == [] and storage.list_files("reference") == []


def test_self_intersecting_polygon_cli_exits_3(tmp_path, capsys):
    path = gf.write_countries(tmp_path / "c.gpkg", {"AD": gf.box(0.1, 0.1, 2.1, 2.1), "BE": BOWTIE})
    root = tmp_path / "root"
    argv = ["prepare", "--data-root", str(root), "--grid", "1d", "--countries", path, "--basis", "uniform",
            "--workers", "1", "--threads-per-worker", "1", "--memory-limit", "2GiB"]
    assert cli_main(argv) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E001_GEO_INVALID" in err and "country_iso='BE'" in err and "Self-intersection" in err
    assert not (root / "data").exists()


def test_projected_polygons_are_e007_and_prepare_publishes_nothing(client, storage, tmp_path):
    path = gf.write_countries(tmp_path / "c.gpkg", {"AD": gf.box(0.1, 0.1, 2.1, 2.1)}, crs="EPSG:3857")
    refused(lambda: prepare(storage, client, path), "E007_CRS_MISMATCH", "EPSG:3857")
    assert storage.list_files("data") == []


# -- S3: the outlet catalogue ------------------------------------------------------------------------------

IDENTITY = RunIdentity(SEED, FP, "ef" * 32)
WEIGHTS = {"DE", "FR", "GB", "US", "ZA"}
PAIRS = [(10, "DE", 3), (10, "FR", 1), (11, "FR", 2), (2**63 + 5, "GB", 4), (2**64 - 1, "US", 1)]


def run_s3(storage, client):
    from jobs.s3 import run_s3 as job

    return job(storage, client, IDENTITY, countries_with_weights=WEIGHTS, out=io.StringIO(), show=False)


def corrupt_footer(table: pa.Table) -> bytes:
    data = bytearray(raw_parquet(table))
    data[-40:-8] = bytes(range(32))  # the footer's metadata, magic bytes intact
    return bytes(data)


def other_fingerprint_part() -> pa.Table:
    """A part copied from another catalogue: all its rows carry another manifest_fingerprint."""
    return catalogue(PAIRS, fp="ee" * 32).slice(6)


# (name, parts, code, words in the message)
CATALOGUE_CASES = [
    ("extra column", lambda: [raw_parquet(catalogue(PAIRS).append_column("note", pa.array(["x"] * 11)))],
     "E304_SCHEMA_MISMATCH", "extra ['note']"),
    ("merchant_id out of range (signed, negative)",
     lambda: [raw_parquet(catalogue(PAIRS).set_column(1, "merchant_id", pa.array([-1] * 11, pa.int64())))],
     "E304_SCHEMA_MISMATCH", "column='merchant_id' type='int64' expected='uint64'"),
    ("mixed fingerprints in one partition", lambda: [catalogue(PAIRS).slice(0, 6), other_fingerprint_part()],
     "E306_TOKEN_MISMATCH", f"column='manifest_fingerprint' value='{'ee' * 32}'"),
    ("corrupt footer", lambda: [catalogue(PAIRS).slice(0, 6), corrupt_footer(catalogue(PAIRS).slice(6))],
     "E305_PARQUET_UNREADABLE", "part-00001.parquet"),
    ("lowercase ISO", lambda: [set_values(catalogue(PAIRS), "legal_country_iso", {4: "fr", 5: "fr"})],
     "E302_FK_COUNTRY", "value='fr'"),
    # a repeated (merchant_id, legal_country_iso, site_order) key is a site_order duplicate (E314, see
    # segment1b.s3_requirements), here the same row twice across two parts
    ("duplicate primary key", lambda: split(catalogue(PAIRS + [(2**64 - 1, "US", 1)]), [11]),
     "E314_SITE_ORDER_INTEGRITY", f"row=0 merchant_id={2**64 - 1} legal_country_iso='US' site_order=1 "
     "problem='duplicate site_order'"),
    # issue #14: an empty catalogue got as far as publishing an empty s3_requirements, then E_PUBLISH_IO
    ("empty catalogue", lambda: [catalogue([]), catalogue([])], "E311_EMPTY_CATALOGUE", "0 rows in 2 part files"),
]


@pytest.mark.parametrize("name, parts, code, words", CATALOGUE_CASES, ids=[c[0] for c in CATALOGUE_CASES])
def test_catalogue_refused_by_s3(client, storage, name, parts, code, words):
    publish_catalogue(storage, parts())
    refused(lambda: run_s3(storage, client), code, words)
    nothing_visible(storage, "s3_requirements", **IDENTITY.tokens)
    assert not storage.exists(report_path("s3", **IDENTITY.tokens))


def test_mixed_fingerprints_cli_exits_3(client, storage, capsys):
    from catalogue_fixtures import publish_tile_weights

    publish_catalogue(storage, [catalogue(PAIRS).slice(0, 6), other_fingerprint_part()])
    publish_tile_weights(storage, WEIGHTS, IDENTITY.parameter_hash)
    argv = ["requirements", "--data-root", storage.root_url, "--seed", str(SEED), "--fingerprint", FP,
            "--parameter-hash", IDENTITY.parameter_hash, "--scheduler", client.scheduler.address]
    assert cli_main(argv) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E306_TOKEN_MISMATCH" in err and "ee" * 32 in err
    nothing_visible(storage, "s3_requirements", **IDENTITY.tokens)


# -- S4-S6: tile weights, requirements and parameters as S4 reads them -------------------------------------

def place(storage, client, ident, grid=world.GRID):
    from jobs.place import PlaceConfig, run_place

    return run_place(storage, client, ident, grid, world.countries_sha256(), config=PlaceConfig(part_sites=400),
                     out=io.StringIO())


def world_part(dataset_id: str, iso: str, ident) -> str:
    """The part file of one country in the synthetic world's tile datasets (one part per country)."""
    return path_for(dataset_id, parameter_hash=ident.parameter_hash) + \
        part_name(sorted(world.countries()).index(iso))


def rewrite(storage: Storage, rel: str, table: pa.Table, dataset_id: str) -> None:
    with open(storage.abspath(rel), "wb") as fh:
        fh.write(write_parquet_bytes(table, dataset(dataset_id), row_group_rows=64))


def requirements_rel(ident) -> str:
    return path_for("s3_requirements", **ident.tokens) + part_name(0)


SMALL = [(7, "MC", 2), (8, "FR", 3), (9, "DE", 2)]


def test_n_sites_overflowing_weight_times_n_is_e416(client, storage):
    ident = world.build(storage, [(7, "MC", 19), (8, "FR", 3)], dp=18)  # MC: one tile of weight 10^18
    err = refused(lambda: place(storage, client, ident), "E416_NUMERIC_OVERFLOW",
                  "weight_fp 1000000000000000000 × n_sites 19", "country_iso='MC'", "n_sites=19")
    assert err.rows[0]["weight_fp"] * 19 > 2**64 - 1
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_country_with_all_zero_weights_is_e105(client, storage):
    ident = world.build(storage, SMALL)
    rel = world_part("tile_weights", "MC", ident)
    t = pq.read_table(storage.abspath(rel))
    rewrite(storage, rel, t.set_column(2, "weight_fp", pa.array([0] * t.num_rows, pa.uint64())), "tile_weights")
    refused(lambda: place(storage, client, ident), "E105_NORMALIZATION", "country_iso='MC' sum_weight_fp=0")
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_country_with_sites_but_no_tiles_is_e303_at_s4(client, storage):
    ident = world.build(storage, SMALL)
    os.remove(storage.abspath(world_part("tile_weights", "MC", ident)))
    refused(lambda: place(storage, client, ident), "E303_MISSING_WEIGHTS", "country_iso='MC'")
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_weighted_tiles_missing_from_the_tile_index_are_e505(client, storage):
    ident = world.build(storage, SMALL)
    rel = world_part("tile_index", "FR", ident)
    t = pq.read_table(storage.abspath(rel))
    rewrite(storage, rel, t.slice(0, 1), "tile_index")  # FR keeps one tile in the index, all its weights
    err = refused(lambda: place(storage, client, ident), "E505_TILE_NOT_IN_INDEX", "country_iso='FR' tile_id=")
    assert all(r["tile_id"] != t["tile_id"][0].as_py() for r in err.rows)
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_requirements_not_published_are_e401_at_s4(client, storage):
    ident = world.build(storage, SMALL)
    storage.remove(path_for("s3_requirements", **ident.tokens))
    refused(lambda: place(storage, client, ident), "E401_REQUIREMENTS_MISSING", "s3_requirements",
            "run S3 first")
    nothing_visible(storage, *PLACE, **ident.tokens)


@pytest.mark.parametrize("which", ["tile_weights", "s3_requirements"])
def test_corrupt_parquet_read_by_s4_is_e305(client, storage, which):
    ident = world.build(storage, SMALL)
    rel = world_part("tile_weights", "FR", ident) if which == "tile_weights" else requirements_rel(ident)
    data = open(storage.abspath(rel), "rb").read()
    with open(storage.abspath(rel), "wb") as fh:
        fh.write(data[: len(data) // 2])  # truncated: no footer
    refused(lambda: place(storage, client, ident), "E305_PARQUET_UNREADABLE", rel)
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_zero_n_sites_is_e309(client, storage):
    ident = world.build(storage, SMALL)
    t = pq.read_table(storage.abspath(requirements_rel(ident)))
    rewrite(storage, requirements_rel(ident), t.set_column(2, "n_sites", pa.array([0, 3, 2], pa.int64())),
            "s3_requirements")
    refused(lambda: place(storage, client, ident), "E309_VALUE_RANGE", "merchant_id=7 n_sites=0")
    nothing_visible(storage, *PLACE, **ident.tokens)


def test_grid_not_matching_the_parameter_hash_is_e310(client, storage):
    ident = world.build(storage, SMALL)
    refused(lambda: place(storage, client, ident, grid=Grid.named("1d")), "E310_PARAMETER_HASH_MISMATCH",
            "parameter='grid'", "'name': '1d'", "'name': '30m'", ident.parameter_hash)
    nothing_visible(storage, *PLACE, **ident.tokens)


# -- S7: published S5/S6 parts and parameters as S7 reads them ---------------------------------------------

@pytest.fixture(scope="module")
def placed_world(tmp_path_factory, client):
    """The synthetic world with its catalogue and S4-S6 published (S7 not run), to copy and break."""
    storage = Storage(str(tmp_path_factory.mktemp("placed") / "root"))
    ident = world.build(storage, SMALL + [(12, "FJ", 4)])
    world.publish_catalogue(storage, ident, SMALL + [(12, "FJ", 4)])
    place(storage, client, ident)
    return storage, ident


@pytest.fixture
def placed(placed_world, tmp_path):
    import shutil

    storage, ident = placed_world
    shutil.copytree(storage.root_url, tmp_path / "copy")
    return Storage(str(tmp_path / "copy")), ident


def run_s7(storage, client, ident):
    from jobs.synthesis import run_s7_s8

    return run_s7_s8(storage, client, ident, out=io.StringIO())


def s7_outputs_absent(storage, ident):
    nothing_visible(storage, "s7_site_synthesis", **ident.tokens)
    nothing_visible(storage, "site_locations", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)


@pytest.mark.parametrize("ds", ["s5_site_tile_assignment", "s6_site_jitter"])
def test_truncated_s5_or_s6_part_is_e305_at_s7(client, placed, ds):
    storage, ident = placed
    rel = path_for(ds, **ident.tokens) + part_name(0)
    data = open(storage.abspath(rel), "rb").read()
    os.chmod(storage.abspath(rel), 0o644)
    with open(storage.abspath(rel), "wb") as fh:
        fh.write(data[:-50])
    refused(lambda: run_s7(storage, client, ident), "E305_PARQUET_UNREADABLE", rel)
    s7_outputs_absent(storage, ident)


def test_edited_parameters_record_is_e310_at_s7(client, placed):
    storage, ident = placed
    rel = path_for("parameters", parameter_hash=ident.parameter_hash)
    params = storage.read_json(rel)
    params["dp"] = 6  # the record no longer hashes to the parameter_hash of its path
    with open(storage.abspath(rel), "w") as fh:
        json.dump(params, fh)
    refused(lambda: run_s7(storage, client, ident), "E310_PARAMETER_HASH_MISMATCH", ident.parameter_hash,
            "recorded parameters hash to")
    s7_outputs_absent(storage, ident)


# -- S9: mixed fingerprints in a published partition --------------------------------------------------------

def test_mixed_fingerprints_in_s6_are_e905_and_validate_exits_3(client, placed, capsys):
    storage, ident = placed
    run_s7(storage, client, ident)
    rel = path_for("s6_site_jitter", **ident.tokens) + part_name(0)
    t = pq.read_table(storage.abspath(rel))
    fps = t["manifest_fingerprint"].to_pylist()
    fps[1] = "ee" * 32
    rewrite(storage, rel, t.set_column(6, "manifest_fingerprint", pa.array(fps, pa.string())), "s6_site_jitter")
    argv = ["validate", "--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint",
            ident.manifest_fingerprint, "--scheduler", client.scheduler.address]
    assert cli_main(argv) == EXIT_CONTRACT_FAILURE
    captured = capsys.readouterr()
    assert "E905_IDENTITY" in captured.err and "ee" * 32 in captured.out
    assert not storage.exists(path_for("validation_bundle_1B", manifest_fingerprint=ident.manifest_fingerprint)
                              + "_passed.flag")


def validate(storage, client, ident):
    from jobs.validate import run_s9

    return run_s9(storage, client, ident.seed, ident.manifest_fingerprint, out=io.StringIO())


def site_locations_part(ident) -> str:
    return path_for("site_locations", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint) + \
        part_name(0)


def finding(result, code: str) -> list[dict]:
    """The example rows S9 recorded for ``code`` (it must have failed with it and published no flag)."""
    assert not result.passed and code in result.failed_codes, result.failed_codes
    assert result.flag_sha256_hex is None
    return [ex for f in result.findings if f["code"] == code for ex in f.get("examples", [])]


def test_extra_site_in_site_locations_is_e902(client, placed):
    storage, ident = placed
    run_s7(storage, client, ident)
    rel = site_locations_part(ident)
    t = pq.read_table(storage.abspath(rel))
    extra = t.slice(t.num_rows - 1).set_column(2, t.schema.field(2), pa.array([999], pa.int64()))
    os.chmod(storage.abspath(rel), 0o644)
    pq.write_table(pa.concat_tables([t, extra]), storage.abspath(rel))
    rows = finding(validate(storage, client, ident), "E902_ROW_EXTRA")
    assert any(r.get("site_order") == 999 for r in rows), rows


def test_unsorted_site_locations_are_e906(client, placed):
    storage, ident = placed
    run_s7(storage, client, ident)
    rel = site_locations_part(ident)
    t = pq.read_table(storage.abspath(rel))
    order = list(range(t.num_rows))
    order[0], order[1] = 1, 0
    os.chmod(storage.abspath(rel), 0o644)
    pq.write_table(t.take(order), storage.abspath(rel))
    rows = finding(validate(storage, client, ident), "E906_SORT")
    assert rows and rows[0]["merchant_id"] == t["merchant_id"][0].as_py(), rows


def test_wrong_type_in_site_locations_is_e904(client, placed):
    storage, ident = placed
    run_s7(storage, client, ident)
    rel = site_locations_part(ident)
    t = pq.read_table(storage.abspath(rel))
    os.chmod(storage.abspath(rel), 0o644)
    pq.write_table(t.set_column(3, "lon_deg", t["lon_deg"].cast(pa.float32())), storage.abspath(rel))
    rows = finding(validate(storage, client, ident), "E904_EGRESS_SCHEMA")
    assert "lon_deg:float" in rows[0]["columns"] and "lon_deg:double" in rows[0]["expected"], rows


def test_a_different_pass_bundle_is_never_replaced_e913(client, placed):
    storage, ident = placed
    run_s7(storage, client, ident)
    assert validate(storage, client, ident).passed
    bundle = path_for("validation_bundle_1B", manifest_fingerprint=ident.manifest_fingerprint)
    summary = storage.abspath(bundle + "s9_summary.json")
    os.chmod(summary, 0o644)
    with open(summary, "a") as fh:
        fh.write(" ")  # the published PASS bundle now differs from the one the same files give
    rows = finding(validate(storage, client, ident), "E913_PUBLISH")
    assert rows and rows[0]["path"] == bundle


def test_plan_that_does_not_sum_to_n_sites_is_e504():
    from segment1b import rng
    from segment1b.s5_site_tile import assign_sites

    err = refused(lambda: assign_sites("FR", np.array([7, 8], np.uint64), np.array([3, 2]),
                                       np.array([7, 8], np.uint64), np.array([5, 6], np.uint64),
                                       np.array([3, 1]), rng.master_material(SEED, FP), "ef" * 32),
                  "E504_SUM_TO_N_MISMATCH", "merchant_id=8 legal_country_iso='FR' n_sites=2 planned=1")
    assert len(err.rows) == 1


# -- the run command: S4 and S7 failures end the run with exit code 3 ------------------------------------

@pytest.fixture(scope="module")
def world_countries(tmp_path_factory) -> str:
    """The synthetic world's polygons as a user file, for `segment1b run --countries`."""
    return gf.write_countries(tmp_path_factory.mktemp("countries") / "world.parquet", world.countries())


def run_argv(storage: Storage, client, countries: str, *extra: str) -> list[str]:
    return ["run", "--data-root", storage.root_url, "--seed", str(SEED), "--fingerprint", FP, "--grid", "30m",
            "--countries", countries, "--basis", "uniform", "--scheduler", client.scheduler.address, *extra]


def run_tokens(storage: Storage) -> dict:
    (ph,) = [p.split("=", 1)[1] for p in os.listdir(storage.abspath("data/layer1/1B/tile_index"))]
    return {"seed": SEED, "manifest_fingerprint": FP, "parameter_hash": ph}


def test_run_cli_overflow_in_s4_exits_3(client, storage, world_countries, capsys):
    publish_catalogue(storage, [catalogue([(7, "MC", 19), (8, "FR", 2)])])
    assert cli_main(run_argv(storage, client, world_countries, "--dp", "18")) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E416_NUMERIC_OVERFLOW" in err and "country_iso='MC'" in err and "n_sites=19" in err
    nothing_visible(storage, *PLACE, **run_tokens(storage))


def test_run_cli_empty_catalogue_exits_3_and_publishes_nothing(client, storage, world_countries, capsys):
    publish_catalogue(storage, [catalogue([])])
    assert cli_main(run_argv(storage, client, world_countries)) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E311_EMPTY_CATALOGUE" in err and "E_PUBLISH_IO" not in err, err
    nothing_visible(storage, "s3_requirements", *PLACE, **run_tokens(storage))
    assert not storage.exists(report_path("s3", **run_tokens(storage)))


def test_run_cli_without_disk_room_is_e_disk_space_before_s4(client, storage, world_countries, capsys,
                                                             monkeypatch):
    """Issue 17: a local root with less free space than S4-S8 and the logs need is refused before S4 (mocked
    free-space probe), exit 3, nothing of S4-S8 published; with room again the same command passes."""
    import jobs.disk

    publish_catalogue(storage, [catalogue(SMALL)])
    probed = []
    monkeypatch.setattr(jobs.disk, "free_bytes", lambda path: probed.append(path) or 1000)
    assert cli_main(run_argv(storage, client, world_countries)) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E_DISK_SPACE" in err and "(1000 bytes) free" in err and "rng_events/in_cell_jitter" in err, err
    assert probed and probed[0].startswith(storage.abspath(""))
    nothing_visible(storage, *PLACE, **run_tokens(storage))
    monkeypatch.setattr(jobs.disk, "free_bytes", lambda path: 10**12)
    assert cli_main(run_argv(storage, client, world_countries, "--through", "s4")) == 0


def test_run_cli_corrupt_s6_part_in_s7_exits_3(client, storage, world_countries, capsys):
    from jobs.pipeline import RunRequest, run_pipeline

    publish_catalogue(storage, [catalogue(SMALL)])
    run_pipeline(storage, client, RunRequest(seed=SEED, grid="30m", countries=world_countries, basis="uniform",
                                             fingerprint=FP, through="s6"), out=io.StringIO())
    tokens = run_tokens(storage)
    rel = path_for("s6_site_jitter", **tokens) + part_name(0)
    os.chmod(storage.abspath(rel), 0o644)
    with open(storage.abspath(rel), "r+b") as fh:
        fh.seek(-200, os.SEEK_END)
        fh.write(bytes(200))  # a disk fault: zeros over the footer
    assert cli_main(run_argv(storage, client, world_countries)) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "FAILED E305_PARQUET_UNREADABLE" in err and rel in err
    nothing_visible(storage, "s7_site_synthesis", **tokens)
    nothing_visible(storage, "site_locations", seed=SEED, manifest_fingerprint=FP)


# -- the command line: bad values are usage errors (exit 2) before any work (issue #14, item 5) ----------

PH_OK = "ef" * 32
# a minimal valid command line of every command ({root} is the data root)
COMMAND_LINES = {
    "run": ["--seed", "42"],
    "prepare": ["--grid", "30m"],
    "generate": ["--seed", "42"],
    "gate": ["--fingerprint", FP],
    "requirements": ["--seed", "42", "--fingerprint", FP, "--parameter-hash", PH_OK],
    "validate": ["--seed", "42", "--fingerprint", FP],
    "verify-flag": ["--seed", "42", "--fingerprint", FP],
    "export": ["--seed", "42", "--fingerprint", FP, "--geoparquet", "out.parquet"],
    "map": ["--seed", "42", "--fingerprint", FP],
    "report": ["--seed", "42", "--fingerprint", FP],
}
# flag -> bad values and words the usage error must show
BAD_VALUES = {
    "--seed": [("-1", "decimal u64"), ("18446744073709551616", "decimal u64"), ("4x", "decimal u64")],
    "--fingerprint": [("../..", "64 lowercase hex"), ("AB" * 32, "64 lowercase hex")],
    "--parameter-hash": [("../..", "64 lowercase hex")],
    "--grid": [("7m", "unknown grid '7m'")],
    "--storage-options": [("{bad json", "JSON object"), ("[1,2]", "JSON object")],
    "--part-sites": [("0", ">= 1"), ("-5", ">= 1")],
    "--unit-cells": [("0", ">= 1")],
    "--plan-sample": [("-1", ">= 0")],
    "--workers": [("0", ">= 1"), ("two", ">= 1")],
    "--threads-per-worker": [("0", ">= 1")],
    "--memory-limit": [("lots", "a size like '4GiB'"), ("-1GB", "a size like '4GiB'")],
    "--scheduler": [("udp://host:1", "protocol 'udp' is not supported")],
}


def _options_of_each_command() -> dict[str, set[str]]:
    from jobs.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def _bad_command_lines():
    options = _options_of_each_command()
    assert set(options) == set(COMMAND_LINES)
    for command, flags in sorted(options.items()):
        for flag in sorted(flags & set(BAD_VALUES)):
            for value, words in BAD_VALUES[flag]:
                yield pytest.param(command, flag, value, words, id=f"{command} {flag} {value}")


def test_every_value_flag_has_bad_values():
    """Every option that takes a number, a token, a grid or JSON is in BAD_VALUES (so the next test covers it)."""
    value_flags = {"--seed", "--fingerprint", "--parameter-hash", "--grid", "--storage-options", "--part-sites",
                   "--unit-cells", "--plan-sample", "--workers", "--threads-per-worker", "--memory-limit",
                   "--scheduler"}
    assert value_flags == set(BAD_VALUES)
    seen = set().union(*_options_of_each_command().values())
    assert value_flags <= seen


@pytest.mark.parametrize("command, flag, value, words", list(_bad_command_lines()))
def test_bad_command_line_values_exit_2_before_any_work(command, flag, value, words, tmp_path, capsys, monkeypatch):
    """Refused while parsing: exit 2 with the usage line and what was expected; no cluster, no data root."""
    import cluster
    import jobs.session

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for a bad command line")

    monkeypatch.setattr(cluster, "open_client", no_cluster)
    monkeypatch.setattr(jobs.session, "open_session", no_cluster)
    root = tmp_path / "root"
    argv = [command, "--data-root", str(root), *COMMAND_LINES[command]]
    if flag in argv:  # drop the valid value
        del argv[argv.index(flag):argv.index(flag) + 2]
    argv.append(f"{flag}={value}")  # "--seed=-1": argparse would take "-1" alone for an option
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: segment1b {command}" in err and f"argument {flag}" in err and words in err, err
    assert "Traceback" not in err and not root.exists()
