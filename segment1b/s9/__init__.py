"""S9 validation: every check that can be made from the published files (contract §10).

The checks are pure functions of tables, parsed event columns and scalars; ``jobs/validate.py`` reads the
files (part by part, on the workers), calls :func:`check_part_tables`, :func:`check_part_events`,
:func:`check_part_plan` and :func:`check_part_surfaces` per part and the global checks once, and publishes
the bundle (:mod:`segment1b.bundle`).  A check never raises on bad data: it records a finding in a
:class:`Findings`, so one validation reports every problem it can see, not only the first.

One module per family of checks:

============ =====================================================================================
module       checks
============ =====================================================================================
findings     the registry of checks (:data:`CHECKS`), :class:`Findings`, :class:`Expect`
tables       one part of S5, S6, S7 and ``site_locations``; the order across parts
events       one part of the RNG event logs against its dataset part (RNG accounting)
totals       global: RNG totals against the trace, the audit record, row counts, receipts
surfaces     the tile surfaces: one tile set in the three, weights summing to 10^dp
plan         S4: quotas on every row, an independent recomputation on a sample
============ =====================================================================================

Checks and their codes (the single table is :data:`CHECKS`):

==================== ============================== ===================================================
check                code(s)                        what
==================== ============================== ===================================================
files                E901 / E902 / E904             every part index has its file in S4, S5, S6, S7, S8
                                                    and both event logs; no stray files; readable
schema               E904                           exact columns, order, Arrow types, no nulls
value_range          E904                           lon/lat ranges, ISO uppercase, site_order ≥ 1, deltas
sort                 E906                           writer-sort order within and across parts
unique_keys          E903                           no key twice (within and across parts)
egress_parity        E901 / E902                    site_locations = S7 minus tile_id, row for row
synthesis_parity     E901 / E902                    S7 = S5 ⋈ S6 with lon/lat = centroid + delta
catalogue_coverage   E901 / E902                    site keys = outlet catalogue keys
row_counts           E901 / E902                    rows = catalogue rows = Σ S3 n_sites
surface_tiles        E101 / E102                    tile_index, tile_bounds and tile_weights published with
                                                    the same (country, tile) set, part by part
surface_weights      E105                           per country Σ weight_fp = 10^dp, one dp, the run's
plan_quota           E404 / E503                    every pair's S4 plan sums to its S3 n_sites; S5 puts
                                                    exactly n_sites_tile sites on each planned tile
plan_recompute       E404 / E416 / E101             on a sample of pairs, S4 = largest remainder
                                                    recomputed over ALL the country's tile weights
path_embed           E905                           lineage columns and envelopes = path tokens
identity_coherence   E912                           one run_id and identity across logs, receipt, params
rng_s5               E907                           one S5 event per site, its tile, counters, u
rng_s6               E907                           S6 attempts 1..a, last accepted, counters, draws,
                                                    rejections really outside, deltas = dataset's
rng_totals           E907                           per-family totals = final trace row
rng_audit            E907 / E912                    exactly one audit record with the run's identity
point_in_pixel       E707                           every S7 point in its tile (S7's own code)
point_in_country     E608                           every S7 point in its country polygon (S6's code:
                                                    E9xx has no geometry code)
finality             E911                           partition digests (tile surfaces, S4-S8) = run-report
                                                    receipts; egress unchanged while validating
bundle               E908 / E909 / E910 / E913      bundle complete, index and flag verify, published
==================== ============================== ===================================================

Bundle files are deterministic (sorted keys, no timestamps or build commit), so validating the same
published bytes twice gives the same bundle and the second publish is a no-op.
"""

from .events import EventColumns, check_part_events, parse_events
from .findings import CHECKS, DATASETS, MAX_EXAMPLES, S4, S5, S6, S7, S8, VALIDATOR_VERSION, Expect, Findings
from .plan import (PlanSample, allocate_all_tiles, check_part_plan, check_plan_recompute, plan_sample_rank,
                   plan_sample_salt)
from .surfaces import SURFACE_COLUMNS, SURFACES, check_part_surfaces, check_weight_sums, weight_sums
from .tables import check_across_parts, check_part_tables, check_schema
from .totals import check_audit, check_receipts, check_row_counts, check_trace

__all__ = [
    "CHECKS", "MAX_EXAMPLES", "VALIDATOR_VERSION", "Findings", "Expect", "S4", "S5", "S6", "S7", "S8",
    "DATASETS", "check_schema", "check_part_tables", "check_across_parts", "EventColumns", "parse_events",
    "check_part_events", "check_trace", "check_audit", "check_row_counts", "check_receipts", "SURFACES",
    "SURFACE_COLUMNS", "weight_sums", "check_part_surfaces", "check_weight_sums", "check_part_plan",
    "allocate_all_tiles", "check_plan_recompute", "plan_sample_salt", "plan_sample_rank", "PlanSample",
]
