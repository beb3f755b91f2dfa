"""segment1b.s0_gate and the upstream rules of segment1b.bundle (pure verification), jobs.s0 (receipt, run report,
CLI)."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from segment1b.contracts import path_for, report_path
from segment1b.errors import InputError
from segment1b.bundle import FLAG_NAME, INDEX_NAME, build_bundle, parse_flag, parse_index, render_flag
from segment1b.s0_gate import gate_receipt
from segment1b.storage import write_parquet_bytes

from catalogue_fixtures import FP, SEED, SPEC, catalogue, delete, flag_path, overwrite, publish_catalogue

MEMBERS = {"b.json": ("b", b'{"b": 1}'), "a.json": ("a", b'{"a": 1}'), "sub/c.txt": ("c", b"c")}


def bundle() -> dict[str, bytes]:
    return build_bundle(MEMBERS)


def verify(files: dict[str, bytes]) -> dict:
    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return gate_receipt(files.get(INDEX_NAME), files.get(FLAG_NAME), read, manifest_fingerprint=FP,
                        bundle_path="bundle/")


def e301(files: dict[str, bytes]) -> InputError:
    with pytest.raises(InputError) as e:
        verify(files)
    assert e.value.code == "E301_NO_PASS_FLAG"
    return e.value


# -- the bundle format ---------------------------------------------------------------------------------

def test_flag_is_sha256_over_listed_files_in_ascii_path_order():
    files = bundle()
    expected = hashlib.sha256(b'{"a": 1}' + b'{"b": 1}' + b"c").hexdigest()
    assert files[FLAG_NAME] == f"sha256_hex = {expected}\n".encode()
    index = json.loads(files[INDEX_NAME])
    assert [e["path"] for e in index] == ["a.json", "b.json", "sub/c.txt"]
    assert all(set(e) == {"artifact_id", "path", "sha256_hex"} for e in index)
    receipt = verify(files)
    assert receipt["flag_sha256_hex"] == expected and [f["path"] for f in receipt["verified_files"]] == [
        "a.json", "b.json", "sub/c.txt"]


def test_digest_order_does_not_depend_on_index_order():
    files = bundle()
    files[INDEX_NAME] = json.dumps(list(reversed(json.loads(files[INDEX_NAME])))).encode()
    assert verify(files)["flag_sha256_hex"] == parse_flag(files[FLAG_NAME])


@pytest.mark.parametrize("flag", [b"sha256_hex = " + b"a" * 64, b"sha256_hex = " + b"a" * 64 + b"\n"])
def test_flag_with_or_without_final_newline(flag):
    assert parse_flag(flag) == "a" * 64


# -- failures ------------------------------------------------------------------------------------------

def test_missing_flag():
    files = bundle()
    del files[FLAG_NAME]
    assert "_passed.flag is missing" in str(e301(files))


@pytest.mark.parametrize("flag", [b"", b"sha256_hex=" + b"a" * 64, b"sha256_hex = " + b"A" * 64,
                                  b"sha256_hex = " + b"a" * 63, b"sha256_hex = " + b"a" * 64 + b"\n\n", b"PASS"])
def test_malformed_flag(flag):
    files = bundle()
    files[FLAG_NAME] = flag
    assert "malformed" in str(e301(files))


def test_wrong_flag_names_expected_and_actual():
    files = bundle()
    right = parse_flag(files[FLAG_NAME])
    files[FLAG_NAME] = render_flag("0" * 64)
    err = e301(files)
    assert "does not match" in str(err) and "0" * 64 in str(err) and right in str(err)
    assert err.rows == [{"expected_sha256": "0" * 64, "actual_sha256": right}]


def test_tampered_file_is_named():
    files = bundle()
    files["b.json"] = b'{"b": 2}'
    err = e301(files)
    assert "modified after validation" in str(err) and err.rows[0]["path"] == "b.json"
    assert err.rows[0]["expected_sha256"] == hashlib.sha256(b'{"b": 1}').hexdigest()


def test_listed_file_missing():
    files = bundle()
    del files["sub/c.txt"]
    err = e301(files)
    assert "missing" in str(err) and err.rows == [{"path": "sub/c.txt"}]


@pytest.mark.parametrize("index, what", [
    (None, "missing"),
    (b"{not json", "not valid JSON"),
    (b'{"path": "a.json"}', "JSON list"),
    (b'[{"artifact_id": "a"}]', "JSON list"),
    (b'[{"path": "../x"}]', "plain relative"),
    (b'[{"path": "/etc/passwd"}]', "plain relative"),
    (b'[{"path": "_passed.flag"}]', "plain relative"),
    (b'[{"path": "a.json"}, {"path": "a.json"}]', "more than once"),
    (b'[{"path": "a.json", "sha256_hex": "xyz"}]', "64 lowercase hex"),
])
def test_malformed_index(index, what):
    files = bundle()
    if index is None:
        del files[INDEX_NAME]
    else:
        files[INDEX_NAME] = index
    assert what in str(e301(files))


def test_index_entries_without_digest_are_covered_by_the_flag_only():
    files = bundle()
    files[INDEX_NAME] = json.dumps([{"path": p} for p in ("a.json", "b.json", "sub/c.txt")]).encode()
    verify(files)
    files["a.json"] = b"changed"
    assert "does not match" in str(e301(files))


def test_parse_index_sorts_by_ascii_path():
    entries = parse_index(b'[{"path": "b"}, {"path": "B"}, {"path": "a/b"}, {"path": "_x"}]')
    assert [e["path"] for e in entries] == ["B", "_x", "a/b", "b"]


# -- the job -------------------------------------------------------------------------------------------

PAIRS = [(1, "FR", 2), (2, "DE", 1)]


def receipt_path() -> str:
    return path_for("s0_gate_receipt_1B", manifest_fingerprint=FP)


def test_run_s0_publishes_receipt_and_report(storage):
    from jobs.s0 import run_s0

    publish_catalogue(storage, [catalogue(PAIRS)])
    result = run_s0(storage, manifest_fingerprint=FP, seed=SEED, out=io.StringIO())
    receipt = storage.read_json(receipt_path())
    assert receipt["manifest_fingerprint"] == FP
    assert receipt["flag_sha256_hex"] == result["receipt"]["flag_sha256_hex"]
    assert {f["path"] for f in receipt["verified_files"]} == {"egress_checksums.json", "summary.json"}
    assert "verified_utc" in receipt
    report = storage.read_json(report_path("s0", manifest_fingerprint=FP))
    assert report["state"] == "s0" and report["catalogue"]["checked_against_bundle"]
    # a second run keeps the first receipt (only the timestamp would differ)
    before = storage.read_bytes(receipt_path())
    assert run_s0(storage, manifest_fingerprint=FP, seed=SEED, out=io.StringIO())["receipt"] == receipt
    assert storage.read_bytes(receipt_path()) == before


def gate_fails(storage, *, seed=SEED) -> InputError:
    from jobs.s0 import run_s0

    with pytest.raises(InputError) as e:
        run_s0(storage, manifest_fingerprint=FP, seed=seed, out=io.StringIO())
    assert not storage.exists(receipt_path())  # nothing published
    return e.value


def test_job_no_bundle(storage):
    publish_catalogue(storage, [catalogue(PAIRS)], bundle=False)
    err = gate_fails(storage)
    assert err.code == "E301_NO_PASS_FLAG" and "does not exist" in str(err)


def test_job_missing_flag(storage):
    publish_catalogue(storage, [catalogue(PAIRS)])
    delete(storage, flag_path())
    err = gate_fails(storage)
    assert err.code == "E301_NO_PASS_FLAG" and "_passed.flag is missing" in str(err)


def test_job_wrong_flag(storage):
    publish_catalogue(storage, [catalogue(PAIRS)])
    overwrite(storage, flag_path(), render_flag("1" * 64))
    err = gate_fails(storage)
    assert err.code == "E301_NO_PASS_FLAG" and "1" * 64 in str(err)


def test_job_tampered_bundle_file(storage):
    r = publish_catalogue(storage, [catalogue(PAIRS)])
    overwrite(storage, r["bundle"] + "summary.json", b'{"note": "edited"}')
    err = gate_fails(storage)
    assert err.code == "E301_NO_PASS_FLAG" and err.rows[0]["path"] == "summary.json"


def test_job_tampered_catalogue(storage):
    from jobs.s0 import run_s0

    r = publish_catalogue(storage, [catalogue(PAIRS)])
    overwrite(storage, r["catalogue"] + "part-00000.parquet", write_parquet_bytes(catalogue([(1, "FR", 3)]), SPEC))
    err = gate_fails(storage)
    assert err.code == "E301_NO_PASS_FLAG" and "differs from the partition the upstream bundle validated" in str(err)
    assert err.rows[0]["expected_sha256"] == r["digest"]
    # without a seed the gate checks the bundle only
    assert not run_s0(storage, manifest_fingerprint=FP, out=io.StringIO())["catalogue"]["checked_against_bundle"]


def test_cli_gate(data_root, capsys):
    from jobs.cli import main
    from segment1b.storage import Storage

    storage = Storage(data_root)
    publish_catalogue(storage, [catalogue(PAIRS)])
    argv = ["gate", "--data-root", data_root, "--fingerprint", FP, "--seed", str(SEED)]
    assert main(argv) == 0 and "PASS" in capsys.readouterr().out
    overwrite(storage, flag_path(), b"sha256_hex = nope\n")
    assert main(argv) == 3
    assert "FAILED E301_NO_PASS_FLAG" in capsys.readouterr().err
