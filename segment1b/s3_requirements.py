"""S3 requirements: ``n_sites`` per (merchant_id, legal_country_iso) of the outlet catalogue (contract §5).

The catalogue is read in *units* (consecutive row groups of one part file, in file-name order, which is the
writer-sort order).  Each unit is reduced on its own, in one pass and without a shuffle:

1. :func:`reduce_unit` checks the rows (nulls, lineage columns, ISO codes, sort order, site_order steps)
   and run-length encodes them on (merchant_id, legal_country_iso).  Runs that are wholly inside the
   unit are checked completely; the first and last run may continue in the neighbouring units, so they
   are returned as small :class:`Run` records.
2. :func:`stitch` walks the boundary runs of all units in order (a few records per unit), merges the
   pairs that span units, finishes their checks, and says which runs each unit owns and what the full
   count of a spanning run is.  It also checks the countries against the tile weights (E303).
3. :func:`plan_output` cuts the owned runs into output parts of ``pairs_per_part`` pairs by their global
   position, and :func:`requirements_table` builds one output part from slices of unit runs.  The output
   layout depends only on the pairs, so the bytes are the same for any input part sizes or workers.

Failure codes (each names the part file, the row within it and the key of the offending rows):

- ``E304_SCHEMA_MISMATCH``: a part's footer schema differs from the contract (checked before its data is
  read), or a column has nulls;
- ``E305_PARQUET_UNREADABLE``: a part cannot be read (raised by the storage layer);
- ``E306_TOKEN_MISMATCH``: ``manifest_fingerprint`` or ``global_seed`` differs from the path token;
- ``E302_FK_COUNTRY``: ``legal_country_iso`` or ``home_country_iso`` is not in the ISO table (which is
  uppercase only);
- ``E308_UNSORTED``: rows are not in (merchant_id, legal_country_iso, site_order) order, within or across
  parts;
- ``E314_SITE_ORDER_INTEGRITY``: within a pair site_order is not exactly 1..n: a gap, a duplicate (a
  repeated (merchant_id, legal_country_iso, site_order) key is reported here, as a site_order duplicate,
  rather than as E307), a first site_order other than 1, or ``final_country_outlet_count`` ≠ n (or not
  constant within the pair);
- ``E303_MISSING_WEIGHTS``: a country with sites has no tile weights.

When several checks fail, :func:`first_failure` reports the first code of :data:`CHECK_ORDER` (then the
first unit), with the offending rows of every unit, so the reported failure does not depend on chunking.
Merchant ids are uint64 by schema, so no range check is needed (a signed column is an E304).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Collection, Mapping, Sequence

import numpy as np
import pyarrow as pa

from .contracts import dataset, iso_table
from .errors import InputError, Segment1BError
from .storage import check_schema

__all__ = [
    "READ_COLUMNS", "CHECK_ORDER", "Run", "UnitSummary", "UnitRuns", "Stitched", "iso_codes",
    "check_footer_schema", "reduce_unit", "stitchable", "stitch", "plan_output", "owned_runs", "requirements_table",
    "first_failure",
]

CATALOGUE = "outlet_catalogue"
# the columns S3 reads (site_id, single_vs_multi_flag and raw_nb_outlet_draw are not needed)
READ_COLUMNS = ("manifest_fingerprint", "merchant_id", "home_country_iso", "legal_country_iso",
                "final_country_outlet_count", "site_order", "global_seed")
STRING_COLUMNS = ("manifest_fingerprint", "home_country_iso", "legal_country_iso")
CHECK_ORDER = ("E304_SCHEMA_MISMATCH", "E305_PARQUET_UNREADABLE", "E306_TOKEN_MISMATCH", "E302_FK_COUNTRY",
               "E308_UNSORTED", "E314_SITE_ORDER_INTEGRITY", "E303_MISSING_WEIGHTS")
MAX_FAILURE_ROWS = 100  # offending rows kept per failure (the message gives the total)


@lru_cache(maxsize=1)
def iso_codes() -> tuple[str, ...]:
    """ISO table codes in ascending order: country code ``i`` ↔ ``iso_codes()[i]``, so code order is string order."""
    return tuple(sorted(iso_table()))


@lru_cache(maxsize=1)
def _iso_index() -> dict[str, int]:
    return {c: i for i, c in enumerate(iso_codes())}


# --------------------------------------------------------------------------------------------------------
# results of one unit
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """A run of rows of one pair at the edge of a unit (it may continue in the neighbouring unit)."""

    merchant_id: int
    country: int  # index into iso_codes()
    rows: int
    first_site_order: int
    last_site_order: int
    outlet_count: int  # final_country_outlet_count (constant within the run; checked)
    part: str
    row: int  # row of the run's first row in its part file

    @property
    def key(self) -> tuple[int, int]:
        return (self.merchant_id, self.country)

    def describe(self) -> dict:
        return {"part": self.part, "row": self.row, "merchant_id": self.merchant_id,
                "legal_country_iso": iso_codes()[self.country]}


@dataclass
class UnitSummary:
    """What the client needs from a unit: counts, boundary runs, per-country totals, failures."""

    unit: int
    part: str
    rows: int = 0
    runs: int = 0
    first: Run | None = None
    last: Run | None = None
    sites_by_country: np.ndarray = field(default_factory=lambda: np.zeros(len(iso_codes()), np.int64), repr=False)
    pairs_by_country: np.ndarray = field(default_factory=lambda: np.zeros(len(iso_codes()), np.int64), repr=False)
    failures: list[Segment1BError] = field(default_factory=list)
    seconds: float = 0.0  # wall and CPU time of the task that made it (set by the job)
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class UnitRuns:
    """The pairs of one unit, in order: merchant_id (uint64), country code (uint8), rows (int64)."""

    merchant_id: np.ndarray
    country: np.ndarray
    n_sites: np.ndarray

    @classmethod
    def empty(cls) -> "UnitRuns":
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint8), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.merchant_id)


# --------------------------------------------------------------------------------------------------------
# checks on one unit
# --------------------------------------------------------------------------------------------------------

def check_footer_schema(schema: pa.Schema, *, path: str) -> None:
    """E304 unless a part's Arrow schema (from its footer) has exactly the contract's columns and types.

    Nullability is not compared (nulls are checked in the data).
    """
    check_schema(schema.empty_table(), dataset(CATALOGUE), where=path)


def _fail(code: str, message: str, part: str, rows: list[dict], total: int) -> InputError:
    more = f" ({total} rows; the first {len(rows)} are listed)" if total > len(rows) else ""
    return InputError(code, message + more, dataset=CATALOGUE, path=part, rows=rows)


def _codes(column: pa.ChunkedArray, lookup: Mapping[str, int]) -> np.ndarray:
    """Per row, ``lookup[value]`` or -1; works on dictionary-encoded or plain string columns."""
    out = []
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        lut = np.array([lookup.get(v, -1) for v in chunk.dictionary.to_pylist()] or [-1], dtype=np.int16)
        out.append(lut[chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)])
    return np.concatenate(out) if out else np.empty(0, np.int16)


def _values(column: pa.ChunkedArray, rows: np.ndarray) -> list:
    return column.take(pa.array(rows, pa.int64())).cast(pa.string()).to_pylist() if rows.size else []


def reduce_unit(table: pa.Table, *, unit: int, part: str, row_offset: int, manifest_fingerprint: str,
                seed: int) -> tuple[UnitSummary, UnitRuns]:
    """Check one unit of catalogue rows and run-length encode it on (merchant_id, legal_country_iso).

    Parameters
    ----------
    table : pyarrow.Table
        The :data:`READ_COLUMNS` of consecutive rows of one part (string columns may be dictionary-encoded).
    unit : int
        Position of the unit in reading order.
    part : str
        The part file, for messages.
    row_offset : int
        Row of the unit's first row within the part file.
    manifest_fingerprint, seed
        The path tokens the lineage columns must equal (E306).

    Returns
    -------
    (UnitSummary, UnitRuns)
        ``summary.failures`` lists the contract failures found (then the runs are empty).

    Examples
    --------
    >>> t = pa.table({"manifest_fingerprint": ["f" * 64] * 3, "merchant_id": pa.array([5, 5, 7], pa.uint64()),
    ...               "home_country_iso": ["FR"] * 3, "legal_country_iso": ["FR", "FR", "DE"],
    ...               "final_country_outlet_count": pa.array([2, 2, 1], pa.int32()),
    ...               "site_order": pa.array([1, 2, 1], pa.int32()), "global_seed": pa.array([1] * 3, pa.uint64())})
    >>> s, r = reduce_unit(t, unit=0, part="p", row_offset=0, manifest_fingerprint="f" * 64, seed=1)
    >>> s.failures, r.n_sites.tolist(), [iso_codes()[c] for c in r.country]
    ([], [2, 1], ['FR', 'DE'])
    """
    summary = UnitSummary(unit=unit, part=part, rows=table.num_rows)
    n = table.num_rows
    if n == 0:
        return summary, UnitRuns.empty()

    def rows_at(idx: np.ndarray, **columns) -> list[dict]:
        """Offending rows (at most MAX_FAILURE_ROWS): part, row, then per name the value of ``columns[name](idx)``."""
        idx = idx[:MAX_FAILURE_ROWS]
        out = [{"part": part, "row": row_offset + int(i)} for i in idx]
        for name, values_of in columns.items():
            for rec, v in zip(out, values_of(idx)):
                rec[name] = v.item() if hasattr(v, "item") else v
        return out

    nulls = [{"part": part, "column": c, "nulls": table.column(c).null_count} for c in READ_COLUMNS
             if table.column(c).null_count]
    if nulls:
        summary.failures.append(_fail("E304_SCHEMA_MISMATCH", "outlet_catalogue has nulls in non-null columns",
                                      part, nulls, len(nulls)))
        return summary, UnitRuns.empty()

    merchant = table.column("merchant_id").to_numpy()
    site_order = table.column("site_order").to_numpy().astype(np.int64)

    # E306: lineage columns equal the path tokens
    fp_col, seed_col = table.column("manifest_fingerprint"), table.column("global_seed").to_numpy()
    fp_bad = np.flatnonzero(_codes(fp_col, {manifest_fingerprint: 0}) < 0)
    seed_bad = np.flatnonzero(seed_col != np.uint64(seed))
    if fp_bad.size or seed_bad.size:
        rows = (rows_at(fp_bad, merchant_id=merchant.__getitem__, column=lambda i: ["manifest_fingerprint"] * len(i),
                        value=lambda i: _values(fp_col, i), expected=lambda i: [manifest_fingerprint] * len(i))
                + rows_at(seed_bad, merchant_id=merchant.__getitem__, column=lambda i: ["global_seed"] * len(i),
                          value=seed_col.__getitem__, expected=lambda i: [int(seed)] * len(i)))
        summary.failures.append(_fail(
            "E306_TOKEN_MISMATCH", "lineage columns differ from the path tokens "
            f"(fingerprint={manifest_fingerprint}, seed={seed}): {fp_bad.size} rows in manifest_fingerprint, {seed_bad.size} rows in global_seed",
            part, rows[:MAX_FAILURE_ROWS], int(fp_bad.size + seed_bad.size)))

    # E302: ISO codes in the ISO table (uppercase by construction of the table)
    legal_col, home_col = table.column("legal_country_iso"), table.column("home_country_iso")
    country, home = _codes(legal_col, _iso_index()), _codes(home_col, _iso_index())
    bad_legal, bad_home = np.flatnonzero(country < 0), np.flatnonzero(home < 0)
    if bad_legal.size or bad_home.size:
        rows = (rows_at(bad_legal, merchant_id=merchant.__getitem__, column=lambda i: ["legal_country_iso"] * len(i),
                        value=lambda i: _values(legal_col, i))
                + rows_at(bad_home, merchant_id=merchant.__getitem__, column=lambda i: ["home_country_iso"] * len(i),
                          value=lambda i: _values(home_col, i)))
        summary.failures.append(_fail(
            "E302_FK_COUNTRY", f"country codes are not uppercase ISO 3166-1 alpha-2 codes of the ISO table: "
            f"{bad_legal.size} rows in legal_country_iso, {bad_home.size} in home_country_iso",
            part, rows[:MAX_FAILURE_ROWS], int(bad_legal.size + bad_home.size)))
    if summary.failures:
        return summary, UnitRuns.empty()

    codes = iso_codes()

    def key_rows(idx: np.ndarray, problem) -> list[dict]:
        return rows_at(idx, merchant_id=merchant.__getitem__,
                       legal_country_iso=lambda i: [codes[c] for c in country[i]],
                       site_order=site_order.__getitem__, problem=problem)

    # E308: (merchant_id, country, site_order) non-decreasing; equal keys are site_order duplicates (E314)
    same_m = merchant[1:] == merchant[:-1]
    same_pair = same_m & (country[1:] == country[:-1])
    step = site_order[1:] - site_order[:-1]
    ordered = (merchant[1:] > merchant[:-1]) | (same_m & (country[1:] > country[:-1])) | (same_pair & (step >= 0))
    unsorted = np.flatnonzero(~ordered) + 1
    if unsorted.size:
        def previous(i):
            return [f"row {row_offset + int(j) - 1}: merchant_id={merchant[j - 1]} "
                    f"legal_country_iso={codes[country[j - 1]]} site_order={site_order[j - 1]}" for j in i]
        summary.failures.append(_fail(
            "E308_UNSORTED", "outlet_catalogue rows are not in writer-sort order (merchant_id, legal_country_iso, "
            "site_order): each listed row sorts before the row above it", part,
            key_rows(unsorted, lambda i: [f"sorts before {p}" for p in previous(i)]), int(unsorted.size)))
        return summary, UnitRuns.empty()

    # runs of equal (merchant_id, country)
    starts = np.flatnonzero(np.r_[True, ~same_pair])
    ends = np.r_[starts[1:], n]
    lengths = ends - starts
    outlet_count = table.column("final_country_outlet_count").to_numpy().astype(np.int64)

    # E314 within the unit: steps of exactly 1, constant outlet count; runs that are neither the first nor
    # the last of the unit are complete, so they must start at 1 and have n rows (the edges: see stitch)
    dup = np.flatnonzero(same_pair & (step == 0)) + 1
    gap = np.flatnonzero(same_pair & (step > 1)) + 1
    count_changes = np.flatnonzero(same_pair & (outlet_count[1:] != outlet_count[:-1])) + 1
    inner = np.arange(1, len(starts) - 1)
    not_one = starts[inner[site_order[starts[inner]] != 1]]
    wrong_n = inner[outlet_count[starts[inner]] != lengths[inner]]

    def edge(r: int) -> Run:
        s, e = int(starts[r]), int(ends[r])
        return Run(int(merchant[s]), int(country[s]), e - s, int(site_order[s]), int(site_order[e - 1]),
                   int(outlet_count[s]), part, row_offset + s)

    # the edges and totals are kept even when E314 fails here, so that stitch can still find an E308
    # across units (which outranks E314): the reported code must not depend on where parts are cut
    run_country = country[starts]
    summary.runs = len(starts)
    summary.first, summary.last = edge(0), edge(len(starts) - 1)
    summary.sites_by_country = np.bincount(country, minlength=len(iso_codes())).astype(np.int64)
    summary.pairs_by_country = np.bincount(run_country, minlength=len(iso_codes())).astype(np.int64)
    total_e314 = dup.size + gap.size + count_changes.size + not_one.size + wrong_n.size
    if total_e314:
        e314 = (key_rows(dup, lambda i: ["duplicate site_order"] * len(i))
                + key_rows(gap, lambda i: [f"gap: site_order jumps from {site_order[j - 1]} to {site_order[j]}"
                                           for j in i])
                + key_rows(count_changes, lambda i: ["final_country_outlet_count changes within the pair"] * len(i))
                + key_rows(not_one, lambda i: [f"first site_order is {site_order[j]}, not 1" for j in i])
                + key_rows(starts[wrong_n], lambda i: [f"final_country_outlet_count is {outlet_count[starts[r]]} but "
                                                       f"the pair has {lengths[r]} rows" for r in wrong_n[:len(i)]]))
        summary.failures.append(_fail(
            "E314_SITE_ORDER_INTEGRITY", "site_order is not exactly 1..n within (merchant_id, legal_country_iso) "
            "pairs, or final_country_outlet_count differs from n", part, e314[:MAX_FAILURE_ROWS], int(total_e314)))
        return summary, UnitRuns.empty()
    return summary, UnitRuns(merchant[starts], run_country.astype(np.uint8), lengths.astype(np.int64))


def stitchable(summaries: Sequence[UnitSummary]) -> bool:
    """True when :func:`stitch` can run: no unit failed a check that stops its reduction (only E314 lets it
    finish).  Any stopping failure outranks every failure that stitch can find."""
    return all(f.code == "E314_SITE_ORDER_INTEGRITY" for s in summaries for f in s.failures)


# --------------------------------------------------------------------------------------------------------
# across units
# --------------------------------------------------------------------------------------------------------

@dataclass
class Stitched:
    """Result of :func:`stitch`: which runs each unit owns and the totals."""

    continues: list[bool]  # unit's first run continues the previous unit's last run (so it is not owned)
    last_n: dict[int, int]  # unit -> full n of its last run when that run spans later units
    owned: list[int]  # runs owned by each unit
    pairs: int
    sites: int
    sites_by_country: dict[str, int]
    pairs_by_country: dict[str, int]
    failures: list[Segment1BError] = field(default_factory=list)


def stitch(summaries: Sequence[UnitSummary], *, countries_with_weights: Collection[str]) -> Stitched:
    """Merge the boundary runs of consecutive units and finish the checks of the pairs that span units.

    Parameters
    ----------
    summaries : sequence of UnitSummary
        In reading order; see :func:`stitchable`.
    countries_with_weights : collection of str
        Countries that have tile weights (E303).

    Examples
    --------
    >>> ra, rb = Run(5, 0, 2, 1, 2, 3, "p0", 0), Run(5, 0, 1, 3, 3, 3, "p1", 0)  # one pair of 3 sites, cut 2 | 1
    >>> a = UnitSummary(0, "p0", rows=2, runs=1, first=ra, last=ra)
    >>> b = UnitSummary(1, "p1", rows=1, runs=1, first=rb, last=rb)
    >>> s = stitch([a, b], countries_with_weights=[iso_codes()[0]])
    >>> s.continues, s.last_n, s.owned, s.pairs, s.failures
    ([False, True], {0: 3}, [1, 0], 1, [])
    """
    n_units = len(summaries)
    continues = [False] * n_units
    last_n: dict[int, int] = {}
    e308: list[dict] = []
    e314: list[dict] = []
    sites = np.zeros(len(iso_codes()), np.int64)
    pairs = np.zeros(len(iso_codes()), np.int64)

    open_run: Run | None = None  # the pair that may continue into the next unit
    open_rows, open_last, open_owner = 0, 0, -1

    def finish() -> None:
        if open_run is None:
            return
        where = open_run.describe()
        if open_run.first_site_order != 1:
            e314.append({**where, "site_order": open_run.first_site_order,
                         "problem": f"first site_order is {open_run.first_site_order}, not 1"})
        if open_run.outlet_count != open_rows:
            e314.append({**where, "problem": f"final_country_outlet_count is {open_run.outlet_count} but the pair "
                         f"has {open_rows} rows"})
        if open_rows != open_run.rows:  # the pair spans units: its owner writes the full count
            last_n[open_owner] = open_rows

    for u, s in enumerate(summaries):
        sites += s.sites_by_country
        pairs += s.pairs_by_country
        if s.rows == 0 or s.first is None or s.last is None:
            continue
        first, last = s.first, s.last
        if open_run is not None and first.key == open_run.key:
            # the same pair goes on: site_order must go on by exactly one, with the same outlet count
            if first.first_site_order != open_last + 1:
                problem = ("duplicate site_order" if first.first_site_order == open_last else
                           f"gap: site_order jumps from {open_last} to {first.first_site_order}")
                if first.first_site_order < open_last:
                    e308.append({**first.describe(), "site_order": first.first_site_order,
                                 "previous_site_order": open_last,
                                 "problem": "sorts before the previous part's last row"})
                else:
                    e314.append({**first.describe(), "site_order": first.first_site_order, "problem": problem})
            if first.outlet_count != open_run.outlet_count:
                e314.append({**first.describe(), "problem": "final_country_outlet_count changes within the pair"})
            continues[u] = True
            pairs[first.country] -= 1
            open_rows += first.rows
            open_last = first.last_site_order
            if s.runs > 1:
                finish()
                open_run, open_rows, open_last, open_owner = last, last.rows, last.last_site_order, u
            continue
        if open_run is not None:
            if first.key < open_run.key:
                e308.append({**first.describe(), "previous_merchant_id": open_run.merchant_id,
                             "previous_legal_country_iso": iso_codes()[open_run.country],
                             "problem": "first row of the part sorts before the last row of the previous part"})
            finish()
        if s.runs > 1:  # the first run is complete inside this unit
            open_run, open_rows, open_last, open_owner = first, first.rows, first.last_site_order, u
            finish()
        open_run, open_rows, open_last, open_owner = last, last.rows, last.last_site_order, u
    finish()

    failures: list[Segment1BError] = []
    if e308:
        failures.append(InputError("E308_UNSORTED", "outlet_catalogue rows are not in writer-sort order across "
                                   "part files (file-name order must be the sort order)", dataset=CATALOGUE,
                                   rows=e308[:MAX_FAILURE_ROWS]))
    if e314:
        failures.append(InputError("E314_SITE_ORDER_INTEGRITY", "site_order is not exactly 1..n within "
                                   "(merchant_id, legal_country_iso) pairs, or final_country_outlet_count differs "
                                   "from n", dataset=CATALOGUE, rows=e314[:MAX_FAILURE_ROWS]))
    codes = iso_codes()
    with_sites = {codes[i]: int(sites[i]) for i in np.flatnonzero(sites)}
    with_pairs = {codes[i]: int(pairs[i]) for i in np.flatnonzero(sites)}
    weights = set(countries_with_weights)
    missing = [{"legal_country_iso": c, "pairs": with_pairs[c], "sites": with_sites[c]} for c in sorted(with_sites)
               if c not in weights]
    if missing:
        failures.append(InputError(
            "E303_MISSING_WEIGHTS", f"{len(missing)} countries have sites but no tile weights, so their sites "
            "cannot be placed", dataset="tile_weights", rows=missing,
            hint="rebuild the tile index and weights with a grid and country polygons that cover these countries "
                 "(segment1b prepare), or use a catalogue without them"))
    owned = [s.runs - int(c) for s, c in zip(summaries, continues)]
    return Stitched(continues, last_n, owned, pairs=int(sum(owned)), sites=int(sites.sum()),
                    sites_by_country=with_sites, pairs_by_country=with_pairs, failures=failures)


def plan_output(owned: Sequence[int], pairs_per_part: int) -> list[list[tuple[int, int, int]]]:
    """Cut the owned runs (in order) into output parts of ``pairs_per_part`` pairs.

    Returns, per output part, the pieces ``(unit, lo, hi)``: owned runs ``lo..hi-1`` of that unit.
    An empty catalogue gives one empty part.

    >>> plan_output([3, 0, 4], 5)
    [[(0, 0, 3), (2, 0, 2)], [(2, 2, 4)]]
    """
    if pairs_per_part < 1:
        raise ValueError(f"pairs_per_part must be >= 1, got {pairs_per_part}")
    total = int(sum(owned))
    parts: list[list[tuple[int, int, int]]] = [[] for _ in range(max(1, -(-total // pairs_per_part)))]
    start = 0
    for unit, count in enumerate(owned):
        lo = 0
        while lo < count:
            j = (start + lo) // pairs_per_part
            hi = min(count, (j + 1) * pairs_per_part - start)
            parts[j].append((unit, lo, hi))
            lo = hi
        start += count
    return parts


def owned_runs(runs: UnitRuns, *, continues: bool, last_n: int | None) -> UnitRuns:
    """The runs a unit owns: without a first run that continues the previous unit, with the full n of a
    last run that spans later units."""
    first = 1 if continues else 0
    merchant, country, n = runs.merchant_id[first:], runs.country[first:], runs.n_sites[first:]
    if last_n is not None and len(n) and n[-1] != last_n:
        n = n.copy()
        n[-1] = last_n
    return UnitRuns(merchant, country, n)


def requirements_table(pieces: Sequence[UnitRuns]) -> pa.Table:
    """One ``s3_requirements`` part from consecutive slices of owned runs."""
    merchant = np.concatenate([p.merchant_id for p in pieces]) if pieces else np.empty(0, np.uint64)
    country = np.concatenate([p.country for p in pieces]) if pieces else np.empty(0, np.uint8)
    n = np.concatenate([p.n_sites for p in pieces]) if pieces else np.empty(0, np.int64)
    iso = pa.array(iso_codes(), pa.string())
    return pa.Table.from_arrays([pa.array(merchant, pa.uint64()), iso.take(country.astype(np.int64)),
                                 pa.array(n, pa.int64())], schema=dataset("s3_requirements").schema)


def first_failure(failures: Sequence[Segment1BError]) -> Segment1BError | None:
    """The failure to report: the first code of :data:`CHECK_ORDER`, with the rows of every unit that has it.

    The other codes found are named in the hint.
    """
    if not failures:
        return None
    rank = {c: i for i, c in enumerate(CHECK_ORDER)}

    def order(c: str) -> tuple[int, str]:
        return (rank.get(c, len(rank)), c)

    code = min((f.code for f in failures), key=order)
    same = [f for f in failures if f.code == code]
    others = sorted({f.code for f in failures} - {code}, key=order)
    if len(same) == 1 and not others:
        return same[0]
    first = same[0]
    message = first.message + (f" (found in {len(same)} parts)" if len(same) > 1 else "")
    hint = "; ".join(x for x in (first.hint, f"also failing: {', '.join(others)}" if others else "") if x) or None
    return type(first)(code, message, dataset=first.dataset, path=first.path if len(same) == 1 else None,
                       rows=[r for f in same for r in f.rows][:MAX_FAILURE_ROWS], hint=hint)
