"""S9's RNG accounting of one event-log part against its dataset part (contract §7-§9).

:func:`parse_events` reads a part of ``site_tile_assign`` or ``in_cell_jitter`` events with the one event
reader (:func:`segment1b.rng_events.event_tables`), compares the envelope with the run's identity chunk by
chunk and keeps only the columns the checks need.  :func:`check_part_events` then recomputes every event
from its own key: its substream, counter and Philox draw (S5: ``u``; S6: the deltas), one S5 event per site
with the S5 tile, S6 attempts ``1..a`` with only the last accepted and equal to ``s6_site_jitter``, and every
rejected S6 attempt really outside its pixel or country.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from .. import rng
from ..grid import Grid
from ..keys import SiteKeys, iso_of, iso_text, iso_u16
from ..rng_events import DRAWS_OF_LABEL, EVENT_SCHEMAS, MODULE_OF_LABEL, TS_UTC_PATTERN, event_tables
from .findings import MAX_EXAMPLES, S5, S6, Expect, Findings, key_rows
from .tables import dataset_keys, float_bits, runs

__all__ = ["EventColumns", "parse_events", "check_part_events"]

_NUMERIC = {
    rng.S5_LABEL: ("merchant_id", "legal_country_iso", "site_order", "tile_id", "rng_counter_before_lo",
                   "rng_counter_before_hi", "rng_counter_after_lo", "rng_counter_after_hi", "blocks", "u"),
    rng.S6_LABEL: ("merchant_id", "legal_country_iso", "site_order", "tile_id", "rng_counter_before_lo",
                   "rng_counter_before_hi", "rng_counter_after_lo", "rng_counter_after_hi", "blocks",
                   "attempt_index", "accepted", "delta_lat_deg", "delta_lon_deg"),
}


@dataclass
class EventColumns:
    """The columns of one event-log part that the checks use, plus what the line-level scan found."""

    label: str
    lines: int = 0
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    #: envelope field -> {"count", "examples": [{"line", "value"}]} for values other than expected
    mismatches: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: draws text -> number of events (for the draws total)
    draws: dict[str, int] = field(default_factory=dict)
    run_ids: set[str] = field(default_factory=set)

    def keys(self) -> SiteKeys:
        c = self.columns
        return SiteKeys(c["merchant_id"], c["legal_country_iso"], c["site_order"])


#: the envelope fields whose mismatch is an identity finding rather than RNG accounting
_ENVELOPE_CODES = {"run_id": ("path_embed", "E905_IDENTITY"), "seed": ("path_embed", "E905_IDENTITY"),
                   "parameter_hash": ("path_embed", "E905_IDENTITY"),
                   "manifest_fingerprint": ("identity_coherence", "E912_IDENTITY_COHERENCE")}
_TS_UTC = f"^{TS_UTC_PATTERN}$"


def parse_events(chunks: Iterable[bytes | memoryview], label: str, expect: Expect) -> EventColumns:
    """Parse event JSON lines chunk by chunk (each chunk whole lines), keeping only what the checks need.

    Blank lines are skipped; ``event`` numbers in the examples count events (1-based) in the file.
    Envelope strings (``ts_utc`` format, ``run_id``, ``seed``, ``parameter_hash``, ``manifest_fingerprint``,
    ``module``, ``substream_label``, ``draws``, the zero sigmas of S6) are compared with their expected
    values per chunk and dropped; mismatches are counted with example event numbers.

    Raises
    ------
    ValueError
        A line is not JSON, has a key that is not in the event schema, misses one or has a value of the
        wrong type (see :func:`segment1b.rng_events.event_tables`).
    """
    out = EventColumns(label)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _NUMERIC[label]}
    expected = {"run_id": expect.run_id or None, "seed": expect.seed, "parameter_hash": expect.parameter_hash,
                "manifest_fingerprint": expect.manifest_fingerprint, "module": MODULE_OF_LABEL[label],
                "substream_label": label, "draws": DRAWS_OF_LABEL[label]}
    if label == rng.S6_LABEL:
        expected.update(sigma_lat_deg=0.0, sigma_lon_deg=0.0)
    for table in event_tables(chunks, label):
        _note_mismatch(out, "ts_utc", pc.invert(pc.match_substring_regex(table["ts_utc"], _TS_UTC)),
                       table["ts_utc"])
        for name, value in expected.items():
            if value is not None:
                col = table[name]
                _note_mismatch(out, name, pc.not_equal(col, pa.scalar(value, col.type)), col)
        out.run_ids.update(pc.unique(table["run_id"]).to_pylist()[:100])
        vc = pc.value_counts(table["draws"])
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            out.draws[v] = out.draws.get(v, 0) + int(n)
        for name in _NUMERIC[label]:
            if name == "legal_country_iso":
                try:
                    parts[name].append(iso_u16(table[name]))
                except ValueError as exc:
                    raise ValueError(f"{label} events: {exc}") from None
            else:
                parts[name].append(table[name].to_numpy())
        out.lines += table.num_rows
    types = {f.name: f.type for f in EVENT_SCHEMAS[label]}
    for name, arrays in parts.items():
        if arrays:
            out.columns[name] = np.concatenate(arrays)
        elif name == "legal_country_iso":
            out.columns[name] = np.empty(0, np.uint16)
        else:
            out.columns[name] = np.empty(0, types[name].to_pandas_dtype())
    return out


def _note_mismatch(out: EventColumns, name: str, bad: pa.ChunkedArray | pa.Array, col) -> None:
    n = pc.sum(bad).as_py() or 0
    if not n:
        return
    idx = np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool))[:MAX_EXAMPLES]
    entry = out.mismatches.setdefault(name, {"count": 0, "examples": []})
    entry["count"] += int(n)
    values = col.take(pa.array(idx)).to_pylist()
    room = MAX_EXAMPLES - len(entry["examples"])
    entry["examples"].extend({"event": out.lines + int(i) + 1, "value": v}
                             for i, v in list(zip(idx, values))[:room])


def check_part_events(part: int, events: EventColumns, table: pa.Table | None, geometries: Mapping[str, Any],
                      grid: Grid, expect: Expect, master: bytes, findings: Findings) -> dict[str, Any]:
    """RNG accounting of one part's event file against its dataset part (S5 for ``site_tile_assign``, S6 for
    ``in_cell_jitter``).

    Parameters
    ----------
    part : int
    events : EventColumns
        From :func:`parse_events`.
    table : pyarrow.Table or None
        The S5 (or S6) part; ``None`` (missing, unreadable or wrong schema: already a finding of the dataset
        checks) limits the checks to the events themselves.
    geometries : mapping
        ISO -> country geometry (S6: rejected attempts must be outside pixel or country).
    grid, expect : Grid, Expect
    master : bytes
        :func:`segment1b.rng.master_material` of the run.
    findings : Findings

    Returns
    -------
    dict
        ``events``, ``draws``, ``blocks``, ``run_ids`` and, for S6, ``attempt_histogram``.
    """
    ds = S5 if events.label == rng.S5_LABEL else S6
    keys = dataset_keys(part, ds, table, None) if table is not None else None
    summary = _envelope_findings(events, part, findings)
    if events.label == rng.S5_LABEL:
        _check_s5_events(events, keys, table if keys is not None else None, master, expect, part, findings)
    else:
        summary["attempt_histogram"] = _check_s6_events(events, keys, table if keys is not None else None,
                                                        geometries, grid, master, expect, part, findings)
    return summary


def _envelope_findings(ev: EventColumns, part: int, findings: Findings) -> dict[str, Any]:
    check_rng = "rng_s5" if ev.label == rng.S5_LABEL else "rng_s6"
    for name, m in sorted(ev.mismatches.items()):
        check, code = _ENVELOPE_CODES.get(name, (check_rng, "E907_RNG_BUDGET"))
        findings.add(check, code, f"{ev.label} events: {name} differs from the expected value", m["count"],
                     [{"part": part, "field": name, **e} for e in m["examples"]])
    try:
        draws = sum(int(v) * n for v, n in ev.draws.items())
    except ValueError:
        draws = None
        findings.add(check_rng, "E907_RNG_BUDGET", f"{ev.label} events: draws is not a decimal integer", 1,
                     [{"part": part, "draws_values": sorted(ev.draws)}])
    blocks = int(ev.columns["blocks"].sum(dtype=np.uint64)) if ev.lines else 0
    return {"events": ev.lines, "draws": draws, "blocks": blocks, "run_ids": sorted(ev.run_ids)}


def _counter_checks(check: str, label: str, keys: SiteKeys, c: Mapping[str, np.ndarray], exp_hi: np.ndarray,
                    exp_lo: np.ndarray, part: int, findings: Findings) -> None:
    bhi, blo = c["rng_counter_before_hi"], c["rng_counter_before_lo"]
    ahi, alo = c["rng_counter_after_hi"], c["rng_counter_after_lo"]
    bad = np.flatnonzero((bhi != exp_hi) | (blo != exp_lo))
    findings.add(check, "E907_RNG_BUDGET", f"{label} counter_before is not the substream start + offset",
                 bad.size, key_rows(keys, bad, part, before_hi=bhi, before_lo=blo, expected_hi=exp_hi,
                                    expected_lo=exp_lo))
    nhi, nlo = rng.counter_add(bhi, blo, 1)
    bad = np.flatnonzero((ahi != nhi) | (alo != nlo) | (c["blocks"] != 1))
    findings.add(check, "E907_RNG_BUDGET", f"{label} after - before != blocks or blocks != 1", bad.size,
                 key_rows(keys, bad, part, blocks=c["blocks"], after_hi=ahi, after_lo=alo))


def _check_s5_events(ev: EventColumns, k5: SiteKeys | None, t5: pa.Table | None, master: bytes,
                     expect: Expect, part: int, findings: Findings) -> None:
    c, ke = ev.columns, ev.keys()
    if k5 is not None:
        dup = ke.duplicates()
        findings.add("rng_s5", "E907_RNG_BUDGET", "more than one site_tile_assign event for a site", dup.size,
                     key_rows(ke, dup, part))
        missing, extra = k5.diff(ke)
        findings.add("rng_s5", "E907_RNG_BUDGET", "S5 site without a site_tile_assign event", missing.size,
                     key_rows(k5, missing, part))
        findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign event without an S5 site",
                     extra.size - dup.size, key_rows(ke, np.setdiff1d(extra, dup), part))
        i5, ie = k5.match(ke)
        tile5 = np.asarray(t5["tile_id"].to_numpy(), np.uint64)
        bad = np.flatnonzero(tile5[i5] != c["tile_id"][ie])
        findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign event tile_id differs from S5's",
                     bad.size, key_rows(ke, ie[bad], part, event_tile_id=c["tile_id"]))
    if not ev.lines:
        return
    # counters and draws from each event's own key: one substream per (merchant, country) run
    starts, run = runs(c["merchant_id"], c["legal_country_iso"])
    iso = iso_text(c["legal_country_iso"][starts])
    key, hi, lo = rng.s5_substreams(master, c["merchant_id"][starts], iso, expect.parameter_hash)
    offset = np.maximum(c["site_order"], 1).astype(np.uint64) - np.uint64(1)
    exp_hi, exp_lo = rng.counter_add(hi[run], lo[run], offset)
    _counter_checks("rng_s5", rng.S5_LABEL, ke, c, exp_hi, exp_lo, part, findings)
    x0, _ = rng.philox2x64_10(key[run], exp_hi, exp_lo)
    u = rng.u01(x0)
    bad = np.flatnonzero(float_bits(u) != float_bits(c["u"]))
    findings.add("rng_s5", "E907_RNG_BUDGET", "site_tile_assign u is not the Philox draw at its counter",
                 bad.size, key_rows(ke, bad, part, u=c["u"], expected_u=u))


def _check_s6_events(ev: EventColumns, k6: SiteKeys | None, t6: pa.Table | None,
                     geometries: Mapping[str, Any], grid: Grid, master: bytes, expect: Expect, part: int,
                     findings: Findings) -> dict[str, int]:
    """The S6 checks; returns the attempt histogram (attempts per site -> sites)."""
    c, ke = ev.columns, ev.keys()
    down, _ = ke.neighbours()
    if down.size:
        findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter events are not in site order", down.size,
                     key_rows(ke, down, part))
        order = np.lexsort((c["attempt_index"], ke.site_order, ke.iso, ke.merchant_id))
        c = {k: v[order] for k, v in c.items()}
        ke = ke.take(order)
    attempt = c["attempt_index"]
    starts, run = runs(c["merchant_id"], c["legal_country_iso"], c["site_order"])
    sites = ke.take(starts)
    sizes = np.diff(np.r_[starts, len(attempt)])
    rank = np.arange(len(attempt)) - (starts[run] if len(starts) else 0)
    bad = np.flatnonzero(attempt != rank + 1)
    findings.add("rng_s6", "E907_RNG_BUDGET", "attempt_index is not 1..a consecutive for a site", bad.size,
                 key_rows(ke, bad, part, attempt_index=attempt))
    last = np.zeros(len(attempt), bool)
    if len(starts):
        last[starts + sizes - 1] = True
    bad = np.flatnonzero(c["accepted"] != last)
    findings.add("rng_s6", "E907_RNG_BUDGET", "accepted is not exactly the last attempt of a site", bad.size,
                 key_rows(ke, bad, part, attempt_index=attempt, accepted=c["accepted"]))
    if k6 is not None:
        _s6_against_dataset(c, ke, k6, t6, sites, starts, sizes, run, part, findings)
    hist = {str(int(a)): int(n) for a, n in zip(*np.unique(sizes, return_counts=True))} if len(sizes) else {}
    if ev.lines:
        _s6_draws(c, ke, sites, run, geometries, grid, master, expect, part, findings)
    return hist


def _s6_against_dataset(c: Mapping[str, np.ndarray], ke: SiteKeys, k6: SiteKeys, t6: pa.Table,
                        sites: SiteKeys, starts: np.ndarray, sizes: np.ndarray, run: np.ndarray, part: int,
                        findings: Findings) -> None:
    """Every S6 site has events and every event a site; accepted deltas and event tiles are the dataset's."""
    missing, extra = k6.diff(sites)
    findings.add("rng_s6", "E907_RNG_BUDGET", "S6 site without in_cell_jitter events", missing.size,
                 key_rows(k6, missing, part))
    findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter events without an S6 site", extra.size,
                 key_rows(sites, extra, part))
    i6, js = k6.match(sites)
    fin = starts[js] + sizes[js] - 1  # the final (accepted) event of each matched site
    d6 = {k: np.asarray(t6[k].to_numpy(), np.float64) for k in ("delta_lat_deg", "delta_lon_deg")}
    bad = np.flatnonzero((float_bits(d6["delta_lat_deg"][i6]) != float_bits(c["delta_lat_deg"][fin]))
                         | (float_bits(d6["delta_lon_deg"][i6]) != float_bits(c["delta_lon_deg"][fin])))
    findings.add("rng_s6", "E907_RNG_BUDGET", "accepted in_cell_jitter deltas differ from s6_site_jitter",
                 bad.size, key_rows(k6, i6[bad], part, **d6))
    tile6 = np.asarray(t6["tile_id"].to_numpy(), np.uint64)
    ev_site_tile = np.full(len(sites), np.uint64(0))
    known = np.zeros(len(sites), bool)
    ev_site_tile[js], known[js] = tile6[i6], True
    bad = np.flatnonzero(known[run] & (c["tile_id"] != ev_site_tile[run]))
    findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter event tile_id differs from s6_site_jitter",
                 bad.size, key_rows(ke, bad, part, event_tile_id=c["tile_id"]))


def _s6_draws(c: Mapping[str, np.ndarray], ke: SiteKeys, sites: SiteKeys, run: np.ndarray,
              geometries: Mapping[str, Any], grid: Grid, master: bytes, expect: Expect, part: int,
              findings: Findings) -> None:
    """Counters and deltas from each event's own substream; rejected attempts outside pixel or country."""
    attempt = c["attempt_index"]
    key, hi, lo = rng.s6_substreams(master, sites.merchant_id, iso_text(sites.iso),
                                    np.maximum(sites.site_order, 0).astype(np.uint64), expect.parameter_hash)
    offset = np.maximum(attempt, 1).astype(np.uint64) - np.uint64(1)
    exp_hi, exp_lo = rng.counter_add(hi[run], lo[run], offset)
    _counter_checks("rng_s6", rng.S6_LABEL, ke, c, exp_hi, exp_lo, part, findings)
    tile = c["tile_id"]
    on_grid = tile < np.uint64(grid.n_cells)
    bad = np.flatnonzero(~on_grid)
    findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter event tile_id is not on the grid", bad.size,
                 key_rows(ke, bad, part, event_tile_id=tile))
    x0, x1 = rng.philox2x64_10(key[run], exp_hi, exp_lo)
    safe_tile = np.where(on_grid, tile, np.uint64(0))
    dlon, dlat = grid.jitter_deltas(safe_tile, rng.u01(x0), rng.u01(x1))
    differs = ((float_bits(dlon) != float_bits(c["delta_lon_deg"]))
               | (float_bits(dlat) != float_bits(c["delta_lat_deg"])))
    bad = np.flatnonzero(on_grid & differs)
    findings.add("rng_s6", "E907_RNG_BUDGET", "in_cell_jitter deltas are not the Philox draw at their "
                 "counter", bad.size, key_rows(ke, bad, part, delta_lon_deg=c["delta_lon_deg"],
                                               delta_lat_deg=c["delta_lat_deg"]))
    # a rejected attempt must really be outside the pixel or the country (contract §8)
    rej = np.flatnonzero(~c["accepted"] & on_grid)
    if rej.size:
        lon, lat = grid.absolute_point(tile[rej], c["delta_lon_deg"][rej], c["delta_lat_deg"][rej])
        ok = grid.contains_point(tile[rej], lon, lat)
        iso = ke.iso[rej]
        for code in np.unique(iso[ok]):
            geom = geometries.get(iso_of(code))
            sel = np.flatnonzero(ok & (iso == code))
            ok[sel] = False if geom is None else shapely.intersects_xy(geom, lon[sel], lat[sel])
        bad = rej[ok]
        findings.add("rng_s6", "E907_RNG_BUDGET", "a rejected in_cell_jitter attempt is inside both its "
                     "pixel and its country", bad.size, key_rows(ke, bad, part, attempt_index=attempt))
