"""Generate a synthetic outlet catalogue with its upstream PASS bundle (issue #4).

``segment1b generate --data-root D --scale NAME --seed N`` writes

- ``outlet_catalogue`` at ``seed=N/fingerprint=F/``: one ``part-NNNNN.parquet`` per generator block (≤ 2^18
  merchants, ≈ 500 k rows), blocks generated in parallel on the Dask client (tasks
  ``gen-catalogue-NNN-<token>``), staged and published write-once;
- ``validation_bundle_1A`` at ``fingerprint=F/``: ``MANIFEST.json`` (generator parameters and country
  table), ``egress_checksums.json`` (digest of the catalogue partition and of each part), ``summary.json``
  (counts, per-country totals), ``index.json`` and ``_passed.flag``; so S0 exercises the real gate.

``F`` = SHA-256 of the canonical generator parameters (scale, merchants, seed, generator version, digest of
the country table).  Rerunning the same command is a no-op once both are published and check out.

Countries (where merchants and outlets may be) and their population, in order of precedence:

1. ``--countries-csv FILE`` (columns ``country_iso,population``);
2. population summed from the GeoNames places (:func:`segment1b.refdata.default_places`), over
   the countries of the prepared ``tile_weights`` (``--parameter-hash``, or the only one published under
   the data root) so every country with sites has weights (S3 fails with E303 otherwise), leaving out the
   countries whose weights are a ``zero_mass_fallback`` (:func:`catalogue_countries`);
3. the same population over the reference polygons' countries (:func:`segment1b.refdata.default_countries`).

With ``--countries-csv`` and a ``--parameter-hash``, the CSV's countries are restricted to those with weights.

Why fallback countries are left out of generated catalogues: under the ``population_proxy`` basis a tile
whose land share is below ``min_land_share`` gets weight 0, so S6 (64 attempts to land inside the country)
cannot exhaust its attempts on a coastal sliver (chance ``0.75**64 ~ 1e-8`` per site at worst).  A country
whose *every* tile is such a sliver (an island smaller than a cell at this grid, e.g. Macau at 5') ends with
zero mass and the contract's uniform fallback, so its sites would land on slivers and a large catalogue
would hit ``E613_RESAMPLE_EXHAUSTED``.  Leaving those countries out makes the default ``run`` safe by
construction; a user catalogue with sites there still runs (and may legitimately fail with E613).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segment1b.bundle import EGRESS_CHECKSUMS_NAME, FLAG_NAME, INDEX_NAME, UPSTREAM, build_bundle, verify_bundle
from segment1b.contracts import dataset, path_for
from segment1b.errors import InputError
from segment1b.generator import (GENERATOR_VERSION, SCALES, Block, CountryTable, generate_block,
                                 generator_parameters, manifest_fingerprint, plan_blocks)
from segment1b.lease import Lease, sweep_when_idle
from segment1b.s0_gate import recorded_partition_digest
from segment1b.storage import StagedFile, Storage, part_name, write_parquet_bytes

from .runtime import Timing, gather, task_key, timed, token_of

__all__ = ["run_generate", "generate_part", "GeneratedPart", "resolve_countries", "countries_from_places",
           "countries_with_tiles",
           "tile_weight_countries", "catalogue_countries", "register"]

# sorted uint64 ids: delta encoding is faster to write and ~25 % smaller than dictionary/plain (measured)
ENCODINGS = {"merchant_id": "DELTA_BINARY_PACKED"}


@dataclass(frozen=True)
class GeneratedPart:
    """What a generator task wrote (part file name, size, SHA-256) and its block's counts (small)."""

    index: int
    part: str
    bytes: int
    sha256_hex: str
    rows: int
    pairs: int
    merchants: int
    multi_country_merchants: int
    max_pair_sites: int
    pairs_over_24: int
    merchant_ids_ge_2_63: int
    sites_by_country: np.ndarray = field(repr=False)
    pairs_by_country: np.ndarray = field(repr=False)
    timing: Timing = Timing()


def generate_part(storage: Storage, staging: str, block: Block, *, seed: int, countries: CountryTable,
                  fingerprint: str) -> GeneratedPart:
    """Task: generate one block and write it as part ``block.index``; return its counts (small)."""
    import hashlib

    g = generate_block(block, seed=seed, countries=countries, manifest_fingerprint=fingerprint)
    data = write_parquet_bytes(g.table, dataset("outlet_catalogue"), encodings=ENCODINGS)
    name = part_name(block.index)
    storage.write_part(staging, name, data)
    return GeneratedPart(block.index, name, len(data), hashlib.sha256(data).hexdigest(), g.rows, g.pairs,
                         g.merchants, g.multi_country_merchants, g.max_pair_sites, g.pairs_over_24,
                         g.merchant_ids_ge_2_63, g.sites_by_country, g.pairs_by_country)


def run_generate(storage: Storage, client, countries: CountryTable, *, scale: str, seed: int, out=None,
                 show: bool = True) -> dict[str, Any]:
    """Generate and publish an outlet catalogue and its PASS bundle.

    Parameters
    ----------
    storage : Storage
        The data root.
    client : distributed.Client or None
        Blocks become tasks on this client; ``None`` generates them one by one in this process.
    countries : CountryTable
        Eligible countries with population.
    scale : str
        One of :data:`segment1b.generator.SCALES`.
    seed : int
        u64 seed.
    out : text stream, optional
        Progress and result lines (``None``: stdout).
    show : bool
        Show the progress bar.

    Returns
    -------
    dict
        ``manifest_fingerprint``, ``seed``, ``status`` (``generated`` or ``exists``), partition paths, digests
        and the counts of ``summary.json``.

    Raises
    ------
    InputError
        ``E309_VALUE_RANGE`` for an unknown scale or a seed outside u64.
    PublishError
        ``E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL`` when different data is already published there.
    """
    out = out if out is not None else sys.stdout
    t0 = time.perf_counter()
    params = generator_parameters(scale, seed, countries)
    fp = manifest_fingerprint(params)
    target = path_for("outlet_catalogue", seed=seed, manifest_fingerprint=fp)
    bundle = path_for("validation_bundle_1A", manifest_fingerprint=fp)
    scope = path_for("lease_catalogue", manifest_fingerprint=fp)
    existing = _existing(storage, target, bundle, fp)
    if existing is not None:
        sweep_when_idle(storage, scope, target, bundle)  # staging left by a killed run, if any
        return _exists(existing, scale, seed, t0, out)
    # one run generates a fingerprint at a time: the others wait here, then find it published (issue 14)
    with storage.lease(scope, out=out) as lease:
        existing = _existing(storage, target, bundle, fp)
        if existing is not None:
            return _exists(existing, scale, seed, t0, out)
        lease.sweep(target, bundle)  # staging of dead attempts: under the lease nobody else is alive
        return _generate_leased(storage, client, lease, countries, params, target, bundle, t0, out=out, show=show)


def _exists(existing: dict[str, Any], scale: str, seed: int, t0: float, out) -> dict[str, Any]:
    print(f"  outlet_catalogue {existing['manifest_fingerprint'][:12]}... (scale {scale}, seed {seed}) is already "
          "published and passes its bundle: nothing to do", file=out)
    return {**existing, "status": "exists", "wall_seconds": round(time.perf_counter() - t0, 3)}


def _generate_leased(storage: Storage, client, lease: Lease, countries: CountryTable, params: dict[str, Any],
                     target: str, bundle: str, t0: float, *, out, show: bool) -> dict[str, Any]:
    """Generate the blocks and publish the catalogue and its bundle, under the lease of the fingerprint."""
    seed, scale, fp = params["seed"], params["scale"], manifest_fingerprint(params)
    blocks = plan_blocks(params["merchants"])
    token = token_of("generate", storage.root_url, fp, lease.attempt)  # keys of this attempt only
    staging = lease.staging_path(target)  # this attempt's: no other run writes into it or removes it
    task = timed(generate_part)
    if client is None:
        results = [task(storage, staging, b, seed=seed, countries=countries, fingerprint=fp) for b in blocks]
    else:
        futures = {task_key("gen", "catalogue", index=b.index, token=token):
                   client.submit(task, storage, staging, b, seed=seed, countries=countries, fingerprint=fp,
                                 key=task_key("gen", "catalogue", index=b.index, token=token), priority=-b.index)
                   for b in blocks}
        try:
            done = gather(client, futures, "generate catalogue", out, show=show)
        finally:
            client.cancel(list(futures.values()))  # forget the keys: a rerun must run the tasks again
        results = [done[k] for k in futures]
    results.sort(key=lambda r: r.index)
    digest = storage.publish(staging, target, "outlet_catalogue",
                             expected=[StagedFile(r.part, r.bytes, r.sha256_hex) for r in results])

    summary = _summary(params, fp, countries, results, target, digest)
    files = build_bundle({
        "MANIFEST.json": ("generator_manifest", _json({"manifest_fingerprint": fp, "parameters": params,
                                                       "countries": countries.canonical()})),
        EGRESS_CHECKSUMS_NAME: ("egress_checksums", _json({"partitions": [{
            "dataset": "outlet_catalogue", "partition_path": target, "sha256_hex": digest,
            "files": [{"path": r.part, "sha256_hex": r.sha256_hex, "bytes": r.bytes, "rows": r.rows}
                      for r in results]}]})),
        "summary.json": ("generator_summary", _json(summary)),
    })
    bundle_digest = storage.publish_bytes(files, bundle, "validation_bundle_1A", token)
    wall = time.perf_counter() - t0
    print(f"  outlet_catalogue: {summary['rows']:,} outlets, {summary['pairs']:,} pairs, {summary['merchants']:,} "
          f"merchants, {summary['countries_with_sites']} countries, {len(results)} parts, {wall:.1f} s\n"
          f"  manifest_fingerprint {fp}\n  {storage.url(target)}\n  {storage.url(bundle)} (+ {FLAG_NAME})", file=out)
    return {"status": "generated", "manifest_fingerprint": fp, "seed": int(seed), "scale": scale,
            "catalogue": {"partition_path": target, "sha256_hex": digest},
            "bundle": {"partition_path": bundle, "sha256_hex": bundle_digest}, "summary": summary,
            "wall_seconds": round(wall, 3), "task_seconds": round(sum(r.timing.wall_s for r in results), 3)}


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _summary(params: dict, fp: str, countries: CountryTable, results: list[GeneratedPart], target: str,
             digest: str) -> dict[str, Any]:
    sites = np.sum([r.sites_by_country for r in results], axis=0)
    pairs = np.sum([r.pairs_by_country for r in results], axis=0)

    def total(name: str) -> int:
        return int(sum(getattr(r, name) for r in results))

    return {
        "manifest_fingerprint": fp, "seed": params["seed"], "scale": params["scale"],
        "generator_version": GENERATOR_VERSION, "catalogue_partition_path": target, "catalogue_sha256_hex": digest,
        "parts": len(results), "rows": total("rows"), "pairs": total("pairs"), "merchants": total("merchants"),
        "multi_country_merchants": total("multi_country_merchants"), "pairs_over_24_sites": total("pairs_over_24"),
        "max_pair_sites": max((r.max_pair_sites for r in results), default=0),
        "merchant_ids_ge_2_63": total("merchant_ids_ge_2_63"),
        "eligible_countries": len(countries), "countries_with_sites": int(np.count_nonzero(sites)),
        "by_country": [{"country_iso": c, "pairs": int(p), "sites": int(s)}
                       for c, p, s in zip(countries.iso, pairs, sites) if s],
    }


def _existing(storage: Storage, target: str, bundle: str, fp: str) -> dict[str, Any] | None:
    """The published catalogue and bundle when both exist and the bundle vouches for the catalogue."""
    if not (storage.is_published(target) and storage.is_published(bundle)):
        return None

    def read(path: str) -> bytes:
        rel = posixpath.join(bundle, path)
        if not storage.exists(rel):
            raise FileNotFoundError(path)
        return storage.read_bytes(rel)

    try:
        verify_bundle(read(INDEX_NAME), read(FLAG_NAME), read, rules=UPSTREAM, where=bundle)
        expected = recorded_partition_digest(read(EGRESS_CHECKSUMS_NAME), target)
    except (InputError, FileNotFoundError):
        return None  # regenerate: publishing then settles (same bytes) or refuses (different bytes)
    digest = storage.partition_digest(target)
    if expected != digest:
        return None
    summary = json.loads(read("summary.json"))
    return {"manifest_fingerprint": fp, "seed": summary["seed"], "scale": summary["scale"],
            "catalogue": {"partition_path": target, "sha256_hex": digest},
            "bundle": {"partition_path": bundle, "sha256_hex": storage.partition_digest(bundle)}, "summary": summary}


# -- countries -----------------------------------------------------------------------------------------

def countries_from_places(eligible: list[str] | None = None) -> CountryTable:
    """Population per country from the GeoNames places (summed as integers), over ``eligible`` countries.

    ``eligible=None`` takes the countries of the reference polygons.  Countries without places get
    population 0 (never drawn).
    """
    from segment1b import refdata

    places = refdata.default_places().frame
    pop = places.assign(population=places["population"].round().astype(np.int64)).groupby("country_iso")[
        "population"].sum()
    if eligible is None:
        eligible = list(refdata.default_countries().iso)
    return CountryTable.from_rows((c, int(pop.get(c, 0))) for c in sorted(set(eligible)))


def tile_weight_countries(storage: Storage, parameter_hash: str) -> dict[str, bool]:
    """Every country of a published ``tile_weights`` partition, with its ``zero_mass_fallback`` flag.

    Uses the footers' statistics of ``country_iso`` and ``zero_mass_fallback`` (both are constant within a
    country); only row groups that hold several countries are read (those two columns).

    Raises
    ------
    InputError
        ``E101_TILE_INDEX_MISSING`` when the partition is not published.
    """
    rel = path_for("tile_weights", parameter_hash=parameter_hash)
    if not storage.is_published(rel):
        raise InputError("E101_TILE_INDEX_MISSING", f"tile_weights is not published for parameter_hash "
                         f"{parameter_hash}", dataset="tile_weights", path=storage.url(rel),
                         hint="run `segment1b prepare` first")
    found: dict[str, bool] = {}
    for part in storage.parquet_parts(rel):
        meta = storage.parquet_metadata(part, dataset_id="tile_weights")
        schema = meta.schema.to_arrow_schema()
        col_iso = schema.get_field_index("country_iso")
        col_fb = schema.get_field_index("zero_mass_fallback")
        mixed = []
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            iso, fb = group.column(col_iso).statistics, group.column(col_fb).statistics
            if (iso is not None and iso.has_min_max and iso.min == iso.max
                    and fb is not None and fb.has_min_max and fb.min == fb.max):
                found[iso.min] = found.get(iso.min, False) or bool(fb.max)
            elif group.num_rows:
                mixed.append(rg)
        if mixed:
            t = storage.read_row_groups(part, mixed, ["country_iso", "zero_mass_fallback"], dataset_id="tile_weights")
            flags = t.group_by("country_iso").aggregate([("zero_mass_fallback", "max")])
            for iso, fb in zip(flags.column("country_iso").to_pylist(),
                               flags.column("zero_mass_fallback_max").to_pylist()):
                found[iso] = found.get(iso, False) or bool(fb)
    return found


def countries_with_tiles(storage: Storage, parameter_hash: str) -> set[str]:
    """The exact set of countries in a published ``tile_weights`` partition (:func:`tile_weight_countries`).

    Raises
    ------
    InputError
        ``E101_TILE_INDEX_MISSING`` when the partition is not published.
    """
    return set(tile_weight_countries(storage, parameter_hash))


def catalogue_countries(storage: Storage, parameter_hash: str) -> list[str]:
    """Countries a generated default catalogue may use: weights published and not a zero-mass fallback.

    A fallback country has uniform weights over tiles that are all coastal slivers at this grid, where
    S6 can exhaust its 64 attempts (E613); see the module docstring.

    Raises
    ------
    InputError
        ``E101_TILE_INDEX_MISSING`` when the partition is not published.
    """
    return sorted(c for c, fallback in tile_weight_countries(storage, parameter_hash).items() if not fallback)


def _published_parameter_hashes(storage: Storage) -> list[str]:
    parent = posixpath.dirname(path_for("tile_weights", parameter_hash="0" * 64).rstrip("/"))
    prefix = "parameter_hash="
    names = {p.split("/", 1)[0] for p in storage.list_files(parent)}
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))


def resolve_countries(storage: Storage, *, countries_csv: str | None, parameter_hash: str | None,
                      out=None) -> CountryTable:
    """The generator's country table for the CLI (see the module docstring for the precedence)."""
    out = out if out is not None else sys.stdout
    if parameter_hash is None and countries_csv is None:
        found = _published_parameter_hashes(storage)
        if len(found) == 1:
            parameter_hash = found[0]
        elif len(found) > 1:
            raise InputError("E310_PARAMETER_HASH_MISMATCH", f"{len(found)} tile_weights partitions are published; "
                             "say which one the catalogue is for", rows=[{"parameter_hash": h} for h in found],
                             hint="pass --parameter-hash H (or --countries-csv FILE)")
    weights = tile_weight_countries(storage, parameter_hash) if parameter_hash else None
    if countries_csv is not None:
        import fsspec

        with fsspec.open(countries_csv, "rt", encoding="utf-8") as fh:
            table = CountryTable.from_csv_text(fh.read())
        if weights is not None:
            table = CountryTable.from_rows((c, p) for c, p in zip(table.iso, table.population) if c in weights)
            fallback = [c for c in table.iso if weights[c]]
            if fallback:  # the user's choice: kept, but S6 may fail with E613 there (module docstring)
                print(f"  note: {len(fallback)} countries of {countries_csv} have zero-mass fallback weights "
                      f"(every tile a coastal sliver at this grid): {', '.join(fallback)}", file=out)
        source = countries_csv
    else:
        eligible = sorted(c for c, fb in weights.items() if not fb) if weights is not None else None
        table = countries_from_places(eligible)
        source = "GeoNames places over " + (
            f"tile_weights {parameter_hash[:12]}... (without {len(weights) - len(eligible)} zero-mass fallback "
            "countries)" if weights is not None else "the reference polygons")
    print(f"  countries: {len(table)} from {source}", file=out)
    return table


# -- command line --------------------------------------------------------------------------------------

def register(subparsers) -> None:
    """``segment1b generate``: a synthetic outlet catalogue with its PASS bundle."""
    from jobs import argtypes
    from jobs.session import add_cluster_options, add_lease_options, add_root_options

    p = subparsers.add_parser("generate", help="generate a synthetic outlet catalogue (+ upstream PASS bundle)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_root_options(p)
    p.add_argument("--scale", default="reference", choices=list(SCALES),
                   help="catalogue size: " + ", ".join(f"{k} ({v:,} merchants)" for k, v in SCALES.items()))
    p.add_argument("--seed", type=argtypes.seed, required=True, help="u64 seed (also the catalogue's global_seed)")
    p.add_argument("--countries-csv", default=None, metavar="FILE",
                   help="countries and population (columns country_iso,population); default: GeoNames places")
    p.add_argument("--parameter-hash", type=argtypes.hex64, default=None, metavar="HEX64",
                   help="only countries with tile weights under this parameter_hash (default: the only one "
                        "published, if any)")
    p.add_argument("--in-process", action="store_true",
                   help="generate in this process, without a Dask cluster (fine up to x10)")
    add_lease_options(p)
    add_cluster_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace, out=None) -> int:
    from jobs.session import open_session, storage_from_args

    storage = storage_from_args(args)
    countries = resolve_countries(storage, countries_csv=args.countries_csv, parameter_hash=args.parameter_hash,
                                  out=out)
    if args.in_process:
        run_generate(storage, None, countries, scale=args.scale, seed=args.seed, out=out)
        return 0
    with open_session(args, out=out) as (storage, client):
        run_generate(storage, client, countries, scale=args.scale, seed=args.seed, out=out)
    return 0
