"""S8 projection: same rows and order as S7, contract schema, no tile_id."""

import pyarrow as pa

from segment1b.contracts import dataset
from segment1b.s8_egress import site_locations_part


def test_site_locations_is_s7_without_tile_id():
    s7 = pa.table({"merchant_id": pa.array([1, 2], pa.uint64()), "legal_country_iso": ["FR", "DE"],
                   "site_order": pa.array([1, 1], pa.int64()), "tile_id": pa.array([9, 8], pa.uint64()),
                   "lon_deg": [2.25, 8.5], "lat_deg": [48.75, 50.0]})
    s7 = s7.cast(dataset("s7_site_synthesis").schema)
    out = site_locations_part(s7)
    assert out.schema == dataset("site_locations").schema
    assert out.to_pylist() == [{k: v for k, v in r.items() if k != "tile_id"} for r in s7.to_pylist()]
