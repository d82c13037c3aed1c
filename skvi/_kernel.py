"""The E-step kernel: every component's quadratic form as matrix products.

An E-step needs, for every row x_n and component k, the quadratic form
``(x_n - m_k)^T Lambda_k (x_n - m_k)``, and then the responsibility-weighted
sums N_k, sum r x and the second moments. Expanded about a center c, with
``e = x - c`` and ``d_k = m_k - c``, the form is

    q(e) . a_k  -  2 e^T Lambda_k d_k  +  d_k^T Lambda_k d_k

where q(e) are second-order row features that the covariance unit defines
(the products e_i e_j for full, e_j^2 for diag, |e|^2 for spherical, none
for tied, whose shared term e^T Lambda e cancels from the responsibilities).
Over the features ``[1, e, q(e)]`` the values of all components for a chunk
are one matrix product, and the statistics ``sum_n w_n r_nk [1, e_n, q(e_n)]``
are another. That needs about half the flops of whitening the rows once per
component, and it runs at the speed of a matrix product.

**Centers.** The expansion adds up terms as large as the squared whitened
distance of a mean from the center, so it multiplies rounding errors by
``F = 1 + max_k |m_k - c|^2_{Lambda_k}``. Two layouts keep that in check:

* *one shared center*, the weighted mean of the means, while F stays within
  ``LOSS_LIMIT`` of the working precision (4 of float64's 16 digits;
  less in fits of a few rows, :func:`loss_limit`);
* *local centers* otherwise (clusters far apart relative to their spread,
  and float32 data): each row is expanded about the mean of its nearest
  component (in a diagonal metric from the variances). A row then meets
  its own component with no cancellation at all, and a distant component
  with terms no larger than that component's large quadratic form. Within a
  chunk the rows are sorted by center; the second-order product stays one
  product, and the small linear part is one product per center.

Centers are rounded to the dtype of X, so ``x - c`` is the correctly rounded
difference of x and a center that the statistics then use exactly: float32
rows stay float32 arrays, matrix products run in float32, and the chunk sums
accumulate in float64.

**Layouts.** With many features and few components (full precisions at
large D) the expansion's D (D + 1) / 2 features per row cost more than
whitening the rows once per component: ``y = P_k^T (x - m_k)`` for all
components in one product, the values as ``|y|^2``, and the second
moments as one symmetric rank update ``sum w r e e^T`` per component.
:func:`per_component_cheaper` chooses from a cost model whose constants
were measured (``LAYOUT_COSTS``); the per-component layout is also the
exact path for ill-conditioned precisions (``WHITENING_LIMIT``), where each
component whitens ``x - m_k`` itself (one product per component, no center
to cancel through), and a row whose ``x - m_k`` lies along a weak axis of
the precision (a component spanning clusters far apart) is recomputed
without cancellation (:class:`_ExactRows`); there a pass over rows with
no missing entry sums the second moments only in the whitened frames and
takes them back to the data's (:meth:`WhitenedMoments.data_scatters`),
one rank update per component instead of two. Both layouts serve fits and
predictions alike. A pass may also take its moments in the whitened
frames of another state (``frame``): an M-step that leaves a precision
ill-conditioned reads its half-step's data term from those
(:func:`skvi._stats.framed_components`).

**Memory.** Rows are processed in chunks whose work arrays fit in
scikit-learn's ``working_memory`` and in a cache-sized block; nothing of size
n_samples x n_components is held. Values are laid out components x rows, so
the log-sum-exp over components runs over whole rows of the array, in place.

The kernel knows nothing of EM or VI: an :class:`Expansion` is built from
means, precisions, a scale and per-component offsets, and serves the
E-step of both estimators, their predictions, and (through the additive
:class:`skvi._stats.SufficientStatistics`) minibatches and distributed
blocks alike.
"""

import threading
import weakref

import numpy as np
from scipy.linalg import blas, lapack
from sklearn import get_config

from ._covariance import _gufuncs
from ._covariance._unit import triangular_inverses
from ._covariance.wishart import SplitFactor
from ._missing import (
    IncompleteRows,
    has_missing,
    incomplete_columns,
    missing_mask,
    scan_kernels,
)

# Largest rounding loss F of a shared center, per working dtype: float64
# keeps 12 of its 16 digits; float32 has no digits to spare and uses local
# centers unless the components nearly coincide.
LOSS_LIMIT = {np.dtype(np.float64): 1e4, np.dtype(np.float32): 4.0}

# The loss a shared center may take per row of the data, below
# LOSS_LIMIT: see loss_limit.
ROW_LOSS = 50.0


def loss_limit(dtype, n_rows=None):
    """The largest rounding loss F of a shared center for ``n_rows`` rows.

    A value keeps ``F eps`` of its terms; summed over many rows, those
    errors average out against the bound, but a bound of a handful of rows
    keeps them (two rows per cluster, 1e-13 of the bound at F near 1e3).
    Below ``LOSS_LIMIT / ROW_LOSS`` rows the limit shrinks with the rows,
    and fits of tiny data take local centers, where a row meets its own
    component without cancellation. ``None`` (predictions, whose values
    must not depend on how many rows are asked for) gives ``LOSS_LIMIT``.
    """
    limit = LOSS_LIMIT[np.dtype(dtype)]
    if n_rows is None or not np.isfinite(n_rows):
        return limit
    return min(limit, ROW_LOSS * max(float(n_rows), 1.0))


# Largest conditioning loss (CovarianceUnit.conditioning_loss) of the
# second-order expansion. Beyond it the products e_i e_j of rows near an
# ill-conditioned component cancel more digits than the bound's rounding
# (1e-13 relative) allows, and the values are computed through each
# component's Cholesky factor instead (_whitened_values).
WHITENING_LIMIT = {np.dtype(np.float64): 1e3, np.dtype(np.float32): np.inf}

# numpy's float64 exp is about 10x slower for results below the smallest
# normal double (arguments under about -707). Log-ratios are floored there
# and exp(floor) is subtracted after the exp, so that what underflows is
# exactly 0 and every other responsibility changes by less than 1e-307, far
# below the rounding of any sum it enters. float32's exp has no slow path.
EXP_FLOOR = {np.dtype(np.float64): -707.0, np.dtype(np.float32): None}

# Chunks are sized so that their work arrays stay in the core's cache: on
# the benchmark machine (1 MiB of L2 per core) 4 MiB blocks ran fastest.
CACHE_BLOCK_BYTES = 4 * 2**20

# A weighted Gram product keeps only a component's rows of nonzero mass when
# they are at most this fraction of a chunk: beyond it, gathering them cost
# about what the smaller product saved (64 x 1,797 blocks, one thread).
SPARSE_GRAM_FRACTION = 0.6

# Values of the scaled rows of the components whose weighted Gram products
# are made as one stacked product (512 KiB in float64): more would be fresh
# memory of a chunk's size.
GRAM_BLOCK_VALUES = 2**16

# Nanoseconds per row of an E-step pass (values and statistics) in the two
# layouts of full precisions: (per feature of the expansion, per feature
# and component, per K D^2 of the per-component products, per K D).
# Fitted by ``benchmarks/bench_vs_sklearn.py --layouts``: one-thread process
# times of both layouts' passes over 6,000 rows on a grid (d in 8, 16, 24,
# 32, 48, 64; K in 2, 8, 32; OpenBLAS 0.3.31 on the 2-core benchmark
# machine), non-negative least squares on relative errors. The fitted model
# picks the faster layout at every point of the grid; the earlier constants
# missed (d, K) = (32, 8) and (48, 8) in float64 and (24, 8) in float32, by
# 10% to 20%.
LAYOUT_COSTS = {
    np.dtype(np.float64): (1.89, 0.109, 0.0498, 4.08),
    np.dtype(np.float32): (0.841, 0.0464, 0.028, 1.75),
}

# From this many features per row, values are computed as the transposed
# product (see _product).
TRANSPOSED_PRODUCT_FEATURES = 512

# From this many features, a chunk's rows are centered in their own layout
# and then transposed (_subtract_transposed). Per entry, with chunks read
# from memory (one thread, 2-core benchmark machine), the transposed way
# over the direct one took 1.43x at D = 24, 1.13x at 28, 0.84x at 30,
# 0.89x at 32 and 0.81x to 0.94x from 36 to 128 (7.4x at D = 2).
ROW_SUBTRACTION_FEATURES = 30

# With local centers, a chunk's per-center products cost a few microseconds
# of overhead each; a chunk holds enough rows that they stay a small part of
# its matrix products: LOCAL_CHUNK_WORK / (features per row) rows, at most
# MAX_LOCAL_CHUNK_ROWS (see Expansion.chunks).
LOCAL_CHUNK_WORK = 600_000
MAX_LOCAL_CHUNK_ROWS = 16_384


class Expansion:
    """The centers and coefficients one pass evaluates rows with.

    The value of row n and component k is ``scale * (x_n - m_k)^T Lambda_k
    (x_n - m_k) + offset_k``; see the module docstring.

    Use :func:`parameter_expansion` to evaluate values (E-step,
    predictions) and :func:`center_expansion` to accumulate the statistics
    of given responsibilities.
    """

    def __init__(self, unit, centers, metric, dtype):
        self.unit = unit
        self.dtype = np.dtype(dtype)
        # Representable in the working dtype, so rows minus a center is the
        # correctly rounded difference from exactly this point.
        self.centers = np.asarray(centers, dtype=self.dtype).astype(float)
        self.centers_work = self.centers.astype(self.dtype)
        self.n_groups = self.centers.shape[0]
        self.n_linear = 1 + unit.n_features
        self.n_features_total = self.n_linear + unit.n_second_order
        self.has_values = False
        self.whitened = False
        # Another state's (means, factors, components) in whose whitened
        # frames those components' moments are taken (see
        # parameter_expansion).
        self.frame = None
        # Whether values and second moments are computed one component at a
        # time from whitened rows, without second-order features (see
        # per_component_cheaper).
        self.per_component = False
        # Whether a whitened pass over complete rows takes its second
        # moments from the whitened ones (StatisticsPass._derives); an
        # E-step's pass about new centers sums them about those instead.
        self.derives_second = True
        if self.n_groups > 1:
            self._label_coefficients(np.asarray(metric, dtype=float))

    def _label_coefficients(self, metric):
        # Nearest center in the metric diag(metric): the argmax over g of
        # (metric u_g) . x - metric u_g . (mid + u_g / 2), u_g = c_g - mid,
        # which drops the row's own squared norm and keeps the numbers small.
        mid = self.centers.mean(axis=0)
        offsets = self.centers - mid
        weighted = metric * offsets
        self.label_weights = weighted.T.astype(self.dtype)
        # Per coordinate, so that a row's missing coordinates can be left out.
        self.label_terms = (weighted * (mid + 0.5 * offsets)).T.astype(self.dtype)
        self.label_offsets = -self.label_terms.sum(axis=0)
        self.label_dtype = np.uint8 if self.n_groups <= 256 else np.uint16

    def nearest_centers(self, chunk, mask=None):
        """The center each row of ``chunk`` is expanded about.

        With a ``mask`` of missing entries, the distances use the observed
        coordinates only.
        """
        # Rows far beyond every center may overflow: any center will do for
        # them, and their values are repaired later.
        with np.errstate(over="ignore", invalid="ignore"):
            if mask is None:
                scores = chunk @ self.label_weights
                scores += self.label_offsets
            else:
                observed = (~mask).astype(self.dtype)
                scores = np.where(mask, 0, chunk) @ self.label_weights
                scores -= observed @ self.label_terms
        return np.argmax(scores, axis=1).astype(self.label_dtype)

    def row_bytes(self):
        """Bytes of work arrays per row of a chunk.

        The features and two (K, m) buffers; a caller's responsibilities and
        their sorted copy; sorting scores and sorted rows.
        """
        unit = self.unit
        per_row = self.n_features_used + 4 * unit.n_components
        if self.n_groups > 1:
            per_row += self.n_groups + 2 * unit.n_features
        if self.per_component:
            # Every component's whitened rows (_whitened_rows).
            per_row += unit.n_components * unit.n_features
        if self.frame is not None:
            # The framed components' rows and their forms, the exact
            # recomputation's buffers and a Gram factor (_framed_rows).
            per_row += len(self.frame[2]) * (unit.n_features + 1)
            per_row += 7 * unit.n_features
        return self.dtype.itemsize * per_row + 16

    @property
    def n_features_used(self):
        """Features per row a chunk builds: no second order per component."""
        return self.n_linear if self.per_component else self.n_features_total

    def chunks(self, n_samples):
        """Slices of rows whose work arrays fit in memory and cache.

        With local centers a chunk makes two small products per center, so
        it holds enough rows, memory permitting, that their overhead stays
        small next to its large products.
        """
        least = 1
        if self.n_groups > 1:
            least = min(LOCAL_CHUNK_WORK // self.n_features_used, MAX_LOCAL_CHUNK_ROWS)
        return row_chunks(n_samples, self.row_bytes(), least)


def _expansion_coefficients(
    plan, precisions, precisions_cholesky, shifts, weighted_shifts, scale, offsets
):
    """Set the plan's linear and second-order coefficients (see Expansion)."""
    unit, dtype = plan.unit, plan.dtype
    linear = np.empty((plan.n_groups, unit.n_components, plan.n_linear))
    # d^T Lambda d as a sum of squares |P^T d|^2: the entries of an
    # ill-conditioned Lambda cancel for a d along its weak axis.
    if plan.n_groups == 1:
        quadratic = unit.whitened_norms(shifts[0], precisions_cholesky)[np.newaxis]
    else:
        quadratic = np.stack(
            [unit.whitened_norms(d, precisions_cholesky) for d in shifts]
        )
    linear[..., 0] = offsets + scale * quadratic
    linear[..., 1:] = -2.0 * scale * weighted_shifts
    second = scale * unit.second_order_coefficients(precisions)
    plan.linear = linear.astype(dtype)
    plan.second = second.astype(dtype)
    if plan.n_groups == 1:
        plan.combined = np.concatenate([linear[0], second], axis=1).astype(dtype)


def row_chunks(n_samples, row_bytes, least_rows=1):
    """Slices of rows whose work arrays fit in ``working_memory`` and cache.

    ``working_memory`` (MiB, scikit-learn's setting) bounds the memory;
    chunks are further capped at a cache-sized block for speed, unless that
    leaves fewer than ``least_rows`` rows. At least one row per chunk.
    """
    row_bytes = max(row_bytes, 1)
    memory = get_config()["working_memory"] * 2**20 // row_bytes
    size = max(CACHE_BLOCK_BYTES // row_bytes, least_rows)
    size = int(min(max(min(size, memory), 1), max(n_samples, 1)))
    if size > 256 and size % 256 == 0:
        # Row strides of a multiple of 4 KiB make the rows of a block collide
        # in cache.
        size -= 16
    return [
        slice(start, min(start + size, n_samples))
        for start in range(0, n_samples, size)
    ]


def shared_center(unit, means, weights, precisions, limit):
    """The one center to expand every row about, and its rounding loss F.

    The weighted mean of the means where its F is within ``limit``;
    otherwise the precision-weighted center
    (``CovarianceUnit.precision_weighted_center``) where that loses less.
    On scikit-learn's digits the components' blank pixels (precision
    ``1 / reg_covar``) put the weighted mean of the means at F near 1e7, and
    the precision-weighted center at about 100: one center instead of one
    per component, with its argmax, sorting and small products per chunk.
    Within the limit the weighted mean of the means is kept as it is.
    """
    loss, center = unit.expansion_loss(means, weights, precisions)
    if loss > limit and unit.n_components > 1:
        weighted = unit.precision_weighted_center(means, weights, precisions)
        weighted_loss, _ = unit.expansion_loss(
            means, weights, precisions, center=weighted
        )
        if weighted_loss < loss:
            return weighted_loss, weighted
    return loss, center


def parameter_expansion(
    unit,
    means,
    precisions,
    precisions_cholesky,
    weights,
    dtype,
    scale,
    offsets,
    log_density=False,
    centers=None,
    n_rows=None,
    conditioning=None,
    frame=None,
):
    """The expansion of ``scale * quadratic_form + offsets`` for parameters.

    Parameters
    ----------
    unit : CovarianceUnit
    means : ndarray of shape (K, D)
    precisions, precisions_cholesky : ndarray
        ``Lambda_k`` (or ``E[Lambda_k]``) in the unit's layout.
    weights : ndarray of shape (K,)
        Non-negative weights of the components, for the shared center.
    dtype : dtype
        The dtype of the rows to be evaluated.
    scale : float
        ``-0.5`` for log-densities, ``1`` for the quadratic forms themselves.
    offsets : ndarray of shape (K,)
        Added to each component's values; ``-inf`` is allowed.
    log_density : bool, default=False
        Whether the values are Gaussian log-densities (``scale = -1/2`` and
        the offsets hold their normalisers): a row with missing entries then
        gets the log-density of its observed coordinates (skvi._missing).
        Otherwise the values are scaled quadratic forms, and those of such a
        row are its observed coordinates' forms.
    centers : ndarray of shape (K, D), optional
        Local centers to expand about instead of the means (see
        :func:`skvi._stats.e_step`, which moves them to where the
        statistics' means will be).
    n_rows : int, optional
        The number of rows of a fit's data, which sets how much a shared
        center may lose (:func:`loss_limit`).
    conditioning : float, optional
        ``unit.conditioning_loss`` of these precisions, where the caller
        has it already.
    frame : tuple of ndarray, optional
        Means (J, D), upper Cholesky factors (J, D, D) and indices (J,) of
        some components of another state: a pass then takes only the
        :class:`WhitenedMoments` of those components of its q(Z) in that
        state's whitened frames, ``P_k^T (x - m_k)`` of each row computed
        without cancellation (:class:`_ExactRows`), and no other moments.
        The data term at a state whose precisions are ill-conditioned (a
        component collapsing onto a few rows) loses the digits of their
        condition number in moments taken anywhere else.
    """
    dtype = np.dtype(dtype)
    means = np.asarray(means, dtype=float)
    limit = loss_limit(dtype, n_rows)
    loss, center = shared_center(unit, means, weights, precisions, limit)
    if centers is not None:
        centers = np.asarray(centers, dtype=float)
    elif loss <= limit or unit.n_components == 1:
        centers = center[np.newaxis]
    else:
        centers = means
    metric = None
    if len(centers) > 1:
        # Only local centers label rows by a metric: the inverse of the
        # components' mean variances. The mean precision let one tight
        # component's coordinate outweigh all others, and sent a broad
        # component's rows (one spanning clusters far apart) to a far
        # center, where their own values cancelled digits.
        weights = np.asarray(weights, dtype=float)
        with np.errstate(divide="ignore"):
            variances = 1.0 / np.asarray(unit.precision_diagonals(precisions))
        metric = weights.sum() / (weights @ variances)
    plan = Expansion(unit, centers, metric, dtype)

    # For center g and component k: d = m_k - c_g.
    shifts = means[np.newaxis] - plan.centers[:, np.newaxis]
    weighted_shifts = unit.precision_times(precisions, shifts)
    if conditioning is None:
        conditioning = unit.conditioning_loss(precisions, precisions_cholesky)
    plan.whitened = conditioning > WHITENING_LIMIT[dtype]
    plan.per_component = plan.whitened or per_component_cheaper(
        unit, precisions_cholesky, dtype
    )
    if not plan.per_component:
        # The expansion's coefficients; per component, values come from the
        # whitened rows instead.
        _expansion_coefficients(
            plan,
            precisions,
            precisions_cholesky,
            shifts,
            weighted_shifts,
            scale,
            offsets,
        )
    else:
        factors = np.asarray(unit.component_factors(precisions_cholesky), dtype=float)
        if plan.whitened:
            plan.exact_rows = _ExactRows(factors, means)
        else:
            # All components' P_k^T stacked, and P_k^T (m_k - c_g), shape
            # (G, K, D).
            plan.stacked_factors = (
                np.swapaxes(factors, 1, 2).reshape(-1, unit.n_features).astype(dtype)
            )
            # Cholesky factors are triangular: a triangular product per
            # component (BLAS trmm) takes half the flops of the stacked one.
            plan.triangular_rows = None
            if np.dtype(dtype) == np.float64:
                rows = _ExactRows(factors, means)
                if rows.triangular.all():
                    plan.triangular_rows = rows
            plan.whitened_shifts = np.einsum("kij,gki->gkj", factors, shifts).astype(
                dtype
            )
    if frame is not None:
        frame_means, frame_factors = (np.asarray(a, dtype=float) for a in frame[:2])
        plan.frame = (frame_means, frame_factors, np.asarray(frame[2], dtype=np.intp))
        plan.frame_rows = _ExactRows(frame_factors, frame_means)
    plan.shifts = shifts
    plan.weighted_shifts = weighted_shifts
    plan.log_density = bool(log_density)
    plan.scale = float(scale)
    plan.means = means
    plan.offsets = np.asarray(offsets, dtype=float)
    plan.precisions = precisions
    plan.precisions_cholesky = precisions_cholesky
    plan.has_values = True
    return plan


def center_expansion(unit, centers, dtype):
    """An expansion about given centers, one per component, without values.

    Rows are grouped by the component given the largest responsibility, so
    :class:`StatisticsPass` needs responsibilities to group them.
    """
    return Expansion(unit, centers, None, dtype)


class _Chunk:
    """One chunk's rows (sorted by center) and their centered features."""

    __slots__ = (
        "rows",
        "features",
        "order",
        "groups",
        "n_rows",
        "incomplete",
        "whitened",
        "forms",
    )

    def __init__(self, rows, features, order, groups, n_rows, incomplete=None):
        self.rows = rows
        self.features = features
        self.order = order
        self.groups = groups
        self.n_rows = n_rows
        # (columns of the rows with missing entries, IncompleteRows) or None.
        self.incomplete = incomplete
        # Every component's whitened rows (K, D, m), once computed, and
        # their squared norms (K, m) where the whitening took them.
        self.whitened = None
        self.forms = None


class _ScratchPool(threading.local):
    """Each thread's work buffers, by name, and the workspace holding each."""

    def __init__(self):
        self.buffers = {}


_POOL = _ScratchPool()


def _scratch(owner, name, size, dtype):
    """A work buffer of ``size`` items for ``owner``, reused across passes.

    Every E-step makes a new workspace; fresh buffers would cost a page
    fault per 4 KiB page on first touch (on the benchmark machine a pass
    over digits spent more time faulting than computing). A thread's last
    buffer of each name is handed on once the workspace that held it is
    gone, so two live workspaces never share one.
    """
    held = _POOL.buffers.get(name)
    if held is not None:
        array, holder = held
        if holder() is None and array.dtype == dtype and array.size >= size:
            _POOL.buffers[name] = (array, weakref.ref(owner))
            return array[:size]
    array = np.empty(size, dtype=dtype)
    _POOL.buffers[name] = (array, weakref.ref(owner))
    return array


class _Workspace:
    """Buffers one pass reuses for all its chunks.

    Each hands out C-contiguous blocks for a chunk of ``m`` rows.
    """

    def __init__(self, plan, n_rows):
        unit = plan.unit
        self._feature_rows = plan.n_features_used
        dtype = plan.dtype
        size = unit.n_components * n_rows
        self._features = _scratch(self, "features", self._feature_rows * n_rows, dtype)
        self._values = _scratch(self, "values", size, dtype)
        self._resp = _scratch(self, "resp", size, dtype)
        self.first = np.empty(
            (plan.n_groups, unit.n_components, plan.n_linear), dtype=plan.dtype
        )
        # Rows sorted by center (local centers), and every component's
        # whitened rows (per-component layout).
        self._sorted = None
        if plan.n_groups > 1:
            self._sorted = _scratch(self, "sorted", n_rows * unit.n_features, dtype)
        self._whitened = None
        if plan.per_component:
            size = unit.n_components * unit.n_features * n_rows
            self._whitened = _scratch(self, "whitened", size, dtype)
        self._framed = None
        if plan.frame is not None:
            # The framed components' rows, then their squared norms.
            self._framed_components = len(plan.frame[2])
            size = self._framed_components * (unit.n_features + 1) * n_rows
            self._framed = _scratch(self, "framed", size, dtype)
        self._dtype = dtype
        self._exact = None
        self._forms = None
        self._gram = None
        self._n_rows = n_rows
        self._components = unit.n_components
        self._dims = unit.n_features
        # Per-row vectors, reused: freeing arrays of a chunk's size on every
        # chunk makes glibc hand them back to the system (as Dask workers
        # ask it to), and the next chunk pays the page faults again.
        self._rows = _scratch(self, "rows", 4 * n_rows, dtype).reshape(4, n_rows)

    def features(self, m):
        block = self._features[: self._feature_rows * m].reshape(-1, m)
        block[0] = 1.0
        return block

    def values(self, m):
        return self._values[: self._components * m].reshape(-1, m)

    def resp(self, m):
        return self._resp[: self._components * m].reshape(-1, m)

    def row_vectors(self, m):
        """Four scratch vectors of ``m`` values each."""
        return self._rows[:, :m]

    def sorted_rows(self, m):
        """An (m, D) block for a chunk's rows sorted by center."""
        return self._sorted[: m * self._dims].reshape(m, self._dims)

    def whitened(self, m):
        """A (K D, m) block for every component's whitened rows."""
        return self._whitened[: m * self._components * self._dims].reshape(-1, m)

    def framed(self, m):
        """(J, D, m) and (J, m) blocks for rows in a plan's frame, and forms."""
        count = self._framed_components
        size = m * count * self._dims
        rows = self._framed[:size].reshape(count, self._dims, m)
        forms = self._framed[size : size + m * count]
        return rows, forms.reshape(count, m)

    def forms(self, m):
        """A (K, m) block for the squared norms of whitened rows."""
        if self._forms is None:
            size = self._components * self._n_rows
            self._forms = _scratch(self, "forms", size, self._dtype)
        return self._forms[: self._components * m].reshape(-1, m)

    def gram(self):
        """A flat buffer of D m values for a weighted Gram product's factor."""
        if self._gram is None:
            size = self._dims * self._n_rows
            self._gram = _scratch(self, "gram", size, self._dtype)
        return self._gram

    def exact(self):
        """Six flat buffers of D m values for rows recomputed exactly."""
        if self._exact is None:
            size = 6 * self._dims * self._n_rows
            self._exact = _scratch(self, "exact", size, self._dtype)
        return self._exact.reshape(6, -1)


def _prepare(
    plan, workspace, chunk, labels=None, complete=False, patterns=None, columns=None
):
    """Center the rows of ``chunk`` and build their features.

    ``patterns``: where the compiled scan finds the incomplete rows, what
    keeps its findings (skvi._missing.FoundPatterns.for_rows), or None.

    Features of rows far beyond the centers may overflow; the values of
    such rows are repaired by :func:`_repaired_maxima`.
    """
    m = chunk.shape[0]
    n_linear = plan.n_linear
    features = workspace.features(m)
    centered = features[1:n_linear]
    incomplete = kernels = mask = None
    # ``complete``: the caller knows the rows have no NaN (a fit checks its
    # data once), which saves a pass over every chunk in every E-step.
    if not complete and has_missing(chunk):
        # The compiled scan, where it serves, finds the incomplete rows in
        # one pass instead of the mask.
        kernels = scan_kernels(plan, chunk) if plan.n_groups == 1 else None
        if kernels is None:
            mask = missing_mask(chunk, checked=True)
    if plan.n_groups == 1:
        if columns is not None:
            np.subtract(columns, plan.centers_work[0][:, np.newaxis], out=centered)
        else:
            _subtract_transposed(chunk, plan.centers_work[0], centered, workspace)
        rows, order, groups = chunk, None, ((0, 0, m),)
        row_groups = None
        if kernels is not None:
            incomplete = IncompleteRows.scanned(
                plan, chunk, centered, kernels, patterns
            )
    else:
        if labels is None:
            labels = plan.nearest_centers(chunk, mask)
        order = np.argsort(labels, kind="stable")
        labels = labels[order]
        counts = np.bincount(labels, minlength=plan.n_groups)
        stops = np.cumsum(counts)
        # Into the workspace, one group's slice at a time: fresh arrays of a
        # chunk's size cost page faults on every chunk.
        # mode="clip": the default checks indices into a temporary copy.
        rows = np.take(chunk, order, axis=0, out=workspace.sorted_rows(m), mode="clip")
        groups = [
            (int(g), int(stops[g] - counts[g]), int(stops[g]))
            for g in np.flatnonzero(counts)
        ]
        # Each row's center, then the row minus it: the same subtraction
        # as group by group, in two calls.
        np.take(plan.centers_work.T, labels, axis=1, out=centered, mode="clip")
        np.subtract(rows.T, centered, out=centered)
        row_groups = labels
    if mask is not None:
        # Missing entries enter as the center's coordinates: e = 0 there.
        mask = _sorted(mask, order)
        np.copyto(centered, 0.0, where=mask.T)
        if plan.has_values:
            columns, counts = incomplete_columns(plan, mask)
            corrections = IncompleteRows(
                plan,
                rows[columns],
                centered[:, columns],
                mask[columns],
                None if row_groups is None else row_groups[columns],
                counts,
            )
            incomplete = (columns, corrections)
    if not plan.per_component:
        with np.errstate(over="ignore"):
            plan.unit.second_order_features(centered, features[n_linear:])
    return _Chunk(rows, features, order, groups, m, incomplete)


def _subtract_transposed(chunk, center, out, workspace):
    """``chunk.T - center`` into ``out`` (D, m): the same subtractions, faster.

    Subtracting across the chunk's rows reads them column by column, from
    memory: at quick size (100,000 x 32) that took 190 us per chunk of
    2,688 rows, a fifth of an E-step's time besides its two products. The
    rows subtracted in their own layout, read once in order, and then
    transposed in cache take 140 us; with fewer than
    ``ROW_SUBTRACTION_FEATURES`` columns, numpy's transposing copy costs
    more than it saves. The values buffer holds the rows (free until the
    values are computed) where it is large enough: K >= D. Rows not laid
    out row by row are subtracted across as before.
    """
    m, dims = chunk.shape
    scratch = workspace.values(m).reshape(-1)
    if (
        dims < ROW_SUBTRACTION_FEATURES
        or scratch.size < m * dims
        or not chunk.flags.c_contiguous
    ):
        np.subtract(chunk.T, center[:, np.newaxis], out=out)
        return
    rows = scratch[: m * dims].reshape(m, dims)
    np.subtract(chunk, center, out=rows)
    np.copyto(out, rows.T)


def _values(plan, workspace, prepared):
    """The (K, m) values of a prepared chunk, in its sorted row order.

    Rows with missing entries get the values of their observed coordinates.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        values = _expanded_values(plan, workspace, prepared)
    if prepared.incomplete is not None:
        columns, corrections = prepared.incomplete
        observed = corrections.observed_values(plan)
        if observed is not None:
            values[:, columns] = observed
            return values
        corrections.add_value_corrections(plan, values, columns)
        corrections.repair_cancelled(plan, values, columns, LOSS_LIMIT[plan.dtype])
    return values


def _expanded_values(plan, workspace, prepared):
    features = prepared.features
    values = workspace.values(prepared.n_rows)
    if plan.per_component:
        return _whitened_values(plan, workspace, prepared, values)
    if plan.n_groups == 1:
        return _product(plan.combined, features, values)
    n_linear = plan.n_linear
    # One small product per center for the linear part, written in place;
    # then the second-order part of all rows in one product.
    for g, start, stop in prepared.groups:
        np.matmul(
            plan.linear[g], features[:n_linear, start:stop], out=values[:, start:stop]
        )
    if plan.unit.n_second_order > 0:
        values += _product(
            plan.second, features[n_linear:], workspace.resp(prepared.n_rows)
        )
    return values


def _whitened_values(plan, workspace, prepared, values):
    """Values as sums of squares ``|P_k^T (x - m_k)|^2``, one component at a time.

    The exact path for ill-conditioned precisions (see
    ``WHITENING_LIMIT``), and the per-component layout where it is cheaper
    (see :func:`per_component_cheaper`): about twice the flops of the
    expansion, no second-order features, and no term larger than the form
    it sums to.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        whitened = _whitened_rows(plan, workspace, prepared)
        forms = prepared.forms
        if forms is None:
            forms = _gufuncs.einsum("kim,kim->km", whitened, whitened)
        np.multiply(forms, plan.scale, out=values)
        values += plan.offsets[:, np.newaxis].astype(plan.dtype)
    return values


def _whitened_rows(plan, workspace, prepared):
    """``P_k^T (x - m_k)`` for the rows of a chunk, shape (K, D, m).

    For well-conditioned precisions, one product ``P_k^T e`` for all
    components, minus ``P_k^T (m_k - c)`` of each row's own center c: the
    rounding of ``P_k^T z`` is that of ``|P_k| |z|``, and near its nearest
    center a row's e is no larger than its ``x - m_k`` (within a small
    factor), so splitting costs no digits. For ill-conditioned ones, one
    product per component of the rows minus its mean, checked for
    cancellation (:class:`_ExactRows`). Computed once per chunk, into the
    workspace.
    """
    if prepared.whitened is not None:
        return prepared.whitened
    n_components, n_features = plan.unit.n_components, plan.unit.n_features
    products = workspace.whitened(prepared.n_rows).reshape(n_components, n_features, -1)
    prepared.whitened = products
    if plan.whitened:
        prepared.forms = workspace.forms(prepared.n_rows)
        plan.exact_rows.whiten(
            products, prepared.forms, prepared, plan.centers_work, workspace
        )
        return products
    centered = prepared.features[1 : plan.n_linear]
    triangular = plan.triangular_rows
    if triangular is not None and products.size > SMALL_CHUNK_VALUES:
        for k in range(n_components):
            np.copyto(products[k], centered)
            triangular._whiten_in_place(k, products[k])
    else:
        np.matmul(
            plan.stacked_factors, centered, out=products.reshape(-1, products.shape[2])
        )
    # Rows are sorted by center.
    for g, start, stop in prepared.groups:
        products[..., start:stop] -= plan.whitened_shifts[g][..., np.newaxis]
    return products


# How far a whitened row's terms may exceed it, ``|P_k^T| |x - m_k|`` over
# ``|P_k^T (x - m_k)|``, before it is recomputed without cancellation
# (_ExactRows). The plain product errs by about eps times the terms, so the
# rows kept plain err by at most ~32 eps of themselves; a well-conditioned
# component's own rows stay below (about sqrt(D) times its factor's
# condition number).
ROW_CANCELLATION = 32.0

# Up to this many values of a chunk's whitened rows (K D m), _ExactRows
# whitens all components in one stacked product and recomputes the
# cancelled pairs of all of them together, and _weighted_gram makes one
# stacked product for all components: on tiny data (15 rows, K <= 9) a
# BLAS call and a dozen NumPy calls per component cost several times the
# arithmetic. Beyond it, one triangular product per component (half the
# flops) in blocks of the free buffers, and Gram products of only the
# rows of nonzero mass where those are few.
SMALL_CHUNK_VALUES = 2**14

# Indices below the diagonal, per dimension (np.tril_indices builds a mask).
_BELOW = {}


class _ExactRows:
    """Whitened rows ``P_k^T (x - m_k)`` of ill-conditioned precisions.

    Each component's rows are whitened directly from ``x - m_k``: no center
    enters, so nothing cancels through one. The product still cancels where
    ``x - m_k`` lies along a weak axis of the precision (a component
    spanning clusters far apart, or a mean the prior pulls away from its few
    rows): there ``P_k^T (x - m_k)`` is far smaller than its terms ``|P_k^T|
    |x - m_k|``, and the plain product errs by eps times the terms. Such
    pairs of row and component are found in two steps: a bound of the terms'
    norm by the rows' norms of ``P_k`` (one product with a vector), which
    clears nearly every pair of data whose precisions are ill-conditioned
    only through nearly constant features (digits), then the terms
    themselves for the pairs it leaves. Only the pairs that still cancel are
    recomputed: ``x - m_k`` kept exactly as its rounded value and error
    (Knuth's two-sum), times ``P_k`` as an error-free split product
    (:func:`skvi._covariance.wishart.accurate_product`, each factor split
    once).
    """

    def __init__(self, factors, means):
        self.means = means
        # By the triangle inequality over the columns of P_k^T (the rows of
        # P_k), ``| |P_k^T| |z| | <= sum_i |P_k[i]| |z_i|``.
        self.row_norms = np.sqrt(_gufuncs.einsum("kij,kij->ki", factors, factors))
        # P_k^T, each contiguous: BLAS multiplies it faster than a
        # transposed view.
        self.transposed = np.ascontiguousarray(np.swapaxes(factors, 1, 2))
        self._triangular = None
        # Each factor split once, when first needed.
        self._split = {}
        self._abs = {}

    @property
    def triangular(self):
        """Which P_k are upper triangular, as Cholesky factors are (trmm)."""
        if self._triangular is None:
            dims = self.transposed.shape[-1]
            if dims not in _BELOW:
                _BELOW[dims] = np.tril_indices(dims, -1)
            below = _BELOW[dims]
            # Below the diagonal of P_k: above that of P_k^T.
            above = self.transposed[:, below[1], below[0]]
            self._triangular = ~np.any(above, axis=1)
        return self._triangular

    def _abs_factor(self, k):
        """``|P_k^T|``, made once per component."""
        if k not in self._abs:
            self._abs[k] = np.abs(self.transposed[k])
        return self._abs[k]

    def _whiten_in_place(self, k, rows):
        """``rows = P_k^T rows`` for C-contiguous (D, m) ``rows``.

        P_k^T is lower triangular: as a triangular product (BLAS trmm, in
        place) it takes half the flops of a general one, adding the same
        nonzero terms.
        """
        if not (self.triangular[k] and rows.dtype == np.float64):
            np.matmul(self.transposed[k], rows.copy(), out=rows)
            return
        # rows^T (F-ordered) times the upper P_k (F-ordered) from the right.
        result = blas.dtrmm(
            1.0, self.transposed[k].T, rows.T, side=1, lower=0, overwrite_b=1
        )
        if not np.shares_memory(result, rows):
            rows[...] = result.T

    def whiten(self, products, forms, prepared, centers, workspace):
        """Every component's whitened rows of a chunk, into ``products``.

        ``products`` has shape (K, D, m), ``forms`` (K, m) receives their
        squared norms; ``centers`` are the plan's, which stand for the
        missing entries of a row (as ``e = 0`` does in the expansion).
        """
        dims, m = products.shape[1:]
        # Rows as columns (D, m), the layout of products: reductions and
        # broadcasts then run along whole rows of the arrays. In the
        # workspace: fresh arrays of a chunk's size cost page faults.
        buffers = workspace.exact()
        rows = buffers[0][: dims * m].reshape(dims, m)
        np.copyto(rows, prepared.rows.T)
        if prepared.incomplete is not None:
            for g, start, stop in prepared.groups:
                block = rows[:, start:stop]
                np.copyto(block, centers[g][:, np.newaxis], where=np.isnan(block))
        if (
            products.dtype == np.float64
            and len(self.means) * dims * m <= SMALL_CHUNK_VALUES
        ):
            self._whiten_stacked(rows, products, forms, prepared)
            return
        limit = ROW_CANCELLATION**2
        # Every component's x - m_k, its bound and its whitened rows, a
        # block of components at a time in the free buffers: the same
        # elementwise operations and one BLAS call per component as one at a
        # time, without the Python work per component.
        spare = buffers[1:].reshape(-1)
        block = max(len(spare) // max(dims * m, 1), 1)
        bounds = np.empty((len(self.means), m))
        for start in range(0, len(self.means), block):
            stop = min(start + block, len(self.means))
            np.subtract(
                rows, self.means[start:stop, :, np.newaxis], out=products[start:stop]
            )
            absolute = spare[: (stop - start) * dims * m].reshape(stop - start, dims, m)
            np.abs(products[start:stop], out=absolute)
            # A matrix-vector product (BLAS gemv) per component.
            bounds[start:stop] = np.matmul(
                self.row_norms[start:stop, np.newaxis, :], absolute
            )[:, 0]
        for k in range(len(self.means)):
            self._whiten_in_place(k, products[k])
        _gufuncs.einsum("kim,kim->km", products, products, out=forms)
        cancelled = _may_cancel(bounds, forms, prepared)
        if not cancelled.any():
            return
        for k in np.flatnonzero(cancelled.any(axis=1)):
            mean = self.means[k]
            columns = np.flatnonzero(cancelled[k])
            # Five (D, n) blocks, one view.
            work = buffers[1:, : dims * len(columns)].reshape(5, dims, len(columns))
            np.take(rows, columns, axis=1, out=work[0], mode="clip")
            np.subtract(work[0], mean[:, np.newaxis], out=work[1])
            terms = self._abs_factor(k) @ np.abs(work[1], out=work[1])
            still = (
                _gufuncs.einsum("im,im->m", terms, terms) > limit * forms[k, columns]
            )
            columns = columns[still]
            if len(columns) == 0:
                continue
            if k not in self._split:
                self._split[k] = SplitFactor(self.transposed[k])
            # Five (D, n) blocks, one view.
            work = buffers[1:, : dims * len(columns)].reshape(5, dims, len(columns))
            np.take(rows, columns, axis=1, out=work[0], mode="clip")
            exact = _exact_difference(work, mean[:, np.newaxis], self._split[k])
            products[k][:, columns] = exact
            forms[k, columns] = _gufuncs.einsum("im,im->m", exact, exact)

    def _whiten_stacked(self, rows, products, forms, prepared):
        """:meth:`whiten` of a small chunk, every component at once.

        The same two checks and the same exact recomputation, stacked over
        the components (and over the pairs of row and component that
        cancel) instead of looped: a pair's split, products and sums are
        those of its component's alone; only the BLAS kernels differ (a
        general product for the triangular one), by rounding.
        """
        limit = ROW_CANCELLATION**2
        differences = np.subtract(rows, self.means[:, :, np.newaxis])
        np.abs(differences, out=products)
        bounds = np.matmul(self.row_norms[:, np.newaxis, :], products)[:, 0]
        np.matmul(self.transposed, differences, out=products)
        _gufuncs.einsum("kim,kim->km", products, products, out=forms)
        cancelled = _may_cancel(bounds, forms, prepared)
        if not cancelled.any():
            return
        components, columns = np.nonzero(cancelled)
        # The terms themselves, pair by pair: (P, D) each.
        pairs = np.abs(differences[components, :, columns])
        absolute = np.abs(self.transposed)
        terms = np.matmul(absolute[components], pairs[:, :, np.newaxis])[..., 0]
        still = _gufuncs.einsum("pi,pi->p", terms, terms)
        still = still > limit * forms[components, columns]
        components, columns = components[still], columns[still]
        if len(components) == 0:
            return
        split = SplitFactor(self.transposed[components])
        work = np.empty((5, len(components), rows.shape[0], 1))
        np.copyto(work[0, ..., 0], rows[:, columns].T)
        if not (split.finite and np.isfinite(work[0]).all()):
            # A factor or row beyond the split's range: as the loop does.
            self._recompute_apart(rows, products, forms, components, columns)
            return
        means = self.means[components][:, :, np.newaxis]
        exact = _exact_difference(work, means, split)[..., 0]
        products[components, :, columns] = exact
        forms[components, columns] = _gufuncs.einsum("pi,pi->p", exact, exact)

    def _recompute_apart(self, rows, products, forms, components, columns):
        """The exact recomputation of given pairs, one component at a time."""
        for k in np.unique(components):
            chosen = columns[components == k]
            if k not in self._split:
                self._split[k] = SplitFactor(self.transposed[k])
            mean = self.means[k][:, np.newaxis]
            work = np.empty((5, rows.shape[0], len(chosen)))
            np.take(rows, chosen, axis=1, out=work[0], mode="clip")
            exact = _exact_difference(work, mean, self._split[k])
            products[k][:, chosen] = exact
            forms[k, chosen] = _gufuncs.einsum("im,im->m", exact, exact)


def _may_cancel(bounds, forms, prepared):
    """The pairs of component and row whose whitened product may cancel.

    Those whose bound of the terms' norm (``bounds``, overwritten by its
    square) exceeds ``ROW_CANCELLATION`` times the product's norm
    (``forms``, its square); rows with missing entries take their values
    and moments apart, and are never such pairs.
    """
    with np.errstate(invalid="ignore"):
        cancelled = np.square(bounds, out=bounds) > ROW_CANCELLATION**2 * forms
    if prepared.incomplete is not None:
        cancelled[:, prepared.incomplete[0]] = False
    return cancelled


def _exact_difference(work, mean, factor):
    """``P^T (x - m)`` for the columns x of ``work[0]`` (D, n), accurately.

    ``x - m = d + err`` exactly (two-sum), and ``P^T d`` as a split product
    (``factor``, the :class:`SplitFactor` of ``P^T``), which errs by about
    eps of the result however its terms cancel. ``work``, five (D, n)
    arrays, holds the intermediate values (``work[0]`` is overwritten); the
    result is one of them. ``mean`` broadcasts against ``work[0]``: (D, 1),
    or (P, D, 1) for stacks of (D, 1) columns, each with its own factor.
    """
    rows, difference, error = work[:3]
    np.subtract(rows, mean, out=difference)
    moved = np.subtract(difference, rows, out=error)
    # (rows - (difference - moved)) - (mean + moved), in place.
    rows -= np.subtract(difference, moved, out=work[3])
    error += mean
    np.subtract(rows, error, out=error)
    return factor.times(difference, error, (rows, work[3], work[4]))


def _framed_rows(plan, workspace, prepared):
    """``Q_k^T (x - mu_k)`` in the plan's frame (mu, Q), shape (J, D, m).

    Each row computed without cancellation (:class:`_ExactRows`); the
    values of the plan's own state do not need them.
    """
    products, forms = workspace.framed(prepared.n_rows)
    with np.errstate(over="ignore", invalid="ignore"):
        plan.frame_rows.whiten(products, forms, prepared, plan.centers_work, workspace)
    return products


def _add_whitened(plan, workspace, prepared, weighted_resp, whitened):
    """Add a chunk's whitened sums (see WhitenedMoments) in float64.

    In a plan's frame, those of its framed components only.
    """
    if plan.frame is not None:
        rows = _framed_rows(plan, workspace, prepared)
        weighted_resp = weighted_resp[plan.frame[2]]
    else:
        rows = _whitened_rows(plan, workspace, prepared)
    rows = np.asarray(rows, dtype=float)
    masses = np.asarray(weighted_resp, dtype=float)
    whitened.masses += masses.sum(axis=1)
    # A matrix-vector product each (BLAS): einsum's loop took 4x as long.
    whitened.first += np.matmul(rows, masses[:, :, np.newaxis])[..., 0]
    whitened.second += _weighted_gram(rows, masses, workspace.gram())


def _weighted_gram(rows, masses, buffer=None):
    """``sum_m masses[k, m] z z^T`` over the columns z of ``rows[k]``, (K, D, D).

    ``rows`` is (K, D, m) or, shared by all components, (D, m). Each as
    ``B B^T`` with ``B = z sqrt(mass)``, which BLAS computes as a symmetric
    rank-m update (half the flops of a general product, exactly symmetric).
    Where at most ``SPARSE_GRAM_FRACTION`` of a component's masses are
    nonzero (responsibilities that underflowed to exactly 0: well separated
    components), B keeps only those columns: the others add exact zeros.
    ``buffer``, optional, holds B: a flat array of at least D m values of
    the rows' dtype (a fresh one costs page faults on every chunk).
    """
    roots = np.sqrt(masses)
    dims, m = rows.shape[-2:]
    # count_nonzero with an axis is this, through a Python layer.
    used = np.add.reduce(roots != 0, axis=1)
    sparse = used <= SPARSE_GRAM_FRACTION * m
    if masses.shape[0] * dims * m <= SMALL_CHUNK_VALUES and not sparse.any():
        # A small chunk: one stacked product for all components, unless a
        # row that overflowed meets a zero mass (0 x inf). (A sparse
        # component keeps only its columns, below: BLAS may block a sum
        # with zeros in it otherwise than the sum without, and its Gram is
        # that of its rows of mass, bit for bit, whatever the kernel.)
        scaled = np.multiply(rows, roots[:, np.newaxis, :])
        scaled = scaled.astype(rows.dtype, copy=False)
        if np.isfinite(scaled).all():
            gram = np.matmul(scaled, np.swapaxes(scaled, 1, 2))
            return gram.astype(float, copy=False)
    out = np.empty((masses.shape[0], dims, dims))
    if buffer is None or buffer.dtype != rows.dtype or buffer.size < dims * m:
        buffer = np.empty(dims * m, dtype=rows.dtype)
    buffer = buffer[: dims * m]
    for k in np.flatnonzero(sparse):
        source = rows[k] if rows.ndim == 3 else rows
        used = np.flatnonzero(roots[k])
        scaled = buffer[: dims * len(used)].reshape(dims, len(used))
        np.take(source, used, axis=1, out=scaled, mode="clip")
        scaled *= roots[k, used]
        out[k] = scaled @ scaled.T
    if sparse.all():
        return out
    # The other components' B in blocks of at most GRAM_BLOCK_VALUES: a
    # stacked product makes the same rank update per component.
    dense = np.flatnonzero(~sparse)
    block = max(GRAM_BLOCK_VALUES // max(dims * m, 1), 1)
    for start in range(0, len(dense), block):
        members = dense[start : start + block]
        if len(members) == 1:
            k = members[0]
            scaled = buffer.reshape(dims, m)
            np.multiply(rows[k] if rows.ndim == 3 else rows, roots[k], out=scaled)
            out[k] = scaled @ scaled.T
            continue
        source = rows[members] if rows.ndim == 3 else rows
        scaled = np.multiply(source, roots[members, np.newaxis, :])
        # As the buffer above would hold it.
        scaled = scaled.astype(rows.dtype, copy=False)
        out[members] = np.matmul(scaled, np.swapaxes(scaled, 1, 2))
    return out


class WhitenedMoments:
    """Moments of q(Z) in each component's whitened frame, at one state.

    For the means ``m_k`` and Cholesky factors ``P_k`` of the state an
    E-step evaluated (the precisions ``Lambda_k = P_k P_k^T``), ``first[k]
    = sum_n w_n r_nk y_nk`` and ``second[k] = sum_n w_n r_nk y_nk
    y_nk^T`` with ``y_nk = P_k^T (x_n - m_k)``. They give the data term
    ``sum_n w_n r_nk |Q^T (x_n - mu)|^2`` at any other state (mu, Q)
    without cancellation (:func:`skvi._elbo.expected_log_joint`), where the
    scatter about the means, rounded entry by entry, loses the digits of
    the condition number of Lambda_k. Additive over rows for one state.
    """

    def __init__(self, means, factors, masses, first, second):
        self.means = means
        self.factors = factors
        self.masses = masses
        self.first = first
        self.second = second

    def same_frame(self, other):
        """Whether ``other`` was taken at the same state."""
        return np.array_equal(self.means, other.means) and np.array_equal(
            self.factors, other.factors
        )

    def copy(self):
        return WhitenedMoments(
            self.means,
            self.factors,
            self.masses.copy(),
            self.first.copy(),
            self.second.copy(),
        )

    def __iadd__(self, other):
        self.masses += other.masses
        self.first += other.first
        self.second += other.second
        return self

    def to_dict(self):
        """Plain arrays, for a fitted attribute that persists."""
        names = ("means", "factors", "masses", "first", "second")
        return {name: np.array(getattr(self, name)) for name in names}

    @classmethod
    def from_dict(cls, stored):
        """The moments :meth:`to_dict` stored (None gives None)."""
        if stored is None:
            return None
        names = ("means", "factors", "masses", "first", "second")
        return cls(*(np.array(stored[name], dtype=float) for name in names))

    def merged(self, j, k):
        """These moments with component k's rows given to component j.

        The rows of k enter j's frame as ``y_j = A^T y_k + c``, with ``A =
        P_k^-1 P_j`` (the identity for a shared precision) and ``c = P_j^T
        (m_k - m_j)``: a merge move's q(Z) keeps the exact data term.
        """
        result = self.copy()
        mass = self.masses[k]
        if mass > 0:
            change = _frame_change(self.factors[k], self.factors[j])
            offset = self.factors[j].T @ (self.means[k] - self.means[j])
            first = change.T @ self.first[k]
            cross = np.outer(first, offset)
            result.masses[j] += mass
            result.first[j] += first + mass * offset
            result.second[j] += (
                change.T @ self.second[k] @ change
                + cross
                + cross.T
                + mass * np.outer(offset, offset)
            )
        result.masses[k] = 0.0
        result.first[k] = 0.0
        result.second[k] = 0.0
        return result

    def _frame_changes(self, factors):
        """Each ``P_k^-1 Q_k`` (:func:`_frame_changes`) for upper factors Q.

        Kept for the last ``factors``: an M-step's check of its moments
        (:meth:`rounding_losses`) and its half-step (:meth:`quadratic`)
        read the same.
        """
        kept = self.__dict__.get("_changes")
        if kept is not None and kept[0] is self.factors:
            if np.array_equal(kept[1], factors):
                return kept[2]
        changes = _frame_changes(self.factors, factors)
        self._changes = (self.factors, np.array(factors, copy=True), changes)
        return changes

    def scatters(self):
        """Each component's scatter of y about its mean, shape (K, D, D)."""
        safe = np.where(self.masses > 0, self.masses, 1.0)[:, np.newaxis]
        means = self.first / safe
        scatters = self.second - self.first[:, :, np.newaxis] * means[:, np.newaxis]
        scatters[self.masses <= 0] = 0.0
        return 0.5 * (scatters + np.swapaxes(scatters, 1, 2))

    def data_scatters(self):
        """Each component's scatter about its mean in the data's frame, (K, D, D).

        ``S_k = P_k^-T W_k P_k^-1`` for the whitened scatters ``W_k``
        (:meth:`scatters`), taken about each component's own mean: summed
        from the rows about a center instead, the scatter cancels the rows'
        spread about that center (clusters far apart). On digits (D = 64,
        K = 10) its entries were 40 to 600 times closer to a two-pass
        longdouble reference than the rank update's (relative to
        ``sqrt(S_ii S_jj)``), except in a fit's first iteration, whose frames
        are far from the new covariances (up to 8 times further).
        """
        inverses = triangular_inverses(self.factors, lower=False)
        scatters = np.swapaxes(inverses, 1, 2) @ self.scatters() @ inverses
        return 0.5 * (scatters + np.swapaxes(scatters, 1, 2))

    def rounding_growth(self, reg_covar, empty):
        """How much the whitened scatters amplified rounding (:meth:`scatters`).

        As ``CovarianceUnit.moment_rounding_growth`` in these frames: each
        ``W_k`` is ``sum r y y^T - N_k ybar ybar^T``, which cancels
        ``N_k ybar_j^2`` against the variance of coordinate j, regularised
        as the M-step takes it (``W_k / N_k + reg_covar P_k^T P_k``).
        Components flagged ``empty`` count as none.
        """
        masses = np.where(empty, 0.0, self.masses)
        safe = np.where(masses > 0, masses, 1.0)[:, np.newaxis]
        mean = self.first / safe
        cancelled = masses[:, np.newaxis] * mean**2
        squares = _gufuncs.einsum("kij,kij->kj", self.factors, self.factors)
        second = np.diagonal(self.second, axis1=1, axis2=2)
        # Rounded below 0 (nothing left): infinite growth.
        variances = np.maximum(second - cancelled, 0.0)
        variances += masses[:, np.newaxis] * reg_covar * squares
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(cancelled > 0, cancelled / variances, 0.0)
        return 1.0 + float(np.max(ratios, initial=0.0))

    def rounding_losses(self, factors):
        """How much the data term at upper factors ``Q_k`` loses in these sums.

        In these frames the precision is ``A A^T``, ``A = P_k^-1 Q_k`` (near
        the identity while the precisions change little), and the whitened
        scatter rounds relative to ``N_k s_i s_j``, ``s`` the root mean
        square of the whitened rows: the data term errs by about eps times
        ``s^T |A A^T| s``, per D (the form's size at the M-step's optimum).
        1 for a component without mass.
        """
        changes = self._frame_changes(factors)
        precisions = changes @ np.swapaxes(changes, 1, 2)
        safe = np.where(self.masses > 0, self.masses, 1.0)[:, np.newaxis]
        second = np.diagonal(self.second, axis1=1, axis2=2)
        spreads = np.sqrt(np.maximum(second, 0.0) / safe)
        losses = _gufuncs.einsum("ki,kij,kj->k", spreads, np.abs(precisions), spreads)
        losses /= precisions.shape[-1]
        return np.where(self.masses > 0, losses, 1.0)

    def quadratic(self, means, factors):
        """``sum_k sum_n w_n r_nk |Q_k^T (x_n - mu_k)|^2`` at ``(mu, Q)``.

        With ``A = P^-1 Q`` and ``b = Q^T (mu - m)``, ``Q^T (x - mu) = A^T y
        - b``; the scatter of y about its mean is taken first, so nothing
        large cancels when the means have moved.
        """
        changes = self._frame_changes(factors)
        # All components at once, each with the same arithmetic (and BLAS
        # calls) as alone; summed in component order.
        masses = self.masses
        safe = np.where(masses > 0, masses, 1.0)
        mean = self.first / safe[:, np.newaxis]
        scatter = self.second - self.first[:, :, np.newaxis] * mean[:, np.newaxis, :]
        transposed = np.swapaxes(changes, 1, 2)
        offset = np.matmul(transposed, mean[:, :, np.newaxis])[..., 0]
        moved = (means - self.means)[:, :, np.newaxis]
        offset -= np.matmul(np.swapaxes(factors, 1, 2), moved)[..., 0]
        spreads = np.sum(np.matmul(transposed, scatter) * transposed, axis=(1, 2))
        lengths = np.matmul(offset[:, np.newaxis, :], offset[:, :, np.newaxis])
        total = 0.0
        for k in np.flatnonzero(masses > 0):
            total += float(spreads[k])
            total += masses[k] * float(lengths[k, 0, 0])
        return total


def _frame_changes(sources, targets):
    """``P_k^-1 Q_k`` for upper factors ``P_k = sources[k]``, ``Q_k = targets[k]``.

    As ``I + P^-1 (Q - P)``: consecutive factors of a fit nearly agree, and
    the solve then errs by eps times the condition number of P relative to
    the small ``Q - P`` rather than to Q (where clusters lie far apart that
    number reaches 1e8). By LAPACK directly (scipy's wrapper costs
    milliseconds); exactly the identity where they are equal. Shape
    (K, D, D).
    """
    eye = np.eye(sources.shape[-1])
    changes = np.empty(np.shape(sources))
    steps = targets - sources
    same = np.all(sources == targets, axis=(1, 2))
    for k in range(len(sources)):
        if same[k]:
            changes[k] = eye
        else:
            change, _ = lapack.dtrtrs(sources[k], steps[k], lower=0)
            np.add(change, eye, out=changes[k])
    return changes


def _frame_change(source, target):
    """``P^-1 Q`` of one pair of upper factors (:func:`_frame_changes`)."""
    return _frame_changes(source[np.newaxis], target[np.newaxis])[0]


def per_component_cheaper(unit, precisions_cholesky, dtype):
    """Whether the per-component layout is cheaper than the expansion.

    Only for components with full precision factors (K, D, D). The costs
    per row are modelled as in ``LAYOUT_COSTS``: the expansion writes and
    reads P features and makes two thin products of K P multiply-adds;
    per component, K triangular products (a stacked (K D, D) one in float32
    and on small chunks) and K rank-updates (2 to 3 K D^2 flops in
    well-shaped BLAS calls) plus K D squares and scalings. Chunks make the
    costs per row, so the number of rows does not enter.
    """
    shape = (unit.n_components, unit.n_features, unit.n_features)
    if np.shape(precisions_cholesky) != shape:
        return False
    per_feature, per_product, per_flop, per_entry = LAYOUT_COSTS[np.dtype(dtype)]
    k, d = unit.n_components, unit.n_features
    n_features = 1 + d + unit.n_second_order
    expanded = n_features * (per_feature + per_product * k)
    per_component = k * d * (per_flop * d + per_entry)
    return per_component < expanded


def _product(coefficients, features, out):
    """``coefficients @ features`` into ``out``, in the faster orientation.

    With few components and thousands of features per row, OpenBLAS runs
    the transposed product about 1.4x faster.
    """
    if features.shape[0] < TRANSPOSED_PRODUCT_FEATURES:
        return np.matmul(coefficients, features, out=out)
    out[...] = (features.T @ coefficients.T).T
    return out


def row_values(plan, chunk, dtype=None, marginal=False, conditionals=False):
    """Values of every component for the rows of ``chunk``, shape (K, m).

    Includes the unit's shared row term, so these are the full
    ``scale * quadratic + offset``, in the original row order and in
    ``dtype`` (default: the plan's); a row with missing entries gets those of
    its observed coordinates. With ``marginal``, also returns what a density
    of the observed coordinates needs besides: ``log det Lambda_mm`` of each
    row and component (0 for a complete row), shape (K, m), and the number
    of observed coordinates of each row, shape (m,). With ``conditionals``
    (not with ``marginal``), also returns the list of
    :func:`conditional_moments` of the chunk, from the same factorisations
    of the missing entries' blocks.
    """
    workspace = _Workspace(plan, chunk.shape[0])
    prepared = _prepare(plan, workspace, chunk)
    if conditionals:
        moments = list(_conditional_moments(plan, prepared))
    values = _values(plan, workspace, prepared)
    shared = _shared_row_term(plan, prepared.features[1 : plan.n_linear])
    if shared is not None:
        # Rows so far out that this overflows are repaired below.
        with np.errstate(over="ignore", invalid="ignore"):
            values += plan.scale * shared
    values = values.astype(dtype or plan.dtype)
    _repaired_maxima(plan, values, prepared)
    if marginal:
        log_det = np.zeros(values.shape)
        observed = np.full(values.shape[1], plan.unit.n_features)
        if prepared.incomplete is not None:
            columns, corrections = prepared.incomplete
            log_det[:, columns] = corrections.log_det
            observed[columns] -= corrections.n_missing
        return tuple(
            _unsorted(part, prepared.order) for part in (values, log_det, observed)
        )
    if conditionals:
        return _unsorted(values, prepared.order), moments
    return _unsorted(values, prepared.order)


def _shared_row_term(plan, centered):
    """The unit's row term the values left out (tied), per row, or None.

    Whitened values (_whitened_values) hold each row's whole form.
    """
    if plan.whitened:
        return None
    return plan.unit.row_quadratic(centered, plan.precisions_cholesky)


def conditional_moments(plan, chunk):
    """Conditional moments of the missing entries of ``chunk``'s rows.

    Yields, per group of rows with the same number s of missing entries,
    ``(rows, missing, means, covariances)``: the rows' indices in ``chunk``,
    their missing coordinates (n_s, s) and, per component, the conditional
    mean (K, n_s, s) and covariance (K, n_s, s, s) given the observed
    entries. Nothing for a chunk without missing entries.
    """
    prepared = _prepare(plan, _Workspace(plan, chunk.shape[0]), chunk)
    return _conditional_moments(plan, prepared)


def _conditional_moments(plan, prepared):
    """:func:`conditional_moments` of a prepared chunk."""
    if prepared.incomplete is None:
        return
    columns, corrections = prepared.incomplete
    order = np.arange(prepared.n_rows) if prepared.order is None else prepared.order
    original = order[columns]
    for members, missing, means, covariances in corrections.conditional_moments(plan):
        yield original[members], missing, means, covariances


def _unsorted(array, order):
    """A chunk's (..., m) array back in the original row order."""
    if order is None:
        return array
    out = np.empty_like(array)
    out[..., order] = array
    return out


def _repaired_maxima(plan, values, prepared, out=None):
    """Column maxima of ``values``, after repairing columns that overflowed.

    A row so far from the centers that its features overflow gets NaN or
    infinite values from the expansion; such rows (rare) are recomputed one
    at a time, in float64 and scaled, then clipped to half the largest value
    of the dtype: finite values whose differences still rank the components.
    """
    top = np.max(values, axis=0, out=out)
    if np.isfinite(top).all():
        return top
    bad = np.flatnonzero(~np.isfinite(top))
    if bad.size:
        limit = 0.5 * np.finfo(values.dtype).max
        for column in bad:
            row = prepared.rows[column]
            repaired = _scaled_values(plan, row)
            clipped = np.clip(repaired, -limit, limit)
            if plan.scale < 0 and np.any(clipped != repaired):
                ranked = _far_row_differences(plan, row)
                if ranked is not None:
                    # The best component's value clipped, the others as far
                    # below it as they are (-inf where that overflows):
                    # clipping them all alike made them tie (review 17).
                    differences, best = ranked
                    clipped = clipped[best] + differences
            with np.errstate(over="ignore"):
                values[:, column] = clipped  # (-inf where below the dtype's)
        top[bad] = values[:, bad].max(axis=0)
    return top


def _far_row_differences(plan, row):
    """Log-densities of a far complete row less the best one's, and its index.

    For a row so far out that its log-densities overflow, with ``u`` the
    row less a mean in units of its largest offset S, each value is
    ``-S^2 q_k / 2`` to the leading order, ``q_k`` the form of ``u``: the
    smaller ``q_k``, the larger the value, by ``S^2`` times the difference
    (-inf where that overflows). Components whose forms tie there (equal
    precisions: tied, EEI, EII) differ by ``S u^T Lambda (m_k - m_j)``,
    the next order, finite. The differences returned are those that
    ``exp`` resolves: -inf, or the offsets' between components that tie to
    the last order. None for a row with missing entries (left to the
    clipping).
    """
    row = np.asarray(row, dtype=float)
    if np.isnan(row).any():
        return None
    precisions = plan.precisions
    with np.errstate(over="ignore", invalid="ignore"):
        diffs = row - plan.means
        scale = np.max(np.abs(diffs))
        if not (np.isfinite(scale) and scale > 0):
            return None
        forms = plan.unit.mahalanobis(diffs / scale, precisions)
        best = int(np.argmin(forms))
        # S (S (q_k - q_best)), in that order: S^2 alone may overflow.
        differences = plan.scale * (scale * (scale * (forms - forms[best])))
    tied = np.flatnonzero(forms == forms[best])
    shared = plan.unit.name == "tied"  # one precision in its layout
    if tied.size > 1 and (shared or _equal_precisions(precisions, tied)):
        # u^T Lambda d by polarization, d = m_k - m_best in units of its
        # largest entry: ((u + d)^T Lambda (u + d) - (u - d)^T ...) / 4.
        u = diffs[best] / scale
        for k in tied[tied != best]:
            offset = plan.means[k] - plan.means[best]
            size = np.max(np.abs(offset))
            if size == 0:
                continue
            d = offset / size
            pair = precisions if shared else np.stack([precisions[best]] * 2)
            plus, minus = plan.unit.mahalanobis(np.stack([u + d, u - d]), pair)
            # q_k - q_best = -2 S size u^T Lambda d + O(1).
            with np.errstate(over="ignore"):
                differences[k] = plan.scale * (-2.0 * scale * size * (plus - minus) / 4)
    # At a row this far out every difference not 0 is beyond what exp
    # resolves (S^2 or S times a number not 0, S above 1e19): the
    # components short of the largest value get -inf, those at it differ
    # by their offsets (the weights'), the only terms of O(1) left.
    differences = np.where(np.isnan(differences), -np.inf, differences)
    top = np.max(differences)
    if top == -np.inf:
        return None  # no component ranks (left to the clipping)
    leading = np.flatnonzero(differences == top)
    best = int(leading[0])
    offsets = np.where(np.isfinite(plan.offsets), plan.offsets, -np.inf)
    differences = np.full(len(forms), -np.inf)
    with np.errstate(invalid="ignore"):
        differences[leading] = offsets[leading] - offsets[best]
    differences = np.where(np.isnan(differences), -np.inf, differences)
    return differences, best


def _equal_precisions(precisions, components):
    """Whether the given components' precisions (one each) are equal."""
    first = precisions[components[0]]
    return all(np.array_equal(precisions[k], first) for k in components[1:])


def _scaled_values(plan, row):
    """``scale * quadratic + offset`` of one row, without overflow or NaN."""
    diffs = np.asarray(row, dtype=float) - plan.means
    spread = np.max(np.abs(diffs), axis=1)
    spread[spread == 0] = 1.0
    with np.errstate(over="ignore"):
        quadratic = spread**2 * plan.unit.mahalanobis(
            diffs / spread[:, np.newaxis], plan.precisions
        )
    offsets = np.where(np.isfinite(plan.offsets), plan.offsets, -np.inf)
    with np.errstate(invalid="ignore"):
        values = plan.scale * quadratic + offsets
    # NaN where a missing entry (or inf - inf) met the row's overflow: as far
    # as that, in the direction of the scale (a log density's -inf, a
    # quadratic form's +inf, which the variational predictive reads).
    return np.where(np.isnan(values), np.copysign(np.inf, plan.scale), values)


def normalize_in_place(values, row_weights=None):
    """Turn (K, m) log-values into responsibilities, in place.

    Returns the log-sum-exp of each column; ``values`` then holds
    ``r_nk``, or ``w_n r_nk`` if ``row_weights`` are given.
    """
    top = values.max(axis=0)
    values -= top
    _exp_log_ratios(values, values)
    total = values.sum(axis=0)
    log_norm = np.log(total)
    log_norm += top
    if row_weights is None:
        values /= total
    else:
        np.divide(row_weights, total, out=total)
        values *= total
    return log_norm


def _exp_log_ratios(log_ratios, out):
    """``exp`` of log-ratios (all <= 0), underflow flushed to exactly 0."""
    floor = EXP_FLOOR[log_ratios.dtype]
    if floor is None or log_ratios.min() >= floor:
        return np.exp(log_ratios, out=out)
    # Against a row of floors, broadcast: numpy's maximum with a scalar took
    # 1.4x as long (40 us for 32 x 2,688 values).
    floors = np.full(log_ratios.shape[-1], floor, dtype=log_ratios.dtype)
    np.maximum(log_ratios, floors, out=log_ratios)
    np.exp(log_ratios, out=out)
    out -= np.exp(floor)
    return out


def _weighted_posterior(top, values, resp, row_weights, scratch):
    """Responsibilities ``w_n r_nk`` into ``resp``, from (K, m) log rho.

    ``top`` holds the column maxima of ``values``, which is used as
    scratch, as are the two vectors of ``scratch``. Returns each row's log
    normaliser (in ``top``) and the weighted entropy of
    the chunk, ``sum_n w_n [log total_n - sum_k r_nk (v_nk - top_n)]``:
    summed from its non-negative terms rather than derived as a difference
    of log normaliser and expected log rho, which would cancel badly for
    sharp posteriors.
    """
    values -= top
    _exp_log_ratios(values, resp)
    total, log_total = scratch
    np.sum(resp, axis=0, out=total)
    np.log(total, out=log_total)
    np.divide(row_weights, total, out=total)
    resp *= total
    entropy = float(np.dot(row_weights, log_total)) - float(np.vdot(resp, values))
    top += log_total
    return top, entropy


class StatisticsPass:
    """Running sums of one pass over rows, about the centers of ``plan``.

    Feed chunks with :meth:`add_optimal` (the optimal q(Z) of the plan's
    values: an E-step) or :meth:`add_assigned` (given responsibilities), then
    read the additive statistics with :meth:`totals`. Given ``pairs`` of
    components, an E-step also sums the entropies a merge move needs
    (:meth:`add_optimal`). Passes over different rows with one plan add up
    (``+=``); ``buffers``, another such pass not adding rows meanwhile,
    lends its work buffers (a thread's passes over successive chunks).
    """

    def __init__(self, plan, chunk_rows, pairs=None, buffers=None):
        self.plan = plan
        self.pairs = pairs
        self.component_entropy = self.pair_entropy = None
        if pairs is not None:
            self.component_entropy = np.zeros(plan.unit.n_components)
            self.pair_entropy = np.zeros(len(pairs))
        unit = plan.unit
        self.first = np.zeros((plan.n_groups, unit.n_components, plan.n_linear))
        self.second = None
        self.total_weight = 0.0
        self.log_normalizer = 0.0
        self.entropy = 0.0
        # Sums of rows with missing entries about each component's own
        # reference: counts (K,), first (K, D), dense second (K, D, D);
        # None until such a row comes.
        self.own_counts = self.own_first = self.own_second = None
        # With whitened values: sums of w r y and w r y y^T of the rows
        # whitened by each component, y = P_k^T (x - m_k) (float64), until a
        # row with missing entries comes (see WhitenedMoments).
        # Given a frame, they are taken in the frame's state instead.
        self.whitened = None
        if plan.whitened or plan.frame is not None:
            dims = unit.n_features
            if plan.frame is not None:
                means, factors, _ = plan.frame
            else:
                means = plan.means
                factors = unit.component_factors(plan.precisions_cholesky)
            count = len(means)
            self.whitened = WhitenedMoments(
                means,
                factors,
                np.zeros(count),
                np.zeros((count, dims)),
                np.zeros((count, dims, dims)),
            )
        # Whether the second moments come from the whitened ones instead of
        # a rank update of their own (see _derives); None until a chunk comes.
        self._derived = None
        self._optimal = False
        if buffers is None:
            self._workspace = _Workspace(plan, chunk_rows)
        else:
            # Another pass's work buffers, free while this one adds rows.
            self._workspace = buffers._workspace

    def __iadd__(self, other):
        """Add the sums of ``other``, a pass over other rows with the same plan."""
        self.first += other.first
        if other.second is not None:
            if self.second is None:
                self.second = other.second.copy()
            else:
                self.second += other.second
        self.total_weight += other.total_weight
        self.log_normalizer += other.log_normalizer
        self.entropy += other.entropy
        if self.pairs is not None:
            self.component_entropy += other.component_entropy
            self.pair_entropy += other.pair_entropy
        if other.own_counts is not None:
            if self.own_counts is None:
                self.own_counts = other.own_counts.copy()
                self.own_first = other.own_first.copy()
                self.own_second = other.own_second.copy()
            else:
                self.own_counts += other.own_counts
                self.own_first += other.own_first
                self.own_second += other.own_second
        if self.whitened is not None:
            if other.whitened is None:
                self.whitened = None
            else:
                self.whitened += other.whitened
        self._agree(other._derived)
        self._optimal = self._optimal or other._optimal
        return self

    def _derives(self, complete):
        """Whether a chunk's second moments come from its whitened moments.

        With whitened rows, ``sum w r e e^T`` is the whitened scatter taken
        back to the data's frame (:meth:`WhitenedMoments.data_scatters`):
        it needs no rank update of its own, and rounds relative to each
        component's own spread rather than the rows' spread about their
        center. Only for passes known to have no missing entries
        (``complete``), whose whitened moments cannot be dropped.
        """
        derived = bool(
            complete
            and self.plan.derives_second
            and self.plan.whitened
            and self.plan.frame is None
            and self.whitened is not None
        )
        self._agree(derived)
        return derived

    def _agree(self, derived):
        """Record how a pass's chunks take their second moments; all alike."""
        if derived is None:
            return
        if self._derived is None:
            self._derived = derived
        elif self._derived != derived:
            raise ValueError("A pass's chunks must all have complete rows, or none.")
        if self._derived and self.whitened is None:
            raise RuntimeError("Derived second moments lost their whitened moments.")

    def add_optimal(
        self, chunk, row_weights, complete=False, patterns=None, columns=None
    ):
        """Add rows with the responsibilities the plan's values give.

        With ``pairs``, also adds ``-sum_n w_n r_nk log r_nk`` of each
        component and ``-sum_n w_n s_n log s_n``, ``s_n = r_nj + r_nk``, of
        each pair (j, k): the entropy of q(Z) with the two merged.
        ``complete``: the rows are known to have no missing entry.
        ``patterns``: what keeps the chunk's missing entries from pass to
        pass (skvi._missing.FoundPatterns.for_rows), or None.
        """
        plan = self.plan
        workspace = self._workspace
        prepared = _prepare(
            plan,
            workspace,
            chunk,
            complete=complete,
            patterns=patterns,
            columns=columns,
        )
        weights = _sorted(row_weights, prepared.order)
        values = _values(plan, workspace, prepared)
        top, work_weights, total, log_total = workspace.row_vectors(prepared.n_rows)
        top = _repaired_maxima(plan, values, prepared, out=top)
        resp = workspace.resp(prepared.n_rows)
        np.copyto(work_weights, weights)
        log_norm, entropy = _weighted_posterior(
            top, values, resp, work_weights, (total, log_total)
        )
        self.log_normalizer += float(np.dot(weights, log_norm))
        self.entropy += entropy
        if self.pairs is not None:
            self._accumulate_merge_entropies(resp, values, log_total)
        self._optimal = True
        self._add_whitened(prepared, resp)
        if plan.frame is not None:
            # The caller has this q(Z)'s other moments (an E-step's).
            return
        # Each row's responsibilities sum to 1: its mass is its weight.
        self._accumulate_split(
            resp, prepared, weights, weights, self._derives(complete)
        )

    def add_assigned(self, chunk, row_weights, responsibilities, complete=False):
        """Add rows with given responsibilities, shape (m, K).

        ``complete``: the rows are known to have no missing entry.
        """
        plan = self.plan
        workspace = self._workspace
        resp = np.asarray(responsibilities, dtype=plan.dtype)
        labels = None
        if plan.n_groups > 1:
            labels = np.argmax(resp, axis=1).astype(np.uint16)
        prepared = _prepare(plan, workspace, chunk, labels, complete)
        m = prepared.n_rows
        weights = _sorted(row_weights, prepared.order)
        log_resp = workspace.values(m)
        np.copyto(log_resp, _sorted(resp, prepared.order).T)
        weighted = workspace.resp(m)
        np.multiply(log_resp, weights.astype(plan.dtype), out=weighted)
        # -sum w r log r, with 0 log 0 = 0.
        np.log(log_resp, out=log_resp, where=log_resp > 0)
        log_resp *= weighted
        self.entropy -= float(np.sum(log_resp, dtype=float))
        self._add_whitened(prepared, weighted)
        self._accumulate_split(
            weighted,
            prepared,
            weights,
            np.sum(weighted, axis=0, dtype=float),
            self._derives(complete),
        )

    def _add_whitened(self, prepared, weighted_resp):
        """Add a chunk's whitened moments, for any q(Z) the plan whitened.

        The data term reads them instead of the scatter, so a q(Z) that
        skipped them would evaluate with zero moments. Rows with missing
        entries add the moments of q(x_m | z)
        (:meth:`IncompleteRows.whitened_moments`). Before
        :meth:`_accumulate_split`, which zeroes such rows' responsibilities.
        """
        if self.whitened is None:
            return
        if prepared.incomplete is not None and self.plan.frame is not None:
            # Rows with missing entries have their whitened moments in the
            # frames of the plan's own state only.
            self.whitened = None
            return
        if prepared.incomplete is None:
            _add_whitened(
                self.plan, self._workspace, prepared, weighted_resp, self.whitened
            )
            return
        columns, corrections = prepared.incomplete
        masses = np.array(weighted_resp, dtype=float)
        moments = corrections.whitened_moments(masses[:, columns])
        if moments is None:
            self.whitened = None
            return
        masses[:, columns] = 0.0
        _add_whitened(self.plan, self._workspace, prepared, masses, self.whitened)
        self.whitened.masses += moments[0]
        self.whitened.first += moments[1]
        self.whitened.second += moments[2]

    def _accumulate_merge_entropies(self, weighted_resp, log_ratios, log_total):
        """Component and pair entropies of a chunk, summed in float64.

        ``log r_nk = log_ratios_nk - log_total_n``; the entries the exp floor
        flushed to zero carry zero weight.
        """
        resp = weighted_resp.astype(float)
        log_ratios = log_ratios.astype(float)
        log_total = log_total.astype(float)
        self.component_entropy += resp @ log_total - np.einsum(
            "km,km->k", resp, log_ratios
        )
        for p, (j, k) in enumerate(self.pairs):
            merged = resp[j] + resp[k]
            log_merged = np.logaddexp(log_ratios[j], log_ratios[k])
            self.pair_entropy[p] += merged @ log_total - merged @ log_merged

    def _accumulate_split(
        self, weighted_resp, prepared, weights, row_mass, derived=False
    ):
        """Add a chunk's sums: complete rows by the kernel, the others apart.

        Rows with missing entries: with one shared center the kernel sums
        them as filled in with it and :meth:`IncompleteRows.statistics`
        adds the rest; with local centers they add their statistics about
        each component's own reference, and the kernel's products see them
        with zero responsibility.
        """
        if prepared.incomplete is None:
            self._accumulate(weighted_resp, prepared, weights, row_mass, derived)
            return
        columns, corrections = prepared.incomplete
        incomplete = weighted_resp[:, columns]
        if isinstance(columns, slice) or incomplete.dtype != np.float64:
            # A float64 copy: a slice's view sees the zeros written below.
            incomplete = incomplete.astype(float)
        if corrections.in_kernel:
            # Summed as filled in with the center; the corrections add the rest.
            self._accumulate(weighted_resp, prepared, weights, row_mass)
            self._add_own(*corrections.statistics(incomplete))
            self.entropy += corrections.entropy(incomplete)
            return
        weighted_resp[:, columns] = 0.0
        row_mass = np.array(row_mass, dtype=float)
        if self._optimal:
            # The shared row term the values left out (tied), which the
            # totals add back from the kernel's sums for complete rows.
            shared = _shared_row_term(
                self.plan, prepared.features[1 : self.plan.n_linear, columns]
            )
            if shared is not None:
                self.log_normalizer += self.plan.scale * float(
                    np.dot(row_mass[columns], shared)
                )
        row_mass[columns] = 0.0
        self._accumulate(weighted_resp, prepared, weights, row_mass)
        self._add_own(*corrections.statistics(incomplete))
        self.entropy += corrections.entropy(incomplete)

    def _add_own(self, counts, first, second):
        """Add statistics of rows with missing entries (see :meth:`totals`)."""
        if self.own_counts is None:
            self.own_counts, self.own_first, self.own_second = counts, first, second
        else:
            self.own_counts += counts
            self.own_first += first
            self.own_second += second

    def _accumulate(self, weighted_resp, prepared, weights, row_mass, derived=False):
        """Add a chunk's sums; ``row_mass`` is ``sum_k w_n r_nk`` per row.

        ``derived``: the second moments come from the whitened ones
        (:meth:`_derives`); only the first are summed.
        """
        plan = self.plan
        unit = plan.unit
        features = prepared.features
        n_linear = plan.n_linear
        self.total_weight += float(weights.sum())
        if plan.n_groups == 1 and unit.n_second_order > 0 and not plan.per_component:
            sums = weighted_resp @ features.T
            self.first[0] += sums[:, :n_linear]
            second = sums[:, n_linear:]
        else:
            if derived:
                second = None
            elif plan.per_component:
                # Dense (K, D, D) sums of w r e e^T, one product each.
                second = _weighted_gram(
                    features[1:n_linear], weighted_resp, self._workspace.gram()
                )
            else:
                second = unit.chunk_second_moment(
                    weighted_resp,
                    features[n_linear:],
                    features[1:n_linear],
                    row_mass.astype(plan.dtype),
                )
            first = self._workspace.first
            first[...] = 0.0
            for g, start, stop in prepared.groups:
                np.matmul(
                    weighted_resp[:, start:stop],
                    features[:n_linear, start:stop].T,
                    out=first[g],
                )
            self.first += first
        if second is None:
            return
        if self.second is None:
            self.second = np.array(second, dtype=float)
        else:
            self.second += second

    def totals(self):
        """``(reference, total_weight, nk, sum_x, sum_xx, log_normalizer)``.

        Moments are about the reference points: the shared center for every
        component, or each component's own center. ``sum_xx`` is None where
        the whitened moments hold it (:meth:`_derives`).
        """
        plan = self.plan
        unit = plan.unit
        counts = self.first[..., 0]
        first = self.first[..., 1:]
        log_normalizer = self.log_normalizer
        if self._derived:
            sum_xx = None
        elif self.second is None:
            # No rows were added.
            sum_xx = unit.zero_second_moment()
        else:
            if plan.per_component:
                sum_xx = unit.second_moment_from_dense(self.second)
            else:
                sum_xx = unit.second_moment_from_sums(self.second)
            if self._optimal and not plan.whitened:
                # The shared row term the values left out (tied).
                log_normalizer += plan.scale * unit.row_quadratic_total(
                    self.second, plan.precisions
                )
        if plan.n_groups == 1:
            reference = np.repeat(plan.centers, unit.n_components, axis=0)
            nk, sum_x = counts[0].copy(), first[0].copy()
        else:
            # Rows of group g were taken about c_g; component k's moments
            # are about its own center c_k, a shift by c_g - c_k.
            reference = plan.centers.copy()
            shifts = plan.centers[:, np.newaxis, :] - plan.centers[np.newaxis, :, :]
            nk = counts.sum(axis=0)
            sum_x = np.sum(first + counts[..., np.newaxis] * shifts, axis=0)
            if sum_xx is not None:
                sum_xx = sum_xx + unit.shifted_second_moment(first, counts, shifts)
        if self.own_counts is not None:
            # Rows with missing entries, already about each reference.
            nk = nk + self.own_counts
            sum_x = sum_x + self.own_first
            sum_xx = sum_xx + unit.second_moment_from_dense(self.own_second)
        return reference, self.total_weight, nk, sum_x, sum_xx, log_normalizer


def _sorted(array, order):
    return array if order is None else array[order]
