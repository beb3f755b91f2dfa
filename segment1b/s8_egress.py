"""S8 egress: ``site_locations`` = S7 without ``tile_id``, partitioned by seed and fingerprint (§10).

``site_locations`` keeps S7's part layout (part ``p`` of both holds the same rows), so S9 can compare them
part by part, and a consumer reading the parts in name order gets writer-sort order.
"""

from __future__ import annotations

import pyarrow as pa

from .contracts import dataset

__all__ = ["site_locations_part", "ENCODINGS"]

DATASET = "site_locations"

#: Parquet encodings of the egress columns (see ``storage.write_parquet_bytes``): lon/lat are
#: high-entropy doubles, which byte-stream-split makes compressible; keys keep dictionary encoding.
ENCODINGS = {"lon_deg": "BYTE_STREAM_SPLIT", "lat_deg": "BYTE_STREAM_SPLIT"}


def site_locations_part(s7: pa.Table) -> pa.Table:
    """The ``site_locations`` rows of one S7 part (same rows, same order, no ``tile_id``).

    Parameters
    ----------
    s7 : pyarrow.Table
        Rows with the ``s7_site_synthesis`` columns.

    Returns
    -------
    pyarrow.Table
        The ``site_locations`` schema.

    Examples
    --------
    >>> s7 = pa.table({"merchant_id": pa.array([1], pa.uint64()), "legal_country_iso": ["FR"],
    ...                "site_order": pa.array([1], pa.int64()), "tile_id": pa.array([9], pa.uint64()),
    ...                "lon_deg": [2.25], "lat_deg": [48.75]})
    >>> site_locations_part(s7).column_names
    ['merchant_id', 'legal_country_iso', 'site_order', 'lon_deg', 'lat_deg']
    """
    schema = dataset(DATASET).schema
    return s7.select(schema.names).cast(schema)
