"""Every benchmark script imports against the current library (they are not run in tests)."""

import glob
import importlib.util
import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environment():
    """Benchmarks pin thread counts at import; keep that out of later tests' subprocesses."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(BENCH, "*.py"))), ids=os.path.basename
)
def test_bench_script_imports(path):
    spec = importlib.util.spec_from_file_location(f"bench_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{path} has no main()"


def test_importing_benchmarks_leaves_the_environment_alone():
    before = dict(os.environ)
    for path in sorted(glob.glob(os.path.join(BENCH, "*.py"))):
        spec = importlib.util.spec_from_file_location("bench_env_check", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
    # Thread-count variables are set on purpose (single-thread timing); nothing else may change.
    assert changed <= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                       "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                       "TF_CPP_MIN_LOG_LEVEL"}, changed  # fmt: skip
