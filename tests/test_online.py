"""partial_fit: online EM and stochastic VI on the shared statistics kernel."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.covariance import ledoit_wolf
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

import skvi._base
from skvi import DegenerateFitWarning, EMGaussianMixture, VariationalGaussianMixture
from skvi._covariance import covariance_unit
from skvi._online import (
    RunningStatistics,
    step_size,
    stream_step_size,
)
from skvi._shrinkage import shrinkage_intensity
from skvi._stats import ArrayData

from .helpers import COVARIANCE_TYPES

ESTIMATORS = [EMGaussianMixture, VariationalGaussianMixture]


def four_clusters(seed, n_samples):
    rng = np.random.RandomState(seed)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    scales = np.array([0.6, 1.0, 1.4, 0.8])
    labels = rng.randint(4, size=n_samples)
    noise = rng.normal(size=(n_samples, 2)) * scales[labels, np.newaxis]
    return centers[labels] + noise


def stream(model, X, batch_size, n_passes, seed):
    rng = np.random.RandomState(seed)
    for _ in range(n_passes):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            model.partial_fit(X[order[start : start + batch_size]])
    return model


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_streaming_reaches_the_batch_fit(estimator, covariance_type):
    X, held_out = four_clusters(0, 8000), four_clusters(1, 4000)
    params = dict(n_components=4, covariance_type=covariance_type, random_state=0)
    if estimator is VariationalGaussianMixture:
        params["total_samples"] = len(X)
    batch = estimator(**params).fit(X)
    online = stream(estimator(**params), X, batch_size=500, n_passes=5, seed=2)
    assert online.n_iter_ == 5 * 16
    assert online.score(held_out) == pytest.approx(batch.score(held_out), rel=0.01)
    # The two fits found the same clusters.
    assert_allclose(
        np.sort(online.means_[:, 0] + 10 * online.means_[:, 1]),
        np.sort(batch.means_[:, 0] + 10 * batch.means_[:, 1]),
        atol=0.1,
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_stream_attributes_say_what_happened(estimator):
    X = four_clusters(3, 3000)
    model = estimator(n_components=4, random_state=0)
    for start in range(0, 3000, 1000):
        model.partial_fit(X[start : start + 1000])
    assert model.n_iter_ == 3
    assert model.lower_bounds_.shape == (3,)
    assert model.lower_bound_ == model.lower_bounds_[-1]
    assert np.all(np.isfinite(model.lower_bounds_))
    assert model.converged_ is False
    assert not hasattr(model, "half_step_lower_bounds_")
    assert not hasattr(model, "kl_gaps_")
    assert model.weights_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_first_step_is_the_batch_statistics_of_its_minibatch(estimator):
    # One partial_fit on an unfitted model is one iteration of the batch
    # algorithm from the same initialisation (for VI with total_samples set
    # to the minibatch's size, and the stream's shrunk covariance prior).
    X = four_clusters(4, 600)
    params = dict(n_components=4, random_state=0)
    online = estimator(**params).partial_fit(X)
    if estimator is VariationalGaussianMixture:
        online = estimator(total_samples=len(X), **params).partial_fit(X)
        params.update(covariance_prior=online.covariance_prior_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = estimator(max_iter=1, tol=0.0, **params).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose(getattr(online, name), getattr(batch, name), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_streams_default_covariance_prior_is_shrunk_by_ledoit_and_wolf(
    covariance_type,
):
    # A first minibatch of 100 rows in 64 features stands for the stream:
    # its covariance's smallest eigenvalues are several times too small, so
    # the default prior of "full" and "tied" takes Ledoit and Wolf's
    # estimate (scikit-learn's ledoit_wolf is the reference); "diag" and
    # "spherical" keep the per-feature variances, as a batch fit does.
    X = load_digits().data[:100] + np.random.RandomState(0).uniform(size=(100, 64))
    reg = 1e-6
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    online = VariationalGaussianMixture(**params).partial_fit(X)
    batch = VariationalGaussianMixture(max_iter=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch.fit(X)
    if covariance_type in ("full", "tied"):
        shrunk, intensity = ledoit_wolf(X)
        assert 0.1 < intensity < 0.9
        # ledoit_wolf divides by n, the prior by n - 1 (as np.cov).
        expected = shrunk * 100 / 99 + reg * np.eye(64)
        assert_allclose(online.covariance_prior_, expected, rtol=1e-12)
        smallest = np.linalg.eigvalsh(online.covariance_prior_)[0]
        assert smallest > 3 * np.linalg.eigvalsh(batch.covariance_prior_)[0]
    else:
        assert_allclose(online.covariance_prior_, batch.covariance_prior_, rtol=0)
    # The intensity counts weights as precision weights: scaling them all
    # changes nothing, and a row of weight 2 is not two rows. Weight 0 is
    # no row.
    weights = np.r_[np.full(50, 3.0), np.full(50, 1.5)]
    intensity = shrinkage_intensity(X, weights)
    assert shrinkage_intensity(X, 1e6 * weights) == pytest.approx(intensity, rel=1e-12)
    twice = np.r_[np.full(50, 2.0), np.ones(50)]
    doubled = np.r_[X, X[:50]]
    assert shrinkage_intensity(doubled, np.ones(150)) < shrinkage_intensity(X, twice)
    weighted = VariationalGaussianMixture(**params).partial_fit(
        X, sample_weight=weights
    )
    dropped = VariationalGaussianMixture(**params).partial_fit(
        np.r_[X, X[:7] + 50.0], sample_weight=np.r_[weights, np.zeros(7)]
    )
    assert_allclose(dropped.covariance_prior_, weighted.covariance_prior_, rtol=1e-12)


def test_a_large_first_minibatch_keeps_nearly_its_own_covariance_as_prior():
    # The shrinkage intensity goes to 0 as the rows grow.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(20000, 4)) @ np.array(
        [[1.0, 0.5, 0, 0], [0, 1.0, 0.3, 0], [0, 0, 2.0, 0], [0, 0, 0, 0.5]]
    )
    online = VariationalGaussianMixture(n_components=2, random_state=0).partial_fit(X)
    assert_allclose(online.covariance_prior_, np.cov(X.T) + 1e-6 * np.eye(4), rtol=2e-3)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_partial_fit_after_fit_continues_and_fit_starts_afresh(estimator):
    X, more = four_clusters(5, 4000), four_clusters(6, 500)
    params = dict(n_components=4, random_state=0)
    fitted = estimator(**params).fit(X)
    means = fitted.means_.copy()
    fitted.partial_fit(more)
    assert fitted.n_iter_ == 1
    # One step from the fitted statistics moves the means only a little.
    assert np.abs(fitted.means_ - means).max() < 0.2
    assert not np.allclose(fitted.means_, means, rtol=0, atol=1e-12)
    # fit after partial_fit starts afresh: the same as a new fit.
    refitted = fitted.fit(X)
    fresh = estimator(**params).fit(X)
    assert_allclose(refitted.means_, fresh.means_, rtol=1e-12)
    assert refitted.n_iter_ == fresh.n_iter_
    assert hasattr(refitted, "half_step_lower_bounds_")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_fit_after_partial_fit_warm_starts_when_asked(estimator):
    X = four_clusters(7, 2000)
    model = estimator(n_components=4, random_state=0, warm_start=True)
    stream(model, X, batch_size=500, n_passes=1, seed=0)
    start = model.means_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(max_iter=1).fit(X)
    # One batch iteration from the streamed parameters.
    assert np.abs(model.means_ - start).max() < 0.1


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_later_calls_must_have_the_fitted_number_of_features(estimator):
    model = estimator(n_components=2, random_state=0).partial_fit(four_clusters(8, 200))
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(np.zeros((10, 3)))
    # Nor may the stream change shape: it restarted silently, and lost what
    # it had learnt. The refused call leaves the model as it was.
    steps = model.n_iter_
    model.set_params(n_components=3)
    with pytest.raises(ValueError, match="has 2 components .* asked for 3"):
        model.partial_fit(four_clusters(9, 50))
    assert model.n_iter_ == steps and len(model.weights_) == 2


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_blending_statistics_is_pooling_the_rows(covariance_type):
    # Blended statistics equal those of the rows pooled with the weights
    # the step sizes give them, far from the origin as well.
    rng = np.random.RandomState(9)
    first, second = rng.normal(size=(50, 3)) + 1e6, rng.normal(size=(70, 3)) + 1e6
    unit = covariance_unit(covariance_type, 1, 3)

    def statistics(X, weights):
        return ArrayData(X, weights).one_component_statistics(unit).moments

    rho = 0.3
    a = RunningStatistics.from_moments(statistics(first, np.ones(50)))
    b = RunningStatistics.from_moments(statistics(second, np.ones(70)))
    blended = a.blend(b, rho, unit)
    pooled = RunningStatistics.from_moments(
        statistics(
            np.vstack([first, second]),
            np.concatenate([np.full(50, (1 - rho) / 50), np.full(70, rho / 70)]),
        )
    )
    assert_allclose(blended.nk, pooled.nk, rtol=1e-12)
    assert_allclose(blended.means, pooled.means, rtol=1e-14)
    assert_allclose(blended.scatter, pooled.scatter, rtol=1e-9)


def test_step_sizes_follow_the_lda_schedule():
    assert step_size(1, 10.0, 0.7) == pytest.approx(11.0**-0.7)
    assert step_size(5, 1.0, 1.0) == pytest.approx(1 / 6)


def test_early_steps_average_the_minibatches_exactly():
    # A minibatch's share of the weight seen while it exceeds rho_t: 1/t
    # for equal minibatches, so the first one is diluted at once.
    assert stream_step_size(1, 1 / 2, 10.0, 0.7) == 1 / 2
    assert stream_step_size(2, 1 / 3, 10.0, 0.7) == 1 / 3
    assert stream_step_size(40, 1 / 41, 10.0, 0.7) == step_size(40, 10.0, 0.7)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_a_component_with_fewer_rows_than_features_takes_the_pooled_scatter(
    covariance_type,
):
    # Component 0 stands for 2 rows of 3 features (its own scatter would
    # be singular), component 1 for 8: 0 takes the pooled within-component
    # covariance, 1 keeps its own.
    rng = np.random.RandomState(10)
    unit = covariance_unit(covariance_type, 2, 3)
    X = rng.normal(size=(10, 3))
    resp = np.zeros((10, 2))
    resp[:2, 0] = resp[2:, 1] = 1.0
    per_component = [
        ArrayData(X, r).one_component_statistics(covariance_unit(covariance_type, 1, 3))
        for r in resp.T
    ]
    scatters = np.concatenate([s.moments.scatter for s in per_component])
    running = RunningStatistics(
        np.array([0.2, 0.8]), X[:2].mean(0) + np.zeros((2, 3)), scatters / 10, 10.0
    )
    moments = running.moments(10.0, unit)
    pooled = scatters.sum(axis=0) / 10
    assert_allclose(moments.scatter[0], 2 * pooled, rtol=1e-14)
    assert_allclose(moments.scatter[1], scatters[1], rtol=1e-14)
    # Once the stream has seen enough rows, every component keeps its own.
    grown = RunningStatistics(running.nk, running.means, running.scatter, 20.0)
    assert_allclose(grown.moments(20.0, unit).scatter, scatters * 2, rtol=1e-14)


def dequantised_digits(seed):
    """Digits with U(0, 1) noise added to the pixel counts, split 70/30.

    Raw pixels are constant within some clusters: every fit of them is
    degenerate (see the test below), and held-out scores then measure the
    held-out rows' few values in those directions more than the fit.
    """
    rng = np.random.RandomState(seed)
    X = load_digits().data
    X = X + rng.uniform(size=X.shape)
    return train_test_split(X, test_size=0.3, random_state=seed)


STREAMS_WITHIN_2_PERCENT = [
    (estimator, covariance_type)
    for estimator in ESTIMATORS
    for covariance_type in COVARIANCE_TYPES
]


@pytest.mark.parametrize(("estimator", "covariance_type"), STREAMS_WITHIN_2_PERCENT)
def test_streaming_many_features_comes_within_2_percent_of_the_batch_fit(
    estimator, covariance_type
):
    # Digits: 64 features, 100-row minibatches, 5 passes. A first
    # minibatch gives each of 10 components about 10 rows, too few for a
    # 64 x 64 covariance; the full stream used to collapse onto one
    # component (weight 0.86) with a held-out score 20-31% below the batch
    # fit's. VI "full" ended 0.4-5.9% below on 4 of 6 seeds until its
    # default prior, taken from the first minibatch, was shrunk (Ledoit and
    # Wolf). Every seed must come within 2%. Three seeds: any three of
    # those six include a seed that VI "full" failed before the shrinkage
    # (it passed only two), and the full stream's collapse failed every
    # seed.
    for seed in range(3):
        X, held_out = dequantised_digits(seed)
        params = dict(
            n_components=10, covariance_type=covariance_type, random_state=seed
        )
        batch = estimator(**params).fit(X)
        if estimator is VariationalGaussianMixture:
            params["total_samples"] = len(X)
        online = stream(estimator(**params), X, batch_size=100, n_passes=5, seed=seed)
        reference = batch.score(held_out)
        assert online.score(held_out) >= reference - 0.02 * abs(reference), seed
        assert online.degenerate_ is None


def test_a_degenerate_stream_over_many_features_says_what_to_change():
    # Raw digits / 16 have pixels constant within clusters: the likelihood
    # grows without bound as a full component shrinks onto them, the batch
    # fit's and the stream's held-out scores then vary by tens of percent
    # with the seed (batch 52 to 94 over seeds 0-5), and no stream can
    # promise to land within 2% of a batch fit. It says so at once.
    X = load_digits().data[:600] / 16.0
    em = EMGaussianMixture(n_components=10, covariance_type="full", random_state=0)
    with pytest.warns(DegenerateFitWarning, match="larger reg_covar"):
        stream(em, X, batch_size=100, n_passes=1, seed=0)
    assert em.degenerate_ is not None


def test_the_stream_keeps_a_bounded_history(monkeypatch):
    # Every call costs the same however long the stream: lower_bounds_
    # keeps the last STREAM_HISTORY estimates and no other state grows.
    # A history of 20 rather than the default's 1000: the same code in 25
    # calls rather than 1005 (1.9 s).
    monkeypatch.setattr(skvi._base, "STREAM_HISTORY", 20)
    history = skvi._base.STREAM_HISTORY
    X = four_clusters(11, 10)[:, :1]
    model = EMGaussianMixture(n_components=1, random_state=0)

    def size(value):
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        return np.asarray(value, dtype=object).size

    bounds, sizes = [], []
    for _ in range(history + 5):
        model.partial_fit(X)
        bounds.append(model.lower_bound_)
        sizes.append(size(vars(model)))
    assert model.n_iter_ == history + 5
    assert_allclose(model.lower_bounds_, bounds[-history:], rtol=0)
    assert model.lower_bounds_.shape == (history,)
    assert len(set(sizes[history:])) == 1


def test_the_stream_counts_rows_not_the_scale_of_each_minibatchs_weights():
    # EM reads a minibatch's weights only relative to each other: scaling
    # each minibatch's weights by its own constant changes nothing.
    X = four_clusters(12, 600)
    plain = EMGaussianMixture(n_components=4, random_state=0)
    scaled = EMGaussianMixture(n_components=4, random_state=0)
    scales = [1.0, 3.0, 1e-3, 7.0, 1.0, 50.0]
    for batch, scale in zip(np.split(X, 6), scales, strict=True):
        plain.partial_fit(batch)
        scaled.partial_fit(batch, sample_weight=np.full(100, scale))
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose(getattr(scaled, name), getattr(plain, name), rtol=1e-10)
