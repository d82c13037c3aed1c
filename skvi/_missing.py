"""Missing entries: the exact corrections for rows with NaN.

A missing entry is one more latent variable (Ghahramani & Jordan 1994): for
component k the optimal q(x_m | z = k) is the conditional Gaussian of the
missing coordinates m given the observed ones o, the E-step weighs
components by the observed marginal N(x_o | mu_o, Sigma_oo), and the
statistics use E[x | x_o, k] and E[x x^T | x_o, k]. The variational model is
the same with mu_k = m_k and Lambda_k = E[Lambda_k] (the optimal factor of
x_m under q(mu, Lambda) is the conditional of N(m_k, E[Lambda_k]^-1)).

The E-step kernel (skvi._kernel) expands every row about a center c. A row
with missing entries enters it with e_m = 0: as the row filled in with the
center's coordinates, whose values and statistics the kernel computes as
for any complete row. This module corrects both, per row and component, in
the precision form, which needs only the s x s block of the s missing
coordinates (usually 1-3), never the observed block or a pattern's own
factorisation. With Lambda = Lambda_k and z = (filled row) - mu_k, the
observed part z_o is fixed and the form is least over z_m where its
gradient g = (Lambda z)_m vanishes:

    g                 = (Lambda z)_m
    min_{x_m} (x - mu)^T Lambda (x - mu) = z^T Lambda z - g^T Lambda_mm^-1 g
                      = (x_o - mu_o)^T Sigma_oo^-1 (x_o - mu_o)
    E[x_m | x_o, k]   = c_m - Lambda_mm^-1 g    (= mu_m - Lambda_mm^-1 Lambda_mo z_o)
    Cov[x_m | x_o, k] = Lambda_mm^-1
    log N(x_o | mu_o, Sigma_oo)
          = -(D - s)/2 log 2 pi + log det(Lambda)/2 - log det(Lambda_mm)/2
            - min_{x_m} (x - mu)^T Lambda (x - mu) / 2.

The second line is the Schur-complement identity: the inverse of the
marginal covariance Sigma_oo is the Schur complement Lambda_oo - Lambda_om
Lambda_mm^-1 Lambda_mo, and det(Lambda) = det(Lambda_mm) det(Sigma_oo^-1)
(e.g. Bishop 2006, section 2.3.1-2.3.2, eqs. 2.69-2.82; Petersen & Pedersen,
The Matrix Cookbook, section 9.1). The kernel's value of the filled row is
the first term; this module adds ``-g^T Lambda_mm^-1 g`` (scaled), the
log-determinant and the 2 pi terms.

Rows are batched by s (the kernel hands them over ordered by s, see
:func:`incomplete_columns`, so that each batch and its missing entries are
one slice): Lambda_mm (gathered from the precisions), its inverse and
log-determinant (closed forms up to SMALL_BLOCK, entry by entry over the
batch or LAPACK beyond, shared between rows of one pattern) and every
product are arrays over the (component, row) pairs of a batch. The
gradients g of all entries come from one small product per coordinate j
(the rows missing j times the rows j of the precisions), never the whole
``Lambda_k e``. Statistics: with one shared center the kernel's sums keep
these rows as filled in with it, and the corrections ``sum w r [1, e]
delta^T`` (delta = conditional mean - c on the missing coordinates; one
product per coordinate) and ``sum w r (delta delta^T + Cov)`` on the
missing blocks (over the pairs a <= b of each row's entries, one weighted
bincount per component) complete them, all about the center, the reference
every complete row's moments are taken about too. The entropy the ELBO
gains, that of q(x_m | z = k), is ``s (1 + log 2 pi) / 2 - log
det(Lambda_mm) / 2``.

**Compiled corrections.** In NumPy the s x s algebra of full and tied
precisions is about 40 array operations per batch of rows with the same s,
300-400 ns per row and component, several times a complete row's whole
cost in the kernel. Where numba is importable, :meth:`IncompleteRows.
_compiled_blocks` runs it instead as one compiled loop over rows and
components (skvi._missing_numba: ``Lambda_mm = L D L^T``, the solves, the
log-determinant, the inverse, the fills, the value corrections and then
the statistics' corrections and the entropy's sums), with the same
formulas and results equal to the rounding of their sums (the tests
compare both paths on the same data). numba is an optional dependency
(the ``fast`` extra): it is the established JIT compiler of numerical
Python, and a compiled extension of our own would need a build step
and wheels per platform for one loop. It is imported on the first chunk
with at least :data:`COMPILED_PAIRS` (row, component) pairs of incomplete
rows, never with skvi, so skvi's import, complete-data fits and small fits
do not pay for it; without it, or with the environment variable
``SKVI_NUMBA=0`` (or :data:`USE_NUMBA` set to False), the NumPy path
below serves, with the same results; so it does in the tasks of Dask's
distributed workers, whose memory the nanny budgets. Diagonal precisions
need no block algebra (every correction is a product with the mask) and
stay in NumPy, as does the whitened frame. Once loaded, the kernels also
find a chunk's incomplete rows (:meth:`IncompleteRows.scanned`: one pass
for the counts, the order by count, the coordinates and the rows, in
place of the mask and NumPy's gathers, with the same rows in the same
order) and add the values' corrections in place; a precision shared by
the components (tied) gets its statistics' second moments pooled over
them, all its M-step reads. The missing entries of rows held in memory
stay the same for a whole fit: :class:`FoundPatterns` keeps what the first
E-step's scan found per chunk, and later E-steps only compute the rows
about their center.

Where the kernel whitens (an ill-conditioned precision, see
``skvi._kernel.WHITENING_LIMIT``), the Schur complement and the
Lambda_mm solves lose the digits of the condition number: the rows are
then evaluated in the whitened frame instead, from the QR factors of the
missing rows of the Cholesky factor (:meth:`IncompleteRows.
_add_whitened_block`), and add their whitened moments for the bound.

References: Z. Ghahramani, M. Jordan (1994), Supervised learning from
incomplete data via an EM approach, NIPS 6 (the E-step's conditional
moments E[x | x_o, k] and E[x x^T | x_o, k]); C. Bishop (2006), Pattern
Recognition and Machine Learning, section 2.3 (partitioned Gaussians).
"""

import functools
import os
import sys
import threading

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def has_missing(chunk):
    """Whether a chunk may have NaN entries.

    A sum is NaN exactly when an entry is (the data are otherwise finite),
    which costs far less than building the mask for every chunk.
    """
    return bool(np.isnan(np.sum(chunk)))


def missing_mask(chunk, checked=False):
    """The (m, D) mask of NaN entries, or None when there is none.

    ``checked``: :func:`has_missing` said the chunk may have some.
    """
    if not checked and not has_missing(chunk):
        return None
    mask = np.isnan(chunk)
    return mask if mask.any() else None


def incomplete_columns(plan, mask):
    """The rows of a chunk with missing entries, and their numbers of them.

    So ordered, each number's rows are one slice of IncompleteRows' arrays.
    Rows about local centers keep their order (sorted by center), and
    diagonal precisions need no order. With diagonal precisions about one
    center and many missing entries, ``slice(None)``: every row, complete
    ones included (their corrections are products with a zero mask row,
    exactly 0), which costs less than gathering the incomplete ones.
    Returns ``(columns, counts)``: the counts of those rows (None with
    ``slice(None)``), for :class:`IncompleteRows`.
    """
    if (
        plan.n_groups == 1
        and plan.unit.diagonal_precision
        and np.count_nonzero(mask) >= ALL_ROWS_ENTRIES * mask.shape[0]
        and _finite_diagonal_terms(plan)
    ):
        return slice(None), None
    counts = _counts(mask)
    if plan.n_groups > 1 or plan.unit.diagonal_precision:
        columns = np.flatnonzero(counts)
    else:
        order = np.argsort(counts, kind="stable")  # a radix sort of small integers
        columns = order[np.count_nonzero(counts == 0) :]
    return columns, counts[columns]


class FoundPatterns:
    """The missing entries of a fit's chunks, found once by the compiled scan.

    The missing entries of rows held in memory stay the same for a whole
    fit, while the compiled scan (skvi._missing_numba.incomplete_rows)
    would find them again in every E-step: it keeps, per chunk, which rows
    miss which coordinates, and later E-steps only compute the rows'
    ``e = x - c`` about their plan's center (``pattern_rows``), with the
    same results. At most ``budget`` bytes are kept; chunks beyond it are
    scanned every time.

    Parameters
    ----------
    budget : int
        The most bytes kept.
    """

    def __init__(self, budget):
        self._found = {}
        self._budget = budget
        self._lock = threading.Lock()

    def for_rows(self, rows):
        """What :meth:`IncompleteRows.scanned` asks for the chunk ``X[rows]``."""
        return _ChunkPatterns(self, (rows.start, rows.stop, rows.step))

    def incomplete_rows(self, key, kernels, chunk, center, centered):
        """``kernels.incomplete_rows(chunk, center, centered)``, found once."""
        found = self._found.get(key)
        if found is not None:
            columns, starts, block_starts, coordinates = found
            rows = kernels.pattern_rows(
                chunk, center, centered, columns, starts, coordinates
            )
            return columns, starts, block_starts, coordinates, rows
        result = kernels.incomplete_rows(chunk, center, centered)
        size = sum(array.nbytes for array in result[:4])
        with self._lock:
            if size <= self._budget and key not in self._found:
                self._found[key] = result[:4]
                self._budget -= size
        return result


class _ChunkPatterns:
    """One chunk's entry in :class:`FoundPatterns`."""

    def __init__(self, patterns, key):
        self._patterns, self._key = patterns, key

    def incomplete_rows(self, kernels, chunk, center, centered):
        return self._patterns.incomplete_rows(
            self._key, kernels, chunk, center, centered
        )


def _finite_diagonal_terms(plan):
    """Whether every per-coordinate term of diagonal precisions is finite.

    Then a complete row's corrections, products of the terms with its zero
    mask row, are exactly 0 (an infinite term would make them NaN). Kept
    on the plan: every chunk asks.
    """
    finite = plan.__dict__.get("_finite_diagonal_terms")
    if finite is None:
        diagonals = plan.unit.precision_diagonals(plan.precisions)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            terms = (diagonals * plan.shifts**2, 1.0 / diagonals, np.log(diagonals))
        finite = all(bool(np.all(np.isfinite(term))) for term in terms)
        plan.__dict__["_finite_diagonal_terms"] = finite
    return finite


class IncompleteRows:
    """The corrections of a chunk's rows with missing entries.

    Parameters
    ----------
    plan : Expansion
        The values' plan (means, precisions, centers of the groups).
    rows : ndarray of shape (n, D)
        The incomplete rows, NaN where missing.
    centered : ndarray of shape (D, n)
        Their kernel rows: ``x - c`` with 0 at the missing entries.
    mask : ndarray of shape (n, D)
        True at the missing entries.
    groups : ndarray of shape (n,) or None
        The center each row was expanded about (None: all about the first).
    n_missing : ndarray of shape (n,) or None
        The number of missing entries of each row, where known.

    Attributes
    ----------
    quadratic : ndarray of shape (K, n)
        ``quad_o - z^T Lambda z``: what turns the filled row's quadratic
        form into that of its observed coordinates.
    log_det : ndarray of shape (K, n)
        ``log det Lambda_mm``.
    n_missing : ndarray of shape (n,)
    """

    def __init__(self, plan, rows, centered, mask, groups=None, n_missing=None):
        self._setup(plan, rows, centered, mask, groups, n_missing)
        if plan.unit.diagonal_precision:
            self._diagonal_corrections(plan)
        else:
            self._build_blocks(plan)

    @classmethod
    def scanned(cls, plan, chunk, centered, kernels, patterns=None):
        """The incomplete rows of a chunk found by the compiled scan.

        Returns ``(columns, corrections)``, or None where the chunk has no
        missing entry; ``centered`` (D, m) gets 0 at the missing entries.
        The same rows in the same order as :func:`incomplete_columns` with
        :func:`missing_mask`, and the same corrections: by the compiled
        kernels from :data:`COMPILED_PAIRS` (row, component) pairs on, as
        for any chunk, else by the NumPy path. For full and tied
        precisions about one center, float64 rows and a plan not
        whitened, once the kernels are loaded (see :func:`scan_kernels`).
        The mask, the rows and their kernel rows are then gathered only
        where a less common path asks for them. ``patterns``: the chunk's
        :meth:`FoundPatterns.for_rows`, which keeps what the scan found.
        """
        center = plan.centers_work[0]
        if patterns is None:
            found = kernels.incomplete_rows(chunk, center, centered)
        else:
            found = patterns.incomplete_rows(kernels, chunk, center, centered)
        columns, starts, block_starts, coordinates, rows = found
        n_rows = len(columns)
        if n_rows == 0:
            return None
        sizes = np.diff(starts)
        self = cls.__new__(cls)
        self._setup(plan, None, rows.T, None, None, sizes)
        self._shape = (n_rows, chunk.shape[1])
        self._source = (chunk, columns)
        if n_rows * plan.unit.n_components < COMPILED_PAIRS:
            # The NumPy path, on what it would have gathered itself.
            self.rows = chunk[columns]
            self.centered = np.ascontiguousarray(rows.T, dtype=centered.dtype)
            self._build_blocks(plan)
            return columns, self
        self._entry_rows = None
        self._coordinates = coordinates
        members = np.arange(n_rows)
        self._run_compiled(plan, kernels, rows, members, starts, block_starts)
        return columns, self

    def _setup(self, plan, rows, centered, mask, groups, n_missing):
        """The attributes every path sets (see the class docstring)."""
        self._rows = rows
        self._mask = mask
        self._source = None
        self._n_missing = n_missing
        n_rows = None
        for known in (rows, mask):
            if known is not None:
                self._shape = known.shape
                n_rows = known.shape[0]
        if n_rows is None:
            n_rows = len(n_missing)
        if groups is None:
            groups = np.zeros(n_rows, dtype=np.intp)
        self.groups = groups
        self.centered = centered
        # Rows sort by group: each group's rows are one slice.
        if plan.n_groups == 1:
            self._group_slices = [(0, slice(0, n_rows))]
        else:
            present, starts = np.unique(groups, return_index=True)
            stops = np.append(starts[1:], n_rows)
            self._group_slices = [
                (int(g), slice(int(a), int(b)))
                for g, a, b in zip(present, starts, stops, strict=True)
            ]
        self._plan = plan
        self._blocks = None
        # The compiled kernels and their arrays, where they made the blocks.
        self._compiled = None
        # The entropy's sums from the last statistics (compiled kernels).
        self._entropy = None
        self._quadratic = self._log_det = None
        # With one shared center, the kernel's sums keep these rows as
        # filled in with the center (e_m = 0) and statistics() returns what
        # completes them; with local centers they are summed apart.
        self.in_kernel = plan.n_groups == 1
        # The observed forms, where the precisions were whitened.
        self.observed_forms = None

    @property
    def rows(self):
        """The rows (n, D), NaN where missing; gathered on first use."""
        if self._rows is None:
            chunk, columns = self._source
            self._rows = chunk[columns]
        return self._rows

    @rows.setter
    def rows(self, value):
        self._rows = value

    @property
    def mask(self):
        """True at the missing entries (n, D); made on first use."""
        if self._mask is None:
            self._mask = np.isnan(self.rows)
        return self._mask

    @property
    def n_missing(self):
        """The number of missing entries of each row, (n,)."""
        if self._n_missing is None:
            self._n_missing = _counts(self.mask)
        return self._n_missing

    def _build_blocks(self, plan):
        """Per group of rows with the same number s of missing entries."""
        unit = plan.unit
        n_components = unit.n_components
        n_rows, n_features = self._shape
        # For each: the rows, their missing coordinates (in increasing
        # order), the fill (conditional mean minus the center), the
        # conditional covariance of each component and u (see
        # _own_statistics; None where the kernel sums the rows).
        self._blocks = []
        # Rows by their number s of missing entries (incomplete_columns
        # orders them so with one center): each size's rows, and their
        # entries, are then one slice of that order.
        order = None
        if np.any(self.n_missing[1:] < self.n_missing[:-1]):
            order = np.argsort(self.n_missing, kind="stable")
        sizes = self.n_missing if order is None else self.n_missing[order]
        # The missing entries, row after row: their rows and coordinates.
        positions, coordinates = _nonzero(
            self.mask if order is None else self.mask[order]
        )
        self._entry_rows = positions if order is None else order[positions]
        self._coordinates = coordinates
        self._compiled = None
        if not plan.whitened and n_rows * n_components >= COMPILED_PAIRS:
            kernels = compiled_kernels()
            if kernels is not None:
                self._compiled_blocks(plan, kernels, sizes, order, coordinates)
                return
        self.quadratic = np.empty((n_components, n_rows))
        self.log_det = np.empty((n_components, n_rows))
        # The entries by coordinate, each coordinate's one slice, with their
        # rows' [1, e] (float64), for the products and the statistics.
        self._by_coordinate = np.argsort(_small(coordinates), kind="stable")
        counts = np.bincount(coordinates, minlength=n_features)
        stops = np.cumsum(counts)
        self._coordinate_slices = [
            (int(j), slice(int(stops[j] - counts[j]), int(stops[j])))
            for j in np.flatnonzero(counts)
        ]
        self._entry_linear = np.empty((len(coordinates), 1 + n_features))
        self._entry_linear[:, 0] = 1.0
        self._entry_linear[:, 1:] = np.take(
            np.ascontiguousarray(self.centered.T),
            self._entry_rows[self._by_coordinate],
            axis=0,
        )
        # Each entry's fill: its conditional mean minus the row's center.
        self._fill = np.empty((n_components, len(coordinates)))
        self.observed_forms = None
        if plan.whitened:
            factors = np.asarray(
                plan.unit.component_factors(plan.precisions_cholesky), dtype=float
            )
            # y_o = P_k^T (x - mu_k) with the missing coordinates left out.
            z = np.where(
                self.mask, 0.0, self.rows.astype(float) - plan.means[:, np.newaxis]
            )
            observed = np.einsum("knd,kde->kne", z, factors)
            self.observed_forms = np.empty((n_components, n_rows))
            self._residuals = np.empty_like(observed)
            self._bases = []
        else:
            dense = _dense_precisions(unit, plan.precisions)
            gradient = self._gradients(plan, dense, coordinates)
        first_row = first_entry = 0
        for size, n_members in enumerate(np.bincount(sizes)):
            if size == 0:
                # Complete rows, where every row was taken (incomplete_columns).
                first_row += n_members
                continue
            if n_members == 0:
                continue
            rows = slice(first_row, first_row + n_members)
            entries = slice(first_entry, first_entry + n_members * size)
            first_row, first_entry = rows.stop, entries.stop
            members = np.arange(rows.start, rows.stop) if order is None else order[rows]
            missing = coordinates[entries].reshape(n_members, size)
            if plan.whitened:
                self._add_whitened_block(plan, factors, observed, members, missing)
                self._fill[:, entries] = self._blocks[-1][2].reshape(n_components, -1)
                continue
            if order is None:
                members_or_rows = rows
            else:
                members_or_rows = members
            self._add_block(
                plan,
                dense,
                members,
                members_or_rows,
                missing,
                gradient[:, entries].reshape(n_components, n_members, size),
                self._fill[:, entries].reshape(n_components, n_members, size),
            )

    def _compiled_blocks(self, plan, kernels, sizes, order, coordinates):
        """Every row's corrections by the compiled loop (skvi._missing_numba).

        ``sizes`` are the rows' numbers of missing entries in the order of
        ``order`` (None: the rows' own), ``coordinates`` their missing
        coordinates, row after row in that order.
        """
        n_rows = self._shape[0]
        members = np.arange(n_rows) if order is None else order.astype(np.intp)
        sizes = sizes.astype(np.intp)
        starts = np.zeros(n_rows + 1, dtype=np.intp)
        np.cumsum(sizes, out=starts[1:])
        cells = sizes * sizes
        block_starts = np.cumsum(cells) - cells
        # float64 (exact for float32 rows): one compiled signature for both.
        rows = np.ascontiguousarray(self.centered.T, dtype=float)
        self._coordinates = np.ascontiguousarray(coordinates, dtype=np.intp)
        self._run_compiled(plan, kernels, rows, members, starts, block_starts)

    def _run_compiled(self, plan, kernels, rows, members, starts, block_starts):
        """Run the compiled corrections on the rows ``e`` (n, D), float64.

        Position p is row ``members[p]``, its missing coordinates
        ``self._coordinates[starts[p]:starts[p + 1]]`` and its s x s block
        ``block_starts[p]`` on. The kernels keep the component last:
        ``quadratic``, ``log_det`` and the fills are transposed views. Keeps
        the arrays the statistics need, and the same blocks (views) as
        :meth:`_add_block`.
        """
        n_components = plan.unit.n_components
        n_rows = self._shape[0]
        precisions, weighted_shifts = _component_last(plan)
        n_precisions = precisions.shape[-1]
        n_cells = 0
        if len(block_starts):
            n_cells = int(block_starts[-1] + (starts[-1] - starts[-2]) ** 2)
        quadratic = np.empty((n_rows, n_components))
        log_det = np.empty((n_rows, n_components))
        corrections = np.empty((n_rows, n_components))
        fill = np.empty((int(starts[-1]), n_components))
        covariance = np.empty((n_cells, n_precisions))
        gathered = kernels.gathered_entries(
            int(starts[-1]), rows.shape[1], n_precisions
        )
        self._least_quadratic = kernels.conditional_blocks(
            precisions,
            rows,
            members,
            starts,
            self._coordinates,
            np.ascontiguousarray(self.groups, dtype=np.intp),
            weighted_shifts,
            block_starts,
            plan.scale,
            plan.log_density,
            quadratic,
            log_det,
            corrections,
            fill,
            covariance,
            *gathered,
            *_factor_cache(plan, kernels, precisions),
        )
        self.quadratic, self.log_det, self._fill = quadratic.T, log_det.T, fill.T
        self._corrections = corrections.T
        self._entropy = None
        self._compiled = (kernels, rows, members, starts, fill, covariance)
        self._gathered = gathered
        self._block_starts = block_starts
        self._blocks = None  # views, built by _block_list where asked for

    def _block_list(self):
        """The blocks of rows with as many missing entries (see _add_block).

        Each is ``(members, missing, fill, covariance, u)``. Built on first
        use: where the compiled kernels made the corrections, only the
        less common paths (local centers, repairs, conditional moments)
        ask for them, and they are views of the kernels' arrays.
        """
        if self._blocks is not None:
            return self._blocks
        if self._compiled is None:
            # Diagonal precisions build them only here (conditional moments),
            # by either path.
            self._build_blocks(self._plan)
            if self._compiled is None:
                return self._blocks
        plan = self._plan
        n_components = plan.unit.n_components
        _, _, members, starts, _, covariance = self._compiled
        n_precisions = covariance.shape[1]
        sizes = np.diff(starts)
        self._blocks = []
        first_row = 0
        for size, n_members in enumerate(np.bincount(sizes)):
            if size == 0 or n_members == 0:
                first_row += n_members
                continue
            positions = slice(first_row, first_row + n_members)
            first_row = positions.stop
            entries = slice(starts[positions.start], starts[positions.stop])
            block = members[positions]
            missing = self._coordinates[entries].reshape(n_members, size)
            fill = self._fill[:, entries].reshape(n_components, n_members, size)
            cell = self._block_starts[positions.start]
            block_covariance = np.moveaxis(
                covariance[cell : cell + n_members * size * size].reshape(
                    n_members, size, size, n_precisions
                ),
                -1,
                0,
            )
            if n_precisions == 1:
                block_covariance = np.broadcast_to(
                    block_covariance, (n_components,) + block_covariance.shape[1:]
                )
            u = None
            if not self.in_kernel:
                groups = self.groups[block]
                shifts = np.moveaxis(plan.shifts[groups[:, None], :, missing], -1, 0)
                u = shifts - fill
            self._blocks.append((block, missing, fill, block_covariance, u))
        return self._blocks

    def _gradients(self, plan, dense, coordinates):
        """``g = (Lambda_k z)_j`` of every entry (K, entries), z = x - mu_k.

        The filled row has ``z = e - d`` (e = 0 at the missing coordinates,
        d = mu_k - c): ``g = (Lambda_k e)_j - (Lambda_k d)_j``, the first
        from one small product per coordinate j (its precision rows times
        the rows missing it), not the whole ``Lambda_k e``.
        """
        rows = self._entry_linear[:, 1:]
        n_entries = rows.shape[0]
        products = _scratch("products", (n_entries, dense.shape[0]))
        # Lambda_k[j, :] of every component as the columns of one matrix.
        precision_rows = np.ascontiguousarray(np.transpose(dense, (1, 2, 0)))
        for j, part in self._coordinate_slices:
            np.matmul(rows[part], precision_rows[j], out=products[part])
        # Row after row; one row for a precision shared by the components.
        by_row = _scratch("by_row", (dense.shape[0], n_entries))
        by_row[:, self._by_coordinate] = products.T
        gradient = _scratch("gradient", (plan.unit.n_components, n_entries))
        if plan.n_groups == 1:
            np.take(plan.weighted_shifts[0], coordinates, 1, gradient, "clip")
        else:
            groups = self.groups[self._entry_rows]
            gradient[...] = plan.weighted_shifts[groups, :, coordinates].T
        return np.subtract(by_row, gradient, out=gradient)

    def _diagonal_corrections(self, plan):
        """Diagonal precisions: every correction is a product with the mask.

        A missing coordinate is independent of the others given the
        component: its conditional is its marginal (mean mu_j, variance
        1 / lambda_j), and it only drops its own term from the quadratic
        form: ``quad_o - z^T Lambda z = -sum_m lambda_j d_j^2``.
        """
        self._diagonals = plan.unit.precision_diagonals(plan.precisions)  # (K, D)
        self._float_mask = self.mask.astype(float)
        self._mass = None
        # What each missing coordinate drops from the form of the filled
        # row, lambda_j d_j^2, per center: (G, K, D). The values'
        # corrections are one product with the mask (value_corrections);
        # quadratic and log_det are computed only where asked for.
        self._dropped = self._diagonals * plan.shifts**2

    def _missing_mass(self, weighted_resp):
        """``sum w r`` over the rows missing each coordinate, (K, D).

        Kept for the last responsibilities asked about: the statistics and
        the entropy of a chunk both need it.
        """
        if self._mass is None or self._mass[0] is not weighted_resp:
            self._mass = (weighted_resp, weighted_resp @ self._float_mask)
        return self._mass[1]

    def _diagonal_quadratic(self):
        quadratic = np.empty((self._dropped.shape[1], self._shape[0]))
        for g, rows in self._group_slices:
            quadratic[:, rows] = -(self._dropped[g] @ self._float_mask[rows].T)
        return quadratic

    @property
    def quadratic(self):
        """``quad_o - z^T Lambda z`` (K, n), see the class docstring."""
        if self._quadratic is None:
            self._quadratic = self._diagonal_quadratic()
        return self._quadratic

    @quadratic.setter
    def quadratic(self, value):
        self._quadratic = value

    @property
    def log_det(self):
        """``log det Lambda_mm`` (K, n)."""
        if self._log_det is None:
            self._log_det = np.log(self._diagonals) @ self._float_mask.T
        return self._log_det

    @log_det.setter
    def log_det(self, value):
        self._log_det = value

    def _add_block(self, plan, dense, members, rows, missing, gradient, fill):
        """The corrections of the rows ``members`` (or the slice ``rows``).

        ``gradient`` holds their ``g = (Lambda z)_m`` of the filled row's
        ``z = x - mu_k`` (K, n, s); their fills are written into ``fill``.
        """
        covariance, log_det = _inverted_blocks(dense, missing, plan.unit.n_components)
        # The form is least at z_m - Lambda_mm^-1 g, lower by g^T Lambda_mm^-1 g.
        step = _apply(covariance, gradient)
        self.quadratic[:, rows] = -np.einsum("kns,kns->kn", gradient, step)
        self.log_det[:, rows] = log_det
        # The conditional mean is c_m - step: its offset from the row's
        # center is -step, and u = mu_m - E[x_m | x_o, k] = d_m + step.
        np.negative(step, out=fill)
        u = None
        if not self.in_kernel:
            groups = self.groups[members]
            shifts = np.moveaxis(plan.shifts[groups[:, None], :, missing], -1, 0)
            u = shifts + step
        self._blocks.append((members, missing, fill, covariance, u))

    def _add_whitened_block(self, plan, factors, observed, members, missing):
        """The corrections of ill-conditioned precisions, in the whitened frame.

        With ``Lambda = P P^T``, the form is ``|y_o + A z_m|^2`` for
        ``y_o = P_o^T z_o`` and ``A = P_m^T`` (D x s). Its least value over
        z_m is the squared residual of y_o off the columns of A, from the QR
        factors ``A = Q R``: ``z_m = -R^-1 Q^T y_o``, ``Lambda_mm = R^T R``.
        Unlike the precision form (whose Schur complement and Lambda_mm
        solve lose digits in proportion to the condition number of
        Lambda), no term is larger than the vectors it is computed from.
        """
        if plan.n_groups == 1:
            shifts = plan.shifts[0][:, missing]  # d_m = (mu_k - c)_m, (K, n, s)
        else:
            groups = self.groups[members]
            shifts = np.moveaxis(plan.shifts[groups[:, None], :, missing], -1, 0)
        # A for every component and row, (K, n, D, s).
        a = np.swapaxes(factors[:, missing], -1, -2)
        q, r = np.linalg.qr(a)
        y = observed[:, members]
        projected = np.einsum("knds,knd->kns", q, y)
        residual = y - np.einsum("knds,kns->knd", q, projected)
        # Once more: the residual is then orthogonal to A to the last digit.
        again = np.einsum("knds,knd->kns", q, residual)
        residual -= np.einsum("knds,kns->knd", q, again)
        projected += again
        self.observed_forms[:, members] = np.einsum("knd,knd->kn", residual, residual)
        self._residuals[:, members] = residual
        self._bases.append((members, q))
        diagonals = np.abs(np.diagonal(r, axis1=-2, axis2=-1))
        self.log_det[:, members] = 2.0 * np.sum(np.log(diagonals), axis=-1)
        identity = np.broadcast_to(np.eye(missing.shape[1]), r.shape)
        inverse_r = np.linalg.solve(r, identity)  # R^-1, upper triangular
        covariance = inverse_r @ np.swapaxes(inverse_r, -1, -2)
        # z_m = E[x_m | x_o, k] - mu_m: the fill is d_m + z_m, u = -z_m.
        optimum = -np.einsum("knst,knt->kns", inverse_r, projected)
        self._blocks.append((members, missing, shifts + optimum, covariance, -optimum))

    def _empty_rows(self):
        """Which rows have nothing observed, (n,), or None where none has."""
        n_features = self._shape[1]
        if self._mask is None:
            # Scanned rows: their counts are known, their mask is not made.
            empty = self.n_missing == n_features
            return empty if empty.any() else None
        if np.count_nonzero(self.mask) < n_features:
            return None
        if self._n_missing is None and hasattr(self, "_float_mask"):
            # A product with the float mask costs less than counting.
            empty = self._float_mask @ np.ones(n_features) == n_features
        else:
            empty = self.n_missing == n_features
        return empty if empty.any() else None

    def whitened_moments(self, weighted_resp):
        """These rows' whitened moments (skvi._kernel.WhitenedMoments).

        Under q(x_m | z = k) the whitened row ``y = P_k^T (x - mu_k)`` has
        mean ``y_o + A z_m``, the residual of the observed form, and
        covariance ``A Lambda_mm^-1 A^T = Q Q^T``: exact where the scatter
        about the means loses the digits of the condition number.
        Returns ``(masses, first, second)``, or None without the whitened
        frame.
        """
        if self.observed_forms is None:
            return None
        masses = weighted_resp.sum(axis=1)
        first = np.einsum("kn,knd->kd", weighted_resp, self._residuals)
        second = np.einsum(
            "kn,knd,kne->kde", weighted_resp, self._residuals, self._residuals
        )
        for members, q in self._bases:
            second += np.einsum("kn,knds,knes->kde", weighted_resp[:, members], q, q)
        return masses, first, second

    def observed_values(self, plan):
        """The rows' values, (K, n), where the precisions were whitened.

        Computed whole: the kernel's value of the filled row is the form at
        the center's coordinates, which can exceed the observed form by
        more digits than a difference keeps. None otherwise.
        """
        if self.observed_forms is None:
            return None
        values = plan.scale * self.observed_forms + plan.offsets[:, np.newaxis]
        if plan.log_density:
            values += -0.5 * self.log_det + 0.5 * LOG_2PI * self.n_missing
        return values

    def conditional_moments(self, plan):
        """Per group of rows with as many missing entries: the conditionals.

        Yields ``(members, missing, means, covariances)``: the rows (indices
        into these incomplete rows), their missing coordinates (n_s, s), and
        per component the mean (K, n_s, s) and covariance (K, n_s, s, s) of
        the missing entries given the observed ones.
        """
        for members, missing, fill, cov, _ in self._block_list():
            centers = plan.centers[self.groups[members][:, np.newaxis], missing]
            yield members, missing, fill + centers, cov

    def value_corrections(self, plan):
        """What to add to the kernel's values of the filled rows, (K, n)."""
        if plan.unit.diagonal_precision:
            # Per missing coordinate: -scale lambda_j d_j^2, and for a
            # density (log 2 pi - log lambda_j) / 2.
            coefficients = -plan.scale * self._dropped
            if plan.log_density:
                coefficients += 0.5 * (LOG_2PI - np.log(self._diagonals))
            if len(self._group_slices) == 1:
                return coefficients[self._group_slices[0][0]] @ self._float_mask.T
            corrections = np.empty((coefficients.shape[1], self._shape[0]))
            for g, rows in self._group_slices:
                corrections[:, rows] = coefficients[g] @ self._float_mask[rows].T
            return corrections
        if self._compiled is not None and plan is self._plan:
            return self._corrections
        if not plan.log_density:
            return plan.scale * self.quadratic
        # scale = -1/2: -(quadratic + log det) / 2 + s log(2 pi) / 2.
        corrections = np.add(self.quadratic, self.log_det)
        corrections *= -0.5
        corrections += 0.5 * LOG_2PI * self.n_missing
        return corrections

    def add_value_corrections(self, plan, values, columns):
        """``values[:, columns] += value_corrections(plan)``, in place.

        By the compiled kernels where they made the corrections: NumPy's
        indexed addition gathers and scatters every value.
        """
        if (
            self._compiled is not None
            and plan is self._plan
            and values.dtype == np.float64
            and values.flags.c_contiguous
            and not isinstance(columns, slice)
        ):
            self._compiled[0].add_to_columns(values, columns, self._corrections.T)
            return
        with np.errstate(invalid="ignore"):
            # (inf - inf for a row too far to square: repaired later.)
            values[:, columns] += self.value_corrections(plan)

    def repair_cancelled(self, plan, values, columns, limit):
        """Recompute the values that a correction cancelled, in place.

        The kernel's value of a filled row holds its whole quadratic form
        ``z^T Lambda z``; the correction removes the missing coordinates'
        part. Where that part exceeds ``limit`` times what is left (a
        component far off or sharp in the missing coordinates only), the
        difference has lost as many digits; those values are computed
        again from ``x_o - mu_o`` directly:
        ``quad_o = z_o^T Lambda_oo z_o - b^T Lambda_mm^-1 b``,
        ``b = Lambda_mo z_o``. ``values[:, columns]`` are these rows'.

        Rows with nothing observed are always computed again: their form
        is 0, while the kernel's value of the row filled in with the center
        and its correction are both ``d^T Lambda d`` for ``d = mu_k - c``,
        whose difference keeps the rounding of that (far from the center,
        large) number.
        """
        # Flagged values have -quadratic > limit (1 + |left|) >= limit; with
        # diagonal precisions -quadratic is at most the sum of the drops.
        if plan.unit.diagonal_precision:
            most = float(np.max(np.sum(self._dropped, axis=-1), initial=0.0))
        elif self._compiled is not None and plan is self._plan:
            most = -self._least_quadratic  # the compiled kernels' minimum
        else:
            most = -float(np.min(self.quadratic, initial=0.0))
        empty = self._empty_rows()
        if most <= limit and empty is None:
            return
        finite = np.isfinite(plan.offsets)[:, np.newaxis]
        if most > limit:
            with np.errstate(invalid="ignore", over="ignore"):
                left = (values[:, columns] - plan.offsets[:, np.newaxis]) / plan.scale
                flagged = finite & (-self.quadratic > limit * (1.0 + np.abs(left)))
        else:
            flagged = np.zeros((len(finite), self._shape[0]), dtype=bool)
        if empty is not None:
            flagged |= finite & empty
        if not flagged.any():
            return
        if isinstance(columns, slice):
            columns = np.arange(values.shape[1])[columns]
        unit = plan.unit
        if unit.diagonal_precision:
            parts = [(np.nonzero(flagged), None, None)]
        else:
            parts = []
            for members, missing, _, covariance, _ in self._block_list():
                components, index = np.nonzero(flagged[:, members])
                if components.size:
                    pairs = (components, members[index])
                    parts.append((pairs, missing[index], covariance[components, index]))
        dense = None
        if not unit.diagonal_precision:
            everything = np.arange(unit.n_features)[np.newaxis]
            dense = unit.precision_blocks(plan.precisions, everything)[:, 0]
        for (components, members), missing, covariance in parts:
            z = np.where(
                self.mask[members],
                0.0,
                self.rows[members].astype(float) - plan.means[components],
            )
            if dense is None:
                diagonals = self._diagonals[components]
                quadratic = np.sum(diagonals * z * z, axis=1)
            else:
                lambda_z = np.einsum("pij,pj->pi", dense[components], z)
                b = np.take_along_axis(lambda_z, missing, axis=1)
                quadratic = np.einsum("pi,pi->p", z, lambda_z) - np.einsum(
                    "ps,pst,pt->p", b, covariance, b
                )
            shared = unit.row_quadratic(
                self.centered[:, members], plan.precisions_cholesky
            )
            if shared is not None and not plan.whitened:
                # Whitened values hold the shared term (skvi._kernel).
                quadratic = quadratic - shared
            value = plan.scale * quadratic + plan.offsets[components]
            if plan.log_density:
                value += (
                    -0.5 * self.log_det[components, members]
                    + 0.5 * LOG_2PI * self.n_missing[members]
                )
            values[components, columns[members]] = value

    def entropy(self, weighted_resp):
        """``sum w r H[q(x_m | z)]`` for responsibilities ``w_n r_nk``."""
        # s (1 + log 2 pi) / 2 per row, less log det(Lambda_mm) / 2.
        if self._plan.unit.diagonal_precision:
            # Per missing coordinate: (1 + log 2 pi - log lambda_j) / 2.
            mass = self._missing_mass(weighted_resp)
            per_entry = 0.5 * (1.0 + LOG_2PI - np.log(self._diagonals))
            return float(np.sum(mass * per_entry))
        if self._entropy is not None and self._entropy[0] is weighted_resp:
            missing_mass, log_det_mass = self._entropy[1]
        else:
            missing_mass = float(np.sum(weighted_resp, axis=0) @ self.n_missing)
            log_det_mass = float(np.vdot(weighted_resp, self.log_det))
        return 0.5 * (1.0 + LOG_2PI) * missing_mass - 0.5 * log_det_mass

    def statistics(self, weighted_resp):
        """These rows' statistics, or what completes the kernel's sums of them.

        Returns ``(counts, first, second)``: ``sum w r`` (K,), ``sum w r y``
        (K, D) and the dense ``sum w r E[y y^T]`` (K, D, D), with ``y`` the
        row about each component's reference and the missing coordinates
        at their conditional mean (``E[y y^T] = y y^T + Cov`` on the
        missing block). Where :attr:`in_kernel`, the kernel has summed the
        rows filled in with the shared center, and these are the
        differences: ``y = e + delta`` with ``delta`` zero but on the
        missing coordinates, where it is the conditional mean minus the
        center, so ``y y^T - e e^T = e delta^T + delta e^T + delta
        delta^T``. Everything is then about the shared center, the
        reference of every component, exactly as for complete rows.
        """
        if self.in_kernel:
            return self._kernel_corrections(weighted_resp)
        return self._own_statistics(weighted_resp)

    def _kernel_corrections(self, weighted_resp):
        plan = self._plan
        n_components, n_rows = weighted_resp.shape
        n_features = self._shape[1]
        counts = np.zeros(n_components)
        if plan.unit.diagonal_precision:
            # The conditional mean of a missing coordinate is mu_kj, and
            # e delta^T has no diagonal (e_m = 0).
            shifts = plan.shifts[0]
            mass = self._missing_mass(weighted_resp)
            first = mass * shifts
            second = np.zeros((n_components, n_features, n_features))
            diagonal = np.arange(n_features)
            second[:, diagonal, diagonal] = mass * (shifts**2 + 1.0 / self._diagonals)
            return counts, first, second
        first = np.zeros((n_components, n_features))
        if self._compiled is not None:
            kernels, rows, members, starts, fill, covariance = self._compiled
            # Component last, as the kernels keep it. A precision shared by
            # the components (tied) reads only their pooled second moments
            # (its unit's second_moment_from_dense sums them): the kernel
            # sums them directly, and they stand on the first component.
            n_lanes = n_components if covariance.shape[1] > 1 else 1
            first = np.zeros((n_features, n_components))
            second = np.zeros((n_features, n_features, n_lanes))
            masses = kernels.conditional_statistics(
                # (n, K): the kernel's responsibilities are, transposed.
                np.ascontiguousarray(weighted_resp.T, dtype=float),
                rows,
                members,
                starts,
                self._coordinates,
                fill,
                covariance,
                self._block_starts,
                self.log_det.T,
                *self._gathered,
                first,
                second,
            )
            # The entropy's sums, for entropy() of the same responsibilities.
            self._entropy = (weighted_resp, masses)
            if n_lanes < n_components:
                pooled = np.zeros((n_components, n_features, n_features))
                pooled[0] = second[:, :, 0]
                return counts, first.T, pooled
            return counts, first.T, np.moveaxis(second, -1, 0)
        cross = np.zeros((n_components, n_features, n_features))
        # w r delta of every entry.
        n_entries = self._fill.shape[1]
        weighted = _scratch("weighted", (n_components, n_entries))
        np.take(weighted_resp, self._entry_rows, 1, weighted, "clip")
        weighted *= self._fill
        # w r (delta_a delta_b + Cov_ab) for the pairs a <= b of each row's
        # missing entries, summed by the entry (D, D) they fall on.
        lefts, rights, owners, covariances = [], [], [], []
        first_entry = 0
        for members, missing, _, covariance, _ in self._block_list():
            n_members, size = missing.shape
            a, b = _upper_pairs(size)
            starts = first_entry + size * np.arange(n_members)[:, np.newaxis]
            first_entry += n_members * size
            lefts.append((starts + a).ravel())
            rights.append((starts + b).ravel())
            owners.append(np.repeat(members, len(a)))
            if covariance.strides[0] == 0:
                covariance = covariance[:1]  # shared by the components (tied)
            covariances.append(covariance[..., a, b].reshape(len(covariance), -1))
        lefts, rights = np.concatenate(lefts), np.concatenate(rights)
        values = _scratch("values", (n_components, len(lefts)))
        factors = _scratch("factors", (n_components, len(lefts)))
        np.take(weighted, lefts, 1, values, "clip")
        values *= np.take(self._fill, rights, 1, factors, "clip")
        np.take(weighted_resp, np.concatenate(owners), 1, factors, "clip")
        factors *= np.concatenate(covariances, axis=1)
        values += factors
        codes = self._coordinates[lefts] * n_features + self._coordinates[rights]
        upper = np.empty((n_components, n_features, n_features))
        for k in range(n_components):
            upper[k].ravel()[:] = np.bincount(
                codes, weights=values[k], minlength=n_features * n_features
            )
        diagonal = np.arange(n_features)
        second = upper + np.swapaxes(upper, 1, 2)
        second[:, diagonal, diagonal] = upper[:, diagonal, diagonal]
        # sum w r [1, e] delta_j for each coordinate j, over the rows missing
        # it: one small product per coordinate.
        weighted = np.take(
            weighted, self._by_coordinate, 1, _scratch("sorted", weighted.shape), "clip"
        )
        for j, part in self._coordinate_slices:
            sums = self._entry_linear[part].T @ weighted[:, part].T
            first[:, j] = sums[0]
            cross[:, :, j] = sums[1:].T
        second += cross + np.swapaxes(cross, 1, 2)
        return counts, first, second

    def _own_statistics(self, weighted_resp):
        """The rows' statistics about each component's own center.

        Taken about c_k itself, not about the center the row was expanded
        about and then shifted: a row may belong to a component far from
        its center in the missing coordinates, and shifting would cancel
        its tiny conditional spread against the squared distance.
        """
        plan = self._plan
        n_components, n_rows = weighted_resp.shape
        n_features = self._shape[1]
        references = plan.centers
        if plan.n_groups == 1:
            references = np.repeat(references, n_components, axis=0)
        offsets = plan.means - references  # mu_k - c_k: small, exact
        observed = np.where(self.mask, 0.0, self.rows.astype(float))
        counts = weighted_resp.sum(axis=1)
        first = np.empty((n_components, n_features))
        second = np.zeros((n_components, n_features, n_features))
        diagonal = plan.unit.diagonal_precision
        for k in range(n_components):
            y = np.where(self.mask, 0.0, observed - references[k])
            if diagonal:
                # The conditional mean of a missing coordinate is mu_kj.
                y += self.mask * offsets[k]
            else:
                for members, missing, _, _, u in self._block_list():
                    y[members[:, np.newaxis], missing] = offsets[k][missing] - u[k]
            weights = weighted_resp[k]
            first[k] = weights @ y
            if diagonal:
                variances = self.mask / self._diagonals[k]
                moments = weights @ (y * y + variances)
                second[k, np.arange(n_features), np.arange(n_features)] = moments
            else:
                second[k] = (y * weights[:, np.newaxis]).T @ y
        if not diagonal:
            second += self._conditional_covariance_sums(weighted_resp)
        return counts, first, second

    def _conditional_covariance_sums(self, weighted_resp):
        """``sum w r Cov[x_m | x_o, k]`` on each row's missing block, dense."""
        n_components = weighted_resp.shape[0]
        n_features = self._shape[1]
        sums = np.zeros((n_components, n_features * n_features))
        for members, missing, _, covariance, _ in self._block_list():
            flat = missing[:, :, np.newaxis] * n_features + missing[:, np.newaxis, :]
            flat = flat.ravel()
            weights = weighted_resp[:, members, np.newaxis, np.newaxis]
            weighted = (weights * covariance).reshape(n_components, -1)
            for k in range(n_components):
                sums[k] += np.bincount(
                    flat, weights=weighted[k], minlength=n_features * n_features
                )
        return sums.reshape(n_components, n_features, n_features)


def _apply(matrices, vectors):
    """Batched ``matrices @ vectors`` for (..., s, s) and (..., s).

    Small blocks entry by entry over the batch: numpy's batched products
    cost far more per tiny matrix than the arithmetic.
    """
    size = vectors.shape[-1]
    if size > SMALL_BLOCK and vectors[..., 0].size < ENTRYWISE_MATRICES * size**2:
        return np.matmul(matrices, vectors[..., np.newaxis])[..., 0]
    out = np.empty(np.broadcast_shapes(matrices.shape[:-1], vectors.shape))
    for i in range(size):
        np.multiply(matrices[..., i, 0], vectors[..., 0], out=out[..., i])
        for j in range(1, size):
            out[..., i] += matrices[..., i, j] * vectors[..., j]
    return out


# Whether rows with missing entries may use the compiled kernels
# (skvi._missing_numba) where numba is importable: set the environment
# variable SKVI_NUMBA=0 to keep the NumPy path, or this attribute at run time
# (the tests run both paths on the same data).
USE_NUMBA = os.environ.get("SKVI_NUMBA", "1") != "0"

# Chunks with fewer (row, component) pairs of incomplete rows keep the NumPy
# path: there it costs a few milliseconds per pass, while a process's first
# use of the compiled kernels costs about 0.7 s of CPU (numba's import, 0.3 s,
# and loading the cached machine code, 0.4 s), which small fits would not
# earn back. Chunks this large come only from data of a few thousand rows
# with missing entries, whose passes each save several milliseconds.
COMPILED_PAIRS = 8192

# The compiled kernels' module once imported, False where numba is not
# importable, None before the first chunk with missing entries asks.
_KERNELS = None


def compiled_kernels():
    """The compiled kernels (the module skvi._missing_numba), or None.

    None where :data:`USE_NUMBA` is off or numba cannot be imported. numba
    is imported here, on the first chunk with missing entries, never with
    skvi: fits of complete data do not pay its import.
    """
    global _KERNELS
    if not USE_NUMBA or _in_dask_worker():
        return None
    if _KERNELS is None:
        try:
            from . import _missing_numba
        except ImportError:
            _KERNELS = False
        else:
            _KERNELS = _missing_numba
    return _KERNELS or None


def scan_kernels(plan, chunk):
    """The compiled kernels where they may find a chunk's incomplete rows.

    For full and tied precisions about one center, float64 rows and a plan
    not whitened (see :meth:`IncompleteRows.scanned`), once a chunk has
    loaded them: whether the kernels are loaded changes which code finds
    the rows, never which rows nor how they are corrected, so a fit's
    results do not depend on what the process ran before.
    """
    if not _KERNELS or not USE_NUMBA:
        return None
    if plan.n_groups != 1 or plan.unit.diagonal_precision or plan.whitened:
        return None
    if chunk.dtype != np.float64 or plan.dtype != np.float64 or not plan.has_values:
        return None
    if _in_dask_worker():
        return None
    return _KERNELS


def _in_dask_worker():
    """Whether this runs in a task of a Dask distributed worker.

    Workers keep the NumPy path: numba's import and its compilation (or the
    loading of its cached machine code) cost every worker process memory
    that the nanny budgets, and a worker with a 400 MiB limit was restarted
    while compiling, four times over, until the task failed.
    """
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


# With diagonal precisions about one center, every row of a chunk takes the
# corrections (see incomplete_columns) from this many missing entries per
# row on: a product with the whole mask then costs less than gathering the
# incomplete rows and scattering their values.
ALL_ROWS_ENTRIES = 0.25

# Up to this size, a batch of small SPD matrices is inverted entry by entry
# over the batch (numpy's batched LAPACK calls cost about 0.3 us per matrix,
# far more than the arithmetic of a 3 x 3 or 4 x 4 block).
SMALL_BLOCK = 4

# Larger blocks are inverted entry by entry too (about s^3 / 2 array
# operations) when there are more than this many times s^2 of them, else by
# LAPACK (about 0.6 us per 5 x 5 matrix, growing as s^2).
ENTRYWISE_MATRICES = 4

# Looking up shared patterns (a sort) costs more than it saves for fewer rows.
SHARED_PATTERN_ROWS = 64


class _ScratchPool(threading.local):
    """Each thread's work arrays, by name."""

    def __init__(self):
        self.arrays = {}


_SCRATCH = _ScratchPool()


def _scratch(name, shape):
    """A float64 work array of this thread, reused from chunk to chunk.

    Fresh arrays of a chunk's size are fresh pages from the system on every
    chunk: their page faults cost as much as the arithmetic. For values
    used only within one call (the next chunk overwrites them).
    """
    size = int(np.prod(shape))
    array = _SCRATCH.arrays.get(name)
    if array is None or array.size < size:
        array = _SCRATCH.arrays[name] = np.empty(size)
    return array[:size].reshape(shape)


@functools.cache
def _upper_pairs(size):
    """``np.triu_indices(size)``, which costs far more than its few entries."""
    return np.triu_indices(size)


def _counts(mask):
    """The number of True entries of each row of a 2-d mask.

    As a product of bytes (uint8 while they fit), several times faster than
    a sum of booleans.
    """
    if mask.shape[1] > np.iinfo(np.uint8).max:
        return np.count_nonzero(mask, axis=1)
    return mask.view(np.uint8) @ np.ones(mask.shape[1], dtype=np.uint8)


def _small(integers):
    """Non-negative integers as uint8 where they fit.

    numpy's stable sort of uint8 is a radix sort, ten times faster than its
    sort of int64.
    """
    if integers.size and integers.max() <= np.iinfo(np.uint8).max:
        return integers.astype(np.uint8)
    return integers


def _nonzero(mask):
    """``np.nonzero`` of a 2-d mask, from the flat indices (several times faster)."""
    flat = np.flatnonzero(mask)
    rows = flat // mask.shape[1]
    return rows, flat - rows * mask.shape[1]


def _dense_precisions(unit, precisions):
    """The (K, D, D) precisions, or (1, D, D) where all components share one."""
    everything = np.arange(unit.n_features)[np.newaxis]
    dense = unit.precision_blocks(precisions, everything)[:, 0]
    if dense.strides[0] == 0:
        return dense[:1]
    return np.ascontiguousarray(dense)


def _component_last(plan):
    """The dense precisions (D, D, P) and ``Lambda_k d`` (G, D, K), component last.

    The layouts of the compiled kernels, kept on the plan: every chunk asks.
    """
    arrays = plan.__dict__.get("_component_last")
    if arrays is None:
        dense = _dense_precisions(plan.unit, plan.precisions)
        arrays = (
            # A writeable copy: a shared precision's (D, D, 1) view of a
            # read-only array is its own numba type, which compiled every
            # kernel a second time (13 s per process with no cache).
            np.array(np.moveaxis(dense, 0, -1), dtype=float, order="C"),
            np.ascontiguousarray(np.swapaxes(plan.weighted_shifts, 1, 2), float),
        )
        plan.__dict__["_component_last"] = arrays
    return arrays


def _factor_cache(plan, kernels, precisions):
    """The compiled kernels' kept factors of this thread, on the plan.

    Blocks of one, two and three missing coordinates are factored once
    per E-step (a plan: its precisions stay the same), not once per chunk
    (chunks of about 3,000 rows share few of their C(D, 3) triples, an
    E-step shares most); each thread
    keeps its own, so that chunks on several threads never share one (see
    skvi._missing_numba.new_factor_cache).
    """
    caches = plan.__dict__.setdefault("_factor_caches", {})
    thread = threading.get_ident()
    cache = caches.get(thread)
    if cache is None:
        cache = caches[thread] = kernels.new_factor_cache(*precisions.shape[1:])
    return cache


def _inverted_blocks(dense, missing, n_components):
    """``Lambda_mm^-1`` and ``log det Lambda_mm`` for rows' missing sets.

    ``dense`` (K or 1, D, D) holds the precisions (see _dense_precisions),
    ``missing`` (n, s) each row's missing coordinates. Returns arrays of
    shape (K, n, s, s) and (K, n). From SMALL_BLOCK + 1 missing entries on,
    and SHARED_PATTERN_ROWS rows, each distinct pattern is inverted once and
    shared by its rows (smaller blocks cost less to invert than to look up);
    a precision shared by all components (tied) once for all.
    """
    inverse = None
    patterns = missing
    if missing.shape[1] > SMALL_BLOCK and len(missing) >= SHARED_PATTERN_ROWS:
        patterns, inverse = _distinct_rows(missing)
    n_features = dense.shape[-1]
    codes = patterns[:, :, np.newaxis] * n_features + patterns[:, np.newaxis, :]
    blocks = np.take(dense.reshape(dense.shape[0], -1), codes, axis=1)
    covariance, log_det = _spd_inverse(blocks)
    if inverse is not None:
        covariance, log_det = covariance[:, inverse], log_det[:, inverse]
    if dense.shape[0] == 1:
        shape = (n_components,) + covariance.shape[1:]
        return np.broadcast_to(covariance, shape), np.broadcast_to(log_det, shape[:2])
    return covariance, log_det


def _distinct_rows(missing):
    """The distinct rows of an integer array and each row's index among them."""
    if missing.max() < 63:
        codes = (np.int64(1) << missing.astype(np.int64)).sum(axis=1)
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        return missing[first], inverse.ravel()
    patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    return patterns, inverse.ravel()


def _spd_inverse(blocks):
    """Inverses and log-determinants of a batch (..., s, s) of SPD matrices."""
    size = blocks.shape[-1]
    if size == 1:
        a = blocks[..., 0, 0]
        return (1.0 / a)[..., np.newaxis, np.newaxis], np.log(a)
    if size == 2:
        a, b, d = blocks[..., 0, 0], blocks[..., 0, 1], blocks[..., 1, 1]
        determinant = a * d - b * b
        inverse = np.empty(blocks.shape)
        np.divide(d, determinant, out=inverse[..., 0, 0])
        np.divide(a, determinant, out=inverse[..., 1, 1])
        np.divide(-b, determinant, out=inverse[..., 0, 1])
        inverse[..., 1, 0] = inverse[..., 0, 1]
        return inverse, np.log(determinant)
    if size == 3:
        # The adjugate: cofactors, then the determinant along the first row.
        a, b, c = blocks[..., 0, 0], blocks[..., 0, 1], blocks[..., 0, 2]
        d, e, f = blocks[..., 1, 1], blocks[..., 1, 2], blocks[..., 2, 2]
        cofactors = {
            (0, 0): d * f - e * e,
            (0, 1): c * e - b * f,
            (0, 2): b * e - c * d,
            (1, 1): a * f - c * c,
            (1, 2): b * c - a * e,
            (2, 2): a * d - b * b,
        }
        determinant = a * cofactors[0, 0] + b * cofactors[0, 1] + c * cofactors[0, 2]
        inverse = np.empty(blocks.shape)
        for (i, j), cofactor in cofactors.items():
            np.divide(cofactor, determinant, out=inverse[..., i, j])
            if i != j:
                inverse[..., j, i] = inverse[..., i, j]
        return inverse, np.log(determinant)
    if size > SMALL_BLOCK and blocks[..., 0, 0].size < ENTRYWISE_MATRICES * size**2:
        return np.linalg.inv(blocks), np.linalg.slogdet(blocks)[1]
    # Cholesky factor L, then its inverse M = L^-1, then M^T M, entry by
    # entry over the batch.
    lower = {}
    for j in range(size):
        diagonal = blocks[..., j, j] - sum(lower[j, k] ** 2 for k in range(j))
        lower[j, j] = np.sqrt(diagonal)
        for i in range(j + 1, size):
            off = blocks[..., i, j] - sum(lower[i, k] * lower[j, k] for k in range(j))
            lower[i, j] = off / lower[j, j]
    inverse = {}
    for j in range(size):
        inverse[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, size):
            total = sum(lower[i, k] * inverse[k, j] for k in range(j, i))
            inverse[i, j] = -total / lower[i, i]
    out = np.empty(blocks.shape)
    for i in range(size):
        for j in range(i + 1):
            value = sum(inverse[k, i] * inverse[k, j] for k in range(i, size))
            out[..., i, j] = out[..., j, i] = value
    log_det = 2.0 * sum(np.log(lower[j, j]) for j in range(size))
    return out, log_det
