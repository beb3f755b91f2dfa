"""The ``segment1b`` command line.

Each command lives in its own module with ``register(subparsers)`` adding its parser and setting
``func``; this file only wires them and turns contract failures into a clear message and exit code.
"""

from __future__ import annotations

import argparse
import sys

from cluster.errors import ClusterError
from segment1b.errors import BusyError, Segment1BError

# Exit codes: 0 ok, 2 usage (argparse), 3 contract failure (or a failed validation), 4 no usable Dask cluster
# (options, TLS, unreachable scheduler: cluster/README.md), 75 busy: another run holds the lease on the same
# work (E_LEASE_BUSY; 75 is sysexits' EX_TEMPFAIL, "try again later"), 130 interrupted, 1 anything else (a bug:
# please report).
EXIT_CONTRACT_FAILURE = 3
EXIT_CLUSTER_FAILURE = 4
EXIT_BUSY = 75


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment1b", description="Place every merchant outlet on the planet "
                                     "(Segment 1B), as Dask jobs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


# jobs modules that define a command, in the order ``segment1b --help`` lists them
COMMANDS = [
    "pipeline",     # `run`: S0-S9 end to end (jobs/pipeline.py)
    "prepare",
    "generate",
    "s0",
    "s3",
    "validate",     # S9 alone on any data root (jobs/validate.py)
    "verify_flag",  # consumer check of the S9 PASS flag (jobs/verify_flag.py)
    "export",       # site_locations -> one GeoParquet file (jobs/export.py)
    "report.map",         # `map`: PNG of where the sites landed (jobs/report/map.py)
    "report.run_report",  # `report`: HTML run report (jobs/report/run_report.py)
]


def _command_modules():
    import importlib

    return [importlib.import_module(f"jobs.{name}") for name in COMMANDS]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BusyError as exc:  # not a failure of the data: the same command succeeds once the other run is done
        print(f"\nFAILED {exc}", file=sys.stderr)
        return EXIT_BUSY
    except Segment1BError as exc:
        print(f"\nFAILED {exc}", file=sys.stderr)
        return EXIT_CONTRACT_FAILURE
    except ClusterError as exc:  # C001-C103 from cluster/: code, what was tried, what to do next
        print(f"\nFAILED {exc}", file=sys.stderr)
        return EXIT_CLUSTER_FAILURE
    except KeyboardInterrupt:
        print("\ninterrupted; published partitions are intact, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
