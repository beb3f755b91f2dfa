"""The disk-space estimate and check before S4 (issue 17), with a mocked free-space probe."""

import pytest

import jobs.disk
from jobs.disk import DISK_SAFETY, check_disk_space, disk_need
from segment1b.errors import PublishError
from segment1b.identity import RunIdentity
from segment1b.storage import Storage

IDENT = RunIdentity(seed=42, manifest_fingerprint="ab" * 32, parameter_hash="3c" * 32, run_id="0" * 32)


def test_the_estimate_follows_sites_and_log_form(tmp_path):
    storage = Storage(str(tmp_path))
    zstd = disk_need(storage, IDENT, 1_000_000, "zstd")
    plain = disk_need(storage, IDENT, 1_000_000, "plain")
    assert {k: v for k, v in zstd.items() if "rng" not in k} == {k: v for k, v in plain.items() if "rng" not in k}
    logs = lambda need: sum(v for k, v in need.items() if k.startswith("rng_events/"))  # noqa: E731
    assert 100e6 < logs(zstd) < 150e6 and 1.2e9 < logs(plain) < 1.8e9  # per site: 43+65 / 648+767 measured
    assert disk_need(storage, IDENT, 2_000_000, "zstd") == {k: 2 * v for k, v in zstd.items()}
    assert set(disk_need(storage, IDENT, 10, "zstd", datasets=(), labels=("site_tile_assign",))) == {
        "rng_events/site_tile_assign"}
    with pytest.raises(ValueError, match="zstd"):
        disk_need(storage, IDENT, 10, "gzip")


def test_too_little_room_is_e_disk_space_naming_the_root_and_the_outputs(tmp_path, monkeypatch):
    storage = Storage(str(tmp_path))
    need = disk_need(storage, IDENT, 1_000_000, "plain")
    total = sum(need.values()) * DISK_SAFETY
    monkeypatch.setattr(jobs.disk, "free_bytes", lambda path: int(total) - 1)
    with pytest.raises(PublishError) as e:
        check_disk_space(storage, need)
    assert e.value.code == "E_DISK_SPACE" and storage.root_url in str(e.value)
    assert e.value.rows[0]["output"] == "rng_events/in_cell_jitter"  # the largest first
    monkeypatch.setattr(jobs.disk, "free_bytes", lambda path: int(total) + 1)
    assert check_disk_space(storage, need) == int(total) + 1


def test_object_stores_are_not_checked(monkeypatch):
    monkeypatch.setattr(jobs.disk, "free_bytes", lambda path: pytest.fail("probed an object store"))
    storage = Storage("memory://disk-check")
    assert check_disk_space(storage, {"site_locations": 10**15}) == -1


def test_the_probe_reads_the_nearest_existing_folder(tmp_path):
    assert jobs.disk.free_bytes(str(tmp_path / "not" / "yet")) > 0
