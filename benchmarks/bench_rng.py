"""RNG throughput: S6 substreams + first Philox block per site, S5 substreams, event JSONL write and read.

Workload: ``sites`` sites with seeded random merchant ids over the full u64 range, ISO codes and
site orders.  The baseline is a plain-Python per-site loop (hashlib + Python-int Philox + u01) doing
the same maths; the vectorised step must reproduce it exactly before its speed-up is reported.
Headline single-core numbers: ``taskset -c 0 python -m benchmarks.run rng --scale 1m``.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from segment1b import rng, rng_events

SCALES = {"100k": {"sites": 100_000}, "1m": {"sites": 1_000_000}}

ISO_CODES = np.array(["US", "GB", "FR", "DE", "FJ", "RU", "BR", "IN", "CN", "ZA", "AU", "NZ", "MC", "JP"])
SEED, FINGERPRINT, PARAMETER_HASH = 42, "ab" * 32, "3c" * 32
ENVELOPE = {"ts_utc": "2025-01-31T12:00:00.000000Z", "run_id": "0123456789abcdef" * 2, "seed": SEED,
            "parameter_hash": PARAMETER_HASH, "manifest_fingerprint": FINGERPRINT}
BASELINE = "python-loop (baseline)"
VECTORISED = "vectorised s6 substreams + first block"
U_MAX = float.fromhex("0x1.fffffffffffffp-1")


def _enc(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode()


def python_loop(master: bytes, merchant_id, iso, site_order) -> list[tuple[int, int, int, float, float]]:
    """Per site, in plain Python: S6 substream, the Philox block at offset 0 and both uniforms."""
    prefix = master + _enc("mlr:1A") + _enc(rng.S6_LABEL) + _enc("segment:1B") + _enc("state:s6")
    tail = _enc(PARAMETER_HASH)
    mask, m, w = 2**64 - 1, rng.PHILOX_M, rng.PHILOX_W
    out = []
    for merchant, code, order in zip(merchant_id.tolist(), iso.tolist(), site_order.tolist()):
        h = hashlib.sha256(prefix + struct.pack("<Q", merchant) + _enc(code) + struct.pack("<Q", order)
                           + tail).digest()
        key = int.from_bytes(h[24:32], "little")
        hi, lo = int.from_bytes(h[16:24], "big"), int.from_bytes(h[24:32], "big")
        c0, c1, k = lo, hi, key
        for _ in range(10):
            p = m * c0
            c0, c1, k = ((p >> 64) ^ k ^ c1) & mask, p & mask, (k + w) & mask
        out.append((key, hi, lo, min((c0 + 1) / 2**64, U_MAX), min((c1 + 1) / 2**64, U_MAX)))
    return out


def run(bench, scale_name, params, workdir):
    """Time the steps at one scale (in memory; ``workdir`` is unused)."""
    n = params["sites"]
    g = np.random.default_rng(20250131)
    merchant_id = g.integers(0, 2**64, n, dtype=np.uint64)  # full u64 range, half of them >= 2**63
    iso = ISO_CODES[g.integers(0, len(ISO_CODES), n)]
    site_order = g.integers(1, 5000, n).astype(np.int32)
    master = rng.master_material(SEED, FINGERPRINT)

    # The loop takes ~5 s per million sites here, far below the 60 s above which we would time a
    # subset and extrapolate, so it always runs on every site.
    with bench.step(BASELINE):
        ref = python_loop(master, merchant_id, iso, site_order)
    bench.note(BASELINE, sites_per_s=round(n / bench.steps[BASELINE].wall_s))

    with bench.step(VECTORISED, baseline=BASELINE):
        key, hi, lo = rng.s6_substreams(master, merchant_id, iso, site_order, PARAMETER_HASH)
        x0, x1, before_hi, before_lo, after_hi, after_lo = rng.block_at(key, hi, lo, 0)
        u_lon, u_lat = rng.u01(x0), rng.u01(x1)
    rate = round(n / bench.steps[VECTORISED].wall_s)
    bench.note(VECTORISED, sites_per_s=rate, blocks_per_s=rate)
    for i, (name, got) in enumerate(zip(("key", "counter_hi", "counter_lo", "u_lon", "u_lat"),
                                        (key, hi, lo, u_lon, u_lat))):
        if got.tolist() != [r[i] for r in ref]:
            raise AssertionError(f"vectorised {name} differs from the Python loop: a bug in segment1b.rng")
    del ref

    label = "vectorised s5 substreams (1 per pair)"
    with bench.step(label):
        rng.s5_substreams(master, merchant_id, iso, PARAMETER_HASH)
    bench.note(label, pairs_per_s=round(n / bench.steps[label].wall_s))

    label = "s6 events -> JSONL bytes"
    with bench.step(label):
        data = rng_events.s6_events_jsonl(ENVELOPE, merchant_id, iso, site_order, key, np.ones(n, np.int32),
                                          u_lon < 0.5, u_lat - 0.5, u_lon - 0.5,
                                          before_hi, before_lo, after_hi, after_lo)
    bench.note(label, events_per_s=round(n / bench.steps[label].wall_s), mb=round(len(data) / 1e6, 1))

    label = "JSONL -> Arrow (read_events)"
    with bench.step(label):
        table = rng_events.read_events(data, rng.S6_LABEL)
    bench.note(label, events_per_s=round(table.num_rows / bench.steps[label].wall_s))
