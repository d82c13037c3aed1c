"""Tied covariance: one D x D precision shared by all components.

In VI the shared precision has one Wishart factor q(Lambda) = Wishart(W, nu)
with nu = nu_0 + N, and its KL term is counted once (the exact conjugate
model; scikit-learn's BayesianGaussianMixture uses nu_0 + N / K and counts it
K times).
"""

import numpy as np

from ._unit import (
    CovarianceUnit,
    DegenerateComponentError,
    collapse_message,
    first_singular_to_rounding,
    precision_conditioning_loss,
    upper_cholesky,
    upper_cholesky_of_inverse,
    whitened_maximum,
)
from .wishart import (
    check_prior_matrix,
    check_spd,
    prior_distances,
    prior_traces,
    wishart_expected_log_det,
    wishart_kl,
    wishart_precision_factors,
    wishart_predictive_dof_and_scale,
)


class TiedCovariance(CovarianceUnit):
    """All components share one full covariance matrix."""

    name = "tied"
    # Whether each precision is diagonal (missing entries then decouple).
    diagonal_precision = False

    @property
    def precision_shape(self):
        return (self.n_features, self.n_features)

    def precision_from_cholesky(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def cholesky_from_covariance(self, covariances, reg_covar):
        factor = upper_cholesky_of_inverse(covariances)
        if factor is None:
            raise DegenerateComponentError(collapse_message(None, reg_covar))
        self.check_not_singular(covariances, factor, reg_covar)
        return factor

    def check_not_singular(self, covariances, factors, reg_covar):
        """Raise where ``reg_covar=0`` leaves the covariance singular to rounding.

        As :meth:`FullCovariance.check_not_singular`, for the one matrix.
        """
        if reg_covar != 0:
            return
        if first_singular_to_rounding(covariances, factors) is not None:
            raise DegenerateComponentError(collapse_message(None, reg_covar))

    def cholesky_from_precision(self, precisions):
        return upper_cholesky(precisions)

    def covariance_from_cholesky(self, precisions_cholesky):
        inverse = np.linalg.inv(precisions_cholesky)
        return inverse.T @ inverse

    def log_det_cholesky(self, precisions_cholesky):
        value = 2.0 * np.sum(np.log(np.diag(precisions_cholesky)))
        return np.full(self.n_components, value)

    def trace(self, precisions):
        return np.full(self.n_components, np.trace(precisions))

    def check_precisions(self, precisions, name):
        if precisions.shape != self.precision_shape:
            raise ValueError(
                f"{name} must have shape {self.precision_shape} for "
                f"covariance_type='tied', got {precisions.shape}."
            )
        check_spd(precisions, name)
        return 0.5 * (precisions + precisions.T)

    # ---------------------------------------------------------------- E-step
    # The shared term e^T Lambda e is the same for every component: it
    # cancels from the responsibilities, and a fit pass gets its total from
    # the pooled second moment, tr(Lambda sum_n w_n e_n e_n^T), instead of
    # from per-row quadratic forms.
    @property
    def n_second_order(self):
        return 0

    def second_order_features(self, centered, out):
        return out

    def second_order_coefficients(self, precisions):
        return np.zeros((self.n_components, 0))

    def precision_times(self, precisions, vectors):
        return vectors @ precisions

    def precision_diagonals(self, precisions):
        shape = (self.n_components, self.n_features)
        return np.broadcast_to(np.diag(precisions), shape)

    def chunk_second_moment(self, weighted_resp, features, centered, row_mass):
        # Pooled over components: sum_k w_n r_nk e_n e_n^T.
        return (centered * row_mass) @ centered.T

    def second_moment_from_sums(self, sums):
        return sums

    def precision_blocks(self, precisions, coordinates):
        blocks = precisions[coordinates[:, :, np.newaxis], coordinates[:, np.newaxis]]
        return np.broadcast_to(blocks, (self.n_components,) + blocks.shape)

    def missing_products(self, precisions, centered, members, missing):
        products = precisions @ centered[:, members]
        wanted = products[missing.T, np.arange(len(members))].T
        return np.broadcast_to(wanted, (self.n_components,) + wanted.shape)

    def second_moment_from_dense(self, dense):
        # Pooled over components.
        return dense.sum(axis=0)

    def shifted_second_moment(self, first, counts, shifts):
        cross = np.einsum("gki,gkj->ij", first, shifts)
        return cross + cross.T + np.einsum("gk,gki,gkj->ij", counts, shifts, shifts)

    def row_quadratic(self, centered, precisions_cholesky):
        whitened = precisions_cholesky.T.astype(centered.dtype) @ centered
        return np.einsum("ij,ij->j", whitened, whitened)

    def row_quadratic_total(self, second_moment_sums, precisions):
        return float(np.sum(precisions * second_moment_sums))

    def zero_second_moment(self):
        return np.zeros(self.precision_shape)

    def centered_scatter(self, nk, sum_x, sum_xx):
        # Pooled: sum_k sum_n w r (x - xbar_k)(x - xbar_k)^T.
        # An empty component has sum_x = 0 and drops out.
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        scatter = sum_xx - sum_x.T @ (sum_x / safe)
        return 0.5 * (scatter + scatter.T)

    def moment_rounding_growth(self, nk, shift, scatter, reg_covar):
        # Pooled: every component's cancelled term meets the one scatter.
        variances = np.diag(scatter) + nk.sum() * reg_covar
        cancelled = nk @ shift**2
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(cancelled > 0, cancelled / variances, 0.0)
        return 1.0 + float(np.max(ratios, initial=0.0))

    def recentering_scales(self, nk, scatter, reg_covar):
        # Pooled: each component's mass over the one regularised scatter.
        variances = np.diag(scatter) + nk.sum() * reg_covar
        with np.errstate(divide="ignore", invalid="ignore"):
            scales = nk[:, np.newaxis] / variances
        return np.where(nk[:, np.newaxis] > 0, scales, 0.0)

    def moment_spreads(self, nk, shift, scatter):
        # Pooled: one scatter of all rows about their references.
        second = np.diag(scatter) + nk @ shift**2
        spreads = np.sqrt(np.maximum(second, 0.0) / max(nk.sum(), np.finfo(float).tiny))
        return np.broadcast_to(spreads, shift.shape)

    def merged_scatter(self, scatter, j, k, offset, weight):
        # Pooled: the rows already count; only the between term is new.
        return scatter + weight * np.outer(offset, offset)

    def pooled_scatter(self, nk, scatter, chosen):
        # Already pooled.
        return scatter

    def mahalanobis(self, diff, precisions):
        return np.einsum("ki,ij,kj->k", diff, precisions, diff)

    def whitened_norms(self, diff, precisions_cholesky):
        return np.sum((diff @ precisions_cholesky) ** 2, axis=1)

    def conditioning_loss(self, precisions, precisions_cholesky):
        # The shared term tr(Lambda sum w e e^T) and the linear terms
        # e^T Lambda d_k cancel as the products of full's expansion do.
        return max(1.0, precision_conditioning_loss(precisions, precisions_cholesky))

    def component_factors(self, precisions_cholesky):
        shape = (self.n_components,) + precisions_cholesky.shape
        return np.broadcast_to(precisions_cholesky, shape)

    # -------------------------------------------------------------------- EM
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        return scatter / nk.sum() + reg_covar * np.eye(self.n_features)

    def maximize_whitened(self, nk, whitened, reg_covar, empty, previous):
        # One shared frame: the components' whitened scatters pool exactly.
        found = whitened_maximum(
            whitened.factors[:1],
            whitened.scatters().sum(axis=0)[np.newaxis],
            np.array([nk.sum()]),
            reg_covar,
        )
        return None if found is None else found[0]

    def n_parameters(self):
        return self.n_features * (self.n_features + 1) // 2

    def sample_component(self, rng, covariances, component, n_samples):
        return rng.multivariate_normal(
            np.zeros(self.n_features), covariances, n_samples
        )

    # -------------------------------------------------------------------- VI
    def check_prior(self, covariance_prior):
        return check_prior_matrix(covariance_prior, self.n_features, self.name)

    def prior_from_scatter(self, scatter, denominator, reg_covar):
        return scatter / denominator + reg_covar * np.eye(self.n_features)

    def min_dof_prior(self):
        return self.n_features - 1.0

    def conjugate_update(self, prior, nk, scatter, mean_offsets, shrinkage, reg):
        total = nk.sum()
        dof = prior.dof + total
        inverse_scale = (
            prior.covariance
            + scatter
            + reg * total * np.eye(self.n_features)
            + (mean_offsets * shrinkage[:, np.newaxis]).T @ mean_offsets
        )
        return inverse_scale / dof, dof

    def conjugate_cholesky(
        self, prior, nk, scatter, mean_offsets, shrinkage, reg, update, whitened=None
    ):
        frames = None
        if whitened is not None:
            # The pooled scatter about references far apart cancels; in the
            # one shared frame the components' whitened scatters pool exactly.
            frames = (whitened.factors[:1], whitened.scatters().sum(axis=0)[None])
        factors = wishart_precision_factors(
            prior.covariance,
            scatter[np.newaxis],
            np.array([reg * nk.sum()]),
            mean_offsets[np.newaxis],
            shrinkage[np.newaxis],
            np.array([update[1]]),
            frames,
        )
        if factors is None:
            return self.cholesky_from_covariance(update[0], reg)
        return factors[0]

    def prior_distances(self, means, prior_mean, precisions_cholesky):
        return prior_distances(
            means, prior_mean, self.component_factors(precisions_cholesky)
        )

    def expected_log_det(self, precisions_cholesky, dof):
        return wishart_expected_log_det(
            self.log_det_cholesky(precisions_cholesky), dof, self.n_features
        )

    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        # One shared factor: its KL is counted once.
        log_det = self.log_det_cholesky(precisions_cholesky)[0]
        traces = prior_traces(prior, precisions_cholesky[np.newaxis])
        return wishart_kl(log_det, traces[0], dof, prior)

    def predictive_dof_and_scale(self, dof, mean_precision):
        return wishart_predictive_dof_and_scale(dof, mean_precision, self.n_features)
