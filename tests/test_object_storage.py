"""Object-store data roots and export targets as a new user meets them (issue 15, item 1).

moto's S3 server on 127.0.0.1 is the object store.  Missing or unusable credentials are real here: the
environment holds no AWS credentials, no credentials or config file, and the EC2 metadata lookup is off,
so botocore's own credential chain finds nothing (or no such profile) exactly as on a fresh machine.
"""

from __future__ import annotations

import io
import json

import geopandas
import pytest

import world
from moto_s3 import moto_s3
from jobs.cli import EXIT_CONTRACT_FAILURE
from jobs.cli import main as cli_main
from jobs.validate import run_s9
from segment1b.storage import Storage

BUCKET = "segment1b-access"
PAIRS = world.random_pairs(40, seed=31)
FP = world.FINGERPRINT


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """A machine without any AWS credentials: botocore's chain (env, files, metadata service) finds none."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def passed(tmp_path_factory, client):
    """A local data root with a validated (PASS) run of the synthetic world."""
    storage = Storage(str(tmp_path_factory.mktemp("access") / "root"))
    ident = world.placed(storage, client, PAIRS)
    assert run_s9(storage, client, ident.seed, FP, out=io.StringIO()).passed
    return storage, ident


def _endpoint_only(endpoint: str, **extra) -> str:
    """The README's first form: an endpoint and nothing else (credentials come from the environment)."""
    return json.dumps({**extra, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}})


@pytest.mark.parametrize("extra, reason", [({}, "no credentials"), ({"profile": "nowhere"}, "profile")],
                         ids=["no credentials anywhere", "a profile that does not exist"])
@pytest.mark.parametrize("command", [["verify-flag"], ["export", "--geoparquet", "OUT"], ["gate"]],
                         ids=lambda c: c[0])
def test_unusable_credentials_are_a_clear_error_naming_the_data_root(s3_endpoint, no_aws_credentials, tmp_path,
                                                                     capsys, command, extra, reason):
    root = f"s3://{BUCKET}/root"
    argv = [command[0], "--data-root", root, "--storage-options", _endpoint_only(s3_endpoint, **extra),
            "--fingerprint", FP] + (["--seed", "42"] if command[0] != "gate" else []) + \
        [str(tmp_path / "x.parquet") if a == "OUT" else a for a in command[1:]]
    assert cli_main(argv) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "E_STORAGE_ACCESS" in err and root in err and reason in err, err
    assert '"key"' in err and "endpoint_url" in err, err  # says what to give
    assert "Traceback" not in err and "botocore" not in err.split("E_STORAGE_ACCESS")[0]


def test_export_to_an_object_store_uses_the_storage_options(s3_endpoint, passed, no_aws_credentials, tmp_path):
    storage, ident = passed
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    target = f"s3://{BUCKET}/exports/sites.parquet"
    assert cli_main(["export", "--data-root", storage.root_url, "--storage-options", json.dumps(options),
                     "--seed", str(ident.seed), "--fingerprint", FP, "--geoparquet", target]) == 0
    local = tmp_path / "local.parquet"
    assert cli_main(["export", "--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP,
                     "--geoparquet", str(local)]) == 0
    import fsspec

    with fsspec.open(target, "rb", **options) as fh:
        assert fh.read() == local.read_bytes()
    assert len(geopandas.read_parquet(local)) == sum(n for _, _, n in PAIRS)


def test_export_refuses_a_target_folder_that_does_not_exist(passed, tmp_path, capsys):
    storage, ident = passed
    missing = tmp_path / "no-such-folder"
    assert cli_main(["export", "--data-root", storage.root_url, "--seed", str(ident.seed), "--fingerprint", FP,
                     "--geoparquet", str(missing / "sites.parquet")]) == EXIT_CONTRACT_FAILURE
    err = capsys.readouterr().err
    assert "E_PUBLISH_IO" in err and str(missing) in err and "does not exist" in err, err
    assert "Traceback" not in err
    assert not missing.exists()
