"""The merchant-major part layout of published datasets, read from file names and Parquet footers.

S4-S8 write ``part-NNNNN.parquet`` files (and S5/S6 ``part-NNNNN.jsonl.zst`` or ``.jsonl`` event files) where the same
index holds the same merchant range in every dataset (``jobs.units.plan_parts``).  S7 and S9 work part by
part; this module finds the parts, gives each a merchant range that together cover all of u64 (so a
catalogue row always belongs to exactly one part, even if no dataset has its merchant), and finds the
row groups of the outlet catalogue that can hold a range (footer statistics only, no data read).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segment1b.contracts import TOKEN_PATTERNS, dataset
from segment1b.errors import InputError
from segment1b.rng_log_files import DEFAULT_LOG_FORM, LOG_FORMS, form_of_name, suffix_of
from segment1b.storage import Storage

from .tiles import RowGroupRef

__all__ = ["PART_NAME", "U64_MAX", "part_files", "log_part_files", "merchant_max", "merchant_ranges", "CatalogueIndex",
           "read_catalogue_keys", "read_merchant_range", "read_part", "parquet_from_bytes", "file_stamps",
           "token_values"]

PART_NAME = re.compile(r"^part-(\d{5})\.(parquet|jsonl|jsonl\.zst)$")
U64_MAX = 2**64 - 1


def part_files(storage: Storage, rel: str, suffix: str = "parquet") -> tuple[dict[int, str], list[str]]:
    """Part files of a partition folder by index (relative paths), and the files that are not parts."""
    parts: dict[int, str] = {}
    others: list[str] = []
    for name in storage.list_files(rel):
        m = PART_NAME.match(name)
        if m and m.group(2) == suffix:
            parts[int(m.group(1))] = rel + name
        else:
            others.append(rel + name)
    return parts, others


def log_part_files(storage: Storage, rel: str) -> tuple[str, dict[int, str], list[str]]:
    """The form of an RNG event log (:mod:`segment1b.rng_log_files`), its part files by index, and the files
    that are not parts of that form.

    One log holds one form (contract §9): the form of most parts wins (the default on a tie), and parts of
    the other form are listed with the strays.
    """
    names = storage.list_files(rel)
    counts = {form: sum(bool(PART_NAME.match(n)) and form_of_name(n) == form for n in names) for form in LOG_FORMS}
    form = max(LOG_FORMS, key=lambda f: (counts[f], f == DEFAULT_LOG_FORM))
    parts, others = part_files(storage, rel, suffix_of(form)[1:])
    return form, parts, others


def merchant_max(storage: Storage, rel: str, dataset_id: str) -> int | None:
    """Largest merchant_id of a part file, from its footer statistics (the column if they are missing);
    ``None`` for an empty or unreadable file."""
    try:
        meta = storage.parquet_metadata(rel, dataset_id=dataset_id)
        col = meta.schema.to_arrow_schema().get_field_index("merchant_id")
        if col < 0 or meta.num_rows == 0:
            return None
        best = None
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics
            if st is None or not st.has_min_max:
                column = storage.read_parquet(rel, ["merchant_id"], dataset_id=dataset_id)["merchant_id"]
                return int(pc.max(column).as_py())
            best = st.max if best is None else max(best, st.max)
        return int(best)
    except (InputError, pa.ArrowException, ValueError, TypeError):
        return None


def merchant_ranges(maxima: list[int | None]) -> list[tuple[int, int]]:
    """Inclusive merchant ranges ``(lo, hi)`` of consecutive parts from their largest merchant ids.

    Part ``p`` covers ``(max of the parts before, max_p]``; the first starts at 0 and the last ends at
    2**64 - 1, so the ranges cover u64.  A part without a maximum (empty or unreadable) gets an empty range.

    >>> merchant_ranges([10, None, 30])
    [(0, 10), (11, 10), (11, 18446744073709551615)]
    """
    out = []
    prev = -1
    for p, mx in enumerate(maxima):
        last = p == len(maxima) - 1
        hi = U64_MAX if last else (prev if mx is None else max(mx, prev))
        out.append((prev + 1, hi))
        prev = max(prev, hi)
    return out


@dataclass(frozen=True)
class _RowGroup:
    path: str
    index: int
    lo: int | None
    hi: int | None


class CatalogueIndex:
    """Row groups of a merchant-sorted dataset (the outlet catalogue, S3) with their merchant_id ranges
    (footers only; on the client)."""

    def __init__(self, storage: Storage, rel: str, dataset_id: str = "outlet_catalogue"):
        self.rows = 0
        self.dataset_id = dataset_id
        self._groups: list[_RowGroup] = []
        for part in storage.parquet_parts(rel):
            meta = storage.parquet_metadata(part, dataset_id=dataset_id)
            self.rows += meta.num_rows
            col = meta.schema.to_arrow_schema().get_field_index("merchant_id")
            for rg in range(meta.num_row_groups):
                st = meta.row_group(rg).column(col).statistics if col >= 0 else None
                ok = st is not None and st.has_min_max
                self._groups.append(_RowGroup(part, rg, int(st.min) if ok else None,
                                              int(st.max) if ok else None))

    def refs(self, lo: int, hi: int) -> list[RowGroupRef]:
        """Row groups that can hold merchants in ``[lo, hi]`` (those without statistics always can)."""
        if lo > hi:
            return []
        by_path: dict[str, list[int]] = {}
        for g in self._groups:
            if g.lo is None or (g.hi >= lo and g.lo <= hi):
                by_path.setdefault(g.path, []).append(g.index)
        return [RowGroupRef(p, tuple(rgs)) for p, rgs in sorted(by_path.items())]


def read_merchant_range(storage: Storage, refs: list[RowGroupRef], lo: int, hi: int, columns: list[str],
                        dataset_id: str) -> pa.Table:
    """``columns`` of the rows whose merchant_id is in ``[lo, hi]``, from the row groups ``refs``."""
    tables = []
    for ref in refs:
        t = storage.read_row_groups(ref.path, ref.row_groups, columns, dataset_id=dataset_id)
        m = t["merchant_id"]
        mask = pc.and_(pc.greater_equal(m, pa.scalar(lo, pa.uint64())),
                       pc.less_equal(m, pa.scalar(hi, pa.uint64())))
        tables.append(t.filter(mask))
    if not tables:
        return dataset(dataset_id).schema.empty_table().select(columns)
    return pa.concat_tables(tables)


def read_catalogue_keys(storage: Storage, refs: list[RowGroupRef], lo: int, hi: int) -> pa.Table:
    """Catalogue keys (merchant_id, legal_country_iso, site_order) of merchants in ``[lo, hi]``."""
    return read_merchant_range(storage, refs, lo, hi, ["merchant_id", "legal_country_iso", "site_order"],
                               "outlet_catalogue")


def token_values(storage: Storage, rel: str, token: str) -> list[str]:
    """Values of the ``token=`` sub-folders of a folder (hidden staging folders excluded), validated, sorted."""
    base = storage.abspath(rel)
    if not storage.fs.exists(base):
        return []
    out = []
    for entry in storage.fs.ls(base, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry.get("type") == "directory" and name.startswith(token + "="):
            value = name[len(token) + 1:]
            if TOKEN_PATTERNS[token].match(value):
                out.append(value)
    return sorted(out)


def read_part(storage: Storage, rel: str | None, schema: pa.Schema, columns, dataset_id: str) -> pa.Table:
    """Columns of one part file, or an empty table of the schema when the part does not exist."""
    if rel is None:
        return schema.empty_table().select(list(columns))
    return storage.read_parquet(rel, list(columns), dataset_id=dataset_id)


def parquet_from_bytes(data: bytes, columns=None) -> pa.Table:
    """Parse Parquet bytes already in memory (read once, hashed, parsed)."""
    return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns is not None else None)


def file_stamps(storage: Storage, rels) -> list[tuple[str, int, str]]:
    """(path, size, modification stamp) of files, for task-key tokens: a rerun on unchanged inputs gets the
    same keys, a rerun after an input changed never reuses a result the scheduler still holds."""
    out = []
    for rel in rels:
        info = storage.fs.info(storage.abspath(rel))
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("updated") or ""
        out.append((rel, int(info.get("size") or 0), str(stamp)))
    return out
