"""Regression tests for the defects an independent review found (issue 9).

Each reproduces a reported failure of the earlier code.
"""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skvi import DegenerateComponentError, EMGaussianMixture, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, all_finite, make_blobs

ESTIMATORS = [EMGaussianMixture, VariationalGaussianMixture]


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def two_clusters_far_from_the_origin(offset, separation=4.0, seed=11):
    rng = np.random.RandomState(seed)
    return (
        np.vstack([rng.normal(0, 1, (400, 3)), rng.normal(separation, 0.5, (300, 3))])
        + offset
    )


# 1. float32 data far from the origin: the bound must not decrease.
@pytest.mark.parametrize(
    "estimator, covariance_type, offset, separation",
    [
        (EMGaussianMixture, "full", 1e6, 4.0),
        (VariationalGaussianMixture, "full", 1e4, 4.0),
        (EMGaussianMixture, "diag", 1e5, 1e3),
        (VariationalGaussianMixture, "diag", 1e5, 1e3),
        (EMGaussianMixture, "tied", 1e6, 4.0),
        (VariationalGaussianMixture, "spherical", 1e6, 4.0),
    ],
)
def test_float32_far_from_the_origin_keeps_the_bound_monotone(
    estimator, covariance_type, offset, separation
):
    X = two_clusters_far_from_the_origin(offset, separation).astype(np.float32)
    params = dict(
        n_components=2,
        covariance_type=covariance_type,
        random_state=0,
        tol=0.0,
        max_iter=30,
    )
    fit32 = estimator(**params).fit(X)
    fit64 = estimator(**params).fit(X.astype(np.float64))
    bounds = fit32.half_step_lower_bounds_
    # float32 rounding of the per-sample bound: about 1e-6 of its value.
    assert np.all(np.diff(bounds) >= -1e-6 * np.abs(bounds[1:]))
    assert fit32.lower_bound_ == pytest.approx(fit64.lower_bound_, abs=1e-5)


# 2. VI's default covariance prior is a continuous function of the weights.
# (Totals this small fit with a warning that the bound is unresolved.)
@pytest.mark.filterwarnings("ignore:sample_weight sums to")
def test_default_covariance_prior_is_continuous_in_the_total_weight():
    X = make_blobs(0, n_samples=200, n_features=3, n_clusters=2)
    covariance = np.cov(X.T, bias=True)

    def prior(weights):
        model = VariationalGaussianMixture(n_components=2, random_state=0, max_iter=0)
        return model.fit(X, sample_weight=weights).covariance_prior_

    unit = prior(np.ones(200))
    # Unit weights: the covariance with ddof=1, as before (plus reg_covar).
    assert_allclose(unit, np.cov(X.T) + 1e-6 * np.eye(3), rtol=1e-10)
    for total in (1.0 + 1e-6, 1.0 + 4e-16, 1e-3, 1e-200):
        value = prior(np.full(200, total / 200))
        # Within a small factor of the data's covariance, whatever the total.
        assert np.all(np.diag(value) <= 2.0 * np.diag(covariance) + 1e-5)
        assert np.all(np.diag(value) >= np.diag(covariance))
    below, above = prior(np.full(200, (2 - 1e-9) / 200)), prior(np.full(200, 2 / 200))
    assert_allclose(below, above, rtol=1e-6)


# 3. float32 weights_init and nearly symmetric precisions_init.
def test_float32_weights_init_is_accepted_and_renormalised():
    X = make_blobs(1, n_samples=300, n_features=2, n_clusters=3)
    weights = np.full(7, 1 / 7, dtype=np.float32)
    assert float(np.sum(weights, dtype=np.float64)) != 1.0
    model = EMGaussianMixture(7, weights_init=weights, random_state=0, max_iter=0)
    assert model.fit(X).weights_.sum() == pytest.approx(1.0, abs=1e-12)
    fit32 = EMGaussianMixture(3, random_state=0).fit(X.astype(np.float32))
    again = EMGaussianMixture(
        3, weights_init=fit32.weights_, means_init=fit32.means_, random_state=0
    ).fit(X)
    assert np.all(np.isfinite(again.means_))
    with pytest.raises(ValueError, match="must sum to 1"):
        EMGaussianMixture(2, weights_init=[0.5, 0.49]).fit(X)


def test_precisions_init_symmetric_to_scikit_learn_tolerance_is_accepted():
    X = make_blobs(2, n_samples=300, n_features=2, n_clusters=2)
    precision = np.array([[2.0, 0.5], [0.5, 1.0]])
    skewed = precision.copy()
    skewed[0, 1] *= 1 + 1e-9
    model = EMGaussianMixture(
        2, precisions_init=np.stack([skewed, precision]), random_state=0, max_iter=0
    ).fit(X)
    assert_allclose(model.precisions_[0], model.precisions_[0].T, rtol=0, atol=0)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        EMGaussianMixture(
            2, precisions_init=np.stack([[[2.0, 0.5], [0.4, 1.0]], precision])
        ).fit(X)


# 4. A warm start reuses only a state of the same covariance type.
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("first, second", [("tied", "diag"), ("diag", "tied")])
def test_warm_start_across_types_with_as_many_components_as_features(
    estimator, first, second
):
    X = make_blobs(3, n_samples=300, n_features=2, n_clusters=2)
    model = estimator(n_components=2, covariance_type=first, warm_start=True)
    model.set_params(random_state=0).fit(X)
    model.set_params(covariance_type=second).fit(X)
    fresh = estimator(n_components=2, covariance_type=second, random_state=0).fit(X)
    assert_allclose(model.means_, fresh.means_, rtol=1e-10)
    assert_allclose(model.covariances_, fresh.covariances_, rtol=1e-10)


# 5. Every finite row gets a finite score and valid probabilities.
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_rows_get_finite_scores(estimator, covariance_type, dtype):
    X = make_blobs(4, n_samples=200, n_features=2, n_clusters=2).astype(dtype)
    model = estimator(n_components=2, covariance_type=covariance_type, random_state=0)
    model.fit(X)
    big = np.finfo(dtype).max / 2
    far = np.array([[-big, 0], [big, big], [0, big], [1.0, 1.0]], dtype=dtype)
    scores = model.score_samples(far)
    proba = model.predict_proba(far)
    labels = model.predict(far)
    assert np.all(np.isfinite(scores)) and np.all(np.isfinite(proba))
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(labels) <= {0, 1}
    assert np.all(scores[:3] < scores[3])


@pytest.mark.parametrize("covariance_type", [*COVARIANCE_TYPES, "EII", "VEI", "EVE"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_whose_densities_overflow_go_to_the_component_they_tend_to(
    covariance_type, dtype
):
    # Review 17: beyond the dtype's range every component's log density
    # was clipped to the same floor, and the probabilities were uniform.
    # Far out, the component of the largest variance along the row's
    # direction takes it (along x here, the wide one at x = 10); where the
    # precisions are equal, the one whose mean lies further that way.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) * [3, 0.5] + [10, 0]]
    model = EMGaussianMixture(2, covariance_type=covariance_type, random_state=0)
    model.fit(X.astype(dtype))
    wide = int(np.argmax(model.means_[:, 0]))
    equal = covariance_type in ("tied", "EII")
    far = 1e300 if dtype == np.float64 else 1e30
    rows = np.array([[far, 0.0], [-far, 0.0]], dtype=dtype)
    proba = model.predict_proba(rows)
    expected = [wide, 1 - wide] if equal else [wide, wide]
    assert_allclose(proba[[0, 1], expected], 1.0)
    assert np.all(np.isfinite(model.score_samples(rows)))


# 6. float32 predictive tails are computed in float64 where float32 overflows.
def test_float32_student_t_tails_are_not_clamped():
    X = make_blobs(5, n_samples=100, n_features=2, n_clusters=2)
    model = VariationalGaussianMixture(n_components=2, random_state=0)
    fit32 = model.fit(X.astype(np.float32))
    far = np.array([[1e20, 0.0]])
    expected = []
    for k in range(2):
        nu = float(fit32.degrees_of_freedom_[k])
        beta = float(fit32.mean_precision_[k])
        t_dof = nu + 1 - 2
        precision = t_dof * beta / (1 + beta) * np.asarray(fit32.precisions_[k]) / nu
        t = stats.multivariate_t(
            loc=np.asarray(fit32.means_[k], dtype=float),
            shape=np.linalg.inv(precision),
            df=t_dof,
        )
        expected.append(np.log(fit32.weights_[k]) + t.logpdf(far))
    score = fit32.score_samples(far.astype(np.float32))[0]
    assert -1e5 < score < -100
    assert score == pytest.approx(logsumexp(expected), rel=1e-5)


# 7. A fit that raises leaves the estimator as it was.
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_failed_fit_leaves_the_estimator_as_it_was(estimator):
    collapsing = np.tile([[1.0, 1.0]], (10, 1))
    model = estimator(n_components=2, reg_covar=0.0, random_state=0)
    with pytest.raises((ValueError, DegenerateComponentError)):
        model.fit(collapsing)
    with pytest.raises(NotFittedError):
        model.predict(collapsing)
    assert not any(name.endswith("_") for name in vars(model))

    X = make_blobs(6, n_samples=200, n_features=2, n_clusters=2)
    model.set_params(reg_covar=1e-6).fit(X)
    before = pickle.dumps(model)
    labels = model.predict(X)
    with pytest.raises(ValueError):
        model.set_params(n_components=3, reg_covar=0.0).fit(collapsing)
    assert_array_equal(model.predict(X), labels)
    restored = pickle.loads(before)
    for name, value in vars(restored).items():
        if name.endswith("_"):
            assert_allclose(
                np.asarray(getattr(model, name), dtype=object).shape,
                np.asarray(value, dtype=object).shape,
            )
    assert model.n_components == 3  # the parameters are the caller's


# Weights at the edge: EM reads weights only relative to each other, VI as
# repeat counts whose total is checked.
@pytest.mark.parametrize("how", ["fit", "partial_fit"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("total", [1e-300, 1e-100, 1e100, 1e300, np.inf])
def test_em_fits_any_scale_of_weights_as_unit_weights(total, covariance_type, how):
    X = make_blobs(3, n_samples=200, n_features=2, n_clusters=2)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    # inf: every weight the largest double, whose sum overflows.
    scaled = np.full(len(X), 1.7e308) if total == np.inf else weights * total
    if total == np.inf:
        weights = np.ones(len(X))

    def fitted(w):
        model = EMGaussianMixture(2, covariance_type=covariance_type, random_state=0)
        return getattr(model, how)(X, sample_weight=w)

    reference, model = fitted(weights), fitted(scaled)
    assert model.n_iter_ == reference.n_iter_
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(model, name), getattr(reference, name), rtol=1e-12)
    assert model.score(X, sample_weight=scaled) == pytest.approx(
        reference.score(X, sample_weight=weights), rel=1e-12
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("total", [1e-300, 1e-100, 1e-6, 1e6, 1e100, 1e300])
def test_vi_fits_any_total_from_1e_300_to_1e300_without_nan(total, covariance_type):
    X = make_blobs(3, n_samples=200, n_features=2, n_clusters=2)
    weights = np.full(len(X), total / len(X))
    model = VariationalGaussianMixture(
        n_components=2, covariance_type=covariance_type, random_state=0
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, sample_weight=weights)
    unresolved = [w for w in caught if "resolved only" in str(w.message)]
    # Tiny totals fit, but their per-sample bound is flagged as unresolved.
    assert bool(unresolved) == (total < 1e-8)
    assert all_finite(model)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)
    if total >= 1e6:
        # Then the data outweigh the prior: the EM fit of the same data.
        em = EMGaussianMixture(2, covariance_type=covariance_type, random_state=0)
        em.fit(X, sample_weight=weights)
        assert_allclose(model.means_, em.means_, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.full(200, 1e304), "more than"),
        (np.full(200, 1.7e308), "more than"),
        (np.full(200, 1e-320), "smallest normal"),
    ],
)
def test_vi_totals_beyond_float64_are_refused_clearly(weights, message):
    X = make_blobs(3, n_samples=200, n_features=2, n_clusters=2)
    model = VariationalGaussianMixture(n_components=2)
    for method in (model.fit, model.partial_fit):
        with pytest.raises(ValueError, match=message) as error:
            method(X, sample_weight=weights)
        assert "rescale" in str(error.value)
        with pytest.raises(NotFittedError):
            model.predict(X)
