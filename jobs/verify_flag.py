"""``segment1b verify-flag``: check the S9 PASS flag before reading ``site_locations`` (no cluster needed).

The default is quick: the flag against the bundle, the ``site_locations`` files against their checksums, and
every other file the bundle lists (tile surfaces, S3-S8 parts, the catalogue, every RNG log part) by name
and size in its folder's listing.  ``--deep`` also reads every listed file again and compares its SHA-256
(at x100 on the 5m grid: 4.6 GiB, most of it RNG event logs; the README's *Performance* has the costs).
"""

from __future__ import annotations

import argparse
import sys
import time

from segment1b.reader import check_flag

from .session import add_identity_options, storage_from_args

__all__ = ["register", "main"]


def register(sub) -> None:
    """``segment1b verify-flag --data-root D --seed N --fingerprint F [--deep]``."""
    from .session import add_root_options

    p = sub.add_parser("verify-flag", help="verify the S9 _passed.flag against the files it vouches for",
                       description="Recompute the Segment 1B _passed.flag from the bundle's index.json and "
                       "files, check every site_locations file against egress_checksums.json, and check that "
                       "every other file the bundle lists (tile surfaces, datasets, RNG log parts) is there "
                       "with its size and no unvalidated file joined them.  Exits 0 and prints the flag when "
                       "it verifies, 3 with the failure code otherwise.")
    add_root_options(p)
    add_identity_options(p)
    p.add_argument("--deep", action="store_true",
                   help="also read every listed file again and compare its SHA-256 (slower: all RNG logs)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    storage = storage_from_args(args)
    t0 = time.perf_counter()
    check = check_flag(storage.root_url, args.seed, args.fingerprint,
                       storage_options=storage.storage_options or None, deep=args.deep)
    print(f"PASS sha256_hex = {check.flag_sha256_hex}", file=out)
    how = "names, sizes and SHA-256" if check.deep else "names and sizes (--deep: SHA-256 too)"
    print(f"  {check.files} listed files in {check.folders} folders ({check.listed_bytes / 2**30:.2f} GiB) "
          f"checked by {how}; {check.hashed_bytes / 2**30:.2f} GiB hashed in "
          f"{time.perf_counter() - t0:.1f} s", file=out)
    return 0
