"""``segment1b run``: S0 → S9 end to end on one Dask client, resumable.

Prepares the reference surfaces (S1/S2) and generates the outlet catalogue when they are missing, then
runs S0/S3, S4-S6, S7/S8 and S9, printing one line per state and a summary (rows and seconds per state,
the ten slowest countries, where outputs and reports are, PASS or the failing code).

Identity and resume: the ``run_id`` of a (seed, manifest_fingerprint, parameter_hash) is kept in a run
receipt written before any RNG event; a rerun with the same arguments finds it and continues under the
same ``run_id``.  Every state skips what is already published (and S4-S6 reuse finished parts), so an
interrupted run ends with the same bytes as an uninterrupted one.  A run whose every output is already
published (S1/S2, the catalogue, S3-S8 with their receipts, S9's _passed.flag, the run summary) is a
no-op that writes nothing at all, so it also passes on a read-only data root (issue #14).

Memory: before S1 and again before S3 the workers' memory limits are checked against the largest units
of the run (jobs/footprint.py); a limit that cannot hold them is refused with C001_OPTION_INVALID naming
the minimum, instead of a run whose workers pause for good.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from segment1b.contracts import path_for, report_path
from segment1b.errors import Segment1BError
from segment1b.generator import SCALES
from segment1b.identity import RunIdentity, build_commit, new_run_id, utc_now
from segment1b.rng_log_files import DEFAULT_LOG_FORM, LOG_FORMS
from segment1b.storage import Storage

from . import argtypes
from .footprint import Need, check_memory, expected_sites, largest_part, part_need, plan_need
from .place import STATES as PLACE_STATES
from .place import PlaceConfig, run_place
from .runtime import release_freed_memory
from .session import (add_cluster_options, add_command, add_lease_options, add_root_options, open_session,
                      storage_from_args)

__all__ = ["RunRequest", "run_pipeline", "register"]

THROUGH = ("s3", "s4", "s5", "s6", "s8", "s9")
PERFORMANCE_REPORT = "performance_report.html"  # in the run folder


@dataclass(frozen=True)
class RunRequest:
    """What to run; every field has a command-line flag of the same name."""

    seed: int
    scale: str = "reference"
    grid: str | None = "5m"
    raster: str | None = None
    countries: str | None = None
    iso_column: str | None = None
    basis: str | None = None
    dp: int = 8
    fingerprint: str | None = None  # use this published outlet catalogue instead of generating one
    through: str = "s9"
    part_sites: int = PlaceConfig.part_sites
    rng_logs: str = PlaceConfig.rng_logs  # RNG event parts: "zstd" (.jsonl.zst) or "plain" (.jsonl)


@dataclass
class RunSummary:
    """What ``run`` printed, as data (also written as run_summary.json next to the run receipt)."""

    identity: dict[str, Any]
    states: list[dict[str, Any]] = field(default_factory=list)
    slowest_countries: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    passed: bool | None = None
    failure: dict[str, Any] | None = None
    wall_seconds: float = 0.0


def run_pipeline(storage: Storage, client, request: RunRequest, out=None) -> RunSummary:
    """Run the segment for ``request``; returns the summary (raises the first contract failure).

    A run that is already complete (:func:`completed_run`) returns its stored summary and writes nothing.
    Otherwise the workers' memory limits are checked first (C001, :mod:`jobs.footprint`).
    """
    out = out if out is not None else sys.stdout
    done = completed_run(storage, request)
    if done is not None:  # everything is published: write nothing at all (a read-only root passes too)
        _print_complete(done, out)
        return done
    return _run(storage, client, request, out)


def _run(storage: Storage, client, request: RunRequest, out) -> RunSummary:
    """:func:`run_pipeline` once it is known that the run is not complete."""
    from .report.run_report import report_after_run

    t_run = time.perf_counter()
    steps = _Steps(out)
    check_memory(client, _memory_needs(storage, request), step=_memory_step(request))
    # one performance report for the whole run (S1-S9); it is saved in the run folder, known once S1/S2
    # and the catalogue have given the identity
    perf = _performance_report(storage, client)
    with contextlib.ExitStack() as held, perf:  # perf exits first: the report is saved under the lease
        prepared, fp = _surfaces_and_catalogue(storage, client, request, steps, out)
        ph = prepared["parameter_hash"]
        # S0 and S3-S9 of a fingerprint are published by one run at a time (issue 14): a second submission waits
        # here, then finds them published.  The states take the same lease again (re-entrant).
        held.enter_context(storage.lease(path_for("lease_segment", manifest_fingerprint=fp), out=out))
        if request.through in ("s8", "s9"):  # site_locations of (seed, fp) published by another parameter_hash:
            from .synthesis import check_egress_free  # refused now, before S0-S7 and before any run folder

            check_egress_free(storage, RunIdentity(seed=request.seed, manifest_fingerprint=fp, parameter_hash=ph))
        run_id, resumed = _run_receipt(storage, request, fp, ph)
        ident = RunIdentity(seed=request.seed, manifest_fingerprint=fp, parameter_hash=ph, run_id=run_id)
        perf.destination = path_for("run_folder", **ident.tokens) + PERFORMANCE_REPORT
        print(f"\nrun_id {run_id}{' (resumed)' if resumed else ''}  seed {request.seed}  fingerprint {fp[:16]}...  "
              f"parameter_hash {ph[:16]}...", file=out, flush=True)
        result = _run_states(storage, client, request, ident, prepared, steps, out)
    summary = RunSummary(identity={**ident.tokens, "run_id": run_id, "resumed": resumed},
                         states=_state_rows(storage, ident, steps.rows, steps.computed),
                         slowest_countries=_slowest_countries(storage, ident),
                         outputs=_outputs(storage, ident, request.through))
    if result is not None:
        summary.passed = bool(result.passed)
        if not result.passed:
            summary.failure = {"codes": list(result.failed_codes)}
    summary.wall_seconds = round(time.perf_counter() - t_run, 3)
    summary_rel = path_for("run_folder", **ident.tokens) + "run_summary.json"
    storage.write_json(summary_rel, asdict(summary))  # the run report shows it
    # run_report.html + map.png in the run folder; never raises (#10); listed with the outputs, so that the
    # verdict stays the last line printed (issue 15)
    written = report_after_run(storage, ident, out=out)
    if written:
        summary.outputs.update(written)
        storage.write_json(summary_rel, asdict(summary))
    _print_summary(summary, out)
    release_freed_memory()
    return summary


class _Steps:
    """Runs the steps of a run, printing a header for each and recording its seconds and the states it
    computed (a state published before the run is reused: its report's seconds are not this run's)."""

    def __init__(self, out):
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.computed: set[str] = set()

    def __call__(self, name: str, states: tuple[str, ...], fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)``, the step ``name`` that publishes ``states`` (``s1``...``s9``)."""
        t0 = time.perf_counter()
        print(f"\n[{name}]", file=self.out, flush=True)
        result = fn(*args, **kwargs)
        self.rows.append({"state": name, "seconds": round(time.perf_counter() - t0, 3)})
        self.computed |= _computed_states(states, result)
        return result


def _computed_states(states: tuple[str, ...], result: Any) -> set[str]:
    """Which of ``states`` a step computed rather than found published, from its result: ``{"skipped":
    True}`` for the whole step, or ``{state: {"skipped": True}}`` per state.

    >>> sorted(_computed_states(("s4", "s5", "s6"), {"s4": {"skipped": True}, "s5": {"rows": 3}, "s6": {"rows": 3}}))
    ['s5', 's6']
    >>> _computed_states(("s1", "s2"), {"skipped": True}), _computed_states((), {})
    (set(), set())
    """
    if isinstance(result, dict):
        if result.get("skipped"):
            return set()
        return {s for s in states if not (isinstance(result.get(s), dict) and result[s].get("skipped"))}
    return set(states)


def _surfaces_and_catalogue(storage: Storage, client, request: RunRequest, steps: _Steps,
                            out) -> tuple[dict[str, Any], str]:
    """S1/S2 (prepared unless published) and the outlet catalogue (generated unless given): what fixes the
    run's parameter_hash and manifest_fingerprint."""
    from .generate import catalogue_countries, countries_from_places, run_generate
    from .prepare import prepare

    prepared = steps("s1-s2 tiles", ("s1", "s2"), prepare, storage, client, grid=request.grid,
                     countries=request.countries, raster=request.raster, basis=request.basis, dp=request.dp,
                     iso_column=request.iso_column, out=out)
    ph = prepared["parameter_hash"]
    # now with the largest country's weighted tiles of these tile weights (S9's plan recomputation)
    check_memory(client, _memory_needs(storage, request, ph), step=_memory_step(request))
    if request.fingerprint is not None:
        return prepared, request.fingerprint
    # not the zero-mass fallback countries (every tile a coastal sliver): no E613 by construction
    eligible = catalogue_countries(storage, ph)
    generated = steps("catalogue", (), run_generate, storage, client, countries_from_places(eligible),
                      scale=request.scale, seed=request.seed, out=out)
    return prepared, generated["manifest_fingerprint"]


def _run_states(storage: Storage, client, request: RunRequest, ident: RunIdentity, prepared: dict[str, Any],
                steps: _Steps, out):
    """S0/S3, then S4-S6, S7/S8 and S9 as far as ``request.through``; S9's result (None without S9)."""
    from .generate import countries_with_tiles
    from .s3 import run_s3
    from .synthesis import run_s7_s8
    from .validate import run_s9

    steps("s0-s3 requirements", ("s3",), run_s3, storage, client, ident,
          countries_with_weights=countries_with_tiles(storage, ident.parameter_hash), out=out)
    through = request.through
    if through != "s3":
        place_through = through if through in PLACE_STATES else "s6"
        _check_disk(storage, request, ident, place_through)
        placed = PLACE_STATES[:PLACE_STATES.index(place_through) + 1]
        config = PlaceConfig(part_sites=request.part_sites, rng_logs=request.rng_logs)
        steps(f"s4-{place_through} placement", placed, run_place, storage, client, ident, prepared_grid(prepared),
              prepared["countries_sha256"], through=place_through, config=config, out=out)
    if through in ("s8", "s9"):
        steps("s7-s8 synthesis", ("s7", "s8"), run_s7_s8, storage, client, ident, out=out)
    if through != "s9":
        return None
    return steps("s9 validation", ("s9",), run_s9, storage, client, ident.seed, ident.manifest_fingerprint,
                 parameter_hash=ident.parameter_hash, out=out)


def _check_disk(storage: Storage, request: RunRequest, ident: RunIdentity, place_through: str) -> None:
    """E_DISK_SPACE before S4 when a local root cannot hold what S4 to ``request.through`` will write."""
    from .disk import check_disk_space, disk_need
    from .place import DATASET_OF, LABEL_OF

    states = PLACE_STATES[: PLACE_STATES.index(place_through) + 1]
    datasets = tuple(DATASET_OF[s] for s in states)
    if request.through in ("s8", "s9"):
        datasets += ("s7_site_synthesis", "site_locations")
    sites = _catalogue_rows(storage, ident.seed, ident.manifest_fingerprint)
    check_disk_space(storage, disk_need(storage, ident, sites, request.rng_logs, datasets=datasets,
                                        labels=tuple(LABEL_OF[s] for s in states if s in LABEL_OF)),
                     step=f"S4-{request.through.upper() if request.through != 's9' else 'S8'}")


def completed_run(storage: Storage, request: RunRequest) -> RunSummary | None:
    """The summary of ``request``'s run when everything it publishes is already published, else ``None``.

    Reads only: the inputs' parameter_hash (as prepare resolves it), the generated catalogue's fingerprint,
    then whether every dataset, RNG log, receipt, S9's ``_passed.flag`` and the run summary exist, and
    whether the S3-S8 datasets still have the digests of their receipts (a partition changed after the run
    is not complete: the run goes on, and S9 reports E911_FINALITY as it did before issue #14).
    """
    from .prepare import DATASETS as TILE_DATASETS
    from .prepare_inputs import resolve_inputs

    seed_folder = path_for("run_folder", seed=request.seed, manifest_fingerprint="0" * 64,
                           parameter_hash="0" * 64).split("/fingerprint=")[0]
    if not storage.fs.glob(storage.abspath(seed_folder).rstrip("/") + "/*/*/run_summary.json"):
        return None  # no run of this seed ever finished here: nothing to resolve (a new root costs nothing)
    ph = resolve_inputs(grid=request.grid, countries=request.countries, raster=request.raster,
                        basis=request.basis, dp=request.dp, iso_column=request.iso_column).params.parameter_hash
    if not all(storage.is_published(path_for(d, parameter_hash=ph)) for d in TILE_DATASETS):
        return None
    fp = request.fingerprint or _generated_fingerprint(storage, request, ph)
    if fp is None or not storage.is_published(path_for("outlet_catalogue", seed=request.seed,
                                                       manifest_fingerprint=fp)):
        return None
    tokens = {"seed": request.seed, "manifest_fingerprint": fp, "parameter_hash": ph}
    summary_rel = path_for("run_folder", **tokens) + "run_summary.json"
    if not (storage.exists(path_for("run_receipt", **tokens)) and storage.exists(summary_rel)):
        return None
    run_id = storage.read_json(path_for("run_receipt", **tokens))["run_id"]
    if not _outputs_intact(storage, request.through, tokens, run_id):
        return None
    summary = RunSummary(**storage.read_json(summary_rel))
    return summary if summary.passed in (True, None) else None


def _outputs_intact(storage: Storage, through: str, tokens: dict[str, Any], run_id: str) -> bool:
    """Every S3-S8 dataset up to ``through`` published with its receipt's digest, the RNG event logs of the
    run, and (through S9) the bundle, its ``_passed.flag`` and the S9 report."""
    from segment1b.bundle import FLAG_NAME

    from .runtime import published_receipt

    last = THROUGH.index(through)
    for state, dataset_id in (("s3", "s3_requirements"), ("s4", "s4_alloc_plan"), ("s5", "s5_site_tile_assignment"),
                              ("s6", "s6_site_jitter"), ("s7", "s7_site_synthesis"), ("s8", "site_locations")):
        if THROUGH.index({"s7": "s8"}.get(state, state)) > last:
            break
        target = path_for(dataset_id, **(tokens if state != "s8" else
                                         {k: tokens[k] for k in ("seed", "manifest_fingerprint")}))
        receipt = published_receipt(storage, state, tokens, target) if storage.is_published(target) else None
        if receipt is None or storage.partition_digest(target) != receipt["sha256_hex"]:
            return False
    for label in ("site_tile_assign", "in_cell_jitter")[: max(0, last - THROUGH.index("s4"))]:
        if not storage.is_published(path_for("rng_events", substream_label=label, seed=tokens["seed"],
                                             parameter_hash=tokens["parameter_hash"], run_id=run_id)):
            return False
    if through != "s9":
        return True
    bundle = path_for("validation_bundle_1B", manifest_fingerprint=tokens["manifest_fingerprint"])
    return storage.is_published(bundle) and storage.exists(bundle + FLAG_NAME) and \
        storage.exists(report_path("s9", **tokens))


def _generated_fingerprint(storage: Storage, request: RunRequest, parameter_hash: str) -> str | None:
    """The manifest_fingerprint ``run`` would generate its catalogue under (None: tile weights missing)."""
    from segment1b.generator import generator_parameters, manifest_fingerprint

    from .generate import catalogue_countries, countries_from_places

    try:
        eligible = catalogue_countries(storage, parameter_hash)
    except Segment1BError:
        return None
    return manifest_fingerprint(generator_parameters(request.scale, request.seed, countries_from_places(eligible)))


def _print_complete(summary: RunSummary, out) -> None:
    ident = summary.identity
    print(f"run: everything of this run is already published (run_id {ident['run_id']}, seed {ident['seed']}, "
          f"fingerprint {ident['manifest_fingerprint']}, parameter_hash {ident['parameter_hash']}); nothing to "
          "do, nothing written", file=out)
    for name, url in summary.outputs.items():
        print(f"  {name}: {url}", file=out)
    if summary.passed:
        print("PASS  _passed.flag already published (`segment1b verify-flag` re-checks the files)", file=out)


def _memory_needs(storage: Storage, request: RunRequest, parameter_hash: str | None = None) -> list[Need]:
    """The largest units of the run that do not shrink with the memory limit (jobs/footprint.py).

    Parts: from the scale (or the given catalogue's row count).  With the tile weights published: S9's
    plan recomputation of the country with the most weighted tiles.
    """
    needs: list[Need] = []
    if request.through != "s3":
        sites = expected_sites(request.scale) if request.fingerprint is None else \
            _catalogue_rows(storage, request.seed, request.fingerprint)
        if sites:
            needs.append(part_need(largest_part(sites, request.part_sites)))
    if request.through == "s9" and parameter_hash is not None:
        s2 = report_path("s2", parameter_hash=parameter_hash)
        countries = storage.read_json(s2).get("countries", []) if storage.exists(s2) else []
        # S2 reports record weighted tiles since issue #14; older ones only rows, which over-state them (4.5x
        # for Russia at 30"): their plan need is left to the pause watchdog rather than guessed
        countries = [c for c in countries if "weighted_tiles" in c]
        if countries:
            top = max(countries, key=lambda c: (c["weighted_tiles"], c["country_iso"]))
            needs.append(plan_need(top["country_iso"], top["weighted_tiles"]))
    return needs


def _memory_step(request: RunRequest) -> str:
    return (f"a run of scale {request.scale}" if request.fingerprint is None else "a run of this catalogue") + \
        f" with parts of {request.part_sites:_} sites".replace("_", " ")


def _catalogue_rows(storage: Storage, seed: int, fingerprint: str) -> int:
    """Rows of a published outlet catalogue, from its part footers (0 when it is not published)."""
    rel = path_for("outlet_catalogue", seed=seed, manifest_fingerprint=fingerprint)
    if not storage.is_published(rel):
        return 0
    return sum(storage.parquet_metadata(p, dataset_id="outlet_catalogue").num_rows for p in storage.parquet_parts(rel))


def prepared_grid(prepared: dict[str, Any]):
    from segment1b.grid import Grid

    return Grid.from_params(prepared["grid_params"])


def _run_receipt(storage: Storage, request: RunRequest, fp: str, ph: str) -> tuple[str, bool]:
    """The run_id of this identity: kept from an earlier (interrupted) run, else a new one."""
    rel = path_for("run_receipt", seed=request.seed, manifest_fingerprint=fp, parameter_hash=ph)
    if storage.exists(rel):
        return storage.read_json(rel)["run_id"], True
    run_id = new_run_id()
    storage.write_json(rel, {"run_id": run_id, "seed": request.seed, "manifest_fingerprint": fp,
                             "parameter_hash": ph, "created_utc": utc_now(), "build_commit": build_commit(),
                             "request": asdict(request)})
    return run_id, False


class _performance_report:
    """``distributed.performance_report`` of the block, saved at ``destination`` (HTML) when one is set.

    Dask writes the report to a local file; it is then copied to the data root (which may be an object store).
    """

    def __init__(self, storage: Storage, client):
        self.storage, self.client = storage, client
        self.destination: str | None = None

    def __enter__(self):
        from distributed import performance_report

        self.tmp = tempfile.NamedTemporaryFile(suffix=".html", delete=False)
        self.tmp.close()
        self.report = performance_report(filename=self.tmp.name)
        self.report.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.report.__exit__(*exc)
            if self.destination is not None:
                with open(self.tmp.name, "rb") as fh:
                    self.storage.write_bytes(self.destination, fh.read())
        except Exception:  # a missing performance report must never hide the run's own outcome
            if exc[0] is None:
                raise
        finally:
            os.unlink(self.tmp.name)
        return False


def _read_report(storage: Storage, state: str, ident: RunIdentity) -> dict[str, Any] | None:
    tokens = {"parameter_hash": ident.parameter_hash} if state in ("s1", "s2") else \
        {"manifest_fingerprint": ident.manifest_fingerprint} if state == "s0" else ident.tokens
    rel = report_path(state, **tokens)
    return storage.read_json(rel) if storage.exists(rel) else None


def _state_rows(storage: Storage, ident: RunIdentity, steps: list[dict[str, Any]],
                computed: set[str]) -> list[dict[str, Any]]:
    rows = []
    for s in ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"):
        rep = _read_report(storage, s, ident)
        if rep is not None:
            rows.append({"state": s, "rows": rep.get("rows"), "seconds": rep.get("wall_seconds"),
                         "peak_worker_rss_bytes": rep.get("peak_worker_rss_max_bytes"), "cached": s not in computed})
    return rows + [{"step": s["state"], "seconds": s["seconds"]} for s in steps]


def _slowest_countries(storage: Storage, ident: RunIdentity, k: int = 10) -> list[dict[str, Any]]:
    """Countries by task seconds summed over S4-S6 (where the long tail shows)."""
    total: dict[str, dict[str, float]] = {}
    for s in ("s4", "s5", "s6"):
        rep = _read_report(storage, s, ident)
        for c in (rep or {}).get("countries", []):
            row = total.setdefault(c["country_iso"], {"seconds": 0.0, "sites": 0})
            row["seconds"] += c["seconds"]
            if s == "s6":
                row["sites"] = c["rows"]
    rows = [{"country_iso": c, "seconds": round(v["seconds"], 3), "sites": int(v["sites"])} for c, v in total.items()]
    return sorted(rows, key=lambda r: (-r["seconds"], r["country_iso"]))[:k]


def _outputs(storage: Storage, ident: RunIdentity, through: str) -> dict[str, str]:
    run_folder = path_for("run_folder", **ident.tokens)
    outs = {"run_folder": storage.url(run_folder),
            "performance_report": storage.url(run_folder + PERFORMANCE_REPORT),
            "reports": storage.url("control/")}
    if through in ("s8", "s9"):
        outs["site_locations"] = storage.url(path_for("site_locations", seed=ident.seed,
                                                      manifest_fingerprint=ident.manifest_fingerprint))
    if through == "s9":
        outs["validation_bundle"] = storage.url(path_for("validation_bundle_1B",
                                                         manifest_fingerprint=ident.manifest_fingerprint))
    return outs


def _print_summary(summary: RunSummary, out) -> None:
    """The end of ``run``'s output; the verdict (PASS or FAIL) is its last line (issue 15)."""
    print("\n== summary ==", file=out)
    ident = summary.identity
    print(f"  run_id {ident['run_id']}{' (resumed)' if ident.get('resumed') else ''}  seed {ident['seed']}  "
          f"fingerprint {ident['manifest_fingerprint']}  parameter_hash {ident['parameter_hash']}", file=out)
    for row in summary.states:
        if "state" in row:
            rss = row.get("peak_worker_rss_bytes") or 0
            # a state published before this run: its report's seconds are an earlier run's
            took = "    cached" if row.get("cached") else f"{row['seconds'] or 0:>8.2f} s"
            print(f"  {row['state']:<4} {row['rows'] or 0:>12,} rows  {took}"
                  + (f"  peak worker {rss / 2**20:,.0f} MiB" if rss and not row.get("cached") else ""), file=out)
    print("  slowest countries (S4-S6 task seconds): " + ", ".join(
        f"{r['country_iso']} {r['seconds']:.2f}s" for r in summary.slowest_countries), file=out)
    for name, url in summary.outputs.items():
        print(f"  {name}: {url}", file=out)
    print(f"  total {summary.wall_seconds:.1f} s", file=out)
    if summary.passed is True:
        print("PASS  _passed.flag written; site_locations validated", file=out)
    elif summary.passed is False:
        print(f"FAIL  {', '.join(summary.failure['codes'])} (see the validation bundle)", file=out)


# ---------------------------------------------------------------------------------------------------------
# command line

def register(subparsers) -> None:
    p = add_command(subparsers, "run", summary="run the segment S0-S9 end to end (prepares and generates what is "
                    "missing)", example="segment1b run --data-root ./out --seed 42 --scale x10", description="""
        Place every outlet of an outlet catalogue on the planet. Prepares the tiles of the grid (S1/S2) and
        generates a catalogue when they are missing, runs S0 to S9, and publishes site_locations with its
        validation bundle and _passed.flag. Prints one line per state, then rows and seconds per state, the
        slowest countries, where the outputs are and PASS (or the failing code).

        Rerun the same command after an interruption: it resumes under the same run_id and ends with the
        same bytes. A run whose outputs are all published does nothing.

        Exit codes: 0 ok, 2 usage, 3 contract failure, 4 no usable Dask cluster, 75 busy (another run is
        publishing the same work), 130 interrupted.""")
    add_root_options(p)
    p.add_argument("--seed", type=argtypes.seed, required=True, help="u64 seed of the run")
    p.add_argument("--scale", default="reference", choices=sorted(SCALES),
                   help="outlet catalogue scale to generate (default reference, ~32 200 outlets)")
    p.add_argument("--fingerprint", type=argtypes.hex64, default=None,
                   help="use the published outlet catalogue with this manifest_fingerprint instead of generating one")
    p.add_argument("--grid", type=argtypes.grid_name, default=None,
                   help="named grid: 30s, 1m, 2.5m, 5m, 10m, 30m, 1d (default 5m; a --raster defines its own grid)")
    p.add_argument("--raster", default=None, help="population GeoTIFF (lon/lat), enables basis population")
    p.add_argument("--countries", default=None, help="country polygons (GeoParquet/GeoPackage/Shapefile); default "
                   "the embedded Natural Earth 10 m countries")
    p.add_argument("--iso-column", default=None, help="ISO alpha-2 column of --countries")
    p.add_argument("--basis", default=None, choices=["uniform", "area_m2", "population", "population_proxy"],
                   help="tile weight basis (default population with --raster, else population_proxy)")
    p.add_argument("--dp", type=int, default=8, help="decimal places of the fixed-point weights (default 8)")
    p.add_argument("--through", default="s9", choices=THROUGH, help="last state to run (default s9)")
    p.add_argument("--part-sites", type=argtypes.positive_int, default=PlaceConfig.part_sites,
                   help="sites per output part of S4-S8 (layout constant; default 2^18)")
    p.add_argument("--rng-logs", default=DEFAULT_LOG_FORM, choices=LOG_FORMS,
                   help="form of the RNG event parts: zstd (part-NNNNN.jsonl.zst, readable with zstdcat; the "
                   "default, about a tenth of the bytes) or plain (part-NNNNN.jsonl); the lines are the same")
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    from .cli import EXIT_CONTRACT_FAILURE

    out = out if out is not None else sys.stdout
    grid = args.grid if args.grid is not None else (None if args.raster else "5m")
    request = RunRequest(seed=args.seed, scale=args.scale, grid=grid, raster=args.raster, countries=args.countries,
                         iso_column=args.iso_column, basis=args.basis, dp=args.dp, fingerprint=args.fingerprint,
                         through=args.through, part_sites=args.part_sites, rng_logs=args.rng_logs)
    done = completed_run(storage_from_args(args), request)
    if done is not None:  # no cluster, nothing written: a complete run on a read-only root passes
        _print_complete(done, out)
        return 0
    with open_session(args, out=out) as (storage, client):
        try:
            summary = _run(storage, client, request, out)
        except Segment1BError as exc:
            print(f"\nFAIL  {exc.code}", file=out)
            raise
    return 0 if summary.passed in (True, None) else EXIT_CONTRACT_FAILURE
