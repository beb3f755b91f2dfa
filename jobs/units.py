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

from segment1b.keys import iso_code, iso_of, iso_u16

__all__ = ["Part", "Segment", "Unit", "CountryPairs", "plan_parts", "plan_units", "plan_layout", "UNIT_BYTES_PER_SITE", "SMALL_LABEL",
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
    """The pairs of one country inside a unit: every pair of ``country_iso`` whose merchant is in
    ``merchant_lo..merchant_hi`` (consecutive pairs of the country's group in the unit's part).

    A description, not the pairs (issue 17: at x1000 the arrays of every unit held ~500 MB in the client and
    again in the scheduler); the unit's task reads them from ``s3_requirements`` (:class:`CountryPairs`).
    """

    country_iso: str
    merchant_lo: int
    merchant_hi: int
    pairs: int
    sites: int
    max_n_sites: int  # the largest n_sites of its pairs (S4's weight prefix needs 2 x the country's largest)


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
        return sum(s.sites for s in self.segments)

    @property
    def pairs(self) -> int:
        return sum(s.pairs for s in self.segments)

    @property
    def merchant_lo(self) -> int:
        return min(s.merchant_lo for s in self.segments)

    @property
    def merchant_hi(self) -> int:
        return max(s.merchant_hi for s in self.segments)

    @property
    def cost(self) -> int:
        """Sites dominate S5/S6; a pair also costs a substream derivation and a plan lookup."""
        return self.sites + 4 * self.pairs


def plan_parts(merchant_id: np.ndarray, n_sites: np.ndarray, target_sites: int = DEFAULT_PART_SITES) -> list[Part]:
    """Cut merchant-major pairs (merchant_id ascending) into parts of about ``target_sites`` sites, only
    between merchants: a part closes with the merchant whose sites bring it to ``target_sites`` or more.

    >>> [(p.index, p.merchant_lo, p.merchant_hi, p.sites) for p in
    ...  plan_parts(np.array([1, 1, 2, 3], np.uint64), np.array([2, 2, 1, 5]), target_sites=4)]
    [(0, 1, 1, 4), (1, 2, 3, 6)]
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites = _counts(n_sites)
    parts: list[Part] = []
    p0 = 0
    while p0 < len(merchant_id):
        last = _pair_reaching(n_sites, p0, target_sites)
        p1 = int(np.searchsorted(merchant_id, merchant_id[last], side="right"))  # and the rest of its merchant
        parts.append(Part(len(parts), int(merchant_id[p0]), int(merchant_id[p1 - 1]), p1 - p0,
                          int(n_sites[p0:p1].sum(dtype=np.int64))))
        p0 = p1
    return parts


def _pair_reaching(n_sites: np.ndarray, p0: int, target: int) -> int:
    """The pair at which the sites counted from pair ``p0`` reach ``target`` (the last pair if they never do).

    Sums a window of pairs, not all of them (issue 17: no per-pair temporary over millions of pairs): since
    every pair has a site, ``target`` pairs reach the target; the window grows only for empty pairs.
    """
    width = max(1, min(int(target), 1 << 20))
    while True:
        window = np.cumsum(n_sites[p0:p0 + width], dtype=np.int64)
        i = int(np.searchsorted(window, target, side="left"))
        if i < len(window) or p0 + width >= len(n_sites):
            return p0 + min(i, len(window) - 1)
        width *= 2


def plan_layout(merchant_id: np.ndarray, country_iso: np.ndarray, n_sites: np.ndarray, *, part_sites: int,
                max_unit_sites: int, min_unit_sites: int, skew: float,
                workers: int) -> tuple[list[Part], list[Unit]]:
    """Parts and units of merchant-major pairs: :func:`plan_parts`, then :func:`plan_units` (a unit is never
    smaller than the memory bound allows: ``min_unit_sites`` is capped by ``max_unit_sites``)."""
    parts = plan_parts(merchant_id, n_sites, part_sites)
    return parts, plan_units(merchant_id, country_iso, n_sites, parts, max_unit_sites=max_unit_sites,
                             min_unit_sites=min(min_unit_sites, max_unit_sites), skew=skew, workers=workers)


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

    Pairs are merchant-major (merchant_id ascending), countries as ISO strings or uint16 codes
    (:func:`segment1b.keys.iso_u16`).  Units describe their pairs (:class:`Segment`), they hold no array.
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites, iso16 = _counts(n_sites), _iso_codes(country_iso)
    ends = np.searchsorted(merchant_id, np.array([p.merchant_hi for p in parts], dtype=np.uint64), side="right")
    spans = list(zip([0, *ends[:-1].tolist()], ends.tolist()))  # pairs of each part
    group_sites = _group_sites(iso16, n_sites, spans)
    if not group_sites:
        return []
    own = _named_countries(group_sites, named)
    spread = int(n_sites.sum(dtype=np.int64)) / (UNITS_PER_WORKER * max(1, int(workers)))
    target = int(min(max_unit_sites, max(min_unit_sites, skew * float(np.median(list(group_sites.values()))), spread)))
    units = _Units()
    for part, (a, b) in enumerate(spans):
        pack: list[Segment] = []
        pack_sites = 0
        for iso, idx in _country_groups(iso16[a:b]):  # ISO order
            idx += a
            sites = group_sites[(iso, part)]
            if sites * 4 >= target or iso in own:
                for piece in _split_by_sites(idx, n_sites, target):
                    units.add(iso, part, [_segment(iso, piece, merchant_id, n_sites)])
                continue
            if pack_sites + sites > target:
                units.add_pack(pack, part)
                pack, pack_sites = [], 0
            pack.append(_segment(iso, idx, merchant_id, n_sites))
            pack_sites += sites
        units.add_pack(pack, part)
    return sorted(units.units, key=lambda u: (-u.cost, u.label, u.chunk))


class _Units:
    """Units in the order they are cut; each label's chunks are numbered as they come."""

    def __init__(self):
        self.units: list[Unit] = []
        self.chunks: dict[str, int] = {}

    def add(self, label: str, part: int, segments: list[Segment]) -> None:
        k = self.chunks.get(label, 0)
        self.chunks[label] = k + 1
        self.units.append(Unit(label, part, k, tuple(segments)))

    def add_pack(self, pack: list[Segment], part: int) -> None:
        if pack:
            self.add(SMALL_LABEL if len(pack) > 1 else pack[0].country_iso, part, pack)


def _segment(iso: str, idx: np.ndarray, merchant_id: np.ndarray, n_sites: np.ndarray) -> Segment:
    """The description of the pairs at positions ``idx`` (one country's, merchant ascending)."""
    sites = n_sites[idx]
    return Segment(iso, int(merchant_id[idx[0]]), int(merchant_id[idx[-1]]), len(idx), int(sites.sum(dtype=np.int64)),
                   int(sites.max()))


def _named_countries(group_sites: dict[tuple[str, int], int], named: int) -> set[str]:
    """The ``named`` countries with the most sites (ties: ISO order) among those holding at least
    :data:`NAMED_MIN_SHARE` of all sites: they get units of their own on the dashboard (issue 15)."""
    country_sites: dict[str, int] = {}
    for (iso, _), sites in group_sites.items():
        country_sites[iso] = country_sites.get(iso, 0) + sites
    total = sum(country_sites.values())
    big = [c for c in country_sites if country_sites[c] >= NAMED_MIN_SHARE * total]
    return set(sorted(big, key=lambda c: (-country_sites[c], c))[:max(0, named)])


def _counts(n_sites) -> np.ndarray:
    """``n_sites`` as integers, in their own width (uint16 or int32 from the planning reader: no int64 copy;
    every sum below is taken in int64)."""
    n_sites = np.asarray(n_sites)
    return n_sites if n_sites.dtype.kind in "iu" else n_sites.astype(np.int64)


def _iso_codes(country_iso) -> np.ndarray:
    """Countries as uint16 codes (:func:`segment1b.keys.iso_u16`), from codes or two-letter strings."""
    codes = np.asarray(country_iso)
    if codes.dtype == np.uint16:
        return codes
    return iso_u16(pa.array(codes.astype(str), pa.string()))


def _group_sites(iso16: np.ndarray, n_sites: np.ndarray, spans: list[tuple[int, int]]) -> dict[tuple[str, int], int]:
    """Sites of each (country, part) group, in (part, ISO) order: two counts per part, no sort (the sort that
    lists a group's pairs runs once, when its units are cut)."""
    out: dict[tuple[str, int], int] = {}
    for part, (a, b) in enumerate(spans):
        codes = iso16[a:b]
        present = np.bincount(codes, minlength=1)
        sites = np.bincount(codes, weights=n_sites[a:b], minlength=1)  # exact: far below 2**53 sites
        for code in np.flatnonzero(present):  # uint16 codes sort as their ISO strings
            out[(iso_of(int(code)), part)] = int(sites[code])
    return out


def _country_groups(iso16: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Each country of a part's pairs with the positions of its pairs, in ISO order, merchant order within.

    One stable sort of the part's uint16 codes (ISO codes sort as their strings): planning works part by
    part, so its temporaries are a part's, not the run's (issue 17: x1000 has 18 M pairs).
    """
    if iso16.size == 0:
        return []
    order = np.argsort(iso16, kind="stable")
    codes = iso16[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [(iso_of(int(codes[a])), order[a:b]) for a, b in zip(starts, ends)]


def _split_by_sites(idx: np.ndarray, n_sites: np.ndarray, target: int) -> list[np.ndarray]:
    """Consecutive pieces of ``idx`` of about ``target`` sites: a piece closes after the pair that reaches it.

    A piece holds at most ``target`` sites plus its last pair, so a single pair bigger than the target
    stays whole.
    """
    sites = n_sites[idx]
    total = int(sites.sum(dtype=np.int64))
    if total <= target:
        return [idx]
    before = np.cumsum(sites, dtype=np.int64) - sites  # sites of the group before each pair
    piece = before // target
    cuts = np.flatnonzero(np.diff(piece)) + 1
    return np.split(idx, cuts)


@dataclass(frozen=True)
class CountryPairs:
    """Pairs ordered by (country, merchant), so that the pairs of any :class:`Segment` are one slice.

    What a unit task selects its segments from: its part's pairs, read once for all the part's units.
    """

    country: np.ndarray  # uint16 codes, ascending
    merchant_id: np.ndarray  # uint64, ascending within a country
    n_sites: np.ndarray

    @classmethod
    def of(cls, merchant_id: np.ndarray, country_iso: np.ndarray, n_sites: np.ndarray) -> CountryPairs:
        """From merchant-major pairs (countries as ISO strings or uint16 codes)."""
        codes = _iso_codes(country_iso)
        order = np.argsort(codes, kind="stable")
        return cls(codes[order], np.asarray(merchant_id, dtype=np.uint64)[order], _counts(n_sites)[order])

    def select(self, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
        """The segment's ``(merchant_id, n_sites)`` (uint64, int64), merchant ascending.

        Raises
        ------
        ValueError
            When the pairs found are not those the segment was planned with (other requirements).
        """
        code = np.uint16(iso_code(segment.country_iso))
        a, b = int(np.searchsorted(self.country, code, "left")), int(np.searchsorted(self.country, code, "right"))
        merchants = self.merchant_id[a:b]
        i = a + int(np.searchsorted(merchants, np.uint64(segment.merchant_lo), "left"))
        j = a + int(np.searchsorted(merchants, np.uint64(segment.merchant_hi), "right"))
        merchant_id, n_sites = self.merchant_id[i:j], self.n_sites[i:j].astype(np.int64)
        if len(merchant_id) != segment.pairs or int(n_sites.sum()) != segment.sites:
            raise ValueError(f"{segment}: found {len(merchant_id)} pairs of {int(n_sites.sum())} sites; the "
                             "requirements differ from those the unit was planned with")
        return merchant_id, n_sites
