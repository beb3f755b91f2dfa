"""Identity: parameter_hash, manifest_fingerprint, run_id and the run receipt (contract §1).

``parameter_hash`` is the SHA-256 of the canonical JSON of the parameters that shape S1-S6;
``manifest_fingerprint`` of a generated catalogue is the SHA-256 of the generator's canonical
parameters; ``run_id`` scopes RNG logs and is kept in a run receipt so that a resumed run keeps it.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .contracts import INCLUSION_RULES, check_token
from .errors import InputError
from .storage import canonical_json

__all__ = ["SegmentParameters", "WEIGHT_BASES", "sha256_hex", "fingerprint_of", "new_run_id", "utc_now",
           "build_commit", "RunIdentity"]

WEIGHT_BASES = ("uniform", "area_m2", "population", "population_proxy")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint_of(params: Mapping[str, Any]) -> str:
    """SHA-256 of canonical JSON: the manifest_fingerprint of generated catalogues, and parameter_hash."""
    return sha256_hex(canonical_json(dict(params)))


@dataclass(frozen=True)
class SegmentParameters:
    """The canonical parameters that shape S1-S6; their hash is ``parameter_hash``.

    Parameters
    ----------
    grid : dict
        :meth:`segment1b.grid.Grid.to_params`.
    countries_sha256 : str
        Digest of the cleaned country polygons (reference data).
    basis : str
        Weight basis, one of :data:`WEIGHT_BASES`.
    dp : int
        Decimal places of the fixed-point weights (K = 10**dp).
    population_sha256 : str
        Digest of the population source (raster file or GeoNames places); "" when unused.
    inclusion_rule : str
        Tile eligibility rule; only ``center``.
    proxy : dict
        Constants of the population proxy formula; empty unless ``basis == "population_proxy"``.
    """

    grid: dict
    countries_sha256: str
    basis: str = "population_proxy"
    dp: int = 8
    population_sha256: str = ""
    inclusion_rule: str = "center"
    proxy: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.inclusion_rule not in INCLUSION_RULES:
            raise InputError("E008_INCLUSION_RULE",
                             f"inclusion rule {self.inclusion_rule!r} is not supported; choose one of {INCLUSION_RULES}")
        if self.basis not in WEIGHT_BASES:
            raise InputError("E105_NORMALIZATION", f"weight basis {self.basis!r} unknown; choose one of {WEIGHT_BASES}")
        if not (isinstance(self.dp, int) and 0 <= self.dp <= 18):
            raise InputError("E104_DP_RANGE", f"dp={self.dp!r} must be an integer in 0..18 (K = 10**dp < 2**63)")

    def canonical(self) -> dict:
        return {"segment": "1B", "contract": 1, **asdict(self)}

    @property
    def parameter_hash(self) -> str:
        return fingerprint_of(self.canonical())

    @classmethod
    def from_canonical(cls, obj: Mapping[str, Any]) -> "SegmentParameters":
        return cls(**{k: obj[k] for k in ("grid", "countries_sha256", "basis", "dp", "population_sha256",
                                          "inclusion_rule", "proxy")})


def new_run_id() -> str:
    """32 lowercase hex characters."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """RFC 3339 UTC timestamp with 6 fractional digits and 'Z' (§9 envelope)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=1)
def build_commit() -> str:
    """Git commit of the code that runs, or the package version when not in a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out.stdout.strip()):
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "segment1b-" + version("segment1b")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunIdentity:
    """The identity one publish binds: seed, manifest_fingerprint, parameter_hash (+ run_id for logs)."""

    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str = ""

    def __post_init__(self):
        check_token("seed", self.seed)
        check_token("manifest_fingerprint", self.manifest_fingerprint)
        check_token("parameter_hash", self.parameter_hash)
        if self.run_id:
            check_token("run_id", self.run_id)

    @property
    def tokens(self) -> dict[str, Any]:
        """Path tokens for seed/fingerprint/parameter_hash datasets."""
        return {"seed": self.seed, "manifest_fingerprint": self.manifest_fingerprint,
                "parameter_hash": self.parameter_hash}

    @property
    def log_tokens(self) -> dict[str, Any]:
        """Path tokens for RNG logs."""
        return {"seed": self.seed, "parameter_hash": self.parameter_hash, "run_id": self.run_id}
