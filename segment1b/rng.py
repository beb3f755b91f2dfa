"""Counter-based RNG of S5/S6: Philox 2x64-10, keyed substreams and uniforms (contract §9).

Every draw is addressed by (substream, counter offset), never by chunk, worker or call order, so any
partitioning of the work gives the same numbers.  A substream is a Philox key plus a 128-bit starting
counter, both taken from ``SHA256(master ‖ label ‖ components)``; the k-th block of a substream is
Philox at counter ``start + k``.

- S5 (§7): one substream per (merchant, country); site_order ``s`` uses the block at offset ``s - 1``
  and ``u = u01(x0)``.
- S6 (§8): one substream per site; attempt ``a`` uses the block at offset ``a - 1``,
  ``u_lon = u01(x0)``, ``u_lat = u01(x1)``.

Everything is vectorised over NumPy ``uint64`` arrays.  SHA-256 is the one per-site Python step
(hashlib on fixed-length records built with NumPy).  The module is pure: no file I/O, no Dask and no
clock.  The log of the draws (JSON-lines events, audit and trace records, and the one reader of them) is
:mod:`segment1b.rng_events`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Any

import numpy as np

__all__ = [
    "PHILOX_M", "PHILOX_W", "ALGORITHM", "S5_MODULE", "S5_LABEL", "S6_MODULE", "S6_LABEL",
    "philox2x64_10", "counter_add", "u01", "block_at", "master_material", "s5_substreams", "s6_substreams",
]

PHILOX_M = 0xD2B74407B1CE6E93
PHILOX_W = 0x9E3779B97F4A7C15
ALGORITHM = "philox2x64-10"
S5_MODULE = "1B.s5_site_tile_assignment"
S5_LABEL = "site_tile_assign"
S6_MODULE = "1B.S6.jitter"
S6_LABEL = "in_cell_jitter"

_U64_MAX = 2**64 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ROUNDS = 10
_M = np.uint64(PHILOX_M)
_W = np.uint64(PHILOX_W)
# M is constant, so its 32-bit halves are too: the 64x64->128 product needs only 4 half-products.
_M_LO = np.uint64(PHILOX_M & 0xFFFFFFFF)
_M_HI = np.uint64(PHILOX_M >> 32)
_MASK32 = np.uint64(0xFFFFFFFF)
_SH32 = np.uint64(32)
_ONE = np.uint64(1)
_TWO32 = float(2**32)
_TWO_M64 = 2.0**-64
_U_MAX = float.fromhex("0x1.fffffffffffffp-1")  # largest double below 1.0 (§9: u == 1.0 is replaced by it)

# Work in row chunks that stay in CPU cache (Philox) or reuse allocator pages (hashing):
# fresh multi-hundred-MB buffers cost more in page faults than the arithmetic itself.
_PHILOX_CHUNK = 1 << 14
_HASH_CHUNK = 1 << 15


# ---------------------------------------------------------------------------------------------------------
# Input checks


def _as_u64(name: str, values: Any) -> np.ndarray:
    """``values`` as a uint64 array, refusing negatives, floats and bools instead of wrapping them."""
    a = np.asarray(values)
    if a.dtype.kind in "fO" and not isinstance(values, np.ndarray):
        # Python ints above 2**63 make NumPy infer float64 or object; convert such input exactly.
        items = np.asarray(values, dtype=object)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items.flat):
            try:
                a = np.array(items.tolist(), dtype=np.uint64)
            except OverflowError:
                raise ValueError(f"{name} must be in 0..2**64-1; found a value outside that range") from None
    if a.dtype.kind == "i":
        if a.size and a.min() < 0:
            raise ValueError(f"{name} must be in 0..2**64-1; found {a.min()}")
    elif a.dtype.kind != "u":
        raise ValueError(f"{name} must be unsigned 64-bit integers; got dtype {a.dtype}")
    return a.astype(np.uint64, copy=False)


def _iso_codes(iso: Any) -> np.ndarray:
    """Uppercased ISO codes as an (..., 2) uint8 array of ASCII bytes; anything else is a ValueError.

    Validation and uppercasing work on the code points of a fixed-width NumPy string array, so a
    million codes cost a few milliseconds.
    """
    a = np.asarray(iso)
    if a.dtype.kind in "OS":
        a = a.astype(np.str_)  # None becomes "None" and is rejected below
    if a.dtype.kind != "U":
        raise ValueError(f"legal_country_iso must be strings of two ASCII letters; got dtype {a.dtype}")
    width = a.dtype.itemsize // 4
    cp = np.ascontiguousarray(a).view(np.uint32).reshape(a.shape + (width,))
    lower = (cp[..., :2] >= ord("a")) & (cp[..., :2] <= ord("z"))
    upper = (cp[..., :2] >= ord("A")) & (cp[..., :2] <= ord("Z"))
    ok = (lower | upper).all(axis=-1) if width >= 2 else np.zeros(a.shape, bool)
    if width > 2:
        ok &= (cp[..., 2:] == 0).all(axis=-1)
    if not ok.all():
        bad = np.unique(a[~ok])
        raise ValueError(f"legal_country_iso must be two ASCII letters (ISO 3166-1 alpha-2, e.g. 'US'); "
                         f"found {int((~ok).sum())} invalid value(s), e.g. {bad[:5].tolist()}")
    return (cp[..., :2] - lower * np.uint32(32)).astype(np.uint8)


def _check_hex64(name: str, value: Any) -> str:
    if not (isinstance(value, str) and _HEX64.fullmatch(value)):
        raise ValueError(f"{name} must be 64 lowercase hex characters; got {value!r}")
    return value


def _check_seed(seed: Any) -> int:
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed <= _U64_MAX):
        raise ValueError(f"seed must be an integer in 0..2**64-1; got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------------------
# Philox 2x64-10, counters and uniforms


def philox2x64_10(key: Any, ctr_hi: Any, ctr_lo: Any) -> tuple[np.ndarray, np.ndarray]:
    """Philox 2x64 with 10 rounds, elementwise over uint64 arrays (contract §9).

    Parameters
    ----------
    key, ctr_hi, ctr_lo : array_like of uint64
        Key and the two halves of the 128-bit counter; broadcast against each other.

    Returns
    -------
    x0, x1 : numpy.ndarray of uint64
        The block, with the broadcast shape of the inputs.

    Raises
    ------
    ValueError
        If an input is negative, not an integer or above 2**64 - 1.

    Examples
    --------
    >>> x0, x1 = philox2x64_10(0, 0, 0)
    >>> int(x0), int(x1)
    (14555810216429213489, 7404553454530086325)
    >>> philox2x64_10([1, 1], 0, [1, 2])[0].shape
    (2,)
    """
    k, hi, lo = np.broadcast_arrays(_as_u64("key", key), _as_u64("ctr_hi", ctr_hi), _as_u64("ctr_lo", ctr_lo))
    shape = k.shape
    k, hi, lo = (np.ascontiguousarray(a).reshape(-1) for a in (k, hi, lo))
    n = k.size
    x0 = np.empty(n, np.uint64)
    x1 = np.empty(n, np.uint64)
    size = min(n, _PHILOX_CHUNK)
    c0, c1, kk, a, b, t, u = (np.empty(size, np.uint64) for _ in range(7))
    for start in range(0, n, _PHILOX_CHUNK):
        stop = min(n, start + _PHILOX_CHUNK)
        m = stop - start
        # In-place ufuncs on cache-sized chunks: ~5x faster than whole-array expressions.
        C0, C1, K, A, B, T, U = (v[:m] for v in (c0, c1, kk, a, b, t, u))
        C0[:], C1[:], K[:] = lo[start:stop], hi[start:stop], k[start:stop]
        for _ in range(_ROUNDS):
            # H = high 64 bits of M*c0 from 32-bit halves (Hacker's Delight mulhu; no sum can overflow).
            np.bitwise_and(C0, _MASK32, out=A)                      # a_lo
            np.right_shift(C0, _SH32, out=B)                        # a_hi
            np.multiply(A, _M_LO, out=T)
            np.right_shift(T, _SH32, out=T)
            np.multiply(A, _M_HI, out=U)
            np.add(T, U, out=T)                                     # t = a_lo*M_hi + (a_lo*M_lo >> 32)
            np.bitwise_and(T, _MASK32, out=U)
            np.multiply(B, _M_LO, out=A)
            np.add(U, A, out=U)                                     # u = a_hi*M_lo + (t & 0xffffffff)
            np.right_shift(T, _SH32, out=T)
            np.multiply(B, _M_HI, out=A)
            np.add(A, T, out=A)
            np.right_shift(U, _SH32, out=U)
            np.add(A, U, out=A)                                     # A = H
            np.bitwise_xor(A, K, out=A)
            np.bitwise_xor(A, C1, out=A)                            # c0' = H ^ k ^ c1
            np.multiply(C0, _M, out=C1)                             # c1' = L = M*c0 mod 2**64
            C0, A = A, C0
            np.add(K, _W, out=K)
        x0[start:stop] = C0
        x1[start:stop] = C1
    return x0.reshape(shape), x1.reshape(shape)


def counter_add(hi: Any, lo: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Add a non-negative integer below 2**64 to 128-bit counters (hi, lo), carrying into ``hi``.

    Parameters
    ----------
    hi, lo : array_like of uint64
        Counters.
    n : array_like of int
        Amounts to add, 0 <= n < 2**64; broadcast against the counters.

    Returns
    -------
    hi, lo : numpy.ndarray of uint64
        The sums modulo 2**128.

    Examples
    --------
    >>> hi, lo = counter_add(7, 2**64 - 1, 1)
    >>> int(hi), int(lo)
    (8, 0)
    """
    hi, lo, n = np.broadcast_arrays(_as_u64("hi", hi), _as_u64("lo", lo), _as_u64("n", n))
    shape = hi.shape
    hi, lo, n = (a.reshape(-1) for a in (hi, lo, n))  # 1-D: NumPy scalars would warn on wrap-around
    new_lo = lo + n  # wraps modulo 2**64; wrapped exactly when the sum is below an addend
    return (hi + (new_lo < lo).astype(np.uint64)).reshape(shape), new_lo.reshape(shape)


def u01(x: Any) -> np.ndarray:
    """Map uint64 ``x`` to a double in the open interval (0, 1): ``(x + 1) · 2**-64`` (contract §9).

    The exact integer ``x + 1`` is rounded to float64 once (round half to even); a result of 1.0
    becomes ``0x1.fffffffffffffp-1``.

    Parameters
    ----------
    x : array_like of uint64
        Philox outputs (a lane of a block).

    Returns
    -------
    numpy.ndarray of float64
        Uniforms in (0, 1), same shape as ``x``.

    Examples
    --------
    >>> u01([0, 2**63, 2**64 - 1]).tolist()
    [5.421010862427522e-20, 0.5, 0.9999999999999999]
    """
    x = _as_u64("x", x)
    shape, x = x.shape, x.reshape(-1)  # 1-D: NumPy scalars would warn on the intended wrap-around
    y = x + _ONE  # exact except for x = 2**64 - 1, which wraps to 0 and is handled below
    # hi·2**32 and lo are exact doubles, and IEEE addition rounds their exact sum once: this is the
    # single rounding of x + 1 whatever NumPy's own uint64 -> float64 cast does.
    u = (y >> _SH32).astype(np.float64) * _TWO32 + (y & _MASK32).astype(np.float64)
    u *= _TWO_M64  # a power of two: exact
    return np.where(y == 0, _U_MAX, np.minimum(u, _U_MAX)).reshape(shape)


def block_at(key: Any, hi: Any, lo: Any, offset: Any) -> tuple[np.ndarray, ...]:
    """The Philox block at ``offset`` blocks from each substream's start, with its event counters.

    Parameters
    ----------
    key, hi, lo : array_like of uint64
        Substreams (from :func:`s5_substreams` or :func:`s6_substreams`).
    offset : array_like of int
        Block offset, >= 0: ``site_order - 1`` in S5, ``attempt_index - 1`` in S6.

    Returns
    -------
    x0, x1, before_hi, before_lo, after_hi, after_lo : numpy.ndarray of uint64
        The block, the counter it was drawn at (``before``) and ``after = before + 1``.

    Examples
    --------
    >>> x0, x1, bhi, blo, ahi, alo = block_at(0, 0, 2**64 - 1, 0)
    >>> [int(v) for v in (bhi, blo, ahi, alo)]
    [0, 18446744073709551615, 1, 0]
    """
    before_hi, before_lo = counter_add(hi, lo, offset)
    after_hi, after_lo = counter_add(before_hi, before_lo, 1)
    x0, x1 = philox2x64_10(key, before_hi, before_lo)
    return x0, x1, before_hi, before_lo, after_hi, after_lo


# ---------------------------------------------------------------------------------------------------------
# Master material and substreams


def _enc_str(text: str) -> bytes:
    """§9 string encoding: LE32(byte length) ‖ UTF-8 bytes."""
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def _stream_of(digests: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode concatenated SHA-256 digests H: key = LE u64 of H[24:32], hi/lo = BE of H[16:24]/H[24:32]."""
    le = np.frombuffer(digests, dtype="<u8").reshape(-1, 4)
    be = np.frombuffer(digests, dtype=">u8").reshape(-1, 4)
    return le[:, 3].astype(np.uint64), be[:, 2].astype(np.uint64), be[:, 3].astype(np.uint64)


def master_material(seed: int, manifest_fingerprint: str) -> bytes:
    """The 32-byte master material ``SHA256(enc("mlr:1A.master") ‖ fingerprint bytes ‖ LE64(seed))``.

    Parameters
    ----------
    seed : int
        Run seed, 0..2**64-1.
    manifest_fingerprint : str
        64 lowercase hex characters; hashed as its 32 raw bytes.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        If the seed or the fingerprint is malformed.

    Examples
    --------
    >>> len(master_material(42, "ab" * 32))
    32
    """
    fingerprint = bytes.fromhex(_check_hex64("manifest_fingerprint", manifest_fingerprint))
    seed_bytes = struct.pack("<Q", _check_seed(seed))
    return hashlib.sha256(_enc_str("mlr:1A.master") + fingerprint + seed_bytes).digest()


def _substreams(master: bytes, label: str, state: str, rows: np.ndarray,
                parameter_hash: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Substream of each row: SHA256(master ‖ enc(mlr:1A) ‖ enc(label) ‖ components).

    The components are enc(segment:1B) ‖ enc(state) ‖ ``rows[i]`` ‖ enc(parameter_hash).

    ``rows`` is an (n, w) uint8 array of the per-site encoded components.  Every record has the same
    length, so a chunk of records is one NumPy matrix and one ``tobytes``; the only Python loop left
    is one hashlib call per record.  (Copying a pre-hashed prefix state is slower than rehashing the
    prefix with OpenSSL 3, so each record is hashed whole.)
    """
    if not (isinstance(master, bytes) and len(master) == 32):
        raise ValueError("master must be the 32 bytes returned by master_material()")
    head = master + _enc_str("mlr:1A") + _enc_str(label) + _enc_str("segment:1B") + _enc_str(state)
    tail = _enc_str(_check_hex64("parameter_hash", parameter_hash))
    n, width = rows.shape
    p, size = len(head), len(head) + width + len(tail)
    records = np.empty((min(n, _HASH_CHUNK), size), np.uint8)
    records[:, :p] = np.frombuffer(head, np.uint8)
    records[:, p + width:] = np.frombuffer(tail, np.uint8)
    sha256 = hashlib.sha256
    digests = []
    for start in range(0, n, _HASH_CHUNK):
        m = min(n - start, _HASH_CHUNK)
        records[:m, p:p + width] = rows[start:start + m]
        buf = records[:m].tobytes()
        digests.append(b"".join([sha256(buf[i:i + size]).digest() for i in range(0, m * size, size)]))
    return _stream_of(b"".join(digests))


def _le64_bytes(values: np.ndarray) -> np.ndarray:
    """§9 u64 encoding of each value: an (n, 8) uint8 array of little-endian bytes."""
    return values.astype("<u8").view(np.uint8).reshape(-1, 8)


def _site_rows(merchant_id: Any, iso: Any, site_order: Any | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per-site components u64 merchant_id ‖ enc(ISO) [‖ u64 site_order] as an (n, w) uint8 matrix."""
    parts = [_as_u64("merchant_id", merchant_id), _iso_codes(iso)]
    if site_order is not None:
        parts.append(_as_u64("site_order", site_order))
    shape = np.broadcast_shapes(parts[0].shape, parts[1].shape[:-1], *(p.shape for p in parts[2:]))
    n = int(np.prod(shape))
    width = 8 + 6 + (8 if site_order is not None else 0)
    rows = np.empty((n, width), np.uint8)
    rows[:, 0:8] = _le64_bytes(np.broadcast_to(parts[0], shape).reshape(n))
    rows[:, 8:12] = np.frombuffer(struct.pack("<I", 2), np.uint8)  # enc(ISO): LE32(2) ‖ two ASCII bytes
    rows[:, 12:14] = np.broadcast_to(parts[1], shape + (2,)).reshape(n, 2)
    if site_order is not None:
        rows[:, 14:22] = _le64_bytes(np.broadcast_to(parts[2], shape).reshape(n))
    return rows, shape


def s5_substreams(master: bytes, merchant_id: Any, iso: Any,
                  parameter_hash: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S5 substreams, one per (merchant, country) pair (contract §7, §9).

    Components: "segment:1B", "state:s5", u64 merchant_id, ISO (uppercased), parameter_hash (hex text),
    under label ``site_tile_assign``.

    Parameters
    ----------
    master : bytes
        :func:`master_material` of the run.
    merchant_id : array_like of uint64
        Merchant ids, full u64 range.
    iso : array_like of str
        Two ASCII letters each; lowercase is uppercased.
    parameter_hash : str
        64 lowercase hex characters.

    Returns
    -------
    key, counter_hi, counter_lo : numpy.ndarray of uint64
        With the broadcast shape of ``merchant_id`` and ``iso``.

    Raises
    ------
    ValueError
        On a malformed ISO code, merchant id, master or parameter_hash.

    Examples
    --------
    >>> mst = master_material(42, "ab" * 32)
    >>> key, hi, lo = s5_substreams(mst, np.array([1], np.uint64), ["US"], "3c" * 32)
    >>> int(key[0]), int(hi[0]), int(lo[0])
    (10553829918895445621, 2989484238437233529, 8437114602138662546)
    >>> u01(block_at(key, hi, lo, [0])[0])[0].hex()  # site_order 1
    '0x1.cd1132a14fe7ep-2'
    """
    rows, shape = _site_rows(merchant_id, iso, None)
    return tuple(a.reshape(shape) for a in _substreams(master, S5_LABEL, "state:s5", rows, parameter_hash))


def s6_substreams(master: bytes, merchant_id: Any, iso: Any, site_order: Any,
                  parameter_hash: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S6 substreams, one per site (contract §8, §9).

    Components: "segment:1B", "state:s6", u64 merchant_id, ISO (uppercased), u64 site_order,
    parameter_hash (hex text), under label ``in_cell_jitter``.  About 0.6 µs per site on one core.

    Parameters
    ----------
    master : bytes
        :func:`master_material` of the run.
    merchant_id : array_like of uint64
        Merchant ids, full u64 range.
    iso : array_like of str
        Two ASCII letters each; lowercase is uppercased.
    site_order : array_like of int
        >= 0 (1..n in practice).
    parameter_hash : str
        64 lowercase hex characters.

    Returns
    -------
    key, counter_hi, counter_lo : numpy.ndarray of uint64
        With the broadcast shape of the inputs.

    Raises
    ------
    ValueError
        On a malformed ISO code, merchant id, site order, master or parameter_hash.

    Examples
    --------
    >>> mst = master_material(42, "ab" * 32)
    >>> key, hi, lo = s6_substreams(mst, 1, ["US", "us"], 1, "3c" * 32)
    >>> bool(key[0] == key[1])  # ISO is uppercased before hashing
    True
    >>> x0, x1, *counters = block_at(key, hi, lo, 0)  # attempt 1
    >>> u01(x0)[0].hex(), u01(x1)[0].hex()
    ('0x1.89888b5be1aa4p-2', '0x1.6e48689d86472p-7')
    """
    rows, shape = _site_rows(merchant_id, iso, site_order)
    return tuple(a.reshape(shape) for a in _substreams(master, S6_LABEL, "state:s6", rows, parameter_hash))
