"""Segment 1B domain library: contracts, grid, RNG, reference data and one module per state.

Nothing here imports Dask's scheduler, ``jobs`` or ``cluster``: kernels are plain functions of
Arrow/pandas/NumPy inputs for one work unit (see ../shared/DESIGN.md).
"""

__version__ = "0.1.0"
