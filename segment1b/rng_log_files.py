"""The file form of RNG event parts: zstd-compressed JSON lines (default) or plain (contract §1, §9).

A run writes one form for all its event parts: ``part-NNNNN.jsonl.zst`` (``zstd``: concatenated zstd frames
whose decompressed bytes are exactly the JSON lines, readable with ``zstdcat``) or ``part-NNNNN.jsonl``
(``plain``).  The JSON lines themselves (:mod:`segment1b.rng_events`) are the same in both forms.

Writing: :func:`encode_chunks` turns a stream of whole-line chunks into the bytes of the file, one zstd frame
per chunk at a fixed level with Arrow's codec (a frame carries no timestamp or file name, so the same lines
give the same bytes on every worker and rerun).  Reading: :func:`open_lines` gives a stream of the lines of a
part of either form; :class:`HashingReader` hashes the file's own bytes on the way, so a part is read once.

The module is pure (no Dask); the only reading is from a stream the caller opened.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO, Iterable, Iterator

import pyarrow as pa

__all__ = ["LOG_FORMS", "DEFAULT_LOG_FORM", "SUFFIXES", "ZSTD_LEVEL", "check_log_form", "suffix_of",
           "form_of_name", "encode_chunks", "open_lines", "HashingReader", "read_lines"]

#: form -> file suffix of its event parts
SUFFIXES = {"zstd": ".jsonl.zst", "plain": ".jsonl"}
#: the choices of ``--rng-logs``, the default first
LOG_FORMS = tuple(SUFFIXES)
DEFAULT_LOG_FORM = "zstd"
# Level 1: on event lines it compresses as well as levels 3-9 (about 55-70 bytes per event against 650-770
# plain: most of an event is envelope repeated on every line) at 2-10x their speed (issue 17).
ZSTD_LEVEL = 1
# Arrow's decompressing stream reads its input in small blocks: read the file in large ones.
_READ_BUFFER = 4 * 2**20


def check_log_form(form: str) -> str:
    """``form`` if it is one of :data:`LOG_FORMS`, else ``ValueError`` listing them.

    Examples
    --------
    >>> check_log_form("plain")
    'plain'
    """
    if form not in SUFFIXES:
        raise ValueError(f"unknown RNG log form {form!r}; expected one of {list(LOG_FORMS)}")
    return form


def suffix_of(form: str) -> str:
    """File suffix of event parts of ``form``: ``.jsonl.zst`` or ``.jsonl``."""
    return SUFFIXES[check_log_form(form)]


def form_of_name(name: str) -> str | None:
    """The form of an event part file name (``None``: not an event part name of either form).

    Examples
    --------
    >>> form_of_name("part-00003.jsonl.zst"), form_of_name("part-00003.jsonl"), form_of_name("x.parquet")
    ('zstd', 'plain', None)
    """
    for form, suffix in SUFFIXES.items():  # ".jsonl.zst" is tested before ".jsonl"
        if name.endswith(suffix):
            return form
    return None


def encode_chunks(chunks: Iterable[bytes], form: str) -> Iterator[bytes]:
    """The bytes of an event part of ``form`` from chunks of whole JSON lines, chunk by chunk.

    ``zstd``: each non-empty chunk becomes one zstd frame (level :data:`ZSTD_LEVEL`, one thread), so the
    file streams out as it is produced and never sits whole in memory.

    Examples
    --------
    >>> data = b"".join(encode_chunks([b'{"a":1}\\n', b'{"a":2}\\n'], "zstd"))
    >>> read_lines(data, "zstd")
    b'{"a":1}\\n{"a":2}\\n'
    """
    check_log_form(form)
    if form == "plain":
        yield from chunks
        return
    codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
    for chunk in chunks:
        if len(chunk):
            yield codec.compress(chunk, asbytes=True)


class HashingReader(io.RawIOBase):
    """A read-only stream over ``raw`` that updates ``digest`` with every byte read and counts them."""

    def __init__(self, raw: BinaryIO, digest: Any = None):
        self.raw = raw
        self.digest = digest if digest is not None else hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        if n:
            view = memoryview(b)[:n]
            self.digest.update(view)
            self.bytes += n
        return n or 0


def open_lines(raw: BinaryIO, form: str):
    """A binary stream (with ``read``/``readinto``) of the JSON lines of an event part of ``form``.

    A ``zstd`` part is decompressed on the fly (concatenated frames, in order); reading a truncated or
    corrupt one raises ``OSError`` (Arrow: "Truncated compressed stream", "Corrupted block ...").
    """
    if check_log_form(form) == "plain":
        return raw
    source = pa.BufferedInputStream(pa.PythonFile(raw, mode="r"), buffer_size=_READ_BUFFER)
    return pa.CompressedInputStream(source, "zstd")


def read_lines(data: bytes, form: str) -> bytes:
    """The JSON lines of a whole event part held in memory (tests, small readers)."""
    if check_log_form(form) == "plain":
        return bytes(data)
    return open_lines(io.BytesIO(data), form).read()
