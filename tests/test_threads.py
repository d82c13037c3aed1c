"""Threads: results that do not depend on them, and the user's limits kept.

A fit splits its chunks of rows over as many threads as the BLAS limit
allows (skvi._threads); each chunk's sums are added in chunk order, so one
thread and two give the same model, bit for bit.
"""

import subprocess
import sys
import threading

import numpy as np
import pytest
from joblib import cpu_count
from threadpoolctl import threadpool_info, threadpool_limits

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import fitted_attributes, make_blobs

# Enough rows for several cache-sized chunks of a few features.
N_SAMPLES = 60_000

CASES = {
    "EM full": (EMGaussianMixture, dict(covariance_type="full"), "float64", 0.0),
    "EM diag missing": (
        EMGaussianMixture,
        dict(covariance_type="diag"),
        "float64",
        0.05,
    ),
    "EM tied float32": (
        EMGaussianMixture,
        dict(covariance_type="tied"),
        "float32",
        0.0,
    ),
    # Merge moves price pairs of components in their E-steps.
    "VI spherical merges": (
        VariationalGaussianMixture,
        dict(covariance_type="spherical", merge_components=True),
        "float64",
        0.0,
    ),
    "VI full missing": (
        VariationalGaussianMixture,
        dict(covariance_type="full", merge_components=False),
        "float64",
        0.02,
    ),
}


def _case_data(dtype, missing_fraction):
    X = make_blobs(0, n_samples=N_SAMPLES, n_features=3, n_clusters=3, offset=5.0)
    if missing_fraction:
        rng = np.random.default_rng(1)
        X[rng.random(X.shape) < missing_fraction] = np.nan
        X[np.isnan(X).all(axis=1), 0] = 0.0
    return X.astype(dtype)


def _chunk_threads():
    return [t for t in threading.enumerate() if t.name.startswith("skvi-chunks")]


@pytest.mark.parametrize("case", list(CASES))
def test_one_thread_and_two_fit_the_same_model(case):
    estimator, params, dtype, missing_fraction = CASES[case]
    X = _case_data(dtype, missing_fraction)

    def fit(threads):
        model = estimator(n_components=3, max_iter=4, tol=0.0, random_state=0)
        model.set_params(**params)
        with threadpool_limits(threads):
            model.fit(X)
            return fitted_attributes(model), model.score_samples(X), model.predict(X)

    one = fit(1)
    two = fit(2)
    if cpu_count() >= 2:
        # The second fit did run chunks on the pool.
        assert _chunk_threads()
    attributes_one, scores_one, labels_one = one
    attributes_two, scores_two, labels_two = two
    assert attributes_one.keys() == attributes_two.keys()
    for name, value in attributes_one.items():
        np.testing.assert_array_equal(attributes_two[name], value, err_msg=name)
    np.testing.assert_array_equal(scores_two, scores_one)
    np.testing.assert_array_equal(labels_two, labels_one)


def _blas_threads():
    return sorted(
        (pool["filepath"], pool["num_threads"])
        for pool in threadpool_info()
        if pool["user_api"] == "blas"
    )


def test_a_fit_leaves_the_blas_settings_as_it_found_them():
    X = _case_data("float64", 0.0)
    model = EMGaussianMixture(3, max_iter=2, tol=0.0, random_state=0)
    before = _blas_threads()
    model.fit(X)
    assert _blas_threads() == before
    with threadpool_limits(1):
        limited = _blas_threads()
        model.fit(X)
        model.predict(X)
        assert _blas_threads() == limited
    assert _blas_threads() == before


def test_fits_in_several_threads_at_once_are_those_of_one_thread():
    # Fits in threads other than the main one run their chunks in their own
    # thread, with one BLAS thread: each is the one-thread fit.
    X = _case_data("float64", 0.0)

    def models():
        return [
            EMGaussianMixture(
                k, max_iter=3, tol=0.0, init_params="random_from_data", random_state=0
            )
            for k in (2, 3)
        ]

    with threadpool_limits(1):
        expected = [fitted_attributes(model.fit(X)) for model in models()]
    models = models()
    workers = [threading.Thread(target=model.fit, args=(X,)) for model in models]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for model, attributes in zip(models, expected, strict=True):
        for name, value in attributes.items():
            np.testing.assert_array_equal(fitted_attributes(model)[name], value)


LIMITED_FIT = """
import threading
import numpy as np
from threadpoolctl import threadpool_limits
from skvi import EMGaussianMixture
X = np.random.default_rng(0).normal(size=({n}, 3))
with threadpool_limits(1):
    EMGaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(X).predict(X)
print(sorted(t.name for t in threading.enumerate()))
"""


def test_a_one_thread_limit_keeps_a_fit_on_one_thread():
    # In a fresh interpreter, so that no earlier fit has started the pool.
    completed = subprocess.run(
        [sys.executable, "-c", LIMITED_FIT.format(n=N_SAMPLES)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == "['MainThread']"


def test_results_are_consumed_in_order_with_few_waiting():
    # Workers take the items and consume the results in turn: in the order
    # of the items, never more than 2 * workers started ahead of the next
    # to consume, and each result once.
    from skvi._threads import map_in_order

    started, consumed, ahead = [], [], []
    lock = threading.Lock()

    def work(item):
        with lock:
            started.append(item)
            ahead.append(len(started) - len(consumed))
        # Later items finish first now and then.
        np.linalg.eigvalsh(np.eye(30) * (1 + item % 3))
        return item * item

    map_in_order(work, range(200), 2, consumed.append)
    assert consumed == [item * item for item in range(200)]
    assert max(ahead) <= 4


@pytest.mark.parametrize("failing", ["function", "consume"])
def test_an_error_in_a_worker_stops_the_loop_and_is_raised(failing):
    from skvi._threads import map_in_order

    calls = []

    def work(item):
        calls.append(item)
        if failing == "function" and item == 5:
            raise ValueError("item 5")
        return item

    def consume(result):
        if failing == "consume" and result == 5:
            raise ValueError("item 5")

    with pytest.raises(ValueError, match="item 5"):
        map_in_order(work, range(1000), 2, consume)
    # It stopped: at most a window of items after the failing one started.
    assert len(calls) < 20


def test_the_switch_interval_is_short_while_workers_run_and_put_back():
    from skvi._threads import SWITCH_INTERVAL, map_in_order

    before = sys.getswitchinterval()
    seen = []
    map_in_order(lambda item: seen.append(sys.getswitchinterval()), range(8), 2, id)
    assert max(seen) <= SWITCH_INTERVAL < before
    assert sys.getswitchinterval() == before
    with pytest.raises(ZeroDivisionError):
        map_in_order(lambda item: 1 / 0, range(8), 2, id)
    assert sys.getswitchinterval() == before
