"""S7 site synthesis: S5 ⋈ S6 1:1, absolute lon/lat, inside-pixel and catalogue coverage (contract §10).

The unit of work is one output *part*, not one country unit.  S5, S6 and the outlet catalogue are all
merchant-major and S5/S6 share the part layout of ``jobs.units.plan_parts`` (the same ``part-NNNNN``
index holds the same merchant range in both), so part ``p`` of S7 needs exactly part ``p`` of S5 and S6
and the catalogue rows of that merchant range.  Working per country instead would make every country
scan every part (a country's sites are spread over all merchant ranges) and the result would have to
be re-sorted merchant-major before writing.  Per part, every input byte is read once and the output is
already in writer-sort order.

:func:`synthesize_part` is pure: Arrow tables in, an Arrow table out, no I/O and no Dask.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .contracts import dataset
from .errors import IntegrityError
from .grid import Grid
from .keys import SiteKeys

__all__ = ["synthesize_part", "S5_COLUMNS", "S6_COLUMNS", "CATALOGUE_COLUMNS"]

DATASET = "s7_site_synthesis"
#: columns S7 reads from its inputs (nothing else is needed)
S5_COLUMNS = ("merchant_id", "legal_country_iso", "site_order", "tile_id")
S6_COLUMNS = ("merchant_id", "legal_country_iso", "site_order", "tile_id", "delta_lat_deg", "delta_lon_deg")
CATALOGUE_COLUMNS = ("merchant_id", "legal_country_iso", "site_order")
_EXAMPLES = 20


def _sorted(table: pa.Table, keys: SiteKeys) -> tuple[pa.Table, SiteKeys]:
    down, _ = keys.neighbours()
    if down.size == 0:
        return table, keys
    order = keys.sort_order()
    return table.take(order), keys.take(order)


def _refuse_duplicates(keys: SiteKeys, source: str) -> None:
    dup = keys.duplicates()
    if dup.size:
        raise IntegrityError("E703_DUP_KEY", f"{dup.size} duplicate site key(s) in {source}; each "
                             "(merchant_id, legal_country_iso, site_order) must occur once",
                             dataset=DATASET,
                             rows=[{"input": source, **r} for r in keys.rows(dup, _EXAMPLES)],
                             hint=f"{source} is corrupt or was published twice into one partition; rerun it")


def synthesize_part(s5: pa.Table, s6: pa.Table, catalogue: pa.Table, grid: Grid) -> pa.Table:
    """S7 rows of one part: the 1:1 join of S5 and S6, placed at centroid + delta.

    Parameters
    ----------
    s5 : pyarrow.Table
        S5 rows of the part (at least :data:`S5_COLUMNS`).
    s6 : pyarrow.Table
        S6 rows of the part (at least :data:`S6_COLUMNS`).
    catalogue : pyarrow.Table
        Outlet catalogue keys (:data:`CATALOGUE_COLUMNS`) of exactly the part's merchant range.
    grid : Grid
        The grid of the run's parameters; the only source of cell centroids and bounds.

    Returns
    -------
    pyarrow.Table
        The ``s7_site_synthesis`` schema, in writer-sort order.

    Raises
    ------
    IntegrityError
        ``E703_DUP_KEY`` (a key twice in S5 or S6), ``E701_ROW_MISSING`` (S5 site without S6 row),
        ``E702_ROW_EXTRA`` (S6 row without S5 site), ``E707_POINT_OUTSIDE_PIXEL`` (point outside its tile,
        non-finite delta, or S6 drew in another tile than S5 assigned), ``E708_1A_COVERAGE_FAIL`` (keys
        differ from the catalogue's, either way).

    Examples
    --------
    >>> from segment1b.grid import Grid
    >>> g = Grid.named("1d")
    >>> keys = {"merchant_id": pa.array([7], pa.uint64()), "legal_country_iso": ["FR"],
    ...         "site_order": pa.array([1], pa.int64())}
    >>> s5 = pa.table({**keys, "tile_id": pa.array([100], pa.uint64())})
    >>> s6 = pa.table({**keys, "tile_id": pa.array([100], pa.uint64()), "delta_lat_deg": [0.25],
    ...                "delta_lon_deg": [-0.5]})
    >>> synthesize_part(s5, s6, pa.table(keys), g).to_pylist()[0]["lon_deg"]  # centroid -79.5, delta -0.5
    -80.0
    """
    k5, k6 = SiteKeys.from_table(s5), SiteKeys.from_table(s6)
    _refuse_duplicates(k5, "s5_site_tile_assignment")
    _refuse_duplicates(k6, "s6_site_jitter")
    s5, k5 = _sorted(s5, k5)
    s6, k6 = _sorted(s6, k6)
    if not k5.equals(k6):
        missing, extra = k5.diff(k6)
        if missing.size:
            raise IntegrityError("E701_ROW_MISSING", f"{missing.size} site(s) of S5 have no S6 jitter row",
                                 dataset=DATASET, rows=k5.rows(missing, _EXAMPLES),
                                 hint="S6 output is incomplete; rerun S6 (`segment1b run` resumes it)")
        raise IntegrityError("E702_ROW_EXTRA", f"{extra.size} S6 jitter row(s) have no site in S5",
                             dataset=DATASET, rows=k6.rows(extra, _EXAMPLES),
                             hint="S6 was run on other assignments than the published S5; rerun S5 and S6")
    tile = np.asarray(s5["tile_id"].to_numpy(), dtype=np.uint64)
    tile6 = np.asarray(s6["tile_id"].to_numpy(), dtype=np.uint64)
    moved = np.flatnonzero(tile != tile6)
    if moved.size:
        raise IntegrityError("E707_POINT_OUTSIDE_PIXEL",
                             f"{moved.size} S6 point(s) were drawn in another tile "
                             "than S5 assigned, so they are not in the assigned pixel", dataset=DATASET,
                             rows=[{**k5.row(i), "s5_tile_id": int(tile[i]), "s6_tile_id": int(tile6[i])}
                                   for i in moved[:_EXAMPLES]],
                             hint="S6 was run on other assignments than the published S5; rerun S5 and S6")
    dlon = np.asarray(s6["delta_lon_deg"].to_numpy(), dtype=np.float64)
    dlat = np.asarray(s6["delta_lat_deg"].to_numpy(), dtype=np.float64)
    lon, lat = grid.absolute_point(tile, dlon, dlat)
    outside = np.flatnonzero(~grid.contains_point(tile, lon, lat))  # NaN compares False: outside
    if outside.size:
        raise IntegrityError("E707_POINT_OUTSIDE_PIXEL",
                             f"{outside.size} synthesised point(s) are outside their "
                             "tile (centroid + delta leaves the cell)", dataset=DATASET,
                             rows=[{**k5.row(i), "tile_id": int(tile[i]), "delta_lon_deg": float(dlon[i]),
                                    "delta_lat_deg": float(dlat[i]), "lon_deg": float(lon[i]),
                                    "lat_deg": float(lat[i])} for i in outside[:_EXAMPLES]],
                             hint="S6 deltas do not belong to this grid: check the run's parameter_hash")
    kc = SiteKeys.from_table(catalogue)
    if not kc.equals(k5):
        kc = kc.take(kc.sort_order())
        missing, extra = kc.diff(k5)
        rows = ([{"problem": "in catalogue, not placed", **r} for r in kc.rows(missing, _EXAMPLES)]
                + [{"problem": "placed, not in catalogue", **r} for r in k5.rows(extra, _EXAMPLES)])
        if rows:
            raise IntegrityError("E708_1A_COVERAGE_FAIL",
                                 f"site keys differ from the outlet catalogue's: {missing.size} catalogue "
                                 f"site(s) not placed, {extra.size} placed site(s) not in the catalogue",
                                 dataset=DATASET, rows=rows,
                                 hint="S3-S6 ran on another catalogue (or one was edited); rerun from S3")
    table = pa.table({"merchant_id": s5["merchant_id"], "legal_country_iso": s5["legal_country_iso"],
                      "site_order": s5["site_order"], "tile_id": s5["tile_id"],
                      "lon_deg": pa.array(lon, pa.float64()), "lat_deg": pa.array(lat, pa.float64())})
    return table.cast(dataset(DATASET).schema)
