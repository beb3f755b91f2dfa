import pickle

import pytest

from segment1b.contracts import DATASETS, STATE_DATASETS, check_token, iso_table, path_for, report_path
from segment1b.errors import FAILURE_CODES, InputError, Segment1BError
from segment1b.identity import RunIdentity, SegmentParameters

FP = "ab" * 32
PH = "3c" * 32


def test_every_dataset_renders_with_its_tokens():
    tokens = {"seed": 42, "manifest_fingerprint": FP, "parameter_hash": PH, "run_id": "0" * 32,
              "substream_label": "in_cell_jitter", "countries_sha256": "c" * 64, "attempt": "d" * 16}
    for spec in DATASETS.values():
        path = spec.path(**{t: tokens[t] for t in spec.tokens})
        assert "{" not in path and not path.startswith("/")
        if spec.kind == "parquet":
            assert spec.schema is not None and set(spec.writer_sort) <= set(spec.schema.names)


def test_contract_paths():
    assert path_for("site_locations", seed=42, manifest_fingerprint=FP) == \
        f"data/layer1/1B/site_locations/seed=42/fingerprint={FP}/"
    assert path_for("tile_index", parameter_hash=PH) == f"data/layer1/1B/tile_index/parameter_hash={PH}/"
    assert report_path("s1", parameter_hash=PH) == f"control/tile_index/parameter_hash={PH}/s1_run_report.json"
    assert report_path("s6", seed=1, manifest_fingerprint=FP, parameter_hash=PH) == \
        f"control/s6_site_jitter/seed=1/fingerprint={FP}/parameter_hash={PH}/s6_run_report.json"
    assert set(STATE_DATASETS) == {f"s{i}" for i in range(10)}


@pytest.mark.parametrize("name,value", [("seed", -1), ("seed", 2**64), ("seed", "01"), ("parameter_hash", "AB" * 32),
                                        ("manifest_fingerprint", "ab"), ("run_id", "g" * 32)])
def test_bad_tokens_are_refused(name, value):
    with pytest.raises(InputError) as e:
        check_token(name, value)
    assert e.value.code == "E309_VALUE_RANGE" and name in str(e.value)


def test_missing_token_names_what_is_needed():
    with pytest.raises(TypeError, match="manifest_fingerprint"):
        path_for("site_locations", seed=1)


def test_iso_table():
    table = iso_table()
    assert len(table) == 250 and {"FR", "NO", "XK", "US", "FJ"} <= set(table) and "EU" not in table


def test_error_carries_code_rows_and_survives_pickling():
    err = InputError("E314_SITE_ORDER_INTEGRITY", "gap", dataset="outlet_catalogue", path="p",
                     rows=[{"merchant_id": i, "site_order": [1, 3]} for i in range(15)], hint="fix upstream")
    text = str(err)
    assert text.startswith("E314_SITE_ORDER_INTEGRITY: gap") and "10 of 15" in text and "hint: fix" in text
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, InputError) and back.code == err.code and back.rows == err.rows
    assert back.to_dict()["rows_total"] == 15
    with pytest.raises(ValueError, match="bug"):
        Segment1BError("E999_NOPE", "x")
    assert all(code.startswith("E") for code in FAILURE_CODES)


def test_parameter_hash_is_canonical_and_validated():
    grid = {"name": "5m", "west": (-180.0).hex(), "north": (84.0).hex(), "dx": (1 / 12).hex(), "dy": (1 / 12).hex(),
            "ncols": 4320, "nrows": 1680}
    a = SegmentParameters(grid=grid, countries_sha256="c" * 64)
    b = SegmentParameters(grid=dict(reversed(list(grid.items()))), countries_sha256="c" * 64)
    assert a.parameter_hash == b.parameter_hash and len(a.parameter_hash) == 64
    assert SegmentParameters(grid=grid, countries_sha256="c" * 64, dp=7).parameter_hash != a.parameter_hash
    assert SegmentParameters.from_canonical(a.canonical()) == a
    for bad, code in [({"dp": 19}, "E104_DP_RANGE"), ({"inclusion_rule": "any_overlap"}, "E008_INCLUSION_RULE"),
                      ({"basis": "nightlights"}, "E105_NORMALIZATION")]:
        with pytest.raises(InputError) as e:
            SegmentParameters(grid=grid, countries_sha256="c" * 64, **bad)
        assert e.value.code == code


def test_run_identity_validates_tokens():
    ident = RunIdentity(seed=2**64 - 1, manifest_fingerprint=FP, parameter_hash=PH, run_id="f" * 32)
    assert ident.log_tokens["run_id"] == "f" * 32
    with pytest.raises(InputError):
        RunIdentity(seed=1, manifest_fingerprint="x", parameter_hash=PH)
