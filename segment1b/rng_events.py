"""The RNG log format of S5/S6: JSON-lines events, the audit record and the trace (contract §9).

Writers (:func:`s5_events_jsonl`, :func:`s6_events_jsonl`) turn NumPy columns into event lines with Arrow
compute, never looping over events in Python; :func:`audit_record`, :func:`trace_record` and
:func:`jsonl_lines` write the small audit and trace logs.  One reader parses events for everyone (S9's
accounting and the tests): :func:`event_tables` turns chunks of whole lines into Arrow tables of
:data:`EVENT_SCHEMAS` with ``pyarrow.json`` (u64 fields keep their full range), chunk by chunk, so a large
part never has to sit in memory as text; :func:`read_events` is the same for one buffer, as one table, and
:func:`line_chunks` cuts any binary stream (a file, or later a decompressing reader) into whole-line chunks.

The module is pure: no Dask and no clock (the envelope's ``ts_utc`` is handed in); the only reading is
from a stream the caller opened.  The generator itself (Philox, substreams, uniforms) is :mod:`segment1b.rng`.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from .rng import ALGORITHM, S5_LABEL, S5_MODULE, S6_LABEL, S6_MODULE
# the input checks of the generator's own arguments, shared so the log and the draws agree on what is valid
from .rng import _as_u64, _check_hex64, _check_seed, _iso_codes

__all__ = [
    "ENVELOPE_KEYS", "EVENT_SCHEMAS", "MODULE_OF_LABEL", "DRAWS_OF_LABEL", "TS_UTC_PATTERN",
    "s5_events_jsonl", "s6_events_jsonl", "audit_record", "trace_record", "jsonl_lines",
    "event_tables", "read_events", "line_chunks",
]

#: Keys of the run envelope, in the order they open every event line.
ENVELOPE_KEYS = ("ts_utc", "run_id", "seed", "parameter_hash", "manifest_fingerprint")
#: substream label -> the ``module`` of its events and trace rows
MODULE_OF_LABEL = {S5_LABEL: S5_MODULE, S6_LABEL: S6_MODULE}
#: substream label -> the ``draws`` of each of its events (one block: one uniform in S5, two in S6)
DRAWS_OF_LABEL = {S5_LABEL: "1", S6_LABEL: "2"}
#: ``ts_utc``: RFC 3339 with 6 fractional digits and ``Z`` (§9)
TS_UTC_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z"

# Work in row chunks that reuse allocator pages: fresh multi-hundred-MB buffers cost more in page faults
# than formatting the lines.
_JSONL_CHUNK = 1 << 15
#: bytes per chunk of :func:`line_chunks`
CHUNK_BYTES = 32 * 2**20

_ENVELOPE_FIELDS = [("ts_utc", pa.string()), ("run_id", pa.string()), ("seed", pa.uint64()),
                    ("parameter_hash", pa.string()), ("manifest_fingerprint", pa.string()),
                    ("module", pa.string()), ("substream_label", pa.string()),
                    ("rng_counter_before_lo", pa.uint64()), ("rng_counter_before_hi", pa.uint64()),
                    ("rng_counter_after_lo", pa.uint64()), ("rng_counter_after_hi", pa.uint64()),
                    ("draws", pa.string()), ("blocks", pa.uint64())]
_SITE_FIELDS = [("merchant_id", pa.uint64()), ("legal_country_iso", pa.string()), ("site_order", pa.int64()),
                ("tile_id", pa.uint64())]
EVENT_SCHEMAS = {
    S5_LABEL: pa.schema(_ENVELOPE_FIELDS + _SITE_FIELDS + [("u", pa.float64())]),
    S6_LABEL: pa.schema(_ENVELOPE_FIELDS + _SITE_FIELDS + [
        ("attempt_index", pa.int64()), ("accepted", pa.bool_()), ("delta_lat_deg", pa.float64()),
        ("delta_lon_deg", pa.float64()), ("sigma_lat_deg", pa.float64()), ("sigma_lon_deg", pa.float64())]),
}
_TS_UTC = re.compile(TS_UTC_PATTERN)
_RUN_ID = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------------------------------------------------
# Writing events


def _check_envelope(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope's five fields in line order, validated (§9: RFC 3339 ts with 6 digits and Z)."""
    missing = [k for k in ENVELOPE_KEYS if k not in envelope]
    extra = [k for k in envelope if k not in ENVELOPE_KEYS]
    if missing or extra:
        raise ValueError(f"envelope must have exactly the keys {list(ENVELOPE_KEYS)}; "
                         f"missing {missing}, unexpected {extra}")
    ts, run_id = envelope["ts_utc"], envelope["run_id"]
    if not (isinstance(ts, str) and _TS_UTC.fullmatch(ts)):
        raise ValueError(f"ts_utc must look like 2025-01-31T12:00:00.000000Z; got {ts!r}")
    if not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise ValueError(f"run_id must be 32 lowercase hex characters; got {run_id!r}")
    return {"ts_utc": ts, "run_id": run_id, "seed": _check_seed(envelope["seed"]),
            "parameter_hash": _check_hex64("parameter_hash", envelope["parameter_hash"]),
            "manifest_fingerprint": _check_hex64("manifest_fingerprint", envelope["manifest_fingerprint"])}


def _json_ints(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _json_bools(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())  # Arrow writes "true"/"false"


def _json_floats(values: np.ndarray) -> pa.Array:
    # Arrow's float -> string cast prints the shortest digits that round-trip (like repr, though with
    # other exponent thresholds, e.g. "1e-7"), but writes integral values without a fraction ("1", "-0").
    # Those parse back as JSON integers and would lose -0.0, so give them ".0"; such values are rare,
    # so the regex runs only when one is present.
    text = pc.cast(pa.array(values), pa.string())
    if np.any(values == np.trunc(values)):
        text = pc.replace_substring_regex(text, pattern=r"^(-?[0-9]+)$", replacement=r"\1.0")
    return text


def _json_isos(codes: np.ndarray) -> pa.Array:
    n = len(codes)
    quoted = np.empty((n, 4), np.uint8)
    quoted[:, [0, 3]] = ord('"')
    quoted[:, 1:3] = codes
    offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(quoted))


def _events_jsonl(head: dict[str, Any], items: list[tuple[str, Any]]) -> bytes:
    """Write JSON lines: the constants of ``head``, then ``items`` in order.

    An item is (key, JSON text) for a constant or (key, (formatter, values)) for a column.

    Constants between columns are folded into literal separators, then each row chunk is one Arrow
    ``binary_join_element_wise``; its data buffer is exactly the chunk's lines, so nothing is split or
    re-joined per row.
    """
    pieces: list[Any] = []
    literal = json.dumps(head, separators=(",", ":"))[:-1]  # '{"ts_utc":...,"substream_label":"..."'
    for key, value in items:
        literal += "," + json.dumps(key) + ":"
        if isinstance(value, str):
            literal += value
        else:
            pieces += [literal, value]
            literal = ""
    pieces.append(literal + "}\n")
    columns = [p for p in pieces if not isinstance(p, str)]
    n = len(columns[0][1])
    if any(len(values) != n for _, values in columns):
        raise ValueError(f"event columns must have equal lengths; got {[len(v) for _, v in columns]}")
    string = pa.string()
    # Stream each chunk into one growing buffer so Arrow's pool reuses the chunk's memory; BytesIO
    # grows by realloc and getvalue() hands its buffer over, so the lines are copied once.
    sink = io.BytesIO()
    for start in range(0, n, _JSONL_CHUNK):
        stop = min(n, start + _JSONL_CHUNK)
        args = [pa.scalar(p, string) if isinstance(p, str) else p[0](p[1][start:stop]) for p in pieces]
        lines = pc.binary_join_element_wise(*args, pa.scalar("", string))
        offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
        sink.write(lines.buffers()[2][int(offsets[0]):int(offsets[-1])])
    return sink.getvalue()


def _u64_column(name: str, values: Any) -> tuple[Any, np.ndarray]:
    return _json_ints, np.ravel(_as_u64(name, values))


def _int_column(name: str, values: Any) -> tuple[Any, np.ndarray]:
    a = np.ravel(np.asarray(values))
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers; got dtype {a.dtype}")
    return _json_ints, a


def _float_column(name: str, values: Any) -> tuple[Any, np.ndarray]:
    a = np.ravel(np.asarray(values, dtype=np.float64))
    if not np.isfinite(a).all():
        bad = a[~np.isfinite(a)][:5]
        raise ValueError(f"{name} must be finite (JSON has no NaN or infinity); found {bad}")
    return _json_floats, a


def _counter_items(before_hi: Any, before_lo: Any, after_hi: Any, after_lo: Any) -> list[tuple[str, Any]]:
    return [("rng_counter_before_lo", _u64_column("before_lo", before_lo)),
            ("rng_counter_before_hi", _u64_column("before_hi", before_hi)),
            ("rng_counter_after_lo", _u64_column("after_lo", after_lo)),
            ("rng_counter_after_hi", _u64_column("after_hi", after_hi))]


def _site_items(merchant_id: Any, legal_country_iso: Any, site_order: Any,
                tile_id: Any) -> list[tuple[str, Any]]:
    return [("merchant_id", _u64_column("merchant_id", merchant_id)),
            ("legal_country_iso", (_json_isos, _iso_codes(np.ravel(legal_country_iso)))),
            ("site_order", _int_column("site_order", site_order)),
            ("tile_id", _u64_column("tile_id", tile_id))]


def s5_events_jsonl(envelope: Mapping[str, Any], merchant_id: Any, legal_country_iso: Any, site_order: Any,
                    tile_id: Any, u: Any, before_hi: Any, before_lo: Any, after_hi: Any,
                    after_lo: Any) -> bytes:
    r"""S5 ``site_tile_assign`` events as JSON lines, one per site (contract §7, §9).

    Keys in order: the envelope (``ts_utc, run_id, seed, parameter_hash, manifest_fingerprint``),
    ``module, substream_label``, the four counters, ``draws`` ("1"), ``blocks`` (1), then
    ``merchant_id, legal_country_iso, site_order, tile_id, u``.  Integers are full-range JSON
    integers; floats are the shortest text that parses back to the same double.  Computed eagerly,
    about 1 µs per event.

    Parameters
    ----------
    envelope : mapping
        Exactly the keys of :data:`ENVELOPE_KEYS`.
    merchant_id, legal_country_iso, site_order, tile_id : array_like
        The site: uint64, two-letter strings (uppercased on output), int, uint64.
    u : array_like of float64
        The site's uniform, finite.
    before_hi, before_lo, after_hi, after_lo : array_like of uint64
        Counters of the site's block (see :func:`block_at`).

    Returns
    -------
    bytes
        UTF-8 JSON lines, each ending with a newline.

    Raises
    ------
    ValueError
        On a malformed envelope, ISO code or value, or columns of different lengths.

    Examples
    --------
    >>> env = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
    ...        "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    >>> line = s5_events_jsonl(env, [2**64 - 1], ["US"], [1], [7], [0.5], [0], [0], [0], [1])
    >>> json.loads(line)["merchant_id"], json.loads(line)["u"], line.count(b"\n")
    (18446744073709551615, 0.5, 1)
    """
    head = {**_check_envelope(envelope), "module": S5_MODULE, "substream_label": S5_LABEL}
    items = _counter_items(before_hi, before_lo, after_hi, after_lo)
    items += [("draws", json.dumps(DRAWS_OF_LABEL[S5_LABEL])), ("blocks", "1")]
    items += _site_items(merchant_id, legal_country_iso, site_order, tile_id) + [("u", _float_column("u", u))]
    return _events_jsonl(head, items)


def s6_events_jsonl(envelope: Mapping[str, Any], merchant_id: Any, legal_country_iso: Any, site_order: Any,
                    tile_id: Any, attempt_index: Any, accepted: Any, delta_lat_deg: Any, delta_lon_deg: Any,
                    before_hi: Any, before_lo: Any, after_hi: Any, after_lo: Any) -> bytes:
    """S6 ``in_cell_jitter`` events as JSON lines, one per attempt (contract §8, §9).

    Keys in order: the envelope, ``module, substream_label``, the four counters, ``draws`` ("2"),
    ``blocks`` (1), then ``merchant_id, legal_country_iso, site_order, tile_id, attempt_index,
    accepted, delta_lat_deg, delta_lon_deg, sigma_lat_deg`` (0.0), ``sigma_lon_deg`` (0.0).
    Computed eagerly, about 1 µs per event.

    Parameters
    ----------
    envelope : mapping
        Exactly the keys of :data:`ENVELOPE_KEYS`.
    merchant_id, legal_country_iso, site_order, tile_id : array_like
        The site: uint64, two-letter strings (uppercased on output), int, uint64.
    attempt_index : array_like of int
        1..64.
    accepted : array_like of bool
        Whether the attempt's point was accepted.
    delta_lat_deg, delta_lon_deg : array_like of float64
        The candidate point relative to the tile centroid, finite.
    before_hi, before_lo, after_hi, after_lo : array_like of uint64
        Counters of the attempt's block (see :func:`block_at`).

    Returns
    -------
    bytes
        UTF-8 JSON lines, each ending with a newline.

    Raises
    ------
    ValueError
        On a malformed envelope, ISO code or value, or columns of different lengths.

    Examples
    --------
    >>> env = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
    ...        "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    >>> data = s6_events_jsonl(env, [1], ["FJ"], [1], [7], [1], [True], [-0.25], [1.0], [0], [0], [0], [1])
    >>> event = json.loads(data)
    >>> event["accepted"], event["delta_lon_deg"], event["draws"], event["sigma_lat_deg"]
    (True, 1.0, '2', 0.0)
    """
    accepted = np.ravel(np.asarray(accepted))
    if accepted.dtype != np.bool_:
        raise ValueError(f"accepted must be booleans; got dtype {accepted.dtype}")
    head = {**_check_envelope(envelope), "module": S6_MODULE, "substream_label": S6_LABEL}
    items = _counter_items(before_hi, before_lo, after_hi, after_lo)
    items += [("draws", json.dumps(DRAWS_OF_LABEL[S6_LABEL])), ("blocks", "1")]
    items += _site_items(merchant_id, legal_country_iso, site_order, tile_id)
    items += [("attempt_index", _int_column("attempt_index", attempt_index)),
              ("accepted", (_json_bools, accepted)),
              ("delta_lat_deg", _float_column("delta_lat_deg", delta_lat_deg)),
              ("delta_lon_deg", _float_column("delta_lon_deg", delta_lon_deg)),
              ("sigma_lat_deg", "0.0"), ("sigma_lon_deg", "0.0")]
    return _events_jsonl(head, items)




# ---------------------------------------------------------------------------------------------------------
# Reading events


def event_tables(chunks: Iterable[bytes | memoryview], label: str) -> Iterator[pa.Table]:
    """Parse RNG event JSON lines chunk by chunk: one table of ``EVENT_SCHEMAS[label]`` per chunk.

    Each chunk holds whole lines (:func:`line_chunks` cuts a stream so); blank lines are skipped.  Arrow's
    JSON reader with an explicit schema keeps u64 fields in their full range (values >= 2**63 included) and
    parses millions of events without a Python loop, one thread per call (the jobs run one per core).
    A chunk is parsed before the next is requested, so a reused buffer (a ``memoryview``) is fine.

    Parameters
    ----------
    chunks : iterable of bytes-like
        Whole JSON lines, as written by :func:`s5_events_jsonl` or :func:`s6_events_jsonl`, in any key order.
    label : str
        :data:`~segment1b.rng.S5_LABEL` or :data:`~segment1b.rng.S6_LABEL`; selects the schema.

    Yields
    ------
    pyarrow.Table
        One row per event of the chunk, columns in schema order.

    Raises
    ------
    ValueError
        On an unknown label, a line that is not JSON, a value of the wrong type or range, an unexpected key,
        or a missing or null one (``pyarrow.ArrowInvalid`` is a ``ValueError``); the message counts events
        from 1 over all chunks.
    """
    if label not in EVENT_SCHEMAS:
        raise ValueError(f"unknown substream label {label!r}; expected one of {list(EVENT_SCHEMAS)}")
    schema = EVENT_SCHEMAS[label]
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    events = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        table = pajson.read_json(
            pa.BufferReader(chunk), parse_options=parse,
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(chunk), 1 << 20)))
        table = table.select(schema.names)
        for name in schema.names:
            column = table[name]
            if column.null_count:
                event = events + pc.index(pc.is_null(column), True).as_py() + 1
                raise ValueError(f"event {event} has no {name!r} (or null); every {label} event carries all of "
                                 f"{schema.names}")
        events += table.num_rows
        yield table


def read_events(data: bytes | Iterable[bytes | memoryview], label: str) -> pa.Table:
    """All events of ``data`` (one buffer of JSON lines, or chunks of whole lines) as one table.

    :func:`event_tables`, concatenated; see there for the parameters and errors.

    Examples
    --------
    >>> env = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
    ...        "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    >>> data = s5_events_jsonl(env, [2**64 - 1], ["US"], [1], [7], [0.5], [0], [0], [0], [1])
    >>> read_events(data, S5_LABEL)["merchant_id"].to_pylist()
    [18446744073709551615]
    """
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    tables = list(event_tables(chunks, label))
    return pa.concat_tables(tables) if tables else EVENT_SCHEMAS[label].empty_table()


def line_chunks(stream: BinaryIO, digest=None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Whole-line chunks of a binary stream (for :func:`event_tables`), updating ``digest`` with every byte read.

    Any object with ``readinto`` will do: an open file, or a decompressing reader over one.  One reusable
    buffer: each chunk is a view of it, valid until the next one is requested (the parser copies what it
    keeps), and only the partial last line is moved, so no block is copied in Python.

    Examples
    --------
    >>> [bytes(c) for c in line_chunks(io.BytesIO(b"a\\nbc\\nd"), chunk_bytes=4)]
    [b'a\\n', b'bc\\n', b'd']
    """
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    have = 0  # bytes of a partial line at the start of the buffer
    while True:
        if have == len(buf):
            # one line longer than the buffer: move to one twice the size (not resized in place: the caller
            # may still hold a view of the old one)
            grown = bytearray(2 * len(buf))
            grown[:have] = buf
            buf, view = grown, memoryview(grown)
        n = stream.readinto(view[have:])
        if not n:
            break
        if digest is not None:
            digest.update(view[have:have + n])
        end = have + n
        cut = buf.rfind(b"\n", 0, end) + 1
        if cut:
            yield view[:cut]
        have = end - cut
        buf[:have] = buf[cut:end]
    if have:
        yield view[:have]


# ---------------------------------------------------------------------------------------------------------
# Audit and trace logs


def audit_record(envelope: Mapping[str, Any], build_commit: str) -> dict[str, Any]:
    """The run's RNG audit record (one per run, written before any event; contract §9).

    Examples
    --------
    >>> env = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
    ...        "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    >>> list(audit_record(env, "abc123"))
    ['ts_utc', 'run_id', 'seed', 'manifest_fingerprint', 'parameter_hash', 'algorithm', 'build_commit']
    """
    env = _check_envelope(envelope)
    return {"ts_utc": env["ts_utc"], "run_id": env["run_id"], "seed": env["seed"],
            "manifest_fingerprint": env["manifest_fingerprint"], "parameter_hash": env["parameter_hash"],
            "algorithm": ALGORITHM, "build_commit": str(build_commit)}


def trace_record(envelope: Mapping[str, Any], module: str, substream_label: str, draws_total: int,
                 blocks_total: int, events_total: int) -> dict[str, Any]:
    """One RNG trace row: cumulative totals of one (module, substream_label) family (contract §9).

    Raises
    ------
    ValueError
        If (module, substream_label) is not a known family or a total is not a non-negative integer.

    Examples
    --------
    >>> env = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
    ...        "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    >>> trace_record(env, S6_MODULE, S6_LABEL, 8, 4, 4)["events_total"]
    4
    """
    if MODULE_OF_LABEL.get(substream_label) != module:
        raise ValueError(f"unknown RNG family ({module!r}, {substream_label!r}); expected one of "
                         f"{[(m, lab) for lab, m in MODULE_OF_LABEL.items()]}")
    totals = {"draws_total": draws_total, "blocks_total": blocks_total, "events_total": events_total}
    for name, value in totals.items():
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return {**_check_envelope(envelope), "module": module, "substream_label": substream_label,
            **{k: int(v) for k, v in totals.items()}}


def jsonl_lines(records: Iterable[Mapping[str, Any]]) -> bytes:
    r"""Compact JSON lines of small records (audit, trace), keys in the records' order.

    Examples
    --------
    >>> jsonl_lines([{"a": 1}, {"b": "x"}])
    b'{"a":1}\n{"b":"x"}\n'
    """
    return b"".join(json.dumps(dict(r), separators=(",", ":"), allow_nan=False).encode() + b"\n"
                    for r in records)
