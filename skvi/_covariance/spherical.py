"""Spherical covariance: one precision per component, shared by all features.

In VI: q(lambda_k) = Gamma(nu_k D / 2, nu_k D / (2 precisions_[k])) and
q(mu_k | lambda_k) = N(m_k, (beta_k lambda_k)^-1 I), with prior
Gamma(nu_0 D / 2, D covariance_prior_ / 2). The precision is shared across
features, so the exact posterior predictive is one D-variate Student-t with
isotropic scale and nu_k D degrees of freedom, not a product of univariate t.
"""

import numpy as np

from .._elbo import kl_gamma
from .._special import digamma_rest
from ._unit import CovarianceUnit
from .variances import VarianceStorageMixin


class SphericalCovariance(VarianceStorageMixin, CovarianceUnit):
    """Each component has its own single variance."""

    name = "spherical"
    # Whether each precision is diagonal (missing entries then decouple).
    diagonal_precision = True

    @property
    def precision_shape(self):
        return (self.n_components,)

    def log_det_cholesky(self, precisions_cholesky):
        return 2.0 * self.n_features * np.log(precisions_cholesky)

    def trace(self, precisions):
        return self.n_features * precisions

    # ---------------------------------------------------------------- E-step
    @property
    def n_second_order(self):
        # The squared norm |e|^2.
        return 1

    def second_order_features(self, centered, out):
        return np.einsum("ij,ij->j", centered, centered, out=out[0])[np.newaxis]

    def second_order_coefficients(self, precisions):
        return precisions[:, np.newaxis]

    def precision_times(self, precisions, vectors):
        return precisions[:, np.newaxis] * vectors

    def precision_diagonals(self, precisions):
        return np.repeat(precisions[:, np.newaxis], self.n_features, axis=1)

    def second_moment_from_sums(self, sums):
        return sums[:, 0]

    def second_moment_from_dense(self, dense):
        return np.trace(dense, axis1=1, axis2=2)

    def shifted_second_moment(self, first, counts, shifts):
        return np.sum(
            np.sum(shifts * (2.0 * first + counts[..., np.newaxis] * shifts), axis=2),
            axis=0,
        )

    def centered_scatter(self, nk, sum_x, sum_xx):
        # The trace of each component's scatter about its own mean.
        safe = np.where(nk > 0, nk, 1.0)
        scatter = sum_xx - np.sum(sum_x * (sum_x / safe[:, np.newaxis]), axis=1)
        return np.maximum(scatter, 0.0)

    def scatter_diagonals(self, scatter):
        # The trace spread evenly: the mean variance of each coordinate.
        per_coordinate = scatter[:, np.newaxis] / self.n_features
        return np.repeat(per_coordinate, self.n_features, axis=1)

    def mahalanobis(self, diff, precisions):
        return precisions * np.sum(diff**2, axis=1)

    def whitened_norms(self, diff, precisions_cholesky):
        return precisions_cholesky**2 * np.sum(diff**2, axis=1)

    # -------------------------------------------------------------------- EM
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        safe = np.where(empty, 1.0, nk)
        covariances = scatter / (safe * self.n_features) + reg_covar
        if previous is not None:
            covariances[empty] = previous[empty]
        return covariances

    def n_parameters(self):
        return self.n_components

    def sample_component(self, rng, covariances, component, n_samples):
        return rng.standard_normal((n_samples, self.n_features)) * np.sqrt(
            covariances[component]
        )

    # -------------------------------------------------------------------- VI
    def check_prior(self, covariance_prior):
        return float(self._check_positive_prior(covariance_prior, ()))

    def prior_from_scatter(self, scatter, denominator, reg_covar):
        # The mean of the per-feature variances.
        return float(scatter[0] / (denominator * self.n_features) + reg_covar)

    def conjugate_update(self, prior, nk, scatter, mean_offsets, shrinkage, reg):
        d = self.n_features
        dof = prior.dof + nk
        inverse_scale = (
            d * prior.covariance
            + scatter
            + d * reg * nk
            + shrinkage * np.sum(mean_offsets**2, axis=1)
        )
        return inverse_scale / (d * dof), dof

    def _times_features(self, dof):
        """``D * dof``, held below half the largest float.

        A total weight near it would make the product overflow; the
        Gamma and the t are then Gaussian to every digit anyway.
        """
        largest = 0.5 * np.finfo(float).max / self.n_features
        return self.n_features * np.minimum(dof, largest)

    def expected_log_det(self, precisions_cholesky, dof):
        # D E[log lambda], with a = nu D / 2 and b = a / E[lambda].
        shape = 0.5 * self._times_features(dof)
        return self.n_features * digamma_rest(shape) + (
            self.log_det_cholesky(precisions_cholesky)
        )

    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        d = self.n_features
        return float(
            np.sum(
                kl_gamma(
                    0.5 * self._times_features(dof),
                    precisions,
                    0.5 * d * prior.dof,
                    0.5 * d * prior.covariance,
                )
            )
        )

    def predictive_dof_and_scale(self, dof, mean_precision):
        return self._times_features(dof), mean_precision / (1.0 + mean_precision)
