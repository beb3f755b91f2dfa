"""segment1b.generator (pure) and jobs.generate (job, CLI)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pytest

from segment1b.contracts import dataset, path_for
from segment1b.errors import InputError
from segment1b.generator import (SCALES, CountryTable, generate_block, generator_parameters, manifest_fingerprint,
                                 plan_blocks)
from segment1b.bundle import FLAG_NAME, INDEX_NAME
from segment1b.storage import Storage, write_parquet_bytes

from catalogue_fixtures import COUNTRIES_CSV

SPEC = dataset("outlet_catalogue")
FP = "0" * 64


@pytest.fixture(scope="module")
def world() -> CountryTable:
    """The ~245 GeoNames countries with population."""
    return CountryTable.from_csv_text(COUNTRIES_CSV.read_text())


@pytest.fixture(scope="module")
def eligible(world) -> CountryTable:
    """About 230 eligible countries: the 15 least populated dropped (as a grid without tiny islands would)."""
    smallest = {iso for _, iso in sorted(zip(world.population, world.iso))[:15]}
    return CountryTable.from_rows((c, p) for c, p in zip(world.iso, world.population) if c not in smallest)


def generate(scale: str, seed: int, countries: CountryTable) -> pa.Table:
    blocks = plan_blocks(SCALES[scale])
    return pa.concat_tables(generate_block(b, seed=seed, countries=countries, manifest_fingerprint=FP).table
                            for b in blocks)


def pairs_of(t: pa.Table):
    first = t.filter(pa.compute.equal(t["site_order"], 1))
    return first["final_country_outlet_count"].to_numpy()


# -- determinism ---------------------------------------------------------------------------------------

def test_same_seed_same_bytes_and_other_seed_other_bytes(eligible):
    block = plan_blocks(SCALES["reference"])[0]
    a = write_parquet_bytes(generate_block(block, seed=7, countries=eligible, manifest_fingerprint=FP).table, SPEC)
    b = write_parquet_bytes(generate_block(block, seed=7, countries=eligible, manifest_fingerprint=FP).table, SPEC)
    c = write_parquet_bytes(generate_block(block, seed=8, countries=eligible, manifest_fingerprint=FP).table, SPEC)
    assert a == b and a != c


def test_known_answer_guards_the_stream():
    """Rows depend only on PCG64's raw stream and exact arithmetic: a change here changes every catalogue."""
    ct = CountryTable.from_rows([("DE", 84), ("FR", 68), ("LU", 1), ("US", 330)])
    g = generate_block(plan_blocks(300)[0], seed=123, countries=ct, manifest_fingerprint=FP)
    h = hashlib.sha256()
    for c in ("merchant_id", "legal_country_iso", "home_country_iso", "site_order", "final_country_outlet_count",
              "raw_nb_outlet_draw"):
        h.update(repr(g.table.column(c).to_pylist()).encode())
    assert (g.rows, g.pairs, g.table["merchant_id"][0].as_py()) == (748, 339, 166256506702582821)
    assert h.hexdigest() == "23a1ca1540a542d04a3ee692bd980ca5770b4c17eeba35b12e39752eb8bcc265"


# -- shape ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_shape(eligible, seed):
    t = generate("reference", seed, eligible)
    n = pairs_of(t)
    assert len(eligible) == 230
    assert 29_500 <= t.num_rows <= 35_000  # ≈ 32 200 (the heavy tail makes the total vary by a few %)
    assert 17_800 <= len(n) <= 19_200  # ≈ 18 500 pairs
    countries = len(set(t["legal_country_iso"].to_pylist()))
    assert 165 <= countries <= 200  # ≈ 180 of 230
    assert (n <= 24).mean() > 0.99 and n.max() >= 100  # most pairs small, a tail of hundreds
    ids = t["merchant_id"].to_numpy()
    assert (ids >= 2**63).any() and (ids < 2**63).any()
    merchants_multi = len(set(t.filter(pa.compute.not_equal(t["home_country_iso"], t["legal_country_iso"]))
                              ["merchant_id"].to_pylist()))
    assert 800 <= merchants_multi <= 1600  # some multi-country merchants


def test_rows_are_consistent_and_sorted(eligible):
    t = generate("reference", 5, eligible).to_pandas()
    key = list(zip(t.merchant_id, t.legal_country_iso, t.site_order))
    assert key == sorted(key) and len(set(key)) == len(key)
    g = t.groupby(["merchant_id", "legal_country_iso"], sort=False)
    assert (g.site_order.transform("size") == t.final_country_outlet_count).all()
    assert (t.site_order == g.cumcount() + 1).all()
    assert (t.site_id == t.site_order.map("{:06d}".format)).all()
    per_merchant = t.groupby("merchant_id")
    assert (per_merchant.legal_country_iso.transform("size") == t.raw_nb_outlet_draw).all()
    assert (t.single_vs_multi_flag == (t.raw_nb_outlet_draw >= 2)).all()
    home_is_legal = t.groupby("merchant_id").apply(lambda f: f.home_country_iso.iloc[0] in set(f.legal_country_iso))
    assert home_is_legal.all()
    assert (t.global_seed == 5).all() and (t.manifest_fingerprint == FP).all()
    # the home country holds the largest share of a multi-country merchant's outlets
    sites = t.groupby(["merchant_id", "legal_country_iso"]).size().rename("n").reset_index()
    sites = sites.merge(t.groupby("merchant_id").home_country_iso.first().reset_index(), on="merchant_id")
    home_n = sites[sites.legal_country_iso == sites.home_country_iso].set_index("merchant_id").n
    assert (home_n >= sites.groupby("merchant_id").n.max()).mean() > 0.9


def test_blocks_cover_the_id_range_in_order(eligible):
    blocks = plan_blocks(2_000, max_block_merchants=300)
    assert len(blocks) == 8 and sum(b.merchants for b in blocks) == 2_000
    tables = [generate_block(b, seed=3, countries=eligible, manifest_fingerprint=FP).table for b in blocks]
    for b, t in zip(blocks, tables):
        ids = t["merchant_id"].to_numpy()
        assert b.id_lo <= ids.min() and ids.max() <= b.id_hi
    ids = pa.concat_tables(tables)["merchant_id"].to_numpy()
    assert (np.diff(ids.astype(object)) >= 0).all() and len(np.unique(ids)) == 2_000


def test_larger_scales_keep_the_shape(eligible):
    ref, x10 = generate("reference", 11, eligible), generate("x10", 11, eligible)
    assert 9.0 <= x10.num_rows / ref.num_rows <= 11.0
    assert abs(len(pairs_of(x10)) / x10.num_rows - len(pairs_of(ref)) / ref.num_rows) < 0.03
    assert SCALES["x100"] == 100 * SCALES["reference"] and SCALES["x1000"] == 1000 * SCALES["reference"]


def test_a_country_without_population_gets_no_sites():
    ct = CountryTable.from_rows([("FR", 10), ("DE", 0), ("LU", 5)])
    t = generate_block(plan_blocks(2000)[0], seed=1, countries=ct, manifest_fingerprint=FP).table
    assert set(t["legal_country_iso"].to_pylist()) == {"FR", "LU"}


# -- inputs and identity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, code, named", [
    ([("FR", 1), ("fr", 2)], "E302_FK_COUNTRY", "'fr'"),
    ([("FR", 1), ("QQ", 2)], "E302_FK_COUNTRY", "'QQ'"),
    ([("FR", 1), ("FR", 2)], "E307_PK_DUPLICATE", "'FR'"),
    ([("FR", -1)], "E309_VALUE_RANGE", "population=-1"),
    ([("FR", 0)], "E309_VALUE_RANGE", "total population 0"),
    ([], "E309_VALUE_RANGE", "0 countries"),
])
def test_country_table_is_validated(rows, code, named):
    with pytest.raises(InputError) as e:
        CountryTable.from_rows(rows)
    assert e.value.code == code and named in str(e.value)


def test_country_csv():
    t = CountryTable.from_csv_text("# comment\ncountry_iso,population\nFR,3\nDE,4\n")
    assert t.canonical() == [["DE", 4], ["FR", 3]]
    with pytest.raises(InputError, match="E304"):
        CountryTable.from_csv_text("iso3,pop\nFRA,3\n")
    with pytest.raises(InputError, match="line"):
        CountryTable.from_csv_text("country_iso,population\nFR,many\n")


def test_fingerprint_depends_on_every_parameter(world):
    small = CountryTable.from_rows([("FR", 1)])
    base = manifest_fingerprint(generator_parameters("reference", 1, world))
    assert base == manifest_fingerprint(generator_parameters("reference", 1, world))
    others = {manifest_fingerprint(generator_parameters(*args)) for args in
              [("reference", 2, world), ("x10", 1, world), ("reference", 1, small)]}
    assert base not in others and len(others) == 3
    with pytest.raises(InputError, match="unknown scale"):
        generator_parameters("huge", 1, world)
    with pytest.raises(InputError, match="seed"):
        generator_parameters("reference", 2**64, world)


# -- job and command line --------------------------------------------------------------------------------

@pytest.mark.cluster
def test_generate_job_publishes_catalogue_and_bundle(client, storage, world):
    from jobs.generate import run_generate
    from jobs.s0 import run_s0

    out = io.StringIO()
    r = run_generate(storage, client, world, scale="tiny", seed=9, out=out)
    fp = r["manifest_fingerprint"]
    target = path_for("outlet_catalogue", seed=9, manifest_fingerprint=fp)
    bundle = path_for("validation_bundle_1A", manifest_fingerprint=fp)
    assert r["status"] == "generated" and storage.list_files(target) == ["part-00000.parquet"]
    assert set(storage.list_files(bundle)) == {FLAG_NAME, INDEX_NAME, "MANIFEST.json", "egress_checksums.json",
                                                "summary.json"}
    t = storage.read_parquet(target + "part-00000.parquet")
    assert t.schema == SPEC.schema and t.num_rows == r["summary"]["rows"]
    assert set(t["manifest_fingerprint"].to_pylist()) == {fp}
    assert run_s0(storage, manifest_fingerprint=fp, seed=9, out=out)["catalogue"]["checked_against_bundle"]
    # idempotent: a rerun finds it published and vouched for
    again = run_generate(storage, client, world, scale="tiny", seed=9, out=out)
    assert again["status"] == "exists" and again["catalogue"] == r["catalogue"]


@pytest.mark.cluster
def test_in_process_and_cluster_give_the_same_bytes(client, tmp_path, world):
    from jobs.generate import run_generate
    from segment1b.storage import Storage

    a = run_generate(Storage(str(tmp_path / "a")), None, world, scale="tiny", seed=4, out=io.StringIO())
    b = run_generate(Storage(str(tmp_path / "b")), client, world, scale="tiny", seed=4, out=io.StringIO())
    assert a["catalogue"] == b["catalogue"] and a["bundle"] == b["bundle"]


def test_cli_generate_in_process(data_root, capsys):
    from jobs.cli import main

    argv = ["generate", "--data-root", data_root, "--scale", "tiny", "--seed", "5", "--in-process",
            "--countries-csv", str(COUNTRIES_CSV)]
    assert main(argv) == 0
    assert "manifest_fingerprint" in capsys.readouterr().out
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:  # refused while parsing (issue 14): a usage error, exit 2
        main(argv[:-2] + ["--countries-csv", str(COUNTRIES_CSV), "--seed", "-1"])
    assert bad.value.code == 2 and "expected a seed" in capsys.readouterr().err


def test_countries_from_places_sum_the_geonames_population(world):
    from jobs.generate import countries_from_places

    t = countries_from_places(["AQ", "DE", "FR"])
    fixture = dict(zip(world.iso, world.population))
    assert t.canonical() == [["AQ", 0], ["DE", fixture["DE"]], ["FR", fixture["FR"]]]


def test_countries_are_restricted_to_those_with_tile_weights(storage):
    from catalogue_fixtures import PH, publish_tile_weights

    from jobs.generate import countries_with_tiles, resolve_countries

    publish_tile_weights(storage, ["DE", "FR", "GB", "LU", "MC"])  # row groups of 2: most hold 2 countries
    assert countries_with_tiles(storage, PH) == {"DE", "FR", "GB", "LU", "MC"}
    t = resolve_countries(storage, countries_csv=str(COUNTRIES_CSV), parameter_hash=PH, out=io.StringIO())
    assert t.iso == ("DE", "FR", "GB", "LU", "MC")
    # without --parameter-hash the only published tile_weights partition is used
    t = resolve_countries(storage, countries_csv=None, parameter_hash=None, out=io.StringIO())
    assert t.iso == ("DE", "FR", "GB", "LU", "MC") and min(t.population) > 0
    with pytest.raises(InputError, match="E101"):
        countries_with_tiles(storage, "0" * 64)


@pytest.mark.parametrize("row_group_rows", [1, 2, 5])  # one country per row group / mixed row groups
def test_default_catalogues_leave_out_zero_mass_fallback_countries(tmp_path, row_group_rows):
    from catalogue_fixtures import PH, publish_tile_weights

    from jobs.generate import catalogue_countries, resolve_countries, tile_weight_countries

    storage = Storage(str(tmp_path / "root"))
    publish_tile_weights(storage, ["DE", "FR", "GB", "LU", "MC"], fallback=("GB", "MC"), row_group_rows=row_group_rows)
    assert tile_weight_countries(storage, PH) == {"DE": False, "FR": False, "GB": True, "LU": False, "MC": True}
    assert catalogue_countries(storage, PH) == ["DE", "FR", "LU"]
    out = io.StringIO()
    t = resolve_countries(storage, countries_csv=None, parameter_hash=PH, out=out)
    assert t.iso == ("DE", "FR", "LU") and "without 2 zero-mass fallback" in out.getvalue()
    # a user's country list keeps them (S6 may then fail with E613 there), with a note
    out = io.StringIO()
    t = resolve_countries(storage, countries_csv=str(COUNTRIES_CSV), parameter_hash=PH, out=out)
    assert t.iso == ("DE", "FR", "GB", "LU", "MC") and "GB, MC" in out.getvalue()
