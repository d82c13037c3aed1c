"""VariationalGaussianMixture's posterior predictive at large total weight.

As the counts grow, the Student-t predictive tends to the plug-in Gaussian
of the posterior means (scikit-learn's and EMGaussianMixture's density). Its
normaliser differs log-gamma values of size ``nu log nu``: these tests check
the predictive against references computed independently of skvi (scipy's
Gaussian, and the Student-t in high precision with mpmath) for totals up to
1e308, and that every fitted value stays finite there.
"""

import warnings

import mpmath
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from skvi import EMGaussianMixture, VariationalGaussianMixture
from skvi._elbo import (
    kl_beta,
    kl_dirichlet,
    kl_gamma,
    kl_wishart,
    wishart_log_det_gap,
)

from .helpers import COVARIANCE_TYPES, EPS, dense_covariances

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")
# Totals of sample weight, up to the largest that counts may sum to.
TOTALS = (1e3, 1e6, 1e9, 1e12, 1e15, 1e18, 1e100, 1e305)


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def three_clusters(seed=0, n_per_cluster=50):
    rng = np.random.RandomState(seed)
    return np.concatenate(
        [
            rng.normal(0.0, 1.0, (n_per_cluster, 3)),
            rng.normal(3.0, 0.7, (n_per_cluster, 3)),
            rng.normal([0.0, 4.0, -2.0], 1.5, (n_per_cluster, 3)),
        ]
    )


def plug_in_log_density(model, X):
    """log sum_k w_k N(x; m_k, E[Lambda_k]^-1) over each row's observed entries."""
    covariances = dense_covariances(model)
    out = np.empty((len(model.weights_), len(X)))
    # The rows of each pattern of observed entries at once.
    patterns, which = np.unique(~np.isnan(X), axis=0, return_inverse=True)
    for number, seen in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == number)
        values = X[np.ix_(rows, seen)]
        for k, (mean, covariance) in enumerate(
            zip(model.means_, covariances, strict=True)
        ):
            out[k, rows] = np.log(model.weights_[k]) + np.atleast_1d(
                stats.multivariate_normal.logpdf(
                    values, mean[seen], covariance[np.ix_(seen, seen)]
                )
            )
    return logsumexp(out, axis=0)


def fit_with_total(estimator, X, total, **params):
    weights = np.full(len(X), total / len(X))
    return estimator(n_components=3, random_state=0, **params).fit(
        X, sample_weight=weights
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictive_tends_to_the_plug_in_density_as_counts_grow(covariance_type):
    # The Student-t predictive differs from the plug-in Gaussian by O(1 / N)
    # (the degrees of freedom and beta both grow with the total weight N):
    # the gap falls with N down to the rounding of the log density itself,
    # where the textbook normaliser was off by 1e-3 at 1e12, nats at 1e15
    # and 40 nats from 1e18.
    X = three_clusters()
    for total in TOTALS:
        vi = fit_with_total(
            VariationalGaussianMixture, X, total, covariance_type=covariance_type
        )
        reference = plug_in_log_density(vi, X)
        gap = np.max(np.abs(vi.score_samples(X) - reference))
        rounding = 32 * EPS * np.max(np.abs(reference))
        assert gap <= 200.0 / total + rounding, (total, gap)
        assert vi.score(X) == pytest.approx(
            np.mean(reference), abs=200.0 / total + rounding
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_missing_entries_predictive_tends_to_the_plug_in_marginal(covariance_type):
    # Rows with missing entries are scored by the marginal of the observed
    # ones: at large counts, the marginal of the plug-in Gaussian.
    X = three_clusters(seed=1)
    test = three_clusters(seed=2)[::10].copy()
    test[0, 0] = test[1, 1] = test[2, 2] = test[3, :2] = test[4, 1:] = np.nan
    for total in (1e12, 1e18, 1e305):
        vi = fit_with_total(
            VariationalGaussianMixture, X, total, covariance_type=covariance_type
        )
        reference = plug_in_log_density(vi, test)
        gap = np.max(np.abs(vi.score_samples(test) - reference))
        assert gap <= 200.0 / total + 32 * EPS * np.max(np.abs(reference)), (total, gap)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_and_score_agree_with_em_at_large_counts(covariance_type):
    # With counts of 1e12 and more the posterior is a point mass at the
    # maximum-likelihood fit: VI's labels, probabilities and score are EM's.
    X = three_clusters(seed=3)
    for total in (1e12, 1e15, 1e18, 1e100):
        vi = fit_with_total(
            VariationalGaussianMixture, X, total, covariance_type=covariance_type
        )
        em = fit_with_total(
            EMGaussianMixture, X, total, covariance_type=covariance_type
        )
        assert adjusted_rand_score(em.predict(X), vi.predict(X)) == 1.0
        assert vi.score(X) == pytest.approx(em.score(X), rel=1e-10)
        order = [
            int(np.argmin(np.sum((em.means_ - m) ** 2, axis=1))) for m in vi.means_
        ]
        np.testing.assert_allclose(
            vi.predict_proba(X), em.predict_proba(X)[:, order], atol=1e-9
        )


def student_t_reference(x, mean, precision, dof):
    """High-precision log density of a multivariate Student-t (mpmath)."""
    digits = 40 + int(mpmath.log10(max(dof, 1.0)))
    with mpmath.workdps(digits):
        x, mean = mpmath.matrix(list(x)), mpmath.matrix(list(mean))
        precision = mpmath.matrix(precision.tolist())
        d, nu = len(x), mpmath.mpf(dof)
        diff = x - mean
        quadratic = (diff.T * precision * diff)[0]
        value = (
            mpmath.loggamma((nu + d) / 2)
            - mpmath.loggamma(nu / 2)
            - d / mpmath.mpf(2) * mpmath.log(nu * mpmath.pi)
            + mpmath.log(mpmath.det(precision)) / 2
            - (nu + d) / 2 * mpmath.log1p(quadratic / nu)
        )
        return float(value)


def reference_predictive(model, x):
    """A one-component VI model's predictive at x, from its fitted attributes.

    Bishop (2006), eqs. 10.81-10.82: full and tied, a t with nu + 1 - D
    degrees of freedom and precision (nu + 1 - D) beta / (nu (1 + beta))
    E[Lambda]; diag, a product of univariate t with nu degrees of freedom;
    spherical, one t with D nu degrees of freedom.
    """
    beta = float(model.mean_precision_[0])
    nu = float(np.ravel(model.degrees_of_freedom_)[0])
    shrink = beta / (1.0 + beta)
    precision = np.linalg.inv(dense_covariances(model)[0])
    mean = model.means_[0]
    d = len(x)
    if model.covariance_type in ("full", "tied"):
        dof = nu + 1.0 - d
        return student_t_reference(x, mean, dof / nu * shrink * precision, dof)
    if model.covariance_type == "spherical":
        return student_t_reference(x, mean, shrink * precision, d * nu)
    return sum(
        student_t_reference(
            x[j : j + 1], mean[j : j + 1], shrink * precision[j : j + 1, j : j + 1], nu
        )
        for j in range(d)
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictive_matches_a_high_precision_student_t(covariance_type):
    X = three_clusters(seed=4)[:, :2]
    points = X[::25]
    for total in (20.0, 1e4, 1e9, 1e15, 1e18, 1e100, 1e300):
        model = VariationalGaussianMixture(
            n_components=1, covariance_type=covariance_type
        ).fit(X, sample_weight=np.full(len(X), total / len(X)))
        got = model.score_samples(points)
        want = np.array([reference_predictive(model, x) for x in points])
        np.testing.assert_allclose(
            got, want, rtol=0, atol=1e-14 * np.max(np.abs(want)) + 1e-14
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_total_samples_of_1e308_gives_finite_values_everywhere(
    covariance_type, weight_prior
):
    X = three_clusters(seed=5)
    model = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_prior,
        total_samples=1e308,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for start in range(3):
            model.partial_fit(X[start::3])
        for name, value in vars(model).items():
            if name.endswith("_") and not name.startswith("_"):
                for part in value if isinstance(value, tuple) else [value]:
                    if np.asarray(part).dtype.kind == "f":
                        assert np.all(np.isfinite(part)), name
        holes = X.copy()
        holes[::4, 1] = np.nan
        for rows in (X, holes):
            scores = model.score_samples(rows)
            assert np.all(np.isfinite(scores))
            assert np.all(np.isfinite(model.predict_proba(rows)))
            # The predictive is the plug-in density to rounding there.
            reference = plug_in_log_density(model, rows)
            np.testing.assert_allclose(
                scores, reference, rtol=0, atol=32 * EPS * np.max(np.abs(reference))
            )
        draws, _ = model.sample(100)
        assert np.all(np.isfinite(draws))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_rows_too_far_to_square_keep_a_finite_decreasing_density(covariance_type):
    # A row with a missing entry and an observed value of 1e200 had a log
    # density of +inf (the repair of its overflowed form took the sign of a
    # log density), and a score of 2.9e305 with it.
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 5.0])
    model = VariationalGaussianMixture(
        n_components=2, covariance_type=covariance_type, random_state=0
    ).fit(X)
    densities = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks either
        for far in (1e50, 1e150, 1e200, 1e300):
            rows = np.array(
                [[far, 1.0, 2.0], [np.nan, far, np.nan], [1.0, np.nan, far]]
            )
            densities.append(model.score_samples(rows))
    densities = np.array(densities)
    assert np.isfinite(densities).all()
    assert (np.diff(densities, axis=0) <= 0).all()
    assert densities.max() < model.score_samples(X).min()


def test_total_samples_beyond_1e308_is_refused():
    X = three_clusters(seed=6)
    model = VariationalGaussianMixture(total_samples=np.finfo(float).max)
    with pytest.raises(ValueError, match="total_samples"):
        model.partial_fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_wide_spread_streams_at_1e308_and_overflowing_counts_are_refused(
    covariance_type,
):
    base = three_clusters(seed=7)
    X = np.hstack([base, base[::-1]]) * 1e3 + 1e6
    # Scaled to 1e308 rows the scatter (about 1e314) is not a float64: the
    # stream's update works with it per unit of weight. (Six features: D
    # times the degrees of freedom, spherical's, exceeds the largest float.)
    model = VariationalGaussianMixture(
        n_components=3, covariance_type=covariance_type, total_samples=1e308
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.partial_fit(X)
    assert np.isfinite(model.lower_bound_)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert np.all(np.isfinite(model.covariances_))
    assert np.all(np.isfinite(model.sample(50)[0]))
    # Counts summing to 1e305 make the summed scatter itself overflow.
    counts = np.full(len(X), 1e305 / len(X))
    with pytest.raises(ValueError, match="overflows the floating-point range"):
        VariationalGaussianMixture(covariance_type=covariance_type).fit(
            X, sample_weight=counts
        )


# ------------------------------------------- the bound's terms at huge counts


def high_precision(digits_for):
    """mpmath's working precision for arguments up to ``digits_for``."""
    return mpmath.workdps(40 + int(mpmath.log10(max(digits_for, 1.0))))


@pytest.mark.parametrize("dof", [2.3, 40.0, 1e6, 1e15, 1e100, 1e307])
def test_wishart_terms_match_high_precision_at_any_dof(dof):
    # KL(Wishart) and E[log det] hold terms of size dof log dof that cancel;
    # compared with the textbook formulas in high precision.
    n_features, dof0, log_det_mean, trace, log_det_scale0 = 2, 1.5, 0.3, 4.5, -0.7
    with high_precision(dof):
        nu, nu0 = mpmath.mpf(dof), mpmath.mpf(dof0)
        halves = [(nu + 1 - i) / 2 for i in range(1, n_features + 1)]
        digammas = sum(mpmath.digamma(a) for a in halves)
        log_det_scale = log_det_mean - n_features * mpmath.log(nu)

        def log_gamma_d(a):
            return mpmath.log(mpmath.pi) / 2 + sum(
                mpmath.loggamma(a - mpmath.mpf(j) / 2) for j in range(n_features)
            )

        kl = (
            nu0 / 2 * (log_det_scale0 - log_det_scale)
            + (nu - nu0) / 2 * digammas
            - log_gamma_d(nu / 2)
            + log_gamma_d(nu0 / 2)
            + nu / 2 * (trace / nu - n_features)
        )
        gap = digammas + n_features * mpmath.log(2) - n_features * mpmath.log(nu)
        kl, gap = float(kl), float(gap)
    got = kl_wishart(dof, log_det_mean, trace, dof0, log_det_scale0, n_features)
    assert got == pytest.approx(kl, rel=4 * EPS, abs=4 * EPS)
    got_gap = wishart_log_det_gap(dof, n_features)
    assert got_gap == pytest.approx(gap, rel=16 * EPS, abs=4 * EPS)


@pytest.mark.parametrize("shape", [0.05, 3.0, 500.0, 1e8, 1e15, 1e300])
def test_gamma_and_dirichlet_terms_match_high_precision(shape):
    mean, shape0, rate0 = 1.7, 0.8, 1.3
    alpha, alpha0 = np.array([0.2, 0.5, 0.3]) * shape, 0.25
    with high_precision(shape):
        a, a0, b0 = mpmath.mpf(shape), mpmath.mpf(shape0), mpmath.mpf(rate0)
        b = a / mpmath.mpf(mean)
        kl_g = (
            (a - a0) * mpmath.digamma(a)
            - mpmath.loggamma(a)
            + mpmath.loggamma(a0)
            + a0 * (mpmath.log(b) - mpmath.log(b0))
            + a * (b0 - b) / b
        )
        parts = [mpmath.mpf(float(v)) for v in alpha]
        total, prior = sum(parts), mpmath.mpf(alpha0)
        kl_d = (
            mpmath.loggamma(total)
            - sum(mpmath.loggamma(v) for v in parts)
            - mpmath.loggamma(3 * prior)
            + 3 * mpmath.loggamma(prior)
            + sum(
                (v - prior) * (mpmath.digamma(v) - mpmath.digamma(total)) for v in parts
            )
        )
        kl_g, kl_d = float(kl_g), float(kl_d)
    assert kl_gamma(shape, mean, shape0, rate0) == pytest.approx(kl_g, rel=8 * EPS)
    assert kl_dirichlet(alpha, alpha0) == pytest.approx(kl_d, rel=8 * EPS)
    two = alpha[:2]
    assert float(kl_beta(two[0], two[1], 1.0, 0.7)) == pytest.approx(
        kl_dirichlet(two, [1.0, 0.7]), rel=8 * EPS
    )


def test_float32_counts_beyond_its_range_are_a_clear_error():
    # Fitted attributes follow X's dtype; float32 holds counts up to 3e38.
    X = three_clusters(seed=8).astype(np.float32)
    model = VariationalGaussianMixture(n_components=3, total_samples=1e308)
    with pytest.raises(ValueError, match="beyond the range of float32"):
        model.partial_fit(X)
    model.set_params(total_samples=1e38).partial_fit(X)
    assert np.all(np.isfinite(model.score_samples(X)))
    counts = np.full(len(X), 1e40 / len(X))
    with pytest.raises(ValueError, match="pass float32 data as float64"):
        VariationalGaussianMixture(n_components=3).fit(X, sample_weight=counts)
