"""Site keys: ISO codes, neighbour order checks and multiset differences, on literal tables."""

import numpy as np
import pyarrow as pa
import pytest

from segment1b.keys import SiteKeys, iso_is_upper, iso_strings, iso_u16


def keys(*rows):
    m, c, s = zip(*rows) if rows else ((), (), ())
    return SiteKeys.from_table(pa.table({"merchant_id": pa.array(m, pa.uint64()),
                                         "legal_country_iso": pa.array(c, pa.string()),
                                         "site_order": pa.array(s, pa.int64())}))


def test_iso_codes_roundtrip_and_keep_string_order():
    codes = iso_u16(pa.chunked_array([["FR", "DE"], ["FJ", "zz"]]))
    assert iso_strings(codes).to_pylist() == ["FR", "DE", "FJ", "zz"]
    assert np.argsort(codes).tolist() == [1, 2, 0, 3]  # DE < FJ < FR < zz, as strings
    assert iso_is_upper(codes).tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="two letters"):
        iso_u16(pa.array(["FRA"]))


@pytest.mark.parametrize("rows,down,dup", [
    ([(1, "FR", 1), (1, "FR", 2), (2, "DE", 1)], [], []),
    ([(1, "FR", 2), (1, "FR", 1)], [1], []),
    ([(1, "FR", 1), (1, "FR", 1)], [], [1]),
    ([(2**64 - 1, "FR", 1), (1, "FR", 1)], [1], []),  # u64 above 2**63 sorts after small ids
    ([(1, "FR", 1), (1, "DE", 5)], [1], []),
])
def test_neighbours_find_unsorted_and_duplicate_rows(rows, down, dup):
    d, u = keys(*rows).neighbours()
    assert d.tolist() == down and u.tolist() == dup


def test_diff_and_match_are_multiset_aware():
    a = keys((1, "FR", 1), (1, "FR", 2), (2, "DE", 1))
    b = keys((1, "FR", 2), (3, "MC", 1), (1, "FR", 2))
    only_a, only_b = a.diff(b)
    assert only_a.tolist() == [0, 2] and only_b.tolist() == [1, 2]
    ia, ib = a.match(b)
    assert ia.tolist() == [1] and ib.tolist() == [0]
    assert a.duplicates().size == 0 and b.duplicates().tolist() == [2]
    assert [len(x) for x in a.diff(a)] == [0, 0]
