"""``segment1b export --geoparquet OUT``: one GeoParquet copy of ``site_locations`` (after the flag check)."""

from __future__ import annotations

import argparse
import sys

from segment1b.reader import export_geoparquet

from .session import add_identity_options, storage_from_args

__all__ = ["register", "main"]


def register(sub) -> None:
    """``segment1b export --data-root D --seed N --fingerprint F --geoparquet OUT``."""
    from .session import add_root_options

    p = sub.add_parser("export",
                       help="write site_locations as one GeoParquet file (verifies the PASS flag first)",
                       description="Verify the S9 _passed.flag, then write site_locations as a single "
                       "GeoParquet "
                       "file of WKB points in EPSG:4326 that geopandas.read_parquet reads.")
    add_root_options(p)
    add_identity_options(p)
    p.add_argument("--geoparquet", required=True, metavar="OUT",
                   help="target file (local path or fsspec URL)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    storage = storage_from_args(args)
    info = export_geoparquet(storage.root_url, args.seed, args.fingerprint, args.geoparquet,
                             storage_options=storage.storage_options or None)
    print(f"wrote {info['rows']} sites in {info['parts']} row groups to {info['path']} (bbox {info['bbox']})",
          file=out)
    return 0
