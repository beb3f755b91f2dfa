"""Obviously-correct references the tests compare the product against (issue 18: code that only tests use
lives with the tests).

Each one is written for clarity, not speed: plain Python integers and lists where the product uses NumPy
prefixes, fused kernels or part-by-part streaming.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc

from segment1b.contracts import path_for
from segment1b.errors import InputError, IntegrityError
from segment1b.population_proxy import ProxyParams, proxy_masses_inplace
from segment1b.storage import Storage

U64_MAX = 2**64 - 1


def allocate_reference(tile_id, weight_fp, n: int, dp: int) -> dict[int, int]:
    """S4 (contract §6) for one pair over ALL tiles, with Python integers: tile_id -> n_sites_tile.

    >>> allocate_reference([1, 2], [700, 300], 5, dp=3)
    {1: 4, 2: 1}
    """
    K = 10**dp
    rows = []
    for t, w in zip(tile_id, weight_fp):
        t, w = int(t), int(w)
        if w == 0:
            continue
        prod = w * n
        if prod > U64_MAX:
            raise InputError("E416_NUMERIC_OVERFLOW", f"weight_fp {w} × n_sites {n} exceeds 2^64 − 1")
        rows.append((t, prod // K, prod % K))
    S = n - sum(z for _, z, _ in rows)
    counts = {t: z for t, z, _ in rows}
    for t, _, _ in sorted(rows, key=lambda x: (-x[2], x[0]))[:S]:
        counts[t] += 1
    return {t: c for t, c in sorted(counts.items()) if c > 0}


def assignment_reference(uniforms: list[float], slots: list[int]) -> list[int]:
    """The S5 rule (contract §7) on plain lists: the tile of each site_order 1..N.

    >>> assignment_reference([0.7, 0.2, 0.7], [5, 5, 9])
    [5, 5, 9]
    """
    order = sorted(range(len(uniforms)), key=lambda i: (uniforms[i], i + 1))
    out = [0] * len(uniforms)
    for k, i in enumerate(order):
        out[i] = sorted(slots)[k]
    return out


def proxy_masses(area: np.ndarray, kernel_idx: np.ndarray, kernel_mass: np.ndarray, town_total: float,
                 area_sum: float, params: ProxyParams, land_idx: np.ndarray | None = None,
                 land_share: np.ndarray | None = None) -> np.ndarray:
    """:func:`segment1b.population_proxy.proxy_masses_inplace` on a copy of ``area`` (left unchanged).

    >>> proxy_masses(np.array([1.0, 1.0]), np.array([0]), np.array([9.0]), 10.0, 2.0, ProxyParams()).tolist()
    [9.5, 0.5]
    >>> proxy_masses(np.array([1.0, 1.0, 1.0]), np.array([0]), np.array([9.0]), 10.0, 2.0, ProxyParams(),
    ...              np.array([0, 2]), np.array([0.5, 0.125])).tolist()
    [4.75, 0.5, 0.0]
    """
    return proxy_masses_inplace(area.astype(np.float64, copy=True), kernel_idx, kernel_mass, town_total, area_sum,
                                params, land_idx, land_share)


def area_total(rows_count: np.ndarray, row_area: np.ndarray) -> float:
    """``A_c`` without coast: exact sum (``math.fsum``) of tiles per row x row area."""
    return math.fsum((rows_count.astype(np.float64) * row_area).tolist())


def fk_mismatches(index_ids: np.ndarray, weight_ids: np.ndarray, country_iso: str, limit: int = 20) -> list[dict]:
    """Tiles in one of tile_index / tile_weights but not the other, for one country (E102 rows)."""
    only_index = np.setdiff1d(index_ids, weight_ids, assume_unique=True)
    only_weights = np.setdiff1d(weight_ids, index_ids, assume_unique=True)
    rows = [{"country_iso": country_iso, "tile_id": int(t), "missing_from": "tile_weights"}
            for t in only_index[:limit]]
    rows += [{"country_iso": country_iso, "tile_id": int(t), "missing_from": "tile_index"}
             for t in only_weights[:limit]]
    return rows


def check_published_weights(storage: Storage, parameter_hash: str) -> dict[str, int]:
    """E101/E102 on published data: tile_weights must have exactly the tiles of tile_index, per country.

    Reads the ``country_iso`` and ``tile_id`` columns part by part on the client (parts of both datasets
    share numbers); S9's surface checks (``jobs/validate_surfaces.py``) are the product's version of this.

    Returns
    -------
    dict country_iso -> tiles.

    Raises
    ------
    IntegrityError
        ``E101_TILE_INDEX_MISSING`` when tile_index is not published for ``parameter_hash``;
        ``E102_FK_MISMATCH`` naming tiles present in one dataset only.
    """
    idx_rel = path_for("tile_index", parameter_hash=parameter_hash)
    w_rel = path_for("tile_weights", parameter_hash=parameter_hash)
    if not storage.is_published(idx_rel):
        raise IntegrityError("E101_TILE_INDEX_MISSING", f"tile_index is not published for parameter_hash "
                             f"{parameter_hash}", dataset="tile_index", path=storage.url(idx_rel))
    idx_parts = {p.rsplit("/", 1)[-1]: p for p in storage.parquet_parts(idx_rel)}
    w_parts = {p.rsplit("/", 1)[-1]: p for p in storage.parquet_parts(w_rel)} if storage.is_published(w_rel) else {}
    counts: dict[str, int] = {}
    problems: list[dict] = []
    for name in sorted(set(idx_parts) | set(w_parts)):
        a = storage.read_parquet(idx_parts[name], ["country_iso", "tile_id"], dataset_id="tile_index") \
            if name in idx_parts else None
        b = storage.read_parquet(w_parts[name], ["country_iso", "tile_id"], dataset_id="tile_weights") \
            if name in w_parts else None
        isos = sorted(set(a.column("country_iso").unique().to_pylist() if a is not None else [])
                      | set(b.column("country_iso").unique().to_pylist() if b is not None else []))
        for iso in isos:
            ia, ib = _ids(a, iso), _ids(b, iso)
            counts[iso] = counts.get(iso, 0) + len(ia)
            if len(ia) != len(ib) or not np.array_equal(ia, ib):
                problems += fk_mismatches(ia, ib, iso)
    if problems:
        raise IntegrityError("E102_FK_MISMATCH", "tile_weights and tile_index do not have the same tiles",
                             dataset="tile_weights", path=storage.url(w_rel), rows=problems)
    return counts


def _ids(table, iso: str) -> np.ndarray:
    if table is None:
        return np.zeros(0, dtype=np.uint64)
    return table.filter(pc.equal(table.column("country_iso"), iso)).column("tile_id").to_numpy()


def parts_reference(pairs: list[tuple[int, str, int]], target: int) -> list[tuple[int, int, int, int]]:
    """Parts (merchant_lo, merchant_hi, pairs, sites) of merchant-sorted pairs: a part closes with the
    merchant that brings it to ``target`` sites or more (:func:`jobs.units.plan_parts`)."""
    merchants: dict[int, list[int]] = {}
    for m, _, n in pairs:
        merchants.setdefault(m, []).append(n)
    parts, current = [], []
    for m, sites in merchants.items():
        current.append((m, sites))
        if sum(sum(s) for _, s in current) >= target:
            parts.append(current)
            current = []
    if current:
        parts.append(current)
    return [(p[0][0], p[-1][0], sum(len(s) for _, s in p), sum(sum(s) for _, s in p)) for p in parts]


def units_reference(pairs: list[tuple[int, str, int]], part_his: list[int], *, max_unit_sites: int = 250_000,
                    min_unit_sites: int = 2_000, skew: float = 4.0, workers: int = 1, named: int = 10,
                    named_share: float = 0.01, per_worker: int = 16) -> list[tuple]:
    """The units of merchant-sorted ``pairs`` as :func:`jobs.units.plan_units` planned them when units held
    their pairs (before issue 17), with plain lists: ``(label, part, chunk, ((iso, merchants, n_sites), ...))``
    in plan order (largest cost first).  ``part_his``: each part's last merchant."""
    groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for m, iso, n in pairs:
        part = next(i for i, hi in enumerate(part_his) if m <= hi)
        groups.setdefault((iso, part), []).append((m, n))
    if not groups:
        return []
    sites_of = {key: sum(n for _, n in g) for key, g in groups.items()}
    by_country: dict[str, int] = {}
    for (iso, _), s in sites_of.items():
        by_country[iso] = by_country.get(iso, 0) + s
    total = sum(by_country.values())
    own = set(sorted((c for c in by_country if by_country[c] >= named_share * total),
                     key=lambda c: (-by_country[c], c))[:named])
    target = int(min(max_unit_sites, max(min_unit_sites, skew * float(np.median(list(sites_of.values()))),
                                         total / (per_worker * workers))))
    units, chunks = [], {}

    def add(label, part, segments):
        chunks[label] = chunks.get(label, -1) + 1
        units.append((label, part, chunks[label], tuple(segments)))

    def segment(iso, rows):
        return iso, tuple(m for m, _ in rows), tuple(n for _, n in rows)

    for part in sorted({p for _, p in groups}):
        pack = []
        for iso in sorted(c for c, p in groups if p == part):
            rows = groups[(iso, part)]
            if sites_of[(iso, part)] * 4 >= target or iso in own:
                pieces: dict[int, list] = {}
                before = 0
                for m, n in rows:  # a piece closes after the pair that reaches the target
                    pieces.setdefault(before // target if sites_of[(iso, part)] > target else 0, []).append((m, n))
                    before += n
                for piece in pieces.values():
                    add(iso, part, [segment(iso, piece)])
                continue
            if sum(sum(s[2]) for s in pack) + sites_of[(iso, part)] > target:
                if pack:
                    add(SMALL if len(pack) > 1 else pack[0][0], part, pack)
                pack = []
            pack.append(segment(iso, rows))
        if pack:
            add(SMALL if len(pack) > 1 else pack[0][0], part, pack)

    def cost(u):
        return sum(sum(s[2]) for s in u[3]) + 4 * sum(len(s[1]) for s in u[3])

    return sorted(units, key=lambda u: (-cost(u), u[0], u[2]))


SMALL = "small"
