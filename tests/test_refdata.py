"""Reference data: cleaning, validation codes, user files, caching; embedded defaults when installed."""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pandas as pd
import pytest
import shapely

import geo_fixtures as gf
from segment1b import refdata
from segment1b.errors import InputError


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


requires_ne = pytest.mark.skipif(not _installed(refdata.NE_DIST), reason=f"{refdata.NE_DIST} not installed")
requires_places = pytest.mark.skipif(
    not _installed(refdata.PLACES_DIST), reason=f"{refdata.PLACES_DIST} not installed"
)


# -- validate_countries ------------------------------------------------------------------------------


def test_valid_countries_are_sorted_and_dissolved():
    iso, geoms, report = refdata.validate_countries(
        ["FR", "AD", "FR"], [gf.box(0, 0, 1, 1), gf.box(5, 5, 6, 6), gf.box(1, 0, 2, 1)]
    )
    assert iso == ("AD", "FR")
    assert shapely.area(geoms[1]) == pytest.approx(2.0)
    assert report["dissolved"] == {"FR": 2} and report["repaired_make_valid"] == []


def test_invalid_geometry_is_repaired_and_counted():
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    iso, geoms, report = refdata.validate_countries(["AD"], [bowtie])
    assert shapely.is_valid(geoms[0]) and shapely.area(geoms[0]) == pytest.approx(2.0)
    assert (
        len(report["repaired_make_valid"]) == 1
        and "Self-intersection" in report["repaired_make_valid"][0]["reason"]
    )


@pytest.mark.parametrize("code", ["fr", "ZZ", "FRA", "", None])
def test_bad_iso_is_E005_naming_the_value(code):
    with pytest.raises(InputError) as exc:
        refdata.validate_countries(["AD", code], [gf.box(0, 0, 1, 1), gf.box(2, 2, 3, 3)])
    assert exc.value.code == "E005_ISO_FK"
    assert f"country_iso={(code or '')!r}" in str(exc.value) and "feature=1" in str(exc.value)


@pytest.mark.parametrize(
    "geom, what",
    [
        (shapely.LineString([(0, 0), (1, 1)]), "LineString"),
        (shapely.Point(0, 0), "Point"),
        (shapely.from_wkt("POLYGON EMPTY"), "missing/empty"),
        (None, "missing/empty"),
    ],
)
def test_non_polygonal_or_empty_is_E001(geom, what):
    with pytest.raises(InputError) as exc:
        refdata.validate_countries(["AD", "FR"], [gf.box(0, 0, 1, 1), geom])
    assert exc.value.code == "E001_GEO_INVALID"
    assert "country_iso='FR'" in str(exc.value) and what in str(exc.value)


def test_coordinates_outside_lon_lat_are_E004():
    with pytest.raises(InputError) as exc:
        refdata.validate_countries(["AD", "FJ"], [gf.box(0, 0, 1, 1), gf.box(179, 0, 181, 1)])
    assert exc.value.code == "E004_BOUNDS" and "country_iso='FJ'" in str(exc.value)


def test_digest_is_order_independent_and_geometry_sensitive():
    a = refdata.countries_digest(["AD", "FR"], [gf.box(0, 0, 1, 1), gf.box(1, 1, 2, 2)])
    b = refdata.countries_digest(["FR", "AD"], [gf.box(1, 1, 2, 2), gf.box(0, 0, 1, 1)])
    c = refdata.countries_digest(["AD", "FR"], [gf.box(0, 0, 1, 1), gf.box(1, 1, 2, 2.5)])
    assert a == b != c


# -- Natural Earth cleaning --------------------------------------------------------------------------


def test_clean_natural_earth_maps_minus_99_and_drops_no_country_features():
    frame = pd.DataFrame(
        {
            "ISO_A2_EH": ["FR", "-99", "-99", "-99", "TW"],
            "ISO_A2": ["-99", "-99", "-99", "-99", "CN-TW"],
            "ADM0_A3": ["FRA", "NOR", "BRT", "ESB", "TWN"],
            "NAME": ["France", "Norway", "Bir Tawil", "Dhekelia", "Taiwan"],
            "geometry": [gf.box(i, 0, i + 1, 1) for i in range(5)],
        }
    )
    out, report = refdata.clean_natural_earth(frame)
    assert out["country_iso"].tolist() == ["FR", "NO", "GB", "TW"]
    assert [d["ADM0_A3"] for d in report["dropped_no_country"]] == ["BRT"]
    assert {m["ADM0_A3"] for m in report["mapped_by_adm0_a3"]} == {"NOR", "ESB"}


def test_unmapped_minus_99_is_E005():
    frame = pd.DataFrame(
        {
            "ISO_A2_EH": ["-99"],
            "ISO_A2": ["-99"],
            "ADM0_A3": ["XYZ"],
            "NAME": ["Nowhere"],
            "geometry": [gf.box(0, 0, 1, 1)],
        }
    )
    with pytest.raises(InputError) as exc:
        refdata.clean_natural_earth(frame)
    assert exc.value.code == "E005_ISO_FK" and "XYZ" in str(exc.value)


# -- user files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg"])
def test_load_countries_from_file_detects_the_iso_column(tmp_path, suffix):
    path = gf.write_countries(tmp_path / f"c{suffix}", {"AD": gf.box(0, 0, 1, 1), "FR": gf.box(2, 2, 3, 3)})
    c = refdata.load_countries(path)
    assert c.iso == ("AD", "FR") and c.cleaning["iso_column"] == "iso_a2" and len(c.sha256) == 64
    assert c.sha256 == refdata.countries_digest(c.iso, c.geometry)


def test_iso_column_can_be_named_and_missing_ones_are_E005(tmp_path):
    path = gf.write_countries(tmp_path / "c.gpkg", {"AD": gf.box(0, 0, 1, 1)}, iso_column="code")
    with pytest.raises(InputError) as exc:
        refdata.load_countries(path)
    assert exc.value.code == "E005_ISO_FK" and "'code'" in str(exc.value)
    assert refdata.load_countries(path, iso_column="code").iso == ("AD",)
    with pytest.raises(InputError) as exc:
        refdata.load_countries(path, iso_column="nope")
    assert exc.value.code == "E005_ISO_FK" and "'nope'" in str(exc.value)


def test_projected_polygons_are_E007(tmp_path):
    path = gf.write_countries(tmp_path / "c.gpkg", {"AD": gf.box(0, 0, 1, 1)}, crs="EPSG:3857")
    with pytest.raises(InputError) as exc:
        refdata.load_countries(path)
    assert exc.value.code == "E007_CRS_MISMATCH" and "3857" in str(exc.value)


def test_unreadable_file_is_E009(tmp_path):
    bad = tmp_path / "broken.gpkg"
    bad.write_bytes(b"not a geopackage")
    with pytest.raises(InputError) as exc:
        refdata.load_countries(str(bad))
    assert exc.value.code == "E009_INPUT_UNREADABLE" and "broken.gpkg" in str(exc.value)


def test_missing_package_is_E009():
    with pytest.raises(InputError) as exc:
        refdata.locate_package_file("segment1b-no-such-dist", "x.zip")
    assert exc.value.code == "E009_INPUT_UNREADABLE" and "segment1b-no-such-dist" in str(exc.value)


def test_places_from_records_filters_and_counts():
    p = refdata.places_from_records(
        [
            {"country_code": "FR", "longitude": 2.35, "latitude": 48.85, "population": 2_000_000},
            {"country_code": "FR", "longitude": 2.0, "latitude": 48.0, "population": 0},
            {"country_code": "ZZ", "longitude": 2.0, "latitude": 48.0, "population": 10},
            {"country_code": "FR", "longitude": 200.0, "latitude": 48.0, "population": 10},
        ]
    )
    assert p.frame["country_iso"].tolist() == ["FR"] and p.frame["population"].dtype == np.float64
    assert p.dropped == {
        "records": 4,
        "kept": 1,
        "no_population": 1,
        "bad_coordinates": 1,
        "unknown_country": 1,
    }


# -- embedded defaults (need the data packages) ------------------------------------------------------


@requires_ne
def test_default_countries_clean_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMENT1B_CACHE", str(tmp_path / "cache"))
    c = refdata.default_countries()
    assert 235 <= len(c) <= 245
    for code in ("FR", "NO", "XK", "GB", "CU", "RU", "FJ"):
        assert code in c.iso
    assert [d["ADM0_A3"] for d in c.cleaning["dropped_no_country"]] == ["BRT", "PGA", "SCR"]
    assert [r["country_iso"] for r in c.cleaning["repaired_make_valid"]] == ["EG"]
    assert all(shapely.is_valid(g) for g in c.geometry)
    cached = list((tmp_path / "cache").glob("countries-*.parquet"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob(".*tmp*"))
    again = refdata.default_countries()
    assert again.sha256 == c.sha256 and again.iso == c.iso
    # a corrupt cache file is rebuilt, never trusted
    cached[0].write_bytes(b"garbage")
    assert refdata.default_countries().sha256 == c.sha256


@requires_places
def test_default_places():
    p = refdata.default_places()
    assert 130_000 < len(p.frame) < 160_000 and len(p.sha256) == 64
    assert (p.frame["population"] > 0).all()
    assert os.path.basename(p.source) == refdata.PLACES_FILE
