"""Test session setup."""

import os
import shutil
import subprocess
import sys
import tempfile

# scikit-learn's estimator checks run their array-API check (numpy namespace
# only, since skvi does not claim array-API support) only when scipy is in
# array-API mode, which must be chosen before scipy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from .helpers import NUMBA_WARMED  # noqa: E402

# Hypothesis draws its examples from a new random seed on every run unless
# told otherwise, so a run (or a CI machine) could meet an example that no
# earlier run met: the suite's result would vary from run to run. Every run
# tries the same examples (for a given Hypothesis version), each test's
# drawn from a hash of that test; SKVI_HYPOTHESIS_PROFILE=explore draws new
# ones, to look for failures that the fixed examples miss.
settings.register_profile("derandomized", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("SKVI_HYPOTHESIS_PROFILE", "derandomized"))


# helpers.compile_missing_kernels, run once, leaves numba's cache written;
# then the file that helpers.NUMBA_WARMED names is written.
_NUMBA_WARMUP = """
import sys
try:
    import skvi._missing
    if skvi._missing.compiled_kernels() is not None:
        from tests.helpers import compile_missing_kernels
        compile_missing_kernels()
finally:
    open(sys.argv[1], "w").close()
"""


def pytest_configure(config):
    """Share the cores between pytest-xdist's workers; warm numba's cache.

    Each worker's BLAS and OpenMP get its share of the cores (as
    scikit-learn's own test suite does): two workers on two cores, each with
    the libraries' default of a thread per core, would run four threads on
    two cores, and idle OpenBLAS and OpenMP threads spin before they sleep.
    scikit-learn's KMeans (the default start) runs on OpenMP: on tiny data a
    call took about 0.12 s with two threads in a busy worker, 0.015 s with
    one. Tests of threading set their own limits.

    Then the missing-entry kernels are compiled once, beside the run. On a
    fresh clone numba compiles them in every process that first needs
    them (about 15 s of CPU each): each pytest-xdist worker did. The
    controller starts one process that compiles them while the workers
    collect and run the first tests; a worker that needs them later loads
    numba's cache instead. The tests of the compiled path wait for it
    (:func:`wait_for_numba_warmup`); any other test that needs the kernels
    sooner compiles them itself, as without it.
    """
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        share = max((os.cpu_count() or 1) // int(workerinput["workercount"]), 1)
        config._skvi_thread_limits = threadpool_limits(share)
        return
    if not getattr(config.option, "numprocesses", 0):
        return
    # From the repository's root, whose skvi the workers import (tests is a
    # package: pytest puts its parent first on their path).
    marker = os.path.join(tempfile.mkdtemp(prefix="skvi-tests-"), "numba-warmed")
    os.environ[NUMBA_WARMED] = marker
    config._skvi_numba_warmup = subprocess.Popen(
        [sys.executable, "-c", _NUMBA_WARMUP, marker],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pytest_unconfigure(config):
    warmup = getattr(config, "_skvi_numba_warmup", None)
    if warmup is None:
        return
    if warmup.poll() is None:
        warmup.kill()
        warmup.wait()
    shutil.rmtree(os.path.dirname(os.environ.pop(NUMBA_WARMED)), ignore_errors=True)


def _require_grouping(session):
    """Fail the Dask tests where ``--dist loadgroup`` did not group them.

    pytest-xdist marks a grouped test by a suffix of its node id. Where
    that has no effect (pytest 9.2 with pytest-xdist 3.8: pytest-xdist
    issue #1386), every worker would start its own cluster for the Dask
    tests, with no error: they fail instead, saying why.
    """
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            pytest.fail(
                f"pytest-xdist's --dist loadgroup did not group {item.nodeid} "
                f"(pytest {pytest.__version__}; pytest-xdist issue #1386): "
                "install the test extra's pytest (pip install '.[test]'), or "
                "run without --dist loadgroup.",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def dask_client(request):
    """A real two-process Dask cluster, shared by the Dask tests.

    Two workers with one thread each and a memory limit, so tests can fit
    arrays larger than one worker's memory; closed at the end of the run.
    """
    _require_grouping(request.session)
    distributed = pytest.importorskip(
        "distributed", reason="the test extra installs dask and distributed"
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="400MiB",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
