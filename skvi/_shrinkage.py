"""Ledoit-Wolf shrinkage: a covariance estimate from few rows in many features.

A stream's first minibatch stands for rows it has not seen yet, and VI
takes its default prior scale (``covariance_prior_``) from it. With few rows
per feature the sample covariance is a poor estimate of the population's:
its eigenvalues spread far beyond the true ones (with 100 rows in 64
features the smallest are several times too small), and a Wishart prior
built on it pulls every component's covariance into those directions.
O. Ledoit, M. Wolf (2004), "A well-conditioned estimator for
large-dimensional covariance matrices", J. Multivariate Anal. 88, 365-411,
shrink the sample covariance S towards ``mu I`` (``mu = tr(S) / D``) by the
intensity

    min(beta^2, delta^2) / delta^2,
    delta^2 = ||S - mu I||_F^2,
    beta^2 = sum_i w_i^2 ||y_i y_i^T - S||_F^2 / (sum_i w_i)^2,

with y_i the rows about their weighted mean and S = sum_i w_i y_i y_i^T /
sum_i w_i (their Lemma 3.2 and Section 3.3; the 1/D of their norm cancels
in the ratio). With equal weights beta^2 is theirs; unequal weights count
as the precision weights of an estimate, whose effective number of rows is
(sum w)^2 / sum w^2 (Kish): a row of large weight is still one row, and the
intensity does not change when every weight is scaled alike. It tends to 0
as rows accumulate, so a large first minibatch keeps its covariance.
"""

import numpy as np


def shrinkage_intensity(X, sample_weight):
    """Ledoit-Wolf's weight on ``mu I`` for the weighted rows of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Complete rows.
    sample_weight : ndarray of shape (n_samples,)
        Non-negative weights; rows of weight 0 take no part.

    Returns
    -------
    float
        In [0, 1]; 0 where the sample covariance is already a multiple of
        the identity.
    """
    weights = np.asarray(sample_weight, dtype=float)
    rows = np.asarray(X, dtype=float)[weights > 0]
    weights = weights[weights > 0]
    total = weights.sum()
    centred = rows - (weights @ rows) / total
    covariance = (centred * weights[:, np.newaxis]).T @ centred / total
    d = covariance.shape[0]
    mu = np.trace(covariance) / d
    squared_norm = np.sum(covariance**2)
    delta2 = squared_norm - d * mu**2
    if not delta2 > 0.0:
        return 0.0
    # ||y y^T - S||_F^2 = ||y||^4 - 2 y^T S y + ||S||_F^2, never negative.
    lengths = np.einsum("ij,ij->i", centred, centred)
    quadratic = np.einsum("ij,ij->i", centred @ covariance, centred)
    spread = np.maximum(lengths**2 - 2.0 * quadratic + squared_norm, 0.0)
    beta2 = (weights**2) @ spread / total**2
    return float(min(beta2, delta2) / delta2)


def shrunk_towards_identity(matrix, intensity):
    """``(1 - intensity) matrix + intensity (tr(matrix) / D) I``."""
    d = matrix.shape[0]
    target = np.trace(matrix) / d
    shrunk = (1.0 - intensity) * matrix
    shrunk[np.diag_indices(d)] += intensity * target
    return shrunk
