"""Missing entries (NaN) as latent variables: exact EM and VI.

References are computed here in the covariance form with scipy: observed
marginals N(x_o | mu_o, Sigma_oo) and the conditional moments
E[x_m | x_o] = mu_m + Sigma_mo Sigma_oo^-1 (x_o - mu_o); skvi works in the
precision form, so the two share nothing but the definitions.

Every test runs twice: on the NumPy corrections and on the compiled ones
(skvi._missing_numba, where numba is importable; skipped otherwise).
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

import skvi._kernel
import skvi._missing
import skvi._stats
from skvi import (
    DegenerateComponentError,
    EMGaussianMixture,
    GaussianMixtureImputer,
    VariationalGaussianMixture,
    select_model,
)
from skvi._covariance import covariance_unit
from skvi._stats import ArrayData, e_step

from .helpers import (
    COVARIANCE_TYPES,
    EPS,
    HYPOTHESIS_EXAMPLES,
    compile_missing_kernels,
    dense_covariances,
    make_blobs,
    rounding_amplification,
    wait_for_numba_warmup,
)
from .vi_reference import monte_carlo_elbo_with_missing

PROPERTY_SETTINGS = settings(
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ESTIMATORS = [EMGaussianMixture, VariationalGaussianMixture]


@pytest.fixture(scope="module", autouse=True, params=["numpy", "compiled"])
def corrections_path(request):
    """Each test of this module on both paths of the full and tied corrections.

    Module-scoped (hypothesis runs many examples in one test call), so it
    sets and restores the switch itself.
    """
    if request.param == "compiled":
        wait_for_numba_warmup()
    saved = skvi._missing.USE_NUMBA, skvi._missing.COMPILED_PAIRS
    skvi._missing.USE_NUMBA = request.param == "compiled"
    # The tests' small chunks too.
    skvi._missing.COMPILED_PAIRS = 0
    if request.param == "compiled" and skvi._missing.compiled_kernels() is None:
        skvi._missing.USE_NUMBA, skvi._missing.COMPILED_PAIRS = saved
        pytest.skip("numba is not importable (the fast extra installs it)")
    yield request.param
    skvi._missing.USE_NUMBA, skvi._missing.COMPILED_PAIRS = saved


def with_missing(X, fraction, seed):
    """A copy of X with entries missing completely at random."""
    X = np.array(X, dtype=float)
    X[np.random.RandomState(seed).uniform(size=X.shape) < fraction] = np.nan
    return X


def extended_log_pdf(rows, mean, covariance):
    """``log N(x | mean, covariance)`` of each row; its factor in extended precision.

    A float64 reference (scipy's ``multivariate_normal``) loses about eps
    times the covariance's condition number: at ``reg_covar=0`` hypothesis
    drew a covariance of condition 9e6, where scipy's log densities were off
    by up to 1.9e-8, above the 1e-9 asked of skvi, whose own were within
    2.8e-10 of 50-digit values (mpmath). NumPy's long double (64-bit
    mantissa on x86-64) keeps this reference about 2,000 times closer.
    ``rows`` is (n, d): the factor is computed once and the substitution
    runs over all rows at once (the same operations as row by row).
    """
    d = len(mean)
    covariance = np.asarray(covariance, dtype=np.longdouble)
    factor = np.zeros((d, d), dtype=np.longdouble)
    for j in range(d):
        pivot = covariance[j, j] - np.sum(factor[j, :j] ** 2)
        assert pivot > 0, "the reference needs a positive definite covariance"
        factor[j, j] = np.sqrt(pivot)
        for i in range(j + 1, d):
            inner = np.sum(factor[i, :j] * factor[j, :j])
            factor[i, j] = (covariance[i, j] - inner) / factor[j, j]
    residual = np.asarray(rows, dtype=np.longdouble) - np.asarray(mean, np.longdouble)
    z = np.zeros_like(residual)
    for i in range(d):
        inner = np.sum(factor[i, :i] * z[:, :i], axis=1)
        z[:, i] = (residual[:, i] - inner) / factor[i, i]
    log_det = 2 * np.sum(np.log(np.diagonal(factor)))
    log_pdf = -0.5 * (np.sum(z**2, axis=1) + log_det) - 0.5 * d * np.log(2 * np.pi)
    return log_pdf.astype(float)


def precision_covariances(model):
    """Each component's covariance ``(P P^T)^-1`` and ``tr(P P^T)``.

    From ``precisions_cholesky_`` (P), in long double, by the inverse of
    the triangular factor P (back substitution): the density
    skvi evaluates (and ``score_samples`` reports) is that of its precision
    factors. ``covariances_`` is the same matrix rounded on another path;
    for a collapsed component the two differ by eps times its condition
    number (hypothesis drew one of condition 7.6e9 at ``reg_covar=0``,
    whose ``covariances_`` moved the mean log-likelihood by 2e-9, while
    skvi's bound was within 3e-17 of the 50-digit value of its factors).
    """
    factors = np.asarray(model.precisions_cholesky_, dtype=np.longdouble)
    n_components, n_features = model.means_.shape
    if model.covariance_type == "tied":
        factors = np.broadcast_to(factors, (n_components, n_features, n_features))
    elif model.covariance_type == "diag":
        factors = np.stack([np.diag(f) for f in factors])
    elif model.covariance_type == "spherical":
        factors = np.stack(
            [f * np.eye(n_features, dtype=np.longdouble) for f in factors]
        )
    covariances, traces = [], []
    for factor in factors:
        # tr(Lambda) = tr(P P^T), the sum of the squares of P's entries.
        traces.append(float(np.sum(factor**2)))
        # P upper triangular: its inverse by back substitution, column by
        # column, then Sigma = P^-T P^-1.
        inverse = np.zeros((n_features, n_features), dtype=np.longdouble)
        for j in range(n_features):
            for i in range(j, -1, -1):
                unit = np.longdouble(1.0 if i == j else 0.0)
                inner = np.sum(factor[i, i + 1 : j + 1] * inverse[i + 1 : j + 1, j])
                inverse[i, j] = (unit - inner) / factor[i, i]
        covariances.append(inverse.T @ inverse)
    return covariances, traces


def observed_log_rho(model, X, reg_covar):
    """(n, K) smoothed log pi_k + log N(x_o | mu_o, Sigma_oo) (extended_log_pdf).

    With the covariances of the model's precision factors
    (:func:`precision_covariances`) and ``tr(Lambda_k) = |P_k|_F^2``.
    Returns it and the (K,) traces.
    """
    covariances, traces = precision_covariances(model)
    out = np.empty((len(X), model.n_components))
    # One factorisation per pattern of observed entries and component.
    patterns, pattern_of_row = np.unique(~np.isnan(X), axis=0, return_inverse=True)
    pattern_of_row = pattern_of_row.ravel()
    for p, observed in enumerate(patterns):
        rows = pattern_of_row == p
        for k in range(model.n_components):
            penalty = 0.5 * reg_covar * traces[k]
            log_pdf = np.zeros(rows.sum())
            if observed.any():
                log_pdf = extended_log_pdf(
                    X[np.ix_(rows, observed)],
                    model.means_[k][observed],
                    covariances[k][np.ix_(observed, observed)],
                )
            with np.errstate(divide="ignore"):
                out[rows, k] = np.log(model.weights_[k]) + log_pdf - penalty
    return out, np.array(traces)


def observed_log_likelihood(plain_log_rho, traces, weights, reg_covar):
    """The smoothed mean log-likelihood from the unsmoothed log rho.

    ``(a - 0.0) - p`` rounds as ``a - p``: the same numbers as
    :func:`observed_log_rho` at ``reg_covar``, without its extended-precision
    densities a second time.
    """
    smoothed = plain_log_rho - 0.5 * reg_covar * traces
    per_row = logsumexp(smoothed, axis=1)
    return np.dot(weights, per_row) / weights.sum()


# ---------------------------------------------------------------- properties
@st.composite
def missing_cases(draw):
    n_features = draw(st.integers(2, 4))
    n_components = draw(st.integers(1, 3))
    return {
        "seed": draw(st.integers(0, 2**16)),
        "n_features": n_features,
        "n_components": n_components,
        "covariance_type": draw(st.sampled_from(COVARIANCE_TYPES)),
        "reg_covar": draw(st.sampled_from([0.0, 1e-6, 1e-2, 0.5])),
        "fraction": draw(st.sampled_from([0.05, 0.2, 0.5])),
        "weights": draw(st.sampled_from(["none", "real"])),
        "offset": draw(st.sampled_from([0.0, -300.0])),
    }


def case_data(case):
    X = make_blobs(
        case["seed"],
        n_samples=40 + 20 * case["n_components"] * case["n_features"],
        n_features=case["n_features"],
        n_clusters=case["n_components"],
        offset=case["offset"],
    )
    rng = np.random.RandomState(case["seed"] + 1)
    weights = (
        np.ones(len(X)) if case["weights"] == "none" else rng.uniform(0.2, 3.0, len(X))
    )
    return with_missing(X, case["fraction"], case["seed"] + 2), weights


def fit_or_reject(estimator, case, X, weights):
    model = estimator(
        n_components=case["n_components"],
        covariance_type=case["covariance_type"],
        reg_covar=case["reg_covar"],
        random_state=case["seed"],
        max_iter=25,
        tol=0.0,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(X, sample_weight=weights)
    except DegenerateComponentError:
        # A component collapsing at reg_covar=0 is a valid outcome.
        reject()


def bound_tolerance(model, X, weights):
    decomposition = model.elbo_decomposition(X, weights)
    scale = abs(decomposition.expected_log_joint) + abs(decomposition.entropy)
    return 64 * EPS * max(scale, 1.0) * rounding_amplification(model)


@PROPERTY_SETTINGS
@given(missing_cases(), st.sampled_from(ESTIMATORS))
def test_no_half_step_decreases_the_elbo_with_missing_entries(case, estimator):
    X, weights = case_data(case)
    model = fit_or_reject(estimator, case, X, weights)
    half_steps = model.half_step_lower_bounds_
    assert np.all(np.isfinite(half_steps))
    assert np.all(np.diff(half_steps) >= -bound_tolerance(model, X, weights))


@PROPERTY_SETTINGS
@given(missing_cases())
# A collapsed component (condition 7.6e9): covariances_ and the precision
# factors differ by eps times that (see precision_covariances).
@example(
    case={
        "seed": 33494,
        "n_features": 2,
        "n_components": 3,
        "covariance_type": "full",
        "reg_covar": 0.0,
        "fraction": 0.5,
        "weights": "real",
        "offset": 0.0,
    }
)
def test_em_bound_is_the_observed_data_log_likelihood(case):
    X, weights = case_data(case)
    model = fit_or_reject(EMGaussianMixture, case, X, weights)
    # Zero weight for the rows with nothing observed, as skvi documents.
    weights = np.where(np.isnan(X).all(axis=1), 0.0, weights)
    plain_log_rho, traces = observed_log_rho(model, X, 0.0)
    expected = observed_log_likelihood(
        plain_log_rho, traces, weights, case["reg_covar"]
    )
    assert model.lower_bound_ == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # score is the plain (unsmoothed) mean over the rows.
    plain = logsumexp(plain_log_rho, axis=1)
    assert_allclose(model.score_samples(X), plain, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- statistics
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_statistics_use_the_conditional_moments(covariance_type, dtype):
    X = with_missing(make_blobs(5, n_samples=150, n_features=4, n_clusters=3), 0.3, 6)
    weights = np.random.RandomState(7).uniform(0.5, 2.0, size=len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = EMGaussianMixture(
            3, covariance_type=covariance_type, random_state=0, max_iter=3
        ).fit(X)
    unit = covariance_unit(covariance_type, 3, 4)
    evaluated = model._evaluate(model._state_from_attributes(unit), unit, None)
    stats_ = e_step(
        ArrayData(X.astype(dtype), weights), unit, evaluated.expectations, 0.0
    )
    moments = stats_.moments

    log_rho, _ = observed_log_rho(model, X, 0.0)
    resp = np.exp(log_rho - logsumexp(log_rho, axis=1, keepdims=True))
    weighted = resp * weights[:, np.newaxis]
    covariances = dense_covariances(model)
    nk = weighted.sum(axis=0)
    means = np.zeros((3, 4))
    second = np.zeros((3, 4, 4))
    for k in range(3):
        mu, sigma = model.means_[k], covariances[k]
        for n, row in enumerate(X):
            o = ~np.isnan(row)
            m = ~o
            filled = row.copy()
            conditional = np.zeros((4, 4))
            if m.any():
                gain = sigma[np.ix_(m, o)] @ np.linalg.inv(sigma[np.ix_(o, o)])
                filled[m] = mu[m] + gain @ (row[o] - mu[o])
                conditional[np.ix_(m, m)] = (
                    sigma[np.ix_(m, m)] - gain @ sigma[np.ix_(o, m)]
                )
            means[k] += weighted[n, k] * filled
            second[k] += weighted[n, k] * (np.outer(filled, filled) + conditional)
    means /= nk[:, np.newaxis]
    scatter = second - nk[:, None, None] * means[:, :, None] * means[:, None, :]
    expected = unit.second_moment_from_dense(scatter)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    assert_allclose(moments.nk, nk, rtol=rtol)
    assert_allclose(moments.means, means, rtol=rtol, atol=rtol * 10)
    assert_allclose(moments.scatter, expected, rtol=rtol, atol=rtol * nk.sum())


# The Monte Carlo estimates by covariance type, with the fitted parameters
# they were drawn for: the second path's fit reaches the same parameters (to
# rounding), so its closed form is checked against the same draws. One
# pytest-xdist worker runs both paths (--dist loadgroup), so the draws are
# made once.
_MONTE_CARLO = {}


@pytest.mark.xdist_group("missing-monte-carlo")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vi_bound_matches_monte_carlo_with_missing_entries(covariance_type):
    X = with_missing(make_blobs(3, n_samples=24, n_features=2, n_clusters=2), 0.3, 8)
    weights = np.random.RandomState(4).uniform(0.5, 2.0, size=len(X))
    model = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        reg_covar=0.05,
        max_iter=3,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, sample_weight=weights)
    resp = np.random.RandomState(5).dirichlet(np.ones(3), size=len(X))
    closed = model.elbo_decomposition(X, weights, responsibilities=resp).elbo
    fitted = [
        model.weight_concentration_,
        model.mean_precision_,
        model.means_,
        model.degrees_of_freedom_,
        model.precisions_,
    ]
    if covariance_type in _MONTE_CARLO:
        drawn_for, estimate, standard_error = _MONTE_CARLO[covariance_type]
        for value, reference in zip(fitted, drawn_for, strict=True):
            assert_allclose(value, reference, rtol=1e-10)
    else:
        estimate, standard_error = monte_carlo_elbo_with_missing(
            model, X, weights, resp, reg_covar=0.05, n_draws=100_000, seed=6
        )
        _MONTE_CARLO[covariance_type] = (fitted, estimate, standard_error)
    assert abs(closed - estimate) <= 4 * standard_error
    # The check has teeth: an error of 0.02 per sample (half a nat over
    # these 24 rows) could not hide in 4 standard errors.
    assert standard_error < 0.005


# ------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_rows_with_nothing_observed_change_nothing(estimator, covariance_type):
    X = make_blobs(9, n_samples=200, n_features=3, n_clusters=2)
    padded = np.vstack([X, np.full((5, 3), np.nan)])
    params = dict(n_components=2, covariance_type=covariance_type, random_state=0)
    plain = estimator(**params).fit(X)
    padded_fit = estimator(**params).fit(padded)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(padded_fit, name), getattr(plain, name), rtol=1e-12)
    # An empty row's density of nothing observed is 1.
    assert_allclose(padded_fit.score_samples(padded[-5:]), 0.0, atol=1e-12)
    assert_allclose(padded_fit.predict_proba(padded[-5:]), [padded_fit.weights_] * 5)


RECOVERY_FIT = dict(n_components=3, random_state=0, n_init=3, tol=1e-6, max_iter=1000)


@pytest.fixture(scope="module")
def recovery_case():
    """Data with missing entries, held-out rows and the baselines' scores.

    The baselines (mean imputation, complete rows) have no missing entries:
    the same fits on both paths, so fitted once for the module.
    """
    # 30% of the entries of a known three-component mixture missing at random.
    rng = np.random.RandomState(10)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-1.0, 5.0, 2.0]])
    roots = [rng.normal(size=(3, 3)) * 0.8 for _ in range(3)]
    covariances = np.stack([r @ r.T + 0.3 * np.eye(3) for r in roots])
    weights = np.array([0.5, 0.3, 0.2])

    def draw(n):
        labels = rng.choice(3, size=n, p=weights)
        noise = np.einsum(
            "nij,nj->ni",
            np.linalg.cholesky(covariances[labels]),
            rng.normal(size=(n, 3)),
        )
        return means[labels] + noise

    X, held_out = draw(3000), draw(5000)
    X_missing = with_missing(X, 0.3, 11)
    truth = sum(
        w * stats.multivariate_normal.pdf(held_out, m, c)
        for w, m, c in zip(weights, means, covariances, strict=True)
    )
    column_means = np.nanmean(X_missing, axis=0)
    imputed = np.where(np.isnan(X_missing), column_means, X_missing)
    mean_imputed = EMGaussianMixture(**RECOVERY_FIT).fit(imputed).score(held_out)
    complete_rows = X_missing[~np.isnan(X_missing).any(axis=1)]
    complete = EMGaussianMixture(**RECOVERY_FIT).fit(complete_rows).score(held_out)
    best = np.mean(np.log(truth))
    return X_missing, held_out, best, mean_imputed, complete


def test_recovery_beats_mean_imputation_and_complete_rows(recovery_case):
    X_missing, held_out, best, mean_imputed, complete = recovery_case
    exact = EMGaussianMixture(**RECOVERY_FIT).fit(X_missing).score(held_out)
    assert exact > mean_imputed + 0.05
    assert exact > complete
    assert best - exact < 0.02


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_partial_fit_streams_rows_with_missing_entries(estimator):
    rng = np.random.RandomState(12)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 2.0], [0.0, 6.0, -2.0]])
    X = centers[rng.randint(3, size=4000)] + rng.normal(size=(4000, 3))
    X = with_missing(X, 0.2, 13)
    params = dict(n_components=3, random_state=0)
    if estimator is VariationalGaussianMixture:
        params["total_samples"] = len(X)
    batch = estimator(**params).fit(X)
    online = estimator(**params)
    for _ in range(4):
        for start in range(0, len(X), 500):
            online.partial_fit(X[start : start + 500])
    assert online.score(X) == pytest.approx(batch.score(X), rel=0.01)


def test_rows_with_no_observed_value_count_nowhere():
    # A fit leaves rows with no observed value out; the scores, the sample
    # size of BIC and AIC, ICL's entropy and the effective points must not
    # count them either (BIC and ICL changed, and so did select_model's
    # ICL choice, with the number of empty rows appended).
    X = with_missing(make_blobs(16, n_samples=120, n_features=3, n_clusters=2), 0.1, 2)
    padded = np.concatenate([X, np.full((300, 3), np.nan)])
    weights = np.random.RandomState(3).uniform(0.5, 2.0, len(padded))
    model = EMGaussianMixture(2, random_state=0).fit(X, sample_weight=weights[:120])
    for method in ("score", "bic", "aic"):
        plain = getattr(model, method)(X, sample_weight=weights[:120])
        assert getattr(model, method)(padded, sample_weight=weights) == pytest.approx(
            plain, rel=1e-12
        )
    assert model._criteria(padded, weights) == pytest.approx(
        model._criteria(X, weights[:120]), rel=1e-12
    )
    assert_allclose(
        model._effective_points(padded, weights),
        model._effective_points(X, weights[:120]),
        rtol=1e-12,
    )
    table, _ = select_model(X, n_components=[1, 2, 3], covariance_types=["VVV", "EII"])
    with_empty, _ = select_model(
        padded, n_components=[1, 2, 3], covariance_types=["VVV", "EII"]
    )
    for column in ("bic", "aic", "icl", "lower_bound"):
        assert_allclose(with_empty[column], table[column], rtol=1e-9)
    with pytest.raises(ValueError, match="every row is all NaN"):
        model.score(np.full((4, 3), np.nan))


def test_a_column_with_nothing_observed_is_named():
    X = make_blobs(14, n_samples=50, n_features=3, n_clusters=2)
    X[:, 2] = np.nan
    with pytest.raises(ValueError, match="Column 2 of X has no observed value"):
        EMGaussianMixture(2).fit(X)
    with pytest.raises(ValueError, match="Column 0 of X has no observed value"):
        EMGaussianMixture(2).fit(np.full((10, 2), np.nan))


def test_nan_sample_weights_are_still_an_error():
    X = with_missing(make_blobs(15, n_samples=50, n_features=2, n_clusters=2), 0.1, 1)
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        EMGaussianMixture(2).fit(X, sample_weight=np.full(50, np.nan))


def test_the_caller_array_with_nan_is_not_modified():
    X = with_missing(make_blobs(16, n_samples=100, n_features=3, n_clusters=2), 0.2, 2)
    before = X.copy()
    model = VariationalGaussianMixture(n_components=2, random_state=0).fit(X)
    model.predict_proba(X)
    model.score_samples(X)
    assert_allclose(X, before, equal_nan=True)


def test_allow_nan_tag():
    assert EMGaussianMixture().__sklearn_tags__().input_tags.allow_nan
    assert VariationalGaussianMixture().__sklearn_tags__().input_tags.allow_nan


# ------------------------------------------------- the per-row formulation
def rows_missing_one_to_all_but_one(seed, centers):
    """Rows near each center with 0, 1, 2, 3, 4 and all but one entries missing."""
    rng = np.random.RandomState(seed)
    n_features = centers.shape[1]
    rows = []
    for center in centers:
        for n_missing in range(n_features):
            row = center + rng.normal(size=n_features)
            row[rng.choice(n_features, size=n_missing, replace=False)] = np.nan
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("spacing", [3.0, 300.0])
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_each_row_gets_its_observed_marginal(covariance_type, estimator, spacing):
    # Clusters 300 apart put every row's center at its own component's mean
    # (local centers); 3 apart, all rows share one center.
    rng = np.random.RandomState(17)
    centers = spacing * rng.normal(size=(2, 6))
    labels = rng.randint(2, size=300)
    X = with_missing(centers[labels] + rng.normal(size=(300, 6)), 0.1, 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(
            n_components=2, covariance_type=covariance_type, max_iter=5, random_state=0
        ).fit(X)
    rows = rows_missing_one_to_all_but_one(19, centers)
    # Brute force: the Gaussian of each component on the row's observed
    # coordinates (for VI, of N(m_k, E[Lambda_k]^-1), covariances_).
    covariances = dense_covariances(model)
    marginals = np.empty((len(rows), 2))
    for n, row in enumerate(rows):
        o = ~np.isnan(row)
        for k in range(2):
            marginals[n, k] = stats.multivariate_normal.logpdf(
                row[o], model.means_[k][o], covariances[k][np.ix_(o, o)]
            )
    if estimator is EMGaussianMixture:
        expected = logsumexp(marginals + np.log(model.weights_), axis=1)
        assert_allclose(model.score_samples(rows), expected, rtol=1e-10)
    # The bound of one row given to one component is its observed
    # marginal plus what does not depend on the row (weights, reg_covar,
    # VI's expectations, the KL terms): the same for every row.
    per_component = np.empty((len(rows), 2))
    for k in range(2):
        resp = np.zeros((len(rows), 2))
        resp[:, k] = 1.0
        bounds = np.array(
            [
                model.elbo_decomposition(rows, np.eye(len(rows))[n], resp).elbo
                for n in range(len(rows))
            ]
        )
        differences = bounds - marginals[:, k]
        # Each difference keeps the rounding of its own terms.
        scale = 1e-12 * np.maximum(1.0, np.abs(marginals[:, k]))
        nearest = np.argmin(scale)
        spread = np.abs(differences - differences[nearest])
        assert np.all(spread <= 100 * (scale + scale[nearest]))
        per_component[:, k] = bounds
    # The E-step's values: the bound of the optimal q(z) of a row is the
    # log-sum-exp of those.
    optimal = [
        model.elbo_decomposition(rows, np.eye(len(rows))[n]).elbo
        for n in range(len(rows))
    ]
    assert_allclose(optimal, logsumexp(per_component, axis=1), rtol=1e-11)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_many_rows_missing_many_entries_get_their_observed_marginals(covariance_type):
    # Hundreds of rows missing 5 to 7 of 9 entries: their blocks of Lambda_mm
    # are inverted entry by entry over the batch, not by LAPACK, and rows
    # of one size are batched whatever their order in the data.
    rng = np.random.RandomState(23)
    X = rng.normal(size=(400, 9)) @ rng.normal(size=(9, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = EMGaussianMixture(
            3, covariance_type=covariance_type, max_iter=3, random_state=0
        ).fit(X)
    rows = X[:360].copy()
    for n, row in enumerate(rows):
        row[rng.permutation(9)[: 5 + n % 3]] = np.nan
    covariances = dense_covariances(model)
    marginals = np.empty((len(rows), 3))
    for n, row in enumerate(rows):
        o = ~np.isnan(row)
        for k in range(3):
            marginals[n, k] = stats.multivariate_normal.logpdf(
                row[o], model.means_[k][o], covariances[k][np.ix_(o, o)]
            )
    expected = logsumexp(marginals + np.log(model.weights_), axis=1)
    assert_allclose(model.score_samples(rows), expected, rtol=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_diagonal_corrections_of_every_row_match_those_of_the_incomplete_ones(
    monkeypatch, estimator, covariance_type
):
    # With many missing entries every row of a chunk takes the diagonal
    # corrections, complete rows as products with their zero mask rows;
    # with few, only the incomplete rows are gathered. Both give one fit.
    X = with_missing(make_blobs(31, n_samples=600, n_features=5, n_clusters=3), 0.1, 32)
    params = dict(
        n_components=3, covariance_type=covariance_type, max_iter=8, random_state=0
    )
    fits = {}
    for threshold in (0.0, np.inf):
        monkeypatch.setattr(skvi._missing, "ALL_ROWS_ENTRIES", threshold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = estimator(**params).fit(X)
        fits[threshold] = model, model.score_samples(X), model.predict_proba(X)
    (every, *every_results), (gathered, *gathered_results) = fits.values()
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(every, name), getattr(gathered, name), rtol=1e-12)
    for a, b in zip(every_results, gathered_results, strict=True):
        assert np.all(np.isfinite(a))
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # A complete row's corrections are exactly zero: it scores as alone.
    complete = ~np.isnan(X).any(axis=1)
    monkeypatch.setattr(skvi._missing, "ALL_ROWS_ENTRIES", 0.0)
    assert_allclose(
        every.score_samples(X)[complete],
        every.score_samples(X[complete]),
        rtol=1e-14,
    )


@pytest.mark.parametrize("spacing", [1e2, 1e6])
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_rows_with_nothing_observed_score_zero_far_from_the_origin(
    covariance_type, estimator, spacing
):
    # Clusters far apart: a row with nothing observed, filled in with a
    # center, is far from most components, and its kernel value and its
    # correction are both large; its density of nothing observed is 1.
    rng = np.random.RandomState(41)
    offsets = spacing * np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 0.5]])
    X = np.vstack([rng.normal(size=(150, 3)) + offset for offset in offsets])
    X[::7, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(
            n_components=3, covariance_type=covariance_type, random_state=0
        ).fit(X)
    rows = X[:6].copy()
    rows[::2] = np.nan
    scores = model.score_samples(rows)
    assert np.all(np.abs(scores[::2]) <= 1e-12)
    assert np.all(np.abs(model.score_samples(rows.astype(np.float32))[::2]) <= 1e-6)
    assert_allclose(scores[1::2], model.score_samples(rows[1::2]), rtol=1e-13)


# ------------------------------------------------ compiled and NumPy paths
def both_paths(compute):
    """``compute()`` with the NumPy corrections, then with the compiled ones."""
    saved = skvi._missing.USE_NUMBA
    try:
        results = []
        for compiled in (False, True):
            skvi._missing.USE_NUMBA = compiled
            results.append(compute())
    finally:
        skvi._missing.USE_NUMBA = saved
    return results


@pytest.mark.parametrize("spacing", [3.0, 300.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_compiled_corrections_match_the_numpy_ones(
    corrections_path, covariance_type, dtype, spacing
):
    # The same formulas in another order of operations (L D L^T against
    # closed forms and Cholesky, loops against bincounts): the same numbers
    # to the rounding of their sums. Rows missing 1 to all 6 entries; 3
    # apart the rows share one center, 300 apart each has its own.
    if corrections_path != "compiled":
        pytest.skip("compares the two paths once")
    rng = np.random.RandomState(51)
    centers = spacing * rng.normal(size=(3, 6))
    labels = rng.randint(3, size=400)
    X = centers[labels] + rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    X = with_missing(X, 0.15, 52)
    X[:12] = np.vstack([rows_missing_one_to_all_but_one(53, centers[:2])[1:], X[11]])
    X[12, :] = np.nan
    weights = rng.uniform(0.5, 2.0, size=len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = EMGaussianMixture(
            3, covariance_type=covariance_type, max_iter=3, random_state=0
        ).fit(X)
    unit = covariance_unit(covariance_type, 3, 6)
    evaluated = model._evaluate(model._state_from_attributes(unit), unit, None)
    data = X.astype(dtype)

    def compute():
        statistics = e_step(ArrayData(data, weights), unit, evaluated.expectations, 0.0)
        imputer = GaussianMixtureImputer(model).fit(data)
        return (
            statistics.moments.nk,
            statistics.moments.means,
            statistics.moments.scatter,
            np.array([statistics.entropy, statistics.log_normalizer]),
            model.score_samples(data),
            model.predict_proba(data),
            imputer.transform(data),
        )

    numpy_results, compiled_results = both_paths(compute)
    # float64: 1e-12 of each array's largest entry, far above the rounding
    # of these sums of a few hundred terms (about 1e-14 relative for blocks
    # this well conditioned) and far below any error of the formulas.
    # float32: the kernel holds the rows' values in float32, which rounds
    # the two paths' corrections (equal to 1e-15) apart by up to one unit
    # in the last place, 6e-8 relative; 1e-6 allows the few such units.
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    for numpy_result, compiled_result in zip(
        numpy_results, compiled_results, strict=True
    ):
        assert np.all(np.isfinite(compiled_result))
        scale = np.max(np.abs(numpy_result))
        assert_allclose(
            compiled_result, numpy_result, rtol=tolerance, atol=tolerance * scale
        )


@pytest.mark.parametrize("n_precisions", [1, 4])
def test_kept_factors_give_the_corrections_computed_afresh(
    corrections_path, n_precisions
):
    # The factors of blocks of one to three missing coordinates are kept
    # from chunk to chunk for an E-step: a chunk whose blocks are all kept
    # gets the same corrections, to the last bit, as with nothing kept, and
    # a triple kept gives the same numbers as factored in its row.
    if corrections_path != "compiled":
        pytest.skip("about the compiled path: runs once, in its parametrization")
    kernels = skvi._missing.compiled_kernels()
    rng = np.random.RandomState(58)
    n_rows, n_features, n_components = 300, 7, 4
    root = rng.normal(size=(n_precisions, n_features, n_features))
    precisions = root @ np.swapaxes(root, 1, 2) + n_features * np.eye(n_features)
    precisions = np.ascontiguousarray(np.moveaxis(precisions, 0, -1))
    shifts = rng.normal(size=(1, n_features, n_components))
    sizes = rng.randint(1, 6, size=n_rows)
    sizes.sort()
    coordinates = np.concatenate(
        [np.sort(rng.choice(n_features, size, replace=False)) for size in sizes]
    )
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rows = rng.normal(size=(n_rows, n_features))
    for position, size in enumerate(sizes):
        rows[position, coordinates[starts[position] : starts[position] + size]] = 0.0
    cells = sizes * sizes
    block_starts = np.cumsum(cells) - cells

    def corrections(cache):
        outputs = (
            np.empty((n_rows, n_components)),
            np.empty((n_rows, n_components)),
            np.empty((n_rows, n_components)),
            np.empty((len(coordinates), n_components)),
            np.empty((int(cells.sum()), n_precisions)),
        )
        kernels.conditional_blocks(
            precisions,
            rows,
            np.arange(n_rows),
            starts,
            coordinates,
            np.zeros(n_rows, dtype=np.intp),
            shifts,
            block_starts,
            -0.5,
            True,
            *outputs,
            *kernels.gathered_entries(len(coordinates), n_features, n_precisions),
            *cache,
        )
        return outputs

    kept = kernels.new_factor_cache(n_features, n_precisions)
    first = corrections(kept)
    assert kept[1].all() and kept[5].any()
    again = corrections(kept)
    afresh = corrections(kernels.new_factor_cache(n_features, n_precisions))
    no_triples = list(kernels.new_factor_cache(n_features, n_precisions))
    no_triples[4:] = no_triples[4][:0], no_triples[5][:0]
    in_rows = corrections(no_triples)
    for result in (again, afresh, in_rows):
        for expected, actual in zip(first, result, strict=True):
            assert_allclose(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("compiled_pairs", [0, 10**9])
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_the_compiled_scan_finds_the_rows_the_mask_finds(
    corrections_path, covariance_type, compiled_pairs, monkeypatch
):
    # Once the kernels are loaded, one compiled pass finds a chunk's
    # incomplete rows instead of the mask: the same rows in the same order,
    # corrected by the same code (the compiled kernels, or from the NumPy
    # path below COMPILED_PAIRS pairs), so the results are the same to the
    # last bit. A row with nothing observed takes the repairs.
    if corrections_path != "compiled":
        pytest.skip("about the compiled path: runs once, in its parametrization")
    X = with_missing(make_blobs(56, n_samples=500, n_features=5, n_clusters=3), 0.2, 57)
    X[3] = np.nan
    monkeypatch.setattr(skvi._missing, "COMPILED_PAIRS", compiled_pairs)
    scans = []

    def counted(plan, chunk):
        kernels = skvi._missing.scan_kernels(plan, chunk)
        scans.append(kernels is not None)
        return kernels

    results = []
    for scan in (lambda plan, chunk: None, counted):
        monkeypatch.setattr(skvi._kernel, "scan_kernels", scan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = EMGaussianMixture(
                3, covariance_type=covariance_type, random_state=0, max_iter=4
            ).fit(X)
        imputer = GaussianMixtureImputer(model).fit(X)
        results.append(
            (
                model.means_,
                model.covariances_,
                model.lower_bounds_,
                model.score_samples(X),
                model.predict_proba(X),
                imputer.transform(X),
            )
        )
    assert any(scans)
    for without_scan, with_scan in zip(*results, strict=True):
        assert_allclose(with_scan, without_scan, rtol=0, atol=0)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_missing_entries_found_once_give_the_same_fit(
    corrections_path, covariance_type, monkeypatch
):
    # A fit keeps the missing entries its first E-step's scan found
    # (FoundPatterns) and later E-steps only compute the rows about their
    # center: the same fit, to the last bit, as scanning every time
    # (nothing kept within a budget of 0 bytes).
    if corrections_path != "compiled":
        pytest.skip("about the compiled path: runs once, in its parametrization")
    X = with_missing(make_blobs(59, n_samples=600, n_features=6, n_clusters=3), 0.2, 60)
    found = skvi._missing.FoundPatterns
    original = found.incomplete_rows
    kept = []

    def counted(self, key, *args):
        kept.append(key in self._found)
        return original(self, key, *args)

    monkeypatch.setattr(found, "incomplete_rows", counted)
    results = []
    for keep in (False, True):
        nothing_kept = lambda budget: found(0)  # noqa: E731
        monkeypatch.setattr(
            skvi._stats, "FoundPatterns", found if keep else nothing_kept
        )
        kept.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = EMGaussianMixture(
                3, covariance_type=covariance_type, random_state=0, max_iter=4
            ).fit(X)
        assert any(kept) == keep and len(kept) > 1
        results.append((model.means_, model.covariances_, model.lower_bounds_))
    for scanned_each_time, found_once in zip(*results, strict=True):
        assert_allclose(found_once, scanned_each_time, rtol=0, atol=0)


def test_without_numba_the_numpy_corrections_serve(monkeypatch):
    # numba missing (or failing to import): compiled_kernels() is None and
    # the NumPy path gives the fit it gives when switched off.
    X = with_missing(make_blobs(54, n_samples=300, n_features=4, n_clusters=2), 0.2, 55)
    params = dict(n_components=2, covariance_type="full", random_state=0, max_iter=5)
    monkeypatch.setattr(skvi._missing, "USE_NUMBA", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        switched_off = EMGaussianMixture(**params).fit(X)
        monkeypatch.setattr(skvi._missing, "USE_NUMBA", True)
        monkeypatch.setattr(skvi._missing, "_KERNELS", None)
        monkeypatch.delattr(skvi, "_missing_numba", raising=False)
        monkeypatch.setitem(sys.modules, "skvi._missing_numba", None)
        assert skvi._missing.compiled_kernels() is None
        missing_numba = EMGaussianMixture(**params).fit(X)
    assert_allclose(missing_numba.means_, switched_off.means_, rtol=0, atol=0)
    assert_allclose(missing_numba.lower_bounds_, switched_off.lower_bounds_, rtol=0)


def test_numba_is_imported_only_for_missing_entries(corrections_path):
    # Importing skvi, fitting complete data and small fits with missing
    # entries never import numba; a chunk with COMPILED_PAIRS pairs of
    # incomplete rows does, unless SKVI_NUMBA=0 switches it off.
    if corrections_path != "compiled":
        pytest.skip("about the compiled path: runs once, in its parametrization")
    # One child (its imports cost about 2.5 s) for both switches: skvi reads
    # SKVI_NUMBA when imported, so the child imports it afresh for each,
    # switched off first (numba, once imported, stays in sys.modules).
    code = (
        "import os, sys, warnings\n"
        "import numpy as np\n"
        "warnings.simplefilter('ignore')\n"
        "for switch in ('0', '1'):\n"
        "    for name in [n for n in sys.modules if n.split('.')[0] == 'skvi']:\n"
        "        del sys.modules[name]\n"
        "    os.environ['SKVI_NUMBA'] = switch\n"
        "    import skvi\n"
        "    fit = skvi.EMGaussianMixture(2, covariance_type='full', max_iter=2).fit\n"
        "    X = np.random.RandomState(0).normal(size=(12_000, 3))\n"
        "    imported = ['numba' in sys.modules]\n"
        "    fit(X)\n"
        "    imported.append('numba' in sys.modules)\n"
        "    X[::2, 1] = np.nan\n"
        "    fit(X[:300])\n"
        "    imported.append('numba' in sys.modules)\n"
        "    fit(X)\n"
        "    imported.append('numba' in sys.modules)\n"
        "    print(switch, *imported)\n"
    )
    # The kernels compiled (or loaded) here first and cached, so that the
    # child loads them rather than compiling them again (14 s of CPU on a
    # fresh clone).
    compile_missing_kernels()
    root = str(Path(skvi.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=root),
        capture_output=True,
        text=True,
        check=True,
    )
    # Imported after: skvi, a complete fit, a small fit, a large one.
    assert result.stdout.splitlines() == [
        "0 False False False False",
        "1 False False False True",
    ]


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_imputing_with_diagonal_precisions_on_both_paths(covariance_type):
    # Diagonal precisions build their blocks only for the conditional
    # moments (imputation), by either path: a missing coordinate's mean is
    # then the responsibility-weighted component means.
    X = with_missing(make_blobs(56, n_samples=300, n_features=4, n_clusters=2), 0.2, 57)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = EMGaussianMixture(
            2, covariance_type=covariance_type, max_iter=5, random_state=0
        ).fit(X)
    filled = GaussianMixtureImputer(model).fit(X).transform(X)
    expected = model.predict_proba(X) @ model.means_
    missing = np.isnan(X)
    assert_allclose(filled[missing], expected[missing], rtol=1e-12, atol=1e-12)
    assert_allclose(filled[~missing], X[~missing], rtol=0, atol=0)
