"""argparse types of the command line: every flag value is checked while the command line is parsed.

A bad value is a usage error (exit 2, with the usage line and what was expected) before any cluster
starts or any file is read (issue #14, item 5).  Each type is built from the constant that the code
validates against later (house rule 7): identity tokens from :data:`segment1b.contracts.TOKEN_PATTERNS`,
grids from :data:`segment1b.grid.NAMED_GRIDS`, cluster options from :data:`cluster.options.OPTIONS`.

>>> seed("42"), positive_int("3")
(42, 3)
>>> seed("-1")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: expected a seed: a decimal u64 (0 .. 18446744073709551615) without sign or ...
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from segment1b.contracts import TOKEN_PATTERNS
from segment1b.grid import NAMED_GRIDS

__all__ = ["cluster_option", "count", "grid_name", "hex64", "positive_int", "seed", "storage_options"]

U64_MAX = 2**64 - 1


def seed(text: str) -> int:
    """A u64 seed in decimal, as the contract writes it in paths (``seed=42``)."""
    if not TOKEN_PATTERNS["seed"].match(text) or int(text) > U64_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed: a decimal u64 (0 .. {U64_MAX}) without sign or "
                                         f"leading zeros, got {text!r}")
    return int(text)


def hex64(text: str) -> str:
    """A manifest_fingerprint or parameter_hash: 64 lowercase hex characters (never a path)."""
    if not TOKEN_PATTERNS["manifest_fingerprint"].match(text):
        raise argparse.ArgumentTypeError(f"expected 64 lowercase hex characters, got {text!r}")
    return text


def grid_name(text: str) -> str:
    """One of the named built-in grids."""
    if text not in NAMED_GRIDS:
        raise argparse.ArgumentTypeError(f"unknown grid {text!r}; built-in grids: {', '.join(NAMED_GRIDS)} "
                                         "(or give --raster)")
    return text


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole(text, 1)


def count(text: str) -> int:
    """A whole number >= 0."""
    return _whole(text, 0)


def _whole(text: str, minimum: int) -> int:
    if not text.strip().isdigit() or int(text) < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def storage_options(text: str) -> dict[str, Any]:
    """fsspec storage options: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"anon\": true}}', got {text!r} "
                                         f"({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"anon\": true}}', got a JSON "
                                         f"{type(value).__name__}: {text!r}")
    return value


def cluster_option(name: str) -> Callable[[str], Any]:
    """The argparse type of a cluster option: its validator in :data:`cluster.options.OPTIONS`.

    The value is kept as given (text); :class:`cluster.ClusterOptions` normalises it again, so a flag and a
    config value go through the same rule.
    """
    from cluster.errors import ClusterConfigError
    from cluster.options import OPTIONS

    spec = next(s for s in OPTIONS if s.name == name)

    def check(text: str) -> str:
        try:
            spec.validate(text, "the value")
        except ClusterConfigError as e:
            raise argparse.ArgumentTypeError(e.message) from None
        return text

    check.__name__ = name  # argparse names the type in "invalid <name> value" messages
    return check
