"""Synthetic outlet catalogue: the upstream (1A) input of Segment 1B, shaped like real data (issue #4).

The generator draws merchants, their outlet counts and their countries, and returns catalogue rows as
Arrow tables with the exact ``outlet_catalogue`` schema (contract §2), one *block* of merchants at a time.

Shape (calibrated on the ``reference`` scale with the ~245 GeoNames countries, see tests/test_generator.py):

- ``N`` outlets per merchant: ``P(N = n) ∝ n^-2.5`` for ``n = 1..2000`` (mean ≈ 1.9, 3/4 single-site,
  a heavy tail of merchants with hundreds of outlets);
- a home country drawn by population (``MIX_UNIFORM`` can mix in a uniform share; it is 0): with the
  GeoNames populations about 185 of ~230 eligible countries get sites at ``reference``, nearly all at x100;
- multi-country merchants: the probability grows with N (``MULTI_PERMILLE``), the number of extra
  countries is drawn from ``EXTRA_COUNTRY_WEIGHTS``; extra countries are drawn by the same weights,
  without replacement; every country gets one site, the rest is split with the home country weighted
  ``HOME_BIAS`` + u against u for a foreign one (so the home country usually holds the largest share);
- scales multiply the merchant count (``SCALES``) with the same distributions.

Rows: ``merchant_id`` distinct random u64 over the full range (ids ≥ 2^63 occur); ``site_id`` is
``site_order`` zero-padded to 6 digits (as upstream, unique within a pair); ``single_vs_multi_flag`` is
true for multi-site merchants (``N ≥ 2``, the upstream hurdle outcome); ``raw_nb_outlet_draw = N``;
``final_country_outlet_count`` = n of the pair; ``global_seed`` = seed.  Rows are in writer-sort order
(merchant_id, legal_country_iso, site_order) within a block, and block b holds exactly the merchant ids
of its slice ``[b·2^64/B, (b+1)·2^64/B)`` of the id space (B a power of two), so blocks written as parts
in block order are globally sorted, and every block can be generated on its own.

Determinism: each block has its own PCG64 stream seeded by ``SeedSequence(seed, spawn_key=(version,
block))``.  Only the raw 64-bit integers of the bit generator are used (NumPy guarantees that stream
across versions, unlike ``Generator`` methods); categorical draws compare them with integer thresholds
computed exactly, and the only floating-point operations are IEEE-exact (+, ×, ÷, floor).  So the rows
are identical on every platform and NumPy version; the Parquet bytes depend on the pyarrow version.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import numpy as np
import pyarrow as pa

from .contracts import dataset, iso_table
from .errors import InputError
from .identity import fingerprint_of, sha256_hex
from .storage import canonical_json

__all__ = [
    "GENERATOR_VERSION", "SCALES", "CountryTable", "Block", "GeneratedBlock", "generator_parameters",
    "manifest_fingerprint", "plan_blocks", "generate_block",
]

GENERATOR_VERSION = 1

# scale name -> number of merchants.  ``reference`` ≈ 32 200 outlets in ≈ 18 500 (merchant, country) pairs;
# ``tiny`` (≈ 1 900 outlets) is for quick tests.
REFERENCE_MERCHANTS = 16_850
SCALES: dict[str, int] = {
    "tiny": 1_000,
    "reference": REFERENCE_MERCHANTS,
    "x10": 10 * REFERENCE_MERCHANTS,
    "x100": 100 * REFERENCE_MERCHANTS,
    "x1000": 1000 * REFERENCE_MERCHANTS,
}

# Blocks hold at most this many merchants (≈ 500 k rows); their number is a power of two.
BLOCK_MERCHANTS = 1 << 18

MAX_OUTLETS = 2000  # largest N
TAIL_EXPONENT_TIMES_2 = 5  # P(N = n) ∝ n^-(5/2)
# P(merchant is multi-country | N), per mille, by N range (lower bound inclusive)
MULTI_PERMILLE: tuple[tuple[int, int], ...] = ((1, 0), (2, 240), (5, 400), (25, 520), (100, 560))
# weights of the number of extra (foreign) countries 1, 2, 3, ... of a multi-country merchant
EXTRA_COUNTRY_WEIGHTS: tuple[int, ...] = (560, 210, 100, 55, 35, 25, 15)
MAX_COUNTRIES = 1 + len(EXTRA_COUNTRY_WEIGHTS)
# country weight = population share mixed with a uniform share: p_c = (pop_c/P + MIX·1/C) / (1 + MIX)
MIX_UNIFORM = (0, 1)  # MIX as (numerator, denominator); 0: by population only
HOME_BIAS = 2.0  # the home country's weight in the split is HOME_BIAS + u, a foreign one u (u ~ U[0, 1))

_U64 = np.uint64
_TWO64 = 1 << 64


# --------------------------------------------------------------------------------------------------------
# inputs and identity
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CountryTable:
    """Eligible countries and their population: where merchants and outlets may be.

    Parameters
    ----------
    iso : tuple of str
        Uppercase ISO 3166-1 alpha-2 codes, ascending, unique, all in the ISO table.
    population : tuple of int
        Population of each country (≥ 0, not all 0); only the proportions matter.

    Use :meth:`from_rows` or :meth:`from_csv_text`, which validate and sort.

    Examples
    --------
    >>> t = CountryTable.from_rows([("FR", 68_000_000), ("DE", 84_000_000)])
    >>> t.iso, t.population
    (('DE', 'FR'), (84000000, 68000000))
    """

    iso: tuple[str, ...]
    population: tuple[int, ...]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int]]) -> "CountryTable":
        """Validate (iso, population) rows and sort them by ISO code.

        Raises
        ------
        InputError
            ``E302_FK_COUNTRY`` for a code that is not in the ISO table, ``E307_PK_DUPLICATE`` for a repeated
            code, ``E309_VALUE_RANGE`` for a negative or non-integer population, an empty table or a total of 0.
        """
        rows = [(str(iso), pop) for iso, pop in rows]
        known = iso_table()
        unknown = [{"country_iso": iso} for iso, _ in rows if iso not in known]
        if unknown:
            raise InputError("E302_FK_COUNTRY", f"{len(unknown)} generator countries are not uppercase ISO 3166-1 "
                             "alpha-2 codes of the ISO table (segment1b/data/iso3166_alpha2.csv)",
                             dataset="generator countries", rows=unknown)
        seen: dict[str, int] = {}
        for iso, _ in rows:
            seen[iso] = seen.get(iso, 0) + 1
        dups = [{"country_iso": iso, "times": k} for iso, k in sorted(seen.items()) if k > 1]
        if dups:
            raise InputError("E307_PK_DUPLICATE", "generator countries are listed more than once",
                             dataset="generator countries", rows=dups)
        bad = [{"country_iso": iso, "population": pop} for iso, pop in rows
               if isinstance(pop, bool) or not isinstance(pop, (int, np.integer)) or pop < 0]
        if bad:
            raise InputError("E309_VALUE_RANGE", "population must be an integer >= 0",
                             dataset="generator countries", rows=bad)
        if not rows or sum(int(p) for _, p in rows) == 0:
            raise InputError("E309_VALUE_RANGE", f"the generator needs at least one country with population > 0; "
                             f"got {len(rows)} countries with total population 0", dataset="generator countries")
        rows.sort()
        return cls(tuple(iso for iso, _ in rows), tuple(int(p) for _, p in rows))

    @classmethod
    def from_csv_text(cls, text: str) -> "CountryTable":
        """Parse CSV with a header naming ``country_iso`` (or ``iso``/``iso2``) and ``population``.

        Lines starting with ``#`` are comments.

        >>> CountryTable.from_csv_text("country_iso,population\\nFR,10\\n").iso
        ('FR',)
        """
        reader = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
        names = reader.fieldnames or []
        iso_col = next((c for c in ("country_iso", "iso", "iso2") if c in names), None)
        if iso_col is None or "population" not in names:
            raise InputError("E304_SCHEMA_MISMATCH", f"countries CSV needs columns country_iso and population; "
                             f"found {names}", dataset="generator countries")
        rows = []
        for i, rec in enumerate(reader, start=2):
            try:
                rows.append((rec[iso_col].strip(), int(rec["population"])))
            except (TypeError, ValueError):
                raise InputError("E309_VALUE_RANGE", "population is not an integer",
                                 dataset="generator countries", rows=[{"line": i, **rec}]) from None
        return cls.from_rows(rows)

    def canonical(self) -> list[list]:
        """``[[iso, population], ...]`` in ISO order: what :attr:`sha256` is taken over."""
        return [[iso, pop] for iso, pop in zip(self.iso, self.population)]

    @property
    def sha256(self) -> str:
        return sha256_hex(canonical_json(self.canonical()))

    def __len__(self) -> int:
        return len(self.iso)


def generator_parameters(scale: str, seed: int, countries: CountryTable) -> dict:
    """The canonical generator parameters; their SHA-256 (:func:`manifest_fingerprint`) names the catalogue.

    Raises
    ------
    InputError
        ``E309_VALUE_RANGE`` for an unknown scale or a seed outside u64.

    Examples
    --------
    >>> p = generator_parameters("reference", 42, CountryTable.from_rows([("FR", 1)]))
    >>> p["merchants"], p["generator_version"]
    (16850, 1)
    """
    if scale not in SCALES:
        raise InputError("E309_VALUE_RANGE", f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < _TWO64:
        raise InputError("E309_VALUE_RANGE", f"seed={seed!r} must be an integer in 0..2^64-1")
    return {"generator": "segment1b.generator", "generator_version": GENERATOR_VERSION, "scale": scale,
            "merchants": SCALES[scale], "seed": int(seed), "countries_sha256": countries.sha256}


def manifest_fingerprint(params: dict) -> str:
    """SHA-256 of the canonical generator parameters (contract §1)."""
    return fingerprint_of(params)


# --------------------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """Merchants whose ids lie in slice ``index`` of ``blocks`` equal slices of the u64 range."""

    index: int
    blocks: int  # a power of two
    merchants: int

    @property
    def shift(self) -> int:
        """Bits of the id that are random within the block."""
        return 64 - (self.blocks.bit_length() - 1)

    @property
    def id_lo(self) -> int:
        return self.index << self.shift if self.blocks > 1 else 0

    @property
    def id_hi(self) -> int:
        return self.id_lo + (1 << self.shift) - 1


def plan_blocks(merchants: int, max_block_merchants: int = BLOCK_MERCHANTS) -> list[Block]:
    """Split ``merchants`` into ``B`` blocks (B the smallest power of two with ≤ max merchants each).

    >>> [(b.index, b.merchants, hex(b.id_lo)) for b in plan_blocks(5, max_block_merchants=2)]
    [(0, 2, '0x0'), (1, 1, '0x4000000000000000'), (2, 1, '0x8000000000000000'), (3, 1, '0xc000000000000000')]
    """
    if merchants < 0 or max_block_merchants < 1:
        raise ValueError(f"merchants={merchants}, max_block_merchants={max_block_merchants}")
    blocks = 1
    while -(-merchants // blocks) > max_block_merchants:
        blocks *= 2
    return [Block(b, blocks, merchants // blocks + (1 if b < merchants % blocks else 0)) for b in range(blocks)]


# --------------------------------------------------------------------------------------------------------
# exact sampling from raw 64-bit integers
# --------------------------------------------------------------------------------------------------------

def _thresholds(weights: Iterable[int]) -> np.ndarray:
    """Integer thresholds so that ``searchsorted(th, x, 'right')`` for uniform u64 x picks i with P ∝ w_i."""
    weights = [int(w) for w in weights]
    total = sum(weights)
    if total <= 0 or min(weights) < 0:
        raise ValueError(f"weights must be >= 0 with a positive sum; got {weights[:10]}...")
    cum, out = 0, []
    for w in weights[:-1]:
        cum += w
        out.append((cum << 64) // total)
    return np.array(out, dtype=_U64)


def _categorical(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.searchsorted(thresholds, x, side="right").astype(np.int64)


def _uniform(x: np.ndarray) -> np.ndarray:
    """U[0, 1) from the top 53 bits: exact."""
    return (x >> _U64(11)).astype(np.float64) * (2.0 ** -53)


@lru_cache(maxsize=1)
def _outlet_thresholds() -> np.ndarray:
    # w(n) = floor(2^40 · n^-2.5), computed exactly with integer square roots
    c2 = 1 << 80
    return _thresholds(math.isqrt(c2 // n**TAIL_EXPONENT_TIMES_2) for n in range(1, MAX_OUTLETS + 1))


@lru_cache(maxsize=1)
def _multi_thresholds() -> np.ndarray:
    """Per N (index), the u64 below which a merchant is multi-country."""
    out = np.zeros(MAX_OUTLETS + 1, dtype=_U64)
    for lo, permille in MULTI_PERMILLE:
        out[lo:] = _U64((permille << 64) // 1000)
    return out


@lru_cache(maxsize=8)
def _country_thresholds(population: tuple[int, ...]) -> np.ndarray:
    num, den = MIX_UNIFORM
    total, count = sum(population), len(population)
    return _thresholds(p * count * den + num * total for p in population)


# --------------------------------------------------------------------------------------------------------
# one block
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratedBlock:
    """Rows of one block plus the counts the bundle summary and the job report need."""

    block: Block
    table: pa.Table = field(repr=False)
    rows: int
    pairs: int
    merchants: int
    multi_country_merchants: int
    max_pair_sites: int
    pairs_over_24: int  # pairs with more than 24 sites (the heavy tail)
    merchant_ids_ge_2_63: int
    sites_by_country: np.ndarray = field(repr=False)  # int64, aligned with CountryTable.iso
    pairs_by_country: np.ndarray = field(repr=False)


class _Stream:
    """Raw u64 draws of one block, in a fixed order."""

    def __init__(self, seed: int, block: int):
        ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(GENERATOR_VERSION, int(block)))
        self._bg = np.random.PCG64(ss)

    def draw(self, n: int) -> np.ndarray:
        return self._bg.random_raw(int(n)) if n else np.empty(0, dtype=_U64)


def _merchant_ids(stream: _Stream, block: Block) -> np.ndarray:
    """``block.merchants`` distinct ids in the block's slice, ascending."""
    shift = block.shift
    base = _U64(block.id_lo)

    def ids(n: int) -> np.ndarray:
        x = stream.draw(n)
        return x if shift == 64 else base | (x >> _U64(64 - shift))

    out = np.sort(ids(block.merchants))
    for _ in range(64):
        dup = np.flatnonzero(out[1:] == out[:-1])
        if dup.size == 0:
            return out
        out = np.sort(np.concatenate([np.delete(out, dup), ids(dup.size)]))
    raise RuntimeError("could not draw distinct merchant ids in 64 rounds; this is a bug in segment1b.generator, "
                       "please report it")


def _draw_pairs(stream: _Stream, merchants: int, n_countries: int, n_positive: int, country_th: np.ndarray):
    """Per merchant: N, home country; per pair (merchant-major, country ascending): merchant, country, n."""
    m = merchants
    total = _categorical(stream.draw(m), _outlet_thresholds()) + 1  # N in 1..MAX_OUTLETS
    home = _categorical(stream.draw(m), country_th)
    multi = stream.draw(m) < _multi_thresholds()[total]
    # k = 1 + extra countries, at most N (one site each) and at most the countries with a positive weight
    extra_cap = np.minimum(total - 1, min(len(EXTRA_COUNTRY_WEIGHTS), n_positive - 1))
    extra = _categorical(stream.draw(m), _thresholds(EXTRA_COUNTRY_WEIGHTS)) + 1
    k = 1 + np.where(multi, np.minimum(extra, extra_cap), 0)

    idx_multi = np.flatnonzero(k > 1)
    chosen = np.full((idx_multi.size, MAX_COUNTRIES), n_countries, dtype=np.int64)  # n_countries = empty slot
    if idx_multi.size:
        chosen[:, 0] = home[idx_multi]
        filled = np.ones(idx_multi.size, dtype=np.int64)
        want = k[idx_multi]
        for _ in range(100_000):  # rounds of one candidate per merchant still short of countries
            active = np.flatnonzero(filled < want)
            if active.size == 0:
                break
            cand = _categorical(stream.draw(active.size), country_th)
            fresh = ~np.any(chosen[active] == cand[:, None], axis=1)
            rows = active[fresh]
            chosen[rows, filled[rows]] = cand[fresh]
            filled[rows] += 1
        else:
            raise RuntimeError("could not draw distinct countries; this is a bug in segment1b.generator, "
                               "please report it")
        # split N: one site each, the rest by weights (home HOME_BIAS + u, foreign u); remainder to home
        u = _uniform(stream.draw(idx_multi.size * MAX_COUNTRIES)).reshape(idx_multi.size, MAX_COUNTRIES)
        used = chosen < n_countries
        w = np.where(used, u, 0.0)
        w[:, 0] += HOME_BIAS
        wsum = w[:, 0].copy()
        for j in range(1, MAX_COUNTRIES):  # explicit order of additions: identical everywhere
            wsum = wsum + w[:, j]
        rest = (total[idx_multi] - want).astype(np.float64)
        share = np.floor(rest[:, None] * w / wsum[:, None]).astype(np.int64)
        n = np.where(used, 1 + share, 0)
        n[:, 0] += total[idx_multi] - n.sum(axis=1)
        order = np.argsort(chosen, axis=1, kind="stable")
        chosen = np.take_along_axis(chosen, order, axis=1)
        n = np.take_along_axis(n, order, axis=1)

    single = np.flatnonzero(k == 1)
    pm = np.concatenate([single, np.repeat(idx_multi, MAX_COUNTRIES)])
    pc = np.concatenate([home[single], chosen.ravel()])
    pn = np.concatenate([total[single], n.ravel() if idx_multi.size else np.empty(0, np.int64)])
    keep = pc < n_countries
    pm, pc, pn = pm[keep], pc[keep], pn[keep]
    order = np.lexsort((pc, pm))
    return total, home, k, pm[order], pc[order], pn[order]


@lru_cache(maxsize=1)
def _site_ids() -> pa.Array:
    return pa.array([f"{i:06d}" for i in range(1, MAX_OUTLETS + 1)], pa.string())


def generate_block(block: Block, *, seed: int, countries: CountryTable, manifest_fingerprint: str) -> GeneratedBlock:
    """Catalogue rows of one block, sorted by (merchant_id, legal_country_iso, site_order).

    Parameters
    ----------
    block : Block
        From :func:`plan_blocks`.
    seed : int
        The catalogue's seed (u64); written as ``global_seed``.
    countries : CountryTable
        Eligible countries with population.
    manifest_fingerprint : str
        Written as the ``manifest_fingerprint`` column.

    Returns
    -------
    GeneratedBlock
        ``table`` has the ``outlet_catalogue`` schema.

    Examples
    --------
    >>> c = CountryTable.from_rows([("FR", 60), ("DE", 80), ("LU", 1)])
    >>> g = generate_block(plan_blocks(50)[0], seed=1, countries=c, manifest_fingerprint="f" * 64)
    >>> g.table.num_rows == g.rows == int(g.sites_by_country.sum()), g.merchants
    (True, 50)
    """
    stream = _Stream(seed, block.index)
    ids = _merchant_ids(stream, block)
    c = len(countries)
    n_positive = sum(1 for p in countries.population if p > 0)
    total, home, k, pm, pc, pn = _draw_pairs(stream, block.merchants, c, n_positive,
                                             _country_thresholds(countries.population))

    rows = int(pn.sum())
    row_pair = np.repeat(np.arange(pn.size), pn)
    row_merchant = pm[row_pair]
    pair_start = np.cumsum(pn) - pn
    site_order = (np.arange(rows, dtype=np.int64) - pair_start[row_pair] + 1).astype(np.int32)
    iso = pa.array(countries.iso, pa.string())
    table = pa.Table.from_arrays([
        pa.array([manifest_fingerprint], pa.string()).take(np.zeros(rows, np.int64)),
        pa.array(ids[row_merchant], pa.uint64()),
        _site_ids().take(site_order.astype(np.int64) - 1),
        iso.take(home[row_merchant]),
        iso.take(pc[row_pair]),
        pa.array(total[row_merchant] >= 2, pa.bool_()),
        pa.array(total[row_merchant].astype(np.int32), pa.int32()),
        pa.array(pn[row_pair].astype(np.int32), pa.int32()),
        pa.array(site_order, pa.int32()),
        pa.array(np.full(rows, int(seed), dtype=_U64), pa.uint64()),
    ], schema=dataset("outlet_catalogue").schema)
    return GeneratedBlock(
        block=block, table=table, rows=rows, pairs=int(pn.size), merchants=block.merchants,
        multi_country_merchants=int(np.count_nonzero(k > 1)), max_pair_sites=int(pn.max()) if pn.size else 0,
        pairs_over_24=int(np.count_nonzero(pn > 24)), merchant_ids_ge_2_63=int(np.count_nonzero(ids >> _U64(63))),
        sites_by_country=np.bincount(pc, weights=pn, minlength=c).astype(np.int64),
        pairs_by_country=np.bincount(pc, minlength=c).astype(np.int64))
