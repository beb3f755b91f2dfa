"""The file forms of RNG event parts (issue 17): zstd frames per chunk, deterministic, streamable."""

import io
import shutil
import subprocess

import pytest

from segment1b.rng_log_files import (HashingReader, check_log_form, encode_chunks, form_of_name, open_lines,
                                     read_lines, suffix_of)

CHUNKS = [b"".join(b'{"n":%d,"ts_utc":"2025-01-31T12:00:00.000000Z"}\n' % i for i in range(a, a + 500))
          for a in range(0, 2000, 500)]
LINES = b"".join(CHUNKS)


def test_zstd_is_one_frame_per_chunk_and_deterministic():
    frames = list(encode_chunks(iter(CHUNKS), "zstd"))
    assert len(frames) == len(CHUNKS) and all(f[:4] == b"\x28\xb5\x2f\xfd" for f in frames)  # zstd magic
    assert list(encode_chunks(iter(CHUNKS), "zstd")) == frames  # no timestamp, no name: same bytes again
    data = b"".join(frames)
    assert len(data) * 10 < len(LINES) and read_lines(data, "zstd") == LINES
    assert b"".join(encode_chunks(iter(CHUNKS), "plain")) == LINES


def test_open_lines_streams_and_hashes_the_file_bytes():
    data = b"".join(encode_chunks(CHUNKS, "zstd"))
    raw = HashingReader(io.BytesIO(data))
    stream = open_lines(raw, "zstd")
    got = b""
    while chunk := stream.read(1000):
        got += chunk
    assert got == LINES and raw.bytes == len(data)
    import hashlib
    assert raw.digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("cut", [1, 10, 300])
def test_truncated_zstd_is_an_error_not_a_short_read(cut):
    data = b"".join(encode_chunks(CHUNKS, "zstd"))
    with pytest.raises(OSError, match="(?i)truncated"):
        open_lines(io.BytesIO(data[:-cut]), "zstd").read()


@pytest.mark.skipif(shutil.which("zstdcat") is None, reason="the zstd command line tool is not installed")
def test_zstdcat_reads_a_part(tmp_path):
    path = tmp_path / "part-00000.jsonl.zst"
    path.write_bytes(b"".join(encode_chunks(CHUNKS, "zstd")))
    assert subprocess.run(["zstdcat", str(path)], capture_output=True, check=True).stdout == LINES


def test_forms_names_and_choices():
    assert suffix_of("zstd") == ".jsonl.zst" and suffix_of("plain") == ".jsonl"
    assert form_of_name("part-00001.jsonl.zst") == "zstd" and form_of_name("part-00001.jsonl") == "plain"
    assert form_of_name("part-00001.parquet") is None
    with pytest.raises(ValueError, match="zstd.*plain"):
        check_log_form("gzip")
