"""Consumer API: verify the flag, open site_locations with dask-geopandas, export GeoParquet; their CLI."""

import io
import json
import shutil

import geopandas
import pandas as pd
import pytest

import world
from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from jobs.validate import run_s9
from segment1b import rng
from segment1b.contracts import path_for
from segment1b.errors import IntegrityError
from segment1b.reader import export_geoparquet, open_site_locations, verify_passed_flag
from segment1b.rng_log_files import form_of_name, read_lines
from segment1b.storage import Storage

PAIRS = world.random_pairs(80, seed=23)
FP = world.FINGERPRINT
BUNDLE = path_for("validation_bundle_1B", manifest_fingerprint=FP)


@pytest.fixture(scope="module")
def passed(tmp_path_factory, client):
    storage = Storage(str(tmp_path_factory.mktemp("reader") / "root"))
    ident = world.placed(storage, client, PAIRS)
    assert run_s9(storage, client, ident.seed, FP, out=io.StringIO()).passed
    return storage, ident


@pytest.fixture
def copy(passed, tmp_path):
    storage, ident = passed
    shutil.copytree(storage.root_url, tmp_path / "copy")
    return Storage(str(tmp_path / "copy")), ident


def test_open_site_locations_is_a_lazy_point_frame_in_writer_order(passed):
    storage, ident = passed
    gdf = open_site_locations(storage.root_url, ident.seed, FP)
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf.columns) == ["merchant_id", "legal_country_iso", "site_order", "lon_deg", "lat_deg",
                                 "geometry"]
    df = gdf.compute(scheduler="sync")
    assert len(df) == sum(n for _, _, n in PAIRS) and df.crs.to_epsg() == 4326
    assert (df.geometry.x == df.lon_deg).all() and (df.geometry.y == df.lat_deg).all()
    keys = list(zip(df.merchant_id, df.legal_country_iso, df.site_order))
    assert keys == sorted(keys)


@pytest.mark.parametrize("tamper,code", [
    ("delete the flag", "E910_FLAG"),
    ("edit the flag", "E910_FLAG"),
    ("edit a bundle file", "E909_INDEX"),
    ("edit site_locations after the pass", "E911_FINALITY"),
    ("add a file to site_locations", "E911_FINALITY"),
    ("delete an RNG event part", "E911_FINALITY"),
    ("delete the RNG trace log", "E911_FINALITY"),
    ("truncate an RNG event part", "E911_FINALITY"),
])
def test_reader_refuses_when_the_flag_does_not_vouch(copy, tamper, code):
    storage, ident = copy
    egress = path_for("site_locations", seed=ident.seed, manifest_fingerprint=FP)
    if tamper == "delete the flag":
        storage.remove(BUNDLE + "_passed.flag")
    elif tamper == "edit the flag":
        storage.write_bytes(BUNDLE + "_passed.flag", b"sha256_hex = " + b"0" * 64 + b"\n")
    elif tamper == "edit a bundle file":
        summary = json.loads(storage.read_bytes(BUNDLE + "s9_summary.json"))
        summary["rows"]["site_locations"] += 1
        storage.write_bytes(BUNDLE + "s9_summary.json", json.dumps(summary).encode())
    elif tamper == "edit site_locations after the pass":
        part = storage.parquet_parts(egress)[0]
        data = bytearray(storage.read_bytes(part))
        data[100] ^= 0xFF
        storage.write_bytes(part, bytes(data))
    elif tamper == "add a file to site_locations":
        storage.write_bytes(egress + "part-99999.parquet",
                            storage.read_bytes(storage.parquet_parts(egress)[0]))
    elif tamper == "delete an RNG event part":
        storage.remove(world.event_part(storage, ident, rng.S6_LABEL, 1))
    elif tamper == "delete the RNG trace log":
        storage.remove(path_for("rng_trace_log", **ident.log_tokens))
    else:  # the last event of a part gone: the listing shows another size
        ev = world.event_part(storage, ident, rng.S5_LABEL, 0)
        lines = read_lines(storage.read_bytes(ev), form_of_name(ev))
        world.rewrite_event_part(storage, ev, lines[:lines.rstrip(b"\n").rfind(b"\n") + 1])
    with pytest.raises(IntegrityError) as e:
        open_site_locations(storage.root_url, ident.seed, FP)
    assert e.value.code == code
    assert cli_main(["verify-flag", "--data-root", storage.root_url, "--seed", str(ident.seed),
                     "--fingerprint", FP]) == EXIT_CONTRACT_FAILURE
    assert len(open_site_locations(storage.root_url, ident.seed, FP, verify=False).columns) == 6


def test_export_geoparquet_roundtrips_through_geopandas(passed, tmp_path, capsys):
    storage, ident = passed
    out = tmp_path / "sites.parquet"
    info = export_geoparquet(storage.root_url, ident.seed, FP, str(out))
    gdf = geopandas.read_parquet(out)
    assert len(gdf) == info["rows"] == sum(n for _, _, n in PAIRS) and gdf.crs.to_epsg() == 4326
    assert (gdf.geometry.x == gdf.lon_deg).all() and list(gdf.total_bounds) == info["bbox"]
    expected = open_site_locations(storage.root_url, ident.seed, FP).compute(scheduler="sync")
    # same rows and values (dask reads ISO codes as the Arrow-backed string dtype, geopandas as str)
    pd.testing.assert_frame_equal(gdf.drop(columns="geometry"),
                                  expected.drop(columns="geometry").reset_index(drop=True),
                                  check_dtype=False)
    out2 = tmp_path / "cli.parquet"
    identity = ["--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP]
    assert cli_main(["export", *identity, "--geoparquet", str(out2)]) == 0
    assert out2.read_bytes() == out.read_bytes()
    assert cli_main(["verify-flag", *identity]) == 0
    assert verify_passed_flag(storage.root_url, ident.seed, FP) in capsys.readouterr().out


def test_verify_refuses_another_seed(passed):
    storage, ident = passed
    with pytest.raises(IntegrityError) as e:
        verify_passed_flag(storage.root_url, ident.seed + 1, FP)
    assert e.value.code == "E910_FLAG"


def test_deep_verification_rehashes_what_a_listing_cannot_see(copy, capsys):
    """A same-size edit of an RNG log passes the quick check (names and sizes) and fails --deep."""
    storage, ident = copy
    ev = world.event_part(storage, ident, rng.S6_LABEL, 0)
    data = bytearray(storage.read_bytes(ev))
    assert ev.endswith(".jsonl.zst")  # the default form: one byte of a compressed block, same size
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(ev, bytes(data))
    identity = ["--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP]
    assert verify_passed_flag(storage.root_url, ident.seed, FP)
    assert cli_main(["verify-flag", *identity]) == 0
    with pytest.raises(IntegrityError) as e:
        verify_passed_flag(storage.root_url, ident.seed, FP, deep=True)
    assert e.value.code == "E911_FINALITY" and [r["path"] for r in e.value.rows] == [ev]
    capsys.readouterr()
    assert cli_main(["verify-flag", *identity, "--deep"]) == EXIT_CONTRACT_FAILURE
    assert "E911_FINALITY" in capsys.readouterr().err
