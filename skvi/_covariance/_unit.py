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

from .._elbo import LOG_2PI
from .._special import log_gamma_ratio
from . import _gufuncs


class DegenerateComponentError(ValueError):
    """A component's covariance is not positive definite.

    Raised instead of a ``LinAlgError`` when a component collapses onto too
    few distinct points for its covariance to be estimated. It is a
    ``ValueError``, so code that catches scikit-learn's errors catches it.

    Examples
    --------
    >>> import numpy as np
    >>> from skvi import DegenerateComponentError, EMGaussianMixture
    >>> X = np.array([[0.0, 0.0]] * 5 + [[1.0, 2.0]] * 5)  # two points, repeated
    >>> try:
    ...     EMGaussianMixture(n_components=2, reg_covar=0.0).fit(X)
    ... except DegenerateComponentError as error:
    ...     print(str(error)[:24])
    Component 0 collapsed: i
    >>> EMGaussianMixture(n_components=2).fit(X).converged_  # reg_covar=1e-6
    True
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
    if not np.isfinite(matrix).all():
        return None
    try:
        lower = _gufuncs.cholesky(matrix)
    except np.linalg.LinAlgError:
        return None
    if not (np.diag(lower) > 0).all():
        return None
    return lower


def first_singular_to_rounding(covariances, factors):
    """The first covariance that is singular to working precision, or None.

    ``covariances`` (K, D, D) with the upper factors ``factors`` of their
    inverses (``P = L^-T``, so the Cholesky pivots are ``1 / P_ii^2``). A
    pivot is the variance of a feature left over by the features before it;
    one below ``D * eps`` of that feature's variance is rounding of an exact
    linear dependence (rows on a line, a feature copied): Cholesky accepted
    it only by luck of rounding. Only meaningful with ``reg_covar=0``: with
    ``reg_covar > 0`` every pivot is at least ``reg_covar`` in exact
    arithmetic, and the whitened M-step keeps the digits it needs.
    """
    pivots = 1.0 / np.square(factors.diagonal(axis1=-2, axis2=-1))
    variances = covariances.diagonal(axis1=-2, axis2=-1)
    limit = covariances.shape[-1] * np.finfo(covariances.dtype).eps
    collapsed = (pivots <= limit * variances).any(axis=-1)
    return int(np.argmax(collapsed)) if collapsed.any() else None


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


def upper_cholesky_of_inverses(matrices):
    """:func:`upper_cholesky_of_inverse` for a stack of matrices, at once.

    Returns ``(factors, None)``, or ``(None, k)`` with the first matrix
    ``k`` that is not positive definite.
    """
    if matrices.dtype == np.float64 and matrices.shape[-1] <= 2:
        factors = _small_factors_of_inverses(matrices)
        if factors is not None:
            return factors, None
    try:
        lower = _gufuncs.cholesky(matrices) if np.isfinite(matrices).all() else None
    except np.linalg.LinAlgError:
        lower = None
    if lower is None or not (lower.diagonal(axis1=1, axis2=2) > 0).all():
        # Find the first culprit, one matrix at a time.
        for k, matrix in enumerate(matrices):
            if upper_cholesky_of_inverse(matrix) is None:
                return None, k
    if lower.dtype != np.float64:
        # float32: LAPACK's double inverse of each, rounded to the dtype.
        factors = np.empty_like(lower)
        for k, factor in enumerate(lower):
            inverse, info = lapack.dtrtri(factor, lower=1)
            if info != 0:
                return None, k
            factors[k] = inverse.T
        return factors, None
    if lower.shape[-1] <= 2:
        # (Pivots checked positive above: no inverse fails.)
        inverses = triangular_inverses(lower, lower=True)
        return np.ascontiguousarray(inverses.swapaxes(1, 2)), None
    # Each L_k^T in place, where LAPACK sees L_k (Fortran order): its
    # inverse is then written as P_k = L_k^-T, with no copies.
    factors = lower.swapaxes(1, 2).copy()
    invert = lapack.dtrtri
    for k, factor in enumerate(factors):
        # (lower=1, unitdiag=0, overwrite_c=1: positional, which f2py
        # parses several times faster than keywords.)
        if invert(factor.T, 1, 0, 1)[1] != 0:
            return None, k
    return factors, None


def _small_factors_of_inverses(matrices):
    """:func:`upper_cholesky_of_inverses` of double matrices with D <= 2.

    In closed form, all at once: the operations of LAPACK's unblocked
    Cholesky factorization as OpenBLAS takes it (``l00 = sqrt(a00)``, the
    entry below times the reciprocal ``1 / l00``, ``l11 = sqrt(a11 -
    l10 l10)``), then :func:`triangular_inverses`' (the same bits as
    ``np.linalg.cholesky`` and that, checked on a million matrices; one
    LAPACK call per stack costs more than this arithmetic on the lock
    step's small ones). None unless every matrix is finite and its pivots
    positive (the general path then says which one is not).
    """
    if not np.isfinite(matrices).all():
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        first = np.sqrt(matrices[:, 0, 0])
        if matrices.shape[-1] == 1:
            if not (first > 0).all():
                return None
            return (1.0 / first)[:, None, None]
        below = matrices[:, 1, 0] * (1.0 / first)
        second = np.sqrt(matrices[:, 1, 1] - below * below)
    if not ((first > 0) & (second > 0)).all():
        return None
    factors = np.zeros_like(matrices)
    first, second = 1.0 / first, 1.0 / second
    factors[:, 0, 0] = first
    factors[:, 1, 1] = second
    factors[:, 0, 1] = (below * second) * -first
    return factors


def triangular_inverses(matrices, lower):
    """LAPACK's ``dtrtri`` of each nonsingular triangular matrix (K, D, D).

    The other triangle is returned as it is given. With D <= 2 in closed
    form, all at once: the operations of LAPACK's unblocked ``dtrti2``
    (the reciprocals of the diagonal, then the off-diagonal entry times
    the later reciprocal, times minus the earlier one) in its order, so
    the same bits; one LAPACK call per matrix costs far more than the
    arithmetic of such a small one (lock-step M-steps on two features
    invert hundreds per round). Larger ones call ``dtrtri`` per matrix.
    """
    # In double precision, as LAPACK's dtrtri takes them.
    inverses = np.array(matrices, dtype=float)
    n_features = inverses.shape[-1]
    if n_features <= 2:
        diagonal = 1.0 / inverses.diagonal(axis1=1, axis2=2)
        features = np.arange(n_features)
        inverses[:, features, features] = diagonal
        if n_features == 2:
            # (The entry off the diagonal is still the given one.)
            if lower:
                below = inverses[:, 1, 0] * diagonal[:, 1]
                inverses[:, 1, 0] = below * -diagonal[:, 0]
            else:
                above = inverses[:, 0, 1] * diagonal[:, 0]
                inverses[:, 0, 1] = above * -diagonal[:, 1]
        return inverses
    # In place in Fortran order, as in upper_cholesky_of_inverses.
    transposed = inverses.swapaxes(1, 2).copy()
    invert = lapack.dtrtri
    for matrix in transposed:
        invert(matrix.T, int(lower), 0, 1)
    return np.ascontiguousarray(transposed.swapaxes(1, 2))


def upper_cholesky(matrix):
    """Upper-triangular ``P`` with ``P @ P.T == matrix``, or None if not SPD."""
    # Reversing rows and columns turns the lower Cholesky factor of the
    # reversed matrix into the upper factor we want.
    lower = _lower_cholesky(matrix[::-1, ::-1])
    return None if lower is None else lower[::-1, ::-1]


def whitened_maximum(factors, scatters, counts, reg_covar):
    """Upper factors of the precisions of ``Sigma_k = S_k / N_k + reg_covar I``.

    The scatters come in whitened frames: ``S_k = P_k^-T W_k P_k^-1`` for
    upper factors ``P_k`` (K, D, D) and whitened scatters ``W_k`` (K, D, D),
    with ``counts`` ``N_k > 0`` (K,). Formed entry by entry, ``Sigma_k``
    holds entries as large as the squared spacing of clusters far apart;
    they swamp reg_covar and the weak directions, where the E-step measures
    the rows, lose their digits. In the frame ``P_k^T Sigma_k P_k = M_k =
    W_k / N_k + reg_covar P_k^T P_k``, near the identity while the precision
    changes little, and with ``M_k = L L^T`` the precision ``P_k M_k^-1
    P_k^T`` has the upper factor ``P_k L^-T``: no condition number is
    squared. Returns None if an ``M_k`` is not positive definite.
    """
    grams = factors.swapaxes(1, 2) @ factors
    inner = scatters / counts[:, np.newaxis, np.newaxis] + reg_covar * grams
    inner = 0.5 * (inner + inner.swapaxes(1, 2))
    # L^-T, the upper factors of the M_k^-1, all at once.
    inverse_factors, _ = upper_cholesky_of_inverses(inner)
    if inverse_factors is None:
        return None
    return np.triu(factors @ inverse_factors)


def precision_conditioning_loss(precision, factor):
    """:meth:`CovarianceUnit.conditioning_loss` of one full precision.

    ``factor`` is its upper Cholesky factor P. Sigma = P^-T P^-1: the
    standard deviations are the column norms of P^-1 (LAPACK's triangular
    inverse; scipy's wrapper is slower). Infinite if P is singular.
    """
    inverse, info = lapack.dtrtri(factor, lower=0)
    if info != 0:
        return np.inf
    stds = np.linalg.norm(inverse, axis=0)
    return float(stds @ np.abs(precision) @ stds) / precision.shape[0]


def precision_conditioning_losses(precisions, factors):
    """:func:`precision_conditioning_loss` of a stack (K, D, D), at once.

    The norms and products batched, instead of per component: on small
    data this check cost as much as the E-step's arithmetic. The inverses
    are LAPACK's triangular ones, one call each: numpy's batched general
    inverse took 3x as long at D = 64 (an LU and a full inverse each).
    Singular or non-finite factors take the loop.
    """
    diagonals = np.diagonal(factors, axis1=1, axis2=2)
    if not (np.isfinite(factors).all() and diagonals.all()):
        return list(map(precision_conditioning_loss, precisions, factors))
    inverse = triangular_inverses(factors, lower=False)
    stds = np.sqrt(_gufuncs.einsum("kij,kij->kj", inverse, inverse))
    forms = _gufuncs.einsum("ki,kij,kj->k", stds, np.abs(precisions), stds)
    return (forms / precisions.shape[-1]).tolist()


def is_symmetric(matrix):
    """Whether ``matrix`` is symmetric up to scikit-learn's tolerance.

    The one scikit-learn's mixtures apply to precisions_init
    (``np.allclose``: 1e-5 relative, 1e-8 absolute), so that what they
    accept is accepted here; the matrix is then used symmetrised.
    """
    return np.allclose(matrix, matrix.T)


def student_t_kernel(quadratic, dof, n_features):
    """``(dof + D) / 2 * log1p(quadratic / dof)``, exact for any ``dof``.

    As ``dof`` grows this tends to the Gaussian's ``quadratic / 2``. Where
    ``quadratic / dof`` is subnormal (dof beyond about 1e290) it has lost
    digits, or all of them; ``log1p(u) = u`` to every digit there, and the
    kernel is taken as ``quadratic / 2 (1 + D / dof)``.
    """
    quadratic = np.asarray(quadratic, dtype=float)
    with np.errstate(under="ignore"):
        u = quadratic / dof
    kernel = 0.5 * (dof + n_features) * np.log1p(u)
    tiny = u < 1e-290
    if np.any(tiny):
        gaussian = 0.5 * quadratic * (1.0 + n_features / dof)
        kernel = np.where(tiny, gaussian, kernel)
    return kernel


def log_multivariate_t(quadratic, log_det_precision, dof, n_features):
    """Log-density of a multivariate Student-t from its quadratic form.

    ``quadratic`` is ``(x - m)^T L (x - m)`` for the t's precision matrix
    ``L``; ``log_det_precision`` and ``dof`` broadcast against it, and
    ``n_features`` is a number or one per row (the last axis). The
    normaliser ``log Gamma((dof + D) / 2) - log Gamma(dof / 2) - D / 2
    log(dof pi)`` is taken as :func:`~skvi._special.log_gamma_ratio` minus
    ``D / 2 log(2 pi)``: the difference of ``gammaln`` values would lose all
    its digits at large ``dof`` (large total sample weight), where the t
    tends to the Gaussian of precision ``L``.
    """
    # The normaliser once per distinct number of features, not per row.
    per_row = np.atleast_1d(n_features)
    dims, rows = np.unique(per_row, return_inverse=True)
    half = 0.5 * dims.astype(float)
    normaliser = log_gamma_ratio(0.5 * np.asarray(dof, dtype=float), half)
    normaliser = (normaliser - half * LOG_2PI)[..., rows.reshape(per_row.shape)]
    constant = normaliser + 0.5 * log_det_precision
    return constant - student_t_kernel(quadratic, dof, n_features)


def weighted_center(points, scales, fallback):
    """Coordinate by coordinate, the mean of ``points`` (K, D) weighted by ``scales``.

    ``sum_k scales_kj points_kj / sum_k scales_kj``, which minimises
    ``sum_k scales_kj (points_kj - c_j)^2``; ``fallback`` (D,) where no
    point weighs a coordinate. Points of zero scale do not enter, whatever
    they hold.
    """
    scales = np.asarray(scales, dtype=float)
    totals = scales.sum(axis=0)
    sums = np.sum(scales * np.where(scales > 0, points, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        center = sums / totals
    return np.where(np.isfinite(center) & (totals > 0), center, fallback)


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
        """Validate user precisions (shape, symmetry, definiteness).

        Returns them symmetrised.
        """

    # ------------------------------------ the expanded quadratic form (E-step)
    # The E-step kernel (skvi._kernel) evaluates (x - m_k)^T Lambda_k (x - m_k)
    # for every component at once by expanding it about a center c. With
    # e = x - c and d_k = m_k - c it is
    #     q(e) . a_k  -  2 e^T Lambda_k d_k  +  d_k^T Lambda_k d_k,
    # linear in second-order row features q(e) that the unit defines, and in
    # [1, e]. The unit also says how the responsibility-weighted sums of those
    # features become its second moments.

    @property
    @abstractmethod
    def n_second_order(self):
        """Number of second-order row features q(e) a fit pass uses."""

    @abstractmethod
    def second_order_features(self, centered, out):
        """Write q(e) for rows ``centered`` (D, m) into ``out`` (P2, m)."""

    @abstractmethod
    def second_order_coefficients(self, precisions):
        """``a_k`` with ``q(e) . a_k = e^T Lambda_k e``, shape (K, P2)."""

    @abstractmethod
    def precision_times(self, precisions, vectors):
        """``Lambda_k v`` for vectors of shape (..., K, D)."""

    @abstractmethod
    def precision_diagonals(self, precisions):
        """The diagonal of each component's precision, shape (K, D)."""

    def chunk_second_moment(self, weighted_resp, features, centered, row_mass):
        """A chunk's second-order statistic from its features.

        ``weighted_resp`` (K, m) holds ``w_n r_nk`` and ``row_mass`` its sums
        over components; the default sums the second-order features per
        component.
        """
        return weighted_resp @ features.T

    @abstractmethod
    def second_moment_from_sums(self, sums):
        """The summed chunk statistics as second moments in the unit's layout."""

    @abstractmethod
    def shifted_second_moment(self, first, counts, shifts):
        """What moving second moments by ``shifts`` adds, summed over groups.

        For rows of group g with ``counts[g, k] = sum w r``, ``first[g, k] =
        sum w r e`` and ``shifts[g, k] = s``: the second moment of ``e + s``
        minus that of ``e`` is ``first s^T + s first^T + counts s s^T``.
        Arrays have shape (G, K, D) and (G, K); the result is summed over g.
        """

    # ------------------------------------------- missing entries (skvi._missing)
    @abstractmethod
    def precision_blocks(self, precisions, coordinates):
        """``Lambda_k[m, m]`` for each row of ``coordinates`` (P, s): (K, P, s, s)."""

    @abstractmethod
    def missing_products(self, precisions, centered, members, missing):
        """``(Lambda_k e_n)_j`` for the rows ``members`` of ``centered`` (D, n).

        ``missing`` (len(members), s) holds the coordinates j of each row,
        where ``e_n`` is 0. Returns shape (K, len(members), s).
        """

    @abstractmethod
    def second_moment_from_dense(self, dense):
        """Per-component (K, D, D) second moments in the unit's layout."""

    def row_quadratic(self, centered, precisions_cholesky):
        """Part of the quadratic form shared by all components, per row.

        None for units whose second-order features carry it; a shared
        precision (tied) returns ``e^T Lambda e``, which a fit pass leaves out
        of the responsibilities, where it cancels.
        """
        return None

    def row_quadratic_total(self, second_moment_sums, precisions):
        """``sum_n w_n`` of :meth:`row_quadratic` from a pass's sums (0 if None)."""
        return 0.0

    def expansion_loss(self, means, weights, precisions, center=None):
        """The rounding loss F of expanding about one shared center, and it.

        The center is the weighted mean of the means unless one is given. F
        is the factor by which the expansion multiplies rounding errors: 1
        plus the largest ``|d_k|^T |Lambda_k| |d_k|`` (absolute values entry
        by entry) of a mean's offset ``d_k`` from the center, the size of the
        terms the expansion adds up. It is the squared whitened distance when
        they cannot cancel (diag, spherical); an ill-conditioned full or tied
        precision whose weak axis separates the means (clusters far apart
        along it) cancels far more than that distance shows.
        """
        if center is None:
            weights = np.asarray(weights, dtype=float)
            center = weights @ means / weights.sum()
        distances = self.mahalanobis(np.abs(means - center), np.abs(precisions))
        return 1.0 + float(np.max(distances)), center

    def precision_weighted_center(self, means, weights, precisions):
        """The center that weighs each mean's coordinates by their precisions.

        Coordinate by coordinate, ``sum_k w_k lambda_kj m_kj / sum_k w_k
        lambda_kj`` (``lambda_kj`` the diagonal of ``Lambda_k``): it
        minimises ``sum_k w_k sum_j lambda_kj (m_kj - c_j)^2``, the terms of
        F where they cannot cancel. A component that is nearly constant in a
        column (a digit's blank border pixel, precision ``1 / reg_covar``)
        pulls the center there, where the weighted mean of the means sits
        far out in its whitened units. Coordinates no component weighs keep
        the weighted mean of the means.
        """
        weights = np.asarray(weights, dtype=float)
        scales = weights[:, np.newaxis] * np.asarray(
            self.precision_diagonals(precisions), dtype=float
        )
        return weighted_center(means, scales, weights @ means / weights.sum())

    def conditioning_loss(self, precisions, precisions_cholesky):
        """The rounding loss of the second-order expansion at a component.

        Rows near a component's mean meet its precision through the
        products ``e_i e_j``; their terms ``Lambda_ij e_i e_j`` are as large
        as ``sigma^T |Lambda| sigma`` (``sigma`` the standard deviations),
        whereas the form they sum to is about D. The largest ratio over
        components is the factor by which the expansion multiplies rounding
        errors at the data; 1 where the terms cannot cancel (diagonal
        precisions).
        """
        return 1.0

    def component_factors(self, precisions_cholesky):
        """Each component's upper Cholesky factor ``P_k``, shape (K, D, D).

        For the units whose precisions can be ill-conditioned (full, tied),
        where the kernel then evaluates rows through these factors.
        """
        return precisions_cholesky

    @abstractmethod
    def zero_second_moment(self):
        """An all-zero second moment of the right shape."""

    @abstractmethod
    def centered_scatter(self, nk, sum_x, sum_xx):
        """Scatter of each component about its own mean (not divided by N)."""

    def moment_rounding_growth(self, nk, shift, scatter, reg_covar):
        """How much taking moments about the references amplified rounding.

        A scatter formed as ``sum r e e^T - N s s^T`` about a reference that
        lies ``s`` from the mean cancels ``N s_j^2`` against the variance
        of coordinate j: rounding grows by 1 plus their largest ratio
        ``N_k s_kj^2 / (S_kjj + N_k reg_covar)`` (the regularised variance
        is what the M-step uses).
        """
        nk = nk[:, np.newaxis]
        variances = self.scatter_diagonals(scatter) + nk * reg_covar
        cancelled = nk * shift**2
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(cancelled > 0, cancelled / variances, 0.0)
        return 1.0 + float(np.max(ratios, initial=0.0))

    def recentering_scales(self, nk, scatter, reg_covar):
        """Weights of the means' offsets in :meth:`moment_rounding_growth` (K, D).

        Its ratio for component k and coordinate j is ``scales_kj s_kj^2``:
        ``N_k / (S_kjj + N_k reg_covar)``, the regularised precision.
        """
        nk = nk[:, np.newaxis]
        with np.errstate(divide="ignore", invalid="ignore"):
            scales = nk / (self.scatter_diagonals(scatter) + nk * reg_covar)
        return np.where(nk > 0, scales, 0.0)

    def scatter_diagonals(self, scatter):
        """Per component and coordinate, the scatter's diagonal (K, D)."""
        raise NotImplementedError

    def moment_spreads(self, nk, shift, scatter):
        """Root mean square of each component's rows about its reference (K, D).

        The scatter's entries, summed as ``sum r e e^T - N s s^T`` about the
        reference, round relative to ``N_k`` times these spreads' products.
        0 for a component without mass.
        """
        second = self.scatter_diagonals(scatter) + nk[:, np.newaxis] * shift**2
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        return np.sqrt(np.maximum(second, 0.0) / safe)

    def merged_scatter(self, scatter, j, k, offset, weight):
        """The scatter with component k's rows moved into component j.

        The merged scatter is ``S_j + S_k + weight * offset offset^T``, with
        ``offset = xbar_k - xbar_j`` and ``weight = N_j N_k / (N_j + N_k)``;
        component k is left empty.
        """
        between = weight * np.outer(offset, offset)[np.newaxis]
        merged = np.array(scatter, dtype=float, copy=True)
        merged[j] += merged[k] + self.second_moment_from_dense(between)[0]
        merged[k] = 0.0
        return merged

    def pooled_scatter(self, nk, scatter, chosen):
        """The scatter with the ``chosen`` components' replaced by pooled ones.

        A chosen component k gets ``N_k`` times the pooled within-component
        covariance ``sum_j S_j / sum_j N_j``; the others keep their own.
        """
        pooled = scatter.sum(axis=0) / nk.sum()
        shape = (-1,) + (1,) * (scatter.ndim - 1)
        return np.where(
            chosen.reshape(shape), nk.reshape(shape) * pooled[np.newaxis], scatter
        )

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

    @abstractmethod
    def whitened_norms(self, diff, precisions_cholesky):
        """``d_k^T Lambda_k d_k`` as ``|P_k^T d_k|^2``, shape (K,).

        The ELBO's terms use this form: a sum of squares cancels nothing,
        whereas the entries of an ill-conditioned ``Lambda_k`` cancel in
        ``d^T Lambda d`` for a ``d`` along its weak axes (a mean far from
        the prior mean, clusters far apart), losing digits the bound's
        monotonicity needs.
        """

    def prior_distances(self, means, prior_mean, precisions_cholesky):
        """``(m_k - m0)^T E[Lambda_k] (m_k - m0)`` of VI's means, shape (K,).

        :meth:`whitened_norms` of the offsets; full and tied take them
        without cancellation (:func:`~skvi._covariance.wishart.prior_distances`).
        """
        return self.whitened_norms(means - prior_mean, precisions_cholesky)

    # ------------------------------------------------------------- EM
    @abstractmethod
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        """EM M-step covariances of the reg_covar-smoothed objective.

        Components flagged ``empty`` keep their ``previous`` covariance:
        their terms vanish from the objective, so any value is a maximiser.
        """

    def maximize_whitened(self, nk, whitened, reg_covar, empty, previous):
        """The M-step's precision factors from whitened moments, or None.

        ``whitened`` holds the q(Z)'s moments in the frames of the precisions
        the E-step whitened (:class:`~skvi._kernel.WhitenedMoments`, present
        only where they were ill-conditioned); ``previous`` the previous
        factors, which ``empty`` components keep. None (the default) leaves
        the factors to :meth:`cholesky_from_covariance` of :meth:`maximize`'s
        covariances; full and tied form them in the frames instead
        (:func:`whitened_maximum`).
        """
        return None

    @abstractmethod
    def n_parameters(self):
        """Number of free covariance parameters."""

    def decompose(self, covariances):
        """``(volumes, shapes, orientations)`` of mclust's models; None here."""
        return None

    def constrain(self, covariances, weights):
        """Initial covariances brought into the model; None if any will do."""
        return None

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

    def conjugate_cholesky(
        self, prior, nk, scatter, mean_offsets, shrinkage, reg, update, whitened=None
    ):
        """Cholesky factor of the precisions of ``update``.

        ``update`` is what :meth:`conjugate_update` returned for these
        arguments, and ``whitened`` the same scatters as
        :class:`~skvi._kernel.WhitenedMoments`, where the E-step summed them.
        By default the factor comes from the covariances (the Wishart units
        form it without them, see
        :func:`~skvi._covariance.wishart.wishart_precision_factors`).
        """
        return self.cholesky_from_covariance(update[0], reg)

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
    def log_predictive(self, X, quadratic_forms, means, precisions_cholesky, dof, beta):
        """Log posterior predictive of each component, shape (K, n).

        Full, tied and spherical predictives are multivariate Student-t with
        precision ``s E[Lambda]`` (Bishop 2006, eq. 10.81), evaluated from
        ``quadratic_forms(X)``: the (K, n) float64 forms ``(x - m_k)^T
        E[Lambda_k] (x - m_k)`` of each row's observed coordinates, the
        ``log det E[Lambda_k]_mm`` of its missing ones (K, n), and its number
        of observed coordinates (n,). The marginal of a t over some
        coordinates is the t of those, with the same degrees of freedom and
        the Schur complement as precision. Diag overrides this with a
        product of univariate t.
        """
        t_dof, scale = self.predictive_dof_and_scale(dof, beta)
        t_dof = np.broadcast_to(t_dof, beta.shape)[:, np.newaxis]
        # The forms come in float64: heavy tails stay representable.
        quad, log_det_missing, observed = quadratic_forms(X)
        log_scale = np.log(scale)[:, np.newaxis]
        log_det = (
            self.log_det_cholesky(precisions_cholesky)[:, np.newaxis]
            - log_det_missing
            + observed * log_scale
        )
        log_density = log_multivariate_t(
            quad * scale[:, np.newaxis], log_det, t_dof, observed
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

    def conditional_predictive_draw(
        self, rng, means, covariances, quadratic, n_observed, t_dof, scale
    ):
        """Draws of missing entries from a component's predictive given the rest.

        The predictive is a multivariate Student-t with ``t_dof`` degrees of
        freedom and precision ``scale E[Lambda]``. Given the observed
        entries (quadratic form ``scale * quadratic`` under the marginal's
        precision, ``n_observed`` of them) the missing ones are again a t:
        ``t_dof + n_observed`` degrees of freedom, the Gaussian conditional
        mean ``means`` (n, s), and the conditional scale ``covariances / scale``
        (``covariances`` (n, s, s) being the inverses of ``E[Lambda]_mm``)
        times ``(t_dof + scale * quadratic) / (t_dof + n_observed)``.
        """
        dof = t_dof + n_observed
        factor = (t_dof + scale * quadratic) / (dof * scale)
        lower = _gufuncs.cholesky(covariances * factor[:, np.newaxis, np.newaxis])
        gauss = _gufuncs.einsum("nij,nj->ni", lower, rng.standard_normal(means.shape))
        chi2 = rng.chisquare(dof)
        return means + gauss / np.sqrt(chi2 / dof)[:, np.newaxis]
