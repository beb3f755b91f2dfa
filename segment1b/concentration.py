"""How strongly each country's sites clump into few tiles: top-tile share and Gini over tiles (issue #10).

Two pure steps over S5 assignments (``legal_country_iso``, ``tile_id`` per site):

1. :func:`tile_site_counts` counts sites per (country, tile).  It also merges counts: feed it the
   concatenated count tables of several parts with ``sites=`` and it sums them, so a caller can count part
   by part and keep memory bounded by the number of distinct (country, tile) pairs.
2. :func:`concentration` turns the counts into one row per country: sites, tiles used, the top tile and
   its share of the country's sites, and the Gini coefficient defined below.

Which Gini
----------
For a country with ``S`` sites and ``T`` tiles (``T`` from tile_index; unknown means "at least S"),
take ``k = min(S, T)``: the largest number of distinct tiles the ``S`` sites could occupy.  The vector is
the site counts of the tiles that received sites, padded with zeros up to ``k`` entries; ``G`` is its
Gini coefficient, with the entries sorted ascending ``x_(1) <= ... <= x_(k)``::

    G = 2 * sum_i(i * x_(i)) / (k * S) - (k + 1) / k          0 <= G <= (k - 1) / k

* ``G = 0`` when the sites are as spread as they can be (every site in its own tile, or a country with a
  single tile);
* ``G = (k - 1) / k`` (close to 1) when every site sits in one tile.

Why not the two obvious alternatives: over the tiles that received a site only, 400 sites in 4 tiles of
100 and 400 sites in one tile both give ``G = 0``, which hides exactly the clumping we want to see.  Over
every tile of the country with zeros, ``G`` is close to 1 for every country whose tiles outnumber its
sites (France has ~30 000 tiles at 5'), whether the sites are spread or not.  Padding to ``min(S, T)``
measures the sites against their most even possible spread.

Examples (country with at least 4 tiles, 4 sites):

==============================  =====  ==============
sites per used tile             G      top-tile share
==============================  =====  ==============
1, 1, 1, 1                      0      0.25
2, 2                            0.5    0.5
3, 1                            0.625  0.75
4                               0.75   1.0
==============================  =====  ==============
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "concentration", "gini", "tile_site_counts"]

# columns of the concentration table, in order
COLUMNS = ("country_iso", "sites", "tiles_used", "tiles_in_country", "top_tile_id", "top_tile_sites",
           "top_tile_share", "gini")


def _country_codes(country_iso) -> tuple[np.ndarray, np.ndarray]:
    """Country column as (codes int64, sorted unique ISO strings); codes index the strings."""
    arr = country_iso
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    if not isinstance(arr, pa.Array):
        arr = pa.array(np.asarray(arr, dtype=object) if len(arr) else [], pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.null_count:
        raise ValueError(f"country_iso has {arr.null_count} nulls; S5 assignments have none (bad input)")
    enc = pc.dictionary_encode(arr)
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.argsort(names.astype(str), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], names[order]


def _group_order(codes: np.ndarray, values: np.ndarray, n_codes: int) -> np.ndarray:
    """Order of rows by (code, value), values as uint64 (rows with equal keys in any order).

    One 64-bit key (code in the high bits) sorts ~20x faster than ``np.lexsort`` on two keys; it is used
    whenever the values leave room for the code bits, which they do for every real grid (tile ids < 2^40).
    """
    values = np.asarray(values, dtype=np.uint64)
    shift = 64 - max(int(n_codes - 1).bit_length(), 1)
    if not len(values) or int(values.max()) < (1 << shift):
        key = (codes.astype(np.uint64) << np.uint64(shift)) | values
        return np.argsort(key)
    return np.lexsort((values, codes))


def tile_site_counts(country_iso, tile_id, sites=None) -> pa.Table:
    """Sites per (country, tile), sorted by country then tile.

    Parameters
    ----------
    country_iso : pyarrow Array/ChunkedArray (string or dictionary) or sequence of str
        Country of each row (S5 ``legal_country_iso``).
    tile_id : array-like of uint64
        Tile of each row (S5 ``tile_id``).
    sites : array-like of int, optional
        Sites each row stands for (default 1 per row).  Pass the ``sites`` column of earlier results to
        merge the counts of several parts.

    Returns
    -------
    pyarrow.Table
        ``country_iso`` string, ``tile_id`` uint64, ``sites`` int64; one row per (country, tile) with at
        least one site.

    Raises
    ------
    ValueError
        Arrays of different lengths, nulls in ``country_iso``, or negative ``sites``.

    Examples
    --------
    >>> t = tile_site_counts(["FR", "DE", "FR", "FR"], [7, 3, 7, 5])
    >>> t.to_pydict()
    {'country_iso': ['DE', 'FR', 'FR'], 'tile_id': [3, 5, 7], 'sites': [1, 1, 2]}
    >>> tile_site_counts(t["country_iso"], t["tile_id"], t["sites"]).equals(t)
    True
    >>> tile_site_counts([], []).num_rows
    0
    """
    codes, names = _country_codes(country_iso)
    tiles = np.asarray(tile_id.to_numpy() if isinstance(tile_id, (pa.Array, pa.ChunkedArray)) else tile_id,
                       dtype=np.uint64)
    if sites is None:
        weight = np.ones(len(tiles), np.int64)
    else:
        weight = np.asarray(sites.to_numpy() if isinstance(sites, (pa.Array, pa.ChunkedArray)) else sites,
                            dtype=np.int64)
    if not len(codes) == len(tiles) == len(weight):
        raise ValueError(f"country_iso, tile_id and sites differ in length: {len(codes)}, {len(tiles)}, "
                         f"{len(weight)}")
    if len(weight) and weight.min() < 0:
        raise ValueError("sites must be >= 0")
    if not len(tiles):
        return pa.table({"country_iso": pa.array([], pa.string()), "tile_id": pa.array([], pa.uint64()),
                         "sites": pa.array([], pa.int64())})
    order = _group_order(codes, tiles, len(names))
    c, t, w = codes[order], tiles[order], weight[order]
    new = np.empty(len(c), bool)
    new[0] = True
    new[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    counts = np.add.reduceat(w, starts)
    keep = counts > 0
    country = pa.array(names.tolist(), pa.string()).take(pa.array(c[starts][keep]))
    return pa.table({"country_iso": country,
                     "tile_id": pa.array(t[starts][keep], pa.uint64()),
                     "sites": pa.array(counts[keep], pa.int64())})


def gini(counts: Sequence[int], k: int | None = None) -> float:
    """Gini coefficient of ``counts`` padded with zeros to ``k`` entries (default: no padding).

    The reference (one country at a time) for :func:`concentration`; see the module docstring.

    Raises
    ------
    ValueError
        ``k`` smaller than the number of counts, or negative counts.

    Examples
    --------
    >>> gini([1, 1, 1, 1]), gini([2, 2], k=4), gini([3, 1], k=4), gini([4], k=4)
    (0.0, 0.5, 0.625, 0.75)
    >>> gini([5], k=1), gini([])
    (0.0, 0.0)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    k = len(x) if k is None else int(k)
    if k < len(x):
        raise ValueError(f"k={k} is smaller than the {len(x)} counts it should pad")
    if len(x) and x[0] < 0:
        raise ValueError("counts must be >= 0")
    total = x.sum()
    if k == 0 or total == 0:
        return 0.0
    ranks = np.arange(k - len(x) + 1, k + 1, dtype=np.float64)  # the zeros take ranks 1..k-len(x)
    return float(2.0 * np.dot(ranks, x) / (k * total) - (k + 1) / k)


def concentration(counts: pa.Table, tiles_in_country: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per country: sites, tiles used, top tile and its share, Gini over ``min(sites, tiles)`` tiles.

    Parameters
    ----------
    counts : pyarrow.Table
        Output of :func:`tile_site_counts` (any row order; one row per country and tile).
    tiles_in_country : mapping ISO -> int, optional
        Tiles of each country in tile_index (``T`` in the module docstring).  A country missing here is
        taken to have at least as many tiles as sites.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``tiles_in_country`` is ``-1`` where unknown.  Sorted most clumped first:
        by ``gini`` descending, then ``top_tile_share`` descending, ``sites`` descending, ``country_iso``.
        The top tile is the one with most sites (the lowest ``tile_id`` among ties).

    Raises
    ------
    ValueError
        A country uses more tiles than ``tiles_in_country`` says it has (the inputs disagree).

    Examples
    --------
    >>> c = tile_site_counts(["FR"] * 4 + ["MC"] * 3, [1, 1, 1, 2, 9, 9, 9])
    >>> concentration(c, {"MC": 1})[["country_iso", "sites", "tiles_used", "top_tile_share", "gini"]]
      country_iso  sites  tiles_used  top_tile_share   gini
    0          FR      4           2            0.75  0.625
    1          MC      3           1            1.00  0.000
    """
    import pandas as pd  # at call time: the CLI imports this module to list its commands

    tiles_in_country = dict(tiles_in_country or {})
    codes, names = _country_codes(counts["country_iso"])
    tiles = counts["tile_id"].to_numpy().astype(np.uint64)
    x = counts["sites"].to_numpy().astype(np.int64)
    n_c = len(names)
    if not n_c:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(
            COLUMNS, ("str", "int64", "int64", "int64", "uint64", "int64", "float64", "float64"))})
    # rows by (country, tile): the top tile is the first tile with the country's largest count
    order = _group_order(codes, tiles, n_c)
    c, t, x = codes[order], tiles[order], x[order]
    used = np.bincount(c, minlength=n_c)
    sites = np.bincount(c, weights=x, minlength=n_c).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(used)[:-1]])
    top_sites = np.maximum.reduceat(x, start)
    top_row = np.minimum.reduceat(np.where(x == top_sites[c], np.arange(len(x)), len(x)), start)
    known = np.array([tiles_in_country.get(n, -1) for n in names], dtype=np.int64)
    bad = (known >= 0) & (used > known)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{names[i]} has sites in {used[i]} tiles but tiles_in_country says {known[i]}")
    k = np.where(known >= 0, np.minimum(sites, known), sites)
    # Gini: counts ascending within the country; the k - used zeros take ranks 1..k-used
    x = x[_group_order(c, x, n_c)]
    rank = (k - used)[c] + (np.arange(len(x)) - start[c]) + 1
    weighted = np.bincount(c, weights=rank.astype(np.float64) * x, minlength=n_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = 2.0 * weighted / (k * sites) - (k + 1) / k
    g = np.where(sites > 0, np.maximum(g, 0.0), 0.0)  # the formula's rounding can give -1e-17
    frame = pd.DataFrame({
        "country_iso": pd.Series(names.astype(str), dtype="str"), "sites": sites, "tiles_used": used,
        "tiles_in_country": known, "top_tile_id": t[top_row], "top_tile_sites": top_sites,
        "top_tile_share": top_sites / np.maximum(sites, 1), "gini": g})
    frame = frame.sort_values(["gini", "top_tile_share", "sites", "country_iso"],
                              ascending=[False, False, False, True], kind="stable")
    return frame.reset_index(drop=True)[list(COLUMNS)]
