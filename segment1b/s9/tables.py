"""S9's dataset checks of one part, and the order across parts (contract §10).

:func:`check_part_tables` checks part ``NNN`` of S5, S6, S7 and ``site_locations`` (the same merchant range
in each): schema, value ranges, writer-sort order and unique keys, S7 = S5 ⋈ S6 at centroid + delta,
``site_locations`` = S7 minus ``tile_id``, coverage of the outlet catalogue, every S7 point in its pixel and
its country.  :func:`check_across_parts` then checks the order where parts meet.  The helpers here
(:func:`check_schema`, :func:`dataset_keys`, :func:`parity`, :func:`runs`, :func:`float_bits`) serve the
other S9 modules too.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from ..contracts import DatasetSpec, dataset
from ..grid import Grid
from ..keys import SiteKeys, iso_is_upper, iso_of
from .findings import DATASETS, S5, S6, S7, S8, Expect, Findings, key_rows

__all__ = ["check_schema", "dataset_keys", "parity", "runs", "float_bits", "check_part_tables",
           "check_across_parts"]


def check_schema(table: pa.Table, spec: DatasetSpec, findings: Findings, where: str) -> bool:
    """E904 unless the table has exactly the contract's columns, order and types, without nulls."""
    got = [(f.name, str(f.type)) for f in table.schema]
    want = [(f.name, str(f.type)) for f in spec.schema]
    if got != want:
        findings.add("schema", "E904_EGRESS_SCHEMA", f"{spec.id} columns differ from the contract", 1,
                     [{"path": where, "columns": [f"{n}:{t}" for n, t in got],
                       "expected": [f"{n}:{t}" for n, t in want]}])
        return False
    nulls = [{"path": where, "column": c, "nulls": table[c].null_count}
             for c in table.column_names if table[c].null_count]
    if nulls:
        findings.add("schema", "E904_EGRESS_SCHEMA", f"{spec.id} has nulls in non-null columns", len(nulls),
                     nulls)
        return False
    return True


def float_bits(a: np.ndarray) -> np.ndarray:
    """The IEEE bits of float64 values, so comparisons are exact (and tell -0.0 from 0.0)."""
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def runs(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts of runs of equal consecutive rows, and the run index of every row."""
    n = len(cols[0])
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    new = np.zeros(n, bool)
    new[0] = True
    for c in cols:
        new[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(new), np.cumsum(new) - 1


def _order_checks(keys: SiteKeys, ds: str, part: int, findings: Findings) -> None:
    down, dup = keys.neighbours()
    if down.size:
        findings.add("sort", "E906_SORT", f"{ds} rows are not in writer-sort order", down.size,
                     key_rows(keys, down, part))
    dup = keys.duplicates() if down.size else dup
    if dup.size:
        findings.add("unique_keys", "E903_DUP_KEY", f"{ds} has duplicate site keys", dup.size,
                     key_rows(keys, dup, part))


def parity(a: SiteKeys, b: SiteKeys, check: str, what_missing: str, what_extra: str, part: int,
           findings: Findings) -> tuple[np.ndarray, np.ndarray]:
    """E901 for keys of ``a`` missing from ``b``, E902 for keys of ``b`` not in ``a``; return the matches."""
    if a.equals(b):
        both = np.arange(len(a))
        return both, both
    missing, extra = a.diff(b)
    findings.add(check, "E901_ROW_MISSING", what_missing, missing.size, key_rows(a, missing, part))
    findings.add(check, "E902_ROW_EXTRA", what_extra, extra.size, key_rows(b, extra, part))
    return a.match(b)


def dataset_keys(part: int, ds: str, table: pa.Table, findings: Findings | None) -> SiteKeys | None:
    """Keys of a part table with the contract schema; else ``None`` (and, with ``findings``, a finding)."""
    if not check_schema(table, dataset(ds), findings if findings is not None else Findings(),
                        f"{ds}/part-{part:05d}"):
        return None
    try:
        return SiteKeys.from_table(table)
    except ValueError as exc:
        if findings is not None:
            findings.add("value_range", "E904_EGRESS_SCHEMA", f"{ds} legal_country_iso is not two letters", 1,
                         [{"part": part, "error": str(exc)}])
        return None


def check_part_tables(part: int, tables: Mapping[str, pa.Table | None], catalogue: pa.Table | None,
                      geometries: Mapping[str, Any], grid: Grid, expect: Expect,
                      findings: Findings) -> dict[str, Any]:
    """Dataset checks of one part: schema, ranges, order, keys, parity, coverage, pixel and country.

    Parameters
    ----------
    part : int
        Part index (for example rows).
    tables : mapping
        Dataset id (S5, S6, S7, site_locations) -> the part's table with every column, or ``None`` when
        the file is missing or unreadable (already a finding).
    catalogue : pyarrow.Table or None
        Outlet catalogue keys of the part's merchant range; ``None`` skips coverage.
    geometries : mapping
        ISO -> (prepared) country geometry, or ``None`` when the reference has no polygon for it.
    grid : Grid
    expect : Expect
    findings : Findings
        Receives every failure.

    Returns
    -------
    dict
        ``rows`` and ``first``/``last`` keys per dataset, ``countries`` (S7 rows per ISO), ``catalogue_rows``.
    """
    summary: dict[str, Any] = {"part": part, "rows": {}, "first": {}, "last": {}, "countries": {},
                               "catalogue_rows": None}
    ok: dict[str, tuple[pa.Table, SiteKeys]] = {}  # the parts with the contract schema, and their keys
    for ds in DATASETS:
        t = tables.get(ds)
        if t is None:
            continue
        summary["rows"][ds] = t.num_rows
        k = dataset_keys(part, ds, t, findings)
        if k is not None:
            ok[ds] = (t, k)
            summary["first"][ds], summary["last"][ds] = k.first(), k.last()
            _key_checks(k, ds, part, findings)
    if S6 in ok:
        _jitter_checks(*ok[S6], expect, part, findings)
    if S7 in ok:
        summary["countries"] = _synthesis_checks(ok, geometries, grid, part, findings)
    if S5 in ok and S6 in ok:
        (t5, k5), (t6, k6) = ok[S5], ok[S6]
        i5, i6 = parity(k5, k6, "synthesis_parity", "S5 sites without an S6 jitter row",
                        "S6 jitter rows without an S5 site", part, findings)
        tile5 = np.asarray(t5["tile_id"].to_numpy(), np.uint64)
        tile6 = np.asarray(t6["tile_id"].to_numpy(), np.uint64)
        bad = np.flatnonzero(tile5[i5] != tile6[i6])
        findings.add("synthesis_parity", "E902_ROW_EXTRA", "S6 tile_id differs from the S5 assignment",
                     bad.size, key_rows(k6, i6[bad], part, tile_id=tile6))
    if catalogue is not None:
        kc = SiteKeys.from_table(catalogue)
        summary["catalogue_rows"] = len(kc)
        if S8 in ok:
            parity(kc, ok[S8][1], "catalogue_coverage", "outlet catalogue sites missing from site_locations",
                   "site_locations rows that are not in the outlet catalogue", part, findings)
    return summary


def _key_checks(k: SiteKeys, ds: str, part: int, findings: Findings) -> None:
    """Order, uniqueness, uppercase ISO and site_order >= 1 of one dataset part."""
    _order_checks(k, ds, part, findings)
    bad_iso = np.flatnonzero(~iso_is_upper(k.iso))
    findings.add("value_range", "E904_EGRESS_SCHEMA", f"{ds} legal_country_iso is not uppercase A-Z",
                 bad_iso.size, key_rows(k, bad_iso, part))
    bad_order = np.flatnonzero(k.site_order < 1)
    findings.add("value_range", "E904_EGRESS_SCHEMA", f"{ds} site_order is below 1", bad_order.size,
                 key_rows(k, bad_order, part))


def _jitter_checks(t6: pa.Table, k6: SiteKeys, expect: Expect, part: int, findings: Findings) -> None:
    """S6's lineage column against the path token, and its deltas in [-1, 1]."""
    fingerprint = t6["manifest_fingerprint"]
    bad = pc.not_equal(fingerprint, expect.manifest_fingerprint)
    idx = np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False), bool))
    value = np.asarray(fingerprint.to_numpy(zero_copy_only=False))
    findings.add("path_embed", "E905_IDENTITY", "s6_site_jitter manifest_fingerprint differs from the path token",
                 idx.size, key_rows(k6, idx, part, value=value))
    for c in ("delta_lat_deg", "delta_lon_deg"):
        v = np.asarray(t6[c].to_numpy(), np.float64)
        out = np.flatnonzero(~((v >= -1.0) & (v <= 1.0)))
        findings.add("value_range", "E904_EGRESS_SCHEMA", f"s6_site_jitter {c} is outside [-1, 1]", out.size,
                     key_rows(k6, out, part, **{c: v}))


def _lon_lat(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(t["lon_deg"].to_numpy(), np.float64), np.asarray(t["lat_deg"].to_numpy(), np.float64)


def _differ(lon_a, lat_a, lon_b, lat_b) -> np.ndarray:
    """Rows whose lon or lat differ in any bit (-0.0 differs from 0.0)."""
    return np.flatnonzero((float_bits(lon_a) != float_bits(lon_b)) | (float_bits(lat_a) != float_bits(lat_b)))


def _synthesis_checks(ok: Mapping[str, tuple[pa.Table, SiteKeys]], geometries: Mapping[str, Any], grid: Grid,
                      part: int, findings: Findings) -> dict[str, int]:
    """S7's ranges, pixel and country; site_locations = S7 minus tile_id; S7 = S5 ⋈ S6 at centroid + delta.

    Returns S7's rows per country.
    """
    t7, k7 = ok[S7]
    tile7 = np.asarray(t7["tile_id"].to_numpy(), np.uint64)
    lon7, lat7 = _lon_lat(t7)
    _range_checks(S7, k7, lon7, lat7, part, findings)
    _pixel_check(grid, k7, tile7, lon7, lat7, part, findings)
    countries = _country_check(geometries, k7, lon7, lat7, part, findings)
    if S8 in ok:
        t8, k8 = ok[S8]
        lon8, lat8 = _lon_lat(t8)
        _range_checks(S8, k8, lon8, lat8, part, findings)
        i7, i8 = parity(k7, k8, "egress_parity", "S7 rows missing from site_locations",
                        "site_locations rows that are not in S7", part, findings)
        diff = _differ(lon7[i7], lat7[i7], lon8[i8], lat8[i8])
        findings.add("egress_parity", "E902_ROW_EXTRA", "site_locations lon/lat differ from S7's", diff.size,
                     key_rows(k8, i8[diff], part, lon_deg=lon8, lat_deg=lat8))
    if S5 in ok:
        t5, k5 = ok[S5]
        tile5 = np.asarray(t5["tile_id"].to_numpy(), np.uint64)
        i5, j7 = parity(k5, k7, "synthesis_parity", "S5 sites missing from S7", "S7 rows without an S5 site",
                        part, findings)
        bad = np.flatnonzero(tile5[i5] != tile7[j7])
        findings.add("synthesis_parity", "E902_ROW_EXTRA", "S7 tile_id differs from the S5 assignment",
                     bad.size, key_rows(k7, j7[bad], part, tile_id=tile7))
    if S6 in ok:
        t6, k6 = ok[S6]
        i6, j7 = k6.match(k7)
        tile6 = np.asarray(t6["tile_id"].to_numpy(), np.uint64)
        lon, lat = grid.absolute_point(tile6[i6], t6["delta_lon_deg"].to_numpy()[i6],
                                       t6["delta_lat_deg"].to_numpy()[i6])
        bad = _differ(lon, lat, lon7[j7], lat7[j7])
        findings.add("synthesis_parity", "E902_ROW_EXTRA", "S7 lon/lat is not the S6 tile centroid + S6 deltas",
                     bad.size, key_rows(k7, j7[bad], part, lon_deg=lon7, lat_deg=lat7))
    return countries


def _range_checks(ds: str, keys: SiteKeys, lon: np.ndarray, lat: np.ndarray, part: int,
                  findings: Findings) -> None:
    bad = np.flatnonzero(~((lon >= -180.0) & (lon <= 180.0) & (lat >= -90.0) & (lat <= 90.0)))
    findings.add("value_range", "E904_EGRESS_SCHEMA",
                 f"{ds} lon/lat outside [-180, 180] x [-90, 90] (or not finite)",
                 bad.size, key_rows(keys, bad, part, lon_deg=lon, lat_deg=lat))


def _pixel_check(grid: Grid, keys: SiteKeys, tile: np.ndarray, lon: np.ndarray, lat: np.ndarray, part: int,
                 findings: Findings) -> None:
    valid = tile < np.uint64(grid.n_cells)
    inside = np.zeros(len(tile), bool)
    inside[valid] = grid.contains_point(tile[valid], lon[valid], lat[valid])
    bad = np.flatnonzero(~inside)
    findings.add("point_in_pixel", "E707_POINT_OUTSIDE_PIXEL",
                 "S7 point is outside its tile (or the tile is not "
                 "on the grid)", bad.size, key_rows(keys, bad, part, tile_id=tile, lon_deg=lon,
                                                      lat_deg=lat))


def _country_check(geometries: Mapping[str, Any], keys: SiteKeys, lon: np.ndarray, lat: np.ndarray, part: int,
                   findings: Findings) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not len(keys):
        return counts
    order = np.argsort(keys.iso, kind="stable")
    starts, _ = runs(keys.iso[order])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        idx = order[a:b]
        code = int(keys.iso[idx[0]])
        iso = iso_of(code)
        counts[iso] = int(b - a)
        geom = geometries.get(iso)
        if geom is None:
            findings.add("point_in_country", "E608_POINT_OUTSIDE_COUNTRY",
                         "no reference polygon for the country "
                         "(so no point of it can be inside)", idx.size, key_rows(keys, idx, part))
            continue
        inside = shapely.intersects_xy(geom, lon[idx], lat[idx])
        bad = idx[~inside]
        findings.add("point_in_country", "E608_POINT_OUTSIDE_COUNTRY",
                     "S7 point is outside its country polygon",
                     bad.size, key_rows(keys, bad, part, lon_deg=lon, lat_deg=lat))
    return counts


# ---------------------------------------------------------------------------------------------------------
# across parts


def check_across_parts(summaries: list[Mapping[str, Any]], findings: Findings) -> None:
    """E906/E903 where a part's first key is not after the previous non-empty part's last key."""
    for ds in DATASETS:
        prev, prev_part = None, None
        for s in sorted(summaries, key=lambda s: s["part"]):
            first, last = s["first"].get(ds), s["last"].get(ds)
            if first is None:
                continue
            if prev is not None and tuple(first) <= tuple(prev):
                code, check = (("E903_DUP_KEY", "unique_keys") if tuple(first) == tuple(prev) else
                               ("E906_SORT", "sort"))
                findings.add(check, code, f"{ds} part starts at or before the end of the previous part", 1,
                             [{"part": s["part"], "previous_part": prev_part, "first_key": _key_dict(first),
                               "previous_last_key": _key_dict(prev)}])
            prev, prev_part = last, s["part"]


def _key_dict(k) -> dict[str, Any]:
    m, c, s = k
    return {"merchant_id": int(m), "legal_country_iso": iso_of(c),
            "site_order": int(s)}
