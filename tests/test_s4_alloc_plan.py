import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from segment1b.errors import InputError
from reference import allocate_reference
from segment1b.s4_alloc_plan import allocate_pairs, plan_for_n, weight_prefix


def plan(tile_id, weight, n, dp, max_n=None):
    prefix = weight_prefix("FR", np.array(tile_id, np.uint64), np.array(weight, np.uint64), dp, max_n or n)
    tid, cnt, tie = plan_for_n(prefix, n)
    return dict(zip(tid.tolist(), cnt.tolist())), tie


def test_worked_example_from_the_contract():
    # weights 700/300, K = 1000, n = 5 -> prods 3500/1500, remainders tie at 500, tie goes to the lower tile_id
    assert plan([10, 11], [700, 300], 5, dp=3) == ({10: 4, 11: 1}, True)
    assert plan([11, 10], [700, 300], 5, dp=3) == ({10: 2, 11: 3}, True)  # tie still goes to tile 10
    assert allocate_reference([10, 11], [700, 300], 5, dp=3) == {10: 4, 11: 1}


def test_zero_weight_tiles_never_receive_and_zero_rows_are_not_written():
    got, _ = plan([1, 2, 3, 4], [0, 500, 0, 500], 3, dp=3)
    assert got == {2: 2, 4: 1}


def test_overflow_is_e416_never_silent():
    with pytest.raises(InputError) as e:
        plan([1, 2], [10**18 - 1, 1], 19, dp=18)
    assert e.value.code == "E416_NUMERIC_OVERFLOW" and "n_sites 19" in str(e.value)
    with pytest.raises(InputError):
        allocate_reference([1, 2], [10**18 - 1, 1], 19, dp=18)
    assert plan([1, 2], [10**18 - 1, 1], 18, dp=18)[0] == {1: 18}


def test_weights_that_do_not_sum_to_k_are_refused():
    with pytest.raises(InputError) as e:
        weight_prefix("DE", np.array([1, 2], np.uint64), np.array([1, 2], np.uint64), 3, 5)
    assert e.value.code == "E105_NORMALIZATION" and "DE" in str(e.value)


weights_strategy = st.lists(st.integers(0, 50), min_size=1, max_size=40).filter(lambda w: sum(w) > 0)


def normalise(raw, dp):
    """Integer weights summing to K (largest remainder on integers, for test inputs only)."""
    K = 10**dp
    total = sum(raw)
    z = [w * K // total for w in raw]
    rem = sorted(range(len(raw)), key=lambda i: (-(raw[i] * K % total), i))
    for i in rem[:K - sum(z)]:
        z[i] += 1
    return z


@settings(max_examples=300, deadline=None)
@given(weights_strategy, st.integers(1, 200), st.integers(0, 6), st.randoms(use_true_random=False))
def test_identical_to_brute_force_on_random_countries(raw, n, dp, rnd):
    w = normalise(raw, dp)
    tiles = rnd.sample(range(10**6), len(w))
    got, _ = plan(tiles, w, n, dp)
    assert got == allocate_reference(tiles, w, n, dp)
    assert sum(got.values()) == n


@settings(max_examples=200, deadline=None)
@given(weights_strategy, st.integers(1, 100), st.integers(0, 5))
def test_monotone_in_weight(raw, n, dp):
    w = normalise(raw, dp)
    got, _ = plan(list(range(len(w))), w, n, dp)
    count = [got.get(i, 0) for i in range(len(w))]
    for i in range(len(w)):
        for j in range(len(w)):
            if w[i] > w[j]:
                assert count[i] >= count[j]
            if w[i] == w[j] and i < j:
                assert count[i] >= count[j]  # equal weights: the lower tile_id is served first


@settings(max_examples=100, deadline=None)
@given(weights_strategy, st.lists(st.integers(1, 60), min_size=1, max_size=30), st.integers(0, 4))
def test_allocate_pairs_shares_plans_and_matches_the_reference(raw, ns, dp):
    w = normalise(raw, dp)
    tiles = np.arange(100, 100 + len(w), dtype=np.uint64)
    merchants = np.arange(len(ns), dtype=np.uint64) * np.uint64(2**59)
    prefix = weight_prefix("JP", tiles, np.array(w, np.uint64), dp, max(ns))
    out = allocate_pairs(prefix, merchants, np.array(ns))
    assert out["plans"] == len(set(ns)) and out["pairs"] == len(ns)
    for m, n in zip(merchants, ns):
        rows = out["merchant_id"] == m
        assert dict(zip(out["tile_id"][rows].tolist(), out["n_sites_tile"][rows].tolist())) == \
            allocate_reference(tiles, w, n, dp)
        assert np.all(np.diff(out["tile_id"][rows].astype(np.int64)) > 0)


def test_prefix_is_short_for_a_big_country():
    rng = np.random.default_rng(1)
    T, dp = 1_000_000, 8
    w = rng.integers(1, 200, T).astype(np.uint64)
    w[0] += np.uint64(10**dp) - w.sum(dtype=np.uint64)  # make them sum to K
    tiles = rng.permutation(T).astype(np.uint64)
    prefix = weight_prefix("RU", tiles, w, dp, max_n=300)
    assert len(prefix.tile_id) == 600 and prefix.n_tiles == T
    got = dict(zip(*[a.tolist() for a in plan_for_n(prefix, 300)[:2]]))
    ref = allocate_reference(tiles, w, 300, dp)
    assert got == ref


def test_prefix_with_millions_of_equal_weights_takes_the_lowest_tile_ids():
    rng = np.random.default_rng(2)
    T = 2_000_000
    tiles = rng.permutation(T).astype(np.uint64) * np.uint64(3)
    w = np.full(T, 50, np.uint64)  # K = 10^8 spread evenly: every remainder ties
    prefix = weight_prefix("RU", tiles, w, 8, max_n=7)
    assert prefix.tile_id.tolist() == [3 * i for i in range(14)]
    tid, cnt, tie = plan_for_n(prefix, 7)
    assert tid.tolist() == [3 * i for i in range(7)] and cnt.tolist() == [1] * 7 and tie


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=300).filter(lambda w: sum(w) > 0), st.integers(1, 40),
       st.integers(1, 7), st.randoms(use_true_random=False))
def test_prefix_read_in_chunks_equals_the_whole(raw, max_n, n_chunks, rnd):
    from segment1b.s4_alloc_plan import weight_prefix_chunks

    w = np.array(normalise(raw, 4), np.uint64)
    tiles = np.array(rnd.sample(range(10**6), len(w)), np.uint64)
    whole = weight_prefix("IT", tiles, w, 4, max_n)
    cuts = sorted(rnd.sample(range(1, len(w)), min(n_chunks, len(w) - 1)))
    chunks = list(zip(np.split(tiles, cuts), np.split(w, cuts)))
    part = weight_prefix_chunks("IT", chunks, 4, max_n)
    assert part.tile_id.tolist() == whole.tile_id.tolist() and part.n_tiles == whole.n_tiles
