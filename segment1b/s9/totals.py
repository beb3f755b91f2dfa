"""S9's global checks, run once on the client: RNG totals, the audit record, row counts, receipts (§9-§11).

The per-part tasks add up events, draws and blocks per family; :func:`check_trace` compares those totals
with the final row of each family in the RNG trace log, :func:`check_audit` wants exactly one audit record
with the run's identity, :func:`check_row_counts` compares ``site_locations`` with the outlet catalogue and
S3, and :func:`check_receipts` compares every partition's digest with the receipt its state's run report
recorded (finality).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .. import rng
from ..rng_events import MODULE_OF_LABEL
from .findings import Expect, Findings

__all__ = ["AUDIT_KEYS", "check_trace", "check_audit", "check_row_counts", "check_receipts"]


def check_trace(trace_bytes: bytes | None, totals: Mapping[str, Mapping[str, int]], expect: Expect,
                findings: Findings) -> dict[str, Any]:
    """Per-family totals (events, draws, blocks over all parts) against the final trace row of each family."""
    out: dict[str, Any] = {}
    if trace_bytes is None:
        findings.add("rng_totals", "E907_RNG_BUDGET", "the RNG trace log is missing", 1, [])
        return out
    rows = []
    for n, line in enumerate(trace_bytes.splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            rows.append(row)
        except ValueError as exc:
            findings.add("rng_totals", "E907_RNG_BUDGET", "an RNG trace line is not a JSON object", 1,
                         [{"line": n, "error": str(exc)}])
    for n, row in enumerate(rows, 1):
        for name in ("run_id", "seed", "parameter_hash", "manifest_fingerprint"):
            want = getattr(expect, name)
            if want != "" and row.get(name) != want:
                findings.add("identity_coherence", "E912_IDENTITY_COHERENCE",
                             f"RNG trace {name} differs from the run's",
                             1, [{"line": n, "value": row.get(name), "expected": want}])
    for label, module in MODULE_OF_LABEL.items():
        fam = [r for r in rows if r.get("substream_label") == label and r.get("module") == module]
        got = totals.get(label, {"events": 0, "draws": 0, "blocks": 0})
        if not fam:
            if got.get("events"):
                findings.add("rng_totals", "E907_RNG_BUDGET", f"no trace row for {label}", 1,
                             [{"substream_label": label, "events": got.get("events")}])
            continue
        try:
            final = max(fam, key=lambda r: int(r.get("events_total", -1)))
        except (TypeError, ValueError):
            findings.add("rng_totals", "E907_RNG_BUDGET", f"{label} trace rows have non-integer events_total",
                         1, [])
            continue
        out[label] = {"module": module, "events_total": final.get("events_total"),
                      "draws_total": final.get("draws_total"), "blocks_total": final.get("blocks_total")}
        for name, total in (("events_total", "events"), ("draws_total", "draws"), ("blocks_total", "blocks")):
            if final.get(name) != got.get(total):
                findings.add("rng_totals", "E907_RNG_BUDGET",
                             f"{label} {name} of the final trace row differs from "
                             "the events", 1, [{"substream_label": label, "field": name,
                                                "trace": final.get(name),
                                                "events": got.get(total)}])
    return out


AUDIT_KEYS = ("ts_utc", "run_id", "seed", "manifest_fingerprint", "parameter_hash", "algorithm",
              "build_commit")


def check_audit(audit_bytes: bytes | None, expect: Expect, findings: Findings) -> dict[str, Any] | None:
    """Exactly one audit record (E907) carrying the run's identity and algorithm (E912)."""
    if audit_bytes is None:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit log is missing", 1, [])
        return None
    lines = [line for line in audit_bytes.splitlines() if line.strip()]
    if len(lines) != 1:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit log must hold exactly one record", 1,
                     [{"records": len(lines)}])
        if not lines:
            return None
    try:
        record = json.loads(lines[0])
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit record is not a JSON object", 1,
                     [{"error": str(exc)}])
        return None
    missing = [k for k in AUDIT_KEYS if k not in record]
    if missing:
        findings.add("rng_audit", "E907_RNG_BUDGET", "the RNG audit record misses fields", 1,
                     [{"missing": missing}])
    want = {"run_id": expect.run_id, "seed": expect.seed, "manifest_fingerprint": expect.manifest_fingerprint,
            "parameter_hash": expect.parameter_hash, "algorithm": rng.ALGORITHM}
    for k, v in want.items():
        if v != "" and k in record and record[k] != v:
            findings.add("rng_audit", "E912_IDENTITY_COHERENCE",
                         f"the RNG audit record's {k} differs from the run's",
                         1, [{"field": k, "value": record[k], "expected": v}])
    return record


def check_row_counts(egress_rows: int, catalogue_rows: int | None, s3_sites: int | None,
                     findings: Findings) -> None:
    """site_locations rows against the catalogue's rows and Σ n_sites of S3 (E901 fewer, E902 more)."""
    sources = (("outlet catalogue rows", catalogue_rows), ("sum of s3_requirements n_sites", s3_sites))
    for name, expected in sources:
        if expected is None or expected == egress_rows:
            continue
        code = "E901_ROW_MISSING" if egress_rows < expected else "E902_ROW_EXTRA"
        findings.add("row_counts", code, f"site_locations rows differ from the {name}",
                     abs(egress_rows - expected),
                     [{"site_locations_rows": egress_rows, "expected": expected, "source": name}])


def check_receipts(digests: Mapping[str, str | None], receipts: Mapping[str, Mapping[str, Any] | None],
                   findings: Findings) -> None:
    """E911 where a partition's digest differs from the receipt its state's run report recorded."""
    for ds, actual in sorted(digests.items()):
        rec = receipts.get(ds)
        if rec is None:
            findings.add("finality", "E911_FINALITY",
                         f"no determinism receipt for {ds} (run report missing)", 1,
                         [{"dataset": ds}])
        elif actual is not None and rec.get("sha256_hex") != actual:
            findings.add("finality", "E911_FINALITY", f"{ds} bytes differ from the receipt of its run report "
                         "(changed after publication)", 1,
                         [{"dataset": ds, "partition_path": rec.get("partition_path"),
                           "receipt_sha256": rec.get("sha256_hex"), "actual_sha256": actual}])
