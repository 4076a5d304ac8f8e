"""Every benchmark script imports against the current library (they are not run in tests)."""

import glob
import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(BENCH, "*.py"))), ids=os.path.basename
)
def test_bench_script_imports(path):
    spec = importlib.util.spec_from_file_location(f"bench_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{path} has no main()"
