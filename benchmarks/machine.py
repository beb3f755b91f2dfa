"""What this machine gives two processes at once: the ceiling for any 1 -> 2 worker speed-up measured on it.

A virtual machine's two CPUs may be two hyperthreads of one core, or share a quota or a memory bus, so two
busy processes need not run twice as fast as one.  :func:`parallel_ceiling` times a fixed piece of S5/S6-like
work (SHA-256 substreams per site, Philox draws, event lines formatted and zstd-compressed) in one process
alone, then in two processes at once, and returns ``2 * alone / together``: 2.0 on two free cores.  A
benchmark reports its speed-ups next to it, so "1.6x" reads as "all of it" or "a fifth short" on the
machine it ran on.
"""

from __future__ import annotations

import multiprocessing
import time

SITES = 200_000  # about 1.5 s of work per process on a 2 GHz core


def _work(sites: int) -> float:
    """Seconds one process takes for ``sites`` sites of substreams, draws, event lines and compression."""
    import numpy as np

    from segment1b import rng, rng_events
    from segment1b.rng_log_files import encode_chunks

    t0 = time.perf_counter()
    master = rng.master_material(42, "ab" * 32)
    merchant = np.repeat(np.arange(sites // 20, dtype=np.uint64), 20)
    iso = np.array(["US", "FJ"] * (len(merchant) // 2))
    order = np.tile(np.arange(1, 21, dtype=np.uint64), len(merchant) // 20)
    key, hi, lo = rng.s6_substreams(master, merchant, iso, order, "3c" * 32)
    x0, x1 = rng.philox2x64_10(key, hi, lo)
    envelope = {"ts_utc": "2026-01-01T00:00:00.000000Z", "run_id": "0" * 32, "seed": 42,
                "parameter_hash": "3c" * 32, "manifest_fingerprint": "ab" * 32}
    lines = rng_events.s6_events_jsonl(envelope, merchant, iso, order.astype(np.int64), x0 >> np.uint64(40),
                                       np.ones(len(merchant), np.int64), np.ones(len(merchant), bool),
                                       rng.u01(x0) - 0.5, rng.u01(x1) - 0.5, hi, lo, hi, lo + np.uint64(1))
    sum(len(b) for b in encode_chunks([lines], "zstd"))
    return time.perf_counter() - t0


def parallel_ceiling(sites: int = SITES, repeats: int = 2) -> dict[str, float]:
    """``alone_s`` (best of ``repeats``), ``together_s`` (the slower of the two, best of ``repeats``) and
    ``ceiling`` = 2 * alone / together."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_work, [1000, 1000])  # imports and first-touch memory, in both processes
        alone = min(pool.apply(_work, (sites,)) for _ in range(repeats))
        together = min(max(pool.map(_work, [sites, sites], chunksize=1)) for _ in range(repeats))
    return {"alone_s": alone, "together_s": together, "ceiling": 2 * alone / together}


if __name__ == "__main__":
    r = parallel_ceiling()
    print(f"one process {r['alone_s']:.2f} s; two at once {r['together_s']:.2f} s each; "
          f"1->2 ceiling {r['ceiling']:.2f}x")
