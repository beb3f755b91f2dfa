"""S6 in-cell jitter (contract §8, RNG ``in_cell_jitter``), vectorised.

One substream per site; attempt a uses the block at counter offset a − 1: (u_lon, u_lat) = (x0, x1).
The first attempt of every site of a unit is drawn at once; the point-in-pixel and point-in-country
tests are array predicates (Shapely 2 on a prepared geometry, boundary counts as inside); only the
sites that failed are drawn again.  64 failures for a site is ``E613_RESAMPLE_EXHAUSTED``.

A tile whose land share is ``f`` exhausts the attempts with probability ``(1 - f)**64``.  The
``population_proxy`` basis gives no weight to tiles with ``f < 0.25`` (``0.75**64 ~ 1e-8``; S2,
docs/population-proxy.md), so sites never land on coastal slivers; other bases (and a country whose
every tile is a sliver, which falls back to uniform weights) can still reach E613 at coarse grids.
"""

from __future__ import annotations

import numpy as np
import shapely

from . import rng
from .errors import IntegrityError
from .grid import Grid

__all__ = ["MAX_ATTEMPTS", "jitter_sites"]

MAX_ATTEMPTS = 64


def jitter_sites(grid: Grid, country_iso: str, country_geometry, merchant_id: np.ndarray, site_order: np.ndarray,
                 tile_id: np.ndarray, master: bytes, parameter_hash: str,
                 max_attempts: int = MAX_ATTEMPTS) -> dict[str, np.ndarray | int]:
    """Jitter every site of a unit (one country) uniformly inside its tile and inside the country.

    Parameters
    ----------
    grid : Grid
    country_iso : str
    country_geometry : shapely geometry
        The country polygon(s), ideally prepared (``shapely.prepare``) once per worker.
    merchant_id, site_order, tile_id : ndarray
        Sites in writer-sort order.
    master : bytes
    parameter_hash : str

    Returns
    -------
    dict
        Per site: ``delta_lat_deg``, ``delta_lon_deg``, ``attempts``.  Per attempt (the RNG events, in
        site then attempt order): ``ev_site`` (index of the site), ``ev_attempt``, ``ev_accepted``,
        ``ev_delta_lat``, ``ev_delta_lon``, ``ev_before_hi``, ``ev_before_lo``, ``ev_after_hi``,
        ``ev_after_lo``.  Counters ``outside_pixel`` and ``outside_country`` (rejections by cause).

    Raises
    ------
    IntegrityError
        ``E613_RESAMPLE_EXHAUSTED`` naming the sites that failed ``max_attempts`` times.
    """
    merchant_id = np.asarray(merchant_id, dtype=np.uint64)
    site_order = np.asarray(site_order, dtype=np.int64)
    tile_id = np.asarray(tile_id, dtype=np.uint64)
    n = len(tile_id)
    key, hi, lo = rng.s6_substreams(master, merchant_id, np.full(n, country_iso), site_order.astype(np.uint64),
                                    parameter_hash)
    delta_lat = np.full(n, np.nan)
    delta_lon = np.full(n, np.nan)
    attempts = np.zeros(n, dtype=np.int64)
    events: list[tuple[np.ndarray, ...]] = []
    outside_pixel = outside_country = 0
    pending = np.arange(n)
    for attempt in range(1, max_attempts + 1):
        if pending.size == 0:
            break
        x0, x1, bhi, blo, ahi, alo = rng.block_at(key[pending], hi[pending], lo[pending],
                                                  np.uint64(attempt - 1))
        t = tile_id[pending]
        dlon, dlat = grid.jitter_deltas(t, rng.u01(x0), rng.u01(x1))
        lon, lat = grid.absolute_point(t, dlon, dlat)
        in_pixel = grid.contains_point(t, lon, lat)
        in_country = shapely.intersects_xy(country_geometry, lon, lat)
        ok = in_pixel & in_country
        outside_pixel += int((~in_pixel).sum())
        outside_country += int((in_pixel & ~in_country).sum())
        events.append((pending, np.full(pending.size, attempt, dtype=np.int64), ok, dlat, dlon, bhi, blo, ahi, alo))
        won = pending[ok]
        delta_lat[won], delta_lon[won], attempts[won] = dlat[ok], dlon[ok], attempt
        pending = pending[~ok]
    if pending.size:
        raise IntegrityError(
            "E613_RESAMPLE_EXHAUSTED",
            f"{pending.size} sites in {country_iso} found no point inside both their tile and the country in "
            f"{max_attempts} attempts", dataset="s6_site_jitter",
            rows=[{"merchant_id": int(merchant_id[i]), "legal_country_iso": country_iso,
                   "site_order": int(site_order[i]), "tile_id": int(tile_id[i])} for i in pending[:50]],
            hint="the tile's land share is tiny at this grid; use a finer grid (e.g. --grid 30s) or the "
                 "population_proxy basis")
    cols = [np.concatenate(c) for c in zip(*events)] if events else [np.empty(0)] * 9
    order = np.lexsort((cols[1], cols[0]))  # site, then attempt
    names = ["ev_site", "ev_attempt", "ev_accepted", "ev_delta_lat", "ev_delta_lon", "ev_before_hi", "ev_before_lo",
             "ev_after_hi", "ev_after_lo"]
    out: dict[str, np.ndarray | int] = {name: col[order] for name, col in zip(names, cols)}
    out.update(delta_lat_deg=delta_lat, delta_lon_deg=delta_lon, attempts=attempts, outside_pixel=outside_pixel,
               outside_country=outside_country)
    return out
