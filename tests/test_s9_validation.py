"""S9 pure checks on literals: findings, the bundle format and its verification, logs, totals, receipts."""

import json

import numpy as np
import pytest

from segment1b import rng
from segment1b import s9_validation as s9
from segment1b.errors import IntegrityError

FP, PH, RUN = "ab" * 32, "3c" * 32, "0" * 31 + "1"
EXPECT = s9.Expect(42, FP, PH, RUN)
ENV = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": RUN, "seed": 42, "parameter_hash": PH,
       "manifest_fingerprint": FP}


def test_findings_merge_cap_examples_and_refuse_foreign_codes():
    f = s9.Findings()
    for part in range(30):
        f.add("sort", "E906_SORT", "rows out of order", 2, [{"part": part}])
    f.add("sort", "E906_SORT", "rows out of order", 0, [{"part": 99}])  # zero counts are not failures
    (item,) = f.to_list()
    assert item["count"] == 60 and len(item["examples"]) == s9.MAX_EXAMPLES
    assert s9.Findings(f.to_list()).to_list() == f.to_list()  # survives a trip through plain data
    with pytest.raises(ValueError, match="bug"):
        f.add("sort", "E903_DUP_KEY", "not a sort code")
    summary = {c["check"]: c for c in f.summary()}
    assert list(summary) == list(s9.CHECKS)
    assert summary["sort"]["status"] == "FAIL" and summary["schema"]["status"] == "PASS"


def bundle(passed=True):
    return s9.bundle_files({p: {"member": p} for p in s9.BUNDLE_MEMBERS}, passed=passed)


def verify(files):
    return s9.verify_bundle(files.get(s9.INDEX_NAME), files.get(s9.FLAG_NAME),
                            lambda p: files[p] if p in files else (_ for _ in ()).throw(FileNotFoundError(p)))


def test_bundle_roundtrip_and_flag_format():
    files = bundle()
    index = json.loads(files[s9.INDEX_NAME])
    assert [e["path"] for e in index] == ["MANIFEST.json", "egress_checksums.json", "rng_accounting.json",
                                          "s9_summary.json"]
    assert {e["artifact_id"] for e in index} == set(s9.BUNDLE_MEMBERS.values())
    digest = verify(files)
    assert files[s9.FLAG_NAME] == f"sha256_hex = {digest}\n".encode()
    assert bundle() == files  # deterministic bytes
    assert s9.FLAG_NAME not in bundle(passed=False)


@pytest.mark.parametrize("tamper,code", [
    (lambda f: f.pop(s9.FLAG_NAME), "E910_FLAG"),
    (lambda f: f.update({s9.FLAG_NAME: b"sha256_hex = nope\n"}), "E910_FLAG"),
    (lambda f: f.update({s9.FLAG_NAME: s9.render_flag("0" * 64)}), "E910_FLAG"),
    (lambda f: f.pop(s9.INDEX_NAME), "E909_INDEX"),
    (lambda f: f.update({"s9_summary.json": b'{"status": "PASS"}'}), "E909_INDEX"),
    (lambda f: f.pop("rng_accounting.json"), "E909_INDEX"),
    (lambda f: f.update({s9.INDEX_NAME: json.dumps(json.loads(f[s9.INDEX_NAME])[::-1]).encode()}),
     "E909_INDEX"),
    (lambda f: f.update({s9.INDEX_NAME: json.dumps(json.loads(f[s9.INDEX_NAME])[:3]).encode()}),
     "E908_BUNDLE_CONTENTS"),
])
def test_bundle_verification_names_what_is_wrong(tamper, code):
    files = bundle()
    tamper(files)
    with pytest.raises(IntegrityError) as e:
        verify(files)
    assert e.value.code == code


def test_egress_checksums_pin_every_file():
    doc = {"partitions": [{"partition_path": "p/", "sha256_hex": "x",
                           "files": [{"path": "part-00000.parquet", "sha256_hex": "a"}]}]}
    data = json.dumps(doc).encode()
    s9.verify_egress(data, "p/", {"part-00000.parquet": "a"})
    with pytest.raises(IntegrityError) as e:
        s9.verify_egress(data, "p/", {"part-00000.parquet": "b", "part-00001.parquet": "c"})
    assert e.value.code == "E911_FINALITY"
    assert {r["problem"] for r in e.value.rows} == {"changed", "not validated"}
    with pytest.raises(IntegrityError) as e:
        s9.verify_egress(data, "q/", {})
    assert e.value.code == "E910_FLAG"


def s5_lines(n=3, **override):
    master = rng.master_material(42, FP)
    m = np.array([5] * n, np.uint64)
    key, hi, lo = rng.s5_substreams(master, m, ["FR"] * n, PH)
    so = np.arange(1, n + 1)
    x0, _, bhi, blo, ahi, alo = rng.block_at(key, hi, lo, so - 1)
    return rng.s5_events_jsonl({**ENV, **override}, m, ["FR"] * n, so, [7] * n, rng.u01(x0), bhi, blo, ahi,
                               alo)


def test_parse_events_records_envelope_mismatches_with_line_numbers():
    data = s5_lines(3) + s5_lines(2, run_id="f" * 32)
    chunks = [data[:100], data[100:]]  # the job cuts at line ends; here a line is split to prove the
    with pytest.raises(ValueError):    # parser refuses partial lines instead of guessing
        s9.parse_events(chunks, rng.S5_LABEL, EXPECT)
    ev = s9.parse_events([data], rng.S5_LABEL, EXPECT)
    assert ev.lines == 5 and ev.draws == {"1": 5} and ev.run_ids == {RUN, "f" * 32}
    assert ev.mismatches["run_id"]["count"] == 2
    assert [e["event"] for e in ev.mismatches["run_id"]["examples"]] == [4, 5]
    with pytest.raises(ValueError):
        s9.parse_events([b'{"not": "an event"}\n'], rng.S5_LABEL, EXPECT)


def test_trace_totals_audit_and_receipts():
    env = dict(ENV)
    trace = rng.jsonl_lines([rng.trace_record(env, rng.S5_MODULE, rng.S5_LABEL, 2, 2, 2),
                             rng.trace_record(env, rng.S5_MODULE, rng.S5_LABEL, 5, 5, 5)])
    f = s9.Findings()
    final = s9.check_trace(trace, {rng.S5_LABEL: {"events": 5, "draws": 5, "blocks": 5}}, EXPECT, f)
    assert not f and final[rng.S5_LABEL]["events_total"] == 5
    s9.check_trace(trace, {rng.S5_LABEL: {"events": 6, "draws": 5, "blocks": 5},
                           rng.S6_LABEL: {"events": 1, "draws": 2, "blocks": 1}}, EXPECT, f)
    assert f.codes() == ["E907_RNG_BUDGET"] and len(f.to_list()) == 2
    audit = rng.jsonl_lines([rng.audit_record(env, "abc")])
    for data, code in [(audit, None), (None, "E907_RNG_BUDGET"), (audit + audit, "E907_RNG_BUDGET"),
                       (audit.replace(PH.encode(), b"4d" * 32), "E912_IDENTITY_COHERENCE")]:
        f = s9.Findings()
        s9.check_audit(data, EXPECT, f)
        assert f.codes() == ([code] if code else [])
    f = s9.Findings()
    s9.check_receipts({"a": "1", "b": "2", "c": "3"},
                      {"a": {"sha256_hex": "1"}, "b": {"sha256_hex": "x"}, "c": None}, f)
    assert f.codes() == ["E911_FINALITY"] and sum(i["count"] for i in f.to_list()) == 2
    f = s9.Findings()
    s9.check_row_counts(9, 10, 11, f)
    assert f.codes() == ["E901_ROW_MISSING"]
