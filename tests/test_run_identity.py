"""One data root, two parameter_hashes: what a user meets after preparing a second grid (issue 15, items 2-3).

The root holds a PASS run of a small world on the 30' grid (dp 8), then the same world prepared again with
dp 6: another parameter_hash whose generated catalogue has the same countries, hence the same fingerprint,
as the README flow gives when the same catalogue is run on another grid.
"""

from __future__ import annotations

import io
import json
import shutil

import pytest

from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from jobs.pipeline import RunRequest, run_pipeline
from jobs.report.run_files import resolve_identity
from segment1b.contracts import path_for, report_path
from segment1b.errors import Segment1BError
from segment1b.storage import Storage

pytestmark = pytest.mark.cluster

SMALL_WORLD = ("FR", "JP", "NZ")
SEED = 42


@pytest.fixture(scope="module")
def two_grids(tmp_path_factory, client):
    """The first run's identity, the second run's failure and its parameter_hash, and a copy of the root
    as the second run left it."""
    import geopandas

    import jobs.report.run_report
    from jobs.prepare import prepare
    from segment1b import refdata

    folder = tmp_path_factory.mktemp("two-grids")
    countries = refdata.default_countries()
    world = str(folder / "countries.parquet")
    geopandas.GeoDataFrame({"iso_a2": list(SMALL_WORLD)}, geometry=[countries.get(c) for c in SMALL_WORLD],
                           crs="EPSG:4326").to_parquet(world)
    root = str(folder / "root")
    first = RunRequest(seed=SEED, scale="tiny", grid="30m", countries=world, part_sites=512)
    original = jobs.report.run_report.report_after_run  # the HTML report and map are not what is tested here
    jobs.report.run_report.report_after_run = lambda storage, ident, out=None: None
    try:
        passed = run_pipeline(Storage(root), client, first, out=io.StringIO())
        assert passed.passed
        second = RunRequest(**{**first.__dict__, "dp": 6})
        ph2 = prepare(Storage(root), client, grid="30m", countries=world, dp=6, out=io.StringIO(),
                      show_progress=False)["parameter_hash"]
        out = io.StringIO()
        with pytest.raises(Segment1BError) as failure:
            run_pipeline(Storage(root), client, second, out=out)
    finally:
        jobs.report.run_report.report_after_run = original
    return {"root": root, "first": passed.identity, "ph2": ph2, "failure": failure.value, "out": out.getvalue(),
            "world": world}


def test_the_same_catalogue_on_another_grid_is_refused_before_s4(two_grids):
    first, ph2, failure = two_grids["first"], two_grids["ph2"], two_grids["failure"]
    fp = first["manifest_fingerprint"]
    assert ph2 != first["parameter_hash"]
    assert failure.code == "E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL" and failure.dataset == "site_locations"
    text = str(failure)
    assert first["parameter_hash"] in text and ph2 in text and "grid 30m" in text and "dp 8" in text, text
    assert "--data-root" in text and "--seed" in text, text  # what to do
    # before S4: the second run placed nothing and left no run folder behind
    storage = Storage(two_grids["root"])
    tokens = {"seed": SEED, "manifest_fingerprint": fp, "parameter_hash": ph2}
    for ds in ("s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis", "run_folder"):
        assert not storage.exists(path_for(ds, **tokens)), ds
    assert "[s4-" not in two_grids["out"]


def test_a_failed_run_on_another_grid_does_not_make_map_and_report_ambiguous(two_grids, tmp_path):
    """The run folder a failed run leaves (as before issue 15: receipt written, then S8 refused) is not
    a second candidate: map and report read the run whose site_locations are published."""
    first, ph2 = two_grids["first"], two_grids["ph2"]
    root = str(tmp_path / "root")
    shutil.copytree(two_grids["root"], root)
    storage = Storage(root)
    fp = first["manifest_fingerprint"]
    storage.write_json(path_for("run_receipt", seed=SEED, manifest_fingerprint=fp, parameter_hash=ph2),
                       {"run_id": "f" * 32, "seed": SEED, "manifest_fingerprint": fp, "parameter_hash": ph2})
    assert resolve_identity(storage, SEED, fp).parameter_hash == first["parameter_hash"]
    identity = ["--data-root", root, "--seed", str(SEED), "--fingerprint", fp]
    assert cli_main(["map", *identity, "--out", str(tmp_path / "map.png")]) == 0
    assert cli_main(["report", *identity, "--no-map", "--out", str(tmp_path / "report.html")]) == 0
    # the other run is still there to be asked for by name
    assert resolve_identity(storage, SEED, fp, ph2).parameter_hash == ph2


def test_two_runs_without_a_published_one_are_ambiguous_naming_the_choices(two_grids, tmp_path, capsys):
    first, ph2 = two_grids["first"], two_grids["ph2"]
    root = str(tmp_path / "root")
    shutil.copytree(two_grids["root"], root)
    storage = Storage(root)
    fp = first["manifest_fingerprint"]
    storage.remove(report_path("s8", **{k: first[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")}))
    storage.write_json(path_for("run_receipt", seed=SEED, manifest_fingerprint=fp, parameter_hash=ph2),
                       {"run_id": "f" * 32})
    assert cli_main(["report", "--data-root", root, "--seed", str(SEED), "--fingerprint", fp, "--no-map",
                     "--out", str(tmp_path / "r.html")]) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "E312_PARAMETER_HASH_AMBIGUOUS" in err and first["parameter_hash"] in err and ph2 in err, err
    assert "--parameter-hash" in err and "Traceback" not in err


def test_generate_on_a_root_with_two_grids_lists_the_choices(two_grids, tmp_path, capsys):
    first, ph2 = two_grids["first"], two_grids["ph2"]
    root = two_grids["root"]
    argv = ["generate", "--data-root", root, "--scale", "tiny", "--seed", "7", "--in-process"]
    assert cli_main(argv) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "E312_PARAMETER_HASH_AMBIGUOUS" in err and "E310" not in err, err
    for h, dp in ((first["parameter_hash"], 8), (ph2, 6)):
        assert f"--parameter-hash {h}" in err and f"dp {dp}" in err, err
    assert "Traceback" not in err
    assert cli_main([*argv, "--parameter-hash", ph2]) == 0
    assert json.loads(Storage(root).read_bytes(path_for("parameters", parameter_hash=ph2)))["dp"] == 6
