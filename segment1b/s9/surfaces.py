"""S9 on the tile surfaces (issue 14): one tile set in ``tile_index``, ``tile_bounds`` and ``tile_weights``,
weights that sum to 10^dp per country (contract §3, §4).

The three surfaces share part numbers (one S1 unit writes part ``NNN`` of each).  :func:`check_part_surfaces`
names every tile of one part missing from a surface (E102); :func:`weight_sums` gives the exact Σ weight_fp
of each country in a part, which :func:`check_weight_sums` adds up over all parts (E105).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from ..keys import SiteKeys, iso_of, iso_u16
from .findings import MAX_EXAMPLES, Findings

__all__ = ["SURFACES", "SURFACE_COLUMNS", "weight_sums", "check_part_surfaces", "check_weight_sums"]

#: the S1/S2 tile surfaces; their parts share part numbers (one unit of S1 = one part of each)
SURFACES = ("tile_index", "tile_bounds", "tile_weights")
#: the only columns S9 reads of each surface
SURFACE_COLUMNS = {"tile_index": ("country_iso", "tile_id"), "tile_bounds": ("country_iso", "tile_id"),
                   "tile_weights": ("country_iso", "tile_id", "weight_fp", "dp")}


def _iso_codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """uint16 codes of an ISO column; a dictionary column goes through its (small) dictionary only."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type) and not column.null_count:
        return iso_u16(column.dictionary)[np.asarray(column.indices.to_numpy(zero_copy_only=False), np.intp)]
    return iso_u16(column)


def _tile_keys(table: pa.Table) -> SiteKeys:
    """(country_iso, tile_id) of a surface part as :class:`SiteKeys` (tile_id in the merchant slot)."""
    tile = np.asarray(table["tile_id"].to_numpy(), np.uint64)
    return SiteKeys(tile, _iso_codes(table["country_iso"]), np.zeros(len(tile), np.int64))


def _tile_rows(keys: SiteKeys, idx: np.ndarray, part: int, **extra: str) -> list[dict[str, Any]]:
    return [{"part": part, "country_iso": r["legal_country_iso"], "tile_id": r["merchant_id"], **extra}
            for r in keys.rows(idx, MAX_EXAMPLES)]


def weight_sums(table: pa.Table, iso: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per country of one ``tile_weights`` part: exact Σ weight_fp (a Python int), its dp values, its tiles.

    ``table`` needs ``country_iso``, ``weight_fp`` and ``dp``; ``iso`` are the country codes when the caller
    has them already.  Feeds :func:`check_weight_sums`.

    >>> t = pa.table({"country_iso": ["DE", "DE"], "weight_fp": pa.array([2**63, 2**63], pa.uint64()),
    ...               "dp": pa.array([3, 3], pa.uint32())})
    >>> weight_sums(t)["DE"]["sum"] == 2**64
    True
    """
    w = np.asarray(table["weight_fp"].to_numpy(), np.uint64)
    dp = np.asarray(table["dp"].to_numpy(), np.int64)
    iso = _iso_codes(table["country_iso"]) if iso is None else iso
    if iso.size > 1 and (iso[1:] < iso[:-1]).any():  # written by country; sort only what is not
        order = np.argsort(iso, kind="stable")
        iso, w, dp = iso[order], w[order], dp[order]
    starts = np.flatnonzero(np.r_[True, iso[1:] != iso[:-1]]) if iso.size else np.empty(0, np.intp)
    if not starts.size:
        return {}
    # exact sums: the high and low 32 bits apart, each sum fits in uint64 (fewer than 2^32 rows)
    hi = np.add.reduceat(w >> np.uint64(32), starts).tolist()
    lo = np.add.reduceat(w & np.uint64(0xFFFFFFFF), starts).tolist()
    ends = np.r_[starts[1:], len(iso)].tolist()
    out = {}
    for a, b, h, low in zip(starts.tolist(), ends, hi, lo):
        code = int(iso[a])
        d = dp[a:b]
        out[iso_of(code)] = {
            "sum": (h << 32) + low, "tiles": b - a,
            "dp": [int(d[0])] if d.min() == d.max() else np.unique(d).tolist()}
    return out


def check_part_surfaces(part: int, tables: Mapping[str, pa.Table | None],
                        findings: Findings) -> dict[str, Any]:
    """One part of ``tile_index``, ``tile_bounds`` and ``tile_weights``: the same (country, tile) set (E102).

    Parameters
    ----------
    part : int
        The part number (the three surfaces share part numbers).
    tables : mapping
        Dataset id of :data:`SURFACES` -> the part's :data:`SURFACE_COLUMNS` (``None``: the part file is
        missing from that surface, so all of the others' tiles are missing from it).
    findings : Findings

    Returns
    -------
    dict
        ``part``, ``rows`` per surface (``None`` when missing) and ``weights``: country -> ``{"sum": exact
        Σ weight_fp, "dp": its dp values, "tiles"}`` for :func:`check_weight_sums`.
    """
    keys = {ds: _tile_keys(t) for ds, t in tables.items() if t is not None}
    summary: dict[str, Any] = {"part": part, "weights": {},
                               "rows": {ds: len(keys[ds]) if ds in keys else None for ds in SURFACES}}
    if "tile_weights" in keys:
        summary["weights"] = weight_sums(tables["tile_weights"], keys["tile_weights"].iso)
    present = [keys[ds] for ds in SURFACES if ds in keys]
    if len(present) == len(SURFACES) and all(present[0].equals(k) for k in present[1:]):
        return summary  # the usual case: three identical key columns
    empty = SiteKeys.empty()  # keeps the dtypes when a surface is missing
    every = SiteKeys(*(np.concatenate([getattr(k, f) for k in [empty, *present]])
                       for f in ("merchant_id", "iso", "site_order")))
    union = every.take(np.setdiff1d(np.arange(len(every)), every.duplicates(), assume_unique=True))
    union = union.take(union.sort_order())
    for ds in SURFACES:
        have = keys.get(ds, SiteKeys.empty())
        missing, twice = union.diff(have)
        findings.add("surface_tiles", "E102_FK_MISMATCH", "tile_index, tile_bounds and tile_weights do not "
                     "hold the same tiles", missing.size, _tile_rows(union, missing, part, missing_from=ds))
        findings.add("surface_tiles", "E102_FK_MISMATCH", f"{ds} lists a tile more than once", twice.size,
                     _tile_rows(have, twice, part, duplicate_in=ds))
    return summary


def check_weight_sums(parts: Iterable[Mapping[str, Mapping[str, Any]]], dp: int | None,
                      findings: Findings) -> dict[str, int]:
    """Per country over all parts: one dp, the run's ``dp``, and Σ weight_fp = 10^dp exactly (E105).

    ``parts`` are :func:`weight_sums` of every part; ``dp`` is the parameter set's (``None``:
    unknown, not compared).  Returns the number of countries and tiles.
    """
    total: dict[str, dict[str, Any]] = {}
    for weights in parts:
        for iso, w in weights.items():
            t = total.setdefault(iso, {"sum": 0, "dp": set(), "tiles": 0})
            t["sum"] += int(w["sum"])
            t["dp"].update(w["dp"])
            t["tiles"] += int(w["tiles"])
    for iso, t in sorted(total.items()):
        dps = sorted(t["dp"])
        if len(dps) > 1:
            findings.add("surface_weights", "E105_NORMALIZATION", "a country's tile_weights mix dp values", 1,
                         [{"country_iso": iso, "dp_values": dps}])
        elif dp is not None and dps[0] != dp:
            findings.add("surface_weights", "E105_NORMALIZATION", "tile_weights dp differs from the "
                         "parameter set's dp", 1, [{"country_iso": iso, "dp": dps[0], "expected_dp": dp}])
        elif t["sum"] != 10 ** dps[0]:
            findings.add("surface_weights", "E105_NORMALIZATION", "a country's weight_fp do not sum to 10^dp",
                         1, [{"country_iso": iso, "dp": dps[0], "weight_fp_sum": t["sum"],
                              "expected": 10 ** dps[0]}])
    return {"countries": len(total), "tiles": sum(t["tiles"] for t in total.values())}
