"""Priors of the variational model and the weight priors' conjugate algebra.

Weights, ``dirichlet_distribution``: q(pi) = Dirichlet(alpha) with
alpha_k = alpha_0 + N_k.

Weights, ``dirichlet_process``: truncated stick-breaking (Blei & Jordan
2006), pi_k = v_k prod_{j<k} (1 - v_j) with v_k ~ Beta(1, alpha_0) for
k < K and the last stick fixed to v_K = 1, so the weights sum to 1 and the
ELBO is that of a proper model. q(v_k) = Beta(1 + N_k, alpha_0 +
sum_{j>k} N_j); the K-th entries of ``weight_concentration_`` are filled by
the same formula but unused.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma

from ._elbo import kl_beta, kl_dirichlet


@dataclass(frozen=True)
class NormalPrecisionPrior:
    """The conjugate prior p(mu_k | Lambda_k) p(Lambda_k) of every component.

    ``covariance`` is covariance_prior_ in the unit's layout (the inverse
    Wishart scale W_0^-1 for full and tied).
    """

    mean: np.ndarray
    mean_precision: float
    dof: float
    covariance: np.ndarray


class DirichletDistributionWeights:
    """Symmetric Dirichlet prior on the mixture weights."""

    def __init__(self, concentration_prior):
        self.concentration_prior = concentration_prior

    def update(self, nk):
        """Exact q(pi) given responsibility masses."""
        return self.concentration_prior + nk

    @staticmethod
    def expected_log_weights(concentration):
        """``E[log pi_k]``."""
        return digamma(concentration) - digamma(np.sum(concentration))

    @staticmethod
    def mean_weights(concentration):
        """``E[pi_k]``."""
        return concentration / np.sum(concentration)

    def kl(self, concentration):
        """``KL(q(pi) || p(pi))``."""
        return kl_dirichlet(concentration, self.concentration_prior)


class StickBreakingWeights:
    """Truncated Dirichlet-process (stick-breaking) prior on the weights."""

    def __init__(self, concentration_prior):
        self.concentration_prior = concentration_prior

    def update(self, nk):
        """Exact q(v_k) = Beta(1 + N_k, alpha_0 + sum_{j>k} N_j)."""
        remaining = np.concatenate([np.cumsum(nk[::-1])[-2::-1], [0.0]])
        return (1.0 + nk, self.concentration_prior + remaining)

    @staticmethod
    def expected_log_weights(concentration):
        """``E[log pi_k] = E[log v_k] + sum_{j<k} E[log(1 - v_j)]``."""
        a, b = concentration
        digamma_total = digamma(a + b)
        log_stick = digamma(a) - digamma_total
        log_rest = digamma(b) - digamma_total
        # The last stick is 1: E[log v_K] = 0.
        log_stick[-1] = 0.0
        return log_stick + np.concatenate([[0.0], np.cumsum(log_rest[:-1])])

    @staticmethod
    def mean_weights(concentration):
        """``E[pi_k] = E[v_k] prod_{j<k} (1 - E[v_j])``; sums to 1."""
        a, b = concentration
        stick = a / (a + b)
        stick[-1] = 1.0
        return stick * np.concatenate([[1.0], np.cumprod(1.0 - stick[:-1])])

    def kl(self, concentration):
        """Sum of ``KL(q(v_k) || Beta(1, alpha_0))`` over the free sticks."""
        a, b = concentration
        return float(np.sum(kl_beta(a[:-1], b[:-1], 1.0, self.concentration_prior)))


WEIGHT_PRIORS = {
    "dirichlet_distribution": DirichletDistributionWeights,
    "dirichlet_process": StickBreakingWeights,
}
