"""S9 on the tile surfaces (issue 14): ``tile_index``, ``tile_bounds`` and ``tile_weights`` of the run.

One task per part number, ``s9-surface-NNN-<token>``: the three surfaces share part numbers (one S1 unit
writes part ``NNN`` of each), so a task reads part ``NNN`` of each, only the columns of
:data:`segment1b.s9_validation.SURFACE_COLUMNS`, and runs :func:`segment1b.s9_validation.check_part_surfaces`
(same tile set).  The client then sums the weights per country over all parts
(:func:`segment1b.s9_validation.check_weight_sums`: Σ weight_fp = 10^dp).  The partition digests (compared
with the S1/S2 run reports' receipts, and listed with every file in the bundle) come from the ``s9-digest``
tasks of :mod:`jobs.validate`, which read every byte once anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segment1b import s9_validation as s9
from segment1b.contracts import dataset, path_for
from segment1b.storage import Storage

from .parts import part_files
from .runtime import task_key, timed

__all__ = ["submit_surface_tasks", "surface_checks"]


def _read_surface(storage: Storage, ds: str, rel: str, part: int, findings: s9.Findings):
    """The part's needed columns, or None (+ a finding) when it is unreadable or has another schema.

    One open per file (footer and columns) and no Arrow thread pool: most parts are small, where the pool
    costs more than it saves, and two workers already keep both cores busy.  A column that the footer
    statistics show constant in every row group (``country_iso`` of a one-country part, ``dp``) is not
    decoded but rebuilt from the statistics: the strings are most of the decoding, and the footer is part of
    the bytes the digests vouch for.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with storage.fs.open(storage.abspath(rel), "rb") as fh:
            pf = pq.ParquetFile(fh)
            if not s9.check_schema(pf.schema_arrow.empty_table(), dataset(ds), findings, rel):
                return None
            columns = list(s9.SURFACE_COLUMNS[ds])
            constant = {c: v for c in ("country_iso", "dp") if c in columns
                        for v in [_constant(pf.metadata, c)] if v is not None}
            table = pf.read(columns=[c for c in columns if c not in constant], use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        findings.add("files", "E904_EGRESS_SCHEMA", f"{ds} part is not readable Parquet", 1,
                     [{"part": part, "path": rel, "error": f"{type(exc).__name__}: {exc}"[:300]}])
        return None
    n = table.num_rows
    for c, value in constant.items():
        typ = dataset(ds).schema.field(c).type
        column = (pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([value], typ))
                  if c == "country_iso" else pa.array(np.full(n, value, np.uint32), typ))
        table = table.append_column(c, column)
    return table.select(columns)


def _constant(meta, column: str):
    """The value of ``column`` when the footer statistics show it constant in every row group, else None."""
    index = meta.schema.to_arrow_schema().get_field_index(column)
    values = set()
    for rg in range(meta.num_row_groups):
        st = meta.row_group(rg).column(index).statistics
        if meta.row_group(rg).num_rows == 0:
            continue
        if st is None or not st.has_min_max or st.min != st.max or st.null_count:
            return None
        values.add(st.min)
    return values.pop() if len(values) == 1 else None


def _surface_task(storage: Storage, part: int, rels: dict[str, str | None]) -> dict[str, Any]:
    """Task ``s9-surface-NNN``: one part of the three surfaces holds one tile set; per-country weight sums."""
    findings = s9.Findings()
    tables = {ds: None if rel is None else _read_surface(storage, ds, rel, part, findings)
              for ds, rel in rels.items()}
    unreadable = any(rels[ds] is not None and tables[ds] is None for ds in s9.SURFACES)
    summary = ({"part": part, "rows": {}, "weights": {}} if unreadable  # already a finding
               else s9.check_part_surfaces(part, tables, findings))
    return {"kind": "surface", "part": part, "findings": findings.to_list(), "summary": summary, "files": {}}


def submit_surface_tasks(storage: Storage, client, parameter_hash: str, tok: str, futures: dict[str, Any],
                         stages: dict[str, str], findings: s9.Findings) -> dict[str, str]:
    """Submit one ``s9-surface-NNN`` task per part number of the surfaces; return the published surfaces.

    Returns
    -------
    dict
        Surface dataset id -> partition path, for the published ones (the others are an E101 finding).
    """
    rels = {ds: path_for(ds, parameter_hash=parameter_hash) for ds in s9.SURFACES}
    parts: dict[str, dict[int, str]] = {}
    for ds, rel in rels.items():
        if not storage.is_published(rel):
            findings.add("surface_tiles", "E101_TILE_INDEX_MISSING", f"{ds} is not published", 1,
                         [{"path": rel}])
            continue
        parts[ds], others = part_files(storage, rel, "parquet")
        findings.add("files", "E902_ROW_EXTRA", f"{ds} holds files that are not part-NNNNN.parquet",
                     len(others), [{"path": p} for p in others])
    if len(parts) < len(s9.SURFACES):
        return {ds: rels[ds] for ds in parts}  # without all three, a tile-set comparison says nothing more
    for i in sorted(set().union(*(set(p) for p in parts.values()))):
        job = {ds: parts[ds].get(i) for ds in s9.SURFACES}
        key = task_key("s9", "surface", None, i, tok)
        size = sum(storage.fs.size(storage.abspath(r)) for r in job.values() if r is not None)
        futures[key] = client.submit(timed(_surface_task), storage, i, job, key=key, priority=int(size))
        stages[key] = "s9 surface"
    return dict(rels)


def surface_checks(results: list[dict[str, Any]], dp: int | None, findings: s9.Findings) -> dict[str, Any]:
    """The global part of the surface checks (weights per country over all parts); the bundle's counts."""
    results = sorted(results, key=lambda r: r["part"])
    weights = s9.check_weight_sums((r["summary"]["weights"] for r in results), dp, findings)
    rows = {ds: sum(r["summary"]["rows"].get(ds) or 0 for r in results) for ds in s9.SURFACES}
    return {"surface_tiles": {"parts": len(results), "tiles": rows},
            "surface_weights": {**weights, "dp": dp}}
