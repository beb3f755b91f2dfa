"""One error type for every contract failure.

Every failure the contract names (../shared/CONTRACTS.md) is raised as a :class:`Segment1BError`
carrying the failure ``code``, the ``dataset`` at fault, where (``path``) and the offending rows or
values.  Codes the contract leaves open (schema and file-level problems of inputs) are defined here
with the same naming scheme and listed in docs/failure-codes.md.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["FAILURE_CODES", "Segment1BError", "InputError", "IntegrityError", "PublishError", "BusyError"]

# code -> what it means.  The single place that defines which codes exist.
FAILURE_CODES: dict[str, str] = {
    # S1 tile index (contract §3)
    "E001_GEO_INVALID": "country geometry is invalid, empty or of the wrong type",
    "E002_RASTER_MISMATCH": "population raster does not match the grid of the tile index",
    "E003_DUP_TILE": "a tile belongs to more than one country",
    "E004_BOUNDS": "geometry or coordinates outside the grid or lon/lat range",
    "E005_ISO_FK": "country code is not an uppercase ISO 3166-1 alpha-2 code of the ISO table",
    "E006_AREA_NONPOS": "pixel area is not finite and positive",
    "E007_CRS_MISMATCH": "geometry or raster is not in geographic lon/lat (EPSG:4326)",
    "E008_INCLUSION_RULE": "unknown tile inclusion rule",
    "E009_INPUT_UNREADABLE": "reference input cannot be read (missing, truncated or corrupt file)",
    # S2 tile weights (contract §4)
    "E101_TILE_INDEX_MISSING": "tile_index partition for this parameter_hash is missing",
    "E102_FK_MISMATCH": "tile_weights and tile_index do not have the same tiles",
    "E103_ZERO_COUNTRY": "a country has no tiles",
    "E104_DP_RANGE": "dp is outside the supported range 0..18",
    "E105_NORMALIZATION": "mass is negative or not finite, or weights do not sum to 10^dp",
    "E106_MONOTONICITY": "a heavier tile received a smaller weight (internal invariant)",
    # S0 gate and S3 requirements (contract §5); E304/E305/E307-E312 are project-defined input checks
    "E301_NO_PASS_FLAG": "upstream _passed.flag is missing or does not match the bundle",
    "E302_FK_COUNTRY": "legal_country_iso is not in the ISO table",
    "E303_MISSING_WEIGHTS": "a country with sites has no tile weights",
    "E304_SCHEMA_MISMATCH": "input columns or types differ from the contract schema",
    "E305_PARQUET_UNREADABLE": "input Parquet file is truncated, corrupt or missing",
    "E306_TOKEN_MISMATCH": "a lineage column differs from its path token",
    "E307_PK_DUPLICATE": "duplicate primary key in the input",
    "E308_UNSORTED": "input rows are not in the contract's writer-sort order",
    "E309_VALUE_RANGE": "input value out of its contract range",
    "E310_PARAMETER_HASH_MISMATCH": "parameter_hash does not match the parameters of the inputs",
    "E311_EMPTY_CATALOGUE": "the outlet catalogue partition holds no rows: there is nothing to place",
    "E312_PARAMETER_HASH_AMBIGUOUS": "several parameter_hashes fit and the command does not say which one to use",
    "E314_SITE_ORDER_INTEGRITY": "site_order is not exactly 1..n within a (merchant, country) pair",
    # S4 allocation (contract §6); E401 is a project-defined input check
    "E401_REQUIREMENTS_MISSING": "s3_requirements is not published for this run: S4 has nothing to allocate",
    "E404_ALLOCATION_MISMATCH": "allocated sites do not sum to n_sites",
    "E416_NUMERIC_OVERFLOW": "weight_fp * n_sites does not fit in 64 bits",
    # S5 site -> tile (contract §7)
    "E502_PK_DUPLICATE_SITE": "duplicate (merchant_id, legal_country_iso, site_order)",
    "E503_TILE_QUOTA_MISMATCH": "sites per tile differ from the allocation plan",
    "E504_SUM_TO_N_MISMATCH": "sites per pair differ from n_sites",
    "E505_TILE_NOT_IN_INDEX": "assigned tile is not in tile_index for the country",
    "E507_RNG_EVENT_MISMATCH": "RNG events do not match the assignment",
    "E509_UNSORTED": "rows are not in writer-sort order",
    # S6 jitter (contract §8)
    "E601_ROW_MISSING": "a site of the assignment has no jitter row",
    "E602_ROW_EXTRA": "a jitter row has no site in the assignment",
    "E603_DUP_KEY": "duplicate jitter key",
    "E605_SORT_VIOLATION": "jitter rows are not in writer-sort order",
    "E606_FK_TILE_INDEX": "jitter tile is not in tile_index",
    "E607_POINT_OUTSIDE_PIXEL": "jittered point is outside its pixel",
    "E608_POINT_OUTSIDE_COUNTRY": "jittered point is outside its country",
    "E609_RNG_EVENT_COUNT": "jitter RNG event count does not match attempts",
    "E610_RNG_BUDGET_OR_COUNTERS": "jitter RNG counters or budget are wrong",
    "E613_RESAMPLE_EXHAUSTED": "64 jitter attempts failed for a site",
    # S7 synthesis (contract §10)
    "E701_ROW_MISSING": "S5 row without S6 row",
    "E702_ROW_EXTRA": "S6 row without S5 row",
    "E703_DUP_KEY": "duplicate synthesis key",
    "E707_POINT_OUTSIDE_PIXEL": "synthesised point is outside its pixel",
    "E708_1A_COVERAGE_FAIL": "site keys differ from the outlet catalogue's",
    # S9 validation (contract §10)
    "E901_ROW_MISSING": "egress is missing rows",
    "E902_ROW_EXTRA": "egress has extra rows",
    "E903_DUP_KEY": "egress has duplicate keys",
    "E904_EGRESS_SCHEMA": "egress schema differs from the contract",
    "E905_IDENTITY": "identity tokens differ between path and contents",
    "E906_SORT": "egress rows are not in writer-sort order",
    "E907_RNG_BUDGET": "RNG accounting does not balance",
    "E908_BUNDLE_CONTENTS": "validation bundle is incomplete",
    "E909_INDEX": "bundle index.json is wrong",
    "E910_FLAG": "_passed.flag does not match the bundle",
    "E911_FINALITY": "a published partition changed after publication",
    "E912_IDENTITY_COHERENCE": "datasets of one run disagree on identity",
    "E913_PUBLISH": "the validation bundle could not be published",
    # storage (contract §1)
    "E_IMMUTABLE_PARTITION_EXISTS_NONIDENTICAL": "a different partition is already published at this path",
    "E_PUBLISH_IO": "the publish location cannot be written (read-only, full or unreachable)",
    "E_DISK_SPACE": "the local data root has less free space than the run is estimated to write",
    "E_STAGING_INCOMPLETE": "a staging folder does not hold exactly the files its writers recorded; nothing published",
    # object stores (issue 15): project-defined, the contract names no code for a store that cannot be used
    "E_STORAGE_ACCESS": "an object store refuses the request or no credentials are found for it (data root or target)",
    # shared data roots (issue 14): one writer per (data root, scope) at a time
    "E_LEASE_BUSY": "another run holds the lease on this work (data root and scope); retry when it is done",
}

MAX_ROWS_IN_MESSAGE = 10


class Segment1BError(Exception):
    """A contract failure: code, dataset, where, and the offending rows or values.

    Parameters
    ----------
    code : str
        One of :data:`FAILURE_CODES`.
    message : str
        What was found and what was expected.
    dataset : str, optional
        Dataset id (see :mod:`segment1b.contracts`) at fault.
    path : str, optional
        File or partition at fault.
    rows : iterable of mapping, optional
        Offending rows or values; the first few are shown in the message, all are kept in ``.rows``.
    hint : str, optional
        What to do next.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        dataset: str | None = None,
        path: str | None = None,
        rows: Iterable[Mapping[str, Any]] | None = None,
        hint: str | None = None,
    ):
        if code not in FAILURE_CODES:
            raise ValueError(f"unknown failure code {code!r}; this is a bug in segment1b, please report it")
        self.code = code
        self.message = message
        self.dataset = dataset
        self.path = path
        self.rows = [dict(r) for r in rows] if rows is not None else []
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = ", ".join(x for x in (f"dataset={self.dataset}" if self.dataset else "",
                                        f"path={self.path}" if self.path else "") if x)
        text = f"{self.code}: {self.message}" + (f" [{where}]" if where else "")
        if self.rows:
            shown = self.rows[:MAX_ROWS_IN_MESSAGE]
            text += f"\n  offending rows ({len(shown)} of {len(self.rows)}):"
            for row in shown:
                text += "\n    " + " ".join(f"{k}={_short(v)}" for k, v in row.items())
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __reduce__(self):  # survive pickling between Dask workers and the client
        return (_rebuild, (type(self), self.code, self.message, self.dataset, self.path, self.rows, self.hint))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, used in run reports and the validation bundle."""
        return {"code": self.code, "message": self.message, "dataset": self.dataset, "path": self.path,
                "rows": [{k: _jsonable(v) for k, v in r.items()} for r in self.rows[:100]],
                "rows_total": len(self.rows)}


class InputError(Segment1BError):
    """An input (catalogue, reference data, parameters) breaks the contract."""


class IntegrityError(Segment1BError):
    """A computed or published dataset breaks a contract invariant."""


class PublishError(Segment1BError):
    """A partition could not be published (conflict, read-only or full location)."""


class BusyError(Segment1BError):
    """The work is leased by another run on the same data root (``E_LEASE_BUSY``): not a contract failure,
    retry later (the command line exits 75, EX_TEMPFAIL)."""


def _rebuild(cls, code, message, dataset, path, rows, hint):
    return cls(code, message, dataset=dataset, path=path, rows=rows, hint=hint)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
