"""Wishart algebra shared by the full and tied units.

q(Lambda) = Wishart(W, dof) is stored through E[Lambda] = dof * W, so the
scale matrix has ``log det W = log det E[Lambda] - D log dof``; the prior
Wishart(W0, dof0) through ``covariance_prior_ = W0^-1``.
"""

import numpy as np

from .._elbo import kl_wishart, wishart_log_det_gap
from ._unit import is_symmetric, upper_cholesky


def wishart_expected_log_det(log_det_precision, dof, n_features):
    """``E[log det Lambda]`` from ``log det E[Lambda]`` and the dof."""
    return log_det_precision + wishart_log_det_gap(dof, n_features)


def prior_traces(prior, precisions_cholesky):
    """``tr(W0^-1 E[Lambda_k])`` for factors of shape (K, D, D), shape (K,).

    As ``|L0^T P_k|^2`` with ``W0^-1 = L0 L0^T``: a sum of squares. The
    elementwise sum of ``W0^-1 * E[Lambda_k]`` cancels when the prior is
    wide along an axis where the precision is small (clusters far apart),
    losing digits the bound's monotonicity needs.
    """
    lower = np.linalg.cholesky(prior.covariance)
    products = np.einsum("ji,kjl->kil", lower, precisions_cholesky)
    return np.sum(products**2, axis=(1, 2))


def wishart_kl(log_det_precision, prior_traces, dof, prior):
    """Summed Wishart KL; ``prior_traces`` are ``tr(W0^-1 E[Lambda])``."""
    n_features = prior.covariance.shape[0]
    return float(
        np.sum(
            kl_wishart(
                dof,
                log_det_precision,
                prior_traces,
                prior.dof,
                -np.linalg.slogdet(prior.covariance)[1],
                n_features,
            )
        )
    )


def wishart_predictive_dof_and_scale(dof, mean_precision, n_features):
    """Bishop eq. 10.82: L = (nu + 1 - D) beta / (1 + beta) W with W = E/nu."""
    t_dof = dof + 1.0 - n_features
    return t_dof, t_dof / dof * mean_precision / (1.0 + mean_precision)


def check_spd(matrix, name):
    """Raise unless ``matrix`` is symmetric positive definite."""
    if (
        not np.all(np.isfinite(matrix))
        or not is_symmetric(matrix)
        or upper_cholesky(matrix) is None
    ):
        raise ValueError(f"{name} must be a finite symmetric positive definite matrix.")


def check_prior_matrix(covariance_prior, n_features, covariance_type):
    """Validate a full or tied covariance_prior."""
    matrix = np.asarray(covariance_prior, dtype=float)
    expected = (n_features, n_features)
    if matrix.shape != expected:
        raise ValueError(
            f"covariance_prior must have shape {expected} for "
            f"covariance_type='{covariance_type}', got {matrix.shape}."
        )
    check_spd(
        matrix,
        "covariance_prior (or leave it None to use the data's covariance)",
    )
    return 0.5 * (matrix + matrix.T)
