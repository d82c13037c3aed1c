"""Storage shared by the diag and spherical units.

Precisions are reciprocals of variances, and their "Cholesky factor" is the
square root.
"""

import numpy as np

from ._unit import DegenerateComponentError, collapse_message


class VarianceStorageMixin:
    """Elementwise precisions, for covariance types without off-diagonals."""

    def precision_from_cholesky(self, precisions_cholesky):
        return precisions_cholesky**2

    def cholesky_from_covariance(self, covariances, reg_covar):
        valid = np.isfinite(covariances) & (covariances > 0)
        valid = valid.reshape(self.n_components, -1).all(axis=1)
        if not np.all(valid):
            first = int(np.flatnonzero(~valid)[0])
            raise DegenerateComponentError(collapse_message(first, reg_covar))
        return 1.0 / np.sqrt(covariances)

    def cholesky_from_precision(self, precisions):
        return np.sqrt(precisions)

    def covariance_from_cholesky(self, precisions_cholesky):
        return 1.0 / precisions_cholesky**2

    def check_precisions(self, precisions, name):
        if precisions.shape != self.precision_shape:
            raise ValueError(
                f"{name} must have shape {self.precision_shape} for "
                f"covariance_type='{self.name}', got {precisions.shape}."
            )
        if not np.all(np.isfinite(precisions) & (precisions > 0)):
            raise ValueError(f"{name} must be strictly positive and finite.")
        return precisions

    def missing_products(self, precisions, centered, members, missing):
        # A diagonal precision maps e, which is 0 at the missing
        # coordinates, to 0 there.
        return np.zeros((self.n_components,) + missing.shape)

    def precision_blocks(self, precisions, coordinates):
        diagonals = self.precision_diagonals(precisions)[:, coordinates]
        return diagonals[..., np.newaxis] * np.eye(coordinates.shape[1])

    def zero_second_moment(self):
        return np.zeros(self.precision_shape)

    def min_dof_prior(self):
        # A Gamma prior is proper for any positive shape.
        return 0.0

    def _check_positive_prior(self, covariance_prior, shape):
        prior = np.asarray(covariance_prior, dtype=float)
        if prior.shape != shape:
            raise ValueError(
                f"covariance_prior must have shape {shape} for "
                f"covariance_type='{self.name}', got {prior.shape}."
            )
        if not np.all(np.isfinite(prior) & (prior > 0)):
            raise ValueError(
                f"covariance_prior must be strictly positive and finite for "
                f"covariance_type='{self.name}'."
            )
        return prior
