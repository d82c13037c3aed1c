"""Reproducibility: a fixed random_state gives the same fit however the work
is split.

* Across BLAS thread counts (threadpoolctl) the fits are bit-identical: the
  kernel's products split their output, not their sums, between threads.
* Across chunk sizes (scikit-learn's ``working_memory``) the sums are added
  in another order, so the fits agree to rounding (1e-12 relative in
  float64, 1e-5 in float32), with the same iterations and the same labels.
"""

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_limits

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES

PARAMETERS = ("weights_", "means_", "covariances_", "lower_bounds_")


def clusters(dtype, missing):
    # 1,500 rows: at working_memory=0.05 MiB a fit's passes still take 3-10
    # chunks of 160-570 rows, a partial_fit batch's 2-4 (7,500 rows took up
    # to 47), where 1 MiB takes one.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(c, 1.0, (500, 4)) for c in (0.0, 4.0, 8.0)])
    if missing:
        X[rng.rand(*X.shape) < 0.1] = np.nan
    return X.astype(dtype)


def fit(estimator, covariance_type, X, how, working_memory, threads):
    model = estimator(
        n_components=3, covariance_type=covariance_type, random_state=0, tol=1e-4
    )
    with (
        sklearn.config_context(working_memory=working_memory),
        threadpool_limits(threads),
    ):
        if how == "fit":
            return model.fit(X)
        for batch in np.array_split(X, 3):
            model.partial_fit(batch)
        return model


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "estimator", [EMGaussianMixture, VariationalGaussianMixture], ids=["EM", "VI"]
)
def test_fits_do_not_depend_on_threads_or_chunks(
    estimator, covariance_type, missing, how
):
    X = clusters(np.float64, missing)
    reference = fit(estimator, covariance_type, X, how, 1024, 1)
    threaded = fit(estimator, covariance_type, X, how, 1024, 2)
    for name in PARAMETERS:
        assert_array_equal(getattr(threaded, name), getattr(reference, name))
    # 0.05 MiB: chunks of a few hundred rows instead of one.
    chunked = fit(estimator, covariance_type, X, how, 0.05, 2)
    assert chunked.n_iter_ == reference.n_iter_
    assert_array_equal(chunked.predict(X), reference.predict(X))
    for name in PARAMETERS:
        assert_allclose(
            getattr(chunked, name), getattr(reference, name), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fits_agree_to_float32_rounding_across_chunks(covariance_type):
    X = clusters(np.float32, missing=False)
    reference = fit(VariationalGaussianMixture, covariance_type, X, "fit", 1024, 1)
    chunked = fit(VariationalGaussianMixture, covariance_type, X, "fit", 0.05, 2)
    assert_array_equal(chunked.predict(X), reference.predict(X))
    for name in ("weights_", "means_", "covariances_"):
        # float32 rounds each entry relative to the size of the sums it comes
        # from: a near-zero covariance is off by the rounding of the others.
        expected = getattr(reference, name)
        scale = 1e-5 * np.max(np.abs(expected))
        assert_allclose(getattr(chunked, name), expected, rtol=1e-5, atol=scale)
