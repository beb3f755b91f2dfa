"""Compare the published files of two data roots of the same run (same seed and scale), e.g. one written by
``main`` and one by a branch: ``python benchmarks/compare_roots.py ROOT_A ROOT_B``.

* every Parquet file under ``data/`` (same relative paths): SHA-256 of the bytes;
* every RNG log file under ``logs/`` (``.jsonl.zst`` event parts, ``.jsonl`` audit/trace): SHA-256 of the
  bytes, and of the lines without ``ts_utc``, ``run_id`` and ``build_commit``.  The first two are the wall
  clock and a random id of each run (contract §1), so two runs never have byte-identical logs, not even two
  runs of the same code; the audit record's ``build_commit`` names the code that ran.  The ``run_id=``
  folder is compared as ``run_id=*``.  Everything else must be equal.

Exit 0 when every dataset file is byte-identical and every log line equal but for those fields.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

RUN_ID = re.compile(r"run_id=[0-9a-f]{32}")
PER_RUN = ("ts_utc", "run_id", "build_commit")


def _lines(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        import pyarrow as pa

        data = pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()
    out = []
    for line in data.splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in PER_RUN}
        out.append(json.dumps(record, separators=(",", ":")).encode())
    return b"\n".join(out)


def files(root: Path) -> dict[str, tuple[str, str | None]]:
    """Relative path (run_id folders as ``run_id=*``) -> (SHA-256 of the bytes, SHA-256 of the log lines
    without the per-run fields, for logs)."""
    out = {}
    for path in sorted((root / "data").rglob("*.parquet")):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), None)
    for path in sorted((root / "logs").rglob("*.jsonl*")):
        rel = RUN_ID.sub("run_id=*", str(path.relative_to(root)))
        out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(_lines(path)).hexdigest())
    return out


def main(argv: list[str]) -> int:
    a, b = (files(Path(p)) for p in argv[:2])
    problems = [f"only in {argv[0]}: {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"only in {argv[1]}: {k}" for k in sorted(b.keys() - a.keys())]
    same_bytes = same_lines = 0
    for k in sorted(a.keys() & b.keys()):
        (bytes_a, lines_a), (bytes_b, lines_b) = a[k], b[k]
        same_bytes += bytes_a == bytes_b
        if lines_a is None and bytes_a != bytes_b:
            problems.append(f"dataset file differs: {k}")
        elif lines_a is not None:
            same_lines += lines_a == lines_b
            if lines_a != lines_b:
                problems.append(f"log lines differ (beyond {'/'.join(PER_RUN)}): {k}")
    datasets = sum(v[1] is None for v in a.values())
    print(f"{datasets} Parquet files under data/, {len(a) - datasets} log files under logs/; "
          f"{same_bytes} of {len(a.keys() & b.keys())} byte-identical; log files with equal lines but for "
          f"{'/'.join(PER_RUN)}: {same_lines}")
    for p in problems:
        print("  " + p)
    print("IDENTICAL" if not problems else f"{len(problems)} DIFFERENCES")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
