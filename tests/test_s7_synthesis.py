"""S7 kernel on literal inputs: the join, absolute points, and each failure code E701/E702/E703/E707/E708."""

import pyarrow as pa
import pytest

from segment1b.contracts import dataset
from segment1b.errors import IntegrityError
from segment1b.grid import Grid
from segment1b.s7_synthesis import synthesize_part

GRID = Grid.named("1d")  # cells of 1 degree, 84N..56S
FR = int(GRID.tile_id(35, 182))  # row 35 (49-48N), col 182 (2-3E): centroid (2.5, 48.5)
FJ_EAST = int(GRID.tile_id(101, 359))  # col 359: 179-180E, centroid (179.5, -17.5)


def frame(rows, **cols):
    m, c, s = zip(*rows)
    return {"merchant_id": pa.array(m, pa.uint64()), "legal_country_iso": list(c),
            "site_order": pa.array(s, pa.int64()),
            **cols}


def inputs(rows, tiles, dlon, dlat, catalogue=None):
    s5 = pa.table(frame(rows, tile_id=pa.array(tiles, pa.uint64())))
    s6 = pa.table(frame(rows, tile_id=pa.array(tiles, pa.uint64()), delta_lat_deg=dlat, delta_lon_deg=dlon))
    cat = pa.table(frame(catalogue or rows))
    return s5, s6, cat


ROWS = [(1, "FJ", 1), (1, "FR", 1), (1, "FR", 2), (2**64 - 1, "FR", 1)]
TILES = [FJ_EAST, FR, FR, FR]


def test_points_are_centroid_plus_delta_wrapped_and_sorted():
    s5, s6, cat = inputs(ROWS, TILES, [0.5, -0.25, 0.0, 0.5], [0.0, 0.5, -0.5, 0.0])
    out = synthesize_part(s5, s6, cat, GRID)
    assert out.schema == dataset("s7_site_synthesis").schema
    assert out["lon_deg"].to_pylist() == [-180.0, 2.25, 2.5, 3.0]  # 179.5 + 0.5 wraps to -180
    assert out["lat_deg"].to_pylist() == [-17.5, 49.0, 48.0, 48.5]  # edges count as inside
    # unsorted inputs come out in writer-sort order
    rev = [t.take(pa.array([3, 2, 1, 0])) for t in (s5, s6)]
    assert synthesize_part(rev[0], rev[1], cat, GRID).equals(out)


@pytest.mark.parametrize("case,code", [
    ("s6 lacks a site", "E701_ROW_MISSING"),
    ("s6 has an extra site", "E702_ROW_EXTRA"),
    ("s5 duplicate", "E703_DUP_KEY"),
    ("s6 duplicate", "E703_DUP_KEY"),
    ("delta leaves the pixel", "E707_POINT_OUTSIDE_PIXEL"),
    ("delta is NaN", "E707_POINT_OUTSIDE_PIXEL"),
    ("s6 drew in another tile", "E707_POINT_OUTSIDE_PIXEL"),
    ("catalogue has a site more", "E708_1A_COVERAGE_FAIL"),
    ("catalogue lacks a site", "E708_1A_COVERAGE_FAIL"),
])
def test_each_failure_has_its_code_and_names_the_site(case, code):
    dlon, dlat = [0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]
    s5, s6, cat = inputs(ROWS, TILES, dlon, dlat)
    if case == "s6 lacks a site":
        s6 = s6.slice(0, 3)
    elif case == "s6 has an extra site":
        s5 = s5.slice(0, 3)
    elif case == "s5 duplicate":
        s5 = pa.concat_tables([s5, s5.slice(2, 1)])
    elif case == "s6 duplicate":
        s6 = pa.concat_tables([s6.slice(2, 1), s6])
    elif case == "delta leaves the pixel":
        s6 = s6.set_column(5, "delta_lon_deg", pa.array([0.1, 0.1, 0.6, 0.1]))
    elif case == "delta is NaN":
        s6 = s6.set_column(4, "delta_lat_deg", pa.array([0.0, 0.0, float("nan"), 0.0]))
    elif case == "s6 drew in another tile":
        s6 = s6.set_column(3, "tile_id", pa.array([FJ_EAST, FR, FR + 1, FR], pa.uint64()))
    elif case == "catalogue has a site more":
        cat = pa.table(frame(ROWS[:2] + [(1, "FR", 3)] + ROWS[2:]))
    elif case == "catalogue lacks a site":
        cat = cat.slice(0, 3)
    with pytest.raises(IntegrityError) as e:
        synthesize_part(s5, s6, cat, GRID)
    assert e.value.code == code and e.value.dataset == "s7_site_synthesis"
    named = {(r["merchant_id"], r["legal_country_iso"], r["site_order"]) for r in e.value.rows}
    expected = {"catalogue has a site more": (1, "FR", 3), "catalogue lacks a site": ROWS[3],
                "s6 has an extra site": ROWS[3], "s6 lacks a site": ROWS[3]}.get(case, ROWS[2])
    assert expected in named


def test_empty_part_is_an_empty_table():
    empty = dataset("s6_site_jitter").schema.empty_table()
    out = synthesize_part(dataset("s5_site_tile_assignment").schema.empty_table(), empty,
                          dataset("outlet_catalogue").schema.empty_table(), GRID)
    assert out.num_rows == 0 and out.schema == dataset("s7_site_synthesis").schema
