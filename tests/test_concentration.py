"""Concentration of sites over tiles: counts, top-tile share and Gini against hand-computed answers."""

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment1b.concentration import COLUMNS, concentration, gini, tile_site_counts


def gini_by_pairs(counts, k):
    """Textbook Gini, independent of the rank formula: sum |x_i - x_j| / (2 k^2 mean), zeros padded to k."""
    x = np.concatenate([np.asarray(counts, float), np.zeros(k - len(counts))])
    if x.sum() == 0:
        return 0.0
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * k * x.sum()))


# sites per used tile, tiles in the country (None: unknown) -> Gini, top-tile share (worked by hand)
KNOWN = [
    ([1, 1, 1, 1], None, 0.0, 0.25),        # as spread as possible
    ([2, 2], None, 0.5, 0.5),                # k = 4: [0, 0, 2, 2] -> 2*(3*2 + 4*2)/(4*4) - 5/4
    ([3, 1], None, 0.625, 0.75),             # [0, 0, 1, 3] -> 2*(3 + 12)/16 - 5/4
    ([4], None, 0.75, 1.0),                  # every site in one tile: (k - 1)/k
    ([4], 1, 0.0, 1.0),                      # ... but the country has one tile: nothing else was possible
    ([3, 1], 2, 0.25, 0.75),                 # k = min(4, 2) = 2: [1, 3] -> 2*(1 + 6)/(2*4) - 3/2
    ([5, 3, 2], 3, 0.2, 0.5),                # k = 3: [2, 3, 5] -> 2*(2 + 6 + 15)/30 - 4/3
    ([1], None, 0.0, 1.0),                   # a single site
    ([10, 10, 10, 10, 10], None, 0.9, 0.2),  # 50 sites in 5 equal tiles: k = 50, G = 1 - 5/50
]


@pytest.mark.parametrize("counts, tiles, expect_gini, expect_share", KNOWN)
def test_known_answers(counts, tiles, expect_gini, expect_share):
    k = min(sum(counts), tiles) if tiles is not None else sum(counts)
    assert gini(counts, k) == pytest.approx(expect_gini, abs=1e-12)
    assert gini_by_pairs(counts, k) == pytest.approx(expect_gini, abs=1e-12)
    iso = np.repeat(["FR"], sum(counts))
    tile = np.repeat(np.arange(100, 100 + len(counts), dtype=np.uint64), counts)
    row = concentration(tile_site_counts(iso, tile), {"FR": tiles} if tiles is not None else None).iloc[0]
    assert row["gini"] == pytest.approx(expect_gini, abs=1e-12)
    assert row["top_tile_share"] == pytest.approx(expect_share)
    assert (row["sites"], row["tiles_used"]) == (sum(counts), len(counts))
    assert row["tiles_in_country"] == (tiles if tiles is not None else -1)


def test_counts_sort_by_country_and_tile_and_merge():
    t = tile_site_counts(pa.array(["FR", "DE", "FR", "FR", "DE"]).dictionary_encode(), [7, 3, 7, 5, 3])
    assert t.to_pydict() == {"country_iso": ["DE", "FR", "FR"], "tile_id": [3, 5, 7], "sites": [2, 1, 2]}
    assert t.schema.types == [pa.string(), pa.uint64(), pa.int64()]
    both = pa.concat_tables([t, t])
    merged = tile_site_counts(both["country_iso"], both["tile_id"], both["sites"])
    assert merged["sites"].to_pylist() == [4, 2, 4]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["DE", "FJ", "FR", "MC"]), st.integers(0, 30)), min_size=1,
                max_size=300), st.integers(1, 5))
def test_counting_in_parts_equals_counting_at_once(rows, n_parts):
    iso = [r[0] for r in rows]
    tile = np.array([r[1] for r in rows], dtype=np.uint64)
    whole = tile_site_counts(iso, tile)
    cuts = np.linspace(0, len(rows), n_parts + 1).astype(int)
    parts = [tile_site_counts(iso[a:b], tile[a:b]) for a, b in itertools.pairwise(cuts)]
    parts = pa.concat_tables(parts)
    assert tile_site_counts(parts["country_iso"], parts["tile_id"], parts["sites"]).equals(whole)
    assert sum(whole["sites"].to_pylist()) == len(rows)
    conc = concentration(whole)
    assert conc["sites"].sum() == len(rows)
    for r in conc.itertuples():
        counts = [n for c, n in zip(whole["country_iso"].to_pylist(), whole["sites"].to_pylist())
                  if c == r.country_iso]
        assert r.gini == pytest.approx(gini_by_pairs(counts, r.sites), abs=1e-12)
        assert r.top_tile_share == pytest.approx(max(counts) / r.sites)


def test_most_clumped_first_and_top_tile_ties_go_to_the_lowest_tile():
    # DE: one site per tile (G 0); FR: 2 + 2 (G 0.5, share 0.5); MC: 2 in one tile (G 0.5, share 1.0)
    iso = ["DE"] * 4 + ["FR"] * 4 + ["MC"] * 2
    tile = [1, 2, 3, 4, 9, 9, 5, 5, 8, 8]
    conc = concentration(tile_site_counts(iso, tile))
    assert list(conc.columns) == list(COLUMNS)
    assert conc[["country_iso", "gini", "top_tile_share"]].values.tolist() == [
        ["MC", 0.5, 1.0], ["FR", 0.5, 0.5], ["DE", 0.0, 0.25]]
    fr = conc.set_index("country_iso").loc["FR"]
    assert (fr["top_tile_id"], fr["top_tile_sites"]) == (5, 2)


def test_wide_tile_ids_and_many_countries_take_the_general_path():
    # 300 countries need 9 code bits, so tile ids >= 2^55 no longer fit one 64-bit key
    rng = np.random.default_rng(3)
    isos = np.array([f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(300)], dtype=object)
    iso = isos[rng.integers(0, 300, 5000)]
    small = rng.integers(0, 50, 5000).astype(np.uint64)
    wide = small + np.uint64(2**60)
    a = concentration(tile_site_counts(iso, small))
    b = concentration(tile_site_counts(iso, wide))
    assert a.drop(columns="top_tile_id").equals(b.drop(columns="top_tile_id"))
    assert (b["top_tile_id"].to_numpy() - np.uint64(2**60) == a["top_tile_id"].to_numpy()).all()


def test_empty_and_bad_inputs():
    assert tile_site_counts([], []).num_rows == 0
    assert list(concentration(tile_site_counts([], [])).columns) == list(COLUMNS)
    with pytest.raises(ValueError, match="differ in length"):
        tile_site_counts(["FR", "FR"], [1])
    with pytest.raises(ValueError, match="nulls"):
        tile_site_counts(pa.array(["FR", None]), [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        tile_site_counts(["FR"], [1], [-1])
    with pytest.raises(ValueError, match="FR has sites in 2 tiles but tiles_in_country says 1"):
        concentration(tile_site_counts(["FR", "FR"], [1, 2]), {"FR": 1})
    with pytest.raises(ValueError, match="smaller than"):
        gini([1, 2, 3], k=2)
