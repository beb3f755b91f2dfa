"""Work-unit planning for the per-country states S4-S7: pure functions on plain arrays.

Outputs of S4-S8 are merchant-major, so they are laid out in *parts*: consecutive merchant ranges cut
when a part reaches ``target_sites`` (cuts only between merchants).  The layout depends on the S3
requirements and that constant only, never on workers or unit sizes, so datasets are byte-identical
whatever the chunking.

Work is done in *units* of about the same cost: the pairs of one country inside one part, split into
chunks when the country is big (so the long tail is many tasks), or the pairs of several small countries
of one part packed together (so that two hundred countries with a handful of sites each are a few tasks,
not two hundred: the scheduler's per-task cost would otherwise eat the second core).  The biggest
countries of a run are never packed: the :data:`NAMED_COUNTRIES` countries with the most sites, among those
holding at least :data:`NAMED_MIN_SHARE` of the run's sites, get units of their own in every part, named by
their ISO code, so the dashboard shows the long tail of a run (issue 15: at x100 the United States and India
were inside ``small`` packs).  A unit never spans parts, so each part's
writer depends only on its own units and the graph can run part by part with bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segment1b.keys import iso_of, iso_u16

__all__ = ["Part", "Segment", "Unit", "plan_parts", "plan_units", "UNIT_BYTES_PER_SITE", "SMALL_LABEL",
           "NAMED_COUNTRIES", "NAMED_MIN_SHARE"]

SMALL_LABEL = "small"  # task-key label of a unit packing several small countries
# The countries with the most sites of a run (ties: ISO order) that always get their own units: as many as
# the run summary's "slowest countries", so that the countries a user reads about there have their own
# progress bars; at most this many more tasks per part than full packing.  Only countries holding a share
# of the run worth a bar of its own: in a small catalogue the tenth country may have three sites.
NAMED_COUNTRIES = 10
NAMED_MIN_SHARE = 0.01

# Parts of 2^18 sites (~260 k): small enough that the writers of one part overlap the units of the next and
# a writer holds a few tens of MB; large enough that x1000 is ~130 files per dataset.
DEFAULT_PART_SITES = 1 << 18
# Peak worker bytes per site of a unit through S4->S5->S6: the three results kept for the part writers,
# the kernels' temporaries and one pickled copy of the S6 result (sent to the writer).  Measured with
# ``python -m benchmarks.run unit_memory --scale 500k`` (tracemalloc peak and VmHWM rise, 500 000 sites):
# 409 B/site for a country whose tiles are all land (1.0 jitter attempts per site); 698 B/site traced and
# up to 956 B/site resident for an archipelago (``--scale 500k-islands``, 2.8 attempts per site).  Rounded
# up from the worst; used to keep units well inside a worker's memory (jobs.place._memory_bound_sites).
UNIT_BYTES_PER_SITE = 1_024


@dataclass(frozen=True)
class Part:
    """One output part: merchants ``merchant_lo..merchant_hi`` (inclusive) of the merchant-major order."""

    index: int
    merchant_lo: int
    merchant_hi: int
    pairs: int
    sites: int


@dataclass(frozen=True)
class Segment:
    """The pairs of one country inside a unit, merchant ascending."""

    country_iso: str
    merchant_id: np.ndarray = field(repr=False)  # uint64, ascending
    n_sites: np.ndarray = field(repr=False)  # int64


@dataclass(frozen=True)
class Unit:
    """One task's worth of pairs inside one part: a (chunk of a) country, or a pack of small countries."""

    label: str  # the country's ISO code, or SMALL_LABEL for a pack
    part: int
    chunk: int  # running number per label, over all parts
    segments: tuple[Segment, ...] = field(repr=False)

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(s.country_iso for s in self.segments)

    @property
    def sites(self) -> int:
        return int(sum(int(s.n_sites.sum()) for s in self.segments))

    @property
    def pairs(self) -> int:
        return sum(len(s.merchant_id) for s in self.segments)

    @property
    def cost(self) -> int:
        """Sites dominate S5/S6; a pair also costs a substream derivation and a plan lookup."""
        return self.sites + 4 * self.pairs


def plan_parts(merchant_id: np.ndarray, n_sites: np.ndarray, target_sites: int = DEFAULT_PART_SITES) -> list[Part]:
    """Cut merchant-major pairs into parts of about ``target_sites`` sites, only between merchants.

    >>> [(p.index, p.merchant_lo, p.merchant_hi, p.sites) for p in
    ...  plan_parts(np.array([1, 1, 2, 3], np.uint64), np.array([2, 2, 1, 5]), target_sites=4)]
    [(0, 1, 1, 4), (1, 2, 3, 6)]
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites = np.asarray(n_sites, dtype=np.int64)
    if merchant_id.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, merchant_id[1:] != merchant_id[:-1]])  # first pair of each merchant
    per_merchant = np.add.reduceat(n_sites, starts)
    csum = np.cumsum(per_merchant)
    parts: list[Part] = []
    m0, done = 0, 0
    while m0 < len(starts):
        # last merchant whose inclusion brings the part to >= target (at least one merchant)
        m1 = int(np.searchsorted(csum, done + target_sites, side="left"))
        m1 = min(max(m1, m0), len(starts) - 1)
        p0 = int(starts[m0])
        p1 = int(starts[m1 + 1]) if m1 + 1 < len(starts) else len(merchant_id)
        sites = int(csum[m1] - done)
        parts.append(Part(len(parts), int(merchant_id[p0]), int(merchant_id[p1 - 1]), p1 - p0, sites))
        done = int(csum[m1])
        m0 = m1 + 1
    return parts


UNITS_PER_WORKER = 16  # enough units per worker to balance the load, few enough that task overhead stays small


def plan_units(merchant_id: np.ndarray, country_iso: np.ndarray, n_sites: np.ndarray, parts: list[Part], *,
               max_unit_sites: int = 250_000, min_unit_sites: int = 2_000, skew: float = 4.0,
               workers: int = 1, named: int = NAMED_COUNTRIES) -> list[Unit]:
    """Units of about ``target`` sites inside each part, largest first.

    ``target = min(max_unit_sites, max(min_unit_sites, skew · median (country, part) group size,
    all sites / (UNITS_PER_WORKER · workers)))``: big runs get big units (task overhead stays a small share)
    but always a few per worker, never more than the memory bound allows.  A
    (country, part) group above the target is split into chunks of consecutive merchants; groups below a
    quarter of it are packed, in ISO order, into units of up to the target, except those of the ``named``
    countries with the most sites (ties: ISO order) among those with :data:`NAMED_MIN_SHARE` of all sites
    or more; the others are one unit each.  So no unit is more than
    a few times the median (or above the memory bound) unless a single pair is that big; pairs are never
    split (S5 needs all sites of a pair together).  Units only group the work: outputs are laid out by
    ``parts`` and every draw is keyed by (merchant, country, site), so units change no output byte.
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites = np.asarray(n_sites, dtype=np.int64)
    bounds = np.array([p.merchant_hi for p in parts], dtype=np.uint64)
    part_of_pair = np.searchsorted(bounds, merchant_id, side="left")
    groups = _pair_groups(_iso_codes(country_iso), part_of_pair)
    if not groups:
        return []
    group_sites = {key: int(n_sites[idx].sum()) for key, idx in groups.items()}
    own = _named_countries(group_sites, named)
    spread = int(n_sites.sum()) / (UNITS_PER_WORKER * max(1, int(workers)))
    target = int(min(max_unit_sites, max(min_unit_sites, skew * float(np.median(list(group_sites.values()))), spread)))
    units: list[Unit] = []
    chunks: dict[str, int] = {}

    def add(label: str, part: int, segments: list[Segment]) -> None:
        k = chunks.get(label, 0)
        chunks[label] = k + 1
        units.append(Unit(label, part, k, tuple(segments)))

    def flush(pack: list[Segment], part: int) -> None:
        if pack:
            add(SMALL_LABEL if len(pack) > 1 else pack[0].country_iso, part, pack)

    by_part: dict[int, list[tuple[str, np.ndarray]]] = {}
    for (iso, part), idx in sorted(groups.items()):
        by_part.setdefault(part, []).append((iso, idx))
    for part in sorted(by_part):
        pack: list[Segment] = []
        pack_sites = 0
        for iso, idx in by_part[part]:  # ISO order
            sites = group_sites[(iso, part)]
            if sites * 4 >= target or iso in own:
                for piece in _split_by_sites(idx, n_sites, target):
                    add(iso, part, [Segment(iso, merchant_id[piece], n_sites[piece])])
                continue
            if pack_sites + sites > target:
                flush(pack, part)
                pack, pack_sites = [], 0
            pack.append(Segment(iso, merchant_id[idx], n_sites[idx]))
            pack_sites += sites
        flush(pack, part)
    units.sort(key=lambda u: (-u.cost, u.label, u.chunk))
    return units


def _named_countries(group_sites: dict[tuple[str, int], int], named: int) -> set[str]:
    """The ``named`` countries with the most sites (ties: ISO order) among those holding at least
    :data:`NAMED_MIN_SHARE` of all sites: they get units of their own on the dashboard (issue 15)."""
    country_sites: dict[str, int] = {}
    for (iso, _), sites in group_sites.items():
        country_sites[iso] = country_sites.get(iso, 0) + sites
    total = sum(country_sites.values())
    big = [c for c in country_sites if country_sites[c] >= NAMED_MIN_SHARE * total]
    return set(sorted(big, key=lambda c: (-country_sites[c], c))[:max(0, named)])


def _iso_codes(country_iso) -> np.ndarray:
    """Countries as uint16 codes (:func:`segment1b.keys.iso_u16`), from codes or two-letter strings."""
    codes = np.asarray(country_iso)
    if codes.dtype == np.uint16:
        return codes
    return iso_u16(pa.array(codes.astype(str), pa.string()))


def _pair_groups(iso16: np.ndarray, part_of_pair: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Positions of each (country, part) group's pairs, in their original (merchant) order.

    One stable sort of integer keys: no Python object per pair, so the client plans millions of pairs
    (x1000: ~18 M) in a few hundred MB (issue 17; the pandas groupby over ISO strings it replaces held
    ~80 B a pair).  ISO codes sort as their strings, so groups come in (ISO, part) order.
    """
    if iso16.size == 0:
        return {}
    key = part_of_pair.astype(np.int64) | (iso16.astype(np.int64) << 40)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return {(iso_of(int(sorted_key[a] >> 40)), int(sorted_key[a] & ((1 << 40) - 1))): order[a:b]
            for a, b in zip(starts, ends)}


def _split_by_sites(idx: np.ndarray, n_sites: np.ndarray, target: int) -> list[np.ndarray]:
    """Consecutive pieces of ``idx`` of about ``target`` sites: a piece closes after the pair that reaches it.

    A piece holds at most ``target`` sites plus its last pair, so a single pair bigger than the target
    stays whole.
    """
    sites = n_sites[idx]
    total = int(sites.sum())
    if total <= target:
        return [idx]
    before = np.cumsum(sites) - sites  # sites of the group before each pair
    piece = before // target
    cuts = np.flatnonzero(np.diff(piece)) + 1
    return np.split(idx, cuts)
