"""Warm-started fits of one iteration each are one long fit, cut in pieces.

scikit-learn's ``test_monotonic_likelihood`` (in
sklearn/mixture/tests/test_gaussian_mixture.py and test_bayesian_mixture.py)
fits with ``warm_start=True, max_iter=1`` until ``converged_`` and asserts
that no fit lowers the training score (EM) or the lower bound (VI). Here it
runs on skvi's estimators, on the same data, and the loop must stop after
exactly as many fits as one fit from the same start takes iterations: the
stopping rule and the merge moves carry over a warm start.
"""

import copy
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture.tests.test_gaussian_mixture import RandomData

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, make_blobs

MAX_FITS = 600


def _warm_loop(model, X, value):
    """Fit one iteration at a time; the values after each fit, in order."""
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(MAX_FITS):
            values.append(value(model.fit(X), X))
            if model.converged_:
                break
    return np.array(values)


def _one_fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def _check_like_one_fit(loop, single, values):
    # scikit-learn's assertion, exactly: no fit lowers the value.
    assert np.all(np.diff(values) >= 0)
    assert loop.converged_ == single.converged_
    if single.converged_:
        assert len(values) == single.n_iter_
        assert loop.lower_bound_ == single.lower_bound_
    else:
        assert len(values) == MAX_FITS


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_warm_started_single_iterations_never_lower_the_score(covariance_type):
    # scikit-learn's test_monotonic_likelihood for GaussianMixture.
    rng = np.random.RandomState(0)
    data = RandomData(rng, scale=7)
    X = data.X[covariance_type]
    start = copy.deepcopy(rng)
    params = dict(
        n_components=data.n_components,
        covariance_type=covariance_type,
        reg_covar=0,
        tol=1e-7,
    )
    loop = EMGaussianMixture(max_iter=1, warm_start=True, random_state=rng, **params)
    scores = _warm_loop(loop, X, lambda model, X: model.score(X))
    single = _one_fit(
        EMGaussianMixture(max_iter=MAX_FITS, random_state=start, **params), X
    )
    _check_like_one_fit(loop, single, scores)


@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vi_warm_started_single_iterations_never_lower_the_bound(
    covariance_type, prior_type
):
    # scikit-learn's test_monotonic_likelihood for BayesianGaussianMixture;
    # its merge moves too must carry over from one fit to the next.
    rng = np.random.RandomState(0)
    data = RandomData(rng, scale=20)
    X = data.X[covariance_type]
    start = copy.deepcopy(rng)
    params = dict(
        weight_concentration_prior_type=prior_type,
        n_components=2 * data.n_components,
        covariance_type=covariance_type,
        tol=1e-3,
    )
    loop = VariationalGaussianMixture(
        max_iter=1, warm_start=True, random_state=rng, **params
    )
    bounds = _warm_loop(loop, X, lambda model, X: model.lower_bound_)
    single = _one_fit(
        VariationalGaussianMixture(max_iter=MAX_FITS, random_state=start, **params), X
    )
    assert single.converged_
    _check_like_one_fit(loop, single, bounds)


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_a_warm_start_on_other_data_starts_the_stopping_rule_afresh(estimator):
    X = make_blobs(3, n_samples=200, n_features=2, n_clusters=3)
    model = estimator(n_components=3, max_iter=2, tol=1e-3, random_state=0)
    _one_fit(model.set_params(warm_start=True), X)
    # The first change of a run on other data has no earlier one to be
    # judged against: one iteration cannot converge.
    _one_fit(model.set_params(max_iter=1), X + 1e-3)
    assert not model.converged_


def test_em_score_of_the_training_data_is_the_lower_bound():
    # With reg_covar=0 the ELBO after the final E-step is the mean
    # log-likelihood score computes row by row: equal to rounding of the sum.
    X = make_blobs(5, n_samples=300, n_features=3, n_clusters=3)
    for covariance_type in COVARIANCE_TYPES:
        model = EMGaussianMixture(
            n_components=3,
            covariance_type=covariance_type,
            reg_covar=0.0,
            random_state=0,
        ).fit(X)
        assert model.score(X) == pytest.approx(model.lower_bound_, rel=1e-14)
