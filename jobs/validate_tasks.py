"""S9's work on the cluster: what is published, the recipes and tasks that check it, and their submission.

Graph, per merchant-major part ``NNN`` (the same index in S4-S7, ``site_locations`` and the event logs):

* ``s9-tables-NNN-<token>`` reads S4, S5, S6, S7 and ``site_locations`` part ``NNN`` (each file read once,
  hashed and parsed from memory), the outlet-catalogue row groups and the ``s3_requirements`` rows of the
  part's merchant range, and runs :func:`segment1b.s9.check_part_tables` and
  :func:`segment1b.s9.check_part_plan`;
* ``s9-rng5-NNN-<token>`` / ``s9-rng6-NNN-<token>`` stream the ``site_tile_assign`` / ``in_cell_jitter``
  event part (``part-NNNNN.jsonl.zst``, decompressed on the fly, or ``part-NNNNN.jsonl``) in 32 MiB chunks of
  lines (hashing the file's bytes on the way) with the S5 / S6 part and run
  :func:`segment1b.s9.check_part_events`.  Parsing JSON lines is most of S9's cost, so it gets its own tasks
  that run beside the dataset checks, largest first;
* ``s9-planrows-NNN-<token>`` pick the sampled pairs' rows out of S4 part ``NNN`` (each part read once);
* ``s9-plan-<ISO>-<token>`` recompute the S4 plan of the sampled pairs of one country independently, over
  all of the country's tile weights (:func:`segment1b.s9.allocate_all_tiles`);
* ``s9-digest-NNN-<token>`` hash whole partitions (and each of their files) for the finality check and the
  bundle's lists: the tile surfaces, S3-S8 and the outlet catalogue;
* ``s9-surface-NNN-<token>`` (:mod:`jobs.validate_surfaces`) check the tile surfaces.

Tasks return a :class:`TaskResult` (findings and small summaries only) or a :class:`PartitionDigest`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import pyarrow as pa

from segment1b import rng, s9
from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.grid import Grid
from segment1b.identity import RunIdentity
from segment1b.keys import iso_of, iso_u16
from segment1b.rng_events import line_chunks
from segment1b.rng_log_files import HashingReader, form_of_name, open_lines
from segment1b.storage import Storage

from .parameters import RunParameters
from .parts import (CatalogueIndex, log_part_files, merchant_max, merchant_ranges, part_files, parquet_from_bytes,
                    read_catalogue_keys, read_merchant_range)
from .refcache import country_geometry
from .runtime import task_key
from .tiles import RowGroupRef, country_row_groups, iter_country

__all__ = ["TaskResult", "PartitionDigest", "PartJob", "Layout", "published_layout", "read_plan_sample",
           "timed_task", "submit_part_tasks", "submit_plan_tasks", "submit_digest_tasks", "digest_task"]

LABELS = (rng.S5_LABEL, rng.S6_LABEL)
_HASH_CHUNK = 8 * 2**20
S4, S5, S6, S7, S8 = s9.S4, s9.S5, s9.S6, s9.S7, s9.S8


@dataclass(frozen=True)
class TaskResult:
    """What one check task returns: its findings (plain data) and a small summary."""

    #: "tables", a substream label (the event tasks), "plan" or "surface"
    kind: str
    #: the part number (-1 for a plan task, which checks one country)
    part: int
    findings: list[dict[str, Any]]
    summary: dict[str, Any]
    #: the files the task read whole: relative path -> {"sha256_hex", "bytes"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    country: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0


class PartitionDigest(NamedTuple):
    """A partition's digest (contract §1) and each of its files' (relative path -> {sha256_hex, bytes})."""

    partition_path: str
    sha256_hex: str
    files: dict[str, dict[str, Any]]


def timed_task(fn: Callable[..., TaskResult]) -> Callable[..., TaskResult]:
    """Wrap a task so its :class:`TaskResult` carries its own wall and CPU seconds."""

    @functools.wraps(fn)
    def run(*args):
        t0, c0 = time.perf_counter(), time.thread_time()
        result = fn(*args)
        return dataclasses.replace(result, wall_s=time.perf_counter() - t0, cpu_s=time.thread_time() - c0)

    return run


@dataclass(frozen=True)
class PartJob:
    """Recipe of one part check (paths and options only; the task opens the files)."""

    storage: Storage
    part: int
    rels: dict[str, str | None]  # S4-S8 and the two labels -> relative path of the part file
    catalogue_refs: tuple[RowGroupRef, ...] | None  # None: no catalogue to compare with
    requirements_refs: tuple[RowGroupRef, ...] | None  # s3_requirements row groups; None: not published
    lo: int
    hi: int
    grid: Grid
    countries_sha256: str
    expect: s9.Expect
    master: bytes


# ---------------------------------------------------------------------------------------------------------
# what is published


@dataclass(frozen=True)
class Layout:
    """The published partitions S9 checks and their merchant-major parts."""

    #: S4-S8 and the two event labels (when the run_id is known) -> partition path
    rels: dict[str, str]
    #: the same names -> part number -> part file (empty when not published)
    parts: dict[str, dict[int, str]]
    #: every part number, and the merchant range (lo, hi) of each
    indices: list[int]
    ranges: list[tuple[int, int]]
    catalogue_rel: str
    catalogue: CatalogueIndex | None
    requirements_rel: str
    requirements: CatalogueIndex | None
    #: event label -> the form of its published parts ("zstd" or "plain", :mod:`segment1b.rng_log_files`)
    log_forms: dict[str, str] = field(default_factory=dict)


def published_layout(storage: Storage, ident: RunIdentity, findings: s9.Findings) -> Layout:
    """Find the parts of S4-S8 and of both event logs; every missing or stray file is a finding."""
    rels = {ds: path_for(ds, **ident.tokens) for ds in (S4, S5, S6, S7)}
    rels[S8] = path_for(S8, seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    if ident.run_id:
        for label in LABELS:
            rels[label] = path_for("rng_events", substream_label=label, **ident.log_tokens)
    parts: dict[str, dict[int, str]] = {}
    log_forms: dict[str, str] = {}
    for name, rel in rels.items():
        if not storage.is_published(rel):
            findings.add("files", "E901_ROW_MISSING", f"{name} is not published", 1, [{"path": rel}])
            parts[name] = {}
            continue
        if name in LABELS:  # one form per log: parts of the other form are strays
            log_forms[name], parts[name], others = log_part_files(storage, rel)
            suffix = "jsonl.zst" if log_forms[name] == "zstd" else "jsonl"
        else:
            suffix = "parquet"
            parts[name], others = part_files(storage, rel, suffix)
        findings.add("files", "E902_ROW_EXTRA", f"{name} holds files that are not part-NNNNN.{suffix}",
                     len(others), [{"path": p} for p in others])
    indices = sorted(set().union(*(set(p) for p in parts.values()))) or [0]
    for name, by_index in parts.items():
        if storage.is_published(rels[name]):
            missing = [i for i in indices if i not in by_index]
            findings.add("files", "E901_ROW_MISSING", f"{name} misses part files that other datasets have",
                         len(missing), [{"path": rels[name], "part": i} for i in missing])
    cat_rel = path_for("outlet_catalogue", seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    catalogue = CatalogueIndex(storage, cat_rel) if storage.is_published(cat_rel) else None
    if catalogue is None:
        findings.add("catalogue_coverage", "E901_ROW_MISSING", "the outlet catalogue is not published, so "
                     "coverage cannot be checked", 1, [{"path": cat_rel}])
    s3_rel = path_for("s3_requirements", **ident.tokens)
    requirements = (CatalogueIndex(storage, s3_rel, "s3_requirements") if storage.is_published(s3_rel)
                    else None)
    if requirements is None:
        findings.add("row_counts", "E901_ROW_MISSING", "s3_requirements is not published, so its n_sites cannot "
                     "be compared", 1, [{"path": s3_rel}])
    return Layout(rels, parts, indices, merchant_ranges(_part_maxima(storage, parts, indices)), cat_rel,
                  catalogue, s3_rel, requirements, log_forms)


def _part_maxima(storage: Storage, parts: dict[str, dict[int, str]], indices: list[int]) -> list[int | None]:
    """The largest merchant of each part, from the first dataset that has it (footer statistics)."""
    maxima = []
    for i in indices:
        mx = None
        for ds in (S8, S7, S5, S6):
            if i in parts.get(ds, {}):
                mx = merchant_max(storage, parts[ds][i], ds)
                if mx is not None:
                    break
        maxima.append(mx)
    return maxima


def read_plan_sample(storage: Storage, layout: Layout, ident: RunIdentity, size: int
                     ) -> tuple[int | None, list[tuple[int, str, int]]]:
    """Σ n_sites of ``s3_requirements`` (None when not published) and the pairs whose plans S9 recomputes
    (:class:`segment1b.s9.PlanSample`), as sorted (merchant_id, ISO, n_sites).  One pass over the three
    columns, one file at a time."""
    if layout.requirements is None:
        return None, []
    sample = s9.PlanSample(size, seed=ident.seed, manifest_fingerprint=ident.manifest_fingerprint)
    total = 0
    for part in storage.parquet_parts(layout.requirements_rel):
        t = storage.read_parquet(part, ["merchant_id", "legal_country_iso", "n_sites"],
                                 dataset_id="s3_requirements")
        n = np.asarray(t["n_sites"].to_numpy(), np.int64)
        total += int(n.sum())
        sample.add(np.asarray(t["merchant_id"].to_numpy(), np.uint64), iso_u16(t["legal_country_iso"]), n)
    return total, sample.pairs()


# ---------------------------------------------------------------------------------------------------------
# part tasks


def _read_tables(storage: Storage, rels: dict[str, str | None], datasets, findings: s9.Findings | None,
                 files: dict[str, dict[str, Any]] | None, part: int) -> dict[str, Any]:
    """Read part files once each (hashing them when ``files`` is given); unreadable -> None (+ a finding)."""
    tables: dict[str, Any] = {}
    for ds in datasets:
        rel = rels.get(ds)
        tables[ds] = None
        if rel is None:
            continue
        data = storage.read_bytes(rel)
        if files is not None:
            files[rel] = {"sha256_hex": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        try:
            tables[ds] = parquet_from_bytes(data)
        except Exception as exc:  # any decoding failure of a published file is a finding, not a crash
            if findings is not None:
                findings.add("files", "E904_EGRESS_SCHEMA", f"{ds} part is not readable Parquet", 1,
                             [{"part": part, "path": rel, "error": f"{type(exc).__name__}: {exc}"[:300]}])
    return tables


def _geometries(job: PartJob, isos) -> dict[str, Any]:
    out = {}
    for iso in sorted(isos):
        try:
            out[iso] = country_geometry(job.storage, job.countries_sha256, iso)
        except InputError:
            out[iso] = None
    return out


def tables_task(job: PartJob) -> TaskResult:
    """Task ``s9-tables-NNN``: the dataset checks of one part (tables, coverage, geometry, plan quotas)."""
    import pyarrow.compute as pc

    findings = s9.Findings()
    files: dict[str, dict[str, Any]] = {}
    tables = _read_tables(job.storage, job.rels, s9.DATASETS + (S4,), findings, files, job.part)
    catalogue = None
    if job.catalogue_refs is not None:
        catalogue = read_catalogue_keys(job.storage, list(job.catalogue_refs), job.lo, job.hi)
    t7 = tables.get(S7)
    isos = set()
    if t7 is not None and "legal_country_iso" in t7.column_names:
        isos = {v for v in pc.unique(t7["legal_country_iso"]).to_pylist() if isinstance(v, str)}
    summary = s9.check_part_tables(job.part, tables, catalogue, _geometries(job, isos), job.grid, job.expect,
                                   findings)
    requirements = None
    if job.requirements_refs is not None:
        requirements = read_merchant_range(job.storage, list(job.requirements_refs), job.lo, job.hi,
                                           ["merchant_id", "legal_country_iso", "n_sites"], "s3_requirements")
    summary["plan"] = s9.check_part_plan(job.part, tables.get(S4), tables.get(S5), requirements, findings)
    return TaskResult("tables", job.part, findings.to_list(), summary, files)


def events_task(job: PartJob, label: str) -> TaskResult:
    """Task ``s9-rng5-NNN`` / ``s9-rng6-NNN``: RNG accounting of one part's event file (either form).

    The file is read once: its bytes are hashed for the manifest as they are decompressed (``.jsonl.zst``)
    and cut into chunks of whole lines, parsed chunk by chunk.  A part that cannot be read back (a truncated
    or corrupt zstd stream, lines that are not event JSON) is an ``E907_RNG_BUDGET`` finding naming it.
    """
    findings = s9.Findings()
    rel = job.rels[label]
    form = form_of_name(rel) or "plain"
    ds = S5 if label == rng.S5_LABEL else S6
    table = _read_tables(job.storage, job.rels, [ds], None, None, job.part)[ds]
    check = "rng_s5" if label == rng.S5_LABEL else "rng_s6"
    with job.storage.fs.open(job.storage.abspath(rel), "rb") as fh:
        raw = HashingReader(fh)
        try:
            events = s9.parse_events(line_chunks(open_lines(raw, form)), label, job.expect)
            problem = None
        except OSError as exc:  # Arrow's zstd stream: "Truncated compressed stream", "Corrupted block ..."
            problem = (f"{label} event part is not a complete zstd stream (truncated or corrupt)", exc)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = (f"{label} event log is not valid event JSON lines", exc)
        if problem is not None:
            for _ in iter(lambda: raw.read(_HASH_CHUNK), b""):  # the whole file's digest, for the manifest
                pass
    if problem is not None:
        findings.add(check, "E907_RNG_BUDGET", problem[0], 1,
                     [{"part": job.part, "path": rel, "form": form, "error": str(problem[1])[:300]}])
        summary = {"events": 0, "draws": 0, "blocks": 0, "run_ids": [], "unreadable": True}
    else:
        codes = np.unique(events.columns["legal_country_iso"]) if label == rng.S6_LABEL else []
        isos = {iso_of(c) for c in codes}
        summary = s9.check_part_events(job.part, events, table, _geometries(job, isos), job.grid, job.expect,
                                       job.master, findings)
    size = job.storage.fs.size(job.storage.abspath(rel))
    return TaskResult(label, job.part, findings.to_list(), summary, {rel: {"sha256_hex": raw.digest.hexdigest(),
                                                                          "bytes": size}})


def submit_part_tasks(storage: Storage, client, layout: Layout, params: RunParameters, expect: s9.Expect,
                      tok: str, futures: dict[str, Any], stages: dict[str, str]) -> None:
    """One ``s9-tables-NNN`` task per part and one per event file, largest first.

    The long JSON parses of a part run in parallel with other work, so each event log gets its own task.
    """
    master = rng.master_material(expect.seed, expect.manifest_fingerprint)
    for i, (lo, hi) in zip(layout.indices, layout.ranges):
        job = PartJob(storage, i, {name: layout.parts[name].get(i) for name in layout.parts},
                      _refs(layout.catalogue, lo, hi), _refs(layout.requirements, lo, hi), lo, hi,
                      params.grid, params.countries_sha256, expect, master)
        size = sum(storage.fs.size(storage.abspath(job.rels[d])) for d in s9.DATASETS if job.rels.get(d))
        key = task_key("s9", "tables", None, i, tok)
        futures[key] = client.submit(timed_task(tables_task), job, key=key, priority=int(size))
        stages[key] = "s9 tables"
        for label, action in ((rng.S5_LABEL, "rng5"), (rng.S6_LABEL, "rng6")):
            if job.rels.get(label) is None:
                continue
            key = task_key("s9", action, None, i, tok)
            size = storage.fs.size(storage.abspath(job.rels[label]))
            futures[key] = client.submit(timed_task(events_task), job, label, key=key, priority=int(size))
            stages[key] = f"s9 {action}"


def _refs(index: CatalogueIndex | None, lo: int, hi: int) -> tuple[RowGroupRef, ...] | None:
    return tuple(index.refs(lo, hi)) if index is not None else None


# ---------------------------------------------------------------------------------------------------------
# the S4 plan of the sampled pairs


def plan_rows_task(storage: Storage, rel: str, pairs: tuple[tuple[int, str], ...]
                   ) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """Task ``s9-planrows-NNN``: the published S4 rows (tile_id, n_sites_tile) of the sampled pairs of one
    part, so each part file is read once however many countries' samples it holds."""
    import pyarrow.compute as pc

    try:
        p = storage.read_parquet(rel, ["merchant_id", "legal_country_iso", "tile_id", "n_sites_tile"],
                                 dataset_id=S4)
    except Exception:  # an unreadable or malformed part is the tables task's finding
        return {}
    p = p.filter(pc.is_in(p["merchant_id"], pa.array(sorted({m for m, _ in pairs}), pa.uint64())))
    mid = np.asarray(p["merchant_id"].to_numpy(), np.uint64)
    iso = np.asarray(p["legal_country_iso"].to_numpy(zero_copy_only=False))
    tid = np.asarray(p["tile_id"].to_numpy(), np.uint64)
    cnt = np.asarray(p["n_sites_tile"].to_numpy(), np.int64)
    out = {}
    for m, c in pairs:
        sel = (mid == np.uint64(m)) & (iso == c)
        out[(m, c)] = (tid[sel], cnt[sel])
    return out


def plan_task(storage: Storage, country_iso: str, weight_refs: tuple[RowGroupRef, ...],
              pairs: tuple[tuple[int, int], ...], *published_parts: dict) -> TaskResult:
    """Task ``s9-plan-<ISO>``: the sampled pairs' published plans against a recomputation over every tile.

    ``pairs``: (merchant_id, n_sites from S3); ``published_parts``: results of the ``s9-planrows`` tasks of the
    parts that hold them.
    """
    findings = s9.Findings()
    # all of the country's tiles with weight_fp > 0 (the others take no part), one row group at a time
    tiles, weights = [], []
    for t in iter_country(storage, list(weight_refs), country_iso, ["tile_id", "weight_fp"], "tile_weights"):
        w = np.asarray(t["weight_fp"].to_numpy(), np.uint64)
        keep = np.flatnonzero(w)
        tiles.append(np.asarray(t["tile_id"].to_numpy(), np.uint64)[keep])
        weights.append(w[keep])
    tile_id = np.concatenate(tiles) if tiles else np.empty(0, np.uint64)
    weight_fp = np.concatenate(weights) if weights else np.empty(0, np.uint64)
    del tiles, weights
    # dp from the first row group (S4 refuses a country whose weights mix dp values: E105)
    first = next(iter_country(storage, list(weight_refs[:1]), country_iso, ["dp"], "tile_weights"), None)
    dp = int(first["dp"][0].as_py()) if first is not None and first.num_rows else 0
    published = {k: v for rows in published_parts for k, v in rows.items()}
    empty = (np.empty(0, np.uint64), np.empty(0, np.int64))
    summary = s9.check_plan_recompute(
        country_iso, tile_id, weight_fp, dp,
        ({"merchant_id": m, "n_sites": n, "tile_id": published.get((m, country_iso), empty)[0],
          "n_sites_tile": published.get((m, country_iso), empty)[1]} for m, n in pairs), findings)
    return TaskResult("plan", -1, findings.to_list(), summary, country=country_iso)


def submit_plan_tasks(storage: Storage, client, sample: list[tuple[int, str, int]], layout: Layout,
                      parameter_hash: str, tok: str, futures: dict[str, Any], stages: dict[str, str],
                      findings: s9.Findings) -> int:
    """One ``s9-planrows-NNN`` task per S4 part holding sampled pairs and one ``s9-plan-<ISO>`` task per
    country of the sample (largest countries first); returns the number of sampled pairs."""
    if not sample:
        return 0
    try:
        refs = country_row_groups(storage, "tile_weights", parameter_hash)
    except InputError as exc:
        findings.add("plan_recompute", "E101_TILE_INDEX_MISSING", "tile_weights is not published, so no plan "
                     "can be recomputed", 1, [{"path": exc.path}])
        return 0
    s4_parts = layout.parts.get(S4, {})
    highs = np.array([hi for _, hi in layout.ranges], dtype=np.uint64)
    by_iso: dict[str, list[tuple[int, int]]] = defaultdict(list)
    parts_of_iso: dict[str, set[int]] = defaultdict(set)
    by_part: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for m, iso, n in sample:
        by_iso[iso].append((m, n))
        p = int(np.searchsorted(highs, np.uint64(m)))  # ranges cover u64 in order
        if p < len(layout.indices) and layout.indices[p] in s4_parts:
            by_part[layout.indices[p]].append((m, iso))
            parts_of_iso[iso].add(layout.indices[p])
    rows = {i: client.submit(plan_rows_task, storage, s4_parts[i], tuple(pairs),
                             key=task_key("s9", "planrows", None, i, tok), priority=2**41)
            for i, pairs in sorted(by_part.items())}
    for iso, pairs in sorted(by_iso.items()):
        country_refs = tuple(refs.get(iso, ()))
        key = task_key("s9", "plan", iso, None, tok)
        futures[key] = client.submit(timed_task(plan_task), storage, iso, country_refs, tuple(pairs),
                                     *(rows[i] for i in sorted(parts_of_iso[iso])), key=key,
                                     priority=2**40 + sum(len(r.row_groups) for r in country_refs))
        stages[key] = "s9 plan"
    return len(sample)


# ---------------------------------------------------------------------------------------------------------
# partition digests


def digest_task(storage: Storage, rel: str) -> PartitionDigest:
    """Task ``s9-digest-NNN``: a partition's digest and each of its files' (one read of every byte)."""
    whole = hashlib.sha256()
    files = {}
    for name in storage.list_files(rel):
        h = hashlib.sha256()
        size = 0
        with storage.fs.open(storage.abspath(rel + name), "rb") as fh:
            for chunk in iter(lambda: fh.read(8 * 2**20), b""):
                whole.update(chunk)
                h.update(chunk)
                size += len(chunk)
        files[rel + name] = {"sha256_hex": h.hexdigest(), "bytes": size}
    return PartitionDigest(rel, whole.hexdigest(), files)


def submit_digest_tasks(storage: Storage, client, targets: dict[str, str | None], tok: str,
                        futures: dict[str, Any], stages: dict[str, str]) -> None:
    """One ``s9-digest-NNN`` task per published partition of ``targets`` (dataset -> partition path)."""
    for n, (name, rel) in enumerate(sorted(targets.items())):
        if rel is None or not storage.is_published(rel):
            continue
        key = task_key("s9", "digest", None, n, tok)
        futures[key] = client.submit(digest_task, storage, rel, key=key, priority=-1)
        stages[key] = "s9 digest"
