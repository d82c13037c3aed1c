"""EMGaussianMixture: agreement with scikit-learn, invariances, ecosystem."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV

from skvi import EMGaussianMixture
from skvi.datasets import load_old_faithful

from .helpers import (
    COVARIANCE_TYPES,
    dense_covariances,
    make_blobs,
    smoothed_log_likelihood,
)

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


@pytest.fixture(autouse=True)
def _quiet_convergence():
    # Runs with tol=0 stop at max_iter by design.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def sklearn_start(X, covariance_type, n_components=3, seed=1):
    """Initial parameters taken from a short scikit-learn run."""
    start = GaussianMixture(
        n_components, covariance_type=covariance_type, max_iter=2, random_state=seed
    ).fit(X)
    return {
        "weights_init": start.weights_,
        "means_init": start.means_,
        "precisions_init": start.precisions_,
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_agrees_with_sklearn_from_identical_initial_parameters(covariance_type):
    X = make_blobs(0, n_samples=300, n_features=3, n_clusters=3)
    start = sklearn_start(X, covariance_type)
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        reg_covar=0.0,
        tol=0.0,
        max_iter=25,
        **start,
    )
    theirs = GaussianMixture(**params).fit(X)
    ours = EMGaussianMixture(**params).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-8)
    assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-8)
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-8)
    assert_array_equal(ours.predict(X), theirs.predict(X))
    assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-8)
    assert ours.bic(X) == pytest.approx(theirs.bic(X), rel=1e-8)
    assert ours.aic(X) == pytest.approx(theirs.aic(X), rel=1e-8)
    # scikit-learn reports the bound before its last M-step; skvi that of
    # the stored parameters, and keeps both.
    assert ours.lower_bounds_[-2] == pytest.approx(theirs.lower_bound_, rel=1e-8)
    assert_allclose(ours.lower_bounds_[:-1], theirs.lower_bounds_, rtol=1e-8)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_same_init_method_and_seed_give_sklearn_initialisation(
    init_params, covariance_type
):
    # max_iter=0 stores the initial parameters in both libraries.
    X = make_blobs(3, n_samples=200, n_features=2, n_clusters=3)
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        init_params=init_params,
        random_state=7,
        max_iter=0,
    )
    theirs = GaussianMixture(**params).fit(X)
    ours = EMGaussianMixture(**params).fit(X)
    # With single-row seeds scikit-learn's initial weights are N_k / n and
    # do not sum to 1; skvi normalises them.
    assert ours.weights_.sum() == pytest.approx(1.0, rel=1e-14)
    assert_allclose(ours.weights_, theirs.weights_ / theirs.weights_.sum(), rtol=1e-12)
    assert_allclose(ours.means_, theirs.means_, rtol=1e-12)
    seeded = init_params in ("k-means++", "random_from_data")
    if covariance_type == "tied" and seeded:
        # scikit-learn's tied formula pools x x^T over all rows, assuming each
        # row's responsibilities sum to 1, which single-row seeds violate.
        # skvi's is the exact M-step of the seeds: reg_covar I.
        assert_allclose(ours.covariances_, 1e-6 * np.eye(2), rtol=1e-12)
    else:
        # (their raw-moment formulas leave ~1e-13 of cancellation; ours is exact)
        assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_is_the_smoothed_log_likelihood_of_the_stored_fit(covariance_type):
    X = make_blobs(1, n_samples=150, n_features=2, n_clusters=2)
    model = EMGaussianMixture(
        2, covariance_type=covariance_type, reg_covar=0.05, random_state=0
    ).fit(X)
    expected = smoothed_log_likelihood(model, X, np.ones(len(X)), 0.05)
    assert model.lower_bound_ == pytest.approx(expected, rel=1e-10)
    # score() is the plain log-likelihood: lower than the smoothed one only
    # by the reg_covar penalty, which is positive.
    assert model.score(X) > model.lower_bound_
    plain = EMGaussianMixture(
        2, covariance_type=covariance_type, reg_covar=0.0, random_state=0
    ).fit(X)
    assert plain.lower_bound_ == pytest.approx(plain.score(X), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_far_apart_clusters_give_their_exact_sample_moments(covariance_type, dtype):
    # Clusters 1e5 standard deviations apart: responsibilities are exactly
    # 0 or 1, so EM at reg_covar=0 converges to each cluster's own weighted
    # mean and (pooled, diagonal or spherical) covariance, computed here
    # directly about the true cluster means.
    rng = np.random.RandomState(0)
    centers = np.array([[0.0, 0.0], [1e5, 0.0], [0.0, 1e5]])
    labels = np.repeat(np.arange(3), [40, 60, 50])
    X = centers[labels] + rng.normal(size=(len(labels), 2)) @ [[1.0, 0.3], [0, 0.5]]
    model = EMGaussianMixture(
        3,
        covariance_type=covariance_type,
        reg_covar=0.0,
        means_init=centers,
        tol=0.0,
        max_iter=3,
        # The weights and covariances start from k-means: seeded, so the
        # start does not depend on NumPy's global generator.
        random_state=0,
    ).fit(X.astype(dtype))
    n_features = X.shape[1]
    weights, means, scatters = [], [], []
    for k in range(3):
        rows = X[labels == k]
        weights.append(len(rows) / len(X))
        means.append(rows.mean(axis=0))
        scatters.append(np.cov(rows.T, bias=True) * len(rows))
    expected = {
        "full": np.array(scatters) / np.array([40, 60, 50])[:, None, None],
        "tied": np.sum(scatters, axis=0) / len(X),
        "diag": np.array([np.diag(s) for s in scatters]) / [[40], [60], [50]],
        "spherical": np.array([np.trace(s) / n_features for s in scatters])
        / [40, 60, 50],
    }[covariance_type]
    rtol = 1e-10 if dtype == np.float64 else 2e-3
    assert_allclose(model.weights_, weights, rtol=rtol)
    assert_allclose(model.means_, means, rtol=rtol, atol=rtol)
    assert_allclose(model.covariances_, expected, rtol=rtol)


def test_fit_predict_is_fit_then_predict():
    X = make_blobs(9, n_samples=150, n_features=2, n_clusters=3)
    labels = EMGaussianMixture(3, random_state=0).fit_predict(X)
    assert_array_equal(labels, EMGaussianMixture(3, random_state=0).fit(X).predict(X))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_follows_the_fitted_mixture(covariance_type):
    X = make_blobs(14, n_samples=300, n_features=2, n_clusters=2)
    model = EMGaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    draws, labels = model.sample(20_000)
    assert draws.shape == (20_000, 2)
    assert_array_equal(np.bincount(labels, minlength=2).sum(), 20_000)
    covariances = dense_covariances(model)
    for k in range(2):
        mine = draws[labels == k]
        assert_allclose(mine.mean(axis=0), model.means_[k], atol=0.1)
        assert_allclose(np.cov(mine.T), covariances[k], rtol=0.1, atol=0.05)
    again, _ = model.sample(20_000)
    assert_array_equal(draws, again)


def test_bic_picks_the_true_number_of_components():
    rng = np.random.RandomState(15)
    centers = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    X = centers[rng.randint(3, size=600)] + rng.normal(size=(600, 2))
    bics = [
        EMGaussianMixture(k, random_state=0, n_init=2).fit(X).bic(X)
        for k in range(1, 6)
    ]
    assert int(np.argmin(bics)) + 1 == 3


def test_grid_search_over_n_components():
    X = make_blobs(16, n_samples=300, n_features=2, n_clusters=3)
    search = GridSearchCV(
        EMGaussianMixture(random_state=0), {"n_components": [1, 2, 3, 4, 5]}, cv=3
    ).fit(X)
    assert search.best_params_["n_components"] >= 3


def test_init_arrays_are_neither_modified_nor_replaced():
    X = make_blobs(7, n_samples=100, n_features=2, n_clusters=2)
    start = sklearn_start(X, "full", n_components=2)
    copies = {name: value.copy() for name, value in start.items()}
    model = EMGaussianMixture(2, **start).fit(X)
    for name, value in start.items():
        assert_array_equal(value, copies[name])
        assert getattr(model, name) is value


def test_old_faithful_two_eruption_types():
    X = load_old_faithful().data
    model = EMGaussianMixture(2, random_state=0).fit(X)
    order = np.argsort(model.means_[:, 0])
    # Short and long eruptions: about 2.0 and 4.3 minutes.
    assert_allclose(model.means_[order, 0], [2.04, 4.29], atol=0.02)
