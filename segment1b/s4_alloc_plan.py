"""S4 allocation plan: split each pair's ``n_sites`` across its country's tiles (contract §6, no RNG).

For a pair with n sites over tiles with weights w (Σw = K = 10^dp): ``prod = w·n``, ``z = prod // K``,
``r = prod % K``, ``S = n − Σz``; the first S tiles by (r desc, tile_id asc) get +1; tiles with a
count ≥ 1 are emitted.

Cost is proportional to the output, not to (pairs × tiles).  Tiles with ``z ≥ 1`` have ``w ≥ K/n``,
so they are the ≤ n heaviest tiles; every other tile has ``r = w·n`` and ranks by weight.  Hence all
receiving tiles lie among the first ``m + S ≤ 2n`` tiles of the order (weight desc, tile_id asc), and no
tile beyond that prefix can outrank the S-th candidate inside it.  So a country needs one sorted
prefix of ``2·max(n)`` tiles (:func:`weight_prefix`), and pairs with the same n share one plan
(:func:`plan_for_n`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import IntegrityError, InputError

__all__ = ["WeightPrefix", "weight_prefix", "weight_prefix_chunks", "plan_for_n", "allocate_pairs"]

U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class WeightPrefix:
    """The heaviest tiles of one country in S4 order (weight desc, tile_id asc); zero weights excluded."""

    country_iso: str
    tile_id: np.ndarray  # uint64
    weight_fp: np.ndarray  # uint64
    K: int
    n_tiles: int  # tiles with weight > 0 in the whole country

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate tiles for a pair with n sites: the first min(2n, len) of the prefix."""
        if 2 * n > len(self.tile_id) and len(self.tile_id) < self.n_tiles:
            raise ValueError(f"prefix of {len(self.tile_id)} tiles is too short for n={n}; this is a bug")
        k = min(2 * n, len(self.tile_id))
        return self.tile_id[:k], self.weight_fp[:k]


def weight_prefix(country_iso: str, tile_id: np.ndarray, weight_fp: np.ndarray, dp: int,
                  max_n: int) -> WeightPrefix:
    """Sorted prefix of the ``2·max_n`` heaviest tiles of one country.

    Parameters
    ----------
    country_iso : str
    tile_id, weight_fp : ndarray of uint64
        All tiles of the country (any order).
    dp : int
        Decimal places of the weights; ``K = 10**dp``.
    max_n : int
        Largest ``n_sites`` of any pair in this country.

    Raises
    ------
    InputError
        ``E105_NORMALIZATION`` when the weights do not sum to K, ``E303_MISSING_WEIGHTS`` when the country
        has no tile with positive weight.
    """
    return weight_prefix_chunks(country_iso, [(tile_id, weight_fp)], dp, max_n)


def weight_prefix_chunks(country_iso: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], dp: int,
                         max_n: int) -> WeightPrefix:
    """:func:`weight_prefix` over a country read chunk by chunk (memory bounded by one chunk).

    The heaviest tiles of a union are the heaviest of the chunks' heaviest, so each chunk is reduced to its
    ``2·max_n`` candidates as it arrives; the weight total and the count of positive tiles are summed.
    """
    K = 10**dp
    length = 2 * int(max_n)
    total, n_positive, top_w = 0, 0, 0
    cand_t, cand_w = np.empty(0, np.uint64), np.empty(0, np.uint64)
    for tile_id, weight_fp in chunks:
        tile_id = np.asarray(tile_id, dtype=np.uint64)
        weight_fp = np.asarray(weight_fp, dtype=np.uint64)
        if not weight_fp.size:
            continue
        total += int(weight_fp.sum(dtype=np.uint64))
        top_w = max(top_w, int(weight_fp.max()))
        keep = _heaviest(tile_id, weight_fp, length)
        n_positive += int(np.count_nonzero(weight_fp))
        cand_t = np.concatenate([cand_t, tile_id[keep]])
        cand_w = np.concatenate([cand_w, weight_fp[keep]])
        keep = _heaviest(cand_t, cand_w, length)
        cand_t, cand_w = cand_t[keep], cand_w[keep]
    if total != K or top_w > K:
        raise InputError("E105_NORMALIZATION", f"tile weights of {country_iso} sum to {total}, expected K = {K}",
                         dataset="tile_weights", rows=[{"country_iso": country_iso, "sum_weight_fp": total}])
    if n_positive == 0:
        raise InputError("E303_MISSING_WEIGHTS", f"{country_iso} has no tile with positive weight",
                         dataset="tile_weights", rows=[{"country_iso": country_iso}])
    order = np.lexsort((cand_t, np.uint64(U64_MAX) - cand_w))  # weight desc, tile_id asc; exact
    return WeightPrefix(country_iso, cand_t[order], cand_w[order], K, n_positive)


def _heaviest(tile_id: np.ndarray, weight_fp: np.ndarray, length: int) -> np.ndarray:
    """Positions of the ``length`` heaviest positive tiles by (weight desc, tile_id asc), in any order.

    All tiles strictly above the cut weight, then the lowest tile_ids at the cut.  The cut is found by
    binary search on the weight value (~log2(K) counting passes): a country has millions of equal weights,
    which makes np.partition slow and a full sort slower.
    """
    positive = np.flatnonzero(weight_fp)
    if len(positive) <= length:
        return positive
    values = weight_fp[positive]
    lo, hi = 1, int(values.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.count_nonzero(values >= np.uint64(mid))) >= length:
            lo = mid
        else:
            hi = mid - 1
    cut = np.uint64(lo)
    above = positive[values > cut]
    at_cut = positive[values == cut]
    need = length - len(above)
    if need < len(at_cut):
        at_cut = at_cut[np.argpartition(tile_id[at_cut], need - 1)[:need]] if need > 0 else at_cut[:0]
    return np.concatenate([above, at_cut])


def plan_for_n(prefix: WeightPrefix, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Allocation of n sites: (tile_id ascending, n_sites_tile ≥ 1, tie decided by tile_id at the cut).

    Raises
    ------
    InputError
        ``E416_NUMERIC_OVERFLOW`` when ``weight_fp · n`` does not fit in 64 bits.
    IntegrityError
        ``E404_ALLOCATION_MISMATCH`` if the counts do not sum to n (an internal invariant).
    """
    tid, w = prefix.head(n)
    K = prefix.K
    if int(w[0]) * n > U64_MAX:
        raise InputError("E416_NUMERIC_OVERFLOW", f"weight_fp {int(w[0])} × n_sites {n} exceeds 2^64 − 1 in "
                         f"{prefix.country_iso} (dp = {len(str(K)) - 1})",
                         dataset="s4_alloc_plan",
                         rows=[{"country_iso": prefix.country_iso, "tile_id": int(tid[0]), "weight_fp": int(w[0]),
                                "n_sites": n}],
                         hint="use a smaller dp for the tile weights")
    prod = w * np.uint64(n)
    z = prod // np.uint64(K)
    r = prod % np.uint64(K)
    S = n - int(z.sum())
    counts = z.astype(np.int64)
    tie = False
    if S > 0:
        order = np.lexsort((tid, np.uint64(U64_MAX) - r))  # r desc, tile_id asc (exact on uint64)
        counts[order[:S]] += 1
        tie = S < len(order) and r[order[S - 1]] == r[order[S]]
    if int(counts.sum()) != n:
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"allocation of n={n} in {prefix.country_iso} sums to "
                             f"{int(counts.sum())}; this is a bug in segment1b", dataset="s4_alloc_plan")
    keep = counts > 0
    tid, counts = tid[keep], counts[keep]
    asc = np.argsort(tid, kind="stable")
    return tid[asc], counts[asc], bool(tie)


def allocate_pairs(prefix: WeightPrefix, merchant_id: np.ndarray, n_sites: np.ndarray) -> dict[str, np.ndarray | int]:
    """S4 rows for the pairs of one country: merchant_id, tile_id, n_sites_tile in (merchant, tile) order.

    ``merchant_id`` must be ascending (pairs of one country in writer-sort order).  Pairs with the same n
    share one plan.  Returns the three columns plus ``pairs``, ``ties_broken`` and ``plans`` counters.
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites = np.asarray(n_sites, dtype=np.int64)
    if n_sites.size and int(n_sites.min()) < 1:
        bad = np.flatnonzero(n_sites < 1)[:20]
        raise InputError("E309_VALUE_RANGE", "n_sites must be ≥ 1", dataset="s3_requirements",
                         rows=[{"merchant_id": int(merchant_id[i]), "n_sites": int(n_sites[i])} for i in bad])
    distinct, inverse = np.unique(n_sites, return_inverse=True)
    plans = [plan_for_n(prefix, int(n)) for n in distinct]
    plan_len = np.array([len(p[0]) for p in plans], dtype=np.int64)
    plan_start = np.concatenate([[0], np.cumsum(plan_len)[:-1]])
    all_tid = np.concatenate([p[0] for p in plans]) if plans else np.empty(0, np.uint64)
    all_cnt = np.concatenate([p[1] for p in plans]) if plans else np.empty(0, np.int64)
    rows_per_pair = plan_len[inverse]
    # gather index: for each output row, the row of its pair's plan
    pair_of_row = np.repeat(np.arange(len(n_sites)), rows_per_pair)
    offset_in_pair = np.arange(int(rows_per_pair.sum())) - np.repeat(np.cumsum(rows_per_pair) - rows_per_pair,
                                                                      rows_per_pair)
    src = plan_start[inverse][pair_of_row] + offset_in_pair
    ties = np.array([p[2] for p in plans], dtype=bool)
    return {
        "merchant_id": merchant_id[pair_of_row],
        "tile_id": all_tid[src].astype(np.uint64),
        "n_sites_tile": all_cnt[src].astype(np.int64),
        "pairs": int(len(n_sites)),
        "ties_broken": int(ties[inverse].sum()),
        "plans": int(len(distinct)),
    }
