"""Diagonal covariance: one precision per component and feature.

In VI each precision has its own Normal-Gamma factor:
q(lambda_kj) = Gamma(nu_k / 2, nu_k / (2 precisions_[k, j])) and
q(mu_kj | lambda_kj) = N(m_kj, (beta_k lambda_kj)^-1), with prior
Gamma(nu_0 / 2, covariance_prior_[j] / 2). This is the exact conjugate model;
scikit-learn's BayesianGaussianMixture reuses Wishart terms here instead.
"""

import numpy as np
from scipy.special import digamma, gammaln

from .._elbo import kl_gamma
from ._unit import CovarianceUnit
from .shared_center import SharedCenterMixin
from .variances import VarianceStorageMixin


class DiagCovariance(VarianceStorageMixin, SharedCenterMixin, CovarianceUnit):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"

    @property
    def precision_shape(self):
        return (self.n_components, self.n_features)

    def log_det_cholesky(self, precisions_cholesky):
        return 2.0 * np.sum(np.log(precisions_cholesky), axis=1)

    def trace(self, precisions):
        return np.sum(precisions, axis=1)

    # ---------------------------------------------------------------- E-step
    def _quadratic_of_differences(self, diff, precisions_cholesky, component):
        return (diff * diff) @ (precisions_cholesky[component] ** 2)

    def _add_second_moment(self, sum_xx, component, diff, weights):
        sum_xx[component] += weights @ (diff * diff)

    def _quadratic_about_center(self, X, means, precisions_cholesky, center):
        centered = self._centered(X, center)
        squared = centered * centered
        precisions = precisions_cholesky**2
        offsets = means - center
        quad = self._expanded_squares(
            squared @ precisions.T,
            centered @ (precisions * offsets).T,
            np.sum(precisions * offsets**2, axis=1),
        )
        return quad.astype(X.dtype, copy=False), (centered, squared)

    def _moments_about_center(self, X, weighted_resp, center, cache):
        if cache is None:
            centered = self._centered(X, center)
            squared = centered * centered
        else:
            centered, squared = cache
        return weighted_resp.T @ centered, weighted_resp.T @ squared

    def centered_scatter(self, nk, sum_x, sum_xx):
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        scatter = sum_xx - sum_x**2 / safe
        # A sum of squares: clip the rounding of the subtraction.
        return np.maximum(scatter, 0.0)

    def mahalanobis(self, diff, precisions):
        return np.sum(precisions * diff**2, axis=1)

    # -------------------------------------------------------------------- EM
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        safe = np.where(empty, 1.0, nk)[:, np.newaxis]
        covariances = scatter / safe + reg_covar
        if previous is not None:
            covariances[empty] = previous[empty]
        return covariances

    def n_parameters(self):
        return self.n_components * self.n_features

    def sample_component(self, rng, covariances, component, n_samples):
        return rng.standard_normal((n_samples, self.n_features)) * np.sqrt(
            covariances[component]
        )

    # -------------------------------------------------------------------- VI
    def check_prior(self, covariance_prior):
        return self._check_positive_prior(covariance_prior, (self.n_features,))

    def prior_from_scatter(self, scatter, denominator, reg_covar):
        return scatter[0] / denominator + reg_covar

    def conjugate_update(self, prior, nk, scatter, mean_offsets, shrinkage, reg):
        dof = prior.dof + nk
        inverse_scale = (
            prior.covariance
            + scatter
            + (reg * nk)[:, np.newaxis]
            + shrinkage[:, np.newaxis] * mean_offsets**2
        )
        return inverse_scale / dof[:, np.newaxis], dof

    def expected_log_det(self, precisions_cholesky, dof):
        # E[log lambda] = psi(a) - log b, a = nu / 2, b = nu / (2 E[lambda]).
        return self.n_features * (digamma(0.5 * dof) - np.log(0.5 * dof)) + (
            self.log_det_cholesky(precisions_cholesky)
        )

    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        shape = 0.5 * dof[:, np.newaxis]
        rate = shape / precisions
        return float(
            np.sum(kl_gamma(shape, rate, 0.5 * prior.dof, 0.5 * prior.covariance))
        )

    def predictive_dof_and_scale(self, dof, mean_precision):
        # Per feature: a univariate t with nu_k degrees of freedom.
        return dof, mean_precision / (1.0 + mean_precision)

    def log_predictive(self, X, means, precisions_cholesky, dof, beta, reference):
        """Product over features of univariate Student-t densities."""
        t_dof, scale = self.predictive_dof_and_scale(dof, beta)
        precisions = scale[:, np.newaxis] * precisions_cholesky**2
        out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        for k in range(self.n_components):
            z = (X - means[k].astype(X.dtype)) ** 2
            z *= (precisions[k] / t_dof[k]).astype(X.dtype)
            out[:, k] = -0.5 * (t_dof[k] + 1.0) * np.sum(np.log1p(z), axis=1)
        constant = self.n_features * (
            gammaln(0.5 * (t_dof + 1.0))
            - gammaln(0.5 * t_dof)
            - 0.5 * np.log(t_dof * np.pi)
        ) + 0.5 * np.sum(np.log(precisions), axis=1)
        return out + constant.astype(X.dtype)

    def _chi2_shape(self, n_samples):
        # Each feature has its own precision, hence its own mixing variable.
        return (n_samples, self.n_features)
