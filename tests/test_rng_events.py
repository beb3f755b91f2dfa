"""Tests of segment1b.rng_events: the JSON-lines event format against json.dumps, the one reader, audit and trace."""

import doctest
import hashlib
import io
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment1b import rng, rng_events

U64_MAX = 2**64 - 1
u64s = st.integers(0, U64_MAX)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
ENVELOPE = {"ts_utc": "2025-01-31T12:00:00.123456Z", "run_id": "0123456789abcdef" * 2, "seed": U64_MAX,
            "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}


# ---------------------------------------------------------------------------------------------------------
# Event logs


def ref_event(label: str, row: dict) -> dict:
    """The event dict a slow writer would json.dumps, keys in contract order."""
    module = {rng.S5_LABEL: rng.S5_MODULE, rng.S6_LABEL: rng.S6_MODULE}[label]
    event = {**ENVELOPE, "module": module, "substream_label": label,
             "rng_counter_before_lo": row["before_lo"], "rng_counter_before_hi": row["before_hi"],
             "rng_counter_after_lo": row["after_lo"], "rng_counter_after_hi": row["after_hi"],
             "draws": "1" if label == rng.S5_LABEL else "2", "blocks": 1,
             "merchant_id": row["merchant_id"], "legal_country_iso": row["iso"].upper(),
             "site_order": row["site_order"], "tile_id": row["tile_id"]}
    if label == rng.S5_LABEL:
        event["u"] = row["u"]
    else:
        event.update(attempt_index=row["attempt_index"], accepted=row["accepted"], delta_lat_deg=row["dlat"],
                     delta_lon_deg=row["dlon"], sigma_lat_deg=0.0, sigma_lon_deg=0.0)
    return event


def write_events(label: str, rows: list[dict]) -> bytes:
    col = {k: [r[k] for r in rows] for k in rows[0]}
    counters = (np.array(col["before_hi"], np.uint64), np.array(col["before_lo"], np.uint64),
                np.array(col["after_hi"], np.uint64), np.array(col["after_lo"], np.uint64))
    site = (np.array(col["merchant_id"], np.uint64), col["iso"], np.array(col["site_order"]),
            np.array(col["tile_id"], np.uint64))
    if label == rng.S5_LABEL:
        return rng_events.s5_events_jsonl(ENVELOPE, *site, np.array(col["u"]), *counters)
    return rng_events.s6_events_jsonl(ENVELOPE, *site, np.array(col["attempt_index"]), np.array(col["accepted"]),
                               np.array(col["dlat"]), np.array(col["dlon"]), *counters)


def assert_same_json(data: bytes, expected: list[dict]):
    """Each line parses to the reference dict: same keys in the same order, same types, same float bits."""
    assert data.endswith(b"\n") and data.count(b"\n") == len(expected)
    for line, ref in zip(data.split(b"\n"), expected):
        got = json.loads(line)
        assert list(got) == list(ref)
        assert got == json.loads(json.dumps(ref))
        for k, v in ref.items():
            assert type(got[k]) is type(v), k
            if isinstance(v, float):
                assert got[k].hex() == v.hex(), k  # also tells 0.0 from -0.0


EDGE_FLOATS = [0.5, 1.0, -1.0, 0.0, -0.0, 1e-7, 1e-5, -1e-5, 0.1, 1 / 3, 5e-324, 2.0**-64, 1e15, 1e16, 1e22,
               123456789.125, float.fromhex("0x1.fffffffffffffp-1"), -0.9999999999999999]


def edge_rows() -> list[dict]:
    rows = []
    for i, f in enumerate(EDGE_FLOATS):
        big = [0, 1, 2**63 - 1, 2**63, U64_MAX][i % 5]
        rows.append({"before_hi": big, "before_lo": U64_MAX - i, "after_hi": big + (i == 0), "after_lo": i,
                     "merchant_id": U64_MAX - big, "iso": ["US", "fj", "Gb"][i % 3], "site_order": i + 1,
                     "tile_id": big, "u": abs(f) if 0 < abs(f) < 1 else 0.25, "attempt_index": 1 + i % 64,
                     "accepted": i % 2 == 0, "dlat": f, "dlon": -f})
    return rows


@pytest.mark.parametrize("label", [rng.S5_LABEL, rng.S6_LABEL])
def test_events_equal_a_json_dumps_reference(label):
    rows = edge_rows()
    assert_same_json(write_events(label, rows), [ref_event(label, r) for r in rows])


@pytest.mark.parametrize("label", [rng.S5_LABEL, rng.S6_LABEL])
def test_events_roundtrip_through_read_events(label):
    rows = edge_rows()
    table = rng_events.read_events(write_events(label, rows), label)
    assert table.schema == rng_events.EVENT_SCHEMAS[label]
    assert table.to_pylist() == [ref_event(label, r) for r in rows]
    for name in ("rng_counter_before_hi", "merchant_id", "tile_id"):
        assert table[name].type == pa.uint64()
    assert max(table["merchant_id"].to_pylist()) == U64_MAX and 2**63 in table["tile_id"].to_pylist()
    name = "delta_lat_deg" if label == rng.S6_LABEL else "u"
    assert [math.copysign(1, v) for v in table[name].to_pylist()] == \
        [math.copysign(1, ref_event(label, r)[name]) for r in rows]  # -0.0 keeps its sign


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(u64s, u64s, finite_floats, finite_floats, st.booleans()), min_size=1, max_size=30))
def test_s6_events_roundtrip_property(values):
    rows = [{"before_hi": a, "before_lo": b, "after_hi": b, "after_lo": a, "merchant_id": a, "iso": "NZ",
             "site_order": 1, "tile_id": b, "attempt_index": 64, "accepted": acc, "dlat": f, "dlon": g}
            for a, b, f, g, acc in values]
    data = write_events(rng.S6_LABEL, rows)
    expected = [ref_event(rng.S6_LABEL, r) for r in rows]
    assert_same_json(data, expected)
    table = rng_events.read_events(data, rng.S6_LABEL)
    assert [v.hex() for v in table["delta_lat_deg"].to_pylist()] == [r["dlat"].hex() for r in rows]
    assert table.to_pylist() == expected


def test_events_do_not_depend_on_chunking(monkeypatch):
    rows = edge_rows() * 3
    whole = write_events(rng.S6_LABEL, rows)
    monkeypatch.setattr(rng_events, "_JSONL_CHUNK", 4)
    assert write_events(rng.S6_LABEL, rows) == whole


def test_events_of_nothing_are_empty():
    empty = np.array([], np.uint64)
    assert rng_events.s5_events_jsonl(ENVELOPE, empty, np.array([], str), empty, empty, np.array([]),
                               empty, empty, empty, empty) == b""
    assert rng_events.read_events(b"", rng.S5_LABEL).num_rows == 0


MISSING = object()


@pytest.mark.parametrize("change, message", [
    ({"seed": -1}, "seed must be"),
    ({"seed": True}, "seed must be"),
    ({"run_id": "xyz"}, "run_id must be"),
    ({"run_id": MISSING}, "missing \\['run_id'\\]"),
    ({"ts_utc": "2025-01-31 12:00:00"}, "ts_utc must look like"),
    ({"parameter_hash": "3C" * 32}, "parameter_hash must be"),
    ({"extra": 1}, "unexpected \\['extra'\\]"),
], ids=["neg-seed", "bool-seed", "run-id", "no-run-id", "ts", "upper-hash", "extra-key"])
def test_bad_envelope_raises(change, message):
    envelope = {k: v for k, v in {**ENVELOPE, **change}.items() if v is not MISSING}
    with pytest.raises(ValueError, match=message):
        rng_events.s5_events_jsonl(envelope, [1], ["US"], [1], [1], [0.5], [0], [0], [0], [1])
    with pytest.raises(ValueError, match=message):
        rng_events.audit_record(envelope, "deadbeef")


S5_OK = dict(merchant_id=[1], legal_country_iso=["US"], site_order=[1], tile_id=[1], u=[0.5],
             before_hi=[0], before_lo=[0], after_hi=[0], after_lo=[1])
S6_OK = {**{k: v for k, v in S5_OK.items() if k != "u"},
         "attempt_index": [1], "accepted": [True], "delta_lat_deg": [0.5], "delta_lon_deg": [-0.5]}


@pytest.mark.parametrize("writer, change, message", [
    (rng_events.s5_events_jsonl, {"merchant_id": [1, 2]}, "equal lengths"),
    (rng_events.s5_events_jsonl, {"u": [float("nan")]}, "u must be finite"),
    (rng_events.s6_events_jsonl, {"accepted": [1]}, "accepted must be booleans"),
    (rng_events.s6_events_jsonl, {"delta_lon_deg": [float("inf")]}, "delta_lon_deg must be finite"),
    (rng_events.s5_events_jsonl, {"legal_country_iso": ["USA"]}, "two ASCII letters"),
    (rng_events.s5_events_jsonl, {"merchant_id": [-1]}, "merchant_id must be"),
    (rng_events.s5_events_jsonl, {"site_order": [1.0]}, "site_order must be integers"),
], ids=["lengths", "nan", "accepted-int", "inf", "iso", "neg-merchant", "float-site-order"])
def test_bad_event_columns_raise(writer, change, message):
    columns = S5_OK if writer is rng_events.s5_events_jsonl else S6_OK
    assert writer(ENVELOPE, **columns).count(b"\n") == 1  # the unchanged columns are fine
    with pytest.raises(ValueError, match=message):
        writer(ENVELOPE, **{**columns, **change})


def test_read_events_rejects_bad_lines():
    line = write_events(rng.S5_LABEL, edge_rows()[:1])
    event = json.loads(line)
    with pytest.raises(ValueError, match="unknown substream label"):
        rng_events.read_events(line, "site_tile")
    with pytest.raises(ValueError, match="has no 'u'"):
        rng_events.read_events(line + json.dumps({k: v for k, v in event.items() if k != "u"}).encode() + b"\n",
                        rng.S5_LABEL)
    with pytest.raises(ValueError):  # an unexpected key
        rng_events.read_events(json.dumps({**event, "x": 1}).encode(), rng.S5_LABEL)
    with pytest.raises(ValueError):  # out of u64 range
        rng_events.read_events(json.dumps({**event, "merchant_id": 2**64}).encode(), rng.S5_LABEL)
    with pytest.raises(ValueError):  # S6 lines read as S5
        rng_events.read_events(write_events(rng.S6_LABEL, edge_rows()[:1]), rng.S5_LABEL)


def test_one_reader_for_a_buffer_and_for_chunks_of_a_stream():
    """S9 streams a part through line_chunks and event_tables; the tests read a buffer: the same events."""
    data = write_events(rng.S6_LABEL, edge_rows() * 5)
    digest = hashlib.sha256()
    chunks = [bytes(c) for c in rng_events.line_chunks(io.BytesIO(data), digest, chunk_bytes=300)]
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(chunks) > 10  # several whole-line chunks, and lines longer than the buffer grew it
    whole = rng_events.read_events(data, rng.S6_LABEL)
    tables = list(rng_events.event_tables(chunks, rng.S6_LABEL))
    assert pa.concat_tables(tables).equals(whole) and whole.num_rows == len(edge_rows()) * 5
    lines = data.splitlines(keepends=True)
    broken = b"".join(lines[:7]) + json.dumps({"not": "an event"}).encode() + b"\n"
    with pytest.raises(ValueError):
        rng_events.read_events([b"".join(lines[:5]), broken], rng.S6_LABEL)
    no_u = {k: v for k, v in json.loads(lines[0]).items() if k != "attempt_index"}
    with pytest.raises(ValueError, match="event 9 has no 'attempt_index'"):  # counted over all chunks
        rng_events.read_events([b"".join(lines[:5]), b"".join(lines[5:8]) + json.dumps(no_u).encode()],
                               rng.S6_LABEL)


def test_read_events_accepts_any_key_order_and_spacing():
    event = ref_event(rng.S5_LABEL, edge_rows()[3])
    shuffled = dict(reversed(list(event.items())))
    table = rng_events.read_events((json.dumps(shuffled, indent=None) + "\n").encode(), rng.S5_LABEL)
    assert table.to_pylist() == [event]


# ---------------------------------------------------------------------------------------------------------
# Audit and trace logs


def test_audit_and_trace_records():
    audit = rng_events.audit_record(ENVELOPE, "deadbeef")
    assert list(audit) == ["ts_utc", "run_id", "seed", "manifest_fingerprint", "parameter_hash", "algorithm",
                           "build_commit"]
    assert audit["algorithm"] == "philox2x64-10" and audit["seed"] == U64_MAX
    trace = rng_events.trace_record(ENVELOPE, rng.S5_MODULE, rng.S5_LABEL, 10, 10, 10)
    assert list(trace)[-5:] == ["module", "substream_label", "draws_total", "blocks_total", "events_total"]
    data = rng_events.jsonl_lines([audit, trace])
    assert [json.loads(line) for line in data.splitlines()] == [audit, trace]
    assert data.endswith(b"\n") and b" " not in data


@pytest.mark.parametrize("args", [
    (rng.S5_MODULE, rng.S6_LABEL, 1, 1, 1), ("1B.x", "x", 1, 1, 1),
    (rng.S6_MODULE, rng.S6_LABEL, -1, 1, 1), (rng.S6_MODULE, rng.S6_LABEL, 1.0, 1, 1),
], ids=["mixed-family", "unknown-family", "negative", "float"])
def test_bad_trace_record_raises(args):
    with pytest.raises(ValueError):
        rng_events.trace_record(ENVELOPE, *args)


def test_docstring_examples_run():
    result = doctest.testmod(rng_events, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
