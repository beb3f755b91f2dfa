"""The package's public face (segment1b/__init__.py): every name of ``__all__`` resolves to the object its
module defines, and ``import segment1b`` alone loads none of the heavy libraries."""

import subprocess
import sys

import pytest

import segment1b


@pytest.mark.parametrize("name", [n for n in segment1b.__all__ if n != "__version__"])
def test_public_names_are_the_modules_own_objects(name):
    import importlib

    home = importlib.import_module(f"segment1b.{segment1b._HOME[name]}")
    assert getattr(segment1b, name) is getattr(home, name)
    assert name in dir(segment1b)


def test_all_lists_exactly_the_lazily_resolved_names():
    assert set(segment1b.__all__) == set(segment1b._HOME) | {"__version__"}


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        segment1b.nope  # noqa: B018


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, segment1b; heavy = {'numpy', 'pyarrow', 'fsspec', 'shapely', 'pandas'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
