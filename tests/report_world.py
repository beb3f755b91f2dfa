"""The validated synthetic world shared by tests/test_map.py and tests/test_run_report.py (jobs/report/)."""

import io

import world
from jobs.report.run_files import resolve_identity
from jobs.validate import run_s9
from segment1b.storage import Storage

PAIRS = world.random_pairs(150, seed=11)
FP = world.FINGERPRINT
_BUILT: dict[str, tuple] = {}


def validated_world(tmp_path_factory, client):
    """(storage, identity) of the synthetic world placed in several parts, synthesised and validated (S4-S9
    reports, PASS bundle); built on first use.  Tests must not change it (copy the tree first)."""
    if "run" not in _BUILT:
        storage = Storage(str(tmp_path_factory.mktemp("pictures") / "root"))
        ident = world.placed(storage, client, PAIRS)
        assert run_s9(storage, client, ident.seed, FP, out=io.StringIO()).passed
        _BUILT["run"] = (storage, resolve_identity(storage, ident.seed, FP))
    return _BUILT["run"]
