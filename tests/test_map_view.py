"""Map views: antimeridian countries in one piece, far territories left out, micro-states, frame fitting."""

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

import world
from segment1b.map_view import MapView, country_view, world_view

RU_LIKE = MultiPolygon([box(27.0, 41.0, 180.0, 78.0), box(-180.0, 64.0, -169.0, 71.0),  # main, Chukotka
                        box(19.6, 54.3, 22.9, 55.3)])  # Kaliningrad
FR_LIKE = MultiPolygon([box(-5.0, 42.3, 8.2, 51.1), box(8.5, 41.3, 9.6, 43.0),  # mainland, Corsica
                        box(-54.6, 2.1, -51.6, 5.8), box(55.2, -21.4, 55.8, -20.9)])  # Guiana, Réunion


def test_fiji_is_drawn_across_the_antimeridian():
    fj = world.countries()["FJ"]
    v = country_view(fj, pad=0.0)
    assert v.shifted and (v.west, v.east) == (177.2, 181.4) and (v.south, v.north) == (-19.2, -16.1)
    assert v.display_lon([-179.0, 178.0]).tolist() == [181.0, 178.0]
    assert v.contains([-179.0, 178.0, 170.0], [-17.0, -17.0, -17.0]).tolist() == [True, True, False]


def test_a_country_spanning_most_longitudes_shifts_only_when_narrower():
    v = country_view(RU_LIKE, pad=0.0)
    assert v.shifted and v.west == 19.6 and v.east == 191.0
    fr = country_view(world.countries()["FR"], pad=0.0)  # no part near +-180: plain longitudes
    assert not fr.shifted and (fr.west, fr.east) == (-2.0, 7.0)


def test_far_territories_are_left_out_unless_the_sites_are_there():
    v = country_view(FR_LIKE, pad=0.0)
    assert (v.west, v.east, v.south, v.north) == (-5.0, 9.6, 41.3, 51.1)  # with Corsica, without overseas
    v = country_view(FR_LIKE, sites_lon=[55.5] * 3 + [2.0], sites_lat=[-21.0] * 3 + [48.0], pad=0.0)
    assert (v.west, v.east) == (55.2, 55.8)  # most sites on Réunion: the view follows them
    v = country_view(FR_LIKE, sites_lon=[-30.0], sites_lat=[0.0], pad=0.0)  # no site on land: largest part
    assert v.west == -5.0


def test_micro_states_get_a_minimum_span_and_empty_geometry_is_refused():
    v = country_view(world.countries()["MC"], pad=0.05, min_span=0.25)
    assert v.east - v.west == pytest.approx(0.55 * 1.1) and v.north - v.south == pytest.approx(0.5 * 1.1)
    tiny = country_view(box(7.41, 43.72, 7.44, 43.75), min_span=0.25)
    assert tiny.east - tiny.west == pytest.approx(0.25) and tiny.north - tiny.south == pytest.approx(0.25)
    assert tiny.contains([7.425], [43.735]).all()
    with pytest.raises(ValueError, match="empty"):
        country_view(Polygon())


def test_aspect_and_fit():
    assert world_view().aspect == 1.0
    assert MapView(0.0, 10.0, 59.0, 61.0).aspect == pytest.approx(2.0)
    wide = MapView(0.0, 10.0, 40.0, 50.0).fit(400, 200, aspect=1.0)
    assert (wide.west, wide.east, wide.south, wide.north) == (-5.0, 15.0, 40.0, 50.0)
    tall = MapView(0.0, 10.0, 40.0, 50.0).fit(100, 400, aspect=1.0)
    assert (tall.west, tall.east) == (0.0, 10.0) and tall.north - tall.south == pytest.approx(40.0)
    polar = MapView(0.0, 100.0, 70.0, 85.0).fit(100, 100, aspect=1.0)  # would reach past the pole: slides
    assert polar.north == 90.0 and polar.south == pytest.approx(-10.0)
    for w, h in ((1600, 800), (600, 900)):
        v = MapView(-5.0, 9.6, 41.3, 51.1)
        f = v.fit(w, h)
        assert (f.east - f.west) / (v.aspect * (f.north - f.south)) == pytest.approx(w / h)
        assert f.west <= v.west and f.east >= v.east and f.south <= v.south and f.north >= v.north


def test_display_longitudes_are_plain_in_a_plain_view():
    lon = np.array([-179.5, 0.0, 179.5])
    assert world_view().display_lon(lon).tolist() == lon.tolist()
