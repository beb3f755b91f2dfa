"""Tests of segment1b.rng: known answers (contract §9 vectors) and a plain-Python reference."""

import doctest
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment1b import rng

VECTORS_PATH = Path(__file__).parent / "data" / "rng.json"
SHARED_VECTORS_PATH = Path(__file__).resolve().parents[2] / "shared" / "testvectors" / "rng.json"
VECTORS = json.loads(VECTORS_PATH.read_text())

U64_MAX = 2**64 - 1
u64s = st.integers(0, U64_MAX)


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


def root_stream(seed: int, fingerprint: str) -> tuple[int, int, int]:
    """The run's root stream (key, counter_hi, counter_lo): the master material read like a substream's H."""
    h = rng.master_material(seed, fingerprint)
    return int.from_bytes(h[24:32], "little"), int.from_bytes(h[16:24], "big"), int.from_bytes(h[24:32], "big")


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
    assert root_stream(int(v["seed"]), v["manifest_fingerprint"]) == (
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


def test_docstring_examples_run():
    result = doctest.testmod(rng, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
