"""S9 on the tile surfaces (issue 14): ``tile_index``, ``tile_bounds`` and ``tile_weights`` of the run.

One task per part number, ``s9-surface-NNN-<token>``: the three surfaces share part numbers (one S1 unit
writes part ``NNN`` of each), so a task reads part ``NNN`` of each.  The tile sets are the same when the raw
``country_iso`` and ``tile_id`` column chunks are byte-identical in the three files (the usual case: nothing
decoded but the weights); otherwise the task decodes the columns of
:data:`segment1b.s9.SURFACE_COLUMNS` and :func:`segment1b.s9.check_part_surfaces` names
every tile missing from a surface.  The client sums the weights per country over all parts
(:func:`segment1b.s9.check_weight_sums`: Σ weight_fp = 10^dp).  The partition digests (compared
with the S1/S2 run reports' receipts, and listed with every file in the bundle) come from the ``s9-digest``
tasks of :mod:`jobs.validate_tasks`, which read every byte once anyway.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from segment1b import s9
from segment1b.contracts import dataset, path_for
from segment1b.storage import Storage

from .parts import part_files
from .runtime import task_key
from .validate_tasks import TaskResult, timed_task

__all__ = ["submit_surface_tasks", "surface_checks"]


def _read_surface(storage: Storage, ds: str, rel: str, part: int, findings: s9.Findings,
                  columns: tuple[str, ...], key_chunks: list | None = None):
    """Some columns of one surface part, or None (+ a finding) when it is unreadable or has another schema.

    One open per file (footer, chunks, columns) and no Arrow thread pool: most parts are small, where the
    pool costs more than it saves, and two workers already keep both cores busy.  A column that the footer
    statistics show constant in every row group (``country_iso`` of a one-country part, ``dp``) is not
    decoded but rebuilt from the statistics; the footer is part of the bytes the digests vouch for.  With
    ``key_chunks`` (a list), the raw ``country_iso`` and ``tile_id`` column chunks are appended to it
    (see :func:`_key_chunks`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with storage.fs.open(storage.abspath(rel), "rb") as fh:
            pf = pq.ParquetFile(fh)
            if not s9.check_schema(pf.schema_arrow.empty_table(), dataset(ds), findings, rel):
                return None
            if key_chunks is not None:
                key_chunks.extend(_key_chunks(fh, pf))
            if not columns:
                return pa.table({})
            constant = {c: v for c in ("country_iso", "dp") if c in columns
                        for v in [_constant(pf.metadata, c)] if v is not None}
            table = pf.read(columns=[c for c in columns if c not in constant], use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        findings.add("files", "E904_EGRESS_SCHEMA", f"{ds} part is not readable Parquet", 1,
                     [{"part": part, "path": rel, "error": f"{type(exc).__name__}: {exc}"[:300]}])
        return None
    n = pf.metadata.num_rows
    for c, value in constant.items():
        typ = dataset(ds).schema.field(c).type
        column = (pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([value], typ))
                  if c == "country_iso" else pa.array(np.full(n, value, np.uint32), typ))
        table = table.append_column(c, column)
    return table.select(list(columns))


def _key_chunks(fh, pf) -> list[tuple]:
    """Layout and SHA-256 of the raw (compressed) ``country_iso`` and ``tile_id`` column chunks.

    The three surfaces are written with the same row groups, encodings and codec for these columns, so the
    same tiles give byte-identical chunks: comparing them is a complete check of the tile sets without
    decoding (same physical type, codec, encodings and bytes decode to the same values).  Any difference only
    sends the part to the decoding comparison, which names the tiles.
    """
    meta = pf.metadata
    names = pf.schema_arrow.names
    out = []
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for name in ("country_iso", "tile_id"):
            c = group.column(names.index(name))
            fh.seek(c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset)
            out.append((group.num_rows, c.physical_type, c.compression, c.encodings,
                        hashlib.sha256(fh.read(c.total_compressed_size)).hexdigest()))
    return out


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


def _surface_task(storage: Storage, part: int, rels: dict[str, str | None]) -> TaskResult:
    """Task ``s9-surface-NNN``: one part of the three surfaces holds one tile set; per-country weight sums.

    Usual case: the key column chunks are byte-identical in the three files (no tile id decoded) and only
    the weights are decoded.  Otherwise the keys of the three are decoded and compared tile by tile.
    """
    findings = s9.Findings()
    chunks: dict[str, list] = {ds: [] for ds in rels}
    columns = {ds: ("country_iso", "weight_fp", "dp") if ds == "tile_weights" else () for ds in rels}
    read = {ds: None if rel is None else _read_surface(storage, ds, rel, part, findings, columns[ds],
                                                        chunks[ds])
            for ds, rel in rels.items()}
    if any(rels[ds] is not None and read[ds] is None for ds in s9.SURFACES):
        summary: dict[str, Any] = {"part": part, "rows": {}, "weights": {}}  # already a finding
    elif all(rels[ds] is not None for ds in s9.SURFACES) and \
            chunks["tile_index"] == chunks["tile_bounds"] == chunks["tile_weights"]:
        rows = read["tile_weights"].num_rows  # the same row groups in the three
        summary = {"part": part, "rows": {ds: rows for ds in s9.SURFACES},
                   "weights": s9.weight_sums(read["tile_weights"])}
    else:
        tables = {ds: None if rel is None else _read_surface(storage, ds, rel, part, findings,
                                                              s9.SURFACE_COLUMNS[ds])
                  for ds, rel in rels.items()}
        summary = s9.check_part_surfaces(part, tables, findings)
    return TaskResult("surface", part, findings.to_list(), summary)


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
        futures[key] = client.submit(timed_task(_surface_task), storage, i, job, key=key, priority=int(size))
        stages[key] = "s9 surface"
    return dict(rels)


def surface_checks(results: list[TaskResult], dp: int | None, findings: s9.Findings) -> dict[str, Any]:
    """The global part of the surface checks (weights per country over all parts); the bundle's counts."""
    results = sorted(results, key=lambda r: r.part)
    weights = s9.check_weight_sums((r.summary["weights"] for r in results), dp, findings)
    rows = {ds: sum(r.summary["rows"].get(ds) or 0 for r in results) for ds in s9.SURFACES}
    return {"surface_tiles": {"parts": len(results), "tiles": rows},
            "surface_weights": {**weights, "dp": dp}}
