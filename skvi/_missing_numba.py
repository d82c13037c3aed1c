"""Compiled per-row corrections for missing entries (full and tied precisions).

The same algebra as the NumPy path of :mod:`skvi._missing`, written as one
loop over the rows and components of a chunk and compiled by numba: for a
row with s missing coordinates m and a component with precision Lambda,
whose kernel row is z = (filled row) - mu (0 at the missing coordinates of
the filled row's offset e = x - c),

    g                  = (Lambda z)_m = (Lambda e)_m - (Lambda d)_m
    Lambda_mm          = L L^T                       (Cholesky)
    y                  = L^-1 g
    g^T Lambda_mm^-1 g = y^T y
    E[x_m | x_o] - c_m = -L^-T y
    Cov[x_m | x_o]     = Lambda_mm^-1 = L^-T L^-1
    log det Lambda_mm  = 2 sum log L_aa

(Ghahramani & Jordan 1994; Bishop 2006, section 2.3). A precision shared by
every component (tied) is factorised once per row. With NumPy this is
about 40 array operations per batch of rows with the same number of
missing entries, whose cost per row and component (300-400 ns) dwarfs the
arithmetic of a 1 x 1 to 3 x 3 block; compiled, it is the arithmetic.

numba is an optional dependency (the ``fast`` extra): this module imports
it at the top, and :func:`skvi._missing.compiled_kernels` imports this
module only when a chunk has missing entries and numba is importable.
Every function is compiled for one signature (float64 and intp arrays, C
order), once, and cached on disk (``cache=True``); ``nogil=True`` lets
chunks run on several threads, each call on its own arrays, so results do
not depend on the number of threads.
"""

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(**_JIT)
def conditional_blocks(
    precisions,
    rows,
    members,
    starts,
    coordinates,
    groups,
    weighted_shifts,
    block_starts,
    quadratic,
    log_det,
    fill,
    covariance,
):
    """Each row's and component's correction terms, written into the outputs.

    Parameters
    ----------
    precisions : ndarray of shape (P, D, D)
        The dense precisions; P = 1 where all components share one (tied).
    rows : ndarray of shape (n, D)
        The kernel rows ``e = x - c``, 0 at the missing coordinates.
    members : ndarray of shape (n_positions,)
        The row of each position; positions are the rows in the order of
        their entries.
    starts : ndarray of shape (n_positions + 1,)
        Position p's entries are ``starts[p]:starts[p + 1]``.
    coordinates : ndarray of shape (n_entries,)
        Each entry's coordinate, increasing within a row.
    groups : ndarray of shape (n,)
        The center each row was expanded about.
    weighted_shifts : ndarray of shape (G, K, D)
        ``Lambda_k (mu_k - c_g)``.
    block_starts : ndarray of shape (n_positions,)
        Where position p's s x s covariance starts in ``covariance``.
    quadratic, log_det : ndarray of shape (K, n)
        Out: ``-g^T Lambda_mm^-1 g`` and ``log det Lambda_mm``.
    fill : ndarray of shape (K, n_entries)
        Out: the conditional mean minus the center, per entry.
    covariance : ndarray of shape (P, n_cells)
        Out: ``Lambda_mm^-1`` of each position, row-major s x s.
    """
    n_precisions, n_features = precisions.shape[0], precisions.shape[2]
    n_components = quadratic.shape[0]
    largest = 0
    for p in range(members.shape[0]):
        largest = max(largest, starts[p + 1] - starts[p])
    lower = np.empty((n_precisions, largest, largest))
    inverse = np.empty((largest, largest))
    products = np.empty((n_precisions, largest))
    determinants = np.empty(n_precisions)
    solved = np.empty(largest)
    for p in range(members.shape[0]):
        row = members[p]
        first = starts[p]
        size = starts[p + 1] - first
        if size == 0:
            for k in range(n_components):
                quadratic[k, row] = 0.0
                log_det[k, row] = 0.0
            continue
        cell = block_starts[p]
        for q in range(n_precisions):
            factor = lower[q]
            # (Lambda e)_m: the part of g every component with this
            # precision shares.
            for a in range(size):
                ja = coordinates[first + a]
                total = 0.0
                for j in range(n_features):
                    total += precisions[q, ja, j] * rows[row, j]
                products[q, a] = total
            # Cholesky factor of Lambda_mm, column by column.
            log_total = 0.0
            for b in range(size):
                jb = coordinates[first + b]
                diagonal = precisions[q, jb, jb]
                for c in range(b):
                    diagonal -= factor[b, c] * factor[b, c]
                diagonal = np.sqrt(diagonal)
                factor[b, b] = diagonal
                log_total += np.log(diagonal)
                for a in range(b + 1, size):
                    off = precisions[q, coordinates[first + a], jb]
                    for c in range(b):
                        off -= factor[a, c] * factor[b, c]
                    factor[a, b] = off / diagonal
            determinants[q] = 2.0 * log_total
            # M = L^-1 (lower triangular), then Lambda_mm^-1 = M^T M.
            for b in range(size):
                inverse[b, b] = 1.0 / factor[b, b]
                for a in range(b + 1, size):
                    total = 0.0
                    for c in range(b, a):
                        total += factor[a, c] * inverse[c, b]
                    inverse[a, b] = -total / factor[a, a]
            for a in range(size):
                for b in range(a + 1):
                    total = 0.0
                    for c in range(a, size):
                        total += inverse[c, a] * inverse[c, b]
                    covariance[q, cell + a * size + b] = total
                    covariance[q, cell + b * size + a] = total
        group = groups[row]
        for k in range(n_components):
            q = k if n_precisions > 1 else 0
            factor = lower[q]
            # y = L^-1 g, then the step L^-T y = Lambda_mm^-1 g.
            form = 0.0
            for a in range(size):
                ja = coordinates[first + a]
                total = products[q, a] - weighted_shifts[group, k, ja]
                for c in range(a):
                    total -= factor[a, c] * solved[c]
                solved[a] = total / factor[a, a]
                form += solved[a] * solved[a]
            for a in range(size - 1, -1, -1):
                total = solved[a]
                for c in range(a + 1, size):
                    total -= factor[c, a] * solved[c]
                solved[a] = total / factor[a, a]
                fill[k, first + a] = -solved[a]
            quadratic[k, row] = -form
            log_det[k, row] = determinants[q]


@numba.njit(**_JIT)
def conditional_statistics(
    weighted_resp,
    rows,
    members,
    starts,
    coordinates,
    fill,
    covariance,
    block_starts,
    first,
    second,
):
    """Add what completes the kernel's sums of the filled rows.

    With ``delta`` the fill (conditional mean minus the center) on a row's
    missing coordinates and 0 elsewhere: ``sum w r delta`` to ``first``
    (K, D) and ``sum w r (e delta^T + delta e^T + delta delta^T + Cov)``
    to ``second`` (K, D, D), for ``weighted_resp`` (K, n) and the arrays
    of :func:`conditional_blocks`.
    """
    n_components = weighted_resp.shape[0]
    n_precisions = covariance.shape[0]
    n_features = rows.shape[1]
    # sum w r delta_a e^T, by the coordinate a: transposed into second.
    cross = np.zeros((n_components, n_features, n_features))
    for p in range(members.shape[0]):
        row = members[p]
        start = starts[p]
        size = starts[p + 1] - start
        cell = block_starts[p]
        for k in range(n_components):
            weight = weighted_resp[k, row]
            q = k if n_precisions > 1 else 0
            for a in range(size):
                ja = coordinates[start + a]
                weighted = weight * fill[k, start + a]
                first[k, ja] += weighted
                for j in range(n_features):
                    cross[k, ja, j] += weighted * rows[row, j]
                second[k, ja, ja] += (
                    weighted * fill[k, start + a]
                    + weight * covariance[q, cell + a * size + a]
                )
                for b in range(a + 1, size):
                    jb = coordinates[start + b]
                    value = (
                        weighted * fill[k, start + b]
                        + weight * covariance[q, cell + a * size + b]
                    )
                    second[k, ja, jb] += value
                    second[k, jb, ja] += value
    for k in range(n_components):
        for i in range(n_features):
            for j in range(n_features):
                second[k, i, j] += cross[k, i, j] + cross[k, j, i]
