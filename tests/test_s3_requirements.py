"""segment1b.s3_requirements (kernels) and jobs.s3 (the Dask job, its failures, its CLI)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import InputError
from segment1b.identity import RunIdentity
from segment1b.bundle import render_flag
from segment1b.s3_requirements import (READ_COLUMNS, UnitRuns, first_failure, iso_codes, owned_runs, plan_output,
                                       reduce_unit, requirements_table, stitch, stitchable)
from segment1b.storage import Storage

from catalogue_fixtures import (COUNTRIES_CSV, FP, PH, SEED, catalogue, delete, flag_path, overwrite,
                                publish_catalogue, publish_tile_weights, random_pairs, raw_parquet, set_values,
                                split)

IDENTITY = RunIdentity(SEED, FP, PH)
WEIGHTS = {"DE", "FR", "GB", "US", "ZA"}
PAIRS = [(10, "DE", 3), (10, "FR", 1), (11, "FR", 2), (2**63 + 5, "GB", 4), (2**64 - 1, "US", 1)]


def expected(table: pa.Table) -> pd.DataFrame:
    """The plain pandas answer: rows per (merchant_id, legal_country_iso), sorted."""
    df = table.select(["merchant_id", "legal_country_iso"]).to_pandas()
    g = df.groupby(["merchant_id", "legal_country_iso"], sort=True).size().rename("n_sites").reset_index()
    return g.astype({"merchant_id": "uint64", "legal_country_iso": "str", "n_sites": "int64"})


def as_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().astype({"legal_country_iso": "str"}).reset_index(drop=True)


# -- kernels ---------------------------------------------------------------------------------------------

def reduce_all(tables: list[pa.Table], weights=WEIGHTS, pairs_per_part: int = 3):
    """The whole S3 pipeline without Dask: reduce each unit, stitch, plan, build the output parts."""
    results = []
    for i, t in enumerate(tables):
        results.append(reduce_unit(t.select(READ_COLUMNS), unit=i, part=f"part-{i}", row_offset=0,
                                   manifest_fingerprint=FP, seed=SEED))
    summaries = [s for s, _ in results]
    stitched = stitch(summaries, countries_with_weights=weights) if stitchable(summaries) else None
    failure = first_failure([f for s in summaries for f in s.failures] + (stitched.failures if stitched else []))
    if failure:
        raise failure
    parts = []
    for pieces in plan_output(stitched.owned, pairs_per_part):
        slices = []
        for u, lo, hi in pieces:
            r = owned_runs(results[u][1], continues=stitched.continues[u], last_n=stitched.last_n.get(u))
            slices.append(UnitRuns(r.merchant_id[lo:hi], r.country[lo:hi], r.n_sites[lo:hi]))
        parts.append(requirements_table(slices))
    return parts, stitched


def test_kernel_matches_groupby_for_every_two_way_split():
    t = catalogue(PAIRS)
    for cut in range(t.num_rows + 1):
        parts, stitched = reduce_all(split(t, [cut]))
        assert as_frame(pa.concat_tables(parts)).equals(expected(t))
        assert stitched.pairs == 5 and stitched.sites == 11
        assert stitched.pairs_by_country == {"DE": 1, "FR": 2, "GB": 1, "US": 1}
        assert [p.num_rows for p in parts] == [3, 2]  # output layout from pairs only


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), merchants=st.integers(1, 40), cuts=st.lists(st.integers(0, 400), max_size=6),
       per_part=st.integers(1, 50))
def test_kernel_matches_groupby_on_random_catalogues(seed, merchants, cuts, per_part):
    t = catalogue(random_pairs(np.random.default_rng(seed), merchants))
    bounds = sorted(min(c, t.num_rows) for c in cuts)
    sizes = np.diff([0] + bounds).tolist()
    parts, _ = reduce_all(split(t, sizes), pairs_per_part=per_part)
    got = pa.concat_tables(parts)
    assert as_frame(got).equals(expected(t))
    assert all(p.num_rows == per_part for p in parts[:-1])


def kernel_failure(table: pa.Table, cuts=(), weights=WEIGHTS) -> InputError:
    with pytest.raises(InputError) as e:
        reduce_all(split(table, list(cuts)), weights=weights)
    return e.value


def rows_of(err: InputError, key: str) -> list:
    return [r.get(key) for r in err.rows]


# rows of catalogue(PAIRS): 0-2 (10, DE), 3 (10, FR), 4-5 (11, FR), 6-9 (2^63+5, GB), 10 (2^64-1, US)
@pytest.mark.parametrize("column, changes, code, bad_row, words", [
    ("site_order", {7: 3, 8: 4, 9: 5}, "E314_SITE_ORDER_INTEGRITY", 7, "gap"),
    ("site_order", {8: 2}, "E314_SITE_ORDER_INTEGRITY", 8, "duplicate"),
    ("site_order", {4: 2, 5: 3}, "E314_SITE_ORDER_INTEGRITY", 4, "not 1"),
    ("final_country_outlet_count", {4: 3, 5: 3}, "E314_SITE_ORDER_INTEGRITY", 4, "pair has 2 rows"),
    ("final_country_outlet_count", {5: 3}, "E314_SITE_ORDER_INTEGRITY", 5, "changes within"),
    ("legal_country_iso", {3: "fr"}, "E302_FK_COUNTRY", 3, "'fr'"),
    ("home_country_iso", {6: "QQ"}, "E302_FK_COUNTRY", 6, "'QQ'"),
    ("manifest_fingerprint", {5: "ff" * 32}, "E306_TOKEN_MISMATCH", 5, "ff" * 32),
    ("global_seed", {9: 43}, "E306_TOKEN_MISMATCH", 9, "global_seed"),
    ("legal_country_iso", {3: "AA"}, "E302_FK_COUNTRY", 3, "'AA'"),
    ("merchant_id", {4: 9, 5: 9}, "E308_UNSORTED", 4, "sorts before"),
    ("legal_country_iso", {3: "CH"}, "E308_UNSORTED", 3, "sorts before"),
    ("site_order", {1: 3, 2: 2}, "E308_UNSORTED", 2, "sorts before"),
])
@pytest.mark.parametrize("cuts", [(), (5,), (2, 7)])
def test_kernel_failures_name_the_rows(column, changes, code, bad_row, words, cuts):
    t = set_values(catalogue(PAIRS), column, changes)
    err = kernel_failure(t, cuts)
    assert err.code == code and words in str(err)
    # the row is named by its part and position in the part
    starts = np.cumsum([0, *cuts])
    part = int(np.searchsorted(starts, bad_row, side="right") - 1)
    assert {"part": f"part-{part}", "row": bad_row - starts[part]}.items() <= err.rows[0].items()


@pytest.mark.parametrize("changes, code, words", [
    ({5: 3}, "E314_SITE_ORDER_INTEGRITY", "gap: site_order jumps from 1 to 3"),
    ({7: 1}, "E314_SITE_ORDER_INTEGRITY", "duplicate site_order"),
    ({6: 2, 7: 3, 8: 4, 9: 5}, "E314_SITE_ORDER_INTEGRITY", "first site_order is 2, not 1"),
    ({6: 1, 7: 0}, "E308_UNSORTED", "sorts before the previous part"),
])
def test_failures_across_a_part_boundary(changes, code, words):
    t = set_values(catalogue(PAIRS), "site_order", changes)
    err = kernel_failure(t, cuts=(5, 2))  # parts: rows 0-4 | 5-6 | 7-10
    assert err.code == code and words in str(err)


def test_outlet_count_of_a_spanning_pair_is_checked():
    t = set_values(catalogue(PAIRS), "final_country_outlet_count", {6: 5, 7: 5, 8: 5, 9: 5})
    err = kernel_failure(t, cuts=(8,))
    assert err.code == "E314_SITE_ORDER_INTEGRITY" and "is 5 but the pair has 4 rows" in str(err)
    assert err.rows[0]["merchant_id"] == 2**63 + 5


def test_country_without_weights():
    err = kernel_failure(catalogue(PAIRS), weights=WEIGHTS - {"GB", "US"})
    assert err.code == "E303_MISSING_WEIGHTS"
    assert err.rows == [{"legal_country_iso": "GB", "pairs": 1, "sites": 4},
                        {"legal_country_iso": "US", "pairs": 1, "sites": 1}]


def test_first_failure_prefers_check_order_and_merges_units():
    a = InputError("E314_SITE_ORDER_INTEGRITY", "x", rows=[{"row": 1}])
    b = InputError("E308_UNSORTED", "y", rows=[{"row": 2}])
    c = InputError("E308_UNSORTED", "y", rows=[{"row": 3}])
    f = first_failure([a, b, c])
    assert f.code == "E308_UNSORTED" and f.rows == [{"row": 2}, {"row": 3}] and "E314" in f.hint
    assert first_failure([a]) is a and first_failure([]) is None


def test_empty_catalogue_gives_one_empty_part():
    parts, stitched = reduce_all([catalogue([])])
    assert [p.num_rows for p in parts] == [0] and stitched.pairs == 0
    assert plan_output([0, 0], 10) == [[]]


def test_iso_codes_sort_like_strings():
    assert list(iso_codes()) == sorted(iso_codes()) and len(iso_codes()) < 256  # fits the uint8 run codes


# -- the job ---------------------------------------------------------------------------------------------

def run(storage, client, weights=WEIGHTS, **kw):
    from jobs.s3 import run_s3

    return run_s3(storage, client, IDENTITY, countries_with_weights=weights, out=io.StringIO(), show=False, **kw)


def output(storage) -> pa.Table:
    rel = path_for("s3_requirements", **IDENTITY.tokens)
    return pa.concat_tables(storage.read_parquet(p) for p in storage.parquet_parts(rel))


@pytest.mark.cluster
def test_job_on_a_generated_catalogue(client, storage):
    from jobs.generate import run_generate
    from jobs.s3 import run_s3
    from segment1b.generator import CountryTable

    countries = CountryTable.from_csv_text(COUNTRIES_CSV.read_text())
    g = run_generate(storage, client, countries, scale="tiny", seed=SEED, out=io.StringIO(), show=False)
    identity = RunIdentity(SEED, g["manifest_fingerprint"], PH)
    rep = run_s3(storage, client, identity, countries_with_weights=set(countries.iso), out=io.StringIO(), show=False)
    cat = storage.read_parquet(g["catalogue"]["partition_path"] + "part-00000.parquet")
    rel = path_for("s3_requirements", **identity.tokens)
    got = pa.concat_tables(storage.read_parquet(p) for p in storage.parquet_parts(rel))
    assert got.schema == dataset("s3_requirements").schema
    assert as_frame(got).equals(expected(cat))
    assert rep["pairs"] == got.num_rows == g["summary"]["pairs"] and rep["sites"] == cat.num_rows
    by_country = {c["country_iso"]: (c["pairs"], c["sites"]) for c in rep["countries"]}
    assert by_country == {c["country_iso"]: (c["pairs"], c["sites"]) for c in g["summary"]["by_country"]}
    assert rep["determinism_receipt"][0]["partition_path"] == rel
    assert storage.read_json(report_path("s3", **identity.tokens))["rows"] == got.num_rows
    assert rep["s0_receipt"]["partition_path"] == path_for("s0_gate_receipt_1B",
                                                           manifest_fingerprint=g["manifest_fingerprint"])
    # a rerun publishes the same bytes (write-once: no-op)
    assert run_s3(storage, client, identity, countries_with_weights=set(countries.iso), out=io.StringIO(),
                  show=False)["determinism_receipt"] == rep["determinism_receipt"]


@pytest.mark.cluster
def test_job_bytes_do_not_depend_on_workers_or_input_parts(client, client1, tmp_path):
    t = catalogue(random_pairs(np.random.default_rng(3), 150))  # ~1 900 rows
    # (parts, rows per row group, rows per read unit): one part; uneven parts; many small parts and units
    layouts = [([t], 1 << 18, 1 << 20), (split(t, [100, 250, 1, 400]), 64, 100), (split(t, [61] * 30), 13, 30)]
    digests = set()
    for i, (parts, row_groups, unit_rows) in enumerate(layouts):
        for j, c in enumerate((client, client1)):
            storage = Storage(str(tmp_path / f"root-{i}-{j}"))
            publish_catalogue(storage, parts, row_group_rows=row_groups)
            rep = run(storage, c, unit_rows=unit_rows, pairs_per_part=53)
            digests.add(rep["determinism_receipt"][0]["sha256_hex"])
            assert rep["output_parts"] == -(-len(expected(t)) // 53)
    assert len(digests) == 1
    assert as_frame(output(storage)).equals(expected(t))


def break_flag(storage, r):
    overwrite(storage, flag_path(), render_flag("2" * 64))


def drop_flag(storage, r):
    delete(storage, flag_path())


def tamper_bundle(storage, r):
    overwrite(storage, r["bundle"] + "summary.json", b"{}")


def good():
    return catalogue(PAIRS)


# (name, parts, tamper, weights, code, a string the message must contain)
CASES = [
    ("missing flag", lambda: [good()], drop_flag, WEIGHTS, "E301_NO_PASS_FLAG", "_passed.flag is missing"),
    ("wrong flag", lambda: [good()], break_flag, WEIGHTS, "E301_NO_PASS_FLAG", "2" * 64),
    ("tampered file", lambda: [good()], tamper_bundle, WEIGHTS, "E301_NO_PASS_FLAG", "path='summary.json'"),
    ("site_order gap", lambda: [set_values(good(), "site_order", {2: 4})], None, WEIGHTS,
     "E314_SITE_ORDER_INTEGRITY", "merchant_id=10 legal_country_iso='DE' site_order=4"),
    ("site_order duplicate", lambda: [set_values(good(), "site_order", {8: 2})], None, WEIGHTS,
     "E314_SITE_ORDER_INTEGRITY", f"merchant_id={2**63 + 5} legal_country_iso='GB' site_order=2"),
    ("gap across parts", lambda: split(set_values(good(), "site_order", {8: 4, 9: 5}), [8]), None, WEIGHTS,
     "E314_SITE_ORDER_INTEGRITY", "gap: site_order jumps from 2 to 4"),
    ("unknown ISO", lambda: [set_values(good(), "legal_country_iso", {10: "UK"})], None, WEIGHTS,
     "E302_FK_COUNTRY", f"merchant_id={2**64 - 1} column='legal_country_iso' value='UK'"),
    ("country without weights", lambda: [good()], None, WEIGHTS - {"GB"}, "E303_MISSING_WEIGHTS",
     "legal_country_iso='GB' pairs=1 sites=4"),
    ("fingerprint column", lambda: [set_values(good(), "manifest_fingerprint", {1: "00" * 32})], None, WEIGHTS,
     "E306_TOKEN_MISMATCH", "row=1 merchant_id=10 column='manifest_fingerprint'"),
    ("seed column", lambda: [set_values(good(), "global_seed", {0: 7})], None, WEIGHTS,
     "E306_TOKEN_MISMATCH", "column='global_seed' value=7 expected=42"),
    ("unsorted across parts", lambda: split(good(), [6])[::-1], None, WEIGHTS, "E308_UNSORTED",
     "merchant_id=10"),
    ("wrong type", lambda: [raw_parquet(good().set_column(8, "site_order", pa.array(range(11), pa.int64())))],
     None, WEIGHTS, "E304_SCHEMA_MISMATCH", "'column': 'site_order', 'type': 'int64'"),
    ("missing column", lambda: [good(), raw_parquet(good().drop_columns(["site_id"]))], None, WEIGHTS,
     "E304_SCHEMA_MISMATCH", "missing ['site_id']"),
    ("truncated part", lambda: [good(), raw_parquet(good())[:-100]], None, WEIGHTS, "E305_PARQUET_UNREADABLE",
     "part-00001.parquet"),
]


def _expect_failure(storage, err: InputError, code: str, words: str):
    assert err.code == code, str(err)
    assert words in str(err) or words in str(err.rows), str(err)
    target = path_for("s3_requirements", **IDENTITY.tokens)
    assert not storage.exists(target) and not storage.exists(report_path("s3", **IDENTITY.tokens))
    parent = target.rstrip("/").rsplit("/", 1)[0]
    assert not storage.exists(parent) or storage.list_files(parent) == []  # not even a staging folder


@pytest.mark.cluster
@pytest.mark.parametrize("name, parts, tamper, weights, code, words", CASES, ids=[c[0] for c in CASES])
def test_job_failures(client, storage, name, parts, tamper, weights, code, words):
    r = publish_catalogue(storage, parts())
    if tamper:
        tamper(storage, r)
    with pytest.raises(InputError) as e:
        run(storage, client, weights=weights)
    _expect_failure(storage, e.value, code, words)


@pytest.mark.cluster
@pytest.mark.parametrize("name, parts, tamper, weights, code, words", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_cli_failures_exit_non_zero(client, storage, capsys, name, parts, tamper, weights, code, words):
    from jobs.cli import EXIT_CONTRACT_FAILURE, main

    r = publish_catalogue(storage, parts())
    if tamper:
        tamper(storage, r)
    publish_tile_weights(storage, weights)
    argv = ["requirements", "--data-root", storage.root_url, "--seed", str(SEED), "--fingerprint", FP,
            "--parameter-hash", PH, "--scheduler", client.scheduler.address]
    assert main(argv) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert f"FAILED {code}" in err
    target = path_for("s3_requirements", **IDENTITY.tokens)
    assert not storage.exists(target)


@pytest.mark.cluster
def test_cli_requirements_passes(client, storage, capsys):
    from jobs.cli import main

    publish_catalogue(storage, [good()])
    publish_tile_weights(storage, WEIGHTS)
    argv = ["requirements", "--data-root", storage.root_url, "--seed", str(SEED), "--fingerprint", FP,
            "--parameter-hash", PH, "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    assert "5 pairs, 11 sites" in capsys.readouterr().out
    assert as_frame(output(storage)).equals(expected(good()))


def test_corrupt_data_page_is_e305(storage):
    from catalogue_fixtures import SPEC

    from jobs.s3 import ReadUnit, reduce_task
    from segment1b.storage import write_parquet_bytes

    t = catalogue(random_pairs(np.random.default_rng(1), 500))
    data = bytearray(write_parquet_bytes(t, SPEC))
    data[len(data) // 2: len(data) // 2 + 200] = bytes(200)  # zero a stretch of compressed pages
    storage.write_bytes("p.parquet", bytes(data))
    summary, runs = reduce_task(storage, ReadUnit(0, "p.parquet", (0,), 0, t.num_rows), manifest_fingerprint=FP,
                                seed=SEED)
    assert [f.code for f in summary.failures] == ["E305_PARQUET_UNREADABLE"] and len(runs) == 0
    assert "p.parquet" in str(summary.failures[0])
