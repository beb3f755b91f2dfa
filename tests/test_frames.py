"""The lazy dataframe API (jobs.frames, issue 16) against what `segment1b run` publishes.

One tiny run on the prepared 30' grid (tests/runs.py) is published once for the module; the API is then
built on the same data root and identity, with small units so that big countries are split into several
partitions and small ones packed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dask
import dask_geopandas
import geopandas
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dask.utils import key_split

import runs
from jobs import frame_parts
from jobs.frames import (LAYERS, Streams, Surfaces, UnitSizing, allocate, assign, assign_events, jitter,
                         jitter_events, place, read_requirements, unit_table)
from jobs.units import CountryPairs, plan_parts, plan_units
from segment1b import rng_events
from segment1b.contracts import path_for
from segment1b.errors import InputError
from segment1b.storage import Storage

REPO = Path(__file__).resolve().parent.parent
# small units: the tiny scale's big countries (US, CN, IN) become several partitions, the rest are packed
SIZING = UnitSizing(max_unit_sites=200, min_unit_sites=50, workers=2)
KEYS = ["merchant_id", "legal_country_iso", "site_order"]
ISO = frame_parts.ISO_DTYPE


@pytest.fixture(scope="module")
def published(client, tmp_path_factory):
    """A data root where `segment1b run` (tiny, 30') published everything; its identity tokens."""
    prepared, _ = runs.prepared_root(client)
    root = runs.fresh_root(prepared, str(tmp_path_factory.mktemp("frames") / "root"))
    summary = runs.run(Storage(root), client)
    assert summary.passed
    return root, summary.identity


def _frames(root, ident, sizing=SIZING):
    seed, fp, ph = ident["seed"], ident["manifest_fingerprint"], ident["parameter_hash"]
    requirements = read_requirements(root, seed, fp, ph, sizing=sizing)
    return requirements, Surfaces(root, ph), Streams(seed, fp, ph)


def _published(root, dataset_id, **tokens) -> pd.DataFrame:
    storage = Storage(root)
    tables = [pq.read_table(storage.abspath(p)) for p in storage.parquet_parts(path_for(dataset_id, **tokens))]
    return pa.concat_tables(tables).to_pandas(types_mapper={pa.string(): ISO}.get)


def _events(root, label, ident) -> pd.DataFrame:
    """The run's published RNG events of one label (plain or zstd JSON lines)."""
    storage = Storage(root)
    rel = path_for("rng_events", substream_label=label, seed=ident["seed"], parameter_hash=ident["parameter_hash"],
                   run_id=ident["run_id"])
    chunks = []
    for name in storage.list_files(rel):
        data = storage.read_bytes(f"{rel}/{name}")
        chunks.append(pa.CompressedInputStream(pa.BufferReader(data), "zstd").read() if name.endswith(".zst")
                      else data)
    return rng_events.read_events(b"".join(chunks), label).to_pandas(types_mapper={pa.string(): ISO}.get)


def _sorted(frame: pd.DataFrame, keys=KEYS) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def placed(published):
    """Every collection of the API on the published identity (lazy), and their computed values."""
    root, ident = published
    requirements, surfaces, streams = _frames(root, ident)
    plan = allocate(requirements, surfaces)
    sites = assign(plan, streams)
    lazy = {"requirements": requirements, "plan": plan, "sites": sites, "located": jitter(sites, surfaces, streams),
            "s5 events": assign_events(plan, streams), "s6 events": jitter_events(sites, surfaces, streams)}
    return lazy, dict(zip(lazy, dask.compute(*lazy.values())))


def test_rows_equal_what_segment1b_run_publishes(published, placed):
    root, ident = published
    got = placed[1]
    tokens = {k: ident[k] for k in ("seed", "manifest_fingerprint", "parameter_hash")}
    pd.testing.assert_frame_equal(_sorted(got["plan"], ["merchant_id", "legal_country_iso", "tile_id"]),
                                  _published(root, "s4_alloc_plan", **tokens))
    pd.testing.assert_frame_equal(_sorted(got["sites"]), _published(root, "s5_site_tile_assignment", **tokens))
    located = _sorted(pd.DataFrame(got["located"].drop(columns="geometry")))
    s6 = _published(root, "s6_site_jitter", **tokens)
    pd.testing.assert_frame_equal(located.assign(manifest_fingerprint=s6["manifest_fingerprint"])[s6.columns], s6)
    s7 = _published(root, "s7_site_synthesis", **tokens)
    pd.testing.assert_frame_equal(located[s7.columns], s7)
    egress = _published(root, "site_locations", seed=ident["seed"], manifest_fingerprint=ident["manifest_fingerprint"])
    pd.testing.assert_frame_equal(located[egress.columns], egress)
    # the RNG events, field by field, except the per-run ts_utc and run_id and the constant fields
    for label, frame, keys in (("site_tile_assign", got["s5 events"], KEYS),
                               ("in_cell_jitter", got["s6 events"], KEYS + ["attempt_index"])):
        logged = _sorted(_events(root, label, ident), keys)
        assert (logged["seed"] == ident["seed"]).all() and (logged["parameter_hash"] == ident["parameter_hash"]).all()
        pd.testing.assert_frame_equal(_sorted(frame, keys), logged[list(frame.columns)], check_dtype=False)
        assert len(frame) > 0


def test_rows_do_not_depend_on_the_partitioning(published):
    root, ident = published
    requirements, surfaces, streams = _frames(root, ident)
    variants = {n: requirements.repartition(npartitions=n) for n in (1, 3, 17)}
    assert {n: frame.npartitions for n, frame in variants.items()} == {1: 1, 3: 3, 17: 17}
    located = {n: place(frame, surfaces, streams) for n, frame in variants.items()}
    # sites are placed one by one: any partitioning of the sites gives the same points too
    located["sites in 5"] = jitter(assign(allocate(requirements, surfaces), streams).repartition(npartitions=5),
                                   surfaces, streams)
    located["units"] = place(requirements, surfaces, streams)
    got = {n: _sorted(pd.DataFrame(frame).drop(columns="geometry"))
           for n, frame in zip(located, dask.compute(*located.values()))}
    for n in (1, 3, 17, "sites in 5"):
        pd.testing.assert_frame_equal(got[n], got["units"], obj=f"{n} partitions")


def test_partitions_are_the_units_the_cli_plans(published):
    root, ident = published
    requirements, _, _ = _frames(root, ident)
    s3 = _published(root, "s3_requirements", seed=ident["seed"], manifest_fingerprint=ident["manifest_fingerprint"],
                    parameter_hash=ident["parameter_hash"])
    m, iso, n = s3["merchant_id"].to_numpy(), s3["legal_country_iso"].to_numpy(str), s3["n_sites"].to_numpy()
    units = plan_units(m, iso, n, plan_parts(m, n, SIZING.part_sites), max_unit_sites=SIZING.max_unit_sites,
                       min_unit_sites=SIZING.min_unit_sites, skew=SIZING.skew, workers=SIZING.workers)
    table = unit_table(requirements)
    assert [(u.label, u.part, u.chunk, ",".join(u.countries), u.pairs, u.sites) for u in units] == \
        list(table[["label", "part", "chunk", "countries", "pairs", "sites"]].itertuples(index=False, name=None))
    labels = Counter(table["label"])
    assert labels["small"] >= 1 and max(c for lab, c in labels.items() if lab != "small") > 1  # packed and split
    parts = dask.compute(*requirements.to_delayed())
    every_pair = CountryPairs.of(m, iso, n)
    for unit, part in zip(units, parts):
        pairs = sorted((int(merchant), s.country_iso) for s in unit.segments for merchant in every_pair.select(s)[0])
        assert sorted(zip(part["merchant_id"].tolist(), part["legal_country_iso"].tolist())) == pairs
        assert int(part["n_sites"].sum()) == unit.sites
    # a step maps partition i to partition i, so the table describes every collection built on it
    assert unit_table(place(requirements, *_frames(root, ident)[1:])).equals(table)
    with pytest.raises(ValueError, match="repartitioned"):
        unit_table(requirements.repartition(npartitions=3))


def test_meta_is_what_the_partitions_hold(placed):
    lazy, computed = placed
    for name, frame in lazy.items():
        assert frame._meta.dtypes.to_dict() == computed[name].dtypes.to_dict(), name
        assert list(frame.columns) == list(computed[name].columns), name
    assert isinstance(lazy["located"], dask_geopandas.GeoDataFrame)
    assert isinstance(computed["located"], geopandas.GeoDataFrame)
    assert lazy["located"].crs == computed["located"].crs == "EPSG:4326"
    assert (computed["located"].geometry.x == computed["located"]["lon_deg"]).all()


def test_filtering_the_results_needs_no_shuffle(placed):
    """Every collection is co-aligned with the requirements (the prefix table is a broadcast scalar)."""
    from dask.dataframe.dask_expr._shuffle import Shuffle

    lazy, _ = placed
    located, events = lazy["located"], lazy["s6 events"]
    for frame in (located[located["legal_country_iso"] == "FR"], events[events["accepted"]],
                  located.merge(pd.DataFrame({"legal_country_iso": ["FR"], "region": ["EU"]}), on="legal_country_iso")):
        assert not list(frame.expr.optimize().find_operations(Shuffle))


def test_building_the_graph_reads_no_file(published, tmp_path):
    """Every step is built while the data root does not exist; the same graph then computes."""
    root, ident = published
    copy = runs.fresh_root(root, str(tmp_path / "root"))
    away = copy + ".away"
    os.rename(copy, away)
    try:
        requirements, surfaces, streams = _frames(copy, ident)
        plan = allocate(requirements, surfaces)
        sites = assign(plan, streams)
        located = jitter(sites, surfaces, streams)
        events = jitter_events(sites, surfaces, streams)
        mine = pd.DataFrame({"legal_country_iso": ["US", "FR"], "region": ["NA", "EU"]})
        joined = located.merge(mine, on="legal_country_iso")
        n_events = events.shape[0]
        assert not os.path.exists(copy)
    finally:
        os.rename(away, copy)
    # to_parquet materialises the graph when called (compute=False too), so it plans the units: not above
    write = joined.to_parquet(str(tmp_path / "out"), compute=False)
    _, n_events = dask.compute(write, n_events)
    written = geopandas.read_parquet(tmp_path / "out")
    counts = _published(root, "s3_requirements", seed=ident["seed"], manifest_fingerprint=ident["manifest_fingerprint"],
                        parameter_hash=ident["parameter_hash"]).groupby("legal_country_iso")["n_sites"].sum()
    assert len(written) == counts["US"] + counts["FR"] and set(written["region"]) == {"NA", "EU"}
    assert n_events >= counts.sum()


class _ReadSpy:
    """Records every file access of the data root and every Parquet read, in this process."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        fs = Storage.fs

        def spied_fs(storage):
            self.calls.append(f"Storage({storage.root_url}).fs")
            return fs.fget(storage)

        monkeypatch.setattr(Storage, "fs", property(spied_fs))
        for name in ("read_table", "read_metadata", "read_schema", "ParquetFile", "ParquetDataset"):
            monkeypatch.setattr(pq, name, self._wrap(f"pyarrow.parquet.{name}", getattr(pq, name)))

    def _wrap(self, name, real):
        def spied(*args, **kwargs):
            self.calls.append(name)
            return real(*args, **kwargs)
        return spied


def test_building_the_graph_reads_no_parquet_data(published, monkeypatch):
    """A spy on the data root and on pyarrow.parquet sees nothing until the graph computes."""
    root, ident = published
    spy = _ReadSpy(monkeypatch)
    requirements, surfaces, streams = _frames(root, ident)
    sites = assign(allocate(requirements, surfaces), streams)
    located = jitter(sites, surfaces, streams)
    joined = located.merge(pd.DataFrame({"legal_country_iso": ["FR"], "region": ["EU"]}), on="legal_country_iso")
    lazy = [joined, jitter_events(sites, surfaces, streams), assign_events(allocate(requirements, surfaces), streams)]
    assert [frame.columns[0] for frame in lazy] == ["merchant_id"] * 3  # meta is there without reading
    assert spy.calls == []
    with dask.config.set(scheduler="sync"):  # in this process, where the spy is: the spy does see reads
        assert len(joined.compute()) > 0
    assert any(c.startswith("Storage(") for c in spy.calls) and "pyarrow.parquet.ParquetFile" in spy.calls


def test_the_weight_prefix_is_computed_once_per_country(published, monkeypatch):
    root, ident = published
    requirements, surfaces, _ = _frames(root, ident)
    calls = Counter()
    real = frame_parts.country_prefix

    def counting(storage, weight_refs, index_refs, iso, max_n):
        calls[iso] += 1
        return real(storage, weight_refs, index_refs, iso, max_n)

    monkeypatch.setattr(frame_parts, "country_prefix", counting)
    with dask.config.set(scheduler="sync"):  # in this process, where the counter is
        plan = allocate(requirements, surfaces).compute()
    table = unit_table(requirements)
    countries = Counter(c for cs in table["countries"] for c in cs.split(","))
    assert max(countries.values()) > 1  # some countries span several partitions...
    assert calls == Counter(set(plan["legal_country_iso"]))  # ...and still get one prefix each


def test_layers_name_their_state_on_the_dashboard(published):
    root, ident = published
    requirements, surfaces, streams = _frames(root, ident)
    located = place(requirements, surfaces, streams)
    assert {key_split(k) for k in located.optimize(fuse=False).dask} >= set(LAYERS.values())
    # The graph persist(fuse=False) submits is the one checked above.  What the scheduler shows is not checked
    # here: in a session where another test computed the same (deterministic) keys they do not run again, and
    # the scheduler forgets a prefix once its tasks are released, so either check would be a race.


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- frames-example -->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README.md has no ```python block after <!-- frames-example -->"
    return match.group(1)


def test_the_readme_example_runs(published, tmp_path):
    root, ident = published
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 15
    # the example's placeholders: its data root and the identity `segment1b run` printed
    printed = 'root, seed = "./out", 42'
    assert printed in code
    code = code.replace(printed, f"root, seed = {root!r}, {ident['seed']}") \
        .replace("<fingerprint>", ident["manifest_fingerprint"]).replace("<parameter_hash>", ident["parameter_hash"])
    assert ident["manifest_fingerprint"] in code and ident["parameter_hash"] in code
    # as a user runs it: saved as a file (LocalCluster's worker processes import the main module again)
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    written = geopandas.read_parquet(tmp_path / "sites_with_regions")
    assert written.crs == "EPSG:4326" and len(written) > 0
    assert set(written["legal_country_iso"]) <= {"FR", "DE", "US"} and not written["region"].isna().any()


def test_a_malformed_identity_is_refused_when_the_graph_is_built(published):
    root, ident = published
    with pytest.raises(InputError) as err:
        read_requirements(root, -1, ident["manifest_fingerprint"], ident["parameter_hash"])
    assert err.value.code == "E309_VALUE_RANGE"
    with pytest.raises(InputError) as err:
        Streams(ident["seed"], "not-hex", ident["parameter_hash"])
    assert err.value.code == "E309_VALUE_RANGE"


def test_unpublished_requirements_are_e305_when_computed(published):
    root, ident = published
    requirements = read_requirements(root, ident["seed"] + 1, ident["manifest_fingerprint"], ident["parameter_hash"])
    with pytest.raises(InputError) as err:
        requirements.compute()
    assert err.value.code == "E305_PARQUET_UNREADABLE" and "not published" in str(err.value)


def test_mixed_identities_are_refused_when_the_graph_is_built(published):
    root, ident = published
    requirements, surfaces, streams = _frames(root, ident)
    other = "0" * 64
    with pytest.raises(InputError) as err:
        allocate(requirements, Surfaces(root, other))
    assert err.value.code == "E310_PARAMETER_HASH_MISMATCH"
    plan = allocate(requirements, surfaces)
    with pytest.raises(InputError) as err:
        assign(plan, Streams(ident["seed"] + 1, ident["manifest_fingerprint"], ident["parameter_hash"]))
    assert err.value.code == "E306_TOKEN_MISMATCH" and "seed" in str(err.value)
    with pytest.raises(InputError) as err:
        jitter(assign(plan, streams), Surfaces(root, other), streams)
    assert err.value.code == "E310_PARAMETER_HASH_MISMATCH"
