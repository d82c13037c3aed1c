"""numpy.linalg's functions and einsum on small stacks, without their Python layer.

The lock step's M-steps call ``np.linalg``'s ``cholesky``, ``solve``,
``inv`` and ``eigh`` thousands of times per selection on stacks of 2 x 2
to 9 x 9 matrices, where the wrapper (array conversions, type and shape
checks, the result's cast) costs two to three times the LAPACK work. Here
each calls the same generalized ufunc with the same signature under the
same error state, so it returns the same bits and raises the same
``LinAlgError``; only for float64 input (any other goes to ``np.linalg``,
which casts its result back), and only where numpy exposes the ufuncs.
:func:`einsum` is ``np.einsum``'s own C function, which ``np.einsum``
calls as it is without ``optimize`` or ``out`` (the default), skipping
its dispatch.
"""

import numpy as np

try:
    from numpy.linalg import _umath_linalg as _ufuncs
except ImportError:  # pragma: no cover - numpy without the private module
    _ufuncs = None
try:
    from numpy._core._multiarray_umath import c_einsum as einsum
except ImportError:  # pragma: no cover - numpy 1 or a later layout
    einsum = np.einsum

_FLOAT = np.dtype(np.float64)


def _raise(message):
    def handler(err, flag):
        raise np.linalg.LinAlgError(message)

    return handler


_NOT_POSITIVE_DEFINITE = _raise("Matrix is not positive definite")
_SINGULAR = _raise("Singular matrix")
_NOT_CONVERGED = _raise("Eigenvalues did not converge")


def _state(handler):
    """The error state ``np.linalg`` sets around its ufuncs."""
    return np.errstate(
        call=handler, invalid="call", over="ignore", divide="ignore", under="ignore"
    )


def cholesky(matrices):
    """``np.linalg.cholesky`` (lower) of a stack (..., D, D)."""
    if _ufuncs is None or matrices.dtype != _FLOAT:
        return np.linalg.cholesky(matrices)
    with _state(_NOT_POSITIVE_DEFINITE):
        return _ufuncs.cholesky_lo(matrices, signature="d->d")


def solve(matrices, vectors):
    """``np.linalg.solve`` of (..., D, D) and (..., D, M) (or (D,)) stacks."""
    if _ufuncs is None or matrices.dtype != _FLOAT or vectors.dtype != _FLOAT:
        return np.linalg.solve(matrices, vectors)
    # (np.linalg.solve takes a 1-d right-hand side as one vector.)
    function = _ufuncs.solve1 if vectors.ndim == 1 else _ufuncs.solve
    with _state(_SINGULAR):
        return function(matrices, vectors, signature="dd->d")


def inv(matrices):
    """``np.linalg.inv`` of a stack (..., D, D)."""
    if _ufuncs is None or matrices.dtype != _FLOAT:
        return np.linalg.inv(matrices)
    with _state(_SINGULAR):
        return _ufuncs.inv(matrices, signature="d->d")


def eigh(matrices):
    """``np.linalg.eigh`` (lower triangle) of a stack: values, vectors."""
    if _ufuncs is None or matrices.dtype != _FLOAT:
        return np.linalg.eigh(matrices)
    with _state(_NOT_CONVERGED):
        return _ufuncs.eigh_lo(matrices, signature="d->dd")


def slogdet(matrices):
    """``np.linalg.slogdet`` of a stack: signs, log-determinants."""
    if _ufuncs is None or matrices.dtype != _FLOAT:
        return np.linalg.slogdet(matrices)
    return _ufuncs.slogdet(matrices, signature="d->dd")
