"""``segment1b verify-flag``: check the S9 PASS flag before reading ``site_locations`` (no cluster needed)."""

from __future__ import annotations

import argparse
import sys

from segment1b.reader import verify_passed_flag

from .session import storage_from_args
from .validate import add_identity_options

__all__ = ["register", "main"]


def register(sub) -> None:
    """``segment1b verify-flag --data-root D --seed N --fingerprint F``."""
    from .session import add_root_options

    p = sub.add_parser("verify-flag", help="verify the S9 _passed.flag and the site_locations checksums",
                       description="Recompute the Segment 1B _passed.flag from the bundle's index.json and "
                       "files, and check every site_locations file against egress_checksums.json.  Exits 0 "
                       "and prints the flag when it verifies, 3 with the failure code otherwise.")
    add_root_options(p)
    add_identity_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    storage = storage_from_args(args)
    digest = verify_passed_flag(storage.root_url, args.seed, args.fingerprint,
                                storage_options=storage.storage_options or None)
    print(f"PASS sha256_hex = {digest}", file=out)
    return 0
