"""Diagonal covariance: one precision per component and feature.

In VI each precision has its own Normal-Gamma factor:
q(lambda_kj) = Gamma(nu_k / 2, nu_k / (2 precisions_[k, j])) and
q(mu_kj | lambda_kj) = N(m_kj, (beta_k lambda_kj)^-1), with prior
Gamma(nu_0 / 2, covariance_prior_[j] / 2). This is the exact conjugate model;
scikit-learn's BayesianGaussianMixture reuses Wishart terms here instead.
"""

import numpy as np

from .._elbo import LOG_2PI, kl_gamma
from .._special import digamma_rest, log_gamma_ratio
from ._unit import CovarianceUnit, student_t_kernel
from .variances import VarianceStorageMixin


class DiagCovariance(VarianceStorageMixin, CovarianceUnit):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"
    # Whether each precision is diagonal (missing entries then decouple).
    diagonal_precision = True

    @property
    def precision_shape(self):
        return (self.n_components, self.n_features)

    def log_det_cholesky(self, precisions_cholesky):
        return 2.0 * np.sum(np.log(precisions_cholesky), axis=1)

    def trace(self, precisions):
        return np.sum(precisions, axis=1)

    # ---------------------------------------------------------------- E-step
    @property
    def n_second_order(self):
        return self.n_features

    def second_order_features(self, centered, out):
        return np.multiply(centered, centered, out=out)

    def second_order_coefficients(self, precisions):
        return precisions

    def precision_times(self, precisions, vectors):
        return precisions * vectors

    def precision_diagonals(self, precisions):
        return precisions

    def second_moment_from_sums(self, sums):
        return sums

    def second_moment_from_dense(self, dense):
        return np.diagonal(dense, axis1=1, axis2=2).copy()

    def shifted_second_moment(self, first, counts, shifts):
        return np.sum(shifts * (2.0 * first + counts[..., np.newaxis] * shifts), axis=0)

    def centered_scatter(self, nk, sum_x, sum_xx):
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        scatter = sum_xx - sum_x * (sum_x / safe)
        # A sum of squares: clip the rounding of the subtraction.
        return np.maximum(scatter, 0.0)

    def scatter_diagonals(self, scatter):
        return scatter

    def mahalanobis(self, diff, precisions):
        return np.sum(precisions * diff**2, axis=1)

    def whitened_norms(self, diff, precisions_cholesky):
        return np.sum((precisions_cholesky * diff) ** 2, axis=1)

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
        return self.n_features * digamma_rest(0.5 * dof) + (
            self.log_det_cholesky(precisions_cholesky)
        )

    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        shape = 0.5 * dof[:, np.newaxis]
        return float(
            np.sum(kl_gamma(shape, precisions, 0.5 * prior.dof, 0.5 * prior.covariance))
        )

    def predictive_dof_and_scale(self, dof, mean_precision):
        # Per feature: a univariate t with nu_k degrees of freedom.
        return dof, mean_precision / (1.0 + mean_precision)

    def log_predictive(self, X, quadratic_forms, means, precisions_cholesky, dof, beta):
        """Product over the observed features of univariate Student-t, (K, n).

        A missing feature (NaN) is independent of the others given the
        component, so the marginal of the observed ones leaves it out.
        """
        t_dof, scale = self.predictive_dof_and_scale(dof, beta)
        precisions = scale[:, np.newaxis] * precisions_cholesky**2
        # In float64: the means are not rounded to the dtype of X, and the
        # squared standardised distances of far rows do not overflow.
        rows = X.astype(np.float64, copy=False)
        observed = ~np.isnan(rows)
        rows = np.where(observed, rows, 0.0)
        # Each feature's univariate t normaliser, in the form that stays
        # exact at large degrees of freedom (see log_multivariate_t).
        constants = (log_gamma_ratio(0.5 * t_dof, 0.5) - 0.5 * LOG_2PI)[
            :, np.newaxis
        ] + 0.5 * np.log(precisions)
        out = observed @ constants.T
        out = np.ascontiguousarray(out.T)
        for k in range(self.n_components):
            diff = rows - means[k]
            with np.errstate(over="ignore"):
                quadratic = diff * diff * precisions[k]
            z = student_t_kernel(quadratic, t_dof[k], 1.0)
            if not np.isfinite(z).all():
                # A square that overflows: log1p(d^2 c), c = precision / dof,
                # from log(d^2 c) = 2 log|d| + log c.
                huge = ~np.isfinite(z)
                log_factor = np.log(precisions[k]) - np.log(t_dof[k])
                log_factor = np.broadcast_to(log_factor, diff.shape)[huge]
                log_terms = 2.0 * np.log(np.abs(diff[huge])) + log_factor
                z[huge] = 0.5 * (t_dof[k] + 1.0) * np.logaddexp(0.0, log_terms)
            z *= observed
            out[k] -= np.sum(z, axis=1)
        return out.astype(X.dtype, copy=False)

    def conditional_predictive_draw(
        self, rng, means, covariances, quadratic, n_observed, t_dof, scale
    ):
        """Draws of missing features, each from its own univariate t.

        Each feature has its own mixing variable: given the component, the
        missing features are independent of the observed ones.
        """
        variances = np.diagonal(covariances, axis1=1, axis2=2) / scale
        gauss = rng.standard_normal(means.shape) * np.sqrt(variances)
        chi2 = rng.chisquare(t_dof, size=means.shape)
        return means + gauss / np.sqrt(chi2 / t_dof)

    def _chi2_shape(self, n_samples):
        # Each feature has its own precision, hence its own mixing variable.
        return (n_samples, self.n_features)
