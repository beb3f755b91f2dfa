"""Small hand-made outlet catalogues with their upstream PASS bundle, and ways to break them.

``catalogue(pairs)`` builds rows from ``(merchant_id, country, n)`` pairs; ``publish_catalogue`` writes them as
parts (any split, any row-group size, or raw Parquet bytes that break the schema) and publishes a bundle
that vouches for exactly those bytes, as an upstream that validated them would.  The tamper helpers
change published files behind the storage layer's back.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segment1b.contracts import dataset, path_for
from segment1b.bundle import EGRESS_CHECKSUMS_NAME, FLAG_NAME, build_bundle
from segment1b.storage import Storage, part_name, write_parquet_bytes

FP = "cd" * 32
SEED = 42
PH = "ef" * 32
SPEC = dataset("outlet_catalogue")
COUNTRIES_CSV = Path(__file__).parent / "data" / "countries_population.csv"


def catalogue(pairs, *, fp: str = FP, seed: int = SEED, home: dict | None = None) -> pa.Table:
    """Rows of the pairs ``(merchant_id, legal_country_iso, n)`` in the order given; site_order 1..n."""
    totals: dict[int, int] = {}
    for m, _, n in pairs:
        totals[m] = totals.get(m, 0) + n
    rows = [(m, c, n, k) for m, c, n in pairs for k in range(1, n + 1)]
    merchant = [r[0] for r in rows]
    return pa.Table.from_arrays([
        pa.array([fp] * len(rows), pa.string()),
        pa.array(merchant, pa.uint64()),
        pa.array([f"{r[3]:06d}" for r in rows], pa.string()),
        pa.array([(home or {}).get(m, r[1]) for m, r in zip(merchant, rows)], pa.string()),
        pa.array([r[1] for r in rows], pa.string()),
        pa.array([totals[m] >= 2 for m in merchant], pa.bool_()),
        pa.array([totals[m] for m in merchant], pa.int32()),
        pa.array([r[2] for r in rows], pa.int32()),
        pa.array([r[3] for r in rows], pa.int32()),
        pa.array([seed] * len(rows), pa.uint64()),
    ], schema=SPEC.schema)


def set_values(table: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    """A copy of ``table`` with ``column`` changed at some rows (keeps the column type)."""
    values = table.column(column).to_pylist()
    for i, v in rows.items():
        values[i] = v
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def split(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    """Consecutive slices of the given sizes (the last takes the rest)."""
    out, start = [], 0
    for s in sizes:
        out.append(table.slice(start, s))
        start += s
    if start < table.num_rows:
        out.append(table.slice(start))
    return out


def raw_parquet(table: pa.Table, row_group_rows: int = 1 << 20) -> bytes:
    """Parquet bytes without the contract check (for schema-breaking parts)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_rows)
    return sink.getvalue()


def publish_catalogue(storage: Storage, parts, *, seed: int = SEED, fp: str = FP, row_group_rows: int = 1 << 18,
                      bundle: bool = True) -> dict:
    """Publish parts (tables, or raw bytes) as the catalogue partition plus a bundle vouching for them."""
    target = path_for("outlet_catalogue", seed=seed, manifest_fingerprint=fp)
    staging = storage.staging_path(target, "test")
    files = []
    for i, part in enumerate(parts):
        data = part if isinstance(part, bytes) else write_parquet_bytes(part, SPEC, row_group_rows=row_group_rows)
        files.append(storage.write_part(staging, part_name(i), data))
    digest = storage.publish(staging, target, "outlet_catalogue", expected=files)
    bundle_rel = path_for("validation_bundle_1A", manifest_fingerprint=fp)
    if bundle:
        checksums = {"partitions": [{"dataset": "outlet_catalogue", "partition_path": target, "sha256_hex": digest}]}
        files = build_bundle({
            EGRESS_CHECKSUMS_NAME: ("egress_checksums", json.dumps(checksums).encode()),
            "summary.json": ("summary", json.dumps({"note": "hand-made test catalogue"}).encode()),
        })
        storage.publish_bytes(files, bundle_rel, "validation_bundle_1A", "test")
    return {"catalogue": target, "bundle": bundle_rel, "digest": digest}


def publish_tile_weights(storage: Storage, countries, parameter_hash: str = PH, *, fallback=(),
                         row_group_rows: int = 2) -> str:
    """A minimal tile_weights partition: one tile of weight K per country (``fallback``: zero_mass_fallback)."""
    countries = sorted(countries)
    t = pa.table({"country_iso": pa.array(countries, pa.string()),
                  "tile_id": pa.array(range(len(countries)), pa.uint64()),
                  "weight_fp": pa.array([10**8] * len(countries), pa.uint64()),
                  "dp": pa.array([8] * len(countries), pa.uint32()),
                  "zero_mass_fallback": pa.array([c in fallback for c in countries], pa.bool_())})
    target = path_for("tile_weights", parameter_hash=parameter_hash)
    staging = storage.staging_path(target, "test")
    files = [storage.write_part(staging, part_name(0), write_parquet_bytes(t, dataset("tile_weights"),
                                                                           row_group_rows=row_group_rows))]
    storage.publish(staging, target, "tile_weights", expected=files)
    return target


def local(storage: Storage, rel: str) -> str:
    return storage.abspath(rel)


def overwrite(storage: Storage, rel: str, data: bytes) -> None:
    """Replace a published file in place (what a careless upstream or a disk fault would do)."""
    path = local(storage, rel)
    os.chmod(path, 0o644)
    with open(path, "wb") as fh:
        fh.write(data)


def delete(storage: Storage, rel: str) -> None:
    os.remove(local(storage, rel))


def flag_path(fp: str = FP) -> str:
    return path_for("validation_bundle_1A", manifest_fingerprint=fp) + FLAG_NAME


def random_pairs(rng: np.random.Generator, merchants: int, countries=("DE", "FR", "GB", "US", "ZA")) -> list:
    """Random pairs in writer-sort order: distinct u64 merchant ids (some ≥ 2^63), 1-3 countries, n 1-12."""
    ids = np.unique(rng.integers(0, 2**64, size=merchants, dtype=np.uint64, endpoint=False))
    pairs = []
    for m in ids:
        k = int(rng.integers(1, 4))
        for c in sorted(rng.choice(countries, size=k, replace=False)):
            pairs.append((int(m), str(c), int(rng.integers(1, 13))))
    return pairs
