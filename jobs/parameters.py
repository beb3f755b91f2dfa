"""The parameters behind a ``parameter_hash``: the grid and the reference countries (for S7 and S9).

``segment1b prepare`` (and tests/world.py) record the canonical :class:`SegmentParameters` JSON at
``path_for("parameters", parameter_hash=...)``.  States after S6 need the grid (cell centroids and bounds)
and ``countries_sha256`` (to find the published country polygons); they load both from that record and
check that it really hashes to the ``parameter_hash`` in the paths they read.
"""

from __future__ import annotations

from dataclasses import dataclass

from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.grid import Grid
from segment1b.identity import SegmentParameters, fingerprint_of
from segment1b.storage import Storage

__all__ = ["RunParameters", "load_parameters", "describe_parameters"]


@dataclass(frozen=True)
class RunParameters:
    """What S7/S9 need from the parameters of a run."""

    parameter_hash: str
    grid: Grid
    countries_sha256: str
    params: SegmentParameters


def load_parameters(storage: Storage, parameter_hash: str) -> RunParameters:
    """Read and check the recorded parameters of ``parameter_hash`` (eager, on the client).

    Raises
    ------
    InputError
        ``E310_PARAMETER_HASH_MISMATCH`` when no parameters are recorded for the hash, the record is not
        readable, or it hashes to something else.
    """
    rel = path_for("parameters", parameter_hash=parameter_hash)
    if not storage.exists(rel):
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"no parameters are recorded for parameter_hash "
                         f"{parameter_hash}", dataset="parameters", path=storage.url(rel),
                         hint="run `segment1b prepare` (or `segment1b run`) in this data root first")
    try:
        canonical = storage.read_json(rel)
        params = SegmentParameters.from_canonical(canonical)
        grid = Grid.from_params(params.grid)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"recorded parameters are not readable: {exc}",
                         dataset="parameters", path=storage.url(rel)) from exc
    actual = fingerprint_of(canonical)
    if actual != parameter_hash:
        raise InputError("E310_PARAMETER_HASH_MISMATCH", f"recorded parameters hash to {actual}, not to the "
                         f"parameter_hash {parameter_hash} of their path", dataset="parameters",
                         path=storage.url(rel),
                         hint="the parameters file was edited; rerun `segment1b prepare`")
    return RunParameters(parameter_hash, grid, params.countries_sha256, params)


def describe_parameters(storage: Storage, parameter_hash: str) -> str:
    """``grid 5m, dp 8, basis population_proxy`` for messages that ask a user to choose a parameter_hash."""
    try:
        params = load_parameters(storage, parameter_hash).params
    except InputError:
        return "parameters not recorded"
    return f"grid {params.grid.get('name') or 'from a raster'}, dp {params.dp}, basis {params.basis}"
