"""``s3_requirements`` as compact NumPy pairs for S4-S6 (issue 17): the client plans its units from all the
pairs (:func:`read_pairs`); a unit task takes its pairs from its part's (:func:`part_pairs`).

Compact: ``merchant_id`` uint64, the country as a uint16 code (:func:`segment1b.keys.iso_u16`) and ``n_sites``
as uint16 or int32 whenever the footers' statistics say every value fits (int64 otherwise): 12 bytes a pair
at x1000.  Read one row group at a time into arrays allocated once, with the country column
dictionary-encoded (a row group's few hundred distinct strings are decoded, not one per pair), so the client
holds the pairs and one row group, never an Arrow table of the whole dataset (x1000: 18.5 M pairs).

A unit's task arguments only describe its pairs (:class:`jobs.units.Segment`) and where its part's are
(:class:`PartRead`).  The part's pairs are read once per worker process for all the part's units that run
there (a small cache), not once per unit (about a dozen units per part) and not by a task of their own: a
dependency on such a task would make the scheduler place every unit of a part on the worker that read it
(units of one country are "root-ish" without it, queued and handed to whichever worker is free).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from segment1b.keys import iso_u16
from segment1b.storage import Storage

from .parts import CatalogueIndex, file_stamps
from .tiles import RowGroupRef
from .units import CountryPairs, Part

__all__ = ["Pairs", "PartRead", "read_pairs", "read_pairs_range", "part_reads", "part_pairs", "COLUMNS"]

DATASET = "s3_requirements"
COLUMNS = ["merchant_id", "legal_country_iso", "n_sites"]
COUNTRY = "legal_country_iso"


class Pairs(NamedTuple):
    """Requirement pairs in file (= merchant-major) order."""

    merchant_id: np.ndarray  # uint64
    country: np.ndarray  # uint16 codes
    n_sites: np.ndarray  # uint16, int32 or int64 (sums and cumulative sums are taken in int64)

    @classmethod
    def empty(cls, n: int = 0, n_sites_dtype=np.int64) -> Pairs:
        return cls(np.empty(n, np.uint64), np.empty(n, np.uint16), np.empty(n, n_sites_dtype))

    @property
    def rows(self) -> int:
        return len(self.merchant_id)


def read_pairs(storage: Storage, rel: str) -> Pairs:
    """Every pair of the ``s3_requirements`` partition ``rel``, in file order (E305 for an unreadable file)."""
    metas = [(path, storage.parquet_metadata(path, dataset_id=DATASET)) for path in storage.parquet_parts(rel)]
    out = Pairs.empty(sum(meta.num_rows for _, meta in metas), _n_sites_dtype([meta for _, meta in metas]))
    at = 0
    for path, meta in metas:
        for rg in range(meta.num_row_groups):
            got = _read(storage, path, (rg,))
            for column, values in zip(out, got):
                column[at:at + got.rows] = values
            at += got.rows
    if at != out.rows:
        raise ValueError(f"s3_requirements footers count {out.rows} rows, the row groups hold {at}")
    return out


def read_pairs_range(storage: Storage, refs: list[RowGroupRef], lo: int, hi: int) -> Pairs:
    """The pairs of merchants ``lo..hi`` (inclusive) in the row groups ``refs``, in file order."""
    pieces = []
    for ref in refs:
        got = _read(storage, ref.path, ref.row_groups)
        keep = (got.merchant_id >= np.uint64(lo)) & (got.merchant_id <= np.uint64(hi))
        pieces.append(Pairs(*(column[keep] for column in got)))
    if not pieces:
        return Pairs.empty()
    return Pairs(*(np.concatenate(columns) for columns in zip(*pieces)))


@dataclass(frozen=True)
class PartRead:
    """Where a part's pairs are: the ``s3_requirements`` row groups of its merchant range, and the stamps
    (path, size, modification) of their files, so that a worker never reuses the pairs of changed files."""

    refs: tuple[RowGroupRef, ...]
    merchant_lo: int
    merchant_hi: int
    stamps: tuple[tuple[str, int, str], ...]


def part_reads(storage: Storage, rel: str, parts: list[Part]) -> dict[int, PartRead]:
    """Part index -> where its pairs are (footers and file stamps only; on the client)."""
    index = CatalogueIndex(storage, rel, DATASET)
    stamps = {path: (path, size, stamp) for path, size, stamp in file_stamps(storage, storage.parquet_parts(rel))}
    out = {}
    for p in parts:
        refs = tuple(index.refs(p.merchant_lo, p.merchant_hi))
        out[p.index] = PartRead(refs, p.merchant_lo, p.merchant_hi, tuple(stamps[r.path] for r in refs))
    return out


PARTS_KEPT = 4  # parts whose pairs a worker process keeps (parts run in order: a worker is on one or two)
_lock = threading.Lock()


def part_pairs(storage: Storage, part: PartRead) -> CountryPairs:
    """A part's pairs by country (:class:`jobs.units.CountryPairs`), read once per worker process for the
    part's units (the last :data:`PARTS_KEPT` parts are kept; a failed read is not)."""
    with _lock:  # one read per part, whatever the worker's threads
        return _part_pairs(storage.root_url, json.dumps(storage.storage_options, sort_keys=True, default=str), part)


@lru_cache(maxsize=PARTS_KEPT)
def _part_pairs(root_url: str, options_json: str, part: PartRead) -> CountryPairs:
    pairs = read_pairs_range(Storage(root_url, json.loads(options_json)), list(part.refs), part.merchant_lo,
                             part.merchant_hi)
    return CountryPairs.of(pairs.merchant_id, pairs.country, pairs.n_sites)


def _read(storage: Storage, path: str, row_groups) -> Pairs:
    t = storage.read_row_groups(path, row_groups, COLUMNS, dataset_id=DATASET, read_dictionary=[COUNTRY])
    if t.num_rows == 0:
        return Pairs.empty()
    return Pairs(t["merchant_id"].to_numpy(), np.concatenate([_codes(c) for c in t[COUNTRY].chunks]),
                 t["n_sites"].to_numpy())


def _codes(chunk: pa.Array) -> np.ndarray:
    """A country column chunk as uint16 codes: dictionary-encoded, only its dictionary is decoded."""
    if not pa.types.is_dictionary(chunk.type):
        return iso_u16(chunk)
    if chunk.null_count:
        raise ValueError(f"legal_country_iso has {chunk.null_count} null value(s)")
    return iso_u16(chunk.dictionary)[chunk.indices.to_numpy(zero_copy_only=False)]


def _n_sites_dtype(metas) -> type:
    """The narrowest of uint16, int32, int64 that the statistics of every row group say holds ``n_sites``
    (int64 when a row group has none): x1000's largest pair has 2 000 sites."""
    lo, hi = 0, 0
    for meta in metas:
        col = meta.schema.to_arrow_schema().get_field_index("n_sites")
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics if col >= 0 else None
            if st is None or not st.has_min_max:
                return np.int64
            lo, hi = min(lo, st.min), max(hi, st.max)
    for dtype in (np.uint16, np.int32):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return dtype
    return np.int64
