"""Run benchmark entries at named scales: ``python -m benchmarks.run rng --scale 1m``.

Each entry prints its steps as they finish, then a table with wall/CPU seconds, peak RSS (this
process and, for Dask steps, every worker) and the speed-up against the baseline step measured in the
same run.  ``--json FILE`` also writes the results.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from .harness import Bench, dump


def entries() -> dict[str, object]:
    here = Path(__file__).parent
    return {m.name[len("bench_"):]: m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")}


def main(argv: list[str] | None = None) -> int:
    known = entries()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("entry", choices=sorted(known), help="benchmark entry")
    ap.add_argument("--scale", default=None, help="named scale of the entry (default: its first)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--workdir", default="bench-out", help="folder for data the entry writes")
    ap.add_argument("--scales", default=None, help="comma-separated scales, for entries that run several in one "
                    "run (`scale --scales reference,x10,x100`)")
    args = ap.parse_args(argv)
    mod = importlib.import_module(f"benchmarks.{known[args.entry]}")
    if args.scales is not None:
        if not hasattr(mod, "run_scales"):
            ap.error(f"{args.entry} runs one scale at a time; use --scale")
        scales = tuple(s for s in args.scales.split(",") if s)
        unknown = [s for s in scales if s not in mod.SCALES]
        if unknown or not scales:
            ap.error(f"unknown scales {unknown} for {args.entry}; choose from {list(mod.SCALES)}")
        bench = Bench(args.entry, ",".join(scales))
        result = {"bench": mod.run_scales(bench, scales, workdir=args.workdir), **bench.report()}
        if args.json:
            dump(result, args.json)
        return 0
    scale = args.scale or next(iter(mod.SCALES))
    if scale not in mod.SCALES:
        ap.error(f"unknown scale {scale!r} for {args.entry}; choose from {list(mod.SCALES)}")
    bench = Bench(args.entry, scale)
    mod.run(bench, scale, mod.SCALES[scale], workdir=args.workdir)
    result = bench.report()
    if args.json:
        dump(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
