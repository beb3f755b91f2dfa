"""S5 site → tile assignment (contract §7, RNG ``site_tile_assign``).

Per pair (m, c) with N = Σ n_sites_tile: the slots are the plan's tile_ids repeated ``n_sites_tile``
times, ascending.  One substream per pair; site_order k = 1..N draws one uniform from the block at
counter offset k − 1 (low lane).  Sites sorted by (u, site_order) take the slots in order.
"""

from __future__ import annotations

import numpy as np

from . import rng
from .errors import IntegrityError

__all__ = ["assign_sites"]


def assign_sites(country_iso: str, merchant_id: np.ndarray, n_sites: np.ndarray, plan_merchant: np.ndarray,
                 plan_tile: np.ndarray, plan_count: np.ndarray, master: bytes,
                 parameter_hash: str) -> dict[str, np.ndarray]:
    """Assign every site of a unit's pairs (one country) to a tile.

    Parameters
    ----------
    country_iso : str
    merchant_id, n_sites : ndarray
        The unit's pairs, merchant ascending (uint64, int64).
    plan_merchant, plan_tile, plan_count : ndarray
        The S4 plan rows of these pairs, in (merchant, tile_id) order.
    master : bytes
        Master material (:func:`segment1b.rng.master_material`).
    parameter_hash : str

    Returns
    -------
    dict of ndarray
        Site rows in (merchant_id, site_order) order: ``merchant_id``, ``site_order``, ``tile_id``, and for
        the RNG events ``u``, ``before_hi``, ``before_lo``, ``after_hi``, ``after_lo``.

    Raises
    ------
    IntegrityError
        ``E504_SUM_TO_N_MISMATCH`` when a pair's plan does not sum to its n_sites.
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    n_sites = np.asarray(n_sites, dtype=np.int64)
    plan_merchant = np.asarray(plan_merchant, dtype=np.uint64)
    plan_count = np.asarray(plan_count, dtype=np.int64)
    # plan totals per pair must equal n_sites (pairs and plan rows are both merchant-ascending)
    pair_of_plan = np.searchsorted(merchant_id, plan_merchant)
    ok_ref = (pair_of_plan < len(merchant_id)) & (merchant_id[np.minimum(pair_of_plan, len(merchant_id) - 1)]
                                                   == plan_merchant)
    planned = np.bincount(pair_of_plan[ok_ref], weights=plan_count[ok_ref], minlength=len(merchant_id))
    bad = np.flatnonzero(planned.astype(np.int64) != n_sites)
    if not ok_ref.all() or bad.size:
        raise IntegrityError("E504_SUM_TO_N_MISMATCH", f"S4 plan and n_sites disagree for {bad.size} pairs in "
                             f"{country_iso}", dataset="s5_site_tile_assignment",
                             rows=[{"merchant_id": int(merchant_id[i]), "legal_country_iso": country_iso,
                                    "n_sites": int(n_sites[i]), "planned": int(planned[i])} for i in bad[:20]])
    n_total = int(n_sites.sum())
    pair_idx = np.repeat(np.arange(len(merchant_id)), n_sites)
    first = np.cumsum(n_sites) - n_sites
    site_order = np.arange(n_total, dtype=np.int64) - np.repeat(first, n_sites) + 1
    key, hi, lo = rng.s5_substreams(master, merchant_id, np.full(len(merchant_id), country_iso), parameter_hash)
    x0, _x1, bhi, blo, ahi, alo = rng.block_at(key[pair_idx], hi[pair_idx], lo[pair_idx],
                                               (site_order - 1).astype(np.uint64))
    u = rng.u01(x0)
    # within each pair: u ascending, then site_order; pairs stay in merchant order
    order = np.lexsort((site_order, u, pair_idx))
    tile = np.empty(n_total, dtype=np.uint64)
    tile[order] = np.repeat(np.asarray(plan_tile, dtype=np.uint64), plan_count)
    return {"merchant_id": merchant_id[pair_idx], "site_order": site_order, "tile_id": tile, "u": u,
            "before_hi": bhi, "before_lo": blo, "after_hi": ahi, "after_lo": alo}
