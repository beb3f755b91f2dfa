"""The worker side of S4 → S5 → S6 (:mod:`jobs.place` plans, submits and publishes).

* :func:`country_prefix` (``s4-weights-<ISO>``): a country's sorted weight prefix, checked against
  ``tile_index``;
* :func:`place_unit` (``s6-jitter-<ISO>-<k>``...): S4 → S5 → S6 of one unit, fused; each step's rows for each
  country are a small typed record (:class:`S4Rows`, :class:`S5Rows`, :class:`S6Rows`) timed on its own;
* :func:`write_part` (``s4-write-<p>``...): one part of one state, sorted merchant-major, written into
  staging with its RNG event part; its :class:`PartRecord` is left in the attempt's progress folder.

Everything here runs on workers: arguments are small picklable recipes, results are arrays and counters.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa

from segment1b import rng
from segment1b.contracts import dataset
from segment1b.errors import InputError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity, utc_now
from segment1b.keys import iso_code, iso_strings, iso_text
from segment1b.rng_events import s5_events_jsonl, s6_events_jsonl
from segment1b.rng_log_files import DEFAULT_LOG_FORM, encode_chunks, suffix_of
from segment1b.s4_alloc_plan import WeightPrefix, allocate_pairs, weight_prefix_chunks
from segment1b.s5_site_tile import assign_sites
from segment1b.s6_jitter import jitter_sites
from segment1b.storage import Storage, part_name, write_parquet_bytes

from .refcache import country_geometry
from .requirement_pairs import PartRead, part_pairs
from .runtime import Timing, timed
from .tiles import RowGroupRef, iter_country, tiles_present
from .units import Segment

__all__ = ["STATES", "StateSpec", "SPECS", "country_prefix", "S4Rows", "S5Rows", "S6Rows", "JitterEvents",
           "place_unit", "UnitTiming", "PartRecord", "write_part", "EVENT_CHUNK"]


class StateSpec(NamedTuple):
    """What differs between S4, S5 and S6 for the job: dataset, task-key verb and RNG event family."""

    dataset: str
    action: str  # verb of the fused unit task's key when this is the last state run
    label: str | None = None  # RNG substream label (None: the state draws nothing)
    module: str | None = None
    draws_per_event: int = 0


STATES = ("s4", "s5", "s6")
SPECS = {
    "s4": StateSpec("s4_alloc_plan", "alloc"),
    "s5": StateSpec("s5_site_tile_assignment", "assign", rng.S5_LABEL, rng.S5_MODULE, 1),
    "s6": StateSpec("s6_site_jitter", "jitter", rng.S6_LABEL, rng.S6_MODULE, 2),
}

# Events formatted at a time by the part writers: the JSON lines of a part (about 700 bytes per event) are
# streamed to the file chunk by chunk instead of being built whole (benchmarks/bench_unit_memory.py).
EVENT_CHUNK = 1 << 16


# ---------------------------------------------------------------------------------------------------------
# s4-weights-<ISO>

def country_prefix(storage: Storage, weight_refs: list[RowGroupRef], index_refs: list[RowGroupRef],
                   country_iso: str, max_n: int) -> WeightPrefix:
    """Task: the country's ``2·max_n`` heaviest tiles, in S4's order, all present in ``tile_index``.

    Raises
    ------
    InputError
        ``E303_MISSING_WEIGHTS`` (no weights), ``E105_NORMALIZATION`` (mixed dp), ``E505_TILE_NOT_IN_INDEX``.
    """
    dps: set[int] = set()

    def chunks():
        # one row group at a time: Russia at 30" is 42 M tiles, its prefix only 2·max(n)
        for t in iter_country(storage, weight_refs, country_iso, ["tile_id", "weight_fp", "dp"], "tile_weights"):
            dps.update(np.unique(t["dp"].to_numpy()).tolist())
            if len(dps) > 1:
                raise InputError("E105_NORMALIZATION", f"tile weights of {country_iso} mix dp values {sorted(dps)}",
                                 dataset="tile_weights",
                                 rows=[{"country_iso": country_iso, "dp": d} for d in sorted(dps)])
            yield t["tile_id"].to_numpy(), t["weight_fp"].to_numpy()

    first = next(iter_country(storage, weight_refs[:1], country_iso, ["dp"], "tile_weights"), None)
    if first is None or first.num_rows == 0:
        raise InputError("E303_MISSING_WEIGHTS", f"{country_iso} has sites but no tile weights",
                         dataset="tile_weights", rows=[{"country_iso": country_iso}])
    dp = int(first["dp"][0].as_py())
    prefix = weight_prefix_chunks(country_iso, chunks(), dp, max_n)
    present = tiles_present(storage, index_refs, country_iso, prefix.tile_id)
    if not present.all():
        missing = prefix.tile_id[~present]
        raise InputError("E505_TILE_NOT_IN_INDEX", f"{missing.size} weighted tiles of {country_iso} are not in "
                         "tile_index", dataset="tile_weights",
                         rows=[{"country_iso": country_iso, "tile_id": int(t)} for t in missing[:20]])
    return prefix


# ---------------------------------------------------------------------------------------------------------
# one unit: S4 -> S5 -> S6

class _CountryRows:
    """What the per-country records of a unit share: their row count is the length of ``tile_id``."""

    tile_id: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.tile_id)


@dataclass(frozen=True)
class S4Rows(_CountryRows):
    """S4 plan rows of one country of a unit, in (merchant, tile) order, and the kernel's counters."""

    country_iso: str
    merchant_id: np.ndarray = field(repr=False)
    tile_id: np.ndarray = field(repr=False)
    n_sites_tile: np.ndarray = field(repr=False)
    pairs: int = 0
    ties_broken: int = 0
    timing: Timing = Timing()


@dataclass(frozen=True)
class S5Rows(_CountryRows):
    """S5 sites of one country of a unit, in (merchant, site_order) order, with their RNG draw (``u``, counters)."""

    country_iso: str
    merchant_id: np.ndarray = field(repr=False)
    site_order: np.ndarray = field(repr=False)
    tile_id: np.ndarray = field(repr=False)
    u: np.ndarray = field(repr=False)
    before_hi: np.ndarray = field(repr=False)
    before_lo: np.ndarray = field(repr=False)
    after_hi: np.ndarray = field(repr=False)
    after_lo: np.ndarray = field(repr=False)
    timing: Timing = Timing()


class JitterEvents(NamedTuple):
    """S6 RNG events of one country of a unit, one per attempt, in (site, attempt) order.

    ``site`` indexes the unit's sites; the other columns are :func:`segment1b.rng_events.s6_events_jsonl`'s.
    """

    site: np.ndarray
    attempt: np.ndarray
    accepted: np.ndarray
    delta_lat: np.ndarray
    delta_lon: np.ndarray
    before_hi: np.ndarray
    before_lo: np.ndarray
    after_hi: np.ndarray
    after_lo: np.ndarray

    @classmethod
    def of(cls, jitter: dict[str, Any]) -> JitterEvents:
        """From :func:`segment1b.s6_jitter.jitter_sites`'s ``ev_*`` columns."""
        return cls(*(jitter[f"ev_{name}"] for name in cls._fields))


@dataclass(frozen=True)
class S6Rows(_CountryRows):
    """S6 sites of one country of a unit (S5's order) with their accepted deltas, attempts and events."""

    country_iso: str
    merchant_id: np.ndarray = field(repr=False)
    site_order: np.ndarray = field(repr=False)
    tile_id: np.ndarray = field(repr=False)
    delta_lat_deg: np.ndarray = field(repr=False)
    delta_lon_deg: np.ndarray = field(repr=False)
    attempts: np.ndarray = field(repr=False)
    events: JitterEvents = field(repr=False)
    outside_pixel: int = 0
    outside_country: int = 0
    timing: Timing = Timing()


def s4_unit(prefix: WeightPrefix, merchant_id: np.ndarray, n_sites: np.ndarray) -> S4Rows:
    """S4 of one country's pairs (:func:`segment1b.s4_alloc_plan.allocate_pairs`)."""
    out = allocate_pairs(prefix, merchant_id, n_sites)
    return S4Rows(prefix.country_iso, out["merchant_id"], out["tile_id"], out["n_sites_tile"], out["pairs"],
                  out["ties_broken"])


def s5_unit(plan: S4Rows, merchant_id: np.ndarray, n_sites: np.ndarray, master: bytes,
            parameter_hash: str) -> S5Rows:
    """S5 of one country's pairs (:func:`segment1b.s5_site_tile.assign_sites`) from their S4 plan."""
    out = assign_sites(plan.country_iso, merchant_id, n_sites, plan.merchant_id, plan.tile_id, plan.n_sites_tile,
                       master, parameter_hash)
    return S5Rows(plan.country_iso, out["merchant_id"], out["site_order"], out["tile_id"], out["u"],
                  out["before_hi"], out["before_lo"], out["after_hi"], out["after_lo"])


def s6_unit(sites: S5Rows, storage: Storage, countries_sha256: str, grid: Grid, master: bytes,
            parameter_hash: str) -> S6Rows:
    """S6 of one country's sites (:func:`segment1b.s6_jitter.jitter_sites`) in the country's polygons."""
    geom = country_geometry(storage, countries_sha256, sites.country_iso)
    out = jitter_sites(grid, sites.country_iso, geom, sites.merchant_id, sites.site_order, sites.tile_id, master,
                       parameter_hash)
    return S6Rows(sites.country_iso, sites.merchant_id, sites.site_order, sites.tile_id, out["delta_lat_deg"],
                  out["delta_lon_deg"], out["attempts"], JitterEvents.of(out), out["outside_pixel"],
                  out["outside_country"])


def place_unit(prefixes: list[WeightPrefix], part: PartRead, segments: tuple[Segment, ...], *, through: str,
               storage: Storage, countries_sha256: str, grid: Grid, master: bytes,
               parameter_hash: str) -> dict[str, list]:
    """Task: S4 → S5 → S6 of one unit, fused (each step only feeds the next).

    A unit holds one country or a pack of small ones: ``segments[i]`` describes the pairs of the country of
    ``prefixes[i]``, which are taken from its part's pairs (``part``: read once per worker process,
    :func:`jobs.requirement_pairs.part_pairs`).  Returns, per state up to ``through``, one timed record per
    country, so the run reports still time states and countries separately.
    """
    out: dict[str, list] = {s: [] for s in STATES[: STATES.index(through) + 1]}
    pairs = part_pairs(storage, part)
    for prefix, segment in zip(prefixes, segments):
        merchant_id, n_sites = pairs.select(segment)
        s4 = timed(s4_unit)(prefix, merchant_id, n_sites)
        out["s4"].append(s4)
        if through in ("s5", "s6"):
            s5 = timed(s5_unit)(s4, merchant_id, n_sites, master, parameter_hash)
            out["s5"].append(s5)
            if through == "s6":
                out["s6"].append(timed(s6_unit)(s5, storage, countries_sha256, grid, master, parameter_hash))
    return out


# ---------------------------------------------------------------------------------------------------------
# one part of one state: s4-write-<p>, s5-write-<p>, s6-write-<p>

class UnitTiming(NamedTuple):
    """Rows and seconds of one state for one country of one unit (the run report's per-country timings)."""

    country_iso: str
    rows: int
    timing: Timing

    def to_json(self) -> dict[str, Any]:
        # the keys of the progress format (jobs.place_progress copies records between attempts as they are)
        return {"country_iso": self.country_iso, "rows": self.rows, "_wall_s": self.timing.wall_s,
                "_cpu_s": self.timing.cpu_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitTiming:
        return cls(data["country_iso"], int(data["rows"]), Timing(data.get("_wall_s", 0.0), data.get("_cpu_s", 0.0)))


@dataclass
class PartRecord:
    """What a part writer did, as left in the attempt's progress folder (``<state>-part-NNNNN.json``).

    ``files`` maps a role (``data``, ``events``) to the file written: name, size and, for datasets, SHA-256
    (:mod:`jobs.place_progress` adopts and checks them).  The S4 and S6 fields stay 0 for other states.
    """

    part: int
    rows: int = 0
    events: int = 0
    countries: dict[str, int] = field(default_factory=dict)  # rows by country
    units: list[UnitTiming] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: int = 0  # S4
    ties_broken: int = 0  # S4
    attempt_histogram: list[int] = field(default_factory=list)  # S6: sites accepted at attempt 1..64
    outside_pixel: int = 0  # S6: rejected attempts by cause
    outside_country: int = 0
    country_events: dict[str, int] = field(default_factory=dict)  # S6, by country
    country_outside_pixel: dict[str, int] = field(default_factory=dict)
    country_outside_country: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "units": [u.to_json() for u in self.units]}).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartRecord:
        return cls(**{**data, "units": [UnitTiming.from_json(u) for u in data.get("units", [])]})


class PartContent(NamedTuple):
    """A part's dataset rows (writer-sorted) and, for S5/S6, its event lines as a stream of chunks."""

    table: pa.Table
    events: Iterator[bytes] | None = None


def write_part(state: str, storage: Storage, staging: dict[str, str | None], progress: str, part: int,
               ident: RunIdentity, units: list[dict[str, list]], log_form: str = DEFAULT_LOG_FORM) -> PartRecord:
    """Task: sort one part's unit results of ``state`` merchant-major and write the dataset part (+ events).

    The event part is written in ``log_form`` (:mod:`segment1b.rng_log_files`: ``part-NNNNN.jsonl.zst`` or
    ``part-NNNNN.jsonl``), chunk by chunk.

    Returns (and leaves in ``progress``) a small record: rows, events, per-country counts, each file written
    (name, size, and SHA-256 for datasets) and the timing of every unit, so that the client never fetches the
    units' arrays.  A ``None`` staging folder means that dataset (or log) is already published: its part is
    not written.
    """
    results = [r for u in units for r in u[state]]  # a fused unit result holds every state's output per country
    record = PartRecord(part, units=[UnitTiming(r.country_iso, r.rows, r.timing) for r in results])
    live = [r for r in results if r.rows]
    for r in live:
        record.countries[r.country_iso] = record.countries.get(r.country_iso, 0) + r.rows
    if live:
        content = PART_CONTENT[state](live, ident, record)
        record.rows = content.table.num_rows
        _put(storage, staging, record, "data", part_name(part),
             write_parquet_bytes(content.table, dataset(SPECS[state].dataset)))
        if content.events is not None:
            _put(storage, staging, record, "events", part_name(part, suffix_of(log_form)),
                 encode_chunks(content.events, log_form))
    storage.write_bytes(posixpath.join(progress, f"{state}-{part_name(part, '.json')}"), record.to_json())
    return record


def _put(storage: Storage, staging: dict[str, str | None], record: PartRecord, role: str, name: str,
         data: bytes | Iterator[bytes]) -> None:
    """Write one file of a part into the role's staging folder (none: published already) and record it.

    Event logs are streamed chunk by chunk (never all of a part's lines in memory) and checked by size only,
    as their publication is (jobs.place_progress).
    """
    folder = staging.get(role)
    if folder is None:
        return
    if isinstance(data, bytes):
        f = storage.write_part(folder, name, data)
        record.files[role] = {"name": f.name, "size": f.size, "sha256_hex": f.sha256_hex}
    else:
        record.files[role] = {"name": name, "size": storage.write_stream(posixpath.join(folder, name), data)}


def _stack(units: list, columns: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The units' columns concatenated, and each row's country as an ISO code."""
    cols = {c: np.concatenate([getattr(u, c) for u in units]) for c in columns}
    iso = np.concatenate([np.full(u.rows, iso_code(u.country_iso), dtype=np.uint16) for u in units])
    return cols, iso


def _envelope(ident: RunIdentity) -> dict[str, Any]:
    return {"ts_utc": utc_now(), "run_id": ident.run_id, "seed": ident.seed, "parameter_hash": ident.parameter_hash,
            "manifest_fingerprint": ident.manifest_fingerprint}


def _s4_content(units: list[S4Rows], ident: RunIdentity, record: PartRecord) -> PartContent:
    cols, iso = _stack(units, ["merchant_id", "tile_id", "n_sites_tile"])
    order = np.lexsort((cols["tile_id"], iso, cols["merchant_id"]))
    record.ties_broken = int(sum(u.ties_broken for u in units))
    record.pairs = int(sum(u.pairs for u in units))
    return PartContent(pa.table({"merchant_id": cols["merchant_id"][order],
                                 "legal_country_iso": iso_strings(iso[order]), "tile_id": cols["tile_id"][order],
                                 "n_sites_tile": cols["n_sites_tile"][order]}))


def _site_rows(units: list, extra: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """S5/S6 rows of a part in writer-sort order (merchant, country, site_order) and their ISO codes."""
    cols, iso = _stack(units, ["merchant_id", "site_order", "tile_id"] + extra)
    order = np.lexsort((cols["site_order"], iso, cols["merchant_id"]))
    return {k: v[order] for k, v in cols.items()}, iso[order]


def _s5_content(units: list[S5Rows], ident: RunIdentity, record: PartRecord) -> PartContent:
    cols, iso = _site_rows(units, ["u", "before_hi", "before_lo", "after_hi", "after_lo"])
    record.events = len(iso)
    table = pa.table({"merchant_id": cols["merchant_id"], "legal_country_iso": iso_strings(iso),
                      "site_order": cols["site_order"], "tile_id": cols["tile_id"]})
    return PartContent(table, _s5_events(cols, iso, _envelope(ident)))


def _s6_content(units: list[S6Rows], ident: RunIdentity, record: PartRecord) -> PartContent:
    cols, iso = _site_rows(units, ["delta_lat_deg", "delta_lon_deg"])
    table = pa.table({"merchant_id": cols["merchant_id"], "legal_country_iso": iso_strings(iso),
                      "site_order": cols["site_order"], "tile_id": cols["tile_id"],
                      "delta_lat_deg": cols["delta_lat_deg"], "delta_lon_deg": cols["delta_lon_deg"],
                      "manifest_fingerprint": _repeated_string(ident.manifest_fingerprint, len(iso))})
    events, record.events, record.attempt_histogram = _s6_events(units, _envelope(ident))
    record.outside_pixel = int(sum(u.outside_pixel for u in units))
    record.outside_country = int(sum(u.outside_country for u in units))
    record.country_events = _country_sum(units, lambda u: len(u.events.site))
    record.country_outside_pixel = _country_sum(units, lambda u: u.outside_pixel)
    record.country_outside_country = _country_sum(units, lambda u: u.outside_country)
    return PartContent(table, events)


# state -> what its part holds (one writer per dataset kind)
PART_CONTENT: dict[str, Callable[[list, RunIdentity, PartRecord], PartContent]] = {
    "s4": _s4_content, "s5": _s5_content, "s6": _s6_content}


def _country_sum(units: list[S6Rows], value: Callable[[S6Rows], int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for u in units:
        out[u.country_iso] += int(value(u))
    return dict(out)


def _repeated_string(value: str, n: int) -> pa.Array:
    """``n`` copies of one string as an Arrow string array, built from its buffers (no NumPy strings)."""
    raw = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _s5_events(cols: dict[str, np.ndarray], iso: np.ndarray, envelope: dict[str, Any]) -> Iterator[bytes]:
    """S5 event lines of a part (rows already in writer-sort order), :data:`EVENT_CHUNK` rows at a time."""
    for a in range(0, len(iso), EVENT_CHUNK):
        b = a + EVENT_CHUNK
        yield s5_events_jsonl(envelope, cols["merchant_id"][a:b], iso_text(iso[a:b]), cols["site_order"][a:b],
                                  cols["tile_id"][a:b], cols["u"][a:b], cols["before_hi"][a:b],
                                  cols["before_lo"][a:b], cols["after_hi"][a:b], cols["after_lo"][a:b])


def _s6_events(units: list[S6Rows], envelope: dict[str, Any]) -> tuple[Iterator[bytes], int, list[int]]:
    """S6 event lines of a part in (merchant, country, site_order, attempt) order (a generator of chunks
    of :data:`EVENT_CHUNK` lines), their number and the attempt histogram."""
    hist = np.zeros(65, dtype=np.int64)
    site_cols: list[list[np.ndarray]] = [[], [], [], []]  # merchant_id, iso, site_order, tile_id per event
    event_cols: list[list[np.ndarray]] = [[] for _ in JitterEvents._fields[1:]]
    for u in units:
        s = u.events.site
        for acc, col in zip(site_cols, (u.merchant_id[s], np.full(len(s), iso_code(u.country_iso), dtype=np.uint16),
                                        u.site_order[s], u.tile_id[s])):
            acc.append(col)
        for acc, col in zip(event_cols, u.events[1:]):
            acc.append(col)
        hist += np.bincount(u.attempts, minlength=65)[:65]
    cols = [np.concatenate(c) for c in site_cols + event_cols]
    order = np.lexsort((cols[4], cols[2], cols[1], cols[0]))  # attempt, site_order, country, merchant

    def chunks() -> Iterator[bytes]:
        for a in range(0, len(order), EVENT_CHUNK):
            c = [x[order[a:a + EVENT_CHUNK]] for x in cols]
            yield s6_events_jsonl(envelope, c[0], iso_text(c[1]), c[2], c[3], *c[4:])

    return chunks(), len(order), hist[1:].tolist()
