"""Segment 1B placement as lazy Dask collections: requirements -> S4 -> S5 -> S6/S7 (issue 16).

>>> from jobs.frames import Streams, Surfaces, read_requirements, allocate, assign, jitter
>>> requirements = read_requirements(root, seed, fingerprint, parameter_hash)  # doctest: +SKIP
>>> surfaces, streams = Surfaces(root, parameter_hash), Streams(seed, fingerprint, parameter_hash)  # doctest: +SKIP
>>> plan = allocate(requirements, surfaces)  # S4, a dask.dataframe   # doctest: +SKIP
>>> sites = assign(plan, streams)  # S5   # doctest: +SKIP
>>> located = jitter(sites, surfaces, streams)  # S6 + S7, a dask_geopandas.GeoDataFrame  # doctest: +SKIP

Nothing is read or computed until the user computes: :func:`read_requirements` plans its partitions
when Dask first needs them (:mod:`jobs.frame_units`), and every step is a ``map_partitions`` with an
explicit ``meta`` over the previous collection, calling the kernels ``segment1b run`` calls
(:mod:`jobs.frame_parts`).  Partition ``i`` of every collection is work unit ``i`` of the CLI's planner
(:func:`unit_table` lists them); rows do not depend on the partitioning, and equal what ``segment1b run``
publishes for the same identity.  ``docs/dataframe-api.md`` has the details: layer names on the dashboard,
RNG events, memory, and the benchmark against the CLI's futures runner.
"""

from __future__ import annotations

import dask.dataframe as dd
from dask.dataframe.dask_expr._collection import new_collection
import dask_geopandas  # noqa: F401  (registers the GeoDataFrame collection for the located frame's meta)

from segment1b.contracts import iso_table
from segment1b.errors import InputError

from .frame_parts import (COUNTRIES_META, LOCATED_META, PLAN_META, PREFIX_META, REQUIREMENTS_META, S5_EVENTS_META,
                          S6_EVENTS_META, SITES_META, Streams, Surfaces, allocate_part, assign_part, country_rows,
                          jitter_part, locate_part, prefix_part, prefix_table, sites_part)
from .frame_units import RequirementsSource, RequirementUnits, UnitSizing, unit_table

__all__ = ["Surfaces", "Streams", "UnitSizing", "read_requirements", "allocate", "assign", "jitter", "place",
           "assign_events", "jitter_events", "unit_table", "LAYERS"]

#: token of each step's layer: task keys are ``(<token>-<hash>, partition)`` (docs/dataframe-api.md, *Dashboard*).
#: Not "s4-allocate": Dask's key_split takes an 8-letter word starting with a-f for a hex token, so the
#: dashboard would show that layer as "s4"; "s4-alloc" is also what the CLI's S4 task keys say.
LAYERS = {"read": "s3-requirements", "weights": "s4-weights", "allocate": "s4-alloc", "assign": "s5-assign",
          "sites": "s5-sites", "jitter": "s6-jitter", "locate": "s7-locate"}

PREFIX_TASKS = 32


def read_requirements(root: str, seed: int, fingerprint: str, parameter_hash: str,
                      storage_options: dict | None = None, *, sizing: UnitSizing | None = None) -> dd.DataFrame:
    """The published ``s3_requirements`` of a run identity, one partition per S4-S7 work unit.

    Lazy: no file is opened here.  The units (:func:`jobs.units.plan_units`, as ``segment1b run`` plans
    them: big countries split by merchant range, small countries packed) are planned when Dask first needs
    the partitions; then the client reads the dataset's three columns, and each task reads only the row
    groups of its unit.

    Parameters
    ----------
    root : str
        Data root: a folder or an fsspec URL every worker can reach.
    seed : int
    fingerprint : str
        ``manifest_fingerprint`` (64 lowercase hex).
    parameter_hash : str
        64 lowercase hex.
    storage_options : dict, optional
        fsspec options of the data root.
    sizing : UnitSizing, optional
        Unit sizes; ``UnitSizing(workers=n)`` gives the units ``segment1b run`` plans on n workers.

    Returns
    -------
    dask.dataframe.DataFrame
        ``merchant_id`` uint64, ``legal_country_iso`` string, ``n_sites`` int64; each partition in
        (merchant_id, legal_country_iso) order.  Divisions are unknown (units of different countries overlap
        in merchant_id); :func:`unit_table` maps partitions to units and countries.

    Raises
    ------
    InputError
        ``E309_VALUE_RANGE`` for a malformed seed, fingerprint or parameter_hash (at once);
        ``E305_PARQUET_UNREADABLE`` when computed and ``s3_requirements`` is not published or unreadable.
    """
    source = RequirementsSource(str(root), seed, fingerprint, parameter_hash, storage_options,
                                sizing or UnitSizing())
    return new_collection(RequirementUnits(source))


def allocate(requirements: dd.DataFrame, surfaces: Surfaces) -> dd.DataFrame:
    """S4: the allocation plan of every pair (the ``s4_alloc_plan`` columns), partition by partition.

    Each country's weight prefix (its ``2·max n_sites`` heaviest tiles, contract §6 note) is computed once,
    in one ``s4-weights`` task per ISO code, from the largest ``n_sites`` of the country over the whole
    frame; the prefixes are gathered into one small table that every ``s4-alloc`` task receives.

    Parameters
    ----------
    requirements : dask.dataframe.DataFrame
        ``merchant_id``, ``legal_country_iso``, ``n_sites`` (:func:`read_requirements`, or any partitioning
        of it).
    surfaces : Surfaces
        The prepared tile surfaces of the run's ``parameter_hash``.

    Returns
    -------
    dask.dataframe.DataFrame
        Partition ``i`` holds the plan rows of partition ``i``'s pairs in (merchant_id, legal_country_iso,
        tile_id) order.

    Raises
    ------
    InputError
        ``E310_PARAMETER_HASH_MISMATCH`` (at once) when ``surfaces`` belong to another parameter_hash than
        the requirements; when computed, ``E303_MISSING_WEIGHTS``, ``E105_NORMALIZATION``,
        ``E505_TILE_NOT_IN_INDEX``, ``E416_NUMERIC_OVERFLOW`` as ``segment1b run``.
    """
    _check_columns(requirements, REQUIREMENTS_META, "requirements")
    _check_type(surfaces, Surfaces, "surfaces")
    _check_same_hash(requirements, surfaces.parameter_hash, "surfaces")
    max_n = requirements[["legal_country_iso", "n_sites"]].groupby("legal_country_iso")["n_sites"].max(split_out=1)
    isos = list(iso_table())
    groups = [tuple(isos[g::PREFIX_TASKS]) for g in range(PREFIX_TASKS)]
    countries = dd.from_map(country_rows, groups, meta=COUNTRIES_META, label="s4-countries", enforce_metadata=False)
    prefixes = countries.map_partitions(prefix_part, max_n, surfaces, meta=PREFIX_META, token=LAYERS["weights"])
    # One object for every partition: a Scalar (a tree reduction with a scalar meta), not a one-partition
    # frame.  dask-expr takes a frame with a second IO root (the ISO groups) for not co-aligned with the
    # requirements, and would shuffle on every later filter of the result; scalars are broadcast as they are.
    table = prefixes.reduction(prefix_table, prefix_table, meta=("prefixes", object))
    return requirements.map_partitions(allocate_part, table, meta=PLAN_META, token=LAYERS["allocate"])


def assign(plan: dd.DataFrame, streams: Streams) -> dd.DataFrame:
    """S5: the tile of every site (the ``s5_site_tile_assignment`` columns), partition by partition.

    Every plan row of a pair must be in one partition, as :func:`allocate` leaves them (repartition the
    requirements, never the plan).

    Parameters
    ----------
    plan : dask.dataframe.DataFrame
        :func:`allocate`'s output.
    streams : Streams
        The run identity's RNG.

    Returns
    -------
    dask.dataframe.DataFrame
        ``merchant_id``, ``legal_country_iso``, ``site_order``, ``tile_id`` in writer-sort order per partition.

    Raises
    ------
    InputError
        ``E306_TOKEN_MISMATCH`` (at once) when ``streams`` name another identity than the requirements.
    """
    return _s5(plan, streams).map_partitions(sites_part, meta=SITES_META, token=LAYERS["sites"])


def assign_events(plan: dd.DataFrame, streams: Streams) -> dd.DataFrame:
    """S5's ``site_tile_assign`` RNG events of :func:`assign` (one per site), lazily.

    Same arguments as :func:`assign` and the same ``s5-assign`` layer: computed in one call with the sites
    (``dask.compute``, or both written in one graph), the kernel runs once.  Columns: the site, ``u`` and
    the four ``rng_counter_*`` fields of the contract's JSON lines (§7, §9); the constant fields are those
    of ``streams`` (seed, manifest_fingerprint, parameter_hash), ``module="1B.s5_site_tile_assignment"``,
    ``draws="1"``, ``blocks=1``; ``ts_utc`` and ``run_id`` belong to a ``segment1b run``, which writes the
    logs that S9 audits.
    """
    return _s5(plan, streams)


def jitter(sites: dd.DataFrame, surfaces: Surfaces, streams: Streams):
    """S6 + S7: every site at a uniform point of its tile inside its country, as points in EPSG:4326.

    Parameters
    ----------
    sites : dask.dataframe.DataFrame
        :func:`assign`'s output (or any partitioning of it: each site is placed on its own).
    surfaces : Surfaces
    streams : Streams

    Returns
    -------
    dask_geopandas.GeoDataFrame
        ``merchant_id``, ``legal_country_iso``, ``site_order``, ``tile_id``, ``delta_lat_deg``,
        ``delta_lon_deg`` (the ``s6_site_jitter`` row), ``lon_deg``, ``lat_deg`` (the ``s7_site_synthesis``
        row) and ``geometry`` (points, EPSG:4326); writer-sort order per partition.

    Raises
    ------
    InputError
        ``E310_PARAMETER_HASH_MISMATCH`` / ``E306_TOKEN_MISMATCH`` (at once) on mixed identities; when
        computed, ``E613_RESAMPLE_EXHAUSTED`` as ``segment1b run``.
    """
    return _s6(sites, surfaces, streams).map_partitions(locate_part, surfaces, meta=LOCATED_META,
                                                       token=LAYERS["locate"])


def jitter_events(sites: dd.DataFrame, surfaces: Surfaces, streams: Streams) -> dd.DataFrame:
    """S6's ``in_cell_jitter`` RNG events of :func:`jitter` (one per attempt), lazily.

    Same arguments and ``s6-jitter`` layer as :func:`jitter` (computed together, the kernel runs once).
    Columns: the site, ``attempt_index``, ``accepted``, the candidate's ``delta_lat_deg``/``delta_lon_deg``
    and the four ``rng_counter_*`` fields (§8, §9); constant fields as in :func:`assign_events`
    (``module="1B.S6.jitter"``, ``draws="2"``, ``blocks=1``, ``sigma_*=0.0``).
    """
    return _s6(sites, surfaces, streams)


def place(requirements: dd.DataFrame, surfaces: Surfaces, streams: Streams):
    """``jitter(assign(allocate(requirements, surfaces), streams), surfaces, streams)``."""
    return jitter(assign(allocate(requirements, surfaces), streams), surfaces, streams)


# ---------------------------------------------------------------------------------------------------------

def _s5(plan: dd.DataFrame, streams: Streams) -> dd.DataFrame:
    _check_columns(plan, PLAN_META, "plan")
    _check_type(streams, Streams, "streams")
    _check_identity(plan, streams)
    return plan.map_partitions(assign_part, streams, meta=S5_EVENTS_META, token=LAYERS["assign"])


def _s6(sites: dd.DataFrame, surfaces: Surfaces, streams: Streams) -> dd.DataFrame:
    _check_columns(sites, SITES_META, "sites")
    _check_type(surfaces, Surfaces, "surfaces")
    _check_type(streams, Streams, "streams")
    if surfaces.parameter_hash != streams.parameter_hash:
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"surfaces are of parameter_hash {surfaces.parameter_hash} "
                         f"but streams of {streams.parameter_hash}",
                         rows=[{"surfaces": surfaces.parameter_hash, "streams": streams.parameter_hash}])
    _check_same_hash(sites, surfaces.parameter_hash, "surfaces")
    _check_identity(sites, streams)
    return sites.map_partitions(jitter_part, surfaces, streams, meta=S6_EVENTS_META, token=LAYERS["jitter"])


def _check_type(value, kind: type, name: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a jobs.frames.{kind.__name__}, got {type(value).__name__}")


def _check_columns(frame, meta, name: str) -> None:
    if not isinstance(frame, dd.DataFrame):
        raise TypeError(f"{name} must be a dask.dataframe.DataFrame, got {type(frame).__name__}")
    missing = [c for c in meta.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}; it has {list(frame.columns)}")


def _source(frame) -> RequirementsSource | None:
    found = list(frame.expr.find_operations(RequirementUnits))
    return found[0].operand("source") if len(found) == 1 else None


def _check_same_hash(frame, parameter_hash: str, name: str) -> None:
    """E310 when ``frame`` reads the requirements of another parameter_hash than the recipe's."""
    source = _source(frame)
    if source is not None and source.parameter_hash != parameter_hash:
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"the requirements are of parameter_hash "
                         f"{source.parameter_hash} but the {name} of {parameter_hash}", dataset="s3_requirements",
                         rows=[{"requirements": source.parameter_hash, name: parameter_hash}])


def _check_identity(frame, streams: Streams) -> None:
    """E306 when ``streams`` belong to another identity than the requirements the frame reads."""
    source = _source(frame)
    if source is None:
        return
    wrong = [{"token": k, "requirements": str(a), "streams": str(b)} for k, a, b in
             (("seed", source.seed, streams.seed),
              ("manifest_fingerprint", source.manifest_fingerprint, streams.manifest_fingerprint),
              ("parameter_hash", source.parameter_hash, streams.parameter_hash)) if str(a) != str(b)]
    if wrong:
        raise InputError("E306_TOKEN_MISMATCH", f"the streams' {', '.join(w['token'] for w in wrong)} differ from "
                         "the requirements'", dataset="s3_requirements", rows=wrong,
                         hint="build Streams(seed, fingerprint, parameter_hash) with the requirements' identity")
