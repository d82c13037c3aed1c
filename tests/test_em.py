"""EMGaussianMixture: agreement with scikit-learn, invariances, ecosystem."""

import io
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvi import EMGaussianMixture
from skvi.datasets import load_old_faithful

from .helpers import (
    COVARIANCE_TYPES,
    all_finite,
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
def test_integer_weights_equal_repeated_rows(covariance_type):
    X = make_blobs(2, n_samples=80, n_features=2, n_clusters=3)
    counts = np.random.RandomState(0).randint(0, 4, size=len(X))
    start = sklearn_start(X, covariance_type)
    params = dict(n_components=3, covariance_type=covariance_type, max_iter=20, **start)
    weighted = EMGaussianMixture(**params).fit(X, sample_weight=counts)
    repeated = EMGaussianMixture(**params).fit(np.repeat(X, counts, axis=0))
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)
    assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-11)
    assert weighted.score(X, sample_weight=counts) == pytest.approx(
        repeated.score(np.repeat(X, counts, axis=0)), rel=1e-11
    )
    assert weighted.bic(X, sample_weight=counts) == pytest.approx(
        repeated.bic(np.repeat(X, counts, axis=0)), rel=1e-11
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_results_do_not_depend_on_the_chunk_size(covariance_type):
    X = make_blobs(4, n_samples=500, n_features=3, n_clusters=3)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    whole = EMGaussianMixture(**params).fit(X)
    # About 1 KiB per chunk: a few rows at a time.
    with sklearn.config_context(working_memory=2**-10):
        chunked = EMGaussianMixture(**params).fit(X)
        assert_allclose(chunked.predict_proba(X), whole.predict_proba(X), atol=1e-12)
    assert chunked.n_iter_ == whole.n_iter_
    assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-12)
    assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_adding_a_constant_to_x_changes_nothing(covariance_type):
    X = make_blobs(5, n_samples=300, n_features=2, n_clusters=3)
    shift = np.array([1e6, -3e5])
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    plain = EMGaussianMixture(**params).fit(X)
    moved = EMGaussianMixture(**params).fit(X + shift)
    assert moved.n_iter_ == plain.n_iter_
    # X + shift itself is only exact to about 1e6 * eps = 2e-10.
    assert_allclose(moved.means_ - shift, plain.means_, atol=1e-8)
    assert_allclose(moved.covariances_, plain.covariances_, rtol=1e-8, atol=1e-9)
    assert moved.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-9)


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


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_is_kept_end_to_end(covariance_type):
    X = make_blobs(6, n_samples=400, n_features=3, n_clusters=3)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    single = EMGaussianMixture(**params).fit(X.astype(np.float32))
    double = EMGaussianMixture(**params).fit(X)
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
    ):
        assert getattr(single, name).dtype == np.float32, name
        assert_allclose(getattr(single, name), getattr(double, name), rtol=2e-3)
    X32 = X.astype(np.float32)
    assert single.score_samples(X32).dtype == np.float32
    assert single.predict_proba(X32).dtype == np.float32
    assert single.sample(5)[0].dtype == np.float32
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, rel=1e-5)
    assert np.all(np.diff(single.half_step_lower_bounds_) > -1e-5)


def test_caller_arrays_are_never_modified():
    X = make_blobs(7, n_samples=100, n_features=2, n_clusters=2)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, size=len(X))
    start = sklearn_start(X, "full", n_components=2)
    copies = [a.copy() for a in (X, weights, *start.values())]
    model = EMGaussianMixture(2, **start).fit(X, sample_weight=weights)
    model.score(X, sample_weight=weights)
    model.predict_proba(X)
    model.elbo_decomposition(X, weights)
    for before, after in zip(copies, (X, weights, *start.values()), strict=True):
        assert_array_equal(before, after)
    # Init parameters are stored as given, not replaced by validated copies.
    assert model.means_init is start["means_init"]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_every_init_method_fits_without_nan(covariance_type, init_params):
    X = make_blobs(8, n_samples=120, n_features=2, n_clusters=3)
    model = EMGaussianMixture(
        3, covariance_type=covariance_type, init_params=init_params, random_state=0
    ).fit(X)
    assert all_finite(model)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert np.all(np.isfinite(model.predict_proba(X)))


def test_fit_predict_is_fit_then_predict():
    X = make_blobs(9, n_samples=150, n_features=2, n_clusters=3)
    labels = EMGaussianMixture(3, random_state=0).fit_predict(X)
    assert_array_equal(labels, EMGaussianMixture(3, random_state=0).fit(X).predict(X))


def test_n_init_keeps_the_best_run():
    X = make_blobs(10, n_samples=200, n_features=2, n_clusters=4)
    best = EMGaussianMixture(4, init_params="random", n_init=5, random_state=0).fit(X)
    # The same five runs one by one: they draw from one shared generator.
    rng = np.random.RandomState(0)
    bounds = [
        EMGaussianMixture(4, init_params="random", random_state=rng).fit(X).lower_bound_
        for _ in range(5)
    ]
    assert len(set(np.round(bounds, 6))) > 1
    assert best.lower_bound_ == pytest.approx(max(bounds), rel=1e-12)


def test_warm_start_continues_from_the_stored_fit():
    X = make_blobs(11, n_samples=200, n_features=2, n_clusters=3)
    long_run = EMGaussianMixture(3, max_iter=12, tol=0.0, random_state=0).fit(X)
    stepped = EMGaussianMixture(3, max_iter=3, tol=0.0, random_state=0, warm_start=True)
    for _ in range(4):
        stepped.fit(X)
    assert_allclose(stepped.means_, long_run.means_, rtol=1e-12)
    assert stepped.lower_bound_ == pytest.approx(long_run.lower_bound_, rel=1e-13)
    assert stepped.lower_bounds_[0] == pytest.approx(
        long_run.lower_bounds_[9], rel=1e-13
    )


def test_max_iter_zero_stores_the_initialisation():
    X = make_blobs(12, n_samples=100, n_features=2, n_clusters=2)
    model = EMGaussianMixture(2, max_iter=0, random_state=0).fit(X)
    assert model.n_iter_ == 0
    assert model.lower_bounds_.shape == (1,)
    assert model.kl_gaps_.shape == (0,)
    assert model.lower_bound_ == model.lower_bounds_[0]


def test_verbose_reports_progress():
    X = make_blobs(13, n_samples=100, n_features=2, n_clusters=2)
    output = io.StringIO()
    with redirect_stdout(output):
        EMGaussianMixture(2, verbose=2, verbose_interval=1, random_state=0).fit(X)
    text = output.getvalue()
    assert "Initialization 0" in text
    assert "Iteration 1" in text
    assert "ELBO" in text


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


def test_works_in_pipeline_clone_pickle_and_grid_search():
    X = make_blobs(16, n_samples=300, n_features=2, n_clusters=3)
    pipeline = make_pipeline(StandardScaler(), EMGaussianMixture(3, random_state=0))
    pipeline.fit(X)
    assert pipeline.predict(X).shape == (300,)
    assert np.isfinite(pipeline.score(X))

    model = EMGaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "means_")

    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict(X), model.predict(X))
    assert_allclose(restored.score_samples(X), model.score_samples(X))

    search = GridSearchCV(
        EMGaussianMixture(random_state=0), {"n_components": [1, 2, 3, 4, 5]}, cv=3
    ).fit(X)
    assert search.best_params_["n_components"] >= 3


def test_old_faithful_two_eruption_types():
    X = load_old_faithful().data
    model = EMGaussianMixture(2, random_state=0).fit(X)
    order = np.argsort(model.means_[:, 0])
    # Short and long eruptions: about 2.0 and 4.3 minutes.
    assert_allclose(model.means_[order, 0], [2.04, 4.29], atol=0.02)
