"""The dataset dictionary: every dataset id, its path template, partition keys, writer sort and schema.

This is the only place where paths are spelled (../shared/CONTRACTS.md §1-§2).  Everything else renders
paths with :func:`path_for`, so a path template change is one edit here.
"""

from __future__ import annotations

import csv
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pyarrow as pa

from .errors import InputError

__all__ = [
    "DatasetSpec", "DATASETS", "dataset", "path_for", "report_path", "iso_table", "check_token",
    "TOKEN_PATTERNS", "SUBSTREAM_LABELS", "INCLUSION_RULES",
]

ISO2 = pa.string()

SUBSTREAM_LABELS = ("site_tile_assign", "in_cell_jitter")
INCLUSION_RULES = ("center",)

TOKEN_PATTERNS: dict[str, re.Pattern[str]] = {
    "seed": re.compile(r"^(0|[1-9][0-9]{0,19})$"),
    "manifest_fingerprint": re.compile(r"^[0-9a-f]{64}$"),
    "parameter_hash": re.compile(r"^[0-9a-f]{64}$"),
    "run_id": re.compile(r"^[0-9a-f]{32}$"),
    "substream_label": re.compile(r"^(" + "|".join(SUBSTREAM_LABELS) + r")$"),
    "state": re.compile(r"^s[0-9]$"),
    "countries_sha256": re.compile(r"^[0-9a-f]{64}$"),
    "attempt": re.compile(r"^[0-9a-f]{16}$"),
}


def check_token(name: str, value: object) -> str:
    """Render an identity token as it appears in paths, refusing malformed values.

    >>> check_token("seed", 42)
    '42'
    """
    text = str(value)
    pattern = TOKEN_PATTERNS[name]
    if not pattern.match(text) or (name == "seed" and int(text) >= 2**64):
        raise InputError("E309_VALUE_RANGE", f"{name}={text!r} does not match {pattern.pattern}"
                         + (" (u64)" if name == "seed" else ""))
    return text


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the dataset dictionary."""

    id: str
    template: str
    kind: str  # "parquet" | "json" | "jsonl" | "bundle" | "lock"
    writer_sort: tuple[str, ...] = ()
    schema: pa.Schema | None = None
    primary_key: tuple[str, ...] = ()

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.template) if f)

    def path(self, **tokens: object) -> str:
        """Render the relative path; every token of the template is required and validated."""
        missing = [t for t in self.tokens if t not in tokens]
        extra = [t for t in tokens if t not in self.tokens]
        if missing or extra:
            raise TypeError(f"{self.id}: path needs tokens {list(self.tokens)}; missing {missing}, unexpected {extra}")
        return self.template.format(**{k: check_token(k, v) for k, v in tokens.items()})


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ, nullable=False) for name, typ in fields])


_SEED_FP_PH = "seed={seed}/fingerprint={manifest_fingerprint}/parameter_hash={parameter_hash}/"
_SITE_KEY = ("merchant_id", "legal_country_iso", "site_order")

DATASETS: dict[str, DatasetSpec] = {s.id: s for s in [
    DatasetSpec(
        "outlet_catalogue", "data/layer1/1A/outlet_catalogue/seed={seed}/fingerprint={manifest_fingerprint}/",
        "parquet", _SITE_KEY,
        _schema(("manifest_fingerprint", pa.string()), ("merchant_id", pa.uint64()), ("site_id", pa.string()),
                ("home_country_iso", ISO2), ("legal_country_iso", ISO2), ("single_vs_multi_flag", pa.bool_()),
                ("raw_nb_outlet_draw", pa.int32()), ("final_country_outlet_count", pa.int32()),
                ("site_order", pa.int32()), ("global_seed", pa.uint64())),
        _SITE_KEY),
    DatasetSpec("validation_bundle_1A", "data/layer1/1A/validation/fingerprint={manifest_fingerprint}/", "bundle"),
    DatasetSpec("s0_gate_receipt_1B",
                "data/layer1/1B/s0_gate_receipt/fingerprint={manifest_fingerprint}/s0_gate_receipt.json", "json"),
    DatasetSpec(
        "tile_index", "data/layer1/1B/tile_index/parameter_hash={parameter_hash}/", "parquet",
        ("country_iso", "tile_id"),
        _schema(("country_iso", ISO2), ("tile_id", pa.uint64()), ("inclusion_rule", pa.string()),
                ("raster_row", pa.uint32()), ("raster_col", pa.uint32()), ("centroid_lon", pa.float64()),
                ("centroid_lat", pa.float64()), ("pixel_area_m2", pa.float64())),
        ("country_iso", "tile_id")),
    DatasetSpec(
        "tile_bounds", "data/layer1/1B/tile_bounds/parameter_hash={parameter_hash}/", "parquet",
        ("country_iso", "tile_id"),
        _schema(("country_iso", ISO2), ("tile_id", pa.uint64()), ("west_lon", pa.float64()),
                ("east_lon", pa.float64()), ("south_lat", pa.float64()), ("north_lat", pa.float64())),
        ("country_iso", "tile_id")),
    DatasetSpec(
        "tile_weights", "data/layer1/1B/tile_weights/parameter_hash={parameter_hash}/", "parquet",
        ("country_iso", "tile_id"),
        _schema(("country_iso", ISO2), ("tile_id", pa.uint64()), ("weight_fp", pa.uint64()),
                ("dp", pa.uint32()), ("zero_mass_fallback", pa.bool_())),
        ("country_iso", "tile_id")),
    DatasetSpec(
        "s3_requirements", "data/layer1/1B/s3_requirements/" + _SEED_FP_PH, "parquet",
        ("merchant_id", "legal_country_iso"),
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("n_sites", pa.int64())),
        ("merchant_id", "legal_country_iso")),
    DatasetSpec(
        "s4_alloc_plan", "data/layer1/1B/s4_alloc_plan/" + _SEED_FP_PH, "parquet",
        ("merchant_id", "legal_country_iso", "tile_id"),
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("tile_id", pa.uint64()),
                ("n_sites_tile", pa.int64())),
        ("merchant_id", "legal_country_iso", "tile_id")),
    DatasetSpec(
        "s5_site_tile_assignment", "data/layer1/1B/s5_site_tile_assignment/" + _SEED_FP_PH, "parquet", _SITE_KEY,
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("site_order", pa.int64()),
                ("tile_id", pa.uint64())),
        _SITE_KEY),
    DatasetSpec(
        "s6_site_jitter", "data/layer1/1B/s6_site_jitter/" + _SEED_FP_PH, "parquet", _SITE_KEY,
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("site_order", pa.int64()),
                ("tile_id", pa.uint64()), ("delta_lat_deg", pa.float64()), ("delta_lon_deg", pa.float64()),
                ("manifest_fingerprint", pa.string())),
        _SITE_KEY),
    DatasetSpec(
        "s7_site_synthesis", "data/layer1/1B/s7_site_synthesis/" + _SEED_FP_PH, "parquet", _SITE_KEY,
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("site_order", pa.int64()),
                ("tile_id", pa.uint64()), ("lon_deg", pa.float64()), ("lat_deg", pa.float64())),
        _SITE_KEY),
    DatasetSpec(
        "site_locations", "data/layer1/1B/site_locations/seed={seed}/fingerprint={manifest_fingerprint}/",
        "parquet", _SITE_KEY,
        _schema(("merchant_id", pa.uint64()), ("legal_country_iso", ISO2), ("site_order", pa.int64()),
                ("lon_deg", pa.float64()), ("lat_deg", pa.float64())),
        _SITE_KEY),
    DatasetSpec("validation_bundle_1B", "data/layer1/1B/validation/fingerprint={manifest_fingerprint}/", "bundle"),
    # failed S9 bundles (no flag), one folder per distinct failure (attempt = first 16 hex of the bundle digest);
    # a sibling tree, so a failure never blocks a later passing bundle at the path above
    DatasetSpec("validation_failed_1B",
                "data/layer1/1B/validation/_failed/fingerprint={manifest_fingerprint}/attempt={attempt}/", "bundle"),
    # re-validations of a published PASS (audits, issue 14): the audit's bundle (no flag), one folder per
    # distinct audit (attempt = first 16 hex of its digest); the PASS bundle above is never touched
    DatasetSpec("validation_audit_1B",
                "data/layer1/1B/validation/_audit/fingerprint={manifest_fingerprint}/attempt={attempt}/",
                "bundle"),
    # RNG logs (§9); deterministic except ts_utc and run_id
    DatasetSpec("rng_events",
                "logs/rng/events/{substream_label}/seed={seed}/parameter_hash={parameter_hash}/run_id={run_id}/",
                "jsonl"),
    DatasetSpec("rng_audit_log",
                "logs/rng/audit/seed={seed}/parameter_hash={parameter_hash}/run_id={run_id}/rng_audit_log.jsonl",
                "jsonl"),
    DatasetSpec("rng_trace_log",
                "logs/rng/trace/seed={seed}/parameter_hash={parameter_hash}/run_id={run_id}/rng_trace_log.jsonl",
                "jsonl"),
    # control plane: run receipt (keeps run_id for resume); the canonical parameters behind a parameter_hash;
    # the cleaned country polygons they name, where every worker can read them (GeoParquet, EPSG:4326)
    DatasetSpec("run_receipt", "control/run/" + _SEED_FP_PH + "run_receipt.json", "json"),
    # what `segment1b run` leaves next to the receipt: summary, Dask performance report, HTML run report
    DatasetSpec("run_folder", "control/run/" + _SEED_FP_PH, "folder"),
    # the latest audit's report, beside the S9 run report (which an audit never replaces)
    DatasetSpec("s9_audit_report", "control/validation_bundle_1B/" + _SEED_FP_PH + "s9_audit_report.json",
                "json"),
    DatasetSpec("parameters", "control/parameters/parameter_hash={parameter_hash}/parameters.json", "json"),
    DatasetSpec("reference_countries",
                "reference/countries/countries_sha256={countries_sha256}/countries.parquet", "geoparquet"),
    # leases (issue 14, segment1b/lease.py): one writer per scope at a time.  tiles: what `prepare` publishes
    # for a parameter_hash; catalogue: what `generate` publishes for a fingerprint; segment: S0 and S3-S9 of a
    # fingerprint (site_locations and the S9 bundle are shared by its parameter hashes)
    DatasetSpec("lease_tiles", "control/lease/tiles/parameter_hash={parameter_hash}.lock", "lock"),
    DatasetSpec("lease_catalogue", "control/lease/catalogue/fingerprint={manifest_fingerprint}.lock", "lock"),
    DatasetSpec("lease_segment", "control/lease/segment/fingerprint={manifest_fingerprint}.lock", "lock"),
]}

# sN -> dataset id whose run report it is (§11)
STATE_DATASETS: dict[str, str] = {
    "s0": "s0_gate_receipt_1B", "s1": "tile_index", "s2": "tile_weights", "s3": "s3_requirements",
    "s4": "s4_alloc_plan", "s5": "s5_site_tile_assignment", "s6": "s6_site_jitter", "s7": "s7_site_synthesis",
    "s8": "site_locations", "s9": "validation_bundle_1B",
}


def dataset(dataset_id: str) -> DatasetSpec:
    """Look up a dataset; the error lists the ids that exist."""
    try:
        return DATASETS[dataset_id]
    except KeyError:
        raise KeyError(f"unknown dataset id {dataset_id!r}; known: {sorted(DATASETS)}") from None


def path_for(dataset_id: str, **tokens: object) -> str:
    """Relative path of a dataset partition (folder ends with '/') or file, rendered from the dictionary."""
    return dataset(dataset_id).path(**tokens)


def report_path(state: str, **tokens: object) -> str:
    """Relative path of state ``sN``'s run report (§11): S1/S2 by parameter_hash, the others by run identity."""
    check_token("state", state)
    ds = STATE_DATASETS[state]
    if state in ("s1", "s2"):
        return f"control/{ds}/parameter_hash={check_token('parameter_hash', tokens['parameter_hash'])}/{state}_run_report.json"
    if state == "s0":
        return f"control/{ds}/fingerprint={check_token('manifest_fingerprint', tokens['manifest_fingerprint'])}/{state}_run_report.json"
    return (f"control/{ds}/seed={check_token('seed', tokens['seed'])}"
            f"/fingerprint={check_token('manifest_fingerprint', tokens['manifest_fingerprint'])}"
            f"/parameter_hash={check_token('parameter_hash', tokens['parameter_hash'])}/{state}_run_report.json")


@lru_cache(maxsize=1)
def iso_table() -> dict[str, str]:
    """The ISO table used by E005/E302: ISO 3166-1 alpha-2 code -> English name (250 entries)."""
    text = resources.files("segment1b").joinpath("data/iso3166_alpha2.csv").read_text(encoding="utf-8")
    rows = csv.reader(line for line in text.splitlines() if not line.startswith("#"))
    next(rows)
    return {code: name for code, name in rows}
