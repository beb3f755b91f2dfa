"""S9 job on the synthetic world: PASS with flag, one tampering test per check, bundle policy, the CLI."""

import io
import json
import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import runs
import world
from jobs.report import run_report as pictures_report
from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from jobs.report.run_files import resolve_identity
from jobs.validate import run_s9
from segment1b import rng
from segment1b.contracts import dataset, path_for, report_path
from segment1b.errors import IntegrityError
from segment1b.reader import verify_passed_flag
from segment1b.rng_log_files import form_of_name, read_lines
from segment1b.s8_egress import ENCODINGS
from segment1b.storage import Storage, write_parquet_bytes

PAIRS = world.random_pairs(150, seed=5)
FP = world.FINGERPRINT
BUNDLE = path_for("validation_bundle_1B", manifest_fingerprint=FP)
KEY = ("merchant_id", "legal_country_iso", "site_order")


@pytest.fixture(scope="module")
def validated(tmp_path_factory, client):
    storage = Storage(str(tmp_path_factory.mktemp("s9") / "root"))
    ident = world.placed(storage, client, PAIRS)
    return storage, ident, run_s9(storage, client, ident.seed, FP, out=io.StringIO())


@pytest.fixture
def fresh(validated, tmp_path):
    """A copy of the published tree before S9 ran (no bundle), to tamper with."""
    storage, ident, _ = validated
    dst = tmp_path / "copy"
    shutil.copytree(storage.root_url, dst)
    shutil.rmtree(dst / "data/layer1/1B/validation")
    return Storage(str(dst)), ident


def rels(ident):
    return {"s6": path_for("s6_site_jitter", **ident.tokens),
            "s7": path_for("s7_site_synthesis", **ident.tokens),
            "s8": path_for("site_locations", seed=ident.seed, manifest_fingerprint=FP)}


def rewrite(storage, rel, table, ds):
    with open(storage.abspath(rel), "wb") as fh:
        fh.write(write_parquet_bytes(table, dataset(ds),
                                     encodings=ENCODINGS if ds != "s6_site_jitter" else None))


def key_of(row):
    return tuple(row[k] for k in KEY)


def failed(storage, client, ident, code):
    """Run S9; assert it failed with ``code``, published no flag, and return the failure's examples."""
    result = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert not result.passed and code in result.failed_codes, result.failed_codes
    assert result.flag_sha256_hex is None and not storage.exists(BUNDLE + "_passed.flag")
    assert "/_failed/" in result.bundle_path and not storage.exists(result.bundle_path + "_passed.flag")
    summary = json.loads(storage.read_bytes(result.bundle_path + "s9_summary.json"))
    assert summary["status"] == "FAIL" and code in summary["failed_codes"]
    with pytest.raises(Exception) as e:
        verify_passed_flag(storage.root_url, ident.seed, FP)
    assert e.value.code == "E910_FLAG"
    return [ex for c in summary["checks"] for f in c["failures"] if f["code"] == code for ex in f["examples"]]


def test_pass_publishes_bundle_with_flag(validated, client):
    storage, ident, result = validated
    assert result.passed and result.failed_codes == [] and result.bundle_path == BUNDLE
    assert sorted(storage.list_files(BUNDLE)) == ["MANIFEST.json", "_passed.flag", "egress_checksums.json",
                                                  "index.json", "rng_accounting.json", "s9_summary.json"]
    assert verify_passed_flag(storage.root_url, ident.seed, FP) == result.flag_sha256_hex
    summary = json.loads(storage.read_bytes(BUNDLE + "s9_summary.json"))
    assert {c["status"] for c in summary["checks"]} == {"PASS"}
    assert summary["rows"]["site_locations"] == sum(n for _, _, n in PAIRS)
    acc = json.loads(storage.read_bytes(BUNDLE + "rng_accounting.json"))["families"]
    sites = sum(n for _, _, n in PAIRS)
    assert acc[rng.S5_LABEL]["events"] == sites == acc[rng.S5_LABEL]["trace_final"]["events_total"]
    assert acc[rng.S6_LABEL]["draws"] == 2 * acc[rng.S6_LABEL]["events"]
    report = json.loads(storage.read_bytes(report_path("s9", **ident.tokens)))
    assert report["status"] == "PASS" and report["determinism_receipt"][0]["partition_path"] == BUNDLE
    # the same files validate to the same bundle bytes; over the published PASS that is an audit, which
    # leaves the PASS as it is and records the same members (its summary names what it audited)
    digest = storage.partition_digest(BUNDLE)
    again = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert again.passed and again.flag_sha256_hex == result.flag_sha256_hex
    assert storage.partition_digest(BUNDLE) == digest
    for name in ("MANIFEST.json", "rng_accounting.json", "egress_checksums.json"):
        assert storage.read_bytes(again.audit_path + name) == storage.read_bytes(BUNDLE + name)
    audited = json.loads(storage.read_bytes(again.audit_path + "s9_summary.json"))
    assert audited.pop("audit") == {"bundle_path": BUNDLE, "flag_sha256_hex": result.flag_sha256_hex}
    assert audited == summary


def test_deleted_row_is_e901(fresh, client):
    storage, ident = fresh
    part = storage.parquet_parts(rels(ident)["s8"])[1]
    table = pq.read_table(storage.abspath(part))
    gone = table.slice(3, 1).to_pylist()[0]
    rewrite(storage, part, pa.concat_tables([table.slice(0, 3), table.slice(4)]), "site_locations")
    examples = failed(storage, client, ident, "E901_ROW_MISSING")
    assert key_of(gone) in {key_of(e) for e in examples if "merchant_id" in e}


def test_duplicate_key_is_e903(fresh, client):
    storage, ident = fresh
    part = storage.parquet_parts(rels(ident)["s8"])[2]
    table = pq.read_table(storage.abspath(part))
    twice = table.slice(5, 1)
    rewrite(storage, part, pa.concat_tables([table.slice(0, 6), twice, table.slice(6)]), "site_locations")
    examples = failed(storage, client, ident, "E903_DUP_KEY")
    assert key_of(twice.to_pylist()[0]) in {key_of(e) for e in examples}


def _outside_point(grid, geoms, s7):
    """A row of S7 and a point inside its pixel but outside its country (a coastal cell)."""
    for i, row in enumerate(s7.to_pylist()):
        west, east, south, north = (float(v[0]) for v in grid.bounds(np.array([row["tile_id"]], np.uint64)))
        cx, cy = (float(v[0]) for v in grid.centroid(np.array([row["tile_id"]], np.uint64)))
        for fx in np.linspace(0.02, 0.98, 9):
            for fy in np.linspace(0.02, 0.98, 9):
                dlon, dlat = west + fx * (east - west) - cx, south + fy * (north - south) - cy
                lon, lat = grid.absolute_point(np.array([row["tile_id"]], np.uint64), [dlon], [dlat])
                if not shapely.intersects_xy(geoms[row["legal_country_iso"]], lon[0], lat[0]):
                    return i, dlon, dlat, float(lon[0]), float(lat[0])
    raise AssertionError("no coastal cell in the world")


def test_point_moved_out_of_its_country_is_e608(fresh, client):
    storage, ident = fresh
    r = rels(ident)
    p7 = storage.parquet_parts(r["s7"])[0]
    s7 = pq.read_table(storage.abspath(p7))
    i, dlon, dlat, lon, lat = _outside_point(world.GRID, world.countries(), s7)
    moved = s7.to_pylist()[i]
    # consistent edit of S6, S7 and site_locations: only the geometry (and the RNG log) can tell
    for name, ds, cols in (("s6", "s6_site_jitter", {"delta_lon_deg": dlon, "delta_lat_deg": dlat}),
                           ("s7", "s7_site_synthesis", {"lon_deg": lon, "lat_deg": lat}),
                           ("s8", "site_locations", {"lon_deg": lon, "lat_deg": lat})):
        part = storage.parquet_parts(r[name])[0]
        t = pq.read_table(storage.abspath(part))
        for col, value in cols.items():
            values = t[col].to_numpy().copy()
            values[i] = value
            t = t.set_column(t.schema.get_field_index(col), t.schema.field(col), pa.array(values))
        rewrite(storage, part, t, ds)
    examples = failed(storage, client, ident, "E608_POINT_OUTSIDE_COUNTRY")
    assert key_of(moved) in {key_of(e) for e in examples}


def test_edited_rng_event_is_e907(fresh, client):
    storage, ident = fresh
    ev = world.event_part(storage, ident, rng.S5_LABEL, 1)
    lines = read_lines(storage.read_bytes(ev), form_of_name(ev)).split(b"\n")
    site = json.loads(lines[2])
    lines[2] = re.sub(rb'"u":[^,}]+', b'"u":0.5', lines[2])
    world.rewrite_event_part(storage, ev, b"\n".join(lines))
    examples = failed(storage, client, ident, "E907_RNG_BUDGET")
    assert key_of(site) in {key_of(e) for e in examples}


def test_dropped_audit_record_is_e907(fresh, client):
    storage, ident = fresh
    with open(storage.abspath(path_for("rng_audit_log", **ident.log_tokens)), "wb"):
        pass
    examples = failed(storage, client, ident, "E907_RNG_BUDGET")
    assert examples == [{"records": 0}]


def test_one_changed_byte_of_an_egress_file_is_e911(fresh, client):
    storage, ident = fresh
    part = storage.abspath(storage.parquet_parts(rels(ident)["s8"])[0])
    data = bytearray(open(part, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(part, "wb").write(bytes(data))
    examples = failed(storage, client, ident, "E911_FINALITY")
    assert {e.get("dataset") for e in examples} == {"site_locations"}


def test_failed_bundle_never_blocks_a_later_pass(fresh, client):
    storage, ident = fresh
    audit = storage.abspath(path_for("rng_audit_log", **ident.log_tokens))
    good = open(audit, "rb").read()
    open(audit, "wb").write(good + good)  # two audit records
    first = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    same = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert not first.passed and first.bundle_path == same.bundle_path  # one folder per distinct failure
    open(audit, "wb").write(good)
    fixed = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert fixed.passed and fixed.bundle_path == BUNDLE and storage.exists(first.bundle_path)


def test_run_receipt_names_the_run(fresh, client):
    storage, ident = fresh
    receipt = path_for("run_receipt", **ident.tokens)
    storage.write_json(receipt, {"run_id": ident.run_id, **ident.tokens})
    assert run_s9(storage, client, ident.seed, FP, out=io.StringIO()).passed
    storage.remove(BUNDLE)
    storage.write_json(receipt, {"run_id": ident.run_id, **ident.tokens, "parameter_hash": "4d" * 32})
    examples = failed(storage, client, ident, "E912_IDENTITY_COHERENCE")
    assert {"field": "parameter_hash", "receipt": "4d" * 32, "expected": ident.parameter_hash} in examples


def test_cli_validate_exit_codes(fresh, client, capsys):
    storage, ident = fresh
    args = ["validate", "--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP,
            "--scheduler", client.scheduler.address]
    assert cli_main(args) == 0
    assert "s9 PASS" in capsys.readouterr().out
    os.remove(storage.abspath(path_for("rng_trace_log", **ident.log_tokens)))
    assert cli_main(args) == EXIT_CONTRACT_FAILURE
    assert "E907_RNG_BUDGET" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["validate", "--data-root", storage.root_url, "--seed", "-1", "--fingerprint", FP])


def test_a_malformed_parameter_hash_is_a_usage_error(tmp_path, capsys):
    """Issue 18 item 7: ``--parameter-hash XYZ`` exits 2 with the usage line (it once escaped as exit 1)."""
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as e:
        cli_main(["validate", "--data-root", str(root), "--seed", "42", "--fingerprint", FP,
                  "--parameter-hash", "XYZ"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: segment1b validate" in err and "--parameter-hash" in err
    assert "Traceback" not in err and not root.exists()


# --- S4 allocation plan: quotas on every pair, independent recomputation on a sample ----------------------

def _summary_check(storage, bundle, name):
    summary = json.loads(storage.read_bytes(bundle + "s9_summary.json"))
    return next(c for c in summary["checks"] if c["check"] == name)


def test_pass_recomputes_the_plan_of_every_sampled_pair(validated):
    storage, ident, result = validated
    assert result.passed
    recompute = _summary_check(storage, BUNDLE, "plan_recompute")
    assert recompute["status"] == "PASS"
    # the default sample (256 pairs, plus the largest one unless already in it) of the 292 pairs
    counts = recompute["counts"]
    assert counts["pairs"] == counts["pairs_requested"] in (256, 257) and counts["mismatched"] == 0
    assert max(counts["weighted_tiles"].values()) > 100  # over all of a country's tiles
    quota = _summary_check(storage, BUNDLE, "plan_quota")
    assert quota["status"] == "PASS" and quota["counts"]["pairs"] == len(PAIRS)
    assert quota["counts"]["sites"] == sum(n for _, _, n in PAIRS)
    manifest = json.loads(storage.read_bytes(BUNDLE + "MANIFEST.json"))
    assert "s4_alloc_plan" in {i["dataset"] for i in manifest["inputs"]}


def _plan(ident):
    return path_for("s4_alloc_plan", **ident.tokens)


def test_weights_changed_after_the_plan_is_e404_from_the_recomputation(fresh, client):
    """S4-S8 agree with each other: the recomputation over the tile weights sees it, and so does the S2
    receipt of tile_weights (issue 14)."""
    storage, ident = fresh
    plan = pq.read_table(storage.abspath(storage.parquet_parts(_plan(ident))[0])).to_pylist()
    pairs = [(r["merchant_id"], r["legal_country_iso"]) for r in plan]
    # a tile receiving sites of a pair spread over several tiles (so the country has other tiles)
    big = max((r for r in plan if pairs.count((r["merchant_id"], r["legal_country_iso"])) > 1),
              key=lambda r: r["n_sites_tile"])
    for rel in storage.parquet_parts(path_for("tile_weights", parameter_hash=ident.parameter_hash)):
        weights = pq.read_table(storage.abspath(rel))
        iso = weights["country_iso"].to_numpy(zero_copy_only=False)
        tile = weights["tile_id"].to_numpy()
        here = np.flatnonzero((iso == big["legal_country_iso"]) & (tile == big["tile_id"]))
        if here.size:
            break
    there = np.flatnonzero((iso == big["legal_country_iso"]) & (tile != big["tile_id"]))[0]
    w = weights["weight_fp"].to_numpy().copy()
    w[there] += w[here[0]]  # move all of the tile's weight to another tile of the country (sum stays 10^dp)
    w[here[0]] = 0
    weights = weights.set_column(2, "weight_fp", pa.array(w, pa.uint64()))
    with open(storage.abspath(rel), "wb") as fh:
        fh.write(write_parquet_bytes(weights, dataset("tile_weights")))
    examples = failed(storage, client, ident, "E404_ALLOCATION_MISMATCH")
    result = run_s9(storage, client, ident.seed, FP, plan_sample=10**6, out=io.StringIO())
    assert result.failed_codes == ["E404_ALLOCATION_MISMATCH", "E911_FINALITY"]  # the sums still hold
    examples = [e for f in result.findings for e in f["examples"]]
    assert {"merchant_id": big["merchant_id"], "legal_country_iso": big["legal_country_iso"],
            "tile_id": big["tile_id"], "n_sites_tile": big["n_sites_tile"], "expected": 0} in \
        [{k: e[k] for k in ("merchant_id", "legal_country_iso", "tile_id", "n_sites_tile", "expected")}
         for e in examples if "expected" in e]


def test_site_moved_between_planned_tiles_is_e503(fresh, client):
    storage, ident = fresh
    part = storage.parquet_parts(_plan(ident))[1]
    plan = pq.read_table(storage.abspath(part))
    rows = plan.to_pylist()
    # the first pair with two planned tiles: one site moves from the first tile to the second
    i = next(i for i in range(len(rows) - 1) if rows[i]["n_sites_tile"] > 1 and
             (rows[i]["merchant_id"], rows[i]["legal_country_iso"]) ==
             (rows[i + 1]["merchant_id"], rows[i + 1]["legal_country_iso"]))
    rows[i]["n_sites_tile"] -= 1
    rows[i + 1]["n_sites_tile"] += 1
    rewrite(storage, part, pa.Table.from_pylist(rows, schema=plan.schema), "s4_alloc_plan")
    examples = failed(storage, client, ident, "E503_TILE_QUOTA_MISMATCH")
    assert {(e["merchant_id"], e["tile_id"]) for e in examples} >= {(rows[i]["merchant_id"], rows[i]["tile_id"]),
                                                                    (rows[i]["merchant_id"], rows[i + 1]["tile_id"])}
    # the recomputation sees it too, and the plan no longer matches its run report's receipt
    result = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert {"E404_ALLOCATION_MISMATCH", "E911_FINALITY"} <= set(result.failed_codes)


def test_dropped_plan_row_is_e404_against_s3(fresh, client):
    storage, ident = fresh
    part = storage.parquet_parts(_plan(ident))[0]
    plan = pq.read_table(storage.abspath(part))
    gone = plan.slice(4, 1).to_pylist()[0]
    rewrite(storage, part, pa.concat_tables([plan.slice(0, 4), plan.slice(5)]), "s4_alloc_plan")
    examples = failed(storage, client, ident, "E404_ALLOCATION_MISMATCH")
    pair = (gone["merchant_id"], gone["legal_country_iso"])
    assert pair in {(e["merchant_id"], e["legal_country_iso"]) for e in examples if "n_sites" in e}


def test_plan_sample_can_be_chosen_or_turned_off(fresh, client):
    storage, ident = fresh
    few = run_s9(storage, client, ident.seed, FP, plan_sample=5, out=io.StringIO())
    counts = _summary_check(storage, few.bundle_path, "plan_recompute")["counts"]
    assert few.passed and counts["sample_size"] == 5 and counts["pairs"] in (5, 6)  # + the largest pair
    # another sample over a published PASS is an audit: it passes and leaves the PASS bundle as it is
    digest = storage.partition_digest(BUNDLE)
    again = run_s9(storage, client, ident.seed, FP, plan_sample=6, out=io.StringIO())
    assert again.passed and again.bundle_path == BUNDLE and again.flag_sha256_hex == few.flag_sha256_hex
    assert storage.partition_digest(BUNDLE) == digest and "/_audit/" in again.audit_path
    assert _summary_check(storage, again.audit_path, "plan_recompute")["counts"]["sample_size"] == 6
    storage.remove(BUNDLE)
    every = run_s9(storage, client, ident.seed, FP, plan_sample=10**6, out=io.StringIO())
    assert every.passed and _summary_check(storage, BUNDLE, "plan_recompute")["counts"]["pairs"] == len(PAIRS)
    storage.remove(BUNDLE)
    args = ["validate", "--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP,
            "--scheduler", client.scheduler.address, "--plan-sample", "0"]
    assert cli_main(args) == 0
    assert _summary_check(storage, BUNDLE, "plan_recompute")["counts"]["pairs"] == 0


# --- a real run (tests/runs.py): tile surfaces against S1/S2, audits of a PASS ------------------------------
# One `segment1b run` on the prepared 30m grid per module; each test works on a hard-linked copy and changes
# files only through Storage.write_bytes (a new file renamed into place), never in place.

@pytest.fixture(scope="module")
def real_run(tmp_path_factory, client):
    storage, summary = runs.passed_run(client, str(tmp_path_factory.mktemp("real")))
    return storage, resolve_identity(storage, runs.SEED, summary.identity["manifest_fingerprint"])


@pytest.fixture
def real_copy(real_run, tmp_path):
    storage, ident = real_run
    return Storage(runs.fresh_root(storage.root_url, str(tmp_path / "root"))), ident


def _surface_part(storage, ident, ds, pick):
    """(relative path, table) of the first ``ds`` part for which ``pick(table)`` is true."""
    for rel in storage.parquet_parts(path_for(ds, parameter_hash=ident.parameter_hash)):
        table = pq.read_table(storage.abspath(rel))
        if pick(table):
            return rel, table
    raise AssertionError(f"no {ds} part fits")


def _write_surface(storage, rel, table, ds):
    storage.write_bytes(rel, write_parquet_bytes(table, dataset(ds)))


def _bundle_of(ident):
    return path_for("validation_bundle_1B", manifest_fingerprint=ident.manifest_fingerprint)


def _codes_and_examples(result):
    examples = {}
    for f in result.findings:
        examples.setdefault(f["code"], []).extend(f["examples"])
    return set(result.failed_codes), examples


def test_weights_not_summing_to_10_dp_are_e105_and_fail_deep_verification(real_copy, client):
    storage, ident = real_copy
    rel, table = _surface_part(storage, ident, "tile_weights",
                               lambda t: t["country_iso"][0].as_py() == "US")
    w = table["weight_fp"].to_numpy().copy()
    w[len(w) // 2] += 12345
    _write_surface(storage, rel, table.set_column(2, "weight_fp", pa.array(w, pa.uint64())), "tile_weights")
    # after the PASS: the flag still verifies by listing, the deep check rehashes the surface
    with pytest.raises(IntegrityError) as e:
        verify_passed_flag(storage.root_url, ident.seed, ident.manifest_fingerprint, deep=True)
    assert e.value.code == "E911_FINALITY" and rel in json.dumps(e.value.rows)
    storage.remove(_bundle_of(ident))
    result = run_s9(storage, client, ident.seed, ident.manifest_fingerprint, plan_sample=0, out=io.StringIO())
    codes, examples = _codes_and_examples(result)
    assert codes == {"E105_NORMALIZATION", "E911_FINALITY"}
    dp = int(table["dp"][0].as_py())
    assert examples["E105_NORMALIZATION"] == [{"country_iso": "US", "dp": dp, "weight_fp_sum": 10**dp + 12345,
                                               "expected": 10**dp}]
    assert {e["dataset"] for e in examples["E911_FINALITY"]} == {"tile_weights"}


def test_two_swapped_weights_are_caught_without_a_plan_sample(real_copy, client):
    """S1/S2 receipts: a post-prepare edit that keeps every sum and every set is a finality failure."""
    storage, ident = real_copy
    rel, table = _surface_part(storage, ident, "tile_weights",
                               lambda t: len(set(t["weight_fp"].to_pylist())) > 1 and t.num_rows < 50)
    w = table["weight_fp"].to_numpy().copy()
    i, j = int(np.argmax(w)), int(np.argmin(w))
    w[i], w[j] = w[j], w[i]
    _write_surface(storage, rel, table.set_column(2, "weight_fp", pa.array(w, pa.uint64())), "tile_weights")
    storage.remove(_bundle_of(ident))
    result = run_s9(storage, client, ident.seed, ident.manifest_fingerprint, plan_sample=0, out=io.StringIO())
    codes, examples = _codes_and_examples(result)
    assert codes == {"E911_FINALITY"}
    (example,) = examples["E911_FINALITY"]
    assert example["dataset"] == "tile_weights" and example["partition_path"] == path_for(
        "tile_weights", parameter_hash=ident.parameter_hash)


def test_a_tile_missing_from_tile_bounds_is_e102(real_copy, client):
    storage, ident = real_copy
    rel, table = _surface_part(storage, ident, "tile_bounds", lambda t: t.num_rows > 3)
    gone = table.slice(2, 1).to_pylist()[0]
    _write_surface(storage, rel, pa.concat_tables([table.slice(0, 2), table.slice(3)]), "tile_bounds")
    # and in another part one tile of tile_index given to another country (no longer a one-country part)
    other = next(p for p in storage.parquet_parts(path_for("tile_index", parameter_hash=ident.parameter_hash))
                 if p[-18:] != rel[-18:] and pq.read_metadata(storage.abspath(p)).num_rows > 3)
    index = pq.read_table(storage.abspath(other))
    moved = index.slice(1, 1).to_pylist()[0]
    iso = index["country_iso"].to_pylist()
    iso[1] = "ZZ"
    _write_surface(storage, other, index.set_column(0, "country_iso", pa.array(iso)), "tile_index")
    storage.remove(_bundle_of(ident))
    result = run_s9(storage, client, ident.seed, ident.manifest_fingerprint, plan_sample=0, out=io.StringIO())
    codes, examples = _codes_and_examples(result)
    assert codes == {"E102_FK_MISMATCH", "E911_FINALITY"}
    part = int(rel[-13:-8])
    assert {"country_iso": gone["country_iso"], "tile_id": gone["tile_id"], "missing_from": "tile_bounds",
            "part": part} in examples["E102_FK_MISMATCH"]
    part = int(other[-13:-8])
    for iso, surface in (("ZZ", "tile_bounds"), ("ZZ", "tile_weights"), (moved["country_iso"], "tile_index")):
        assert {"country_iso": iso, "tile_id": moved["tile_id"], "missing_from": surface,
                "part": part} in examples["E102_FK_MISMATCH"]
    assert {e["dataset"] for e in examples["E911_FINALITY"]} == {"tile_bounds", "tile_index"}


def test_the_bundle_lists_the_surfaces_and_every_log_part(real_run):
    storage, ident = real_run
    manifest = json.loads(storage.read_bytes(_bundle_of(ident) + "MANIFEST.json"))
    inputs = {i["dataset"]: i for i in manifest["inputs"]}
    for ds, state in (("tile_index", "s1"), ("tile_bounds", "s1"), ("tile_weights", "s2")):
        rel = path_for(ds, parameter_hash=ident.parameter_hash)
        assert inputs[ds]["partition_path"] == rel
        assert inputs[ds]["sha256_hex"] == storage.partition_digest(rel)
        assert [f["path"] for f in inputs[ds]["files"]] == storage.list_files(rel)
        receipts = json.loads(storage.read_bytes(report_path(state, parameter_hash=ident.parameter_hash)))
        receipt = {"partition_path": rel, "sha256_hex": inputs[ds]["sha256_hex"]}
        assert receipt in receipts["determinism_receipt"]
    logs = {f["path"]: f for f in manifest["logs"]}
    expected = [path_for("rng_audit_log", **ident.log_tokens), path_for("rng_trace_log", **ident.log_tokens)]
    for label in (rng.S5_LABEL, rng.S6_LABEL):
        folder = path_for("rng_events", substream_label=label, **ident.log_tokens)
        expected += [folder + name for name in storage.list_files(folder)]
    assert sorted(logs) == sorted(expected)
    for rel in expected:
        assert logs[rel]["bytes"] == storage.fs.size(storage.abspath(rel))
        assert logs[rel]["sha256_hex"] == storage.file_sha256(rel)


@pytest.mark.parametrize("sample", ["300", "0"])
def test_revalidating_a_pass_with_other_options_is_an_audit(real_copy, client, capsys, sample):
    storage, ident = real_copy
    fp = ident.manifest_fingerprint
    s9_report = report_path("s9", **ident.tokens)
    before = {"report": storage.read_bytes(s9_report), "bundle": storage.partition_digest(_bundle_of(ident))}
    identity = ["--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", fp]
    scheduler = ["--scheduler", client.scheduler.address]
    assert cli_main(["validate", *identity, "--plan-sample", sample, *scheduler]) == 0
    out = capsys.readouterr().out
    assert "s9 audit PASS" in out
    # the run's report, bundle and flag are untouched; the audit is recorded beside them
    assert storage.read_bytes(s9_report) == before["report"]
    assert storage.partition_digest(_bundle_of(ident)) == before["bundle"]
    audit = json.loads(storage.read_bytes(path_for("s9_audit_report", **ident.tokens)))
    assert audit["status"] == "PASS" and audit["plan_sample"] == int(sample)
    summary = json.loads(storage.read_bytes(audit["audit_path"] + "s9_summary.json"))
    assert summary["status"] == "PASS" and summary["audit"]["bundle_path"] == _bundle_of(ident)
    recompute = next(c for c in summary["checks"] if c["check"] == "plan_recompute")
    assert recompute["counts"]["sample_size"] == int(sample)
    # the report and verify-flag agree
    assert pictures_report.collect_report(storage, ident, include_map=False)["status"] == "PASS"
    assert cli_main(["verify-flag", *identity]) == 0


def test_a_failing_audit_leaves_the_run_s_report_and_flag_alone(real_copy, client, capsys):
    storage, ident = real_copy
    fp = ident.manifest_fingerprint
    s9_report = report_path("s9", **ident.tokens)
    before = {"report": storage.read_bytes(s9_report), "bundle": storage.partition_digest(_bundle_of(ident))}
    storage.remove(world.event_part(storage, ident, rng.S6_LABEL, 0))
    identity = ["--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", fp]
    assert cli_main(["validate", *identity, "--scheduler", client.scheduler.address]) == EXIT_CONTRACT_FAILURE
    assert "E901_ROW_MISSING" in capsys.readouterr().err
    assert storage.read_bytes(s9_report) == before["report"]
    assert storage.partition_digest(_bundle_of(ident)) == before["bundle"]
    audit = json.loads(storage.read_bytes(path_for("s9_audit_report", **ident.tokens)))
    assert audit["status"] == "FAIL" and "E901_ROW_MISSING" in audit["failed_codes"]
    # the consumer check refuses the missing part, and the report shows the failed audit
    assert cli_main(["verify-flag", *identity]) == EXIT_CONTRACT_FAILURE
    assert "E911_FINALITY" in capsys.readouterr().err
    report = pictures_report.collect_report(storage, ident, include_map=False)
    assert report["audit"]["status"] == "FAIL"


def test_truncated_zstd_event_part_is_e907_naming_the_part(fresh, client):
    """Issue 17: a .jsonl.zst part cut short is refused, with the part's path, not parsed as far as it goes."""
    storage, ident = fresh
    ev = world.event_part(storage, ident, rng.S6_LABEL, 1)
    assert ev.endswith(".jsonl.zst")
    data = storage.read_bytes(ev)
    with open(storage.abspath(ev), "wb") as fh:
        fh.write(data[: len(data) * 2 // 3])
    examples = failed(storage, client, ident, "E907_RNG_BUDGET")
    assert {"part": 1, "path": ev, "form": "zstd"}.items() <= examples[0].items()
    assert "Truncated" in examples[0]["error"] or "truncat" in examples[0]["error"].lower()


def test_plain_event_logs_validate_and_the_bundle_records_the_form(validated, tmp_path, client):
    """Issue 17: a run with ``--rng-logs plain`` passes S9 like the default; MANIFEST.json says which form."""
    zs, zident, _ = validated
    manifest = json.loads(zs.read_bytes(BUNDLE + "MANIFEST.json"))
    assert manifest["rng_event_log_forms"] == {label: {"form": "zstd", "suffix": ".jsonl.zst"}
                                               for label in (rng.S5_LABEL, rng.S6_LABEL)}
    storage = Storage(str(tmp_path / "plain"))
    ident = world.placed(storage, client, PAIRS, rng_logs="plain")
    result = run_s9(storage, client, ident.seed, FP, out=io.StringIO())
    assert result.passed, result.failed_codes
    manifest = json.loads(storage.read_bytes(BUNDLE + "MANIFEST.json"))
    assert manifest["rng_event_log_forms"] == {label: {"form": "plain", "suffix": ".jsonl"}
                                               for label in (rng.S5_LABEL, rng.S6_LABEL)}
    assert [p for p in (f["path"] for f in manifest["logs"]) if "/events/" in p] and all(
        p.endswith(".jsonl") for p in (f["path"] for f in manifest["logs"]) if "/events/" in p)
    acc = json.loads(storage.read_bytes(BUNDLE + "rng_accounting.json"))["families"]
    acc_z = json.loads(zs.read_bytes(BUNDLE + "rng_accounting.json"))["families"]
    assert {k: acc[k]["events"] for k in acc} == {k: acc_z[k]["events"] for k in acc_z}
    assert cli_main(["verify-flag", "--data-root", storage.root_url, "--seed", str(ident.seed),
                     "--fingerprint", FP, "--deep"]) == 0
