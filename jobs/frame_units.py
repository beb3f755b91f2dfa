"""The requirements frame of :mod:`jobs.frames`: one Dask partition per S4-S7 work unit, planned lazily.

The partitions are the CLI's work units (:func:`jobs.units.plan_units`): a big country is split by
merchant range, small countries are packed.  That plan needs every pair's ``n_sites``, which is Parquet
*data*, so it cannot be known when the graph is built without reading the dataset.
:class:`RequirementUnits` is therefore a dask-expr IO expression whose partitions are planned the first
time Dask needs them: when the collection (or one built on it) is computed, persisted, written or asked
for ``npartitions``.  The client then reads the three columns of ``s3_requirements`` (compactly, as
``segment1b run`` does to plan its units: :mod:`jobs.requirement_pairs`) and the footers; each partition's task later reads only the row groups whose
``merchant_id`` statistics overlap its unit and keeps the unit's pairs.  Building the graph touches no
file at all.

Divisions are unknown: the units of different countries in one merchant range overlap in merchant_id,
so no index is sorted across partitions.  :func:`unit_table` maps partition number -> unit (label,
countries, pairs, sites) instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dask._task_spec import Task
from dask.dataframe.dask_expr._expr import PartitionsFiltered
from dask.dataframe.dask_expr.io.io import BlockwiseIO

from segment1b.contracts import check_token, path_for
from segment1b.errors import InputError
from segment1b.keys import iso_code
from segment1b.storage import Storage

from .frame_parts import REQUIREMENTS_META, iso_array
from .parts import CatalogueIndex
from .requirement_pairs import read_pairs, read_pairs_range
from .tiles import RowGroupRef
from .units import DEFAULT_PART_SITES, plan_layout

__all__ = ["UnitSizing", "RequirementsSource", "UnitRead", "RequirementUnits", "plan_reads", "read_unit",
           "unit_table"]

DATASET = "s3_requirements"


@dataclass(frozen=True)
class UnitSizing:
    """How requirements are cut into units (:func:`jobs.units.plan_units`); no output row depends on it.

    The defaults are the CLI's (``jobs.place.PlaceConfig``); pass the cluster's worker count as
    ``workers`` to get the units ``segment1b run`` plans on that cluster (it also caps units by the
    workers' memory limit, see ``jobs.place._memory_bound_sites``).
    """

    part_sites: int = DEFAULT_PART_SITES
    max_unit_sites: int = 250_000
    min_unit_sites: int = 2_000
    skew: float = 4.0
    workers: int = 1

    def __post_init__(self):
        for name in ("part_sites", "max_unit_sites", "min_unit_sites", "workers"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.skew > 0:
            raise ValueError(f"skew must be > 0, got {self.skew!r}")


@dataclass(frozen=True)
class RequirementsSource:
    """The published ``s3_requirements`` of one run identity, and how to cut it (a picklable recipe)."""

    root: str
    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    storage_options: dict | None = field(default=None, hash=False)
    sizing: UnitSizing = UnitSizing()

    def __post_init__(self):
        # malformed identity tokens are refused now, with the contract's code, not at compute
        object.__setattr__(self, "seed", int(check_token("seed", self.seed)))
        check_token("manifest_fingerprint", self.manifest_fingerprint)
        check_token("parameter_hash", self.parameter_hash)

    @property
    def storage(self) -> Storage:
        return Storage(self.root, self.storage_options)

    @property
    def rel(self) -> str:
        return path_for(DATASET, seed=self.seed, manifest_fingerprint=self.manifest_fingerprint,
                        parameter_hash=self.parameter_hash)


@dataclass(frozen=True)
class UnitRead:
    """One partition: the unit's countries and merchant range, and the row groups that can hold them."""

    label: str  # ISO code, or jobs.units.SMALL_LABEL for a pack of small countries
    part: int
    chunk: int
    countries: tuple[str, ...]
    merchant_lo: int
    merchant_hi: int
    pairs: int
    sites: int
    refs: tuple[RowGroupRef, ...] = field(repr=False)


# ---------------------------------------------------------------------------------------------------------
# planning (client side, when Dask first needs the partitions)

@functools.lru_cache(maxsize=8)
def plan_reads(source: RequirementsSource) -> tuple[UnitRead, ...]:
    """The units of ``source`` in the CLI's order (largest first); at least one (empty) unit.

    Reads the footers and three columns of ``s3_requirements`` (once per process and source: the
    dataset is write-once).

    Raises
    ------
    InputError
        ``E305_PARQUET_UNREADABLE`` when ``s3_requirements`` is not published for the identity or a part
        cannot be read.
    """
    storage = source.storage
    if not storage.is_published(source.rel):
        raise InputError("E305_PARQUET_UNREADABLE", f"{DATASET} is not published for seed {source.seed}, "
                         f"fingerprint {source.manifest_fingerprint}, parameter_hash {source.parameter_hash}",
                         dataset=DATASET, path=storage.url(source.rel),
                         hint="run S3 first (`segment1b run --through s3`) or check the identity tokens")
    index = CatalogueIndex(storage, source.rel, DATASET)
    pairs, sizing = read_pairs(storage, source.rel), source.sizing
    _, units = plan_layout(pairs.merchant_id, pairs.country, pairs.n_sites, part_sites=sizing.part_sites,
                           max_unit_sites=sizing.max_unit_sites, min_unit_sites=sizing.min_unit_sites,
                           skew=sizing.skew, workers=sizing.workers)
    del pairs
    if not units:
        return (UnitRead("empty", 0, 0, (), 1, 0, 0, 0, ()),)
    return tuple(UnitRead(u.label, u.part, u.chunk, u.countries, u.merchant_lo, u.merchant_hi, u.pairs, u.sites,
                          tuple(index.refs(u.merchant_lo, u.merchant_hi))) for u in units)


def read_unit(storage: Storage, unit: UnitRead) -> pd.DataFrame:
    """Task: the unit's pairs, in (merchant_id, legal_country_iso) order.

    A unit is all pairs of its countries inside its merchant range (a chunk of a big country is a range of
    consecutive merchants; a pack holds whole (country, part) groups), so a range and country filter over
    the overlapping row groups gives exactly its pairs.
    """
    if not unit.refs:
        return REQUIREMENTS_META.copy()
    pairs = read_pairs_range(storage, list(unit.refs), unit.merchant_lo, unit.merchant_hi)
    keep = np.isin(pairs.country, np.array([iso_code(c) for c in unit.countries], dtype=np.uint16))
    return pd.DataFrame({"merchant_id": pairs.merchant_id[keep], "legal_country_iso": iso_array(pairs.country[keep]),
                         "n_sites": pairs.n_sites[keep].astype(np.int64)})


# ---------------------------------------------------------------------------------------------------------
# the expression

class RequirementUnits(PartitionsFiltered, BlockwiseIO):
    """IO expression: partition ``i`` reads unit ``i`` of :func:`plan_reads` (planned when first needed)."""

    _parameters = ["source", "_partitions"]
    _defaults = {"_partitions": None}
    _absorb_projections = False

    @functools.cached_property
    def _name(self) -> str:
        return f"s3-requirements-{self.deterministic_token}"

    @functools.cached_property
    def _meta(self) -> pd.DataFrame:
        return REQUIREMENTS_META

    @property
    def units(self) -> tuple[UnitRead, ...]:
        return plan_reads(self.operand("source"))

    def _divisions(self) -> tuple:
        return (None,) * (len(self.units) + 1)

    def _filtered_task(self, name: Any, index: int) -> Task:
        return Task(name, read_unit, self.operand("source").storage, self.units[index], _data_producer=True)


def unit_table(frame) -> pd.DataFrame:
    """Partition number -> work unit of a frame that :func:`jobs.frames.read_requirements` partitioned.

    Every step of :mod:`jobs.frames` maps partition ``i`` to partition ``i``, so the table also describes
    the plan, sites, events and located frames built on it.  Plans the units if that was not done yet
    (reads ``s3_requirements``' three columns, see the module docstring).

    Raises
    ------
    ValueError
        When ``frame`` was not built on :func:`jobs.frames.read_requirements`, or was repartitioned since.
    """
    found = list(frame.expr.find_operations(RequirementUnits))
    if len(found) != 1:
        raise ValueError("unit_table needs a frame built on jobs.frames.read_requirements (found "
                         f"{len(found)} requirement reads in its graph)")
    units = found[0].units
    if frame.npartitions != len(units):
        raise ValueError(f"the frame has {frame.npartitions} partitions but its requirements have {len(units)} "
                         "units: it was repartitioned, so partitions no longer correspond to units")
    return pd.DataFrame([{"partition": i, "label": u.label, "countries": ",".join(u.countries), "part": u.part,
                          "chunk": u.chunk, "pairs": u.pairs, "sites": u.sites,
                          "merchant_lo": u.merchant_lo, "merchant_hi": u.merchant_hi}
                         for i, u in enumerate(units)]).set_index("partition")
