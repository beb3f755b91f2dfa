"""S9 validation: every check that can be made from the published files, and the bundle format (contract §10).

The checks are pure functions of tables, parsed event columns and scalars; ``jobs/validate.py`` reads the
files (part by part, on the workers), calls :func:`check_part_tables` and :func:`check_part_events` per
part and the global checks once, and publishes the bundle.  A check never raises on bad data: it records
a *finding* (check name, failure code, message, count, up to :data:`MAX_EXAMPLES` example rows) in a
:class:`Findings`, so one validation reports every problem it can see, not only the first.

Checks and their codes (the single table is :data:`CHECKS`):

==================== ============================== ===================================================
check                code(s)                        what
==================== ============================== ===================================================
files                E901 / E902 / E904             every part index has its file in S4, S5, S6, S7, S8
                                                    and both event logs; no stray files; readable
schema               E904                           exact columns, order, Arrow types, no nulls
value_range          E904                           lon/lat ranges, ISO uppercase, site_order ≥ 1, deltas
sort                 E906                           writer-sort order within and across parts
unique_keys          E903                           no key twice (within and across parts)
egress_parity        E901 / E902                    site_locations = S7 minus tile_id, row for row
synthesis_parity     E901 / E902                    S7 = S5 ⋈ S6 with lon/lat = centroid + delta
catalogue_coverage   E901 / E902                    site keys = outlet catalogue keys
row_counts           E901 / E902                    rows = catalogue rows = Σ S3 n_sites
surface_tiles        E101 / E102                    tile_index, tile_bounds and tile_weights published with
                                                    the same (country, tile) set, part by part
surface_weights      E105                           per country Σ weight_fp = 10^dp, one dp, the run's
plan_quota           E404 / E503                    every pair's S4 plan sums to its S3 n_sites; S5 puts
                                                    exactly n_sites_tile sites on each planned tile
plan_recompute       E404 / E416 / E101             on a sample of pairs, S4 = largest remainder
                                                    recomputed over ALL the country's tile weights
path_embed           E905                           lineage columns and envelopes = path tokens
identity_coherence   E912                           one run_id and identity across logs, receipt, params
rng_s5               E907                           one S5 event per site, its tile, counters, u
rng_s6               E907                           S6 attempts 1..a, last accepted, counters, draws,
                                                    rejections really outside, deltas = dataset's
rng_totals           E907                           per-family totals = final trace row
rng_audit            E907 / E912                    exactly one audit record with the run's identity
point_in_pixel       E707                           every S7 point in its tile (S7's own code)
point_in_country     E608                           every S7 point in its country polygon (S6's code:
                                                    E9xx has no geometry code)
finality             E911                           partition digests (tile surfaces, S4-S8) = run-report
                                                    receipts; egress unchanged while validating
bundle               E908 / E909 / E910 / E913      bundle complete, index and flag verify, published
==================== ============================== ===================================================

Bundle format (shared with ``validation_bundle_1A``, see :mod:`segment1b.s0_gate`): ``index.json`` lists
``{artifact_id, path, sha256_hex}`` of the other files sorted by path; ``_passed.flag`` is
``sha256_hex = <SHA-256 over the indexed files' bytes in ASCII path order>``.  Bundle files are
deterministic (sorted keys, no timestamps or build commit), so validating the same published bytes twice
gives the same bundle and the second publish is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import shapely

from . import rng
from .contracts import DatasetSpec
from .errors import IntegrityError
from .grid import Grid
from .keys import SiteKeys, iso_is_upper, iso_of, iso_text, iso_u16

__all__ = [
    "CHECKS", "MAX_EXAMPLES", "VALIDATOR_VERSION", "Findings", "Expect", "EventColumns", "parse_events",
    "check_schema", "check_part_tables", "check_part_events", "check_across_parts", "check_trace",
    "check_audit", "check_row_counts", "check_part_plan", "check_plan_recompute", "allocate_all_tiles",
    "plan_sample_rank", "plan_sample_salt", "SURFACES", "SURFACE_COLUMNS", "check_part_surfaces",
    "weight_sums", "check_weight_sums",
    "check_receipts", "bundle_files", "bundle_digest", "render_flag", "verify_bundle", "verify_egress",
    "BUNDLE_MEMBERS", "INDEX_NAME", "FLAG_NAME",
]

#: Bumped when the checks or the bundle layout change (recorded in MANIFEST.json).  3: the tile surfaces are
#: checked and listed, every input lists its files (issue 14).
VALIDATOR_VERSION = 3
MAX_EXAMPLES = 20

#: check name -> (codes it can report, what it verifies); the order of s9_summary.json.
CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "files": (("E901_ROW_MISSING", "E902_ROW_EXTRA", "E904_EGRESS_SCHEMA"),
              "every part index has its file in S4, S5, S6, S7, site_locations and both RNG event logs; no stray "
              "files; every file is readable"),
    "schema": (("E904_EGRESS_SCHEMA",), "exact contract columns, order and Arrow types, no nulls"),
    "value_range": (("E904_EGRESS_SCHEMA",),
                    "lon in [-180, 180], lat in [-90, 90], uppercase ISO, site_order >= 1, "
                    "jitter deltas in [-1, 1]"),
    "sort": (("E906_SORT",),
             "writer-sort order (merchant_id, legal_country_iso, site_order) within and across parts"),
    "unique_keys": (("E903_DUP_KEY",), "no site key occurs twice, within or across parts"),
    "egress_parity": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                      "site_locations equals S7 minus tile_id, row for row"),
    "synthesis_parity": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                         "S7 rows are S5 joined with S6, at centroid + delta, with the S5 tile"),
    "catalogue_coverage": (("E901_ROW_MISSING", "E902_ROW_EXTRA"), "site keys equal the outlet catalogue's"),
    "row_counts": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                   "site_locations rows = outlet catalogue rows = sum of S3 n_sites"),
    "surface_tiles": (("E101_TILE_INDEX_MISSING", "E102_FK_MISMATCH"),
                      "tile_index, tile_bounds and tile_weights are published and hold the same "
                      "(country_iso, tile_id) set, part by part, each tile once"),
    "surface_weights": (("E105_NORMALIZATION",),
                        "per country, the tile_weights weight_fp sum to exactly 10^dp, with one dp: the "
                        "run's"),
    "plan_quota": (("E404_ALLOCATION_MISMATCH", "E503_TILE_QUOTA_MISMATCH"),
                   "every (merchant, country) pair's s4_alloc_plan rows have n_sites_tile >= 1 and sum to its "
                   "s3_requirements n_sites; S5 assigns exactly n_sites_tile sites to each planned tile"),
    "plan_recompute": (("E404_ALLOCATION_MISMATCH", "E416_NUMERIC_OVERFLOW", "E101_TILE_INDEX_MISSING"),
                       "on a sample of pairs (and the largest pair), s4_alloc_plan equals the largest "
                       "remainder recomputed independently over all of the country's tile weights"),
    "path_embed": (("E905_IDENTITY",), "lineage columns and RNG envelopes equal the path tokens"),
    "identity_coherence": (("E912_IDENTITY_COHERENCE",), "one run_id and one identity across events, audit, "
                           "trace, run receipt and parameters"),
    "rng_s5": (("E907_RNG_BUDGET",), "exactly one site_tile_assign event per site with its tile, counter = "
               "substream + site_order - 1, after - before = blocks = 1, draws = 1, u = the Philox draw"),
    "rng_s6": (("E907_RNG_BUDGET",), "in_cell_jitter attempts 1..a per site, only the last accepted, "
               "counters, draws = 2, deltas = the Philox draw, rejected points outside pixel or country, "
               "accepted deltas = s6_site_jitter"),
    "rng_totals": (("E907_RNG_BUDGET",), "events, draws and blocks per family equal the final trace row"),
    "rng_audit": (("E907_RNG_BUDGET", "E912_IDENTITY_COHERENCE"),
                  "exactly one audit record, with the run's identity"),
    "point_in_pixel": (("E707_POINT_OUTSIDE_PIXEL",), "every S7 point is inside its tile"),
    "point_in_country": (("E608_POINT_OUTSIDE_COUNTRY",),
                         "every S7 point is inside (or on) its country polygon"),
    "finality": (("E911_FINALITY",),
                 "partition digests (tile_index, tile_bounds, tile_weights, S4-S8) equal the receipts of the "
                 "S1-S8 run reports; site_locations did not change while being validated"),
    "bundle": (("E908_BUNDLE_CONTENTS", "E909_INDEX", "E910_FLAG", "E913_PUBLISH"),
               "bundle complete, index.json and _passed.flag verify, bundle published"),
}

INDEX_NAME = "index.json"
FLAG_NAME = "_passed.flag"
#: bundle member path -> artifact_id
BUNDLE_MEMBERS = {"MANIFEST.json": "manifest", "egress_checksums.json": "egress_checksums",
                  "rng_accounting.json": "rng_accounting", "s9_summary.json": "s9_summary"}
_FLAG = re.compile(rb"\Asha256_hex = ([0-9a-f]{64})\n?\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_TS_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
S5, S6, S7, S8 = "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis", "site_locations"
DATASETS = (S5, S6, S7, S8)
S4 = "s4_alloc_plan"
_U64_MAX = 2**64 - 1
#: the S1/S2 tile surfaces; their parts share part numbers (one unit of S1 = one part of each)
SURFACES = ("tile_index", "tile_bounds", "tile_weights")
#: the only columns S9 reads of each surface
SURFACE_COLUMNS = {"tile_index": ("country_iso", "tile_id"), "tile_bounds": ("country_iso", "tile_id"),
                   "tile_weights": ("country_iso", "tile_id", "weight_fp", "dp")}


# ---------------------------------------------------------------------------------------------------------
# findings


class Findings:
    """Failures found so far, merged by (check, code, message); plain data, so it travels between processes.

    >>> f = Findings()
    >>> f.add("sort", "E906_SORT", "rows out of order", 2, [{"part": 0}])
    >>> f.codes()
    ['E906_SORT']
    """

    def __init__(self, items: Iterable[Mapping[str, Any]] = ()):
        self._items: dict[tuple[str, str, str], dict[str, Any]] = {}
        for it in items:
            self.add(it["check"], it["code"], it["message"], it["count"], it["examples"])

    def add(self, check: str, code: str, message: str, count: int = 1,
            examples: Iterable[Mapping] = ()) -> None:
        if check not in CHECKS or code not in CHECKS[check][0]:
            raise ValueError(f"check {check!r} cannot report {code!r}; "
                             "this is a bug in segment1b, please report it")
        if count <= 0:
            return
        item = self._items.setdefault((check, code, message), {"check": check, "code": code,
                                                               "message": message,
                                                               "count": 0, "examples": []})
        item["count"] += int(count)
        room = MAX_EXAMPLES - len(item["examples"])
        if room > 0:
            item["examples"].extend(_jsonable(dict(e)) for e in list(examples)[:room])

    def extend(self, items: Iterable[Mapping[str, Any]]) -> None:
        for it in items:
            self.add(it["check"], it["code"], it["message"], it["count"], it["examples"])

    def to_list(self) -> list[dict[str, Any]]:
        order = list(CHECKS)
        return [self._items[k] for k in sorted(self._items, key=lambda k: (order.index(k[0]), k[1], k[2]))]

    def codes(self) -> list[str]:
        return sorted({k[1] for k in self._items})

    def __bool__(self) -> bool:
        return bool(self._items)

    def summary(self, counts: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One entry per check of :data:`CHECKS`: status, codes and failures (for s9_summary.json)."""
        out = []
        items = self.to_list()
        for name, (codes, what) in CHECKS.items():
            failures = [{k: v for k, v in it.items() if k != "check"} for it in items if it["check"] == name]
            out.append({"check": name, "verifies": what, "status": "FAIL" if failures else "PASS",
                        "codes": sorted({f["code"] for f in failures}), "failures": failures,
                        "counts": dict((counts or {}).get(name, {}))})
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return repr(obj)  # JSON has no NaN/inf
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


@dataclass(frozen=True)
class Expect:
    """The identity the files must carry."""

    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str  # "" when it could not be resolved (already a finding)


# ---------------------------------------------------------------------------------------------------------
# RNG event logs


_NUMERIC = {
    rng.S5_LABEL: ("merchant_id", "legal_country_iso", "site_order", "tile_id", "rng_counter_before_lo",
                   "rng_counter_before_hi", "rng_counter_after_lo", "rng_counter_after_hi", "blocks", "u"),
    rng.S6_LABEL: ("merchant_id", "legal_country_iso", "site_order", "tile_id", "rng_counter_before_lo",
                   "rng_counter_before_hi", "rng_counter_after_lo", "rng_counter_after_hi", "blocks",
                   "attempt_index", "accepted", "delta_lat_deg", "delta_lon_deg"),
}
_MODULE = {rng.S5_LABEL: rng.S5_MODULE, rng.S6_LABEL: rng.S6_MODULE}
_DRAWS = {rng.S5_LABEL: "1", rng.S6_LABEL: "2"}


@dataclass
class EventColumns:
    """The columns of one event-log part that the checks use, plus what the line-level scan found."""

    label: str
    lines: int = 0
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    #: envelope field -> {"count", "examples": [{"line", "value"}]} for values other than expected
    mismatches: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: draws text -> number of events (for the draws total)
    draws: dict[str, int] = field(default_factory=dict)
    run_ids: set[str] = field(default_factory=set)

    def keys(self) -> SiteKeys:
        c = self.columns
        return SiteKeys(c["merchant_id"], c["legal_country_iso"], c["site_order"])


def parse_events(chunks: Iterable[bytes], label: str, expect: Expect) -> EventColumns:
    """Parse event JSON lines chunk by chunk (each chunk whole lines), keeping only what the checks need.

    Blank lines are skipped; ``event`` numbers in the examples count events (1-based) in the file.
    Envelope strings (``ts_utc`` format, ``run_id``, ``seed``, ``parameter_hash``, ``manifest_fingerprint``,
    ``module``, ``substream_label``, ``draws``, the zero sigmas of S6) are compared with their expected
    values per chunk and dropped; mismatches are counted with example line numbers.

    Raises
    ------
    ValueError
        A line is not JSON, has a key that is not in the event schema, misses one or has a value of the
        wrong type (``pyarrow.ArrowInvalid`` is a ``ValueError``).
    """
    schema = rng.EVENT_SCHEMAS[label]
    out = EventColumns(label)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _NUMERIC[label]}
    expected = {"run_id": expect.run_id or None, "seed": expect.seed, "parameter_hash": expect.parameter_hash,
                "manifest_fingerprint": expect.manifest_fingerprint, "module": _MODULE[label],
                "substream_label": label, "draws": _DRAWS[label]}
    if label == rng.S6_LABEL:
        expected.update(sigma_lat_deg=0.0, sigma_lon_deg=0.0)
    for chunk in chunks:
        if not len(chunk):
            continue
        table = pajson.read_json(
            pa.BufferReader(chunk),
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(chunk), 1 << 20)),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"))
        for name in schema.names:
            col = table[name]
            if col.null_count:
                line = out.lines + pc.index(pc.is_null(col), True).as_py() + 1
                raise ValueError(f"event {line} has no {name!r} (or null); every {label} event carries "
                                 f"all of {schema.names}")
        ts_bad = pc.invert(pc.match_substring_regex(table["ts_utc"], _TS_UTC))
        _note_mismatch(out, "ts_utc", ts_bad, table["ts_utc"])
        for name, value in expected.items():
            if value is None:
                continue
            col = table[name]
            bad = pc.not_equal(col, pa.scalar(value, col.type))
            _note_mismatch(out, name, bad, col)
        out.run_ids.update(pc.unique(table["run_id"]).to_pylist()[:100])
        vc = pc.value_counts(table["draws"])
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            out.draws[v] = out.draws.get(v, 0) + int(n)
        for name in _NUMERIC[label]:
            if name == "legal_country_iso":
                try:
                    parts[name].append(iso_u16(table[name]))
                except ValueError as exc:
                    raise ValueError(f"{label} events: {exc}") from None
            else:
                parts[name].append(table[name].to_numpy())
        out.lines += table.num_rows
    empty = {f.name: f.type for f in schema}
    for name, arrays in parts.items():
        if arrays:
            out.columns[name] = np.concatenate(arrays)
        elif name == "legal_country_iso":
            out.columns[name] = np.empty(0, np.uint16)
        else:
            out.columns[name] = np.empty(0, empty[name].to_pandas_dtype())
    return out


def _note_mismatch(out: EventColumns, name: str, bad: pa.ChunkedArray | pa.Array, col) -> None:
    n = pc.sum(bad).as_py() or 0
    if not n:
        return
    idx = np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool))[:MAX_EXAMPLES]
    entry = out.mismatches.setdefault(name, {"count": 0, "examples": []})
    entry["count"] += int(n)
    values = col.take(pa.array(idx)).to_pylist()
    room = MAX_EXAMPLES - len(entry["examples"])
    entry["examples"].extend({"event": out.lines + int(i) + 1, "value": v}
                             for i, v in list(zip(idx, values))[:room])


# ---------------------------------------------------------------------------------------------------------
# per-part checks


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


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def _runs(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts of runs of equal consecutive rows, and the run index of every row."""
    n = len(cols[0])
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    new = np.zeros(n, bool)
    new[0] = True
    for c in cols:
        new[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(new), np.cumsum(new) - 1


def _keys_rows(keys: SiteKeys, idx, part: int, **extra: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for i in np.asarray(idx).ravel()[:MAX_EXAMPLES]:
        row = {"part": part, **keys.row(int(i))}
        for k, v in extra.items():
            row[k] = v[int(i)]
        rows.append(row)
    return rows


def _order_checks(keys: SiteKeys, ds: str, part: int, findings: Findings) -> None:
    down, dup = keys.neighbours()
    if down.size:
        findings.add("sort", "E906_SORT", f"{ds} rows are not in writer-sort order", down.size,
                     _keys_rows(keys, down, part))
    dup = keys.duplicates() if down.size else dup
    if dup.size:
        findings.add("unique_keys", "E903_DUP_KEY", f"{ds} has duplicate site keys", dup.size,
                     _keys_rows(keys, dup, part))


def _parity(a: SiteKeys, b: SiteKeys, check: str, what_missing: str, what_extra: str, part: int,
            findings: Findings) -> tuple[np.ndarray, np.ndarray]:
    """E901 for keys of ``a`` missing from ``b``, E902 for keys of ``b`` not in ``a``; return the matches."""
    if a.equals(b):
        both = np.arange(len(a))
        return both, both
    missing, extra = a.diff(b)
    findings.add(check, "E901_ROW_MISSING", what_missing, missing.size, _keys_rows(a, missing, part))
    findings.add(check, "E902_ROW_EXTRA", what_extra, extra.size, _keys_rows(b, extra, part))
    return a.match(b)


def _dataset_keys(part: int, ds: str, table: pa.Table, findings: Findings | None) -> SiteKeys | None:
    """Keys of a part table with the contract schema; else ``None`` (and, with ``findings``, a finding)."""
    from .contracts import dataset

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
    keys: dict[str, SiteKeys] = {}
    ok: dict[str, pa.Table] = {}
    for ds in DATASETS:
        t = tables.get(ds)
        if t is None:
            continue
        summary["rows"][ds] = t.num_rows
        k = _dataset_keys(part, ds, t, findings)
        if k is None:
            continue
        keys[ds], ok[ds] = k, t
        summary["first"][ds], summary["last"][ds] = k.first(), k.last()
        _order_checks(k, ds, part, findings)
        bad_iso = np.flatnonzero(~iso_is_upper(k.iso))
        findings.add("value_range", "E904_EGRESS_SCHEMA", f"{ds} legal_country_iso is not uppercase A-Z",
                     bad_iso.size, _keys_rows(k, bad_iso, part))
        bad_order = np.flatnonzero(k.site_order < 1)
        findings.add("value_range", "E904_EGRESS_SCHEMA", f"{ds} site_order is below 1", bad_order.size,
                     _keys_rows(k, bad_order, part))

    # lineage column vs path token (S6 carries manifest_fingerprint)
    if S6 in ok:
        bad = pc.not_equal(ok[S6]["manifest_fingerprint"], expect.manifest_fingerprint)
        idx = np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False), bool))
        findings.add("path_embed", "E905_IDENTITY",
                     "s6_site_jitter manifest_fingerprint differs from the path token",
                     idx.size, _keys_rows(keys[S6], idx, part, value=np.asarray(
                         ok[S6]["manifest_fingerprint"].to_numpy(zero_copy_only=False))))
        d = {c: np.asarray(ok[S6][c].to_numpy(), np.float64) for c in ("delta_lat_deg", "delta_lon_deg")}
        for c, v in d.items():
            out = np.flatnonzero(~((v >= -1.0) & (v <= 1.0)))
            findings.add("value_range", "E904_EGRESS_SCHEMA", f"s6_site_jitter {c} is outside [-1, 1]",
                         out.size,
                         _keys_rows(keys[S6], out, part, **{c: v}))

    # S7 and egress: ranges, pixel, country, parity
    if S7 in ok:
        t7, k7 = ok[S7], keys[S7]
        tile7 = np.asarray(t7["tile_id"].to_numpy(), np.uint64)
        lon7 = np.asarray(t7["lon_deg"].to_numpy(), np.float64)
        lat7 = np.asarray(t7["lat_deg"].to_numpy(), np.float64)
        _range_checks(S7, k7, lon7, lat7, part, findings)
        _pixel_check(grid, k7, tile7, lon7, lat7, part, findings)
        summary["countries"] = _country_check(geometries, k7, lon7, lat7, part, findings)
        if S8 in ok:
            t8, k8 = ok[S8], keys[S8]
            lon8 = np.asarray(t8["lon_deg"].to_numpy(), np.float64)
            lat8 = np.asarray(t8["lat_deg"].to_numpy(), np.float64)
            _range_checks(S8, k8, lon8, lat8, part, findings)
            i7, i8 = _parity(k7, k8, "egress_parity", "S7 rows missing from site_locations",
                             "site_locations rows that are not in S7", part, findings)
            diff = np.flatnonzero((_bits(lon7[i7]) != _bits(lon8[i8])) | (_bits(lat7[i7]) != _bits(lat8[i8])))
            findings.add("egress_parity", "E902_ROW_EXTRA", "site_locations lon/lat differ from S7's",
                         diff.size,
                         _keys_rows(k8, i8[diff], part, lon_deg=lon8, lat_deg=lat8))
        if S5 in ok:
            k5 = keys[S5]
            tile5 = np.asarray(ok[S5]["tile_id"].to_numpy(), np.uint64)
            i5, j7 = _parity(k5, k7, "synthesis_parity", "S5 sites missing from S7",
                             "S7 rows without an S5 site",
                             part, findings)
            bad = np.flatnonzero(tile5[i5] != tile7[j7])
            findings.add("synthesis_parity", "E902_ROW_EXTRA", "S7 tile_id differs from the S5 assignment",
                         bad.size,
                         _keys_rows(k7, j7[bad], part, tile_id=tile7))
        if S6 in ok:
            k6, t6 = keys[S6], ok[S6]
            i6, j7 = k6.match(k7)
            tile6 = np.asarray(t6["tile_id"].to_numpy(), np.uint64)
            lon, lat = grid.absolute_point(tile6[i6], t6["delta_lon_deg"].to_numpy()[i6],
                                           t6["delta_lat_deg"].to_numpy()[i6])
            bad = np.flatnonzero((_bits(lon) != _bits(lon7[j7])) | (_bits(lat) != _bits(lat7[j7])))
            findings.add("synthesis_parity", "E902_ROW_EXTRA",
                         "S7 lon/lat is not the S6 tile centroid + S6 deltas",
                         bad.size, _keys_rows(k7, j7[bad], part, lon_deg=lon7, lat_deg=lat7))
    if S5 in keys and S6 in keys:
        k5, k6 = keys[S5], keys[S6]
        i5, i6 = _parity(k5, k6, "synthesis_parity", "S5 sites without an S6 jitter row",
                         "S6 jitter rows without an S5 site", part, findings)
        tile5 = np.asarray(ok[S5]["tile_id"].to_numpy(), np.uint64)
        tile6 = np.asarray(ok[S6]["tile_id"].to_numpy(), np.uint64)
        bad = np.flatnonzero(tile5[i5] != tile6[i6])
        findings.add("synthesis_parity", "E902_ROW_EXTRA", "S6 tile_id differs from the S5 assignment",
                     bad.size,
                     _keys_rows(k6, i6[bad], part, tile_id=tile6))
    if catalogue is not None:
        kc = SiteKeys.from_table(catalogue)
        summary["catalogue_rows"] = len(kc)
        egress = keys.get(S8)
        if egress is not None:
            _parity(kc, egress, "catalogue_coverage", "outlet catalogue sites missing from site_locations",
                    "site_locations rows that are not in the outlet catalogue", part, findings)
    return summary


def check_part_events(part: int, events: EventColumns, table: pa.Table | None, geometries: Mapping[str, Any],
                      grid: Grid, expect: Expect, master: bytes, findings: Findings) -> dict[str, Any]:
    """RNG accounting of one part's event file against its dataset part (S5 for ``site_tile_assign``, S6 for
    ``in_cell_jitter``).

    Parameters
    ----------
    part : int
    events : EventColumns
        From :func:`parse_events`.
    table : pyarrow.Table or None
        The S5 (or S6) part; ``None`` (missing, unreadable or wrong schema: already a finding of the dataset
        checks) limits the checks to the events themselves.
    geometries : mapping
        ISO -> country geometry (S6: rejected attempts must be outside pixel or country).
    grid, expect : Grid, Expect
    master : bytes
        :func:`segment1b.rng.master_material` of the run.
    findings : Findings

    Returns
    -------
    dict
        ``events``, ``draws``, ``blocks``, ``run_ids`` and, for S6, ``attempt_histogram``.
    """
    ds = S5 if events.label == rng.S5_LABEL else S6
    keys = _dataset_keys(part, ds, table, None) if table is not None else None
    summary = _envelope_findings(events, part, findings)
    if events.label == rng.S5_LABEL:
        _check_s5_events(events, keys, table if keys is not None else None, master, expect, part, findings)
    else:
        summary["attempt_histogram"] = _check_s6_events(events, keys, table if keys is not None else None,
                                                        geometries, grid, master, expect, part, findings)
    return summary


def _range_checks(ds: str, keys: SiteKeys, lon: np.ndarray, lat: np.ndarray, part: int,
                  findings: Findings) -> None:
    bad = np.flatnonzero(~((lon >= -180.0) & (lon <= 180.0) & (lat >= -90.0) & (lat <= 90.0)))
    findings.add("value_range", "E904_EGRESS_SCHEMA",
                 f"{ds} lon/lat outside [-180, 180] x [-90, 90] (or not finite)",
                 bad.size, _keys_rows(keys, bad, part, lon_deg=lon, lat_deg=lat))


def _pixel_check(grid: Grid, keys: SiteKeys, tile: np.ndarray, lon: np.ndarray, lat: np.ndarray, part: int,
                 findings: Findings) -> None:
    valid = tile < np.uint64(grid.n_cells)
    inside = np.zeros(len(tile), bool)
    inside[valid] = grid.contains_point(tile[valid], lon[valid], lat[valid])
    bad = np.flatnonzero(~inside)
    findings.add("point_in_pixel", "E707_POINT_OUTSIDE_PIXEL",
                 "S7 point is outside its tile (or the tile is not "
                 "on the grid)", bad.size, _keys_rows(keys, bad, part, tile_id=tile, lon_deg=lon,
                                                      lat_deg=lat))


def _country_check(geometries: Mapping[str, Any], keys: SiteKeys, lon: np.ndarray, lat: np.ndarray, part: int,
                   findings: Findings) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not len(keys):
        return counts
    order = np.argsort(keys.iso, kind="stable")
    starts, _ = _runs(keys.iso[order])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        idx = order[a:b]
        code = int(keys.iso[idx[0]])
        iso = iso_of(code)
        counts[iso] = int(b - a)
        geom = geometries.get(iso)
        if geom is None:
            findings.add("point_in_country", "E608_POINT_OUTSIDE_COUNTRY",
                         "no reference polygon for the country "
                         "(so no point of it can be inside)", idx.size, _keys_rows(keys, idx, part))
            continue
        inside = shapely.intersects_xy(geom, lon[idx], lat[idx])
        bad = idx[~inside]
        findings.add("point_in_country", "E608_POINT_OUTSIDE_COUNTRY",
                     "S7 point is outside its country polygon",
                     bad.size, _keys_rows(keys, bad, part, lon_deg=lon, lat_deg=lat))
    return counts


_ENVELOPE_CODES = {"run_id": ("path_embed", "E905_IDENTITY"), "seed": ("path_embed", "E905_IDENTITY"),
                   "parameter_hash": ("path_embed", "E905_IDENTITY"),
                   "manifest_fingerprint": ("identity_coherence", "E912_IDENTITY_COHERENCE")}


def _envelope_findings(ev: EventColumns, part: int, findings: Findings) -> dict[str, Any]:
    check_rng = "rng_s5" if ev.label == rng.S5_LABEL else "rng_s6"
    for name, m in sorted(ev.mismatches.items()):
        check, code = _ENVELOPE_CODES.get(name, (check_rng, "E907_RNG_BUDGET"))
        findings.add(check, code, f"{ev.label} events: {name} differs from the expected value", m["count"],
                     [{"part": part, "field": name, **e} for e in m["examples"]])
    try:
        draws = sum(int(v) * n for v, n in ev.draws.items())
    except ValueError:
        draws = None
        findings.add(check_rng, "E907_RNG_BUDGET", f"{ev.label} events: draws is not a decimal integer", 1,
                     [{"part": part, "draws_values": sorted(ev.draws)}])
    blocks = int(ev.columns["blocks"].sum(dtype=np.uint64)) if ev.lines else 0
    return {"events": ev.lines, "draws": draws, "blocks": blocks, "run_ids": sorted(ev.run_ids)}


def _counter_checks(check: str, label: str, keys: SiteKeys, c: Mapping[str, np.ndarray], exp_hi: np.ndarray,
                    exp_lo: np.ndarray, part: int, findings: Findings) -> None:
    bhi, blo = c["rng_counter_before_hi"], c["rng_counter_before_lo"]
    ahi, alo = c["rng_counter_after_hi"], c["rng_counter_after_lo"]
    bad = np.flatnonzero((bhi != exp_hi) | (blo != exp_lo))
    findings.add(check, "E907_RNG_BUDGET", f"{label} counter_before is not the substream start + offset",
                 bad.size,
                 _keys_rows(keys, bad, part, before_hi=bhi, before_lo=blo, expected_hi=exp_hi,
                            expected_lo=exp_lo))
    nhi, nlo = rng.counter_add(bhi, blo, 1)
    bad = np.flatnonzero((ahi != nhi) | (alo != nlo) | (c["blocks"] != 1))
    findings.add(check, "E907_RNG_BUDGET", f"{label} after - before != blocks or blocks != 1", bad.size,
                 _keys_rows(keys, bad, part, blocks=c["blocks"], after_hi=ahi, after_lo=alo))


def _check_s5_events(ev: EventColumns, k5: SiteKeys | None, t5: pa.Table | None, master: bytes,
                     expect: Expect,
                     part: int, findings: Findings) -> None:
    c, ke = ev.columns, ev.keys()
    if k5 is not None:
        dup = ke.duplicates()
        findings.add("rng_s5", "E907_RNG_BUDGET", "more than one site_tile_assign event for a site", dup.size,
                     _keys_rows(ke, dup, part))
        missing, extra = k5.diff(ke)
        findings.add("rng_s5", "E907_RNG_BUDGET", "S5 site without a site_tile_assign event", missing.size,
                     _keys_rows(k5, missing, part))
        findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign event without an S5 site",
                     extra.size - dup.size,
                     _keys_rows(ke, np.setdiff1d(extra, dup), part))
        i5, ie = k5.match(ke)
        tile5 = np.asarray(t5["tile_id"].to_numpy(), np.uint64)
        bad = np.flatnonzero(tile5[i5] != c["tile_id"][ie])
        findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign event tile_id differs from S5's",
                     bad.size,
                     _keys_rows(ke, ie[bad], part, event_tile_id=c["tile_id"]))
    if not ev.lines:
        return
    # counters and draws from each event's own key: one substream per (merchant, country) run
    starts, run = _runs(c["merchant_id"], c["legal_country_iso"])
    key, hi, lo = rng.s5_substreams(master, c["merchant_id"][starts],
                                    iso_text(c["legal_country_iso"][starts]),
                                    expect.parameter_hash)
    offset = np.maximum(c["site_order"], 1).astype(np.uint64) - np.uint64(1)
    exp_hi, exp_lo = rng.counter_add(hi[run], lo[run], offset)
    _counter_checks("rng_s5", rng.S5_LABEL, ke, c, exp_hi, exp_lo, part, findings)
    x0, _ = rng.philox2x64_10(key[run], exp_hi, exp_lo)
    u = rng.u01(x0)
    bad = np.flatnonzero(_bits(u) != _bits(c["u"]))
    findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign u is not the Philox draw at its counter",
                 bad.size,
                 _keys_rows(ke, bad, part, u=c["u"], expected_u=u))


def _check_s6_events(ev: EventColumns, k6: SiteKeys | None, t6: pa.Table | None,
                     geometries: Mapping[str, Any],
                     grid: Grid, master: bytes, expect: Expect, part: int,
                     findings: Findings) -> dict[str, int]:
    c, ke = ev.columns, ev.keys()
    attempt = c["attempt_index"]
    down, _ = ke.neighbours()
    if down.size:
        findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter events are not in site order", down.size,
                     _keys_rows(ke, down, part))
        order = np.lexsort((attempt, ke.site_order, ke.iso, ke.merchant_id))
        c = {k: v[order] for k, v in c.items()}
        ke, attempt = ke.take(order), attempt[order]
    starts, run = _runs(c["merchant_id"], c["legal_country_iso"], c["site_order"])
    sites = ke.take(starts)
    sizes = np.diff(np.r_[starts, len(attempt)])
    rank = np.arange(len(attempt)) - (starts[run] if len(starts) else 0)
    bad = np.flatnonzero(attempt != rank + 1)
    findings.add("rng_s6", "E907_RNG_BUDGET", "attempt_index is not 1..a consecutive for a site", bad.size,
                 _keys_rows(ke, bad, part, attempt_index=attempt))
    last = np.zeros(len(attempt), bool)
    if len(starts):
        last[starts + sizes - 1] = True
    bad = np.flatnonzero(c["accepted"] != last)
    findings.add("rng_s6", "E907_RNG_BUDGET", "accepted is not exactly the last attempt of a site", bad.size,
                 _keys_rows(ke, bad, part, attempt_index=attempt, accepted=c["accepted"]))
    if k6 is not None:
        missing, extra = k6.diff(sites)
        findings.add("rng_s6", "E907_RNG_BUDGET", "S6 site without in_cell_jitter events", missing.size,
                     _keys_rows(k6, missing, part))
        findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter events without an S6 site", extra.size,
                     _keys_rows(sites, extra, part))
        i6, js = k6.match(sites)
        fin = starts[js] + sizes[js] - 1  # the final (accepted) event of each matched site
        d6 = {k: np.asarray(t6[k].to_numpy(), np.float64) for k in ("delta_lat_deg", "delta_lon_deg")}
        bad = np.flatnonzero((_bits(d6["delta_lat_deg"][i6]) != _bits(c["delta_lat_deg"][fin]))
                             | (_bits(d6["delta_lon_deg"][i6]) != _bits(c["delta_lon_deg"][fin])))
        findings.add("rng_s6", "E907_RNG_BUDGET", "accepted in_cell_jitter deltas differ from s6_site_jitter",
                     bad.size, _keys_rows(k6, i6[bad], part, **d6))
        tile6 = np.asarray(t6["tile_id"].to_numpy(), np.uint64)
        ev_site_tile = np.full(len(sites), np.uint64(0))
        known = np.zeros(len(sites), bool)
        ev_site_tile[js], known[js] = tile6[i6], True
        bad = np.flatnonzero(known[run] & (c["tile_id"] != ev_site_tile[run]))
        findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter event tile_id differs from s6_site_jitter",
                     bad.size,
                     _keys_rows(ke, bad, part, event_tile_id=c["tile_id"]))
    hist = {str(int(a)): int(n) for a, n in zip(*np.unique(sizes, return_counts=True))} if len(sizes) else {}
    if not ev.lines:
        return hist
    key, hi, lo = rng.s6_substreams(master, sites.merchant_id, iso_text(sites.iso),
                                    np.maximum(sites.site_order, 0).astype(np.uint64), expect.parameter_hash)
    offset = np.maximum(attempt, 1).astype(np.uint64) - np.uint64(1)
    exp_hi, exp_lo = rng.counter_add(hi[run], lo[run], offset)
    _counter_checks("rng_s6", rng.S6_LABEL, ke, c, exp_hi, exp_lo, part, findings)
    tile = c["tile_id"]
    on_grid = tile < np.uint64(grid.n_cells)
    bad = np.flatnonzero(~on_grid)
    findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter event tile_id is not on the grid", bad.size,
                 _keys_rows(ke, bad, part, event_tile_id=tile))
    x0, x1 = rng.philox2x64_10(key[run], exp_hi, exp_lo)
    safe_tile = np.where(on_grid, tile, np.uint64(0))
    dlon, dlat = grid.jitter_deltas(safe_tile, rng.u01(x0), rng.u01(x1))
    differs = (_bits(dlon) != _bits(c["delta_lon_deg"])) | (_bits(dlat) != _bits(c["delta_lat_deg"]))
    bad = np.flatnonzero(on_grid & differs)
    findings.add("rng_s6", "E907_RNG_BUDGET",
                 "in_cell_jitter deltas are not the Philox draw at their counter",
                 bad.size, _keys_rows(ke, bad, part, delta_lon_deg=c["delta_lon_deg"],
                                      delta_lat_deg=c["delta_lat_deg"]))
    # a rejected attempt must really be outside the pixel or the country (contract §8)
    rej = np.flatnonzero(~c["accepted"] & on_grid)
    if rej.size:
        lon, lat = grid.absolute_point(tile[rej], c["delta_lon_deg"][rej], c["delta_lat_deg"][rej])
        ok = grid.contains_point(tile[rej], lon, lat)
        iso = ke.iso[rej]
        for code in np.unique(iso[ok]):
            name = iso_of(code)
            geom = geometries.get(name)
            sel = np.flatnonzero(ok & (iso == code))
            ok[sel] = False if geom is None else shapely.intersects_xy(geom, lon[sel], lat[sel])
        bad = rej[ok]
        findings.add("rng_s6", "E907_RNG_BUDGET",
                     "a rejected in_cell_jitter attempt is inside both its pixel and "
                     "its country", bad.size, _keys_rows(ke, bad, part, attempt_index=attempt))
    return hist


# ---------------------------------------------------------------------------------------------------------
# global checks


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


def check_trace(trace_bytes: bytes | None, totals: Mapping[str, Mapping[str, int]], expect: Expect,
                findings: Findings) -> dict[str, Any]:
    """Per-family totals (events, draws, blocks over all parts) against the final trace row of each family."""
    out: dict[str, Any] = {}
    if trace_bytes is None:
        findings.add("rng_totals", "E907_RNG_BUDGET", "the RNG trace log is missing", 1, [])
        return out
    rows = []
    for n, line in enumerate(trace_bytes.splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            rows.append(row)
        except ValueError as exc:
            findings.add("rng_totals", "E907_RNG_BUDGET", "an RNG trace line is not a JSON object", 1,
                         [{"line": n, "error": str(exc)}])
    for n, row in enumerate(rows, 1):
        for name in ("run_id", "seed", "parameter_hash", "manifest_fingerprint"):
            want = getattr(expect, name)
            if want != "" and row.get(name) != want:
                findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                             f"RNG trace {name} differs from the run's",
                             1, [{"line": n, "value": row.get(name), "expected": want}])
    for label, module in _MODULE.items():
        fam = [r for r in rows if r.get("substream_label") == label and r.get("module") == module]
        got = totals.get(label, {"events": 0, "draws": 0, "blocks": 0})
        if not fam:
            if got.get("events"):
                findings.add("rng_totals", "E907_RNG_BUDGET", f"no trace row for {label}", 1,
                             [{"substream_label": label, "events": got.get("events")}])
            continue
        try:
            final = max(fam, key=lambda r: int(r.get("events_total", -1)))
        except (TypeError, ValueError):
            findings.add("rng_totals", "E907_RNG_BUDGET", f"{label} trace rows have non-integer events_total",
                         1, [])
            continue
        out[label] = {"module": module, "events_total": final.get("events_total"),
                      "draws_total": final.get("draws_total"), "blocks_total": final.get("blocks_total")}
        for name, total in (("events_total", "events"), ("draws_total", "draws"), ("blocks_total", "blocks")):
            if final.get(name) != got.get(total):
                findings.add("rng_totals", "E907_RNG_BUDGET",
                             f"{label} {name} of the final trace row differs from "
                             "the events", 1, [{"substream_label": label, "field": name,
                                                "trace": final.get(name),
                                                "events": got.get(total)}])
    return out


AUDIT_KEYS = ("ts_utc", "run_id", "seed", "manifest_fingerprint", "parameter_hash", "algorithm",
              "build_commit")


def check_audit(audit_bytes: bytes | None, expect: Expect, findings: Findings) -> dict[str, Any] | None:
    """Exactly one audit record (E907) carrying the run's identity and algorithm (E912)."""
    if audit_bytes is None:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit log is missing", 1, [])
        return None
    lines = [line for line in audit_bytes.splitlines() if line.strip()]
    if len(lines) != 1:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit log must hold exactly one record", 1,
                     [{"records": len(lines)}])
        if not lines:
            return None
    try:
        record = json.loads(lines[0])
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit record is not a JSON object", 1,
                     [{"error": str(exc)}])
        return None
    missing = [k for k in AUDIT_KEYS if k not in record]
    if missing:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit record misses fields", 1,
                     [{"missing": missing}])
    want = {"run_id": expect.run_id, "seed": expect.seed, "manifest_fingerprint": expect.manifest_fingerprint,
            "parameter_hash": expect.parameter_hash, "algorithm": rng.ALGORITHM}
    for k, v in want.items():
        if v != "" and k in record and record[k] != v:
            findings.add("rng_audit", "E912_IDENTITY_COHERENCE",
                         f"the RNG audit record's {k} differs from the run's",
                         1, [{"field": k, "value": record[k], "expected": v}])
    return record


def check_row_counts(egress_rows: int, catalogue_rows: int | None, s3_sites: int | None,
                     findings: Findings) -> None:
    """site_locations rows against the catalogue's rows and Σ n_sites of S3 (E901 fewer, E902 more)."""
    sources = (("outlet catalogue rows", catalogue_rows), ("sum of s3_requirements n_sites", s3_sites))
    for name, expected in sources:
        if expected is None or expected == egress_rows:
            continue
        code = "E901_ROW_MISSING" if egress_rows < expected else "E902_ROW_EXTRA"
        findings.add("row_counts", code, f"site_locations rows differ from the {name}",
                     abs(egress_rows - expected),
                     [{"site_locations_rows": egress_rows, "expected": expected, "source": name}])


def check_receipts(digests: Mapping[str, str | None], receipts: Mapping[str, Mapping[str, Any] | None],
                   findings: Findings) -> None:
    """E911 where a partition's digest differs from the receipt its state's run report recorded."""
    for ds, actual in sorted(digests.items()):
        rec = receipts.get(ds)
        if rec is None:
            findings.add("finality", "E911_FINALITY",
                         f"no determinism receipt for {ds} (run report missing)", 1,
                         [{"dataset": ds}])
        elif actual is not None and rec.get("sha256_hex") != actual:
            findings.add("finality", "E911_FINALITY", f"{ds} bytes differ from the receipt of its run report "
                         "(changed after publication)", 1,
                         [{"dataset": ds, "partition_path": rec.get("partition_path"),
                           "receipt_sha256": rec.get("sha256_hex"), "actual_sha256": actual}])


# ---------------------------------------------------------------------------------------------------------
# the tile surfaces (S1/S2): one tile set in all three, weights that sum to 10^dp per country


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


# ---------------------------------------------------------------------------------------------------------
# the S4 allocation plan: quotas on every row, an independent recomputation on a sample


def _pair_keys(table: pa.Table, third: str) -> SiteKeys:
    """(merchant_id, ISO, ``third``) as :class:`SiteKeys` (``third`` in the site_order slot, as int64)."""
    return SiteKeys(np.asarray(table["merchant_id"].to_numpy(), np.uint64), iso_u16(table["legal_country_iso"]),
                    np.asarray(table[third].to_numpy(), np.int64))


def _named(rows: list[dict[str, Any]], third: str) -> list[dict[str, Any]]:
    return [{(third if k == "site_order" else k): v for k, v in r.items()} for r in rows]


def check_part_plan(part: int, plan: pa.Table | None, sites: pa.Table | None, requirements: pa.Table | None,
                    findings: Findings) -> dict[str, Any]:
    """S4 checks of one part on every row: schema, order, n_sites_tile ≥ 1, Σ per pair = S3 n_sites (E404),
    S5 sites per (pair, tile) = n_sites_tile (E503).

    Parameters
    ----------
    part : int
    plan : pyarrow.Table or None
        The ``s4_alloc_plan`` part (``None``: missing or unreadable, already a finding).
    sites : pyarrow.Table or None
        The S5 part (same merchant range); ``None`` skips the quota check.
    requirements : pyarrow.Table or None
        ``s3_requirements`` rows (merchant_id, legal_country_iso, n_sites) of the part's merchant range;
        ``None`` skips the sum check.
    findings : Findings

    Returns
    -------
    dict
        ``rows``, ``pairs`` and ``sites`` (Σ n_sites_tile) of the plan part.
    """
    from .contracts import dataset

    summary = {"rows": 0, "pairs": 0, "sites": 0}
    if plan is None:
        return summary
    summary["rows"] = plan.num_rows
    if not check_schema(plan, dataset(S4), findings, f"{S4}/part-{part:05d}"):
        return summary
    try:
        k4 = _pair_keys(plan, "tile_id")  # tile ids are < 2**63 on every grid
    except ValueError as exc:
        findings.add("value_range", "E904_EGRESS_SCHEMA", f"{S4} legal_country_iso is not two letters", 1,
                     [{"part": part, "error": str(exc)}])
        return summary
    cnt = np.asarray(plan["n_sites_tile"].to_numpy(), np.int64)
    down, dup = k4.neighbours()
    findings.add("sort", "E906_SORT", f"{S4} rows are not in writer-sort order (merchant_id, legal_country_iso, "
                 "tile_id)", down.size, _named(_keys_rows(k4, down, part), "tile_id"))
    dup = k4.duplicates() if down.size else dup
    findings.add("unique_keys", "E903_DUP_KEY", f"{S4} lists a tile twice for one pair", dup.size,
                 _named(_keys_rows(k4, dup, part), "tile_id"))
    low = np.flatnonzero(cnt < 1)
    findings.add("plan_quota", "E404_ALLOCATION_MISMATCH", f"{S4} has rows with n_sites_tile < 1", low.size,
                 _named(_keys_rows(k4, low, part, n_sites_tile=cnt), "tile_id"))
    # Σ n_sites_tile per pair against S3's n_sites, as multisets of (merchant, ISO, sites)
    order = np.lexsort((k4.iso, k4.merchant_id))
    starts, _ = _runs(k4.merchant_id[order], k4.iso[order])
    sums = np.add.reduceat(cnt[order], starts) if starts.size else np.empty(0, np.int64)
    planned = SiteKeys(k4.merchant_id[order][starts], k4.iso[order][starts], sums)
    summary["pairs"], summary["sites"] = int(starts.size), int(cnt.sum())
    if requirements is not None:
        need = _pair_keys(requirements, "n_sites")
        short, extra = need.diff(planned)
        findings.add("plan_quota", "E404_ALLOCATION_MISMATCH",
                     f"s3_requirements pairs whose {S4} rows do not sum to their n_sites (or have none)",
                     short.size, _named(_keys_rows(need, short, part), "n_sites"))
        findings.add("plan_quota", "E404_ALLOCATION_MISMATCH",
                     f"{S4} pairs whose sum (plan_sites) matches no s3_requirements pair",
                     extra.size, _named(_keys_rows(planned, extra, part), "plan_sites"))
    if sites is None or not {"merchant_id", "legal_country_iso", "tile_id"} <= set(sites.column_names):
        return summary
    try:
        k5 = _pair_keys(sites, "tile_id")
    except ValueError:
        return summary  # S5's own checks report it
    per_row = np.clip(cnt, 0, None)
    if int(per_row.sum()) > 2 * len(k5) + 1024:  # do not expand absurd counts into memory
        findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", f"{S4} plans far more sites than S5 assigns", 1,
                     [{"part": part, "plan_sites": int(per_row.sum()), "s5_sites": len(k5)}])
        return summary
    # one slot per planned site, compared with S5's (merchant, ISO, tile) as multisets
    slots = SiteKeys(np.repeat(k4.merchant_id, per_row), np.repeat(k4.iso, per_row),
                     np.repeat(k4.site_order, per_row))
    unfilled, over = slots.diff(k5)
    findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", "planned tile slots that S5 leaves empty",
                 unfilled.size, _named(_keys_rows(slots, unfilled, part), "tile_id"))
    site_order = np.asarray(sites["site_order"].to_numpy(), np.int64) if "site_order" in sites.column_names \
        else np.zeros(len(k5), np.int64)
    findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", "S5 sites on a tile beyond its planned n_sites_tile",
                 over.size, _named(_keys_rows(k5, over, part, site=site_order), "tile_id"))
    return summary


def allocate_all_tiles(tile_id, weight_fp, n: int, dp: int) -> tuple[np.ndarray, np.ndarray]:
    """S4 for one pair in the contract's own words, over ALL of a country's tiles (the validator's reference).

    Shares no code with :mod:`segment1b.s4_alloc_plan` (no weight prefix, no cut-off, no plan shared between
    merchants): ``prod = weight_fp·n``, ``z = prod // K``, ``r = prod % K``, ``S = n − Σz``; +1 to the S
    tiles ranked by (r descending, tile_id ascending); every tile with a count ≥ 1.  Integers only; time
    and memory linear in the country's tiles.

    >>> allocate_all_tiles([1, 2], [700, 300], 5, dp=3)
    (array([1, 2], dtype=uint64), array([4, 1]))

    Returns
    -------
    (numpy.ndarray of uint64, numpy.ndarray of int64)
        tile_id ascending and n_sites_tile.

    Raises
    ------
    IntegrityError
        ``E416_NUMERIC_OVERFLOW`` when weight_fp·n exceeds 2^64 − 1; ``E404_ALLOCATION_MISMATCH`` when the
        weights cannot give n sites (they do not sum to 10^dp).
    """
    t = np.asarray(tile_id, np.uint64)
    w = np.asarray(weight_fp, np.uint64)
    if not w.all():  # only tiles with weight_fp > 0 take part
        keep = np.flatnonzero(w)
        t, w = t[keep], w[keep]
    K = np.uint64(10**dp)
    if n < 0:
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"n_sites {n} is negative")
    if n and w.size and int(w.max()) > _U64_MAX // n:
        raise IntegrityError("E416_NUMERIC_OVERFLOW", f"weight_fp {int(w.max())} × n_sites {n} exceeds 2^64 − 1")
    prod = w * np.uint64(n)
    z = prod // K
    r = np.subtract(prod, z * K, out=prod)  # prod % K (numpy's u64 modulo is several times slower)
    if float(z.sum(dtype=np.float64)) > n + 1:  # Σz would exceed n (and could wrap in uint64)
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"floor shares exceed n_sites {n}: the weights sum "
                             f"above 10^{dp}")
    S = n - int(z.sum(dtype=np.uint64))
    if not 0 <= S <= np.count_nonzero(r):
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"{S} remainder sites for n_sites {n} cannot be "
                             f"given out: the weights do not sum to 10^{dp}")
    plus = np.zeros(t.size, bool)
    if S:
        cut = np.partition(r, r.size - S)[r.size - S]  # the S-th largest remainder
        above = r > cut
        tied = np.flatnonzero(r == cut)
        tied = tied[np.argsort(t[tied], kind="stable")]  # ties at the cut go to the lowest tile_ids
        plus[above] = True
        plus[tied[:S - int(above.sum())]] = True
    keep = np.flatnonzero((z > 0) | plus)
    keep = keep[np.argsort(t[keep], kind="stable")]
    return t[keep], z[keep].astype(np.int64) + plus[keep]


def check_plan_recompute(country_iso: str, tile_id: np.ndarray, weight_fp: np.ndarray, dp: int,
                         pairs: Iterable[Mapping[str, Any]], findings: Findings) -> dict[str, Any]:
    """Compare sampled pairs' published plans with :func:`allocate_all_tiles` over the country's tiles.

    Parameters
    ----------
    country_iso : str
    tile_id, weight_fp : numpy.ndarray
        Every tile of the country from ``tile_weights``.
    dp : int
    pairs : iterable of mapping
        ``merchant_id``, ``n_sites`` (from S3) and the published plan rows ``tile_id``, ``n_sites_tile``.
    findings : Findings

    Returns
    -------
    dict
        ``pairs`` compared, ``mismatched`` pairs, ``tiles`` scanned per pair.
    """
    done = bad = 0
    plans: dict[int, tuple[np.ndarray, np.ndarray] | IntegrityError] = {}  # a pure function of n here
    for p in pairs:
        m, n = int(p["merchant_id"]), int(p["n_sites"])
        done += 1
        row = {"merchant_id": m, "legal_country_iso": country_iso, "n_sites": n}
        if n not in plans:
            try:
                plans[n] = allocate_all_tiles(tile_id, weight_fp, n, dp)
            except IntegrityError as exc:
                plans[n] = exc
        try:
            if isinstance(plans[n], IntegrityError):
                raise plans[n]
            want_t, want_c = plans[n]
        except IntegrityError as exc:
            bad += 1
            findings.add("plan_recompute", exc.code, "the country's tile weights cannot allocate a sampled pair",
                         1, [{**row, "error": exc.message}])
            continue
        got_t = np.asarray(p["tile_id"], np.uint64)
        got_c = np.asarray(p["n_sites_tile"], np.int64)
        if np.array_equal(got_t, want_t) and np.array_equal(got_c, want_c):
            continue
        bad += 1
        tiles = np.union1d(got_t, want_t)
        got = dict(zip(got_t.tolist(), got_c.tolist()))
        want = dict(zip(want_t.tolist(), want_c.tolist()))
        diff = [{**row, "tile_id": t, "n_sites_tile": got.get(t, 0), "expected": want.get(t, 0)}
                for t in tiles.tolist() if got.get(t, 0) != want.get(t, 0)]
        findings.add("plan_recompute", "E404_ALLOCATION_MISMATCH",
                     "s4_alloc_plan differs from largest remainder recomputed over all of the country's tiles",
                     1, diff[:3] or [row])
    return {"country_iso": country_iso, "pairs": done, "mismatched": bad, "tiles": int(len(tile_id)),
            "plans": len(plans)}


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection on u64 with good avalanche), wrapping arithmetic."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def plan_sample_salt(seed: int, manifest_fingerprint: str) -> int:
    """The sample's salt: fixed by the run's identity, so the same files give the same sample (and bundle)."""
    return int.from_bytes(hashlib.sha256(f"1B.s9.plan_sample|{seed}|{manifest_fingerprint}".encode())
                          .digest()[:8], "little")


def plan_sample_rank(merchant_id: np.ndarray, iso: np.ndarray, salt: int) -> np.ndarray:
    """Sampling rank of each pair: a salted hash of (merchant_id, ISO); the pairs with the smallest ranks are
    the sample (uniform over pairs, independent of parts, workers and file layout)."""
    with np.errstate(over="ignore"):
        h = _mix64(np.asarray(merchant_id, np.uint64) ^ np.uint64(salt))
        return _mix64(h ^ np.asarray(iso, np.uint64))


# ---------------------------------------------------------------------------------------------------------
# the bundle


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def render_flag(digest: str) -> bytes:
    """``sha256_hex = <digest>\\n``.

    >>> render_flag("0" * 64)[:14]
    b'sha256_hex = 0'
    """
    if not _HEX64.match(digest):
        raise ValueError(f"digest must be 64 lowercase hex characters; got {digest!r}")
    return f"sha256_hex = {digest}\n".encode("ascii")


def bundle_digest(members: Mapping[str, bytes]) -> str:
    """SHA-256 over the members' bytes in ASCII order of path (what ``_passed.flag`` names)."""
    h = hashlib.sha256()
    for path in sorted(members, key=lambda p: p.encode("utf-8")):
        h.update(members[path])
    return h.hexdigest()


def bundle_files(docs: Mapping[str, Any], *, passed: bool) -> dict[str, bytes]:
    """The bundle: :data:`BUNDLE_MEMBERS` as JSON, ``index.json`` and, when ``passed``, ``_passed.flag``.

    Parameters
    ----------
    docs : mapping
        Member path -> JSON-ready object, for every path of :data:`BUNDLE_MEMBERS`.
    passed : bool

    Raises
    ------
    IntegrityError
        ``E908_BUNDLE_CONTENTS`` when a member is missing or unexpected (a bug in the caller).

    Examples
    --------
    >>> files = bundle_files({p: {} for p in BUNDLE_MEMBERS}, passed=True)
    >>> sorted(files)[:2], verify_bundle(files[INDEX_NAME], files[FLAG_NAME], files.__getitem__) == \\
    ...     bundle_digest({p: files[p] for p in BUNDLE_MEMBERS})
    (['MANIFEST.json', '_passed.flag'], True)
    """
    if set(docs) != set(BUNDLE_MEMBERS):
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"bundle members must be {sorted(BUNDLE_MEMBERS)}, got "
                             f"{sorted(docs)}; this is a bug in segment1b, please report it",
                             dataset="validation_bundle_1B")
    members = {p: _json_bytes(docs[p]) for p in BUNDLE_MEMBERS}
    index = [{"artifact_id": BUNDLE_MEMBERS[p], "path": p, "sha256_hex": hashlib.sha256(b).hexdigest()}
             for p, b in sorted(members.items(), key=lambda kv: kv[0].encode("utf-8"))]
    files = dict(members)
    files[INDEX_NAME] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    if passed:
        files[FLAG_NAME] = render_flag(bundle_digest(members))
    return files


def verify_bundle(index_bytes: bytes | None, flag_bytes: bytes | None, read_file: Callable[[str], bytes], *,
                  where: str = "") -> str:
    """Recompute the flag of a bundle from ``index.json`` and the files; return the digest.

    Parameters
    ----------
    index_bytes, flag_bytes : bytes or None
        ``None`` when the file does not exist.
    read_file : callable
        Path (relative to the bundle) -> bytes; raises ``FileNotFoundError`` for a missing file.
    where : str
        Bundle location for messages.

    Raises
    ------
    IntegrityError
        ``E910_FLAG`` (flag missing or malformed, or its digest differs from the files'), ``E909_INDEX``
        (index missing, malformed, not sorted, a listed file missing or with another digest),
        ``E908_BUNDLE_CONTENTS`` (a required member is not listed).
    """
    ds = "validation_bundle_1B"
    if flag_bytes is None:
        raise IntegrityError("E910_FLAG", f"{FLAG_NAME} is missing: this validation did not pass (or is not "
                             "published)", dataset=ds, path=where or None,
                             hint="run `segment1b validate` and read s9_summary.json of the failed bundle")
    m = _FLAG.match(flag_bytes)
    if not m:
        raise IntegrityError("E910_FLAG",
                             f"{FLAG_NAME} is malformed: expected 'sha256_hex = <64 hex>', found "
                             f"{flag_bytes[:100]!r}", dataset=ds, path=where or None)
    if index_bytes is None:
        raise IntegrityError("E909_INDEX", f"{INDEX_NAME} is missing", dataset=ds, path=where or None)
    try:
        entries = json.loads(index_bytes)
        paths = [e["path"] for e in entries]
        digests = [e["sha256_hex"] for e in entries]
        if not all(isinstance(e, dict) and isinstance(e.get("artifact_id"), str) for e in entries):
            raise TypeError("every entry needs artifact_id")
    except (ValueError, TypeError, KeyError) as exc:
        raise IntegrityError("E909_INDEX",
                             f"{INDEX_NAME} is not a list of {{artifact_id, path, sha256_hex}}: {exc}",
                             dataset=ds, path=where or None) from None
    if paths != sorted(paths, key=lambda p: p.encode("utf-8")) or len(set(paths)) != len(paths):
        raise IntegrityError("E909_INDEX", f"{INDEX_NAME} paths are not unique and sorted", dataset=ds,
                             path=where or None, rows=[{"paths": paths}])
    unsafe = [p for p in paths
              if not isinstance(p, str) or p in (INDEX_NAME, FLAG_NAME) or "/" in p or p.startswith(".")]
    if unsafe:
        raise IntegrityError("E909_INDEX", f"{INDEX_NAME} lists files outside the bundle or itself",
                             dataset=ds, path=where or None, rows=[{"path": p} for p in unsafe])
    missing_members = sorted(set(BUNDLE_MEMBERS) - set(paths))
    if missing_members:
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"{INDEX_NAME} does not list {missing_members}",
                             dataset=ds, path=where or None)
    h = hashlib.sha256()
    for p, want in zip(paths, digests):
        try:
            data = read_file(p)
        except FileNotFoundError:
            raise IntegrityError("E909_INDEX", f"{p} is listed in {INDEX_NAME} but missing", dataset=ds,
                                 path=where or None, rows=[{"path": p}]) from None
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise IntegrityError("E909_INDEX",
                                 f"{p} differs from its {INDEX_NAME} digest (changed after validation)",
                                 dataset=ds, path=where or None,
                                 rows=[{"path": p, "index_sha256": want, "actual_sha256": got}])
        h.update(data)
    actual = h.hexdigest()
    expected = m.group(1).decode("ascii")
    if actual != expected:
        raise IntegrityError("E910_FLAG",
                             f"{FLAG_NAME} says {expected} but the indexed files hash to {actual}",
                             dataset=ds, path=where or None,
                             rows=[{"flag_sha256": expected, "actual_sha256": actual}])
    return actual


def verify_egress(checksums_bytes: bytes, partition_path: str, actual: Mapping[str, str], *,
                  where: str = "") -> None:
    """Check the files of ``site_locations`` (relative path -> sha256) against ``egress_checksums.json``.

    Raises
    ------
    IntegrityError
        ``E910_FLAG`` when the bundle does not vouch for ``partition_path``; ``E911_FINALITY`` when a file
        was added, removed or changed since validation.
    """
    try:
        doc = json.loads(checksums_bytes)
        entry = next(p for p in doc["partitions"] if p.get("partition_path") == partition_path)
        recorded = {f["path"]: f["sha256_hex"] for f in entry["files"]}
    except StopIteration:
        raise IntegrityError("E910_FLAG",
                             f"the bundle does not vouch for {partition_path}", dataset="site_locations",
                             path=where or None, hint="check seed and fingerprint") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("E908_BUNDLE_CONTENTS", f"egress_checksums.json is malformed: {exc}",
                             dataset="validation_bundle_1B", path=where or None) from None
    rows = ([{"path": p, "problem": "missing"} for p in sorted(set(recorded) - set(actual))]
            + [{"path": p, "problem": "not validated"} for p in sorted(set(actual) - set(recorded))]
            + [{"path": p, "problem": "changed", "recorded_sha256": recorded[p], "actual_sha256": actual[p]}
               for p in sorted(set(recorded) & set(actual)) if recorded[p] != actual[p]])
    if rows:
        raise IntegrityError("E911_FINALITY", f"site_locations differs from what the bundle validated "
                             f"({len(rows)} file(s))", dataset="site_locations", path=partition_path,
                             rows=rows, hint="the egress was modified after validation; do not use it, "
                             "re-run the segment")
