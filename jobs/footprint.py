"""How much memory a worker needs for a run, and the refusal of a memory limit that cannot hold it.

A Dask worker *pauses* when its process memory passes ``distributed.worker.memory.pause`` (80 % of its
limit by default).  A worker holds a floor of its own (imports, the reference polygons, allocator pools),
and on top of it the largest unit of work it runs.  Units of S4-S6 follow the limit
(:func:`jobs.place._memory_bound_sites`), but some units do not, because they are layout constants or a
contract's own unit of work:

* a **part** of S4-S8/S9 (``--part-sites``, 2^18 by default): the S4-S6 part writers hold the results of
  every unit of their part, and the S7 and S9 part tasks read whole parts;
* the largest **country** of S9's plan recomputation (all of its weighted tiles: contract §6, linear in the
  country's tiles) and of S4's weight reading;
* a **prepare unit** of S1/S2 (at most ``DEFAULT_UNIT_CELLS`` cells of one country).

When a limit cannot hold the floor plus the largest of these, the worker pauses for good and the run would
hang (issue #14); :func:`check_memory` refuses it up front with ``C001_OPTION_INVALID`` naming the
minimum.  The figures are measured per unit of work, never guessed: ``python -m benchmarks.run
state_memory --scale <scale>`` runs the pipeline on one worker, records the peak RSS of every task
(``benchmarks/bench_state_memory.py``) and prints them against this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from dask.utils import format_bytes

from segment1b.generator import MAX_OUTLETS, SCALES, TAIL_EXPONENT_TIMES_2

__all__ = ["WORKER_FLOOR_BYTES", "PART_BYTES_PER_SITE", "PLAN_BYTES_PER_TILE", "S1_BYTES_PER_CELL",
           "S2_BYTES_PER_CELL",
           "SAFETY", "Need", "part_need", "plan_need", "prepare_needs", "expected_sites", "largest_part",
           "minimum_memory_limit", "check_memory", "unit_budget", "worker_memory"]

MiB = 2**20
# Measured by `python -m benchmarks.run state_memory` (one worker, one thread; peak RSS of every task):
# the resident memory a worker keeps once it has run the kernels: imports (NumPy, pandas, Arrow, GEOS),
# the reference polygons, Arrow and allocator pools, and a state's first-task imports (S9's log readers:
# 35 MiB).  320-340 MiB under the S9 tasks after S1-S8 ran in the same worker (30m and 5m), 359 MiB peak
# for a tiny catalogue on the 30m grid, where no unit is big.
WORKER_FLOOR_BYTES = 360 * MiB
# A part's largest task (the S6 writer, with the S4-S6 unit results of the part it gathers; S9's part
# tasks and S7 are below it): 681-838 B/site of rise measured at x10 on the 5m grid (262 k sites in the
# part), peaks of 588-619 MiB over a floor of 350-418 MiB; rounded up like UNIT_BYTES_PER_SITE.
PART_BYTES_PER_SITE = 1_000
# S9's plan recomputation holds a country's weighted tiles (tile_id, weight_fp, products, ranks): 41-49
# B per weighted tile measured (China and Russia at 30", Russia at 5m); S4's weight reading is below it.
PLAN_BYTES_PER_TILE = 50
# S1: one unit (a band of a country, at most DEFAULT_UNIT_CELLS cells): rasterised cells, runs, land-share
# lattice: 50-57 B/cell measured on the 8 M-cell units of Russia and Australia at 30".  S2: one country over
# all of its units (masses, exact weights, tile ids of every tile): 14.5-16.8 B/cell for Russia, Canada
# and the United States at 30" (1.19 GiB for Russia's 85.7 M cells: prepare's largest task).
S1_BYTES_PER_CELL = 60
S2_BYTES_PER_CELL = 16
# The model is fitted as an upper bound of the measured peaks; this margin covers what varies from run to
# run (allocator slack, two writers of one part finishing together, results waiting to be sent).
SAFETY = 1.1
# Below this a worker pauses (distributed.worker.memory.pause) when the workers do not say otherwise.
DEFAULT_PAUSE_FRACTION = 0.8


@dataclass(frozen=True)
class Need:
    """The memory of one largest unit of work, above the worker's floor."""

    what: str  # e.g. "the S4-S6 writer of a part of 262 144 sites"
    bytes: int


def part_need(sites: int) -> Need:
    """Memory of the largest part task for a part of ``sites`` sites."""
    return Need(f"the S4-S6 writer of a part of {_n(sites)} sites (S7 and S9 read whole parts too)",
                int(sites) * PART_BYTES_PER_SITE)


def plan_need(country_iso: str, tiles: int) -> Need:
    """Memory of S9's plan recomputation over a country of ``tiles`` weighted tiles."""
    return Need(f"S9's plan recomputation over the {_n(tiles)} weighted tiles of {country_iso}",
                int(tiles) * PLAN_BYTES_PER_TILE)


def prepare_needs(units) -> list[Need]:
    """Memory of prepare's largest S1 unit and of its largest S2 country (all of the country's units).

    ``units``: :class:`segment1b.s1_tile_index.Unit` of the plan.
    """
    if not units:
        return []
    per_country: dict[str, int] = {}
    for u in units:
        per_country[u.country_iso] = per_country.get(u.country_iso, 0) + u.cells
    unit = max(units, key=lambda u: (u.cells, u.country_iso))
    iso = max(per_country, key=lambda c: (per_country[c], c))
    return [Need(f"the S1 unit of {_n(unit.cells)} cells of {unit.country_iso}", unit.cells * S1_BYTES_PER_CELL),
            Need(f"S2's weights of {iso} ({_n(per_country[iso])} cells)", per_country[iso] * S2_BYTES_PER_CELL)]


def _n(count: int) -> str:
    return f"{int(count):_}".replace("_", " ")


def expected_sites(scale: str) -> int:
    """Outlets of a generated catalogue of ``scale``: merchants × the mean of P(N = n) ∝ n^-(5/2).

    >>> expected_sites("x10")  # 321 424 generated with seed 42
    322518
    """
    weights = [n ** (-TAIL_EXPONENT_TIMES_2 / 2) for n in range(1, MAX_OUTLETS + 1)]
    mean = sum(n * w for n, w in zip(range(1, MAX_OUTLETS + 1), weights)) / sum(weights)
    return math.ceil(SCALES[scale] * mean)


def largest_part(sites: int, part_sites: int) -> int:
    """Sites of the largest part: parts close after the merchant that reaches ``part_sites`` (jobs.units)."""
    return min(int(sites), int(part_sites) + MAX_OUTLETS)


def minimum_memory_limit(needs: Iterable[Need], threads: int = 1,
                         pause_fraction: float = DEFAULT_PAUSE_FRACTION) -> tuple[int, Need]:
    """The smallest worker memory limit that holds the floor plus ``threads`` of the largest need.

    Returns the limit (bytes, rounded up to a MiB) and the need that decides it.

    >>> limit, need = minimum_memory_limit([part_need(264_144)])
    >>> limit // MiB, need.what
    (842, 'the S4-S6 writer of a part of 264 144 sites (S7 and S9 read whole parts too)')
    """
    largest = max(needs, key=lambda n: n.bytes)
    raw = (WORKER_FLOOR_BYTES + max(1, threads) * largest.bytes) * SAFETY / pause_fraction
    return int(math.ceil(round(raw / MiB, 6)) * MiB), largest  # round: 440 x 1.1 is 484.00000000000006


def check_memory(client, needs: Iterable[Need], *, step: str) -> None:
    """Refuse workers whose memory limit cannot hold the floor plus the largest need (C001).

    Asks every worker for its memory limit, threads and pause fraction (eagerly, ``Client.run``); a worker
    without a limit is never refused.

    Raises
    ------
    cluster.ClusterConfigError
        ``C001_OPTION_INVALID`` naming the limit, the minimum and the unit that needs it.
    """
    from cluster import ClusterConfigError

    needs = list(needs)
    if not needs:
        return
    for address, (limit, threads, pause) in sorted(client.run(worker_memory).items()):
        if not limit:
            continue
        minimum, largest = minimum_memory_limit(needs, threads, pause)
        if limit < minimum:
            raise ClusterConfigError(
                "C001_OPTION_INVALID",
                f"the worker {address} has a memory limit of {format_bytes(limit)}; {step} needs at least "
                f"{format_bytes(minimum)} per worker: about {format_bytes(WORKER_FLOOR_BYTES)} that a worker "
                f"keeps for itself, plus {threads} x {format_bytes(largest.bytes)} for {largest.what}, plus "
                f"{SAFETY - 1:.0%} margin, below the {pause:.0%} of the limit where Dask pauses the worker "
                "(distributed.worker.memory.pause)",
                tried="the per-unit figures of jobs/footprint.py (measured with `python -m benchmarks.run "
                      "state_memory`)",
                hint=f"give each worker at least {format_bytes(minimum)} (--memory-limit "
                     f"{math.ceil(minimum / MiB)}MiB), or fewer threads per worker; nothing was computed")


def unit_budget(limit: int, threads: int, pause_fraction: float) -> int:
    """Bytes a thread of a worker may use above the worker's floor before the worker pauses.

    >>> unit_budget(2**30, 4, 0.8) // MiB  # (819 MiB - 360 MiB) / 4
    114
    """
    return max(0, int((limit * pause_fraction - WORKER_FLOOR_BYTES) / max(1, threads)))


def worker_memory(dask_worker) -> tuple[int, int, float]:
    """Memory limit, threads and pause fraction of a worker (runs on the worker, through ``Client.run``)."""
    memory = dask_worker.memory_manager
    pause = memory.memory_pause_fraction or 1.0  # no pausing: the nanny's terminate fraction is the bound
    return int(memory.memory_limit or 0), int(dask_worker.state.nthreads), float(pause)
