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
from scipy.special import betaln, digamma, gammaln

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
    """Per-component constant of ``log rho_nk = const_k - quadratic_nk / 2``."""
    n_features = expectations.means.shape[1]
    return (
        expectations.log_weights
        + 0.5 * expectations.log_det
        - 0.5 * n_features * LOG_2PI
        - 0.5 * expectations.mean_variance
        - 0.5 * reg_covar * unit.trace(expectations.precisions)
    )


def expected_log_joint(moments, expectations, unit, reg_covar):
    """``E_q[log p(X, Z | theta)]`` of the smoothed model, from statistics.

    Uses ``sum_n w r (x - m)^T L (x - m) = tr(L S_k) + N_k d_k^T L d_k`` with
    ``d_k = xbar_k - m_k``, so any q(Z) enters only through its statistics;
    or, where the E-step whitened the rows, their whitened moments.
    """
    constants = log_rho_constants(expectations, unit, reg_covar)
    # A component with N_k = 0 contributes nothing, even if log pi_k = -inf.
    present = moments.nk > 0
    weighted = np.dot(moments.nk[present], constants[present])
    if moments.whitened is not None:
        # Rows the E-step whitened: their scatter would cancel digits.
        quadratic = moments.whitened.quadratic(
            expectations.means, expectations.precisions_cholesky
        )
        return float(weighted - 0.5 * quadratic)
    offsets = moments.offsets_from(expectations.means)
    quadratic = unit.trace_product(expectations.precisions, moments.scatter) + np.dot(
        moments.nk, unit.whitened_norms(offsets, expectations.precisions_cholesky)
    )
    return float(weighted - 0.5 * quadratic)


# ---------------------------------------------------------------------------
# Expectations and divergences of the conjugate factors.


def _wishart_digamma_sum(dof, n_features):
    """``sum_{i=1..D} psi((dof + 1 - i) / 2)``, elementwise over dof."""
    dof = np.asarray(dof, dtype=float)
    halves = 0.5 * (dof[..., np.newaxis] - np.arange(n_features))
    return np.sum(digamma(halves), axis=-1)


def log_multivariate_gamma(a, n_features):
    """``log Gamma_D(a) = D(D-1)/4 log(pi) + sum_{j<D} log Gamma(a - j/2)``.

    Elementwise over ``a`` (scipy's multigammaln takes scalars only and
    validates its input on every call).
    """
    a = np.asarray(a, dtype=float)
    halves = a[..., np.newaxis] - 0.5 * np.arange(n_features)
    constant = 0.25 * n_features * (n_features - 1) * np.log(np.pi)
    return constant + np.sum(gammaln(halves), axis=-1)


def expected_log_det_wishart(dof, log_det_scale, n_features):
    """``E[log det Lambda]`` for ``Lambda ~ Wishart(W, dof)``.

    ``sum_i psi((dof + 1 - i) / 2) + D log 2 + log det W`` (Bishop eq. B.81).
    """
    digammas = _wishart_digamma_sum(dof, n_features)
    return digammas + n_features * np.log(2.0) + log_det_scale


def kl_wishart(
    dof, log_det_scale, trace_prior_inverse_scale, dof0, log_det_scale0, n_features
):
    """``KL(Wishart(W, dof) || Wishart(W0, dof0))``, elementwise over dof.

    ``trace_prior_inverse_scale`` is ``tr(W0^{-1} W)``; the log-dets are of
    the scale matrices W and W0. From Bishop eqs. B.78-B.82: the ``log 2``
    terms of the normaliser and of ``E[log det Lambda]`` cancel.
    """
    dof = np.asarray(dof, dtype=float)
    return (
        0.5 * dof0 * (log_det_scale0 - log_det_scale)
        + 0.5 * (dof - dof0) * _wishart_digamma_sum(dof, n_features)
        - log_multivariate_gamma(0.5 * dof, n_features)
        + log_multivariate_gamma(0.5 * dof0, n_features)
        + 0.5 * dof * (trace_prior_inverse_scale - n_features)
    )


def kl_gamma(shape, rate, shape0, rate0):
    """``KL(Gamma(shape, rate) || Gamma(shape0, rate0))``, elementwise."""
    return (
        (shape - shape0) * digamma(shape)
        - gammaln(shape)
        + gammaln(shape0)
        + shape0 * (np.log(rate) - np.log(rate0))
        + shape * (rate0 / rate - 1.0)
    )


def kl_normal_given_precision(beta, beta0, prior_mahalanobis, n_features):
    """``E_q(Lambda) KL(N(m, (beta Lambda)^-1) || N(m0, (beta0 Lambda)^-1))``.

    ``prior_mahalanobis`` is ``(m - m0)^T E[Lambda] (m - m0)``, shape (K,).
    """
    ratio = beta0 / beta
    return 0.5 * (
        n_features * (ratio - 1.0 - np.log(ratio)) + beta0 * prior_mahalanobis
    )


def kl_dirichlet(concentration, concentration0):
    """``KL(Dirichlet(alpha) || Dirichlet(alpha0))`` (alpha0 may be scalar)."""
    alpha = np.asarray(concentration, dtype=float)
    alpha0 = np.broadcast_to(np.asarray(concentration0, dtype=float), alpha.shape)
    total = alpha.sum()
    return float(
        gammaln(total)
        - np.sum(gammaln(alpha))
        - gammaln(alpha0.sum())
        + np.sum(gammaln(alpha0))
        + np.dot(alpha - alpha0, digamma(alpha) - digamma(total))
    )


def kl_beta(a, b, a0, b0):
    """``KL(Beta(a, b) || Beta(a0, b0))``, elementwise."""
    return (
        betaln(a0, b0)
        - betaln(a, b)
        + (a - a0) * digamma(a)
        + (b - b0) * digamma(b)
        + (a0 - a + b0 - b) * digamma(a + b)
    )


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
