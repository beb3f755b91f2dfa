"""Reading per-country slices of the tile datasets without scanning them.

The tile datasets are sorted by (country_iso, tile_id) and written in row groups, so the footers'
statistics say which row groups hold a country.  The client builds that index once per run
(:func:`country_row_groups`, footers only) and ships each country's list to its tasks, which then read
only those row groups and only the columns they need (:func:`read_country`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.storage import Storage

__all__ = ["RowGroupRef", "country_row_groups", "read_country", "iter_country", "tiles_present"]


@dataclass(frozen=True)
class RowGroupRef:
    """Row groups of one part file that may hold a country (``pure``: they hold nothing else)."""

    path: str
    row_groups: tuple[int, ...]
    pure: bool = False


def country_row_groups(storage: Storage, dataset_id: str, parameter_hash: str) -> dict[str, list[RowGroupRef]]:
    """Country → row groups of a published tile dataset, from the Parquet footers (no data read).

    Raises
    ------
    InputError
        ``E101_TILE_INDEX_MISSING`` when the partition is not published.
    """
    rel = path_for(dataset_id, parameter_hash=parameter_hash)
    if not storage.is_published(rel):
        raise InputError("E101_TILE_INDEX_MISSING", f"{dataset_id} is not published for parameter_hash "
                         f"{parameter_hash}", dataset=dataset_id, path=storage.url(rel),
                         hint="run `segment1b prepare` (or `segment1b run`, which prepares what is missing)")
    index: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    mixed: set[tuple[str, str]] = set()
    for part in storage.parquet_parts(rel):
        meta = storage.parquet_metadata(part, dataset_id=dataset_id)
        col = meta.schema.to_arrow_schema().get_field_index("country_iso")
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                raise InputError("E304_SCHEMA_MISMATCH", f"{dataset_id} part has no country_iso statistics",
                                 dataset=dataset_id, path=storage.url(part))
            lo, hi = stats.min, stats.max
            for iso in ([lo] if lo == hi else _isos_between(lo, hi)):
                index[iso][part].append(rg)
                if lo != hi:
                    mixed.add((iso, part))
    return {iso: [RowGroupRef(p, tuple(rgs), (iso, p) not in mixed) for p, rgs in sorted(parts.items())]
            for iso, parts in index.items()}


def _isos_between(lo: str, hi: str) -> list[str]:
    """A row group spanning several countries: list the ISO codes it may hold (ASCII range)."""
    from segment1b.contracts import iso_table

    return [c for c in sorted(iso_table()) if lo <= c <= hi] or [lo, hi]


def read_country(storage: Storage, refs: list[RowGroupRef], country_iso: str, columns: list[str],
                 dataset_id: str) -> pa.Table:
    """Rows of one country from its row groups, only ``columns``; in file (= tile_id) order."""
    tables = []
    for ref in refs:
        # row groups that hold only this country (footer statistics) need no country column and no filter
        read_cols = list(columns) if ref.pure else sorted(set(columns) | {"country_iso"})
        with storage.fs.open(storage.abspath(ref.path), "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
                t = pf.read_row_groups(list(ref.row_groups), columns=read_cols)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError("E305_PARQUET_UNREADABLE", f"cannot read {dataset_id}: {exc}",
                                 dataset=dataset_id, path=storage.url(ref.path)) from exc
        tables.append(t.select(columns) if ref.pure else
                      t.filter(pc.equal(t["country_iso"], country_iso)).select(columns))
    if not tables:
        return pa.table({c: pa.array([], type=pa.uint64()) for c in columns})
    return pa.concat_tables(tables)


def iter_country(storage: Storage, refs: list[RowGroupRef], country_iso: str, columns: list[str],
                 dataset_id: str):
    """Like :func:`read_country`, one row group at a time (memory bounded by a row group)."""
    for ref in refs:
        for rg in ref.row_groups:
            yield read_country(storage, [RowGroupRef(ref.path, (rg,), ref.pure)], country_iso, columns, dataset_id)


def tiles_present(storage: Storage, refs: list[RowGroupRef], country_iso: str, wanted: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``wanted`` tile_ids exist in tile_index for the country.

    Reads only the tile_id column of the row groups whose [min, max] tile_id range can hold a wanted id, and
    looks the wanted ids up by binary search (tile_index is sorted by tile_id within a country).
    """
    wanted = np.asarray(wanted, dtype=np.uint64)
    found = np.zeros(len(wanted), dtype=bool)
    if wanted.size == 0:
        return found
    lo, hi = int(wanted.min()), int(wanted.max())
    for ref in refs:
        with storage.fs.open(storage.abspath(ref.path), "rb") as fh:
            pf = pq.ParquetFile(fh)
            meta = pf.metadata
            tcol = meta.schema.to_arrow_schema().get_field_index("tile_id")
            groups = []
            for rg in ref.row_groups:
                st = meta.row_group(rg).column(tcol).statistics
                if st is None or not st.has_min_max or (st.max >= lo and st.min <= hi):
                    groups.append(rg)
            if not groups:
                continue
            t = pf.read_row_groups(groups, columns=["tile_id"] if ref.pure else ["country_iso", "tile_id"])
        if not ref.pure:
            t = t.filter(pc.equal(t["country_iso"], country_iso))
        ids = t["tile_id"].to_numpy()
        if ids.size:
            pos = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)
            found |= ids[pos] == wanted
    return found
