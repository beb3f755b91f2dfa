"""S9 on the S4 allocation plan: quotas on every row, an independent recomputation on a sample (contract §6).

:func:`check_part_plan` checks every row of an ``s4_alloc_plan`` part: order, n_sites_tile ≥ 1, each
pair's Σ n_sites_tile = its S3 n_sites (E404) and S5's sites per (pair, tile) = n_sites_tile (E503).
:func:`allocate_all_tiles` is the largest remainder of §6 in the contract's own words over ALL of a
country's tiles; it shares no code with the production kernel (:mod:`segment1b.s4_alloc_plan`, which
cuts the tiles short), so the two only agree when both are right.  :func:`check_plan_recompute` compares the
published plans of sampled pairs with it.  The sample (:class:`PlanSample`) is the pairs with the smallest
salted hash of (merchant, ISO), fixed by (seed, fingerprint) so the bundle stays deterministic, plus the
pair with the most sites.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from ..contracts import dataset
from ..errors import IntegrityError
from ..keys import SiteKeys, iso_of, iso_u16
from .findings import S4, Findings, key_rows
from .tables import check_schema, runs

__all__ = ["check_part_plan", "allocate_all_tiles", "check_plan_recompute", "plan_sample_salt",
           "plan_sample_rank", "PlanSample"]

_U64_MAX = 2**64 - 1


def _pair_keys(table: pa.Table, third: str) -> SiteKeys:
    """(merchant_id, ISO, ``third``) as :class:`SiteKeys` (``third`` in the site_order slot, as int64)."""
    return SiteKeys(np.asarray(table["merchant_id"].to_numpy(), np.uint64), iso_u16(table["legal_country_iso"]),
                    np.asarray(table[third].to_numpy(), np.int64))


def _named(rows: list[dict[str, Any]], third: str) -> list[dict[str, Any]]:
    return [{(third if k == "site_order" else k): v for k, v in r.items()} for r in rows]


def check_part_plan(part: int, plan: pa.Table | None, sites: pa.Table | None, requirements: pa.Table | None,
                    findings: Findings) -> dict[str, Any]:
    """S4 checks of one part on every row: schema, order, n_sites_tile ≥ 1, Σ per pair = S3 n_sites (E404),
    S5 sites per (pair, tile) = n_sites_tile (E503).

    Parameters
    ----------
    part : int
    plan : pyarrow.Table or None
        The ``s4_alloc_plan`` part (``None``: missing or unreadable, already a finding).
    sites : pyarrow.Table or None
        The S5 part (same merchant range); ``None`` skips the quota check.
    requirements : pyarrow.Table or None
        ``s3_requirements`` rows (merchant_id, legal_country_iso, n_sites) of the part's merchant range;
        ``None`` skips the sum check.
    findings : Findings

    Returns
    -------
    dict
        ``rows``, ``pairs`` and ``sites`` (Σ n_sites_tile) of the plan part.
    """
    summary = {"rows": 0, "pairs": 0, "sites": 0}
    if plan is None:
        return summary
    summary["rows"] = plan.num_rows
    if not check_schema(plan, dataset(S4), findings, f"{S4}/part-{part:05d}"):
        return summary
    try:
        k4 = _pair_keys(plan, "tile_id")  # tile ids are < 2**63 on every grid
    except ValueError as exc:
        findings.add("value_range", "E904_EGRESS_SCHEMA", f"{S4} legal_country_iso is not two letters", 1,
                     [{"part": part, "error": str(exc)}])
        return summary
    cnt = np.asarray(plan["n_sites_tile"].to_numpy(), np.int64)
    down, dup = k4.neighbours()
    findings.add("sort", "E906_SORT", f"{S4} rows are not in writer-sort order (merchant_id, legal_country_iso, "
                 "tile_id)", down.size, _named(key_rows(k4, down, part), "tile_id"))
    dup = k4.duplicates() if down.size else dup
    findings.add("unique_keys", "E903_DUP_KEY", f"{S4} lists a tile twice for one pair", dup.size,
                 _named(key_rows(k4, dup, part), "tile_id"))
    low = np.flatnonzero(cnt < 1)
    findings.add("plan_quota", "E404_ALLOCATION_MISMATCH", f"{S4} has rows with n_sites_tile < 1", low.size,
                 _named(key_rows(k4, low, part, n_sites_tile=cnt), "tile_id"))
    # Σ n_sites_tile per pair against S3's n_sites, as multisets of (merchant, ISO, sites)
    order = np.lexsort((k4.iso, k4.merchant_id))
    starts, _ = runs(k4.merchant_id[order], k4.iso[order])
    sums = np.add.reduceat(cnt[order], starts) if starts.size else np.empty(0, np.int64)
    planned = SiteKeys(k4.merchant_id[order][starts], k4.iso[order][starts], sums)
    summary["pairs"], summary["sites"] = int(starts.size), int(cnt.sum())
    if requirements is not None:
        need = _pair_keys(requirements, "n_sites")
        short, extra = need.diff(planned)
        findings.add("plan_quota", "E404_ALLOCATION_MISMATCH",
                     f"s3_requirements pairs whose {S4} rows do not sum to their n_sites (or have none)",
                     short.size, _named(key_rows(need, short, part), "n_sites"))
        findings.add("plan_quota", "E404_ALLOCATION_MISMATCH",
                     f"{S4} pairs whose sum (plan_sites) matches no s3_requirements pair",
                     extra.size, _named(key_rows(planned, extra, part), "plan_sites"))
    if sites is not None and {"merchant_id", "legal_country_iso", "tile_id"} <= set(sites.column_names):
        _tile_quotas(k4, cnt, sites, part, findings)
    return summary


def _tile_quotas(k4: SiteKeys, cnt: np.ndarray, sites: pa.Table, part: int, findings: Findings) -> None:
    """S5's sites per (merchant, ISO, tile) against the plan's n_sites_tile, as multisets (E503)."""
    try:
        k5 = _pair_keys(sites, "tile_id")
    except ValueError:
        return  # S5's own checks report it
    per_row = np.clip(cnt, 0, None)
    if int(per_row.sum()) > 2 * len(k5) + 1024:  # do not expand absurd counts into memory
        findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", f"{S4} plans far more sites than S5 assigns", 1,
                     [{"part": part, "plan_sites": int(per_row.sum()), "s5_sites": len(k5)}])
        return
    # one slot per planned site, compared with S5's (merchant, ISO, tile) as multisets
    slots = SiteKeys(np.repeat(k4.merchant_id, per_row), np.repeat(k4.iso, per_row),
                     np.repeat(k4.site_order, per_row))
    unfilled, over = slots.diff(k5)
    findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", "planned tile slots that S5 leaves empty",
                 unfilled.size, _named(key_rows(slots, unfilled, part), "tile_id"))
    site_order = np.asarray(sites["site_order"].to_numpy(), np.int64) if "site_order" in sites.column_names \
        else np.zeros(len(k5), np.int64)
    findings.add("plan_quota", "E503_TILE_QUOTA_MISMATCH", "S5 sites on a tile beyond its planned n_sites_tile",
                 over.size, _named(key_rows(k5, over, part, site=site_order), "tile_id"))


def allocate_all_tiles(tile_id, weight_fp, n: int, dp: int) -> tuple[np.ndarray, np.ndarray]:
    """S4 for one pair in the contract's own words, over ALL of a country's tiles (the validator's reference).

    Shares no code with :mod:`segment1b.s4_alloc_plan` (no weight prefix, no cut-off, no plan shared between
    merchants): ``prod = weight_fp·n``, ``z = prod // K``, ``r = prod % K``, ``S = n − Σz``; +1 to the S
    tiles ranked by (r descending, tile_id ascending); every tile with a count ≥ 1.  Integers only; time
    and memory linear in the country's tiles.

    >>> allocate_all_tiles([1, 2], [700, 300], 5, dp=3)
    (array([1, 2], dtype=uint64), array([4, 1]))

    Returns
    -------
    (numpy.ndarray of uint64, numpy.ndarray of int64)
        tile_id ascending and n_sites_tile.

    Raises
    ------
    IntegrityError
        ``E416_NUMERIC_OVERFLOW`` when weight_fp·n exceeds 2^64 − 1; ``E404_ALLOCATION_MISMATCH`` when the
        weights cannot give n sites (they do not sum to 10^dp).
    """
    t = np.asarray(tile_id, np.uint64)
    w = np.asarray(weight_fp, np.uint64)
    if not w.all():  # only tiles with weight_fp > 0 take part
        keep = np.flatnonzero(w)
        t, w = t[keep], w[keep]
    K = np.uint64(10**dp)
    if n < 0:
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"n_sites {n} is negative")
    if n and w.size and int(w.max()) > _U64_MAX // n:
        raise IntegrityError("E416_NUMERIC_OVERFLOW", f"weight_fp {int(w.max())} × n_sites {n} exceeds 2^64 − 1")
    prod = w * np.uint64(n)
    z = prod // K
    r = np.subtract(prod, z * K, out=prod)  # prod % K (numpy's u64 modulo is several times slower)
    if float(z.sum(dtype=np.float64)) > n + 1:  # Σz would exceed n (and could wrap in uint64)
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"floor shares exceed n_sites {n}: the weights sum "
                             f"above 10^{dp}")
    S = n - int(z.sum(dtype=np.uint64))
    if not 0 <= S <= np.count_nonzero(r):
        raise IntegrityError("E404_ALLOCATION_MISMATCH", f"{S} remainder sites for n_sites {n} cannot be "
                             f"given out: the weights do not sum to 10^{dp}")
    plus = np.zeros(t.size, bool)
    if S:
        cut = np.partition(r, r.size - S)[r.size - S]  # the S-th largest remainder
        above = r > cut
        tied = np.flatnonzero(r == cut)
        tied = tied[np.argsort(t[tied], kind="stable")]  # ties at the cut go to the lowest tile_ids
        plus[above] = True
        plus[tied[:S - int(above.sum())]] = True
    keep = np.flatnonzero((z > 0) | plus)
    keep = keep[np.argsort(t[keep], kind="stable")]
    return t[keep], z[keep].astype(np.int64) + plus[keep]


def check_plan_recompute(country_iso: str, tile_id: np.ndarray, weight_fp: np.ndarray, dp: int,
                         pairs: Iterable[Mapping[str, Any]], findings: Findings) -> dict[str, Any]:
    """Compare sampled pairs' published plans with :func:`allocate_all_tiles` over the country's tiles.

    Parameters
    ----------
    country_iso : str
    tile_id, weight_fp : numpy.ndarray
        Every tile of the country from ``tile_weights``.
    dp : int
    pairs : iterable of mapping
        ``merchant_id``, ``n_sites`` (from S3) and the published plan rows ``tile_id``, ``n_sites_tile``.
    findings : Findings

    Returns
    -------
    dict
        ``pairs`` compared, ``mismatched`` pairs, ``tiles`` scanned per pair.
    """
    done = bad = 0
    plans: dict[int, tuple[np.ndarray, np.ndarray] | IntegrityError] = {}  # a pure function of n here
    for p in pairs:
        m, n = int(p["merchant_id"]), int(p["n_sites"])
        done += 1
        row = {"merchant_id": m, "legal_country_iso": country_iso, "n_sites": n}
        if n not in plans:
            try:
                plans[n] = allocate_all_tiles(tile_id, weight_fp, n, dp)
            except IntegrityError as exc:
                plans[n] = exc
        try:
            if isinstance(plans[n], IntegrityError):
                raise plans[n]
            want_t, want_c = plans[n]
        except IntegrityError as exc:
            bad += 1
            findings.add("plan_recompute", exc.code, "the country's tile weights cannot allocate a sampled pair",
                         1, [{**row, "error": exc.message}])
            continue
        got_t = np.asarray(p["tile_id"], np.uint64)
        got_c = np.asarray(p["n_sites_tile"], np.int64)
        if np.array_equal(got_t, want_t) and np.array_equal(got_c, want_c):
            continue
        bad += 1
        tiles = np.union1d(got_t, want_t)
        got = dict(zip(got_t.tolist(), got_c.tolist()))
        want = dict(zip(want_t.tolist(), want_c.tolist()))
        diff = [{**row, "tile_id": t, "n_sites_tile": got.get(t, 0), "expected": want.get(t, 0)}
                for t in tiles.tolist() if got.get(t, 0) != want.get(t, 0)]
        findings.add("plan_recompute", "E404_ALLOCATION_MISMATCH",
                     "s4_alloc_plan differs from largest remainder recomputed over all of the country's tiles",
                     1, diff[:3] or [row])
    return {"country_iso": country_iso, "pairs": done, "mismatched": bad, "tiles": int(len(tile_id)),
            "plans": len(plans)}


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection on u64 with good avalanche), wrapping arithmetic."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def plan_sample_salt(seed: int, manifest_fingerprint: str) -> int:
    """The sample's salt: fixed by the run's identity, so the same files give the same sample (and bundle)."""
    return int.from_bytes(hashlib.sha256(f"1B.s9.plan_sample|{seed}|{manifest_fingerprint}".encode())
                          .digest()[:8], "little")


def plan_sample_rank(merchant_id: np.ndarray, iso: np.ndarray, salt: int) -> np.ndarray:
    """Sampling rank of each pair: a salted hash of (merchant_id, ISO); the pairs with the smallest ranks are
    the sample (uniform over pairs, independent of parts, workers and file layout)."""
    with np.errstate(over="ignore"):
        h = _mix64(np.asarray(merchant_id, np.uint64) ^ np.uint64(salt))
        return _mix64(h ^ np.asarray(iso, np.uint64))


class PlanSample:
    """The pairs whose plans :func:`check_plan_recompute` compares, chosen in one pass over ``s3_requirements``.

    Feed every part's (merchant_id, ISO code, n_sites) to :meth:`add`, in any order and chunking: the
    sample is the ``size`` pairs with the smallest :func:`plan_sample_rank` (ties by merchant, ISO) plus
    the pair with the most sites (the first of them in merchant-major order), so it depends on the run's
    identity and the pairs only.  Memory is bounded by ``size`` plus one part.

    >>> sample = PlanSample(1, seed=42, manifest_fingerprint="ab" * 32)
    >>> sample.add(np.array([1, 2], np.uint64), iso_u16(pa.array(["FR", "DE"])), np.array([5, 9]))
    >>> (2, "DE", 9) in sample.pairs()  # the pair with the most sites is always in
    True
    """

    def __init__(self, size: int, *, seed: int, manifest_fingerprint: str):
        self.size = size
        self.salt = plan_sample_salt(seed, manifest_fingerprint)
        self._keep = {"rank": np.empty(0, np.uint64), "m": np.empty(0, np.uint64), "iso": np.empty(0, np.uint16),
                      "n": np.empty(0, np.int64)}
        self._largest: tuple[int, int, int] | None = None  # (n, merchant, iso)

    def add(self, merchant_id: np.ndarray, iso: np.ndarray, n_sites: np.ndarray) -> None:
        """One part's pairs: uint64 merchant ids, uint16 ISO codes (:func:`segment1b.keys.iso_u16`), n_sites."""
        if not n_sites.size:
            return
        i = int(np.argmax(n_sites))  # the first of the largest: merchant-major, so the lowest key
        if self._largest is None or int(n_sites[i]) > self._largest[0]:
            self._largest = (int(n_sites[i]), int(merchant_id[i]), int(iso[i]))
        cand = {"rank": plan_sample_rank(merchant_id, iso, self.salt), "m": merchant_id, "iso": iso, "n": n_sites}
        cand = {k: np.concatenate([self._keep[k], v]) for k, v in cand.items()}
        best = np.lexsort((cand["iso"], cand["m"], cand["rank"]))[:self.size]
        self._keep = {k: v[best] for k, v in cand.items()}

    def pairs(self) -> list[tuple[int, str, int]]:
        """The sample as sorted (merchant_id, ISO, n_sites)."""
        keep = self._keep
        picked = {(int(a), int(b), int(c)) for a, b, c in zip(keep["m"], keep["iso"], keep["n"])}
        if self._largest is not None and self.size > 0:
            n, m, iso = self._largest
            picked.add((m, iso, n))
        return sorted((m, iso_of(c), n) for m, c, n in picked)
