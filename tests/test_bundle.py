"""segment1b.bundle: the one bundle format, written and verified; the S9 bundle's rules and its egress checksums.

The upstream rules (E301 at the S0 gate) are tested through the gate in tests/test_s0_gate.py.
"""

import json

import pytest

from segment1b import bundle
from segment1b.errors import InputError, IntegrityError
from segment1b.bundle import BUNDLE_MEMBERS, FLAG_NAME, INDEX_NAME, SEGMENT_1B, UPSTREAM


def s9_bundle(passed=True):
    return bundle.validation_bundle({p: {"member": p} for p in BUNDLE_MEMBERS}, passed=passed)


def verify(files, rules=SEGMENT_1B):
    return bundle.verify_bundle(files.get(INDEX_NAME), files.get(FLAG_NAME),
                                lambda p: files[p] if p in files else (_ for _ in ()).throw(FileNotFoundError(p)),
                                rules=rules).flag_sha256_hex


def test_bundle_roundtrip_and_flag_format():
    files = s9_bundle()
    index = json.loads(files[INDEX_NAME])
    assert [e["path"] for e in index] == ["MANIFEST.json", "egress_checksums.json", "rng_accounting.json",
                                          "s9_summary.json"]
    assert {e["artifact_id"] for e in index} == set(BUNDLE_MEMBERS.values())
    digest = verify(files)
    assert files[FLAG_NAME] == f"sha256_hex = {digest}\n".encode()
    assert s9_bundle() == files  # deterministic bytes
    assert FLAG_NAME not in s9_bundle(passed=False)


def test_one_format_for_both_bundles():
    """What S9 writes passes the upstream rules too, and the upstream builder's output passes both."""
    files = s9_bundle()
    assert verify(files, UPSTREAM) == verify(files, SEGMENT_1B)
    upstream = bundle.build_bundle({p: (BUNDLE_MEMBERS[p], files[p]) for p in BUNDLE_MEMBERS})
    assert upstream == files


@pytest.mark.parametrize("tamper,code", [
    (lambda f: f.pop(FLAG_NAME), "E910_FLAG"),
    (lambda f: f.update({FLAG_NAME: b"sha256_hex = nope\n"}), "E910_FLAG"),
    (lambda f: f.update({FLAG_NAME: bundle.render_flag("0" * 64)}), "E910_FLAG"),
    (lambda f: f.pop(INDEX_NAME), "E909_INDEX"),
    (lambda f: f.update({"s9_summary.json": b'{"status": "PASS"}'}), "E909_INDEX"),
    (lambda f: f.pop("rng_accounting.json"), "E909_INDEX"),
    (lambda f: f.update({INDEX_NAME: json.dumps(json.loads(f[INDEX_NAME])[::-1]).encode()}),
     "E909_INDEX"),
    (lambda f: f.update({INDEX_NAME: json.dumps(json.loads(f[INDEX_NAME])[:3]).encode()}),
     "E908_BUNDLE_CONTENTS"),
])
def test_bundle_verification_names_what_is_wrong(tamper, code):
    files = s9_bundle()
    tamper(files)
    with pytest.raises(IntegrityError) as e:
        verify(files)
    assert e.value.code == code


def test_the_rules_give_the_codes():
    files = s9_bundle()
    files[FLAG_NAME] = bundle.render_flag("0" * 64)
    with pytest.raises(InputError) as e:
        verify(files, UPSTREAM)
    assert e.value.code == "E301_NO_PASS_FLAG" and e.value.dataset == "validation_bundle_1A"
    assert e.value.rows == [{"expected_sha256": "0" * 64, "actual_sha256": verify(s9_bundle())}]
    del files[FLAG_NAME]
    with pytest.raises(IntegrityError) as e:
        bundle.verify_bundle(files[INDEX_NAME], None, files.__getitem__, rules=SEGMENT_1B, where="b/")
    assert e.value.code == "E910_FLAG" and e.value.path == "b/_passed.flag" and "did not pass" in e.value.message


def test_egress_checksums_pin_every_file():
    doc = {"partitions": [{"partition_path": "p/", "sha256_hex": "x",
                           "files": [{"path": "part-00000.parquet", "sha256_hex": "a"}]}]}
    data = json.dumps(doc).encode()
    bundle.verify_egress(data, "p/", {"part-00000.parquet": "a"})
    with pytest.raises(IntegrityError) as e:
        bundle.verify_egress(data, "p/", {"part-00000.parquet": "b", "part-00001.parquet": "c"})
    assert e.value.code == "E911_FINALITY"
    assert {r["problem"] for r in e.value.rows} == {"changed", "not validated"}
    with pytest.raises(IntegrityError) as e:
        bundle.verify_egress(data, "q/", {})
    assert e.value.code == "E910_FLAG"
    with pytest.raises(IntegrityError) as e:
        bundle.verify_egress(b"[]", "p/", {})
    assert e.value.code == "E908_BUNDLE_CONTENTS"
