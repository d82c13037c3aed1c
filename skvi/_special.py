"""Log-gamma and digamma remainders that stay exact for huge arguments.

The variational posterior's degrees of freedom and Gamma shapes grow with the
total sample weight, up to about 1e308. The Student-t normaliser and the
Wishart, Gamma and Dirichlet terms of the bound then take differences such as
``gammaln(a + h) - gammaln(a)`` or ``digamma(a) - log(a)`` of numbers of size
``a log a`` whose result is of order one or smaller: computed as written they
lose every digit (by 1e15 degrees of freedom the predictive is off by nats).

The functions here return those small remainders directly. For arguments of
at least 10 they sum Stirling's series, whose eight terms kept are exact to
rounding there (the first term left out is below 1e-17); below 10 they use
scipy's functions, whose values are then small and nothing cancels.
"""

import numpy as np
from scipy.special import digamma, gammaln

HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))

# Where Stirling's series takes over from scipy.
_LARGE = 10.0
# B_2n / (2n (2n - 1)) and B_2n / (2n), n = 1..8 (B_2n the Bernoulli numbers):
# the coefficients of x^(1 - 2n) in log Gamma(x) and of x^(-2n) in digamma(x).
_LOG_GAMMA_SERIES = (
    1.0 / 12.0,
    -1.0 / 360.0,
    1.0 / 1260.0,
    -1.0 / 1680.0,
    1.0 / 1188.0,
    -691.0 / 360360.0,
    1.0 / 156.0,
    -3617.0 / 122400.0,
)
_DIGAMMA_SERIES = (
    1.0 / 12.0,
    -1.0 / 120.0,
    1.0 / 252.0,
    -1.0 / 240.0,
    1.0 / 132.0,
    -691.0 / 32760.0,
    1.0 / 12.0,
    -3617.0 / 8160.0,
)
# Below this, (log1p(u) - u) / u is summed as a series (the direct form
# cancels); 10 terms are exact to rounding there.
_SMALL_RATIO = 1e-2
_RATIO_SERIES = tuple(1.0 / (j + 2.0) for j in range(10))


def _polynomial(coefficients, y):
    """``sum_n coefficients[n] y^n`` by Horner's rule."""
    total = np.zeros_like(y)
    for coefficient in reversed(coefficients):
        total = total * y + coefficient
    return total


def _split(x):
    """``x`` as a float array, and where Stirling's series applies."""
    x = np.asarray(x, dtype=float)
    return x, x >= _LARGE


def log_gamma_rest(x):
    """``log Gamma(x) - ((x - 1/2) log x - x)``, elementwise for ``x > 0``.

    Tends to ``log(2 pi) / 2`` as ``x`` grows; finite for every finite x.
    """
    x, large = _split(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(large, 1.0 / x, 0.0)
        series = HALF_LOG_2PI + inverse * _polynomial(_LOG_GAMMA_SERIES, inverse**2)
        small = np.where(large, 1.0, x)
        direct = gammaln(small) - (small - 0.5) * np.log(small) + small
    return np.where(large, series, direct)[()]


def digamma_rest(x):
    """``digamma(x) - log(x)``, elementwise for ``x > 0``; about ``-1 / (2x)``."""
    x, large = _split(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(large, 1.0 / x, 0.0)
        squared = inverse**2
        series = -0.5 * inverse - squared * _polynomial(_DIGAMMA_SERIES, squared)
        small = np.where(large, 1.0, x)
        direct = digamma(small) - np.log(small)
    return np.where(large, series, direct)[()]


def _log1p_minus_identity_ratio(u):
    """``(log1p(u) - u) / u`` for ``u > 0``; about ``-u / 2`` for small u."""
    u = np.asarray(u, dtype=float)
    small = u < _SMALL_RATIO
    # -u (1/2 - u/3 + u^2/4 - ...)
    series = -u * _polynomial(_RATIO_SERIES, -u)
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = (np.log1p(u) - u) / u
    return np.where(small, series, direct)


def log_gamma_ratio(a, h):
    """``log Gamma(a + h) - log Gamma(a) - h log(a)``, elementwise.

    For ``a > 0`` and ``h >= 0``; it vanishes as ``a`` grows (about
    ``h (h - 1) / (2 a)``), and is exact to rounding however large ``a`` is,
    where the difference of ``gammaln`` values loses ``log10(a log a)``
    digits and, once ``h`` is below the spacing of floats near ``a``, all.
    """
    a, large = _split(a)
    h = np.asarray(h, dtype=float)
    a, h = np.broadcast_arrays(a, h)
    large = np.broadcast_to(large, a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Stirling: a (log1p(u) - u) + (h - 1/2) log1p(u) + the two series'
        # difference, with u = h / a (the a log a terms cancel exactly).
        big = np.where(large, a, _LARGE)
        u = h / big
        series = (
            h * _log1p_minus_identity_ratio(u)
            + (h - 0.5) * np.log1p(u)
            + (log_gamma_rest(big + h) - log_gamma_rest(big))
        )
        small = np.where(large, 1.0, a)
        direct = gammaln(small + h) - gammaln(small) - h * np.log(small)
    return np.where(large, series, direct)[()]
