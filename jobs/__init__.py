"""Dask jobs for Segment 1B and the ``segment1b`` command line (imports segment1b and cluster, never back)."""
