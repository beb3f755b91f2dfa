"""Segment 1B domain library: contracts, grid, RNG, reference data and one module per state.

Nothing here imports Dask's scheduler, ``jobs`` or ``cluster``: kernels are plain functions of
Arrow/pandas/NumPy inputs for one work unit (see ../shared/DESIGN.md).

What a user of published data needs is importable from here:

- reading a validated run: :func:`open_site_locations`, :func:`export_geoparquet`,
  :func:`verify_passed_flag`, :func:`check_flag` (:class:`FlagCheck`) — :mod:`segment1b.reader`;
- the data root and the grid: :class:`Storage`, :class:`Grid`;
- who a run is: :class:`RunIdentity`;
- what can go wrong: :class:`Segment1BError` and its families :class:`InputError`, :class:`IntegrityError`,
  :class:`PublishError`, :class:`BusyError`, each carrying a code of :data:`FAILURE_CODES`.

These names are imported on first use (``import segment1b`` itself loads neither NumPy nor pyarrow nor
fsspec); the state modules are imported as ``segment1b.<module>``.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (8 ms cold): type checkers assume True

__version__ = "0.1.0"

# public name -> the module that defines it
_HOME = {
    "open_site_locations": "reader",
    "export_geoparquet": "reader",
    "verify_passed_flag": "reader",
    "check_flag": "reader",
    "FlagCheck": "reader",
    "Storage": "storage",
    "Grid": "grid",
    "RunIdentity": "identity",
    "Segment1BError": "errors",
    "InputError": "errors",
    "IntegrityError": "errors",
    "PublishError": "errors",
    "BusyError": "errors",
    "FAILURE_CODES": "errors",
}

__all__ = [
    "open_site_locations", "export_geoparquet", "verify_passed_flag", "check_flag", "FlagCheck",
    "Storage", "Grid", "RunIdentity",
    "Segment1BError", "InputError", "IntegrityError", "PublishError", "BusyError", "FAILURE_CODES",
    "__version__",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names resolve lazily (below)
    from .errors import FAILURE_CODES, BusyError, InputError, IntegrityError, PublishError, Segment1BError
    from .grid import Grid
    from .identity import RunIdentity
    from .reader import FlagCheck, check_flag, export_geoparquet, open_site_locations, verify_passed_flag
    from .storage import Storage


def __getattr__(name: str) -> object:
    """Resolve a public name on first use (PEP 562), so that ``import segment1b`` stays cheap."""
    if name not in _HOME:
        raise AttributeError(f"module 'segment1b' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
