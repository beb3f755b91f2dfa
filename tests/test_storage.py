import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from cluster_fixtures import die_with_parent
from segment1b.contracts import dataset
from segment1b.errors import InputError, PublishError
from segment1b.storage import StagedFile, Storage, check_schema, part_name, write_parquet_bytes

SPEC = dataset("s3_requirements")


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"merchant_id": pa.array(range(start, start + n), pa.uint64()),
                     "legal_country_iso": pa.array(["FR"] * n, pa.string()),
                     "n_sites": pa.array([1] * n, pa.int64())})


def stage(storage: Storage, target: str, parts: list[pa.Table], token: str = "t") -> tuple[str, list[StagedFile]]:
    """Write ``parts`` into a staging folder; the folder and what the writer recorded of each file."""
    staging = storage.staging_path(target, token)
    files = [storage.write_part(staging, part_name(i), write_parquet_bytes(t, SPEC)) for i, t in enumerate(parts)]
    return staging, files


def test_parquet_bytes_are_deterministic_and_strict():
    assert write_parquet_bytes(table(100), SPEC) == write_parquet_bytes(table(100), SPEC)
    bad = table(3).set_column(2, "n_sites", pa.array([1, 2, 3], pa.int32()))
    with pytest.raises(InputError) as e:
        write_parquet_bytes(bad, SPEC)
    assert e.value.code == "E304_SCHEMA_MISMATCH" and "n_sites" in str(e.value)
    with pytest.raises(InputError) as e:
        check_schema(table(2).append_column("extra", pa.array([1, 2])), SPEC)
    assert "extra ['extra']" in str(e.value)
    with pytest.raises(InputError) as e:
        check_schema(table(2).select(["legal_country_iso", "merchant_id", "n_sites"]), SPEC)
    assert "column order" in str(e.value)
    with pytest.raises(InputError) as e:
        check_schema(table(2).set_column(0, "merchant_id", pa.array([1, None], pa.uint64())), SPEC)
    assert "nulls" in str(e.value)


def test_publish_digest_is_sha256_of_files_in_ascii_order(storage):
    target = "data/x/parameter_hash=" + "a" * 64 + "/"
    staging, files = stage(storage, target, [table(10), table(10, 10), table(5, 20)])
    digest = storage.publish(staging, target, "s3_requirements", expected=files)
    h = hashlib.sha256()
    for name in sorted(os.listdir(storage.abspath(target))):
        h.update(open(os.path.join(storage.abspath(target), name), "rb").read())
    assert digest == h.hexdigest()
    assert not storage.exists(staging)
    assert storage.parquet_parts(target) == [target + part_name(i) for i in range(3)]


def test_identical_republish_is_a_noop_and_different_one_is_refused(storage):
    target = "data/x/seed=1/"
    staging, files = stage(storage, target, [table(10)], "a")
    d1 = storage.publish(staging, target, "s3_requirements", expected=files)
    mtime = os.path.getmtime(storage.abspath(target + part_name(0)))
    staging, files = stage(storage, target, [table(10)], "b")
    d2 = storage.publish(staging, target, "s3_requirements", expected=files)
    assert d1 == d2 and os.path.getmtime(storage.abspath(target + part_name(0))) == mtime
    staging, files = stage(storage, target, [table(11)], "c")
    with pytest.raises(PublishError) as e:
        storage.publish(staging, target, "s3_requirements", expected=files)
    assert e.value.code == "E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL" and "seed=1" in str(e.value)
    assert storage.partition_digest(target) == d1  # the published partition is untouched


@pytest.fixture(params=["local", "memory"])
def any_storage(request, data_root):
    """A local root (atomic folder rename) and an object-store-like one (copy + marker)."""
    if request.param == "local":
        return Storage(data_root)
    return Storage("memory://segment1b-test-" + os.urandom(4).hex())


def test_publish_refuses_a_staging_folder_with_missing_extra_hidden_or_changed_files(any_storage):
    """Publish renames only exactly the files the writers recorded (names, sizes, SHA-256), else
    E_STAGING_INCOMPLETE naming each file, and nothing is published (issue 14)."""
    storage = any_storage
    target = "data/v/seed=5/"
    staging, files = stage(storage, target, [table(5), table(5, 5), table(5, 10)])
    tmp = staging + ".part-00001.parquet.tmp-0123abcd"
    cases = {
        "missing": (files + [StagedFile("part-00003.parquet", 100, "0" * 64)], None),
        "extra": (files[:2], None),
        "hidden temporary": (files, lambda: storage.write_bytes(tmp, b"half a part")),
        "size": ([files[0], StagedFile(files[1].name, files[1].size + 1, files[1].sha256_hex), files[2]], None),
        "sha256": ([files[0], StagedFile(files[1].name, files[1].size, "f" * 64), files[2]], None),
    }
    for problem, (expected, setup) in cases.items():
        if setup is not None:
            setup()
        with pytest.raises(PublishError) as e:
            storage.publish(staging, target, "s3_requirements", expected=expected)
        err = e.value
        assert err.code == "E_STAGING_INCOMPLETE" and "nothing was published" in str(err), problem
        assert problem in str(err) and err.rows, (problem, str(err))
        assert not storage.is_published(target) and not storage.exists(target), problem
        if setup is not None:
            storage.remove(tmp)
    digest = storage.publish(staging, target, "s3_requirements", expected=files)  # exactly right: published
    assert storage.partition_digest(target) == digest and not storage.exists(staging)


def test_publish_bytes_stages_each_call_apart(storage):
    """Small partitions (bundles, reports) get a staging folder of their own per call: a concurrent or
    killed publisher's folder is never reused, and a failed call leaves nothing behind."""
    target = "data/b/fingerprint=" + "e" * 64 + "/"
    leftover = storage.staging_path(target, "same-token")
    storage.write_bytes(leftover + "stray.json", b"from a killed publisher")
    digest = storage.publish_bytes({"a.json": b"{}", "b.json": b"[]"}, target, "validation_bundle_1B", "same-token")
    assert storage.list_files(target) == ["a.json", "b.json"] and storage.partition_digest(target) == digest
    assert storage.staging_siblings(target) == [leftover]  # not this call's: left alone
    with pytest.raises(PublishError):
        storage.publish_bytes({"a.json": b"{ }"}, target, "validation_bundle_1B", "same-token")
    assert storage.staging_siblings(target) == [leftover]


def test_staging_folders_are_hidden_from_listings(storage):
    target = "data/x/seed=2/"
    stage(storage, target, [table(3)])
    assert storage.list_files("data/x") == []
    assert not storage.is_published(target)


def test_unreadable_part_is_e305(storage):
    storage.write_bytes("data/y/part-00000.parquet", b"PAR1 not really")
    with pytest.raises(InputError) as e:
        storage.read_parquet("data/y/part-00000.parquet", dataset_id="outlet_catalogue")
    assert e.value.code == "E305_PARQUET_UNREADABLE" and "part-00000" in str(e.value)


def test_storage_pickles_as_a_recipe(storage):
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.root_url == storage.root_url and clone.abspath("a/b") == storage.abspath("a/b")


def test_publish_on_a_memory_filesystem_uses_a_marker():
    storage = Storage("memory://segment1b-test-" + os.urandom(4).hex())
    target = "data/m/seed=3/"
    staging, files = stage(storage, target, [table(4), table(4, 4)])
    assert not storage.is_published(target)
    digest = storage.publish(staging, target, "s3_requirements", expected=files)
    assert storage.is_published(target) and storage.partition_digest(target) == digest
    staging, files = stage(storage, target, [table(4), table(4, 4)], "z")
    assert storage.publish(staging, target, "s3_requirements", expected=files) == digest


WRITER = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from segment1b.contracts import dataset
    from segment1b.storage import Storage, part_name, write_parquet_bytes
    storage, target = Storage(sys.argv[1]), sys.argv[2]
    staging = storage.staging_path(target, sys.argv[3])
    storage.remove(staging)
    files = []
    for i in range(40):
        t = pa.table({"merchant_id": pa.array(range(i * 5000, (i + 1) * 5000), pa.uint64()),
                      "legal_country_iso": pa.array(["DE"] * 5000), "n_sites": pa.array([2] * 5000, pa.int64())})
        files.append(storage.write_part(staging, part_name(i), write_parquet_bytes(t, dataset("s3_requirements"))))
        print(i, flush=True)
    storage.publish(staging, target, "s3_requirements", expected=files)
    print("published", flush=True)
""")


def test_a_reader_never_sees_a_half_written_partition(tmp_path):
    """Kill the writer at many points; the target is absent or complete, never partial."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "root"
    target = "data/k/seed=9/"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    # a complete reference publish elsewhere gives the expected digest
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref"), target, "ref"], check=True, env=env,
                   capture_output=True)
    expected = Storage(str(tmp_path / "ref")).partition_digest(target)
    outcomes = set()
    for kill_after in (3, 17, 39, None):
        proc = subprocess.Popen([sys.executable, str(script), str(root), target, "run"], stdout=subprocess.PIPE,
                                env=env, text=True, preexec_fn=die_with_parent)
        for line in proc.stdout:
            if kill_after is not None and line.strip() == str(kill_after):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
        storage = Storage(str(root))
        if storage.is_published(target):
            assert storage.partition_digest(target) == expected
            outcomes.add("complete")
        else:
            assert not os.path.exists(storage.abspath(target))
            outcomes.add("absent")
    assert outcomes == {"absent", "complete"}
