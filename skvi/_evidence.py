"""The exact log evidence of a variational model's prior, for tiny data.

``log p(X) = log sum_z p(z) p(X | z)`` sums over all K^n assignments, with
p(X | z) in closed form by conjugacy (Normal-Wishart, Normal-Gamma; see
Bishop 2006 section 2.3.6 and K. Murphy, "Conjugate Bayesian analysis of the
Gaussian distribution", 2007) and p(z) the Dirichlet-multinomial or
truncated stick-breaking probability of the assignment. Every ELBO of the
same model is below it, which makes it the reference the variational bound
is judged against on small problems.
"""

import itertools

import numpy as np
from scipy.special import betaln, gammaln, logsumexp, multigammaln
from sklearn.utils.validation import check_is_fitted, validate_data

from ._elbo import LOG_2PI

MAX_ASSIGNMENTS = 2_000_000


def exact_log_evidence(model, X):
    """Exact ``log p(X)`` under a fitted VariationalGaussianMixture's prior.

    Parameters
    ----------
    model : VariationalGaussianMixture
        A fitted model with ``reg_covar=0``: the evidence is that of the
        plain model, which its ELBO bounds.
    X : array-like of shape (n_samples, n_features)
        Data, at most ``n_components ** n_samples = 2e6`` assignments.

    Returns
    -------
    log_evidence : float
        The total (not per-sample) log evidence; compare it with
        ``lower_bound_ * n_samples``.

    Examples
    --------
    >>> import numpy as np
    >>> from skvi import VariationalGaussianMixture, exact_log_evidence
    >>> X = np.array([[-2.1], [-1.9], [-2.4], [3.0], [3.3], [2.8]])
    >>> vgm = VariationalGaussianMixture(n_components=2, reg_covar=0.0,
    ...                                  random_state=0).fit(X)
    >>> bool(vgm.lower_bound_ * len(X) < exact_log_evidence(vgm, X))
    True
    """
    check_is_fitted(model)
    X = validate_data(model, X, reset=False, dtype=np.float64)
    if model.reg_covar != 0:
        raise ValueError(
            "exact_log_evidence is the evidence of the plain model; fit the "
            f"model with reg_covar=0 (it has reg_covar={model.reg_covar!r})."
        )
    n_samples = X.shape[0]
    n_components = model.n_components
    if n_components**n_samples > MAX_ASSIGNMENTS:
        raise ValueError(
            f"Enumerating {n_components}^{n_samples} assignments is too many "
            f"(limit {MAX_ASSIGNMENTS}); use fewer samples or components."
        )
    marginal = _MarginalLikelihood(model)
    terms = []
    for assignment in itertools.product(range(n_components), repeat=n_samples):
        z = np.asarray(assignment)
        counts = np.bincount(z, minlength=n_components)
        terms.append(
            _log_prior_of_assignment(model, counts) + marginal(X, z, n_components)
        )
    return float(logsumexp(terms))


def _log_prior_of_assignment(model, counts):
    """``log p(z)`` of one assignment sequence with these counts."""
    alpha = model.weight_concentration_prior_
    if model.weight_concentration_prior_type == "dirichlet_distribution":
        k = counts.size
        return float(
            gammaln(k * alpha)
            - gammaln(counts.sum() + k * alpha)
            + np.sum(gammaln(counts + alpha) - gammaln(alpha))
        )
    # Stick-breaking with v_k ~ Beta(1, alpha) and the last stick fixed to 1.
    later = np.concatenate([np.cumsum(counts[::-1])[-2::-1], [0]])[:-1]
    return float(np.sum(betaln(1 + counts[:-1], alpha + later) - betaln(1, alpha)))


class _MarginalLikelihood:
    """``log p(X | z)`` with the component parameters integrated out."""

    def __init__(self, model):
        self.kind = model.covariance_type
        self.mean = np.asarray(model.mean_prior_, dtype=float)
        self.beta = float(model.mean_precision_prior_)
        self.dof = float(model.degrees_of_freedom_prior_)
        self.covariance = np.asarray(model.covariance_prior_, dtype=float)

    def _spread(self, rows):
        """Sufficient statistics of a cluster about its posterior mean."""
        n = rows.shape[0]
        beta_n = self.beta + n
        if n == 0:
            return n, beta_n, np.zeros((rows.shape[1],) * 2)
        offset = rows.mean(axis=0) - self.mean
        centered = rows - rows.mean(axis=0)
        scatter = centered.T @ centered + self.beta * n / beta_n * np.outer(
            offset, offset
        )
        return n, beta_n, scatter

    def __call__(self, X, z, n_components):
        n_samples, d = X.shape
        clusters = [self._spread(X[z == k]) for k in range(n_components)]
        # (2 pi)^(-n D / 2) and the (beta_0 / beta_k)^(D / 2) of every mean.
        total = -0.5 * n_samples * d * LOG_2PI + sum(
            0.5 * d * np.log(self.beta / beta_n) for _, beta_n, _ in clusters
        )
        if self.kind == "tied":
            scatter = sum(s for _, _, s in clusters)
            return total + self._wishart_ratio(n_samples, scatter)
        for n, _, scatter in clusters:
            total += {
                "full": self._wishart_ratio,
                "diag": self._gamma_ratio_per_feature,
                "spherical": self._gamma_ratio_shared,
            }[self.kind](n, scatter)
        return total

    def _wishart_ratio(self, n, scatter):
        # Normalisers of the prior Wishart over the posterior one, times 2^.
        d = scatter.shape[0]
        dof_n = self.dof + n
        posterior = self.covariance + scatter
        return float(
            0.5 * self.dof * np.linalg.slogdet(self.covariance)[1]
            - 0.5 * dof_n * np.linalg.slogdet(posterior)[1]
            + multigammaln(0.5 * dof_n, d)
            - multigammaln(0.5 * self.dof, d)
            + 0.5 * n * d * np.log(2.0)
        )

    def _gamma_ratio_per_feature(self, n, scatter):
        shape0, rate0 = 0.5 * self.dof, 0.5 * self.covariance
        return _gamma_normaliser_ratio(
            shape0, rate0, shape0 + 0.5 * n, rate0 + 0.5 * np.diag(scatter)
        )

    def _gamma_ratio_shared(self, n, scatter):
        d = scatter.shape[0]
        shape0, rate0 = 0.5 * d * self.dof, 0.5 * d * self.covariance
        return _gamma_normaliser_ratio(
            shape0, rate0, shape0 + 0.5 * n * d, rate0 + 0.5 * np.trace(scatter)
        )


def _gamma_normaliser_ratio(shape0, rate0, shape, rate):
    """Log of the prior Gamma normaliser over the posterior one, summed.

    ``integral of lambda^(n/2) exp(-lambda s / 2) Gamma(lambda | a0, b0)``
    is ``b0^a0 / Gamma(a0) * Gamma(a) / b^a`` with ``a, b`` the posterior's.
    """
    return float(
        np.sum(
            shape0 * np.log(rate0)
            - shape * np.log(rate)
            + gammaln(shape)
            - gammaln(shape0)
        )
    )
