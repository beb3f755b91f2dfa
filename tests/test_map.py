"""``segment1b map`` on the synthetic world: PNGs checked pixel by pixel (size, marks inside the right
countries, nothing at sea, zooms, the antimeridian) and the ``map`` command."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image

import world
from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from jobs.report import map as report_map
from report_world import FP, validated_world
from segment1b.contracts import path_for
from segment1b.errors import InputError


@pytest.fixture(scope="module")
def run(tmp_path_factory, client):
    return validated_world(tmp_path_factory, client)


def sites(storage, ident):
    parts = storage.parquet_parts(path_for("site_locations", seed=ident.seed, manifest_fingerprint=FP))
    return pa.concat_tables([pq.read_table(storage.abspath(p)) for p in parts]).to_pandas()


def png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def marked(img):
    """Pixels drawn in a saturated colour: the red dots, or any colour of the density map (land, sea,
    borders, grid lines and text are all near-grey)."""
    return (img.max(axis=2) - img.min(axis=2)) > 80


def near(mask, col, row, r=1):
    """Whether ``mask`` is set within ``r`` pixels of each (col, row)."""
    h, w = mask.shape
    out = []
    for c, rr in zip(np.round(col).astype(int), np.round(row).astype(int)):
        out.append(bool(mask[max(rr - r, 0):min(rr + r + 1, h), max(c - r, 0):min(c + r + 1, w)].any()))
    return np.array(out)


def inside_box(res, col, row, margin=2):
    left, top, right, bottom = res.axes_box
    return (col > left + margin) & (col < right - margin) & (row > top + margin) & (row < bottom - margin)


# ---------------------------------------------------------------------------------------------------------
# maps


@pytest.mark.parametrize("mode", ["points", "density"])
def test_world_map_draws_every_site_on_its_country_and_nothing_at_sea(run, mode):
    storage, ident = run
    res = report_map.render_map(storage, ident, size=(900, 450), mode=mode)
    assert res.path == storage.url(path_for("run_folder", **ident.tokens) + "map.png")
    img = png(storage.abspath(path_for("run_folder", **ident.tokens) + "map.png"))
    assert img.shape == (450, 900, 3) and len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    assert res.mode == mode and res.sites == res.sites_in_view == len(sites(storage, ident))
    mask = marked(img)
    s = sites(storage, ident)
    col, row = res.pixel_of(s.lon_deg.to_numpy(), s.lat_deg.to_numpy())
    assert near(mask, col, row).all()
    # every marked pixel of the map area lies on a country of the world, or within a dot's radius of one
    rows, cols = np.nonzero(mask)
    keep = inside_box(res, cols, rows)
    left, top, right, bottom = res.axes_box
    lon = res.view.west + (cols[keep] + 0.5 - left) / (right - left) * (res.view.east - res.view.west)
    lat = res.view.north - (rows[keep] + 0.5 - top) / (bottom - top) * (res.view.north - res.view.south)
    px = (res.view.east - res.view.west) / (right - left)
    land = shapely.union_all(list(world.countries().values())).buffer(5 * px)
    assert keep.sum() > 0 and shapely.contains_xy(land, lon, lat).all()
    # open ocean (mid-Atlantic, Pacific) carries no mark
    for lon0, lat0 in ((-30.0, 0.0), (-140.0, -30.0), (100.0, -40.0)):
        c, r = res.pixel_of([lon0], [lat0])
        assert not near(mask, c, r, r=5).any()


def test_zoom_on_fr_shows_fr_and_not_its_neighbour(run, tmp_path):
    storage, ident = run
    out = tmp_path / "fr.png"
    res = report_map.render_map(storage, ident, country="fr", out=str(out), size=(800, 600))
    assert res.path == str(out) and res.country == "FR" and res.mode == "points"
    img = png(out)
    assert img.shape == (600, 800, 3)
    v = res.view
    assert not v.shifted and v.west <= -2.0 and v.east >= 7.0 and v.south <= 43.0 and v.north >= 51.3
    s = sites(storage, ident)
    fr, de = s[s.legal_country_iso == "FR"], s[s.legal_country_iso == "DE"]
    assert res.sites == res.sites_in_view == len(fr) > 0
    mask = marked(img)
    fc, fr_row = res.pixel_of(fr.lon_deg.to_numpy(), fr.lat_deg.to_numpy())
    assert near(mask, fc, fr_row).all()
    # DE sites in view, away from every FR site, are not drawn
    dc, dr = res.pixel_of(de.lon_deg.to_numpy(), de.lat_deg.to_numpy())
    gap = np.hypot(dc[:, None] - fc[None, :], dr[:, None] - fr_row[None, :]).min(axis=1)
    lonely = inside_box(res, dc, dr) & (gap > 6)
    assert lonely.sum() >= 5
    assert not near(mask, dc[lonely], dr[lonely]).any()


def test_zoom_on_fj_joins_both_sides_of_the_antimeridian(run):
    storage, ident = run
    res = report_map.render_map(storage, ident, country="FJ", size=(600, 400))
    assert res.path.endswith("/map-FJ.png")
    v = res.view
    assert v.shifted and v.west < 177.2 and v.east > 181.4
    s = sites(storage, ident)
    fj = s[s.legal_country_iso == "FJ"]
    assert (fj.lon_deg < 0).any() and (fj.lon_deg > 0).any()  # sites on both sides
    assert res.sites == res.sites_in_view == len(fj)
    col, row = res.pixel_of(fj.lon_deg.to_numpy(), fj.lat_deg.to_numpy())
    assert inside_box(res, col, row, margin=0).all()
    img = png(storage.abspath(path_for("run_folder", **ident.tokens) + "map-FJ.png"))
    assert near(marked(img), col, row).all()


def test_auto_mode_switches_to_density_above_the_threshold(run, tmp_path):
    storage, ident = run
    n = len(sites(storage, ident))
    assert report_map.render_map(storage, ident, out=str(tmp_path / "a.png"), size=(400, 200)).mode == "points"
    res = report_map.render_map(storage, ident, out=str(tmp_path / "b.png"), size=(400, 200),
                              density_threshold=n - 1)
    assert res.mode == "density"


def test_bad_map_arguments(run):
    storage, ident = run
    with pytest.raises(InputError) as e:
        report_map.render_map(storage, ident, country="XX")
    assert e.value.code == "E302_FK_COUNTRY"
    with pytest.raises(InputError) as e:
        report_map.render_map(storage, ident, country="US")  # a real code, but not a country of this world
    assert e.value.code == "E302_FK_COUNTRY" and "DE FJ FR MC" in e.value.hint
    with pytest.raises(ValueError, match="mode must be one of"):
        report_map.render_map(storage, ident, mode="hexbin")
    with pytest.raises(ValueError, match="width must be"):
        report_map.render_map(storage, ident, size=(10, 400))


# ---------------------------------------------------------------------------------------------------------
# command line


def test_cli_map(run, tmp_path, capsys):
    storage, ident = run
    root = storage.root_url
    base = ["--data-root", root, "--seed", str(ident.seed), "--fingerprint", FP]
    assert cli_main(["map", *base, "--country", "DE", "--width", "640", "--height", "480",
                     "--out", str(tmp_path / "de.png")]) == 0
    assert Image.open(tmp_path / "de.png").size == (640, 480)
    assert f"wrote {tmp_path / 'de.png'} (640x480 px" in capsys.readouterr().out
    assert cli_main(["map", *base, "--parameter-hash", ident.parameter_hash, "--mode", "density"]) == 0
    assert "/map.png (1600x800 px" in capsys.readouterr().out
    assert cli_main(["map", *base, "--country", "US"]) == EXIT_CONTRACT_FAILURE
    assert "E302_FK_COUNTRY" in capsys.readouterr().err
    for bad in (["--mode", "hexbin"], ["--country", "FRA"], ["--width", "5"], ["--parameter-hash", "xyz"]):
        with pytest.raises(SystemExit) as e:
            cli_main(["map", *base, *bad])
        assert e.value.code == 2
    assert cli_main(["map", "--data-root", root, "--seed", "7", "--fingerprint", FP]) == EXIT_CONTRACT_FAILURE
    assert "E310_PARAMETER_HASH_MISMATCH" in capsys.readouterr().err
