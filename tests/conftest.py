"""Test session setup."""

import os

# scikit-learn's estimator checks run their array-API check (numpy namespace
# only, since skvi does not claim array-API support) only when scipy is in
# array-API mode, which must be chosen before scipy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis draws its examples from a new random seed on every run unless
# told otherwise, so a run (or a CI machine) could meet an example that no
# earlier run met: the suite's result would vary from run to run. Every run
# tries the same examples (for a given Hypothesis version), each test's
# drawn from a hash of that test; SKVI_HYPOTHESIS_PROFILE=explore draws new
# ones, to look for failures that the fixed examples miss.
settings.register_profile("derandomized", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("SKVI_HYPOTHESIS_PROFILE", "derandomized"))


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
