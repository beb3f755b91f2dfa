"""S9's findings: the registry of checks, and what a validation found (contract §10).

A check never raises on bad data: it records a *finding* (check name, failure code, message, count, up to
:data:`MAX_EXAMPLES` example rows) in a :class:`Findings`, so one validation reports every problem it can
see, not only the first.  :data:`CHECKS` is the one table of check names, the codes each may report and
what each verifies; it orders ``s9_summary.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ..bundle import jsonable
from ..keys import SiteKeys

__all__ = ["CHECKS", "MAX_EXAMPLES", "VALIDATOR_VERSION", "Findings", "Expect", "key_rows",
           "S4", "S5", "S6", "S7", "S8", "DATASETS"]

#: Bumped when the checks or the bundle layout change (recorded in MANIFEST.json).  3: the tile surfaces are
#: checked and listed, every input lists its files (issue 14).
VALIDATOR_VERSION = 3
MAX_EXAMPLES = 20

#: check name -> (codes it can report, what it verifies); the order of s9_summary.json.
CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "files": (("E901_ROW_MISSING", "E902_ROW_EXTRA", "E904_EGRESS_SCHEMA"),
              "every part index has its file in S4, S5, S6, S7, site_locations and both RNG event logs; no stray "
              "files; every file is readable"),
    "schema": (("E904_EGRESS_SCHEMA",), "exact contract columns, order and Arrow types, no nulls"),
    "value_range": (("E904_EGRESS_SCHEMA",),
                    "lon in [-180, 180], lat in [-90, 90], uppercase ISO, site_order >= 1, "
                    "jitter deltas in [-1, 1]"),
    "sort": (("E906_SORT",),
             "writer-sort order (merchant_id, legal_country_iso, site_order) within and across parts"),
    "unique_keys": (("E903_DUP_KEY",), "no site key occurs twice, within or across parts"),
    "egress_parity": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                      "site_locations equals S7 minus tile_id, row for row"),
    "synthesis_parity": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                         "S7 rows are S5 joined with S6, at centroid + delta, with the S5 tile"),
    "catalogue_coverage": (("E901_ROW_MISSING", "E902_ROW_EXTRA"), "site keys equal the outlet catalogue's"),
    "row_counts": (("E901_ROW_MISSING", "E902_ROW_EXTRA"),
                   "site_locations rows = outlet catalogue rows = sum of S3 n_sites"),
    "surface_tiles": (("E101_TILE_INDEX_MISSING", "E102_FK_MISMATCH"),
                      "tile_index, tile_bounds and tile_weights are published and hold the same "
                      "(country_iso, tile_id) set, part by part, each tile once"),
    "surface_weights": (("E105_NORMALIZATION",),
                        "per country, the tile_weights weight_fp sum to exactly 10^dp, with one dp: the "
                        "run's"),
    "plan_quota": (("E404_ALLOCATION_MISMATCH", "E503_TILE_QUOTA_MISMATCH"),
                   "every (merchant, country) pair's s4_alloc_plan rows have n_sites_tile >= 1 and sum to its "
                   "s3_requirements n_sites; S5 assigns exactly n_sites_tile sites to each planned tile"),
    "plan_recompute": (("E404_ALLOCATION_MISMATCH", "E416_NUMERIC_OVERFLOW", "E101_TILE_INDEX_MISSING"),
                       "on a sample of pairs (and the largest pair), s4_alloc_plan equals the largest "
                       "remainder recomputed independently over all of the country's tile weights"),
    "path_embed": (("E905_IDENTITY",), "lineage columns and RNG envelopes equal the path tokens"),
    "identity_coherence": (("E912_IDENTITY_COHERENCE",), "one run_id and one identity across events, audit, "
                           "trace, run receipt and parameters"),
    "rng_s5": (("E907_RNG_BUDGET",), "exactly one site_tile_assign event per site with its tile, counter = "
               "substream + site_order - 1, after - before = blocks = 1, draws = 1, u = the Philox draw"),
    "rng_s6": (("E907_RNG_BUDGET",), "in_cell_jitter attempts 1..a per site, only the last accepted, "
               "counters, draws = 2, deltas = the Philox draw, rejected points outside pixel or country, "
               "accepted deltas = s6_site_jitter"),
    "rng_totals": (("E907_RNG_BUDGET",), "events, draws and blocks per family equal the final trace row"),
    "rng_audit": (("E907_RNG_BUDGET", "E912_IDENTITY_COHERENCE"),
                  "exactly one audit record, with the run's identity"),
    "point_in_pixel": (("E707_POINT_OUTSIDE_PIXEL",), "every S7 point is inside its tile"),
    "point_in_country": (("E608_POINT_OUTSIDE_COUNTRY",),
                         "every S7 point is inside (or on) its country polygon"),
    "finality": (("E911_FINALITY",),
                 "partition digests (tile_index, tile_bounds, tile_weights, S4-S8) equal the receipts of the "
                 "S1-S8 run reports; site_locations did not change while being validated"),
    "bundle": (("E908_BUNDLE_CONTENTS", "E909_INDEX", "E910_FLAG", "E913_PUBLISH"),
               "bundle complete, index.json and _passed.flag verify, bundle published"),
}

S5, S6, S7, S8 = "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis", "site_locations"
DATASETS = (S5, S6, S7, S8)
S4 = "s4_alloc_plan"


class Findings:
    """Failures found so far, merged by (check, code, message); plain data, so it travels between processes.

    >>> f = Findings()
    >>> f.add("sort", "E906_SORT", "rows out of order", 2, [{"part": 0}])
    >>> f.codes()
    ['E906_SORT']
    """

    def __init__(self, items: Iterable[Mapping[str, Any]] = ()):
        self._items: dict[tuple[str, str, str], dict[str, Any]] = {}
        for it in items:
            self.add(it["check"], it["code"], it["message"], it["count"], it["examples"])

    def add(self, check: str, code: str, message: str, count: int = 1,
            examples: Iterable[Mapping] = ()) -> None:
        if check not in CHECKS or code not in CHECKS[check][0]:
            raise ValueError(f"check {check!r} cannot report {code!r}; "
                             "this is a bug in segment1b, please report it")
        if count <= 0:
            return
        item = self._items.setdefault((check, code, message), {"check": check, "code": code,
                                                               "message": message,
                                                               "count": 0, "examples": []})
        item["count"] += int(count)
        room = MAX_EXAMPLES - len(item["examples"])
        if room > 0:
            item["examples"].extend(jsonable(dict(e)) for e in list(examples)[:room])

    def extend(self, items: Iterable[Mapping[str, Any]]) -> None:
        for it in items:
            self.add(it["check"], it["code"], it["message"], it["count"], it["examples"])

    def to_list(self) -> list[dict[str, Any]]:
        order = list(CHECKS)
        return [self._items[k] for k in sorted(self._items, key=lambda k: (order.index(k[0]), k[1], k[2]))]

    def codes(self) -> list[str]:
        return sorted({k[1] for k in self._items})

    def __bool__(self) -> bool:
        return bool(self._items)

    def summary(self, counts: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One entry per check of :data:`CHECKS`: status, codes and failures (for s9_summary.json)."""
        out = []
        items = self.to_list()
        for name, (codes, what) in CHECKS.items():
            failures = [{k: v for k, v in it.items() if k != "check"} for it in items if it["check"] == name]
            out.append({"check": name, "verifies": what, "status": "FAIL" if failures else "PASS",
                        "codes": sorted({f["code"] for f in failures}), "failures": failures,
                        "counts": dict((counts or {}).get(name, {}))})
        return out


@dataclass(frozen=True)
class Expect:
    """The identity the files must carry."""

    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str  # "" when it could not be resolved (already a finding)


def key_rows(keys: SiteKeys, idx, part: int, **extra: np.ndarray) -> list[dict[str, Any]]:
    """Example rows of a finding: the part, the site keys at ``idx`` and ``extra`` columns' values there."""
    rows = []
    for i in np.asarray(idx).ravel()[:MAX_EXAMPLES]:
        row = {"part": part, **keys.row(int(i))}
        for k, v in extra.items():
            row[k] = v[int(i)]
        rows.append(row)
    return rows
