"""Wishart algebra shared by the full and tied units.

q(Lambda) = Wishart(W, dof) is stored through E[Lambda] = dof * W, so the
scale matrix has ``log det W = log det E[Lambda] - D log dof``; the prior
Wishart(W0, dof0) through ``covariance_prior_ = W0^-1``.
"""

import numpy as np
from scipy.linalg import lapack

from .._elbo import kl_wishart, wishart_log_det_gap
from . import _gufuncs
from ._unit import is_symmetric, upper_cholesky


def wishart_expected_log_det(log_det_precision, dof, n_features):
    """``E[log det Lambda]`` from ``log det E[Lambda]`` and the dof."""
    return log_det_precision + wishart_log_det_gap(dof, n_features)


def _split(matrix, bits, axis):
    """``matrix = high + low`` exactly, ``high`` of ``53 - bits`` bits.

    Each row (``axis=-1``) or column (``axis=-2``) of ``high`` lies on the
    grid of ``2^(e + bits - 53)``, ``2^e`` its largest magnitude rounded
    up: products of such rows and columns add up without rounding.
    """
    top = np.max(np.abs(matrix), axis=axis, keepdims=True)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        exponent = np.ceil(np.log2(np.where(top > 0, top, 1.0)))
        grid = np.where(top > 0, np.ldexp(1.0, (exponent + bits).astype(int)), 0.0)
        high = (matrix + grid) - grid
    return high, matrix - high


# How far the terms of a product may exceed it, in the ratio of
# ``sum |c| (|a| |b|)`` to ``sum c^2`` over the square root of the inner
# dimension n, before its squared norm is taken with the accurate product.
# Rounding errs by about ``eps sqrt(n)`` of the terms, so the plain one's
# squared norm then errs by about ``8 n eps``, relatively, as a sum of n^2
# squares may; well-conditioned precisions (ratios near 2) stay plain.
CANCELLATION = 8.0


def accurate_product(a, b):
    """``a @ b`` to about the rounding of its result, however its terms cancel.

    A plain product errs by about ``eps |a| |b|``, far more than its result
    where large terms cancel: the factor of a precision with clusters far
    apart applied to the prior's long axis. With ``a = a1 + a2`` and ``b =
    b1 + b2`` split so that ``a1 @ b1`` is exact (Ozaki, Ogita, Oishi and
    Rump, Numer. Algorithms 59, 2012), the rest errs by ``eps 2^-22 |a|
    |b|``. Stacks broadcast as in ``np.matmul``.
    """
    return SplitFactor(a).times(b)


class SplitFactor:
    """A left factor ``a`` split once, for accurate products ``a @ b``.

    Splitting costs about as much as a product of its size: a factor that
    meets many right operands (a precision factor and chunks of rows) is
    split once (see :func:`accurate_product`).
    """

    def __init__(self, a):
        self.a = a
        self.bits = int(np.ceil((53 + np.log2(max(a.shape[-1], 1))) / 2)) + 1
        self.high, self.low = _split(a, self.bits, axis=-1)
        self.finite = bool(np.all(np.isfinite(self.low)))

    def times(self, b, error=None, work=None):
        """``a @ (b + error)``, accurately (see :func:`accurate_product`).

        ``error``, a small correction of ``b`` (such as the rounding error
        of a difference), joins the small terms. ``work``, optional, is a
        triple of arrays, one of ``b``'s shape and two of the result's,
        that the product is formed in (fresh arrays of a chunk's size cost
        page faults); then ``b`` is overwritten and the result is
        ``work[2]``.
        """
        if work is None:
            b = np.array(b, dtype=float)
            shape = np.broadcast_shapes(self.a.shape[:-2], b.shape[:-2])
            shape += self.a.shape[-2:-1] + b.shape[-1:]
            work = (np.empty_like(b), np.empty(shape), np.empty(shape))
        high, small, product = work
        bits = self.bits
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            # b's columns split as in _split, in place.
            top = np.max(np.abs(b), axis=-2, keepdims=True)
            exponent = np.ceil(np.log2(np.where(top > 0, top, 1.0)))
            grid = np.where(top > 0, np.ldexp(1.0, (exponent + bits).astype(int)), 0.0)
            np.add(b, grid, out=high)
            high -= grid
            finite = self.finite and bool(np.isfinite(high).all())
        if not finite:
            np.matmul(self.a, b, out=product)
            if error is not None:
                product += self.a @ error
            return product
        np.matmul(self.low, b, out=small)
        if error is not None:
            small += np.matmul(self.a, error, out=product)
        b -= high
        small += np.matmul(self.high, b, out=product)
        np.matmul(self.high, high, out=product)
        product += small
        return product


def product_for_norms(a, b):
    """``a @ b`` whose squared norm rounds as a sum of squares does.

    The plain product where its terms hardly cancel (large data, well
    conditioned precisions: one product more than the plain one), the
    :func:`accurate_product` where they do.
    """
    plain = a @ b
    terms = np.sum(np.abs(plain) * (np.abs(a) @ np.abs(b)))
    if terms <= CANCELLATION * np.sqrt(a.shape[-1]) * np.sum(plain**2):
        return plain
    return accurate_product(a, b)


def prior_traces(prior, precisions_cholesky):
    """``tr(W0^-1 E[Lambda_k])`` for factors of shape (K, D, D), shape (K,).

    As ``|L0^T P_k|^2`` with ``W0^-1 = L0 L0^T``: a sum of squares. The
    elementwise sum of ``W0^-1 * E[Lambda_k]`` cancels when the prior is
    wide along an axis where the precision is small (clusters far apart),
    losing digits the bound's monotonicity needs; so does the plain
    product ``L0^T P_k`` (1e-12 of the bound at condition numbers 1e10):
    it is taken with :func:`product_for_norms`.
    """
    lower = np.linalg.cholesky(prior.covariance)
    products = product_for_norms(lower.T, precisions_cholesky)
    return np.sum(products**2, axis=(1, 2))


def prior_distances(means, prior_mean, precisions_cholesky):
    """``(m_k - m0)^T E[Lambda_k] (m_k - m0)`` as ``|P_k^T (m_k - m0)|^2``, (K,).

    A mean far from the prior's along the precision's weak axis (clusters
    far apart) cancels in the product as in :func:`prior_traces`, and so
    does the rounding of ``m_k - m0``: the difference is kept exactly, as
    its rounded value and its error (Knuth's two-sum).
    """
    offsets = means - prior_mean
    moved = offsets - means
    errors = (means - (offsets - moved)) - (prior_mean + moved)
    rows = product_for_norms(offsets[:, np.newaxis], precisions_cholesky)[:, 0]
    rows += np.einsum("ki,kij->kj", errors, precisions_cholesky)
    return np.sum(rows**2, axis=1)


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


def wishart_precision_factors(
    prior_covariance, scatters, ridges, offsets, weights, dof, frames=None
):
    """Cholesky factors of ``E[Lambda_k] = dof_k T_k^-1``, in the prior's frame.

    ``T_k = C0 + S_k + ridges_k I + sum_j weights_kj o_kj o_kj^T`` with
    ``C0 = prior_covariance`` (D, D), scatters ``S_k`` (K, D, D), offsets
    (K, J, D) and weights (K, J). Returns upper-triangular ``P_k`` with
    ``P_k P_k^T = E[Lambda_k]``, shape (K, D, D), or None if a factor fails.

    The default prior is the data's covariance: with clusters far apart it
    is long along the axis joining them, and so is ``T_k``. Formed entry by
    entry, its weak axes (those of the components) would carry the rounding
    of its largest entries, off by the condition number times the working
    precision: 1e-4 at 1e12, a global step that lowers the bound by 1e-8
    per sample. With ``C0 = L L^T``, ``T_k = L (I + G_k) L^T``, ``G_k =
    L^-1 (S_k + ridges_k I) L^-T + sum_j weights_kj y y^T`` (``y = L^-1
    o``), and ``I + G_k`` is well conditioned: each factor loses only the
    digits of the square roots of condition numbers.
    """
    n_features = prior_covariance.shape[0]
    eye = np.eye(n_features)
    lower = np.linalg.cholesky(prior_covariance)
    inverse, info = lapack.dtrtri(lower, lower=1)
    if info != 0:
        return None
    # A prior on the scale of the smallest normal numbers (data of spread
    # 1e-151) overflows L^-1 S L^-T: then the caller forms the factor from
    # the covariances instead.
    with np.errstate(over="ignore", invalid="ignore"):
        ridge = inverse @ inverse.T
        if frames is None:
            inner = inverse @ scatters @ inverse.T
        else:
            # S_k = P_k^-T W_k P_k^-1: L^-1 S_k L^-T = M^T W_k M, M = P_k^-1 L^-T.
            old_factors, whitened_scatters = frames
            maps = np.stack(
                [lapack.dtrtrs(factor, inverse.T, lower=0)[0] for factor in old_factors]
            )
            inner = np.swapaxes(maps, 1, 2) @ whitened_scatters @ maps
        inner = inner + ridges[:, np.newaxis, np.newaxis] * ridge
        whitened = offsets @ inverse.T
        inner += np.einsum("kj,kji,kjl->kil", weights, whitened, whitened)
        inner = 0.5 * (inner + np.swapaxes(inner, 1, 2)) + eye
    if not np.all(np.isfinite(inner)):
        return None
    try:
        factors = lower @ np.linalg.cholesky(inner)
    except np.linalg.LinAlgError:
        return None
    # E[Lambda_k] = dof (F F^T)^-1 with F = L R lower: P = sqrt(dof) F^-T.
    result = np.empty_like(factors)
    for k, factor in enumerate(factors):
        inverse, info = lapack.dtrtri(factor, lower=1)
        if info != 0 or not np.all(np.isfinite(inverse)):
            return None
        result[k] = np.sqrt(dof[k]) * inverse.T
    return result


def wishart_predictive_dof_and_scale(dof, mean_precision, n_features):
    """Bishop eq. 10.82: L = (nu + 1 - D) beta / (1 + beta) W with W = E/nu."""
    t_dof = dof + 1.0 - n_features
    return t_dof, t_dof / dof * mean_precision / (1.0 + mean_precision)


def check_spd(matrix, name):
    """Raise unless ``matrix`` is symmetric positive definite.

    Both Cholesky factors must exist, and the log-determinant must be
    finite: a matrix singular to rounding (the covariance of two rows per
    cluster, clusters 1e5 apart, condition number 1e16) can pass the upper
    factor and fail the lower one that the Wishart algebra takes, or give
    ``log det = -inf`` and a bound of ``-inf``.
    """
    valid = (
        np.all(np.isfinite(matrix))
        and is_symmetric(matrix)
        and upper_cholesky(matrix) is not None
    )
    if valid:
        symmetric = 0.5 * (matrix + matrix.T)
        try:
            np.linalg.cholesky(symmetric)
        except np.linalg.LinAlgError:
            valid = False
        sign, log_det = np.linalg.slogdet(symmetric)
        valid = valid and sign > 0 and np.isfinite(log_det)
    if not valid:
        raise ValueError(f"{name} must be a finite symmetric positive definite matrix.")


def check_spd_stack(matrices, name):
    """:func:`check_spd` of each matrix of a stack (K, D, D), as ``name[k]``.

    The same checks, each one call over the whole stack (per matrix they
    cost a fit of small data a few milliseconds); where any fails, the
    matrices are checked one at a time for the first culprit's message.
    """
    matrices = np.asarray(matrices, dtype=float)
    if _all_spd(matrices):
        return
    for k, matrix in enumerate(matrices):
        check_spd(matrix, f"{name}[{k}]")


def _all_spd(matrices):
    """Whether every matrix of the stack passes :func:`check_spd`."""
    transposed = np.swapaxes(matrices, 1, 2)
    if not (np.isfinite(matrices).all() and np.allclose(matrices, transposed)):
        return False
    symmetric = 0.5 * (matrices + transposed)
    try:
        # The upper factors (of the reversed matrices, as upper_cholesky
        # takes them), then the lower ones.
        reversed_lower = _gufuncs.cholesky(matrices[:, ::-1, ::-1])
        _gufuncs.cholesky(symmetric)
    except np.linalg.LinAlgError:
        return False
    if not (np.diagonal(reversed_lower, axis1=1, axis2=2) > 0).all():
        return False
    sign, log_det = np.linalg.slogdet(symmetric)
    return bool(np.all(sign > 0) and np.all(np.isfinite(log_det)))


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
