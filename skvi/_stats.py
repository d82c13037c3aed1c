"""Sufficient statistics, the currency between the E-step and the M-step.

The E-step maps a chunk of rows to responsibility-weighted statistics
(N_k, first and second moments about reference points) plus the chunk's
entropy of q(Z) and log normaliser. Statistics add up, so one pass over an
array in chunks, a minibatch, or the blocks of a distributed array all reduce
to the same object. Chunks are sized from scikit-learn's ``working_memory``
setting, so no (n_samples, n_components) array is ever held during a fit.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from sklearn import get_config

from ._elbo import log_rho_constants


@dataclass(frozen=True)
class Moments:
    """Statistics normalised to per-component means and centered scatters.

    Attributes
    ----------
    total_weight : float
        Total sample weight of the rows summarised.
    nk : ndarray of shape (K,)
        Responsibility mass ``N_k = sum_n w_n r_nk``.
    reference : ndarray of shape (K, D)
        The points the moments were taken about.
    shift : ndarray of shape (K, D)
        ``xbar_k - reference_k`` (0 where ``N_k = 0``), kept apart from the
        reference so differences of means near the data lose no digits.
    scatter : ndarray
        ``sum_n w_n r_nk (x_n - xbar_k)(x_n - xbar_k)^T`` in the covariance
        unit's layout (pooled for tied, diagonal for diag, trace for
        spherical).
    """

    total_weight: float
    nk: np.ndarray
    reference: np.ndarray
    shift: np.ndarray
    scatter: np.ndarray

    @property
    def means(self):
        """Weighted means ``xbar_k`` (the reference point where N_k = 0)."""
        return self.reference + self.shift

    def offsets_from(self, points):
        """``xbar_k - points_k``, computed without rounding xbar_k first."""
        return (self.reference - points) + self.shift


@dataclass
class SufficientStatistics:
    """Additive statistics of q(Z) over some rows, about fixed references.

    Attributes
    ----------
    reference : ndarray of shape (K, D)
        The points moments are taken about; fixed for one pass.
    total_weight : float
        ``sum_n w_n``.
    nk : ndarray of shape (K,)
        ``sum_n w_n r_nk``.
    sum_x : ndarray of shape (K, D)
        ``sum_n w_n r_nk (x_n - reference_k)``.
    sum_xx : ndarray
        Second moments about the references, in the unit's layout.
    entropy : float
        ``-sum_n w_n sum_k r_nk log r_nk``.
    log_normalizer : float
        ``sum_n w_n log sum_k rho_nk`` (E-step only): for EM the smoothed
        log-likelihood of the rows.
    """

    reference: np.ndarray
    total_weight: float
    nk: np.ndarray
    sum_x: np.ndarray
    sum_xx: np.ndarray
    entropy: float = 0.0
    log_normalizer: float = 0.0
    _unit: object = field(default=None, repr=False, compare=False)

    @classmethod
    def zeros(cls, unit, reference):
        """Empty statistics for ``unit`` about ``reference``."""
        return cls(
            reference=reference,
            total_weight=0.0,
            nk=np.zeros(unit.n_components),
            sum_x=np.zeros((unit.n_components, unit.n_features)),
            sum_xx=unit.zero_second_moment(),
            _unit=unit,
        )

    def __iadd__(self, other):
        if not np.array_equal(self.reference, other.reference):
            raise ValueError("Statistics about different references do not add.")
        self.total_weight += other.total_weight
        self.nk += other.nk
        self.sum_x += other.sum_x
        self.sum_xx += other.sum_xx
        self.entropy += other.entropy
        self.log_normalizer += other.log_normalizer
        self.__dict__.pop("moments", None)
        return self

    @cached_property
    def moments(self):
        """These statistics as :class:`Moments` (exact recentering)."""
        nk = self.nk
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        shift = np.where(nk[:, np.newaxis] > 0, self.sum_x / safe, 0.0)
        scatter = self._unit.centered_scatter(nk, self.sum_x, self.sum_xx)
        return Moments(self.total_weight, nk.copy(), self.reference, shift, scatter)


# The fused E-step is fastest when a chunk's work arrays stay in cache: on the
# benchmark machine 4 MiB chunks ran 1.4x-4x faster than one large block.
CACHE_BLOCK_BYTES = 4 * 2**20


def row_chunks(n_samples, row_bytes):
    """Slices of rows whose work arrays fit in ``working_memory`` (MiB).

    ``working_memory`` bounds the memory; chunks are further capped at a
    cache-sized block for speed. At least one row per chunk.
    """
    budget = min(get_config()["working_memory"] * 2**20, CACHE_BLOCK_BYTES)
    chunk = int(min(max(budget // max(row_bytes, 1), 1), max(n_samples, 1)))
    # Plain slices: scikit-learn's gen_batches validates its arguments on
    # every call, which costs more than a small E-step.
    return (
        slice(start, min(start + chunk, n_samples))
        for start in range(0, n_samples, chunk)
    )


def reference_points(unit, expectations):
    """The unit's reference points for the current parameters."""
    log_weights = expectations.log_weights
    weights = np.exp(log_weights - np.max(log_weights))
    return unit.reference(expectations.means, weights, expectations.precisions)


def log_rho(X, unit, expectations, constants, reference):
    """``log rho_nk = const_k - quadratic_nk / 2`` for a chunk.

    Returns ``(log_rho, cache)``; see :meth:`CovarianceUnit.quadratic`.
    """
    quad, cache = unit.quadratic(
        X, expectations.means, expectations.precisions_cholesky, reference
    )
    quad *= -0.5
    quad += constants.astype(X.dtype)
    return quad, cache


def normalize_log_rows(log_rho):
    """Row-wise ``log sum exp`` and the normalised responsibilities.

    Returns ``(log_norm, resp, log_resp)``. ``log_rho`` is first floored at
    half the dtype's most negative value, which ``exp`` maps to exactly 0:
    an EM component of weight zero (``-inf``) then gets zero responsibility
    and ``0 * log r`` stays 0, and a row so far from every component that
    all its quadratic forms overflow gets equal responsibilities and a
    hugely negative, finite log density instead of NaN.
    """
    np.maximum(log_rho, 0.5 * np.finfo(log_rho.dtype).min, out=log_rho)
    top = np.max(log_rho, axis=1, keepdims=True)
    log_resp = log_rho - top
    resp = np.exp(log_resp)
    total = np.sum(resp, axis=1, keepdims=True)
    resp /= total
    log_total = np.log(total)
    log_resp -= log_total
    return (top + log_total)[:, 0], resp, log_resp


def e_step(X, sample_weight, unit, expectations, reg_covar):
    """One pass over X: statistics of the optimal q(Z) given expectations.

    Parameters
    ----------
    X : ndarray of shape (n, D)
        Float32 or float64 rows; the chunk arithmetic keeps their dtype.
    sample_weight : ndarray of shape (n,)
    unit : CovarianceUnit
    expectations : ComponentExpectations
    reg_covar : float
        Enters the objective as ``-(reg_covar / 2) E[tr Lambda_k]``.

    Returns
    -------
    SufficientStatistics
    """
    reference = reference_points(unit, expectations)
    constants = log_rho_constants(expectations, unit, reg_covar)
    total = SufficientStatistics.zeros(unit, reference)
    for rows in row_chunks(X.shape[0], unit.row_bytes(X.dtype.itemsize)):
        chunk, weights = X[rows], sample_weight[rows].astype(X.dtype)
        log_rho_chunk, cache = log_rho(chunk, unit, expectations, constants, reference)
        log_norm, resp, log_resp = normalize_log_rows(log_rho_chunk)
        weighted = resp
        weighted *= weights[:, np.newaxis]
        total += _chunk_statistics(
            chunk, sample_weight[rows], weighted, unit, reference, cache
        )
        total.entropy -= float(np.sum(weighted * log_resp, dtype=float))
        total.log_normalizer += float(np.dot(sample_weight[rows], log_norm))
    return total


def assigned_statistics(X, sample_weight, unit, responsibilities, reference):
    """Statistics of a given q(Z), e.g. an initialisation.

    ``responsibilities(rows)`` returns the (len(rows), K) responsibilities of
    a slice of rows, so they are never all held at once.
    """
    total = SufficientStatistics.zeros(unit, reference)
    for rows in row_chunks(X.shape[0], unit.row_bytes(X.dtype.itemsize)):
        chunk = X[rows]
        resp = np.asarray(responsibilities(rows), dtype=X.dtype)
        weighted = resp * sample_weight[rows].astype(X.dtype)[:, np.newaxis]
        total += _chunk_statistics(
            chunk, sample_weight[rows], weighted, unit, reference, None
        )
        positive = resp > 0
        total.entropy -= float(
            np.sum(weighted[positive] * np.log(resp[positive]), dtype=float)
        )
    return total


def _chunk_statistics(chunk, row_weights, weighted_resp, unit, reference, cache):
    sum_x, sum_xx = unit.chunk_moments(chunk, weighted_resp, reference, cache)
    return SufficientStatistics(
        reference=reference,
        total_weight=float(np.sum(row_weights)),
        nk=np.sum(weighted_resp, axis=0, dtype=float),
        sum_x=sum_x,
        sum_xx=sum_xx,
        _unit=unit,
    )


def statistics_of_assignment(X, sample_weight, unit, responsibilities):
    """Statistics of a fixed q(Z), accurate wherever the data sit.

    A first pass finds each component's mean; the second accumulates moments
    about the unit's reference points for those means, so second moments do
    not cancel when the data sit far from the origin.
    """
    # The first pass only needs the means; its second moments are discarded.
    origin = np.zeros((unit.n_components, unit.n_features))
    rough = assigned_statistics(X, sample_weight, unit, responsibilities, origin)
    # Each component's own mean: the exact per-component path (there are no
    # precisions yet to judge the shared-center expansion by).
    means = rough.moments.means
    return assigned_statistics(X, sample_weight, unit, responsibilities, means)


def empty_components(moments):
    """Components whose responsibility mass is below rounding of the total."""
    return moments.nk <= np.finfo(float).eps * moments.total_weight
