"""The evidence lower bound: every term, with every constant.

For data x_n with weights w_n, responsibilities r_nk = q(z_n = k) and
summed statistics N_k, xbar_k, S_k (scatter about xbar_k),

    ELBO = E_q[log p(X, Z | theta)]           (expected_log_joint)
         + H[q(Z)]                            (the E-step's entropy)
         - KL(q(pi) || p(pi))                 (weight priors, VI only)
         - KL(q(mu, Lambda) || p(mu, Lambda))  (covariance units, VI only)

EM is the case where q(theta) is a point mass: the KL terms vanish, the
expectations below are plain values, and the per-component mean uncertainty
``D / beta_k`` is zero. The data term is that of the reg_covar-smoothed
objective of DESIGN.md: each unit of responsibility also pays
``-(reg_covar / 2) E[tr Lambda_k]``.

References: C. Bishop (2006), PRML eqs. 10.70-10.77; D. Blei, M. Jordan
(2006) for the stick-breaking terms.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from ._special import digamma_rest, log_gamma_rest

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ComponentExpectations:
    """What the E-step and the data term need from theta or q(theta).

    Attributes
    ----------
    log_weights : ndarray of shape (K,)
        ``log pi_k`` (EM) or ``E[log pi_k]`` (VI); ``-inf`` for an EM
        component of weight zero.
    means : ndarray of shape (K, D)
        ``mu_k`` (EM) or the mean ``m_k`` of q(mu_k).
    precisions, precisions_cholesky : ndarray
        ``Lambda_k`` (EM) or ``E[Lambda_k]`` (VI), in the unit's layout.
    log_det : ndarray of shape (K,)
        ``log det Lambda_k`` or ``E[log det Lambda_k]``.
    mean_variance : ndarray of shape (K,)
        ``E[(mu_k - m_k)^T Lambda_k (mu_k - m_k)] = D / beta_k`` (0 for EM).
    """

    log_weights: np.ndarray
    means: np.ndarray
    precisions: np.ndarray
    precisions_cholesky: np.ndarray
    log_det: np.ndarray
    mean_variance: np.ndarray


def log_rho_constants(expectations, unit, reg_covar):
    """Per-component constant of ``log rho_nk = const_k - quadratic_nk / 2``.

    Kept with the expectations, per ``reg_covar``: an iteration's data term
    and E-step both need those of one state.
    """
    known = expectations.__dict__.setdefault("_log_rho_constants", {})
    constants = known.get(reg_covar)
    if constants is None:
        n_features = expectations.means.shape[1]
        constants = known[reg_covar] = (
            expectations.log_weights
            + 0.5 * expectations.log_det
            - 0.5 * n_features * LOG_2PI
            - 0.5 * expectations.mean_variance
            - 0.5 * reg_covar * unit.trace(expectations.precisions)
        )
    return constants


def expected_log_joint(moments, expectations, unit, reg_covar):
    """``E_q[log p(X, Z | theta)]`` of the smoothed model, from statistics.

    Uses ``sum_n w r (x - m)^T L (x - m) = tr(L S_k) + N_k d_k^T L d_k`` with
    ``d_k = xbar_k - m_k``, so any q(Z) enters only through its statistics;
    or, where the E-step whitened the rows, their whitened moments.
    """
    constants = log_rho_constants(expectations, unit, reg_covar)
    # A component with N_k = 0 contributes nothing, even if log pi_k = -inf.
    present = moments.nk > 0
    if present.all():
        weighted = np.dot(moments.nk, constants)
    else:
        weighted = np.dot(moments.nk[present], constants[present])
    if moments.whitened is not None:
        # Rows the E-step whitened: their scatter would cancel digits.
        quadratic = moments.whitened.quadratic(
            expectations.means,
            unit.component_factors(expectations.precisions_cholesky),
        )
        return float(weighted - 0.5 * quadratic)
    offsets = moments.offsets_from(expectations.means)
    quadratic = unit.trace_product(expectations.precisions, moments.scatter) + np.dot(
        moments.nk, unit.whitened_norms(offsets, expectations.precisions_cholesky)
    )
    return float(weighted - 0.5 * quadratic)


# ---------------------------------------------------------------------------
# Expectations and divergences of the conjugate factors.


def _wishart_halves(dof, n_features):
    """``a_i = (dof + 1 - i) / 2`` for i = 1..D, and ``log(a_i / (dof / 2))``."""
    dof = np.asarray(dof, dtype=float)[..., np.newaxis]
    offsets = -np.arange(n_features, dtype=float)
    return 0.5 * (dof + offsets), np.log1p(offsets / dof)


def log_multivariate_gamma(a, n_features):
    """``log Gamma_D(a) = D(D-1)/4 log(pi) + sum_{j<D} log Gamma(a - j/2)``.

    Elementwise over ``a`` (scipy's multigammaln takes scalars only and
    validates its input on every call).
    """
    a = np.asarray(a, dtype=float)
    halves = a[..., np.newaxis] - 0.5 * np.arange(n_features)
    constant = 0.25 * n_features * (n_features - 1) * np.log(np.pi)
    return constant + np.sum(gammaln(halves), axis=-1)


def wishart_log_det_gap(dof, n_features):
    """``E[log det Lambda] - log det E[Lambda]`` for ``Lambda ~ Wishart(W, dof)``.

    ``sum_i psi(a_i) + D log 2 + log det W`` (Bishop eq. B.81) with
    ``E[Lambda] = dof W`` and ``a_i = (dof + 1 - i) / 2``: the sum of
    ``log(a_i / (dof / 2)) + (psi(a_i) - log a_i)``, which vanishes as dof
    grows, taken in that form so that no ``log dof`` cancels.
    """
    halves, log_ratios = _wishart_halves(dof, n_features)
    return np.sum(log_ratios + digamma_rest(halves), axis=-1)


def kl_wishart(dof, log_det_mean, trace_prior_mean, dof0, log_det_scale0, n_features):
    """``KL(Wishart(W, dof) || Wishart(W0, dof0))``, elementwise over dof.

    Given ``log det E[Lambda]`` and ``tr(W0^{-1} E[Lambda])`` of ``E[Lambda]
    = dof W``, and ``log det W0``. Bishop's eqs. B.78-B.82 hold terms of size
    ``dof log dof`` that cancel; with Stirling's remainders (skvi._special)
    and ``a_i = (dof + 1 - i) / 2`` they cancel exactly, leaving

        dof0/2 (log det W0 - log det E[Lambda]) + sum_i [i/2 log a_i
        - dof0/2 log(2 a_i / dof) + (dof - dof0)/2 (psi(a_i) - log a_i)
        - (log Gamma(a_i) - (a_i - 1/2) log a_i + a_i)]
        + tr(W0^{-1} E[Lambda]) / 2 - D(D-1)/4 (1 + log pi)
        + log Gamma_D(dof0 / 2),

    finite and exact for any dof up to the largest float.
    """
    dof = np.asarray(dof, dtype=float)
    halves, log_ratios = _wishart_halves(dof, n_features)
    ranks = np.arange(1, n_features + 1, dtype=float)
    per_dimension = (
        0.5 * ranks * np.log(halves)
        - 0.5 * dof0 * (log_ratios - np.log(2.0))
        + 0.5 * (dof - dof0)[..., np.newaxis] * digamma_rest(halves)
        - log_gamma_rest(halves)
    )
    pairs = 0.25 * n_features * (n_features - 1)
    return (
        0.5 * dof0 * (log_det_scale0 - log_det_mean)
        + np.sum(per_dimension, axis=-1)
        + 0.5 * trace_prior_mean
        - pairs * (1.0 + np.log(np.pi))
        + log_multivariate_gamma(0.5 * dof0, n_features)
    )


def kl_gamma(shape, mean, shape0, rate0):
    """``KL(Gamma(shape, shape / mean) || Gamma(shape0, rate0))``, elementwise.

    Given the mean ``E[lambda]`` rather than the rate, which overflows when
    the shape is huge. The textbook form's terms of size ``shape log shape``
    cancel exactly with Stirling's remainders (skvi._special), leaving

        log(shape) / 2 + (shape - shape0) (psi(shape) - log shape)
        - (log Gamma(shape) - (shape - 1/2) log shape + shape)
        + log Gamma(shape0) - shape0 log(mean rate0) + rate0 mean.
    """
    shape = np.asarray(shape, dtype=float)
    return (
        0.5 * np.log(shape)
        + (shape - shape0) * digamma_rest(shape)
        - log_gamma_rest(shape)
        + gammaln(shape0)
        - shape0 * (np.log(mean) + np.log(rate0))
        + rate0 * mean
    )


def kl_normal_given_precision(beta, beta0, prior_mahalanobis, n_features):
    """``E_q(Lambda) KL(N(m, (beta Lambda)^-1) || N(m0, (beta0 Lambda)^-1))``.

    ``prior_mahalanobis`` is ``(m - m0)^T E[Lambda] (m - m0)``, shape (K,).
    """
    ratio = beta0 / beta
    return 0.5 * (
        n_features * (ratio - 1.0 - np.log(ratio)) + beta0 * prior_mahalanobis
    )


def _kl_dirichlet_last_axis(alpha, alpha0):
    """``KL(Dirichlet(alpha) || Dirichlet(alpha0))`` along the last axis.

    With ``T = sum alpha`` and ``A0 = sum alpha0``, the textbook form's
    terms of size ``T log T`` cancel exactly with Stirling's remainders
    (skvi._special), leaving

        (A0 - 1/2) log T + sum_k (1/2 - alpha0_k) log alpha_k
        + R(T) - sum_k R(alpha_k) + sum_k (alpha_k - alpha0_k) P(alpha_k)
        - (T - A0) P(T) - log Gamma(A0) + sum_k log Gamma(alpha0_k),

    ``R`` and ``P`` being the remainders of log Gamma and digamma: exact
    for any total weight.
    """
    total = np.sum(alpha, axis=-1)
    total0 = np.sum(alpha0, axis=-1)
    return (
        (total0 - 0.5) * np.log(total)
        + np.sum((0.5 - alpha0) * np.log(alpha), axis=-1)
        + log_gamma_rest(total)
        - np.sum(log_gamma_rest(alpha), axis=-1)
        + np.sum((alpha - alpha0) * digamma_rest(alpha), axis=-1)
        - np.sum(alpha - alpha0, axis=-1) * digamma_rest(total)
        - gammaln(total0)
        + np.sum(gammaln(alpha0), axis=-1)
    )


def kl_dirichlet(concentration, concentration0):
    """``KL(Dirichlet(alpha) || Dirichlet(alpha0))`` (alpha0 may be scalar)."""
    alpha = np.asarray(concentration, dtype=float)
    alpha0 = np.broadcast_to(np.asarray(concentration0, dtype=float), alpha.shape)
    return float(_kl_dirichlet_last_axis(alpha, alpha0))


def kl_beta(a, b, a0, b0):
    """``KL(Beta(a, b) || Beta(a0, b0))``, elementwise: a two-part Dirichlet."""
    parts = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, a0, b0)))
    alpha, alpha0 = np.stack(parts[:2], axis=-1), np.stack(parts[2:], axis=-1)
    return _kl_dirichlet_last_axis(alpha, alpha0)


@dataclass(frozen=True)
class ELBODecomposition:
    """The ELBO of a fitted model split into its terms, per unit of weight.

    Every value is divided by the total sample weight, the units of
    ``lower_bound_``. ``elbo = expected_log_joint + entropy - kl_weights -
    kl_components``.

    Attributes
    ----------
    expected_log_joint : float
        ``E_q[log p(X, Z | theta)]`` of the reg_covar-smoothed model.
    entropy : float
        Entropy of q(Z).
    kl_weights : float
        ``KL(q(pi) || p(pi))``; 0 for EM (a point estimate).
    kl_components : float
        ``KL(q(mu, Lambda) || p(mu, Lambda))``; 0 for EM.
    elbo : float
        The evidence lower bound.
    log_likelihood : float or None
        EM only: the smoothed log-likelihood ``log p(X; theta)``.
    kl_gap : float or None
        EM only: ``log_likelihood - elbo = KL(q(Z) || p(Z | X; theta))``,
        zero when q(Z) is the exact posterior.

    Examples
    --------
    >>> from skvi import VariationalGaussianMixture
    >>> from skvi.datasets import load_old_faithful
    >>> X = load_old_faithful().data
    >>> vi = VariationalGaussianMixture(n_components=3, random_state=0).fit(X)
    >>> terms = vi.elbo_decomposition(X)
    >>> total = (terms.expected_log_joint + terms.entropy - terms.kl_weights
    ...          - terms.kl_components)
    >>> abs(total - terms.elbo) < 1e-12, terms.log_likelihood is None
    (True, True)
    """

    expected_log_joint: float
    entropy: float
    kl_weights: float
    kl_components: float
    elbo: float
    log_likelihood: float | None = None
    kl_gap: float | None = None
