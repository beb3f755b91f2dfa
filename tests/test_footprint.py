"""jobs/footprint.py: the minimum worker memory of a run, and the refusal of a limit below it (issue #14)."""

from __future__ import annotations

import pytest

from jobs import footprint
from jobs.footprint import MiB, Need

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("needs, threads, pause, expected_mib", [
    # (floor 360 MiB + threads x the largest need) x 1.1 / pause, rounded up to a MiB
    ([Need("a", 0)], 1, 0.8, 495),
    ([Need("a", 100 * MiB), Need("b", 10 * MiB)], 1, 0.8, 633),
    ([Need("a", 100 * MiB)], 2, 0.8, 770),
    ([Need("a", 100 * MiB)], 1, 1.0, 506),
])
def test_minimum_memory_limit(needs, threads, pause, expected_mib):
    limit, largest = footprint.minimum_memory_limit(needs, threads, pause)
    assert limit == expected_mib * MiB and largest == max(needs, key=lambda n: n.bytes)


def test_the_issue_s_limits_are_below_the_minimum_of_x10():
    """x10 on the default part size: 400 MB (hung in S4) and 600 MB (hung in S9) are refused."""
    sites = footprint.largest_part(footprint.expected_sites("x10"), 1 << 18)
    assert sites == (1 << 18) + 2000
    limit, need = footprint.minimum_memory_limit([footprint.part_need(sites)])
    assert 600 * 10**6 < limit < 1024 * MiB and "264 144 sites" in need.what


def test_expected_sites_is_the_generator_s_mean(tmp_path):
    """The model's sites per scale against a generated reference catalogue (16 850 merchants; the heavy tail
    of outlets per merchant makes a tiny catalogue of 1 000 merchants too noisy to compare)."""
    from jobs.generate import countries_from_places, run_generate
    from segment1b.storage import Storage

    got = run_generate(Storage(str(tmp_path)), None, countries_from_places(), scale="reference", seed=42, out=None,
                       show=False)
    rows = got["summary"]["rows"]
    assert abs(footprint.expected_sites("reference") - rows) < 0.05 * rows


def test_unit_budget_follows_the_limit():
    assert footprint.unit_budget(2**30, 1, 0.8) > footprint.unit_budget(2**30, 4, 0.8) > 0
    assert footprint.unit_budget(300 * MiB, 1, 0.8) == 0  # below the floor: nothing left for a unit


@pytest.mark.cluster
def test_a_limit_below_the_minimum_is_refused_naming_it(client):
    from cluster import ClusterConfigError

    limit = client.run(footprint.worker_memory)  # the session's workers: 4 GiB, 1 thread
    assert {v[0] for v in limit.values()} == {4 * 2**30}
    footprint.check_memory(client, [footprint.part_need(2_000_000)], step="a test")  # 1.9 GiB of parts: fits
    with pytest.raises(ClusterConfigError) as e:
        footprint.check_memory(client, [footprint.part_need(5_000_000), Need("small", 1)], step="a test")
    err = e.value
    assert err.code == "C001_OPTION_INVALID"
    assert "has a memory limit of 4.00 GiB; a test needs at least 6.89 GiB per worker" in err.message, err.message
    assert "the S4-S6 writer of a part of 5 000 000 sites" in err.message
    assert "--memory-limit 7052MiB" in err.hint and "nothing was computed" in err.hint
