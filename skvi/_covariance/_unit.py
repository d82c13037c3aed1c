"""The interface every covariance structure implements, and its shared helpers.

A *unit* is stateless: it knows, for one ``covariance_type``, how precisions
are stored, how the quadratic form of the log-density is computed for a chunk
of rows, which second moments the E-step accumulates, the EM M-step, the
conjugate (variational) update, the KL term of its precision factor and its
posterior predictive. Estimators call units and never branch on the type.

Shapes, with K components and D features (scikit-learn's conventions):

============  ===============  ==========================================
type          precisions       second moment / scatter
============  ===============  ==========================================
full          (K, D, D)        (K, D, D) per component
tied          (D, D)           (D, D) pooled over components
diag          (K, D)           (K, D) per component and feature
spherical     (K,)             (K,) trace per component
============  ===============  ==========================================

``precisions_cholesky`` holds an upper-triangular ``P`` with ``P @ P.T``
equal to the precision (full, tied), or the square root of the precisions
(diag, spherical), exactly as scikit-learn stores it.
"""

from abc import ABC, abstractmethod

import numpy as np
from scipy.linalg import lapack
from scipy.special import gammaln


class DegenerateComponentError(ValueError):
    """A component's covariance is not positive definite.

    Raised instead of a ``LinAlgError`` when a component collapses onto too
    few distinct points for its covariance to be estimated.
    """


def collapse_message(component, reg_covar):
    """Explain a collapsed component and how to avoid it."""
    where = "The tied covariance" if component is None else f"Component {component}"
    return (
        f"{where} collapsed: its estimated covariance is not positive definite "
        "(it holds too few distinct points, or a feature is constant within it). "
        f"Increase reg_covar (now {reg_covar!r}; 1e-6 is the default), use fewer "
        "components, or remove duplicated points."
    )


def _lower_cholesky(matrix):
    """Lower Cholesky factor, or None if ``matrix`` is not (numerically) SPD."""
    if not np.all(np.isfinite(matrix)):
        return None
    try:
        lower = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.diag(lower) > 0):
        return None
    return lower


def upper_cholesky_of_inverse(matrix):
    """Upper-triangular ``P`` with ``P @ P.T == inv(matrix)``.

    Returns None when ``matrix`` is not positive definite.
    """
    lower = _lower_cholesky(matrix)
    if lower is None:
        return None
    # inv(L L^T) = L^-T L^-1, so P = L^-T is upper triangular. LAPACK's
    # triangular inverse (scipy's solve_triangular costs milliseconds here).
    inverse, info = lapack.dtrtri(lower, lower=1)
    if info != 0:
        return None
    return inverse.T


def upper_cholesky(matrix):
    """Upper-triangular ``P`` with ``P @ P.T == matrix``, or None if not SPD."""
    # Reversing rows and columns turns the lower Cholesky factor of the
    # reversed matrix into the upper factor we want.
    lower = _lower_cholesky(matrix[::-1, ::-1])
    return None if lower is None else lower[::-1, ::-1]


def is_symmetric(matrix):
    """Whether ``matrix`` is symmetric up to rounding."""
    scale = max(float(np.max(np.abs(matrix))), np.finfo(float).tiny)
    return np.allclose(matrix, matrix.T, rtol=0, atol=1e-10 * scale)


def log_multivariate_t(quadratic, log_det_precision, dof, n_features):
    """Log-density of a multivariate Student-t from its quadratic form.

    ``quadratic`` is ``(x - m)^T L (x - m)`` for the t's precision matrix
    ``L``, shape (n, K); ``log_det_precision`` and ``dof`` broadcast over K.
    """
    half = 0.5 * (dof + n_features)
    constant = (
        gammaln(half)
        - gammaln(0.5 * dof)
        - 0.5 * n_features * np.log(dof * np.pi)
        + 0.5 * log_det_precision
    )
    return constant - half * np.log1p(quadratic / dof)


class CovarianceUnit(ABC):
    """Everything one covariance structure contributes to EM and VI.

    Parameters
    ----------
    n_components, n_features : int
        The shape of the mixture this unit serves.
    """

    name = ""

    def __init__(self, n_components, n_features):
        self.n_components = n_components
        self.n_features = n_features

    # ------------------------------------------------------------ storage
    @property
    @abstractmethod
    def precision_shape(self):
        """Shape of the precisions (and covariances) arrays."""

    @abstractmethod
    def precision_from_cholesky(self, precisions_cholesky):
        """Precisions from their Cholesky factor."""

    @abstractmethod
    def cholesky_from_covariance(self, covariances, reg_covar):
        """Precision Cholesky factor from covariances.

        Raises DegenerateComponentError when a covariance is not positive
        definite.
        """

    @abstractmethod
    def cholesky_from_precision(self, precisions):
        """Cholesky factor of user-supplied precisions (already validated)."""

    @abstractmethod
    def covariance_from_cholesky(self, precisions_cholesky):
        """Covariances, the inverses of the precisions."""

    @abstractmethod
    def log_det_cholesky(self, precisions_cholesky):
        """``log det`` of each component's precision, shape (K,)."""

    @abstractmethod
    def trace(self, precisions):
        """Trace of each component's precision, shape (K,)."""

    @abstractmethod
    def check_precisions(self, precisions, name):
        """Validate user precisions (shape, symmetry, definiteness)."""

    # -------------------------------------------------- E-step (per chunk)
    def row_bytes(self, itemsize):
        """Bytes of temporaries per row in one E-step chunk.

        Differences ``x - m_k`` for every component and the (n, K) work
        arrays of the E-step, in the dtype of X, and centered float64 copies
        of the row for the shared-center path.
        """
        per_component = itemsize * self.n_components * (self.n_features + 5)
        return per_component + 8 * 2 * self.n_features

    def reference(self, means, weights, precisions):
        """Points, shape (K, D), about which second moments are accumulated.

        Each component's own mean: moments of the small differences
        ``x - m_k`` do not cancel, wherever the data and clusters sit. Units
        with a faster shared-center path override this.
        """
        return np.array(means, dtype=float)

    def shares_center(self, reference):
        """Whether ``reference`` is one shared center (the fast path)."""
        return False

    def quadratic(self, X, means, precisions_cholesky, reference):
        """``(x - m_k)^T Lambda_k (x - m_k)`` for a chunk, shape (n, K).

        Returns ``(quadratic, cache)``; the cache (the differences, when the
        reference points are the means) is handed to :meth:`chunk_moments`.
        """
        if self.shares_center(reference):
            return self._quadratic_about_center(
                X, means, precisions_cholesky, reference[0]
            )
        diffs = np.empty((self.n_components,) + X.shape, dtype=X.dtype)
        quad = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        factor = precisions_cholesky.astype(X.dtype, copy=False)
        for k in range(self.n_components):
            np.subtract(X, means[k].astype(X.dtype), out=diffs[k])
            quad[:, k] = self._quadratic_of_differences(diffs[k], factor, k)
        reusable = np.array_equal(reference, means)
        return quad, (diffs if reusable else None)

    def chunk_moments(self, X, weighted_resp, reference, cache=None):
        """First and second moments about ``reference`` for one chunk.

        Returns ``(sum_x, sum_xx)`` in float64: ``sum_x`` has shape (K, D),
        ``sum_xx`` the type's second-moment shape.
        """
        if self.shares_center(reference):
            return self._moments_about_center(X, weighted_resp, reference[0], cache)
        sum_x = np.empty((self.n_components, self.n_features))
        sum_xx = self.zero_second_moment()
        # Sums over a chunk run in float64: float32 sums of thousands of rows
        # would make the ELBO noisier than float32 responsibilities already do.
        for k in range(self.n_components):
            diff = X - reference[k].astype(X.dtype) if cache is None else cache[k]
            diff = diff.astype(np.float64, copy=False)
            weights = weighted_resp[:, k].astype(np.float64)
            sum_x[k] = weights @ diff
            self._add_second_moment(sum_xx, k, diff, weights)
        return sum_x, sum_xx

    @abstractmethod
    def _quadratic_of_differences(self, diff, precisions_cholesky, component):
        """Row-wise ``d^T Lambda_k d`` for differences ``d = x - m_k``."""

    @abstractmethod
    def _add_second_moment(self, sum_xx, component, diff, weights):
        """Add one component's weighted second moment of ``diff`` in place."""

    def _quadratic_about_center(self, X, means, precisions_cholesky, center):
        raise NotImplementedError

    def _moments_about_center(self, X, weighted_resp, center, cache):
        raise NotImplementedError

    @abstractmethod
    def zero_second_moment(self):
        """An all-zero second moment of the right shape."""

    @abstractmethod
    def centered_scatter(self, nk, sum_x, sum_xx):
        """Scatter of each component about its own mean (not divided by N)."""

    # ------------------------------------------------ expectations of terms
    def trace_product(self, precisions, scatter):
        """``sum_k tr(Lambda_k S_k)`` for symmetric scatters ``S_k`` (a float).

        Every layout stores what the trace pairs elementwise: whole matrices
        (full, tied), diagonals (diag), or a precision and a trace
        (spherical).
        """
        return float(np.sum(precisions * scatter))

    @abstractmethod
    def mahalanobis(self, diff, precisions):
        """``d_k^T Lambda_k d_k`` for rows ``d_k`` of ``diff``, shape (K,)."""

    # ------------------------------------------------------------- EM
    @abstractmethod
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        """EM M-step covariances of the reg_covar-smoothed objective.

        Components flagged ``empty`` keep their ``previous`` covariance:
        their terms vanish from the objective, so any value is a maximiser.
        """

    @abstractmethod
    def n_parameters(self):
        """Number of free covariance parameters."""

    @abstractmethod
    def sample_component(self, rng, covariances, component, n_samples):
        """Draws from N(0, covariances[component]), shape (n_samples, D)."""

    # ------------------------------------------------------------- VI
    @abstractmethod
    def check_prior(self, covariance_prior):
        """Validate a user covariance_prior; return it as float64."""

    @abstractmethod
    def prior_from_scatter(self, scatter, denominator, reg_covar):
        """Default covariance_prior from the data's one-component scatter.

        ``scatter`` is this unit's scatter for a single component holding
        all the data; the result is the covariance of the data smoothed by
        reg_covar, in this unit's prior layout.
        """

    @abstractmethod
    def min_dof_prior(self):
        """Exclusive lower bound on degrees_of_freedom_prior."""

    @abstractmethod
    def conjugate_update(self, prior, nk, scatter, mean_offsets, shrinkage, reg):
        """Exact mean-field update of q(Lambda).

        ``mean_offsets[k] = xbar_k - m_0`` and ``shrinkage[k] = beta_0 N_k /
        beta_k``. Returns ``(covariances, degrees_of_freedom)`` where the
        covariances are the inverses of E[Lambda].
        """

    @abstractmethod
    def expected_log_det(self, precisions_cholesky, dof):
        """``E_q[log det Lambda_k]``, shape (K,)."""

    @abstractmethod
    def kl_precision(self, precisions, precisions_cholesky, dof, prior):
        """``KL(q(Lambda) || p(Lambda))`` summed over its factors."""

    @abstractmethod
    def predictive_dof_and_scale(self, dof, mean_precision):
        """Student-t degrees of freedom and the factor s with L = s E[Lambda]."""

    # ------------------------------------------------ shared implementations
    def log_predictive(self, X, means, precisions_cholesky, dof, beta, reference):
        """Log posterior predictive of each component, shape (n, K).

        Full, tied and spherical predictives are multivariate Student-t with
        precision ``s E[Lambda]`` (Bishop 2006, eq. 10.81); diag overrides
        this with a product of univariate t.
        """
        t_dof, scale = self.predictive_dof_and_scale(dof, beta)
        quad, _ = self.quadratic(X, means, precisions_cholesky, reference)
        log_det = self.log_det_cholesky(precisions_cholesky) + self.n_features * (
            np.log(scale)
        )
        log_density = log_multivariate_t(
            quad * scale.astype(X.dtype), log_det, t_dof, self.n_features
        )
        return log_density.astype(X.dtype, copy=False)

    def sample_predictive(self, rng, mean, covariances, component, dof, beta, n):
        """Draws from one component's posterior predictive Student-t."""
        t_dof, scale = self.predictive_dof_and_scale(dof, beta)
        t_dof = np.broadcast_to(t_dof, beta.shape)[component]
        gauss = self.sample_component(rng, covariances, component, n)
        chi2 = rng.chisquare(t_dof, size=self._chi2_shape(n))
        return mean + gauss / np.sqrt(scale[component] * chi2 / t_dof)

    def _chi2_shape(self, n_samples):
        # One mixing variable per draw: the t is a Gaussian scale mixture.
        return (n_samples, 1)
