"""``run_pipeline`` resumed after a crash at each step where a state publishes or reports (jobs/pipeline.py).

The subprocess kill tests in ``test_end_to_end.py`` stop the client at a few moments of a real run; the
windows between "dataset published" and "event log published" or "run report written" are too short to
hit that way.  Here the client's Storage raises :class:`Crash` right after one chosen publish or report
write, and refuses every later change (as if the process had been killed there: no cleanup runs), then the
same run is started again with a plain Storage.  It must end PASS under the same run_id, with the bytes of
an uninterrupted run and no staging folders left.
"""

from __future__ import annotations

import io
import shutil

import pytest

from jobs.pipeline import RunRequest, run_pipeline
from segment1b.contracts import dataset, path_for
from segment1b.storage import Storage

pytestmark = pytest.mark.cluster

SMALL_WORLD = ("AU", "FJ", "FR", "JP", "NZ", "US")
DATASETS = ("s3_requirements", "s4_alloc_plan", "s5_site_tile_assignment", "s6_site_jitter", "s7_site_synthesis",
            "site_locations")

# (what was just done, Storage method, a piece of the path it was called with): each is followed by a step
# that a resumed run must not skip (the next publish, the run report, the RNG trace, the cleanup)
CRASH_POINTS = [
    ("s5 published", "publish", "/s5_site_tile_assignment/"),
    ("s5 events published", "publish", "/site_tile_assign/"),
    ("s6 report written", "write_bytes", "/s6_run_report.json"),
    ("rng trace written", "write_bytes", "/rng_trace_log.jsonl"),
    ("s7 published", "publish", "/s7_site_synthesis/"),
    ("site_locations published", "publish", "/site_locations/"),
    ("s7 report written", "write_bytes", "/s7_run_report.json"),
    ("bundle published", "publish", "/validation/fingerprint="),
]


class Crash(BaseException):
    """The client died (a BaseException, so no ``except Exception`` of the jobs swallows it)."""


class CrashingStorage(Storage):
    """A data root whose client-side changes stop for good right after one chosen call.

    Workers receive a plain :class:`Storage` (``Storage.__reduce__``), like the workers of a cluster
    whose client was killed: their tasks may still finish writing into staging folders.
    """

    def __init__(self, root: str, method: str, marker: str):
        super().__init__(root)
        self.method, self.marker, self.crashed = method, marker, False

    def _after(self, method: str, rel: str) -> None:
        if method == self.method and self.marker in "/" + rel:
            self.crashed = True
            raise Crash(f"after {method} {rel}")

    def _refuse(self) -> None:
        if self.crashed:
            raise Crash("the client is gone")

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._refuse()
        super().write_bytes(rel, data)
        self._after("write_bytes", rel)

    def publish(self, staging_rel: str, target_rel: str, dataset_id: str, *, expected, digest: bool = True) -> str:
        self._refuse()
        digest = super().publish(staging_rel, target_rel, dataset_id, expected=expected, digest=digest)
        self._after("publish", target_rel)
        return digest

    def remove(self, rel: str) -> None:
        self._refuse()
        super().remove(rel)


@pytest.fixture(scope="module")
def no_pictures():
    """The HTML run report and map are not what is tested here (and take a second per run)."""
    import jobs.report.run_report

    original = jobs.report.run_report.report_after_run
    jobs.report.run_report.report_after_run = lambda storage, ident, out=None: None
    yield
    jobs.report.run_report.report_after_run = original


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, client, no_pictures):
    """A data root with S1-S3 done (and the run receipt), and the digests of the uninterrupted rest."""
    import geopandas

    from segment1b import refdata

    folder = tmp_path_factory.mktemp("pipeline")
    countries = refdata.default_countries()
    world = str(folder / "countries.parquet")
    geopandas.GeoDataFrame({"iso_a2": list(SMALL_WORLD)}, geometry=[countries.get(c) for c in SMALL_WORLD],
                           crs="EPSG:4326").to_parquet(world)
    request = RunRequest(seed=7, scale="tiny", grid="30m", countries=world, part_sites=256)
    base = folder / "base"
    first = run_pipeline(Storage(str(base)), client, RunRequest(**{**request.__dict__, "through": "s3"}),
                         out=io.StringIO())
    shutil.copytree(base, folder / "whole")
    whole = run_pipeline(Storage(str(folder / "whole")), client, request, out=io.StringIO())
    assert whole.passed and whole.identity["run_id"] == first.identity["run_id"]
    return {"base": base, "request": request, "identity": first.identity,
            "digests": _digests(Storage(str(folder / "whole")), first.identity)}


def _digests(storage: Storage, identity: dict) -> dict[str, str]:
    out = {}
    for ds in DATASETS:
        rel = path_for(ds, **{k: identity[k] for k in dataset(ds).tokens})
        assert storage.is_published(rel), ds
        out[ds] = storage.partition_digest(rel)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("point, method, marker", CRASH_POINTS, ids=[p[0] for p in CRASH_POINTS])
def test_a_run_killed_after_a_publish_or_report_resumes_to_the_same_bytes(prepared, client, tmp_path, point, method,
                                                                          marker):
    root = tmp_path / "root"
    shutil.copytree(prepared["base"], root)
    crashing = CrashingStorage(str(root), method, marker)
    with pytest.raises(Crash):
        run_pipeline(crashing, client, prepared["request"], out=io.StringIO())
    assert crashing.crashed, f"the run never reached {point}"

    out = io.StringIO()
    storage = Storage(str(root))
    summary = run_pipeline(storage, client, prepared["request"], out=out)
    assert summary.passed, out.getvalue()[-3000:]
    assert summary.identity["run_id"] == prepared["identity"]["run_id"] and summary.identity["resumed"]
    assert _digests(storage, summary.identity) == prepared["digests"]
    leftovers = [p for p in storage.fs.find(str(root), withdirs=True) if ".staging-" in p or "place-progress-" in p]
    assert leftovers == []
