"""S2 tile weights: per-country fixed-decimal weights over the tiles (contract §4), as pure kernels.

Masses by basis: ``uniform`` (1), ``area_m2`` (``pixel_area_m2``), ``population`` (raster value, nodata
-> 0) and ``population_proxy`` (GeoNames towns spread over nearby tiles plus a rural floor, times the
tile's land share, and 0 below a minimum land share so that S6 never gets a site on a sliver of coast;
see :mod:`segment1b.population_proxy` and docs/population-proxy.md); :func:`country_masses` gives a country's
masses by basis.

Quantisation is exact largest remainder (:func:`largest_remainder`): ``K = 10**dp``, ``q_i = m_i K / M``,
``z_i = floor(q_i)``, ``K - sum z`` tiles ranked by (remainder desc, tile_id asc) get +1.  The total ``M`` of
the float64 masses is computed exactly as an integer times a power of two; the bulk of the tiles is
decided in float64 with a certified error bound, and only tiles whose floor or rank is uncertain are
settled with exact integer arithmetic, grouped by identical mass value (so the 42 M tied remainders of
Russia under ``uniform`` cost one big-integer division).
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from .errors import InputError, IntegrityError
from .grid import Grid
from .population_proxy import LandStats, ProxyParams, land_shares, proxy_masses_inplace

if TYPE_CHECKING:
    from .s1_tile_index import Runs

__all__ = [
    "largest_remainder",
    "country_weights",
    "check_masses",
    "check_monotone",
    "exact_total",
    "raster_masses",
    "country_masses",
    "total_as_float",
    "weights_table",
]


# -- masses --------------------------------------------------------------------------------------------


def check_masses(masses: np.ndarray, tile_ids, country_iso: str) -> None:
    """E105_NORMALIZATION when a mass is negative or not finite, naming the tiles.

    ``tile_ids`` is an array or a callable returning it (only evaluated for the message).
    """
    bad = ~(masses >= 0) | (masses == np.inf)  # NaN compares False
    if bad.any():
        idx = np.flatnonzero(bad)
        tile_ids = tile_ids() if callable(tile_ids) else tile_ids
        raise InputError(
            "E105_NORMALIZATION",
            f"{len(idx)} tile mass(es) of {country_iso} are negative or not "
            "finite; masses must be finite and >= 0",
            dataset="tile_weights",
            rows=[
                {"country_iso": country_iso, "tile_id": int(tile_ids[i]), "mass": float(masses[i])}
                for i in idx[:50]
            ],
            hint="fix the population raster (nodata value, negative cells)",
        )


def raster_masses(
    rows: np.ndarray, cols: np.ndarray, row0: int, windows: list[tuple[int, np.ndarray]], nodata: float | None
) -> np.ndarray:
    """Raster value at each tile (float64; nodata -> 0).

    Parameters
    ----------
    rows, cols : arrays
        The tiles' raster rows and columns.
    row0 : int
        First row of the window arrays.
    windows : list of (col0, 2-D array)
        Raster windows read for the unit, starting at column ``col0`` and row ``row0``; disjoint, ascending.
    nodata : float or None
        The raster's nodata value (NaN allowed).
    """
    out = np.zeros(len(rows), dtype=np.float64)
    if not len(rows):
        return out
    starts = np.array([c0 for c0, _ in windows], dtype=np.int64)
    which = np.searchsorted(starts, cols.astype(np.int64), side="right") - 1
    for k, (c0, arr) in enumerate(windows):
        sel = np.flatnonzero(which == k)
        vals = arr[rows[sel].astype(np.int64) - row0, cols[sel].astype(np.int64) - c0].astype(np.float64)
        if nodata is not None:
            vals[(vals == nodata) | (np.isnan(vals) & bool(np.isnan(nodata)))] = 0.0
        out[sel] = vals
    return out


def country_masses(basis: str, grid: Grid, runs: Sequence[Runs], unit_masses: Sequence, town_total: float,
                   proxy: ProxyParams | None) -> tuple[np.ndarray, LandStats | None]:
    """Mass of every tile of one country by ``basis`` (contract §4), in tile order (its units' in part order).

    Parameters
    ----------
    basis : str
        ``uniform``, ``area_m2``, ``population`` or ``population_proxy``.
    grid : Grid
    runs : sequence of Runs
        The tiles of each unit of the country, in part order (ascending tile_id overall).
    unit_masses : sequence
        What S1 computed per unit for the basis: nothing (``uniform``/``area_m2``), the raster value of each
        tile (``population``: :func:`raster_masses`) or the town kernel ``(tile index, mass)`` of
        :func:`proxy_kernel_mass` (``population_proxy``).
    town_total : float
        ``P_c``, the population of the country's towns (proxy).
    proxy : ProxyParams or None
        The proxy's constants (``population_proxy`` only).

    Returns
    -------
    (float64 masses, LandStats of the proxy or None)
    """
    counts = [r.n_tiles for r in runs]
    n = int(sum(counts))
    if basis == "uniform":
        return np.ones(n, dtype=np.float64), None
    if basis == "population":
        return np.concatenate([m for m, c in zip(unit_masses, counts) if c]), None
    row = np.concatenate([r.row for r in runs]).astype(np.int64)
    run_len = np.concatenate([r.col1.astype(np.int64) - r.col0 for r in runs])
    masses = np.repeat(grid.row_area_m2[row], run_len)
    if basis != "population_proxy":
        return masses, None
    offsets = np.cumsum([0] + counts)
    k_idx = np.concatenate([m[0] + off for m, c, off in zip(unit_masses, counts, offsets[:-1]) if c])
    k_val = np.concatenate([m[1] for m, c in zip(unit_masses, counts) if c])
    l_idx, l_inside, a_c = land_shares(runs, offsets, row, run_len, grid, proxy.land_samples)
    share = l_inside.astype(np.float64) / float(proxy.land_samples**2)
    masses = proxy_masses_inplace(masses, k_idx, k_val, town_total, a_c, proxy, l_idx, share)
    return masses, LandStats(a_c, int(len(l_idx)), int((share < proxy.min_land_share).sum()))


def total_as_float(total: tuple[int, int]) -> float:
    """An exact mass total ``(numerator, exponent)`` (:func:`exact_total`) as a float (inf above float64)."""
    num, e = total
    return math.ldexp(num, e) if num.bit_length() + e < 1024 else math.inf


# -- exact largest remainder -------------------------------------------------------------------------

_CHUNK = 1 << 18  # elements per pass: the temporaries of a chunk stay in the CPU cache


def _split(masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m = a * 2**e with integer 0 <= a < 2**53 (exact for every finite float64 >= 0), from the bits."""
    v = np.ascontiguousarray(masses, dtype=np.float64).view(np.int64)
    field = v >> 52  # -0.0 has the sign bit: field < 0, mantissa 0 -> contributes nothing
    a = v & ((1 << 52) - 1)
    a |= (field > 0).astype(np.int64) << 52
    return a, np.maximum(field, 1) - 1075


def exact_total(masses: np.ndarray) -> tuple[int, int]:
    """The exact sum of non-negative float64 masses as ``(numerator, exponent)``: ``sum = num * 2**exp``.

    Mantissas (53-bit integers) are split into 27+26-bit halves and summed per binary exponent with
    ``np.bincount`` over chunks of 2**18 values, so every float64 partial sum is an exact integer (< 2**53);
    Python ints combine the per-exponent sums.

    >>> from fractions import Fraction
    >>> num, e = exact_total(np.array([0.1, 0.2]))
    >>> Fraction(num) * Fraction(2) ** e == Fraction(0.1) + Fraction(0.2)
    True
    """
    if not len(masses):
        return 0, 0
    smallest = float(np.min(masses, where=masses > 0, initial=np.inf))
    if smallest == np.inf:
        return 0, 0
    field_min = int(np.array(smallest).view(np.int64) >> 52)
    e_min = max(field_min, 1) - 1075
    hi_tot = lo_tot = None
    for s in range(0, len(masses), _CHUNK):
        a, e = _split(masses[s : s + _CHUNK])
        b = np.maximum(e - e_min, 0)  # zeros (and -0.0) land in bin 0 with a == 0
        hi = np.bincount(b, weights=(a >> 26).astype(np.float64), minlength=2100)
        lo = np.bincount(b, weights=(a & ((1 << 26) - 1)).astype(np.float64), minlength=2100)
        # 2**27 * 2**18 < 2**53: each chunk's per-bin sums are exact; int64 totals hold 2**36 chunks
        hi_tot = hi.astype(np.int64) if hi_tot is None else hi_tot + hi.astype(np.int64)
        lo_tot = lo.astype(np.int64) if lo_tot is None else lo_tot + lo.astype(np.int64)
    total = 0
    for k in np.flatnonzero(hi_tot | lo_tot).tolist():
        total += ((int(hi_tot[k]) << 26) + int(lo_tot[k])) << k
    return (total, e_min) if total else (0, 0)


def largest_remainder(masses: np.ndarray, dp: int, total: tuple[int, int] | None = None) -> np.ndarray:
    """Exact largest-remainder quantisation of masses to integers summing to ``10**dp``.

    Parameters
    ----------
    masses : float64 array
        Finite, >= 0, not all zero, in ascending tile_id order (ties go to the lower index).
    dp : int
        Decimal places, 0..18.
    total : (int, int), optional
        :func:`exact_total` of ``masses`` when the caller has it already.

    Returns
    -------
    uint64 array of weights, ``sum == 10**dp``.

    Examples
    --------
    >>> largest_remainder(np.array([1.0, 1.0, 1.0]), 1).tolist()
    [4, 3, 3]
    >>> largest_remainder(np.array([0.7, 0.3]), 0).tolist()
    [1, 0]
    """
    n = len(masses)
    K = 10 ** int(dp)
    if n == 0:
        raise IntegrityError("E103_ZERO_COUNTRY", "largest_remainder needs at least one tile (bug in caller)")
    if masses.min() == masses.max():
        # all masses equal: q = K/n for every tile; remainders all tie -> first tiles by tile_id
        z, s = divmod(K, n)
        w = np.full(n, z, dtype=np.uint64)
        w[:s] += np.uint64(1)
        return w
    num, e_min = total if total is not None else exact_total(masses)
    # q = m * (K / M): K/M rounded once; M is rounded once (correctly rounded big-int division), the
    # product once: |q - q_exact| <= 3 * 2**-53 * q (+ 2**-1074 underflow) < delta.
    bits = num.bit_length()
    shift = 0
    if -900 < e_min + bits < 900:  # then K / M (K <= 2**60) is finite and normal
        m_total = float(num << e_min) if e_min >= 0 else num / (1 << -e_min)  # correctly rounded
    else:  # extreme magnitudes: scale masses by an exact power of two first
        shift = -(e_min + bits)
        m_total = num / (1 << bits)
    c = float(K) / m_total
    q_max = float(np.ldexp(masses.max(), shift)) * c  # rounding is monotone: the largest q
    delta = (q_max + 1.0) * 2.0**-50 + 1e-300
    # One cache-friendly pass: floors (int64, reused as the weights), remainders, ambiguous floors.
    w = np.empty(n, dtype=np.uint64)
    zi = w.view(np.int64)
    r = np.empty(n, dtype=np.float64)
    amb_parts = []
    for s in range(0, n, _CHUNK):
        m = masses[s : s + _CHUNK]
        q = (np.ldexp(m, shift) if shift else m) * c
        z = np.floor(q)
        zi[s : s + _CHUNK] = z  # q <= K <= 10**18 < 2**63
        rc = q - z  # exact
        r[s : s + _CHUNK] = rc
        amb_c = np.flatnonzero((rc < delta) | (rc > 1.0 - delta))
        if len(amb_c):
            amb_parts.append(amb_c + s)

    def exact(idx: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Exact (z, remainder numerator over num) for tiles idx, computed once per distinct mass."""
        vals, inv = np.unique(masses[idx], return_inverse=True)
        va, ve = _split(vals)
        zz = np.empty(len(vals), dtype=np.int64)
        rr: list[int] = []
        for k, (ak, ek) in enumerate(zip(va.tolist(), ve.tolist())):
            big = (ak << max(ek - e_min, 0)) * K  # zero masses: ak == 0
            qk, rk = divmod(big, num)
            zz[k] = qk
            rr.append(rk)
        return zz, rr, inv

    if amb_parts:
        amb = np.concatenate(amb_parts)
        zz, rr, inv = exact(amb)
        zi[amb] = zz[inv]
        r[amb] = np.array([x / num for x in rr], dtype=np.float64)[inv]
    need = K - int(zi.sum())
    if not 0 <= need <= n:
        raise IntegrityError(
            "E105_NORMALIZATION",
            f"largest remainder needs {need} bonus units for {n} tiles; "
            "this is a bug in segment1b, please report it",
        )
    if need == 0:
        return w
    t = _kth_largest(r, need)
    sure_parts, band_parts = [], []
    for s in range(0, n, _CHUNK):
        rc = r[s : s + _CHUNK]
        sure_parts.append(np.flatnonzero(rc > t + 2 * delta) + s)
        band_parts.append(np.flatnonzero((rc >= t - 2 * delta) & (rc <= t + 2 * delta)) + s)
    sure, band = np.concatenate(sure_parts), np.concatenate(band_parts)
    take = need - len(sure)
    if take < 0 or take > len(band):
        raise IntegrityError(
            "E105_NORMALIZATION",
            "largest remainder cut-off is inconsistent; this is a bug in segment1b, please report it",
        )
    w[sure] += np.uint64(1)
    if take:
        _, rr, inv = exact(band)
        # rank distinct remainders descending; stable sort keeps tile_id ascending inside a rank
        levels = {v: i for i, v in enumerate(sorted(set(rr), reverse=True))}  # equal remainders, equal rank
        rank = np.array([levels[v] for v in rr], dtype=np.int64)
        chosen = band[np.argsort(rank[inv], kind="stable")[:take]]
        w[chosen] += np.uint64(1)
    return w


def _kth_largest(r: np.ndarray, k: int, bins: int = 1 << 16) -> float:
    """The k-th largest value of ``r`` (values in [0, 1)), via a histogram pass then a small partition.

    Same answer as ``np.partition(r, len(r) - k)[len(r) - k]`` without copying ``r``.
    """
    counts = np.zeros(bins, dtype=np.int64)
    for s in range(0, len(r), _CHUNK):
        b = np.minimum((r[s : s + _CHUNK] * bins).astype(np.int64), bins - 1)
        counts += np.bincount(b, minlength=bins)
    above = np.cumsum(counts[::-1])[::-1]  # above[b] = values in bins >= b
    b_star = int(np.flatnonzero(above >= k)[-1])
    k_in = k - (int(above[b_star + 1]) if b_star + 1 < bins else 0)
    vals = np.concatenate(
        [
            rc[np.minimum((rc * bins).astype(np.int64), bins - 1) == b_star]
            for rc in (r[s : s + _CHUNK] for s in range(0, len(r), _CHUNK))
        ]
    )
    return float(np.partition(vals, len(vals) - k_in)[len(vals) - k_in])


def check_monotone(masses: np.ndarray, weights: np.ndarray, tile_ids, country_iso: str) -> None:
    """E106_MONOTONICITY (internal invariant): a heavier tile never gets a smaller weight.

    Per distinct weight, the lightest and heaviest mass (``np.minimum.at``/``np.maximum.at`` over weights
    below 2**16, a sort for the at most ``K / 2**16`` heavier tiles); the invariant holds when no weight's
    lightest tile is lighter than the heaviest tile of a smaller weight.  ``tile_ids`` may be a callable
    returning the ids (only needed for the message).
    """
    if len(masses) < 2 or masses.min() == masses.max():
        return
    cap = 1 << 16
    small = weights < np.uint64(cap)
    all_small = bool(small.all())
    w16 = (weights if all_small else weights[small]).astype(np.int64)
    m16 = masses if all_small else masses[small]
    lo = np.full(cap, np.inf)
    hi = np.full(cap, -np.inf)
    np.minimum.at(lo, w16, m16)
    np.maximum.at(hi, w16, m16)
    present = np.flatnonzero(hi >= lo)
    gw, gmin, gmax = present.astype(np.uint64), lo[present], hi[present]
    if not all_small:
        big = np.flatnonzero(~small)
        order = np.argsort(weights[big], kind="stable")
        wb, mb = weights[big][order], masses[big][order]
        starts = np.flatnonzero(np.r_[True, wb[1:] != wb[:-1]])
        gw = np.r_[gw, wb[starts]]
        gmin = np.r_[gmin, np.minimum.reduceat(mb, starts)]
        gmax = np.r_[gmax, np.maximum.reduceat(mb, starts)]
    prev_max = np.maximum.accumulate(gmax)
    bad = np.flatnonzero(gmin[1:] < prev_max[:-1]) + 1
    if len(bad):
        g = int(bad[0])
        light = np.flatnonzero((weights == gw[g]) & (masses == gmin[g]))[0]
        heavy = np.flatnonzero((weights < gw[g]) & (masses > gmin[g]))[0]
        ids = tile_ids() if callable(tile_ids) else tile_ids
        raise IntegrityError(
            "E106_MONOTONICITY",
            f"a heavier tile of {country_iso} got a smaller weight; this is "
            "a bug in segment1b, please report it",
            dataset="tile_weights",
            rows=[
                {
                    "country_iso": country_iso,
                    "tile_id": int(ids[i]),
                    "mass": float(masses[i]),
                    "weight_fp": int(weights[i]),
                }
                for i in (heavy, light)
            ],
        )


def country_weights(
    masses: np.ndarray, tile_ids, dp: int, country_iso: str, *, check: bool = True
) -> tuple[np.ndarray, bool]:
    """Weights of one country's tiles: E105 checks, zero-mass fallback, exact largest remainder, E106.

    Parameters
    ----------
    masses : float64 array
        One per tile, in ascending tile_id order.
    tile_ids : uint64 array or callable
        Ascending ids, or a function returning them (only called for error messages).
    dp : int
    country_iso : str

    Returns
    -------
    (weight_fp uint64 array, zero_mass_fallback, exact mass total as (numerator, exponent))

    Raises
    ------
    InputError
        ``E105_NORMALIZATION`` for negative or non-finite masses (naming tiles).
    IntegrityError
        ``E105_NORMALIZATION`` if the weights do not sum to ``10**dp``; ``E106_MONOTONICITY``.
    """
    check_masses(masses, tile_ids, country_iso)
    total = exact_total(masses)
    fallback = total[0] == 0
    if fallback:
        masses = np.ones(len(masses), dtype=np.float64)
        total = (len(masses), 0)
    w = largest_remainder(masses, dp, total)
    w_sum = int(w.sum(dtype=np.uint64))
    if w_sum != 10**dp:
        raise IntegrityError(
            "E105_NORMALIZATION",
            f"weights of {country_iso} sum to {w_sum}, expected 10^{dp}; "
            "this is a bug in segment1b, please report it",
            dataset="tile_weights",
            rows=[{"country_iso": country_iso, "sum_weight_fp": w_sum, "K": 10**dp}],
        )
    if check:
        check_monotone(masses, w, tile_ids, country_iso)
    return w, fallback, total


def weights_table(
    country_iso: str, tile_ids: np.ndarray, weights: np.ndarray, dp: int, fallback: bool
) -> pa.Table:
    """tile_weights rows (contract §2) for tiles in tile_id order."""
    from .s1_tile_index import string_column

    n = len(tile_ids)
    return pa.table(
        {
            "country_iso": string_column(country_iso, n),
            "tile_id": pa.array(tile_ids, type=pa.uint64()),
            "weight_fp": pa.array(weights, type=pa.uint64()),
            "dp": pa.array(np.full(n, dp, dtype=np.uint32)),
            "zero_mass_fallback": pa.array(np.full(n, fallback, dtype=bool)),
        }
    )
