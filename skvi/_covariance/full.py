"""Full covariance: one D x D precision per component; Normal-Wishart in VI."""

from functools import lru_cache

import numpy as np

from . import _gufuncs
from ._unit import (
    CovarianceUnit,
    DegenerateComponentError,
    collapse_message,
    first_singular_to_rounding,
    precision_conditioning_losses,
    upper_cholesky,
    upper_cholesky_of_inverses,
    whitened_maximum,
)
from .wishart import (
    check_prior_matrix,
    check_spd_stack,
    prior_distances,
    prior_traces,
    wishart_expected_log_det,
    wishart_kl,
    wishart_precision_factors,
    wishart_predictive_dof_and_scale,
)


@lru_cache(maxsize=16)
def _upper_triangle(n_features):
    """The pairs ``i <= j`` of the features e_i e_j, in order.

    Also how often each product appears in ``e^T Lambda e``: an
    off-diagonal one twice.
    """
    rows, cols = np.triu_indices(n_features)
    return rows, cols, np.where(rows == cols, 1.0, 2.0)


class FullCovariance(CovarianceUnit):
    """Each component has its own full covariance matrix."""

    name = "full"
    # Whether each precision is diagonal (missing entries then decouple).
    diagonal_precision = False

    @property
    def precision_shape(self):
        return (self.n_components, self.n_features, self.n_features)

    def precision_from_cholesky(self, precisions_cholesky):
        return np.matmul(precisions_cholesky, np.swapaxes(precisions_cholesky, 1, 2))

    def cholesky_from_covariance(self, covariances, reg_covar):
        factors, failed = upper_cholesky_of_inverses(covariances)
        if factors is None:
            raise DegenerateComponentError(collapse_message(failed, reg_covar))
        self.check_not_singular(covariances, factors, reg_covar)
        return factors

    def check_not_singular(self, covariances, factors, reg_covar):
        """Raise where ``reg_covar=0`` leaves a covariance singular to rounding.

        ``factors`` are the upper factors of the precisions, however formed
        (a Cholesky factorisation accepts such a covariance only by luck of
        rounding, and the whitened M-step forms a factor for it): see
        :func:`first_singular_to_rounding`.
        """
        if reg_covar == 0:
            failed = first_singular_to_rounding(covariances, factors)
            if failed is not None:
                raise DegenerateComponentError(collapse_message(failed, reg_covar))

    def cholesky_from_precision(self, precisions):
        return np.stack([upper_cholesky(p) for p in precisions])

    def covariance_from_cholesky(self, precisions_cholesky):
        # Sigma = (P P^T)^-1 = P^-T P^-1.
        inverse = _gufuncs.inv(precisions_cholesky)
        return np.matmul(np.swapaxes(inverse, 1, 2), inverse)

    def log_det_cholesky(self, precisions_cholesky):
        diagonals = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return 2.0 * np.sum(np.log(diagonals), axis=1)

    def trace(self, precisions):
        return np.trace(precisions, axis1=1, axis2=2)

    def check_precisions(self, precisions, name):
        if precisions.shape != self.precision_shape:
            raise ValueError(
                f"{name} must have shape {self.precision_shape} for "
                f"covariance_type='{self.name}', got {precisions.shape}."
            )
        check_spd_stack(precisions, name)
        return 0.5 * (precisions + np.swapaxes(precisions, 1, 2))

    # ---------------------------------------------------------------- E-step
    @property
    def n_second_order(self):
        # The products e_i e_j, i <= j.
        return self.n_features * (self.n_features + 1) // 2

    def second_order_features(self, centered, out):
        start = 0
        for i in range(self.n_features):
            stop = start + self.n_features - i
            np.multiply(centered[i], centered[i:], out=out[start:stop])
            start = stop
        return out

    def second_order_coefficients(self, precisions):
        rows, cols, multiplicity = _upper_triangle(self.n_features)
        return precisions[:, rows, cols] * multiplicity

    def precision_times(self, precisions, vectors):
        return np.einsum("kij,...kj->...ki", precisions, vectors)

    def precision_diagonals(self, precisions):
        return np.diagonal(precisions, axis1=1, axis2=2)

    def precision_blocks(self, precisions, coordinates):
        return precisions[:, coordinates[:, :, np.newaxis], coordinates[:, np.newaxis]]

    def missing_products(self, precisions, centered, members, missing):
        # All components at once, (K D, D) @ (D, n): then the entries wanted.
        rows = centered[:, members]
        products = (precisions.reshape(-1, self.n_features) @ rows).reshape(
            self.n_components, self.n_features, -1
        )
        return np.swapaxes(products[:, missing.T, np.arange(len(members))], 1, 2)

    def second_moment_from_dense(self, dense):
        return dense

    def second_moment_from_sums(self, sums):
        rows, cols, _ = _upper_triangle(self.n_features)
        moments = np.empty(self.precision_shape)
        moments[:, rows, cols] = sums
        moments[:, cols, rows] = sums
        return moments

    def shifted_second_moment(self, first, counts, shifts):
        # Sums over the groups g as (K, D, G) @ (K, G, D) products: the
        # three-operand einsum loops in C over every (g, k, i, j), about a
        # millisecond a pass at K = G = 10, D = 64.
        by_component = np.swapaxes(shifts, 0, 1)
        cross = np.swapaxes(first, 0, 1).transpose(0, 2, 1) @ by_component
        weighted = by_component * np.swapaxes(counts, 0, 1)[..., np.newaxis]
        return (
            cross
            + np.swapaxes(cross, 1, 2)
            + weighted.transpose(0, 2, 1) @ by_component
        )

    def zero_second_moment(self):
        return np.zeros(self.precision_shape)

    def centered_scatter(self, nk, sum_x, sum_xx):
        # sum_x times the shift (not sum_x squared over N): no overflow
        # when the sums are huge (huge weights).
        safe = np.where(nk > 0, nk, 1.0)
        shift = sum_x / safe[:, np.newaxis]
        scatter = sum_xx - sum_x[:, :, np.newaxis] * shift[:, np.newaxis, :]
        scatter[nk <= 0] = 0.0
        return 0.5 * (scatter + np.swapaxes(scatter, 1, 2))

    def scatter_diagonals(self, scatter):
        return np.diagonal(scatter, axis1=1, axis2=2)

    def mahalanobis(self, diff, precisions):
        return np.einsum("ki,kij,kj->k", diff, precisions, diff)

    def conditioning_loss(self, precisions, precisions_cholesky):
        return max(1.0, *precision_conditioning_losses(precisions, precisions_cholesky))

    def whitened_norms(self, diff, precisions_cholesky):
        whitened = np.einsum("ki,kij->kj", diff, precisions_cholesky)
        return np.sum(whitened**2, axis=1)

    # -------------------------------------------------------------------- EM
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        safe = np.where(empty, 1.0, nk)
        covariances = scatter / safe[:, np.newaxis, np.newaxis]
        covariances += reg_covar * np.eye(self.n_features)
        if previous is not None:
            covariances[empty] = previous[empty]
        return covariances

    def maximize_whitened(self, nk, whitened, reg_covar, empty, previous):
        present = ~np.asarray(empty, dtype=bool)
        if previous is None and not np.all(present):
            return None
        factors = np.array(previous if previous is not None else whitened.factors)
        found = whitened_maximum(
            whitened.factors[present],
            whitened.scatters()[present],
            nk[present],
            reg_covar,
        )
        if found is None:
            return None
        factors[present] = found
        return factors

    def n_parameters(self):
        return self.n_components * self.n_features * (self.n_features + 1) // 2

    def sample_component(self, rng, covariances, component, n_samples):
        return rng.multivariate_normal(
            np.zeros(self.n_features), covariances[component], n_samples
        )

    # -------------------------------------------------------------------- VI
    def check_prior(self, covariance_prior):
        return check_prior_matrix(covariance_prior, self.n_features, self.name)

    def prior_from_scatter(self, scatter, denominator, reg_covar):
        return scatter[0] / denominator + reg_covar * np.eye(self.n_features)

    def min_dof_prior(self):
        return self.n_features - 1.0

    def conjugate_update(self, prior, nk, scatter, mean_offsets, shrinkage, reg):
        dof = prior.dof + nk
        mean_scatter = shrinkage[:, np.newaxis, np.newaxis] * (
            mean_offsets[:, :, np.newaxis] * mean_offsets[:, np.newaxis, :]
        )
        inverse_scale = (
            prior.covariance
            + scatter
            + (reg * nk)[:, np.newaxis, np.newaxis] * np.eye(self.n_features)
            + mean_scatter
        )
        return inverse_scale / dof[:, np.newaxis, np.newaxis], dof

    def conjugate_cholesky(
        self, prior, nk, scatter, mean_offsets, shrinkage, reg, update, whitened=None
    ):
        frames = None
        if whitened is not None:
            # A component spanning clusters far apart has a scatter about its
            # mean whose entries, rounded one by one, lose the digits of its
            # condition number along its weak axes; in the frame the E-step
            # whitened its rows in, the scatter is well conditioned.
            frames = (whitened.factors, whitened.scatters())
        factors = wishart_precision_factors(
            prior.covariance,
            scatter,
            reg * nk,
            mean_offsets[:, np.newaxis],
            shrinkage[:, np.newaxis],
            update[1],
            frames,
        )
        if factors is None:
            return self.cholesky_from_covariance(update[0], reg)
        return factors

    def prior_distances(self, means, prior_mean, precisions_cholesky):
        return prior_distances(means, prior_mean, precisions_cholesky)

    def expected_log_det(self, precisions_cholesky, dof):
        return wishart_expected_log_det(
            self.log_det_cholesky(precisions_cholesky), dof, self.n_features
        )

    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        traces = prior_traces(prior, precisions_cholesky)
        return wishart_kl(
            self.log_det_cholesky(precisions_cholesky), traces, dof, prior
        )

    def predictive_dof_and_scale(self, dof, mean_precision):
        return wishart_predictive_dof_and_scale(dof, mean_precision, self.n_features)
