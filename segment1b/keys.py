"""Site keys ``(merchant_id, legal_country_iso, site_order)``: vectorised order, duplicate and set checks.

S7 joins S5 and S6 on these keys and compares them with the outlet catalogue; S9 checks order,
uniqueness and parity of four datasets and two event logs on them.  A key is held as three NumPy
arrays: ``merchant_id`` (uint64), ``iso`` (uint16, the two ASCII letters big-endian, so that numeric
order is the contract's string order) and ``site_order`` (int64).  Checks are O(n) comparisons of
neighbours on the fast path; sorting and set differences only run when something is out of place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SiteKeys", "iso_u16", "iso_strings", "iso_is_upper", "iso_code", "iso_of", "iso_text"]

KEY_COLUMNS = ("merchant_id", "legal_country_iso", "site_order")


def iso_u16(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Two-letter ISO strings as uint16 codes ``(first << 8) | second`` (order-preserving).

    Parameters
    ----------
    values : pyarrow string array
        Plain or dictionary-encoded; no nulls.

    Returns
    -------
    numpy.ndarray of uint16

    Raises
    ------
    ValueError
        If a value is null or not exactly two bytes long.

    Examples
    --------
    >>> iso_u16(pa.array(["FR", "DE"])).tolist() == [(70 << 8) | 82, (68 << 8) | 69]
    True
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        raise ValueError(f"legal_country_iso must be strings; got {values.type}")
    n = len(values)
    if n == 0:
        return np.empty(0, np.uint16)
    if values.null_count:
        raise ValueError(f"legal_country_iso has {values.null_count} null value(s)")
    offsets = np.frombuffer(values.buffers()[1], np.int32, n + 1, values.offset)
    if not (np.diff(offsets) == 2).all():
        bad = pc.filter(values, pc.not_equal(pc.binary_length(values), 2))
        raise ValueError(f"legal_country_iso must be two letters; found {pc.unique(bad).to_pylist()[:5]}")
    data = np.frombuffer(values.buffers()[2], np.uint8, int(offsets[-1] - offsets[0]), int(offsets[0]))
    pairs = data.reshape(n, 2).astype(np.uint16)
    return (pairs[:, 0] << np.uint16(8)) | pairs[:, 1]


def iso_code(iso: str) -> int:
    """One two-letter code as its uint16 value (:func:`iso_u16` for a single string).

    >>> iso_of(iso_code("FR"))
    'FR'
    """
    return (ord(iso[0]) << 8) | ord(iso[1])


def iso_of(code: int) -> str:
    """Inverse of :func:`iso_code`: the two letters of one code."""
    code = int(code)
    return chr(code >> 8) + chr(code & 0xFF)


def iso_text(codes: np.ndarray) -> np.ndarray:
    """uint16 codes as a NumPy array of two-letter ``str`` (what the RNG substream keys take).

    >>> iso_text(np.array([iso_code("FJ"), iso_code("MC")], np.uint16)).tolist()
    ['FJ', 'MC']
    """
    codes = np.asarray(codes, dtype=np.uint16)
    chars = np.empty((len(codes), 2), dtype=np.uint8)
    chars[:, 0], chars[:, 1] = codes >> 8, codes & 0xFF
    return chars.view("S2").ravel().astype(str)


def iso_strings(codes: np.ndarray) -> pa.Array:
    """Inverse of :func:`iso_u16`.

    >>> iso_strings(iso_u16(pa.array(["FJ", "MC"]))).to_pylist()
    ['FJ', 'MC']
    """
    codes = np.asarray(codes, dtype=np.uint16)
    chars = np.empty((len(codes), 2), dtype=np.uint8)
    chars[:, 0], chars[:, 1] = codes >> 8, codes & 0xFF
    offsets = np.arange(0, 2 * len(codes) + 1, 2, dtype=np.int32)
    return pa.StringArray.from_buffers(len(codes), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def iso_is_upper(codes: np.ndarray) -> np.ndarray:
    """True where both letters are ASCII ``A``-``Z`` (contract §2: ``iso2`` is uppercase)."""
    codes = np.asarray(codes, dtype=np.uint16)
    hi, lo = codes >> 8, codes & 0xFF
    return (hi >= 65) & (hi <= 90) & (lo >= 65) & (lo <= 90)


@dataclass(frozen=True)
class SiteKeys:
    """The keys of a table's rows, in row order."""

    merchant_id: np.ndarray
    iso: np.ndarray
    site_order: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table) -> "SiteKeys":
        """Keys of a table with the three key columns (other columns are ignored)."""
        return cls(np.asarray(table["merchant_id"].to_numpy(), dtype=np.uint64),
                   iso_u16(table["legal_country_iso"]),
                   np.asarray(table["site_order"].to_numpy(), dtype=np.int64))

    @classmethod
    def empty(cls) -> "SiteKeys":
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint16), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.merchant_id)

    def take(self, idx: Any) -> "SiteKeys":
        return SiteKeys(self.merchant_id[idx], self.iso[idx], self.site_order[idx])

    def row(self, i: int) -> dict[str, Any]:
        """One key as a plain dict (for error rows)."""
        code = int(self.iso[i])
        return {"merchant_id": int(self.merchant_id[i]),
                "legal_country_iso": iso_of(code),
                "site_order": int(self.site_order[i])}

    def rows(self, idx: Any, limit: int = 20) -> list[dict[str, Any]]:
        return [self.row(int(i)) for i in np.asarray(idx).ravel()[:limit]]

    def equals(self, other: "SiteKeys") -> bool:
        """Same keys in the same order."""
        return (len(self) == len(other) and np.array_equal(self.merchant_id, other.merchant_id)
                and np.array_equal(self.iso, other.iso) and np.array_equal(self.site_order, other.site_order))

    def first(self) -> tuple[int, int, int] | None:
        return None if not len(self) else (int(self.merchant_id[0]), int(self.iso[0]),
                                           int(self.site_order[0]))

    def last(self) -> tuple[int, int, int] | None:
        return None if not len(self) else (int(self.merchant_id[-1]), int(self.iso[-1]),
                                           int(self.site_order[-1]))

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``i`` (of the later row) where ``key[i] < key[i-1]`` (unsorted) and where
        ``key[i] == key[i-1]`` (duplicate); both empty means strictly increasing."""
        if len(self) < 2:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        m0, m1 = self.merchant_id[:-1], self.merchant_id[1:]
        c0, c1 = self.iso[:-1], self.iso[1:]
        s0, s1 = self.site_order[:-1], self.site_order[1:]
        same_m, same_c = m1 == m0, c1 == c0
        dup = same_m & same_c & (s1 == s0)
        down = (m1 < m0) | (same_m & ((c1 < c0) | (same_c & (s1 < s0))))
        return np.flatnonzero(down) + 1, np.flatnonzero(dup) + 1

    def sort_order(self) -> np.ndarray:
        """Stable permutation that sorts the keys (writer-sort order)."""
        return np.lexsort((self.site_order, self.iso, self.merchant_id))

    def duplicates(self) -> np.ndarray:
        """Positions of rows whose key already occurred earlier (in any order)."""
        if len(self) < 2:
            return np.empty(0, np.int64)
        order = self.sort_order()
        _, dup = self.take(order).neighbours()
        return np.sort(order[dup])

    def diff(self, other: "SiteKeys") -> tuple[np.ndarray, np.ndarray]:
        """Positions of keys only in ``self`` and only in ``other`` (as multisets: a key that occurs twice
        here and once there leaves one copy here)."""
        n = len(self)
        if self.equals(other):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        m = np.concatenate([self.merchant_id, other.merchant_id])
        c = np.concatenate([self.iso, other.iso])
        s = np.concatenate([self.site_order, other.site_order])
        src = np.concatenate([np.zeros(n, np.int8), np.ones(len(other), np.int8)])
        pos = np.concatenate([np.arange(n), np.arange(len(other))])
        order = np.lexsort((src, s, c, m))
        m, c, s, src, pos = m[order], c[order], s[order], src[order], pos[order]
        # rank of each row within its run of equal keys, per source; a row is matched when the other
        # source has at least as many copies of the key
        new = np.r_[True, (m[1:] != m[:-1]) | (c[1:] != c[:-1]) | (s[1:] != s[:-1])]
        run = np.cumsum(new) - 1
        n_self = np.bincount(run, weights=(src == 0),
                             minlength=run[-1] + 1 if len(run) else 0).astype(np.int64)
        n_other = np.bincount(run, weights=(src == 1),
                              minlength=run[-1] + 1 if len(run) else 0).astype(np.int64)
        start = np.flatnonzero(new)
        rank = np.arange(len(m)) - start[run]  # self rows come first in a run (src 0 < 1)
        only_self = (src == 0) & (rank >= n_other[run])
        only_other = (src == 1) & (rank - n_self[run] >= n_self[run])
        return np.sort(pos[only_self]), np.sort(pos[only_other])

    def match(self, other: "SiteKeys") -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(i, j)`` with ``self[i] == other[j]``, one pair per key present in both (first copies),
        in key order."""
        if self.equals(other):
            both = np.arange(len(self))
            return both, both
        n = len(self)
        m = np.concatenate([self.merchant_id, other.merchant_id])
        c = np.concatenate([self.iso, other.iso])
        s = np.concatenate([self.site_order, other.site_order])
        src = np.concatenate([np.zeros(n, np.int8), np.ones(len(other), np.int8)])
        pos = np.concatenate([np.arange(n), np.arange(len(other))])
        if not len(m):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        order = np.lexsort((src, s, c, m))
        m, c, s, src, pos = m[order], c[order], s[order], src[order], pos[order]
        new = np.r_[True, (m[1:] != m[:-1]) | (c[1:] != c[:-1]) | (s[1:] != s[:-1])]
        start = np.flatnonzero(new)
        run = np.cumsum(new) - 1
        n_self = np.bincount(run, weights=(src == 0)).astype(np.int64)
        both = np.flatnonzero((n_self > 0) & (n_self < np.diff(np.r_[start, len(m)])))
        return pos[start[both]], pos[start[both] + n_self[both]]
