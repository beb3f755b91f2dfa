"""Tests of segment1b.rng: known answers (contract §9 vectors), a plain-Python reference, event logs."""

import doctest
import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment1b import rng

VECTORS_PATH = Path(__file__).parent / "data" / "rng.json"
SHARED_VECTORS_PATH = Path(__file__).resolve().parents[2] / "shared" / "testvectors" / "rng.json"
VECTORS = json.loads(VECTORS_PATH.read_text())

U64_MAX = 2**64 - 1
u64s = st.integers(0, U64_MAX)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
ENVELOPE = {"ts_utc": "2025-01-31T12:00:00.123456Z", "run_id": "0123456789abcdef" * 2, "seed": U64_MAX,
            "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}


# ---------------------------------------------------------------------------------------------------------
# Plain-Python reference (Python ints, hashlib per site): the contract text, line by line


def ref_philox(key: int, hi: int, lo: int) -> tuple[int, int]:
    c0, c1 = lo, hi
    for _ in range(10):
        product = rng.PHILOX_M * c0
        c0, c1 = ((product >> 64) ^ key ^ c1) & U64_MAX, product & U64_MAX
        key = (key + rng.PHILOX_W) & U64_MAX
    return c0, c1


def ref_u01(x: int) -> float:
    u = (x + 1) / 2**64  # int / int is correctly rounded in Python: the single rounding of §9
    return u if u < 1.0 else float.fromhex("0x1.fffffffffffffp-1")


def enc_str(text: str) -> bytes:
    return struct.pack("<I", len(text.encode())) + text.encode()


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def ref_substream(seed: int, fingerprint: str, label: str, components: bytes) -> tuple[int, int, int]:
    master = hashlib.sha256(enc_str("mlr:1A.master") + bytes.fromhex(fingerprint) + u64(seed)).digest()
    h = hashlib.sha256(master + enc_str("mlr:1A") + enc_str(label) + components).digest()
    key = int.from_bytes(h[24:32], "little")
    return key, int.from_bytes(h[16:24], "big"), int.from_bytes(h[24:32], "big")


def ref_s6(seed, fingerprint, merchant_id, iso, site_order, parameter_hash):
    parts = (enc_str("segment:1B") + enc_str("state:s6") + u64(merchant_id) + enc_str(iso.upper())
             + u64(site_order) + enc_str(parameter_hash))
    return ref_substream(seed, fingerprint, rng.S6_LABEL, parts)


def ref_s5(seed, fingerprint, merchant_id, iso, parameter_hash):
    parts = (enc_str("segment:1B") + enc_str("state:s5") + u64(merchant_id) + enc_str(iso.upper())
             + enc_str(parameter_hash))
    return ref_substream(seed, fingerprint, rng.S5_LABEL, parts)


def ints(*arrays) -> list[list[int]]:
    return [[int(v) for v in np.ravel(a)] for a in arrays]


# ---------------------------------------------------------------------------------------------------------
# Known-answer vectors


def test_vectors_copy_matches_shared():
    if not SHARED_VECTORS_PATH.exists():
        pytest.skip(f"{SHARED_VECTORS_PATH} not present; the repo copy is used alone")
    assert json.loads(SHARED_VECTORS_PATH.read_text()) == VECTORS


def test_vectors_cover_every_family():
    counts = {name: len(VECTORS[name]) for name in
              ("philox2x64_10", "u01", "master", "s5_substreams", "s6_substreams")}
    assert all(counts.values()), counts


@pytest.mark.parametrize("v", VECTORS["philox2x64_10"],
                         ids=lambda v: f"k{v['key']}-hi{v['counter_hi']}-lo{v['counter_lo']}")
def test_philox_vector(v):
    key, hi, lo = int(v["key"]), int(v["counter_hi"]), int(v["counter_lo"])
    expected = (int(v["x0"]), int(v["x1"]))
    x0, x1 = rng.philox2x64_10(np.uint64(key), np.uint64(hi), np.uint64(lo))
    assert (int(x0), int(x1)) == expected
    assert ref_philox(key, hi, lo) == expected


def test_philox_vectors_as_one_batch():
    vs = VECTORS["philox2x64_10"]
    key, hi, lo = (np.array([int(v[f]) for v in vs], np.uint64) for f in ("key", "counter_hi", "counter_lo"))
    assert ints(*rng.philox2x64_10(key, hi, lo)) == [[int(v["x0"]) for v in vs], [int(v["x1"]) for v in vs]]


@pytest.mark.parametrize("v", VECTORS["u01"], ids=lambda v: f"x{v['x']}")
def test_u01_vector(v):
    u = rng.u01(np.array([int(v["x"])], np.uint64))[0]
    assert u.hex() == float.fromhex(v["u_hex"]).hex()
    assert u == float(v["u"])
    assert 0.0 < u < 1.0


def test_u01_vectors_as_one_batch_and_scalar():
    xs = [int(v["x"]) for v in VECTORS["u01"]]
    expected = [float.fromhex(v["u_hex"]) for v in VECTORS["u01"]]
    assert rng.u01(np.array(xs, np.uint64)).tolist() == expected
    assert rng.u01(xs).tolist() == expected  # a plain list with values >= 2**63
    assert float(rng.u01(U64_MAX)) == float.fromhex("0x1.fffffffffffffp-1")  # x + 1 wraps in uint64


@pytest.mark.parametrize("v", VECTORS["master"],
                         ids=lambda v: f"seed{v['seed']}-{v['manifest_fingerprint'][:8]}")
def test_master_vector(v):
    assert rng.root_stream(int(v["seed"]), v["manifest_fingerprint"]) == (
        int(v["root_key"]), int(v["root_counter_hi"]), int(v["root_counter_lo"]))


@pytest.mark.parametrize("v", VECTORS["s5_substreams"],
                         ids=lambda v: f"seed{v['seed']}-m{v['merchant_id']}-{v['legal_country_iso']}")
def test_s5_vector(v):
    master = rng.master_material(int(v["seed"]), v["manifest_fingerprint"])
    key, hi, lo = rng.s5_substreams(master, np.array([int(v["merchant_id"])], np.uint64),
                                    [v["legal_country_iso"]], v["parameter_hash"])
    assert ints(key, hi, lo) == [[int(v["key"])], [int(v["counter_hi"])], [int(v["counter_lo"])]]
    n = len(v["draws"])
    site_order = np.arange(1, n + 1)
    x0, _, bhi, blo, ahi, alo = rng.block_at(np.repeat(key, n), np.repeat(hi, n), np.repeat(lo, n),
                                             site_order - 1)  # site_order s: offset s-1
    assert ints(bhi, blo, ahi, alo) == [[int(d[f]) for d in v["draws"]]
                                        for f in ("before_hi", "before_lo", "after_hi", "after_lo")]
    assert [u.hex() for u in rng.u01(x0).tolist()] == [float.fromhex(d["u_hex"]).hex() for d in v["draws"]]


@pytest.mark.parametrize("v", VECTORS["s6_substreams"],
                         ids=lambda v: (f"seed{v['seed']}-m{v['merchant_id']}-{v['legal_country_iso']}"
                                        f"-s{v['site_order']}"))
def test_s6_vector(v):
    master = rng.master_material(int(v["seed"]), v["manifest_fingerprint"])
    key, hi, lo = rng.s6_substreams(master, np.array([int(v["merchant_id"])], np.uint64),
                                    [v["legal_country_iso"]], np.array([v["site_order"]], np.int32),
                                    v["parameter_hash"])
    assert ints(key, hi, lo) == [[int(v["key"])], [int(v["counter_hi"])], [int(v["counter_lo"])]]
    attempts = v["attempts"]
    x0, x1, bhi, blo, ahi, alo = rng.block_at(key, hi, lo, np.arange(len(attempts)))  # attempt a: offset a-1
    assert ints(bhi, blo, ahi, alo) == [[int(a[f]) for a in attempts]
                                        for f in ("before_hi", "before_lo", "after_hi", "after_lo")]
    assert [u.hex() for u in rng.u01(x0).tolist()] == [float.fromhex(a["u_lon_hex"]).hex() for a in attempts]
    assert [u.hex() for u in rng.u01(x1).tolist()] == [float.fromhex(a["u_lat_hex"]).hex() for a in attempts]


def test_substream_vectors_as_one_batch_per_master(monkeypatch):
    """All vectors of a master in one call, with tiny chunks: results don't depend on batching."""
    monkeypatch.setattr(rng, "_HASH_CHUNK", 2)
    monkeypatch.setattr(rng, "_PHILOX_CHUNK", 3)
    for seed in {v["seed"] for v in VECTORS["s6_substreams"]}:
        vs = [v for v in VECTORS["s6_substreams"] if v["seed"] == seed]
        master = rng.master_material(int(seed), vs[0]["manifest_fingerprint"])
        key, hi, lo = rng.s6_substreams(master, [int(v["merchant_id"]) for v in vs],
                                        [v["legal_country_iso"] for v in vs], [v["site_order"] for v in vs],
                                        vs[0]["parameter_hash"])
        assert ints(key, hi, lo) == [[int(v[f]) for v in vs] for f in ("key", "counter_hi", "counter_lo")]
        x0 = rng.block_at(key, hi, lo, 0)[0]
        assert [u.hex() for u in rng.u01(x0).tolist()] == [
            float.fromhex(v["attempts"][0]["u_lon_hex"]).hex() for v in vs]


# ---------------------------------------------------------------------------------------------------------
# Against the plain-Python reference


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(u64s, u64s, u64s), min_size=1, max_size=40))
def test_philox_matches_python_reference(triples):
    key, hi, lo = (np.array(col, np.uint64) for col in zip(*triples))
    assert list(zip(*ints(*rng.philox2x64_10(key, hi, lo)))) == [ref_philox(*t) for t in triples]


def test_philox_broadcasts_and_crosses_chunks(monkeypatch):
    monkeypatch.setattr(rng, "_PHILOX_CHUNK", 7)
    lo = np.arange(2**64 - 20, 2**64 - 1, dtype=np.uint64)
    x0, x1 = rng.philox2x64_10(12345, 9, lo)  # scalar key and hi broadcast over lo
    assert list(zip(*ints(x0, x1))) == [ref_philox(12345, 9, int(v)) for v in lo]
    assert rng.philox2x64_10(np.zeros((2, 3), np.uint64), 0, 0)[0].shape == (2, 3)


@settings(max_examples=300, deadline=None)
@given(st.one_of(u64s, st.integers(2**53 - 4, 2**53 + 4), st.integers(U64_MAX - 4096, U64_MAX),
                 st.integers(0, 2**60).map(lambda v: (v | 1) << 3)))
def test_u01_is_a_single_rounding_of_x_plus_1(x):
    assert rng.u01(np.array([x], np.uint64))[0].hex() == ref_u01(x).hex()


def test_u01_over_a_million_random_values():
    x = np.random.default_rng(7).integers(0, 2**64, 1_000_000, dtype=np.uint64, endpoint=False)
    got = rng.u01(x)
    sample = np.random.default_rng(8).integers(0, len(x), 2000)
    assert [got[i] for i in sample] == [ref_u01(int(x[i])) for i in sample]
    assert got.min() > 0.0 and got.max() < 1.0


@settings(max_examples=200, deadline=None)
@given(u64s, u64s, st.integers(0, U64_MAX))
def test_counter_add_is_u128_addition(hi, lo, n):
    new_hi, new_lo = rng.counter_add(*(np.array([v], np.uint64) for v in (hi, lo, n)))
    total = ((hi << 64) + lo + n) % 2**128
    assert (int(new_hi[0]), int(new_lo[0])) == (total >> 64, total & U64_MAX)


def test_counter_carry_across_2_64():
    hi, lo = rng.counter_add([5, U64_MAX], [U64_MAX, U64_MAX], [1, 1])
    assert ints(hi, lo) == [[6, 0], [0, 0]]  # the second wraps modulo 2**128
    x0, x1, bhi, blo, ahi, alo = rng.block_at([3, 3], [5, 5], [U64_MAX - 1, U64_MAX - 1], [1, 2])
    assert ints(bhi, blo, ahi, alo) == [[5, 6], [U64_MAX, 0], [6, 6], [0, 1]]
    assert list(zip(*ints(x0, x1))) == [ref_philox(3, 5, U64_MAX), ref_philox(3, 6, 0)]


@settings(max_examples=40, deadline=None)
@given(seed=u64s, merchant=st.lists(u64s, min_size=1, max_size=8), site_order=st.integers(0, 2**31 - 1),
       iso=st.text("abcxyzABCXYZ", min_size=2, max_size=2), data=st.binary(min_size=32, max_size=32))
def test_substreams_match_python_reference(seed, merchant, site_order, iso, data):
    fingerprint, parameter_hash = data.hex(), hashlib.sha256(data).hexdigest()
    master = rng.master_material(seed, fingerprint)
    n = len(merchant)
    got6 = rng.s6_substreams(master, np.array(merchant, np.uint64), [iso] * n, np.full(n, site_order),
                             parameter_hash)
    assert list(zip(*ints(*got6))) == [ref_s6(seed, fingerprint, m, iso, site_order, parameter_hash)
                                       for m in merchant]
    got5 = rng.s5_substreams(master, np.array(merchant, np.uint64), np.array([iso] * n), parameter_hash)
    assert list(zip(*ints(*got5))) == [ref_s5(seed, fingerprint, m, iso, parameter_hash) for m in merchant]


def test_substreams_broadcast_scalars_and_keep_shape():
    master = rng.master_material(1, "00" * 32)
    key, hi, lo = rng.s6_substreams(master, 7, np.array([["US", "gb"], ["FJ", "us"]]), 3, "11" * 32)
    assert key.shape == (2, 2) and key.dtype == np.uint64
    assert key[0, 0] == key[1, 1] and len(set(key.ravel().tolist())) == 3
    assert rng.s5_substreams(master, np.array([], np.uint64), np.array([], str), "11" * 32)[0].shape == (0,)


@pytest.mark.parametrize("iso", ["U", "USA", "U1", "", " U", "É1", "ÉÉ", "None", None, 12],
                         ids=lambda v: repr(v))
def test_invalid_iso_raises(iso):
    master = rng.master_material(1, "00" * 32)
    with pytest.raises(ValueError, match="two ASCII letters"):
        rng.s6_substreams(master, [1, 2], np.array(["US", iso], dtype=object), [1, 1], "11" * 32)
    with pytest.raises(ValueError, match="two ASCII letters"):
        rng.s5_substreams(master, [1], [iso], "11" * 32)


@pytest.mark.parametrize("call, message", [
    (lambda: rng.philox2x64_10(-1, 0, 0), "key must be in 0..2\\*\\*64-1"),
    (lambda: rng.philox2x64_10(0, 0, [2**64]), "ctr_lo must be in"),
    (lambda: rng.philox2x64_10(0, 0, [1.5]), "ctr_lo must be unsigned"),
    (lambda: rng.u01(np.array([-3])), "x must be in"),
    (lambda: rng.counter_add(0, 0, [True]), "n must be unsigned"),
    (lambda: rng.master_material(-1, "00" * 32), "seed must be"),
    (lambda: rng.master_material(2**64, "00" * 32), "seed must be"),
    (lambda: rng.master_material(1, "AB" * 32), "manifest_fingerprint must be 64 lowercase hex"),
    (lambda: rng.s5_substreams(b"x" * 31, [1], ["US"], "11" * 32), "master must be the 32 bytes"),
    (lambda: rng.s5_substreams(b"x" * 32, [1], ["US"], "11" * 31), "parameter_hash must be"),
    (lambda: rng.s6_substreams(b"x" * 32, [1], ["US"], [-1], "11" * 32), "site_order must be in"),
], ids=["neg-key", "ctr-2^64", "float-ctr", "neg-x", "bool-n", "neg-seed", "big-seed", "upper-fp",
        "short-master", "short-hash", "neg-site-order"])
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------------------
# Event logs


def ref_event(label: str, row: dict) -> dict:
    """The event dict a slow writer would json.dumps, keys in contract order."""
    module = {rng.S5_LABEL: rng.S5_MODULE, rng.S6_LABEL: rng.S6_MODULE}[label]
    event = {**ENVELOPE, "module": module, "substream_label": label,
             "rng_counter_before_lo": row["before_lo"], "rng_counter_before_hi": row["before_hi"],
             "rng_counter_after_lo": row["after_lo"], "rng_counter_after_hi": row["after_hi"],
             "draws": "1" if label == rng.S5_LABEL else "2", "blocks": 1,
             "merchant_id": row["merchant_id"], "legal_country_iso": row["iso"].upper(),
             "site_order": row["site_order"], "tile_id": row["tile_id"]}
    if label == rng.S5_LABEL:
        event["u"] = row["u"]
    else:
        event.update(attempt_index=row["attempt_index"], accepted=row["accepted"], delta_lat_deg=row["dlat"],
                     delta_lon_deg=row["dlon"], sigma_lat_deg=0.0, sigma_lon_deg=0.0)
    return event


def write_events(label: str, rows: list[dict]) -> bytes:
    col = {k: [r[k] for r in rows] for k in rows[0]}
    counters = (np.array(col["before_hi"], np.uint64), np.array(col["before_lo"], np.uint64),
                np.array(col["after_hi"], np.uint64), np.array(col["after_lo"], np.uint64))
    site = (np.array(col["merchant_id"], np.uint64), col["iso"], np.array(col["site_order"]),
            np.array(col["tile_id"], np.uint64))
    if label == rng.S5_LABEL:
        return rng.s5_events_jsonl(ENVELOPE, *site, np.array(col["u"]), *counters)
    return rng.s6_events_jsonl(ENVELOPE, *site, np.array(col["attempt_index"]), np.array(col["accepted"]),
                               np.array(col["dlat"]), np.array(col["dlon"]), *counters)


def assert_same_json(data: bytes, expected: list[dict]):
    """Each line parses to the reference dict: same keys in the same order, same types, same float bits."""
    assert data.endswith(b"\n") and data.count(b"\n") == len(expected)
    for line, ref in zip(data.split(b"\n"), expected):
        got = json.loads(line)
        assert list(got) == list(ref)
        assert got == json.loads(json.dumps(ref))
        for k, v in ref.items():
            assert type(got[k]) is type(v), k
            if isinstance(v, float):
                assert got[k].hex() == v.hex(), k  # also tells 0.0 from -0.0


EDGE_FLOATS = [0.5, 1.0, -1.0, 0.0, -0.0, 1e-7, 1e-5, -1e-5, 0.1, 1 / 3, 5e-324, 2.0**-64, 1e15, 1e16, 1e22,
               123456789.125, float.fromhex("0x1.fffffffffffffp-1"), -0.9999999999999999]


def edge_rows() -> list[dict]:
    rows = []
    for i, f in enumerate(EDGE_FLOATS):
        big = [0, 1, 2**63 - 1, 2**63, U64_MAX][i % 5]
        rows.append({"before_hi": big, "before_lo": U64_MAX - i, "after_hi": big + (i == 0), "after_lo": i,
                     "merchant_id": U64_MAX - big, "iso": ["US", "fj", "Gb"][i % 3], "site_order": i + 1,
                     "tile_id": big, "u": abs(f) if 0 < abs(f) < 1 else 0.25, "attempt_index": 1 + i % 64,
                     "accepted": i % 2 == 0, "dlat": f, "dlon": -f})
    return rows


@pytest.mark.parametrize("label", [rng.S5_LABEL, rng.S6_LABEL])
def test_events_equal_a_json_dumps_reference(label):
    rows = edge_rows()
    assert_same_json(write_events(label, rows), [ref_event(label, r) for r in rows])


@pytest.mark.parametrize("label", [rng.S5_LABEL, rng.S6_LABEL])
def test_events_roundtrip_through_read_events(label):
    rows = edge_rows()
    table = rng.read_events(write_events(label, rows), label)
    assert table.schema == rng.EVENT_SCHEMAS[label]
    assert table.to_pylist() == [ref_event(label, r) for r in rows]
    for name in ("rng_counter_before_hi", "merchant_id", "tile_id"):
        assert table[name].type == pa.uint64()
    assert max(table["merchant_id"].to_pylist()) == U64_MAX and 2**63 in table["tile_id"].to_pylist()
    name = "delta_lat_deg" if label == rng.S6_LABEL else "u"
    assert [math.copysign(1, v) for v in table[name].to_pylist()] == \
        [math.copysign(1, ref_event(label, r)[name]) for r in rows]  # -0.0 keeps its sign


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(u64s, u64s, finite_floats, finite_floats, st.booleans()), min_size=1, max_size=30))
def test_s6_events_roundtrip_property(values):
    rows = [{"before_hi": a, "before_lo": b, "after_hi": b, "after_lo": a, "merchant_id": a, "iso": "NZ",
             "site_order": 1, "tile_id": b, "attempt_index": 64, "accepted": acc, "dlat": f, "dlon": g}
            for a, b, f, g, acc in values]
    data = write_events(rng.S6_LABEL, rows)
    expected = [ref_event(rng.S6_LABEL, r) for r in rows]
    assert_same_json(data, expected)
    table = rng.read_events(data, rng.S6_LABEL)
    assert [v.hex() for v in table["delta_lat_deg"].to_pylist()] == [r["dlat"].hex() for r in rows]
    assert table.to_pylist() == expected


def test_events_do_not_depend_on_chunking(monkeypatch):
    rows = edge_rows() * 3
    whole = write_events(rng.S6_LABEL, rows)
    monkeypatch.setattr(rng, "_JSONL_CHUNK", 4)
    assert write_events(rng.S6_LABEL, rows) == whole


def test_events_of_nothing_are_empty():
    empty = np.array([], np.uint64)
    assert rng.s5_events_jsonl(ENVELOPE, empty, np.array([], str), empty, empty, np.array([]),
                               empty, empty, empty, empty) == b""
    assert rng.read_events(b"", rng.S5_LABEL).num_rows == 0


MISSING = object()


@pytest.mark.parametrize("change, message", [
    ({"seed": -1}, "seed must be"),
    ({"seed": True}, "seed must be"),
    ({"run_id": "xyz"}, "run_id must be"),
    ({"run_id": MISSING}, "missing \\['run_id'\\]"),
    ({"ts_utc": "2025-01-31 12:00:00"}, "ts_utc must look like"),
    ({"parameter_hash": "3C" * 32}, "parameter_hash must be"),
    ({"extra": 1}, "unexpected \\['extra'\\]"),
], ids=["neg-seed", "bool-seed", "run-id", "no-run-id", "ts", "upper-hash", "extra-key"])
def test_bad_envelope_raises(change, message):
    envelope = {k: v for k, v in {**ENVELOPE, **change}.items() if v is not MISSING}
    with pytest.raises(ValueError, match=message):
        rng.s5_events_jsonl(envelope, [1], ["US"], [1], [1], [0.5], [0], [0], [0], [1])
    with pytest.raises(ValueError, match=message):
        rng.audit_record(envelope, "deadbeef")


S5_OK = dict(merchant_id=[1], legal_country_iso=["US"], site_order=[1], tile_id=[1], u=[0.5],
             before_hi=[0], before_lo=[0], after_hi=[0], after_lo=[1])
S6_OK = {**{k: v for k, v in S5_OK.items() if k != "u"},
         "attempt_index": [1], "accepted": [True], "delta_lat_deg": [0.5], "delta_lon_deg": [-0.5]}


@pytest.mark.parametrize("writer, change, message", [
    (rng.s5_events_jsonl, {"merchant_id": [1, 2]}, "equal lengths"),
    (rng.s5_events_jsonl, {"u": [float("nan")]}, "u must be finite"),
    (rng.s6_events_jsonl, {"accepted": [1]}, "accepted must be booleans"),
    (rng.s6_events_jsonl, {"delta_lon_deg": [float("inf")]}, "delta_lon_deg must be finite"),
    (rng.s5_events_jsonl, {"legal_country_iso": ["USA"]}, "two ASCII letters"),
    (rng.s5_events_jsonl, {"merchant_id": [-1]}, "merchant_id must be"),
    (rng.s5_events_jsonl, {"site_order": [1.0]}, "site_order must be integers"),
], ids=["lengths", "nan", "accepted-int", "inf", "iso", "neg-merchant", "float-site-order"])
def test_bad_event_columns_raise(writer, change, message):
    columns = S5_OK if writer is rng.s5_events_jsonl else S6_OK
    assert writer(ENVELOPE, **columns).count(b"\n") == 1  # the unchanged columns are fine
    with pytest.raises(ValueError, match=message):
        writer(ENVELOPE, **{**columns, **change})


def test_read_events_rejects_bad_lines():
    line = write_events(rng.S5_LABEL, edge_rows()[:1])
    event = json.loads(line)
    with pytest.raises(ValueError, match="unknown substream label"):
        rng.read_events(line, "site_tile")
    with pytest.raises(ValueError, match="has no 'u'"):
        rng.read_events(line + json.dumps({k: v for k, v in event.items() if k != "u"}).encode() + b"\n",
                        rng.S5_LABEL)
    with pytest.raises(ValueError):  # an unexpected key
        rng.read_events(json.dumps({**event, "x": 1}).encode(), rng.S5_LABEL)
    with pytest.raises(ValueError):  # out of u64 range
        rng.read_events(json.dumps({**event, "merchant_id": 2**64}).encode(), rng.S5_LABEL)
    with pytest.raises(ValueError):  # S6 lines read as S5
        rng.read_events(write_events(rng.S6_LABEL, edge_rows()[:1]), rng.S5_LABEL)


def test_read_events_accepts_any_key_order_and_spacing():
    event = ref_event(rng.S5_LABEL, edge_rows()[3])
    shuffled = dict(reversed(list(event.items())))
    table = rng.read_events((json.dumps(shuffled, indent=None) + "\n").encode(), rng.S5_LABEL)
    assert table.to_pylist() == [event]


# ---------------------------------------------------------------------------------------------------------
# Audit and trace logs


def test_audit_and_trace_records():
    audit = rng.audit_record(ENVELOPE, "deadbeef")
    assert list(audit) == ["ts_utc", "run_id", "seed", "manifest_fingerprint", "parameter_hash", "algorithm",
                           "build_commit"]
    assert audit["algorithm"] == "philox2x64-10" and audit["seed"] == U64_MAX
    trace = rng.trace_record(ENVELOPE, rng.S5_MODULE, rng.S5_LABEL, 10, 10, 10)
    assert list(trace)[-5:] == ["module", "substream_label", "draws_total", "blocks_total", "events_total"]
    data = rng.jsonl_lines([audit, trace])
    assert [json.loads(line) for line in data.splitlines()] == [audit, trace]
    assert data.endswith(b"\n") and b" " not in data


@pytest.mark.parametrize("args", [
    (rng.S5_MODULE, rng.S6_LABEL, 1, 1, 1), ("1B.x", "x", 1, 1, 1),
    (rng.S6_MODULE, rng.S6_LABEL, -1, 1, 1), (rng.S6_MODULE, rng.S6_LABEL, 1.0, 1, 1),
], ids=["mixed-family", "unknown-family", "negative", "float"])
def test_bad_trace_record_raises(args):
    with pytest.raises(ValueError):
        rng.trace_record(ENVELOPE, *args)


def test_docstring_examples_run():
    result = doctest.testmod(rng, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
