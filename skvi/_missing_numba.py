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
module only for a chunk with at least ``skvi._missing.COMPILED_PAIRS``
(row, component) pairs of incomplete rows, where numba is importable.
Every function is compiled for one signature (float64 and intp arrays),
once, and cached on disk (``cache=True``); ``nogil=True`` lets chunks run
on several threads, each call on its own arrays, so results do not depend
on the number of threads. The products ``(Lambda_k e)_m`` and the
statistics' cross sums are BLAS products (numba's ``np.dot``), one per
coordinate, on the rows missing it gathered once: their sums of D terms
then take BLAS's order, which moves results by rounding only (about
1e-15 of their scale). Besides the corrections, :func:`incomplete_rows`
finds a chunk's incomplete rows, :func:`pattern_rows` computes their
rows again where they were found before, and :func:`add_to_columns`
adds the values' corrections in place, once the kernels are loaded. A process's
first call of any of them costs about 0.6 s (numba builds its typing and
target contexts), each kernel's cached code 0.01-0.03 s more.
"""

import math

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
    scale,
    log_density,
    quadratic,
    log_det,
    corrections,
    fill,
    covariance,
    slots,
    gathered,
    single,
    single_known,
    pair,
    pair_known,
    triples,
    triple_known,
):
    """Each row's and component's correction terms, written into the outputs.

    Arrays keep the component last, so that the innermost loops run over
    the components, contiguous in memory (and in SIMD registers).

    Parameters
    ----------
    precisions : ndarray of shape (D, D, P)
        The dense precisions, component last; P = 1 where all components
        share one (tied), else P = K.
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
    weighted_shifts : ndarray of shape (G, D, K)
        ``Lambda_k (mu_k - c_g)``, component last.
    block_starts : ndarray of shape (n_positions,)
        Where position p's s x s covariance starts in ``covariance``.
    scale : float
        The values' scale (see skvi._kernel.Expansion).
    log_density : bool
        Whether the values are log-densities.
    quadratic, log_det : ndarray of shape (n, K)
        Out: ``-g^T Lambda_mm^-1 g`` and ``log det Lambda_mm``.
    corrections : ndarray of shape (n, K)
        Out: what turns the kernel's value of the filled row into that of
        its observed coordinates: ``scale * quadratic``, for a density
        ``-(quadratic + log_det) / 2 + s log(2 pi) / 2``.
    fill : ndarray of shape (n_entries, K)
        Out: the conditional mean minus the center, per entry.
    covariance : ndarray of shape (n_cells, P)
        Out: ``Lambda_mm^-1`` of each position, row-major s x s.
    slots, gathered : ndarray of shape (n_entries,) and (n_entries, D)
        Out where P > 1: each entry's place in the order by coordinate and
        the entries' rows in that order (see :func:`_entry_products`), for
        :func:`conditional_statistics`; empty, and not used, where P = 1.
    single, single_known, pair, pair_known, triples, triple_known : ndarray
        The factors of the blocks of one, two and three coordinates, kept
        from call to call while the precisions stay the same, and which of
        them are known (set here for those computed here): see
        :func:`new_factor_cache`.

    Returns
    -------
    least : float
        ``min(0, min(quadratic))``, NaN where a quadratic is NaN: what
        ``np.min(quadratic, initial=0.0)`` returns, without another pass.

    Notes
    -----
    ``Lambda_mm = L D L^T`` (L unit lower triangular) takes no square
    root and one division per pivot. A row missing one, two or three
    coordinates shares its factor with every row missing the same ones:
    those factors are computed on first use and kept, in tables that the
    caller keeps for every chunk of an E-step (pairs up to PAIR_FEATURES
    features, triples up to TRIPLE_VALUES values). A chunk's rows
    missing three share few of their C(D, 3) blocks, an E-step's share
    most (at D = 16, 14% of the rows of a fit with 10% of
    its entries missing miss three, 25 rows per block and E-step).
    ``log det Lambda_mm`` is the log of the product of the pivots, or
    the sum of their logarithms where the product would leave the range
    of float64. A pivot that is not positive (a precision singular to
    rounding, which the whitened path handles) gives a non-finite value.
    """
    n_features, n_precisions = precisions.shape[1], precisions.shape[2]
    n_components = quadratic.shape[1]
    largest = 0
    for p in range(members.shape[0]):
        largest = max(largest, starts[p + 1] - starts[p])
    largest = max(largest, 2)
    # The factor of a row: L, the pivots, their reciprocals, (Lambda e)_m
    # and the solves, per component; a shared precision's (lane 0) are
    # copied to every lane.
    lower = np.empty((largest, largest, n_components))
    pivots = np.empty((largest, n_components))
    reciprocals = np.empty((largest, n_components))
    inverse = np.empty((largest, largest, n_precisions))
    products = np.empty((largest, n_components))
    solved = np.empty((largest, n_components))
    determinants = np.empty(n_components)
    pairs = pair_known.shape[0] > 0
    if n_precisions > 1:
        entry_products = _entry_products(
            precisions, rows, members, starts, coordinates, slots, gathered
        )
    else:
        entry_products = np.empty((0, n_precisions))
    # The least quadratic, and whether one is NaN (see Returns).
    least = 0.0
    unordered = False
    for p in range(members.shape[0]):
        row = members[p]
        first = starts[p]
        size = starts[p + 1] - first
        if size == 0:
            for k in range(n_components):
                quadratic[row, k] = 0.0
                log_det[row, k] = 0.0
                corrections[row, k] = 0.0
            continue
        cell = block_starts[p]
        # (Lambda e)_m: the part of g every component with this precision
        # shares.
        for a in range(size):
            ja = coordinates[first + a]
            if n_precisions == 1:
                total = 0.0
                for j in range(n_features):
                    total += precisions[ja, j, 0] * rows[row, j]
                for k in range(n_components):
                    products[a, k] = total
            else:
                for q in range(n_precisions):
                    products[a, q] = entry_products[first + a, q]
        j0 = coordinates[first]
        shared = n_precisions < n_components
        if size <= 2 and (size == 1 or pairs):
            if not single_known[j0]:
                _factor_single(precisions, j0, single)
                single_known[j0] = True
            if size == 1:
                for q in range(n_precisions):
                    covariance[cell, q] = single[j0, 0, q]
                for k in range(n_components):
                    q = 0 if shared else k
                    reciprocals[0, k] = single[j0, 0, q]
                    determinants[k] = single[j0, 1, q]
            else:
                j1 = coordinates[first + 1]
                if not pair_known[j0, j1]:
                    _factor_pair(precisions, j0, j1, single, pair)
                    pair_known[j0, j1] = True
                for q in range(n_precisions):
                    covariance[cell, q] = pair[j0, j1, 3, q]
                    covariance[cell + 1, q] = pair[j0, j1, 4, q]
                    covariance[cell + 2, q] = pair[j0, j1, 4, q]
                    covariance[cell + 3, q] = pair[j0, j1, 5, q]
                for k in range(n_components):
                    q = 0 if shared else k
                    reciprocals[0, k] = single[j0, 0, q]
                    reciprocals[1, k] = pair[j0, j1, 1, q]
                    lower[1, 0, k] = pair[j0, j1, 0, q]
                    determinants[k] = pair[j0, j1, 2, q]
        elif size == 3 and triples.shape[0] > 0:
            j1, j2 = coordinates[first + 1], coordinates[first + 2]
            t = j2 * (j2 - 1) * (j2 - 2) // 6 + j1 * (j1 - 1) // 2 + j0
            if not triple_known[t]:
                # Computed and kept, once per E-step.
                _factor(
                    precisions,
                    coordinates,
                    first,
                    size,
                    lower,
                    pivots,
                    reciprocals,
                    inverse,
                    determinants,
                    covariance,
                    cell,
                    n_precisions,
                )
                for q in range(n_precisions):
                    for a in range(3):
                        triples[t, a, q] = reciprocals[a, q]
                    triples[t, 3, q] = lower[1, 0, q]
                    triples[t, 4, q] = lower[2, 0, q]
                    triples[t, 5, q] = lower[2, 1, q]
                    triples[t, 6, q] = determinants[q]
                    for c in range(9):
                        triples[t, 7 + c, q] = covariance[cell + c, q]
                triple_known[t] = True
            else:
                for c in range(9):
                    for q in range(n_precisions):
                        covariance[cell + c, q] = triples[t, 7 + c, q]
            for k in range(n_components):
                q = 0 if shared else k
                for a in range(3):
                    reciprocals[a, k] = triples[t, a, q]
                lower[1, 0, k] = triples[t, 3, q]
                lower[2, 0, k] = triples[t, 4, q]
                lower[2, 1, k] = triples[t, 5, q]
                determinants[k] = triples[t, 6, q]
        else:
            _factor(
                precisions,
                coordinates,
                first,
                size,
                lower,
                pivots,
                reciprocals,
                inverse,
                determinants,
                covariance,
                cell,
                n_precisions,
            )
            if shared:
                # One shared precision: lane 0 to every lane.
                for k in range(1, n_components):
                    determinants[k] = determinants[0]
                    for a in range(size):
                        reciprocals[a, k] = reciprocals[a, 0]
                        for c in range(a):
                            lower[a, c, k] = lower[a, c, 0]
        # g = (Lambda e)_m - (Lambda d)_m; y = L^-1 g; the form y^T D^-1 y;
        # the step Lambda_mm^-1 g = L^-T D^-1 y.
        group = groups[row]
        for k in range(n_components):
            quadratic[row, k] = 0.0
            log_det[row, k] = determinants[k]
        for a in range(size):
            ja = coordinates[first + a]
            for k in range(n_components):
                solved[a, k] = products[a, k] - weighted_shifts[group, ja, k]
            for c in range(a):
                for k in range(n_components):
                    solved[a, k] -= lower[a, c, k] * solved[c, k]
            for k in range(n_components):
                quadratic[row, k] -= solved[a, k] * solved[a, k] * reciprocals[a, k]
        for a in range(size - 1, -1, -1):
            for k in range(n_components):
                solved[a, k] *= reciprocals[a, k]
            for c in range(a + 1, size):
                for k in range(n_components):
                    solved[a, k] -= lower[c, a, k] * solved[c, k]
            for k in range(n_components):
                fill[first + a, k] = -solved[a, k]
        if log_density:
            constant = HALF_LOG_2PI * size
            for k in range(n_components):
                value = (quadratic[row, k] + log_det[row, k]) * -0.5
                corrections[row, k] = value + constant
        else:
            for k in range(n_components):
                corrections[row, k] = scale * quadratic[row, k]
        for k in range(n_components):
            form = quadratic[row, k]
            least = form if form < least else least
            unordered |= form != form
    return np.nan if unordered else least


HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))


@numba.njit(**_JIT)
def _entry_products(precisions, rows, members, starts, coordinates, slots, gathered):
    """``(Lambda_k e)_j`` of every missing entry j of every row, (entries, K).

    By coordinate: the rows missing j, gathered into ``gathered`` (entries,
    D) in the order by coordinate, then position (entry e at ``slots[e]``,
    set here), times the rows j of the precisions, one matrix product
    (BLAS) per coordinate: a product's few components (K = 8) and
    coordinates (D = 16) are too short for a compiled loop to keep its
    sums in registers. The statistics reuse the gathered rows (see
    :func:`conditional_statistics`).
    """
    n_features, n_precisions = precisions.shape[1], precisions.shape[2]
    n_entries = coordinates.shape[0]
    stops = _slots(coordinates, n_features, slots)
    for p in range(members.shape[0]):
        source = rows[members[p]]
        for e in range(starts[p], starts[p + 1]):
            target = gathered[slots[e]]
            for i in range(n_features):
                target[i] = source[i]
    sums = np.empty((n_entries, n_precisions))
    first = 0
    for j in range(n_features):
        stop = stops[j]
        if stop > first:
            np.dot(gathered[first:stop], precisions[j], sums[first:stop])
        first = stop
    products = np.empty((n_entries, n_precisions))
    for e in range(n_entries):
        slot = slots[e]
        for q in range(n_precisions):
            products[e, q] = sums[slot, q]
    return products


@numba.njit(inline="always", **_JIT)
def _slots(coordinates, n_features, slots):
    """Each entry's place in the order by coordinate, then position.

    Into ``slots`` (a counting sort); returns where each coordinate's
    entries stop in that order.
    """
    stops = np.zeros(n_features, dtype=np.intp)
    for e in range(coordinates.shape[0]):
        stops[coordinates[e]] += 1
    total = 0
    for j in range(n_features):
        count = stops[j]
        stops[j] = total
        total += count
    for e in range(coordinates.shape[0]):
        j = coordinates[e]
        slots[e] = stops[j]
        stops[j] += 1
    return stops


# Rows missing three coordinates keep their factors from chunk to chunk in a
# (C(D, 3), TRIPLE_FIELDS, P) table, where it holds at most this many values
# (8 MB): D = 16 with up to 58 precisions, D = 24 with 15.
TRIPLE_VALUES = 2**20

# Per triple and precision: 1 / pivot (3), L_10, L_20, L_21, log det and the
# row-major 3 x 3 inverse.
TRIPLE_FIELDS = 16


def new_factor_cache(n_features, n_precisions):
    """Empty kept factors for :func:`conditional_blocks`, and which are known.

    ``(single, single_known, pair, pair_known, triples, triple_known)``:
    per coordinate j and precision, ``1 / Lambda_jj`` and its log (D, 2,
    P); per pair ``j0 < j1``, at ``[j0, j1]``, what :func:`_factor_pair`
    writes (D, D, 6, P), none beyond PAIR_FEATURES features; per triple
    ``j0 < j1 < j2``, at ``C(j2, 3) + C(j1, 2) + j0`` (the combinatorial
    number system), 1 / pivot (3), L_10, L_20, L_21, log det and the
    row-major 3 x 3 inverse (C(D, 3), TRIPLE_FIELDS, P), none where there
    would be more than TRIPLE_VALUES values. Valid while the precisions
    stay the same (an E-step), for one thread at a time.
    """
    n_pair = n_features if n_features <= PAIR_FEATURES else 0
    n_triples = math.comb(n_features, 3)
    if n_triples * TRIPLE_FIELDS * n_precisions > TRIPLE_VALUES:
        n_triples = 0
    return (
        np.empty((n_features, 2, n_precisions)),
        np.zeros(n_features, dtype=np.bool_),
        np.empty((n_pair, n_pair, 6, n_precisions)),
        np.zeros((n_pair, n_pair), dtype=np.bool_),
        np.empty((n_triples, TRIPLE_FIELDS, n_precisions)),
        np.zeros(n_triples, dtype=np.bool_),
    )


def gathered_entries(n_entries, n_features, n_precisions):
    """The arrays ``slots`` and ``gathered`` of :func:`conditional_blocks`.

    Empty where P = 1: a shared precision's products are one sum per
    entry, taken in the loop over the rows.
    """
    if n_precisions == 1:
        n_entries = 0
    return np.empty(n_entries, dtype=np.intp), np.empty((n_entries, n_features))


# Rows missing two coordinates keep their factors in a (D, D, 6, P) table up
# to this many features.
PAIR_FEATURES = 64


@numba.njit(inline="always", **_JIT)
def _log_det(product, pivots, size, q):
    """``log det`` from the pivots' product (see conditional_blocks)."""
    lowest = np.inf
    for b in range(size):
        lowest = min(lowest, pivots[b, q])
    if lowest <= 0.0:
        return np.log(lowest)  # -inf or NaN
    if 1e-300 < product < 1e300:
        return np.log(product)
    total = 0.0
    for b in range(size):
        total += np.log(pivots[b, q])
    return total


@numba.njit(inline="always", **_JIT)
def _factor_single(precisions, j, single):
    """The factor of ``Lambda_jj``: its reciprocal and log, per precision."""
    for q in range(precisions.shape[2]):
        pivot = precisions[j, j, q]
        single[j, 0, q] = 1.0 / pivot
        single[j, 1, q] = np.log(pivot)  # -inf or NaN where not positive


@numba.njit(inline="always", **_JIT)
def _factor_pair(precisions, j0, j1, single, pair):
    """The factor and inverse of the 2 x 2 block of ``j0 < j1``, per precision.

    Into ``pair[j0, j1]``: L_10, 1 / pivot_1, log det, and the inverse's
    (0, 0), (0, 1) and (1, 1); ``single[j0]`` holds the first pivot's.
    """
    for q in range(precisions.shape[2]):
        first = precisions[j0, j0, q]
        factor = precisions[j1, j0, q] * single[j0, 0, q]
        second = precisions[j1, j1, q] - factor * factor * first
        reciprocal = 1.0 / second
        pair[j0, j1, 0, q] = factor
        pair[j0, j1, 1, q] = reciprocal
        if first <= 0.0 or second <= 0.0:
            pair[j0, j1, 2, q] = np.log(min(first, second))  # -inf or NaN
        elif 1e-300 < first * second < 1e300:
            pair[j0, j1, 2, q] = np.log(first * second)
        else:
            pair[j0, j1, 2, q] = np.log(first) + np.log(second)
        # M = L^-1 = [[1, 0], [-l, 1]]; the inverse M^T D^-1 M.
        pair[j0, j1, 3, q] = single[j0, 0, q] + factor * factor * reciprocal
        pair[j0, j1, 4, q] = -factor * reciprocal
        pair[j0, j1, 5, q] = reciprocal


@numba.njit(**_JIT)
def _factor(
    precisions,
    coordinates,
    first,
    size,
    lower,
    pivots,
    reciprocals,
    inverse,
    determinants,
    covariance,
    cell,
    n_precisions,
):
    """``L D L^T`` of one row's block, its log det and inverse, per precision.

    The row's missing coordinates are ``coordinates[first:first + size]``.
    Writes lanes ``q < P`` of the work arrays and the row-major inverse
    into ``covariance[cell:cell + size * size]``; ``n_precisions`` is P,
    1 for a shared precision. One compiled function, not inlined: inlined
    at its two call sites, and once more per lane count so that a shared
    precision's code had no loops over the lanes, it made numba's first
    compilation of :func:`conditional_blocks` take 26 s instead of 9.5 s
    (cold cache, this machine), for no measurable speed.
    """
    for q in range(n_precisions):
        determinants[q] = 1.0
    for b in range(size):
        jb = coordinates[first + b]
        for q in range(n_precisions):
            pivots[b, q] = precisions[jb, jb, q]
        for c in range(b):
            for q in range(n_precisions):
                pivots[b, q] -= lower[b, c, q] * lower[b, c, q] * pivots[c, q]
        for q in range(n_precisions):
            reciprocals[b, q] = 1.0 / pivots[b, q]
            determinants[q] *= pivots[b, q]
        for a in range(b + 1, size):
            ja = coordinates[first + a]
            for q in range(n_precisions):
                lower[a, b, q] = precisions[ja, jb, q]
            for c in range(b):
                for q in range(n_precisions):
                    lower[a, b, q] -= lower[a, c, q] * lower[b, c, q] * pivots[c, q]
            for q in range(n_precisions):
                lower[a, b, q] *= reciprocals[b, q]
    for q in range(n_precisions):
        determinants[q] = _log_det(determinants[q], pivots, size, q)
    # Lambda_mm^-1 = M^T D^-1 M with M = L^-1 (unit lower triangular).
    for b in range(size):
        for a in range(b + 1, size):
            for q in range(n_precisions):
                inverse[a, b, q] = -lower[a, b, q]
            for c in range(b + 1, a):
                for q in range(n_precisions):
                    inverse[a, b, q] -= lower[a, c, q] * inverse[c, b, q]
    for a in range(size):
        for b in range(a + 1):
            at = cell + a * size + b
            for q in range(n_precisions):
                covariance[at, q] = reciprocals[a, q] * (
                    inverse[a, b, q] if a > b else 1.0
                )
            for c in range(a + 1, size):
                for q in range(n_precisions):
                    covariance[at, q] += (
                        inverse[c, a, q] * reciprocals[c, q] * inverse[c, b, q]
                    )
            if a > b:
                for q in range(n_precisions):
                    covariance[cell + b * size + a, q] = covariance[at, q]


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
    log_det,
    slots,
    gathered,
    first,
    second,
):
    """What completes the kernel's sums of the filled rows, into zeros.

    With ``delta`` the fill (conditional mean minus the center) on a row's
    missing coordinates and 0 elsewhere: ``sum w r delta`` into ``first``
    (D, K) and ``sum w r (e delta^T + delta e^T + delta delta^T + Cov)``
    into ``second`` (D, D, K), component last, both 0 on entry (the sums
    of the missing blocks are taken above the diagonal, then mirrored),
    for ``weighted_resp`` (n, K), component last, and the arrays of
    :func:`conditional_blocks` (``slots`` and ``gathered`` empty
    where it left them so). A ``second`` of shape (D, D, 1) receives
    the sum over the components instead: a precision shared by every
    component (tied) is estimated from the pooled sum alone, which takes
    one product per missing entry and coordinate,
    not K. Returns the sums ``sum w r s`` and ``sum w r log det
    Lambda_mm`` of the entropy.
    """
    n_components = weighted_resp.shape[1]
    n_precisions = covariance.shape[1]
    n_features = rows.shape[1]
    n_lanes = second.shape[2]
    # sum w r delta_a e^T, by the coordinate a: transposed into second.
    # The component is the middle axis, so that the innermost loop runs
    # over the D coordinates of e: a loop over a few components (K = 8)
    # is too short for the compiler to vectorize.
    cross = np.zeros((n_features, n_lanes, n_features))
    # Where the rows are gathered by coordinate, the cross sums are one
    # matrix product (BLAS) per coordinate, of these weights and the rows.
    products = n_lanes > 1 and gathered.shape[0] == coordinates.shape[0]
    entry_weights = np.empty((coordinates.shape[0] if products else 0, n_lanes))
    weights = np.empty(n_components)
    weighted = np.empty(n_components)
    missing_mass = 0.0
    log_det_mass = 0.0
    for p in range(members.shape[0]):
        row = members[p]
        start = starts[p]
        size = starts[p + 1] - start
        cell = block_starts[p]
        row_mass = 0.0
        for k in range(n_components):
            weights[k] = weighted_resp[row, k]
            row_mass += weights[k]
            missing_mass += weights[k] * size
            log_det_mass += weights[k] * log_det[row, k]
        for a in range(size):
            ja = coordinates[start + a]
            pooled = 0.0
            for k in range(n_components):
                weighted[k] = weights[k] * fill[start + a, k]
                first[ja, k] += weighted[k]
                pooled += weighted[k]
            if n_lanes == 1:
                for j in range(n_features):
                    cross[ja, 0, j] += pooled * rows[row, j]
            elif products:
                slot = slots[start + a]
                for k in range(n_components):
                    entry_weights[slot, k] = weighted[k]
            else:
                for k in range(n_components):
                    weight = weighted[k]
                    for j in range(n_features):
                        cross[ja, k, j] += weight * rows[row, j]
            for b in range(a, size):
                jb = coordinates[start + b]
                at = cell + a * size + b
                if n_lanes == 1:
                    # Pooled: sum_k w r delta_a delta_b + Cov_ab sum_k w r
                    # (one covariance shared by the components).
                    value = 0.0
                    for k in range(n_components):
                        value += weighted[k] * fill[start + b, k]
                    value += row_mass * covariance[at, 0]
                    second[ja, jb, 0] += value
                elif n_precisions == 1:
                    shared = covariance[at, 0]
                    for k in range(n_components):
                        value = weighted[k] * fill[start + b, k]
                        value += weights[k] * shared
                        second[ja, jb, k] += value
                else:
                    for k in range(n_components):
                        value = weighted[k] * fill[start + b, k]
                        value += weights[k] * covariance[at, k]
                        second[ja, jb, k] += value
    if products:
        # The entries are in entry_weights and gathered by coordinate.
        counts = np.zeros(n_features, dtype=np.intp)
        for e in range(coordinates.shape[0]):
            counts[coordinates[e]] += 1
        following = 0
        for j in range(n_features):
            stop = following + counts[j]
            if stop > following:
                np.dot(
                    entry_weights[following:stop].T, gathered[following:stop], cross[j]
                )
            following = stop
    # Below the diagonal, the same sums as above it (second starts at 0).
    for i in range(n_features):
        for j in range(i):
            for k in range(n_lanes):
                second[i, j, k] = second[j, i, k]
    for i in range(n_features):
        for j in range(n_features):
            for k in range(n_lanes):
                second[i, j, k] += cross[i, k, j] + cross[j, k, i]
    return missing_mass, log_det_mass


# The position of a 64-bit word's only set bit: its product with this de
# Bruijn sequence has a distinct top 6 bits for each position (Leiserson,
# Prokop & Randall 1998, "Using de Bruijn sequences to index a 1 in a
# computer word").
_DE_BRUIJN = np.uint64(0x022FDD63CC95386D)
_BIT_POSITIONS = np.zeros(64, dtype=np.intp)
for _j in range(64):
    _BIT_POSITIONS[((int(_DE_BRUIJN) << _j) & (2**64 - 1)) >> 58] = _j
del _j


@numba.njit(**_JIT)
def incomplete_rows(chunk, center, centered):
    """A chunk's rows with missing entries, ordered by their number of them.

    ``chunk`` (m, D) holds the rows, NaN where missing; ``centered`` (D, m)
    their kernel rows ``x - c`` for the ``center`` c, set here to 0 at the
    missing entries (the rows filled in with the center). One pass over
    the chunk replaces the mask, the counts, the (stable) sort by count
    and the gathers of the NumPy path, with the same rows in the same
    order. Returns ``(columns, starts, block_starts, coordinates, rows)``:
    the incomplete rows' indices into the chunk (by count, then index),
    where each one's entries start and end (n + 1,), where its s x s
    block starts, each entry's coordinate (increasing within a row), and
    the rows' ``e = x - c`` (n, D), 0 at the missing entries.
    """
    n_rows, n_features = chunk.shape
    counts = np.empty(n_rows, dtype=np.intp)
    histogram = np.zeros(n_features + 1, dtype=np.intp)
    for i in range(n_rows):
        count = 0
        for j in range(n_features):
            count += np.isnan(chunk[i, j])
        counts[i] = count
        histogram[count] += 1
    # A counting sort: the rows missing s entries follow those missing fewer.
    n_incomplete = n_rows - histogram[0]
    following = np.empty(n_features + 1, dtype=np.intp)
    position = 0
    n_entries = 0
    for size in range(1, n_features + 1):
        following[size] = position
        position += histogram[size]
        n_entries += size * histogram[size]
    columns = np.empty(n_incomplete, dtype=np.intp)
    for i in range(n_rows):
        size = counts[i]
        if size > 0:
            columns[following[size]] = i
            following[size] += 1
    starts = np.empty(n_incomplete + 1, dtype=np.intp)
    block_starts = np.empty(n_incomplete, dtype=np.intp)
    coordinates = np.empty(n_entries, dtype=np.intp)
    rows = np.empty((n_incomplete, n_features))
    entry = 0
    cell = 0
    for p in range(n_incomplete):
        i = columns[p]
        starts[p] = entry
        block_starts[p] = cell
        cell += counts[i] * counts[i]
        # x - c as the kernel's rows hold it, 0 where missing: the
        # differences in one loop (vectorized), the missing entries after,
        # from a bit mask of them (up to 64 features): one pass per missing
        # entry, where a branch per entry on a NaN at random was
        # mispredicted about as often as taken.
        source = chunk[i]
        target = rows[p]
        for j in range(n_features):
            target[j] = source[j] - center[j]
        if n_features <= 64:
            bits = np.uint64(0)
            for j in range(n_features):
                bits |= np.uint64(np.isnan(source[j])) << np.uint64(j)
            while bits != np.uint64(0):
                lowest = bits & (~bits + np.uint64(1))
                j = _BIT_POSITIONS[np.intp((lowest * _DE_BRUIJN) >> np.uint64(58))]
                coordinates[entry] = j
                entry += 1
                centered[j, i] = 0.0
                target[j] = 0.0
                bits ^= lowest
        else:
            for j in range(n_features):
                if np.isnan(source[j]):
                    coordinates[entry] = j
                    entry += 1
                    centered[j, i] = 0.0
                    target[j] = 0.0
    starts[n_incomplete] = entry
    return columns, starts, block_starts, coordinates, rows


@numba.njit(**_JIT)
def add_to_columns(values, columns, corrections):
    """``values[:, columns] += corrections.T`` for (K, m) and (n, K), in place."""
    for p in range(columns.shape[0]):
        column = columns[p]
        for k in range(values.shape[0]):
            values[k, column] += corrections[p, k]


@numba.njit(**_JIT)
def pattern_rows(chunk, center, centered, columns, starts, coordinates):
    """:func:`incomplete_rows`' rows ``e`` for a pattern it found before.

    ``(columns, starts, coordinates)`` as it returned them for a chunk
    with the same missing entries; ``centered`` gets 0 at those entries.
    Returns the rows ``e = x - c`` (n, D), 0 at the missing entries.
    """
    n_features = chunk.shape[1]
    rows = np.empty((columns.shape[0], n_features))
    for p in range(columns.shape[0]):
        i = columns[p]
        source = chunk[i]
        target = rows[p]
        for j in range(n_features):
            target[j] = source[j] - center[j]
        for e in range(starts[p], starts[p + 1]):
            j = coordinates[e]
            centered[j, i] = 0.0
            target[j] = 0.0
    return rows
