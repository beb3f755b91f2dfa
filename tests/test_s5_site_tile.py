"""S5 kernel: the slot rule on hand-computed cases (including a tie in u), the RNG vectors, E504."""

import json
from pathlib import Path

import numpy as np
import pytest

from segment1b import rng, s5_site_tile
from segment1b.errors import IntegrityError
from reference import assignment_reference
from segment1b.s5_site_tile import assign_sites

VECTORS = json.loads((Path(__file__).parent / "data" / "rng.json").read_text())


def test_hand_computed_permutation_with_a_tie_in_u(monkeypatch):
    # one pair, n = 4, plan: tile 10 x2, tile 20 x1, tile 30 x1 -> slots [10, 10, 20, 30]
    # u by site_order 1..4 = 0.5, 0.2, 0.5, 0.1: sorted by (u, site_order) -> sites 4, 2, 1, 3 (1 before 3: tie)
    crafted = np.array([0.5, 0.2, 0.5, 0.1])
    monkeypatch.setattr(s5_site_tile.rng, "u01", lambda x: crafted[: len(x)])
    out = assign_sites("FR", np.array([7], np.uint64), np.array([4]), np.array([7, 7, 7], np.uint64),
                       np.array([10, 20, 30], np.uint64), np.array([2, 1, 1]), b"\0" * 32, "3c" * 32)
    assert out["site_order"].tolist() == [1, 2, 3, 4]
    assert out["tile_id"].tolist() == [20, 10, 30, 10]
    assert assignment_reference(crafted.tolist(), [10, 10, 20, 30]) == [20, 10, 30, 10]


def test_uniforms_and_counters_are_the_known_answer_vectors():
    for vec in VECTORS["s5_substreams"]:
        master = rng.master_material(int(vec["seed"]), vec["manifest_fingerprint"])
        n = len(vec["draws"])
        m = np.array([int(vec["merchant_id"])], np.uint64)
        out = assign_sites(vec["legal_country_iso"].upper(), m, np.array([n]), m, np.array([5], np.uint64),
                           np.array([n]), master, vec["parameter_hash"])
        assert [float.hex(float(u)) for u in out["u"]] == [d["u_hex"] for d in vec["draws"]]
        assert out["before_lo"].tolist() == [int(d["before_lo"]) for d in vec["draws"]]
        assert out["after_hi"].tolist() == [int(d["after_hi"]) for d in vec["draws"]]


def test_several_pairs_fill_their_own_slots_by_the_rule():
    master = rng.master_material(42, "ab" * 32)
    merchants = np.array([3, 2**63 + 5, 2**64 - 1], np.uint64)
    n = np.array([5, 1, 3])
    plan_m = np.array([3, 3, 2**63 + 5, 2**64 - 1, 2**64 - 1], np.uint64)
    plan_t = np.array([100, 200, 7, 40, 41], np.uint64)
    plan_c = np.array([3, 2, 1, 1, 2])
    out = assign_sites("JP", merchants, n, plan_m, plan_t, plan_c, master, "3c" * 32)
    for i, m in enumerate(merchants):
        rows = out["merchant_id"] == m
        slots = np.repeat(plan_t[plan_m == m], plan_c[plan_m == m]).tolist()
        assert out["tile_id"][rows].tolist() == assignment_reference(out["u"][rows].tolist(), slots)
        assert sorted(out["tile_id"][rows].tolist()) == sorted(slots)


def test_a_plan_that_does_not_sum_to_n_is_e504():
    with pytest.raises(IntegrityError) as e:
        assign_sites("DE", np.array([1, 2], np.uint64), np.array([3, 2]), np.array([1, 2], np.uint64),
                     np.array([9, 9], np.uint64), np.array([3, 1]), b"\0" * 32, "3c" * 32)
    assert e.value.code == "E504_SUM_TO_N_MISMATCH" and "planned" in str(e.value) and "'DE'" in str(e.value)
