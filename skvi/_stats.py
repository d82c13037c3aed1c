"""Sufficient statistics, the currency between the E-step and the M-step.

The E-step maps rows to responsibility-weighted statistics (N_k, first and
second moments about reference points) plus their log normaliser; the
kernel in :mod:`skvi._kernel` does the arithmetic. Statistics add up, so one
pass over an array in chunks, a minibatch, or the blocks of a distributed
array all reduce to the same object. No (n_samples, n_components) array is
ever held during a fit.
"""

import threading
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from ._covariance._unit import weighted_center
from ._elbo import log_rho_constants
from ._kernel import (
    LOSS_LIMIT,
    WHITENING_LIMIT,
    StatisticsPass,
    center_expansion,
    loss_limit,
    parameter_expansion,
    row_chunks,
)
from ._missing import FoundPatterns
from ._threads import chunk_workers, map_in_order, one_blas_thread


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
    whitened : WhitenedMoments or None
        The same q(Z)'s moments in the whitened frames of the state its
        E-step evaluated, where the kernel whitened the rows
        (ill-conditioned full precisions): the data term then comes from
        these, exactly (:func:`skvi._elbo.expected_log_joint`).
    """

    total_weight: float
    nk: np.ndarray
    reference: np.ndarray
    shift: np.ndarray
    scatter: np.ndarray
    whitened: object = None

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
    sum_xx : ndarray or None
        Second moments about the references, in the unit's layout; None
        where the pass left them to ``whitened`` (rows whitened by
        ill-conditioned precisions, none missing: see :meth:`second_moments`).
    entropy : float
        ``-sum_n w_n sum_k r_nk log r_nk``.
    log_normalizer : float
        ``sum_n w_n log sum_k rho_nk`` (E-step only): for EM the smoothed
        log-likelihood of the rows.
    pairs : ndarray of shape (P, 2) or None
        Pairs of components whose merge an E-step was asked to price.
    component_entropy : ndarray of shape (K,) or None
        ``-sum_n w_n r_nk log r_nk`` (with ``pairs`` only).
    pair_entropy : ndarray of shape (P,) or None
        ``-sum_n w_n s_n log s_n``, ``s_n = r_nj + r_nk``, for each pair.
    has_missing : bool
        Whether any row summarised had a missing entry.
    whitened : WhitenedMoments or None
        Moments in each component's whitened frame, where the E-step
        whitened the rows (see :class:`Moments`).
    """

    reference: np.ndarray
    total_weight: float
    nk: np.ndarray
    sum_x: np.ndarray
    sum_xx: np.ndarray
    entropy: float = 0.0
    log_normalizer: float = 0.0
    pairs: np.ndarray = None
    component_entropy: np.ndarray = None
    pair_entropy: np.ndarray = None
    has_missing: bool = False
    whitened: object = None
    _unit: object = field(default=None, repr=False, compare=False)
    # The centers an E-step's last pass was given (None: the kernel's own
    # choice), so that a framed pass repeats its q(Z) (framed_statistics).
    _centers: object = field(default=None, repr=False, compare=False)

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

    def copy(self):
        """An independent copy (the arrays are copied)."""
        return SufficientStatistics(
            reference=self.reference.copy(),
            total_weight=self.total_weight,
            nk=self.nk.copy(),
            sum_x=self.sum_x.copy(),
            sum_xx=_copied(self.sum_xx),
            entropy=self.entropy,
            log_normalizer=self.log_normalizer,
            pairs=self.pairs,
            component_entropy=_copied(self.component_entropy),
            pair_entropy=_copied(self.pair_entropy),
            has_missing=self.has_missing,
            whitened=None if self.whitened is None else self.whitened.copy(),
            _unit=self._unit,
            _centers=self._centers,
        )

    def __iadd__(self, other):
        if not np.array_equal(self.reference, other.reference):
            raise ValueError("Statistics about different references do not add.")
        self.total_weight += other.total_weight
        same_frame = (
            self.whitened is not None
            and other.whitened is not None
            and self.whitened.same_frame(other.whitened)
        )
        if same_frame and self.sum_xx is None and other.sum_xx is None:
            # Both left to the whitened moments, which add up.
            pass
        else:
            self.sum_xx = self.second_moments() + other.second_moments()
        self.nk += other.nk
        self.sum_x += other.sum_x
        self.entropy += other.entropy
        self.log_normalizer += other.log_normalizer
        self.has_missing = self.has_missing or other.has_missing
        if same_frame:
            self.whitened += other.whitened
        else:
            self.whitened = None
        if self.pairs is not None:
            self.component_entropy += other.component_entropy
            self.pair_entropy += other.pair_entropy
        self.__dict__.pop("moments", None)
        return self

    def second_moments(self):
        """``sum_xx``, from the whitened moments where the pass left it to them.

        The scatter about each mean (:meth:`_scatter`) plus ``sum_x`` times
        the mean's shift from the reference.
        """
        if self.sum_xx is not None:
            return self.sum_xx
        shift = self._shift()
        about = self._unit.second_moment_from_dense(
            self.sum_x[:, :, np.newaxis] * shift[:, np.newaxis, :]
        )
        return self._scatter() + about

    def _shift(self):
        """Each component's mean less its reference (0 without mass)."""
        nk = self.nk
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        return np.where(nk[:, np.newaxis] > 0, self.sum_x / safe, 0.0)

    def _scatter(self):
        """Each component's scatter about its mean, in the unit's layout."""
        unit = self._unit
        if self.sum_xx is not None:
            return unit.centered_scatter(self.nk, self.sum_x, self.sum_xx)
        # From the whitened rows, about their own means: no rank update of
        # the rows about the references was summed.
        dense = unit.second_moment_from_dense(self.whitened.data_scatters())
        return unit.centered_scatter(self.nk, np.zeros_like(self.sum_x), dense)

    @cached_property
    def moments(self):
        """These statistics as :class:`Moments` (exact recentering)."""
        return Moments(
            self.total_weight,
            self.nk.copy(),
            self.reference,
            self._shift(),
            self._scatter(),
            self.whitened,
        )


# The largest data whose columns ArrayData keeps (see ArrayData._columns).
COLUMNS_BYTES = 16 * 2**20

# Repeated passes about better centers an E-step may take (see e_step).
MAX_RECENTERINGS = 3
_EPSILON = float(np.finfo(float).eps)


def _copied(array):
    return None if array is None else array.copy()


def conditioning_loss(unit, expectations):
    """``unit.conditioning_loss`` of the expectations' precisions.

    Kept with the expectations: the data term of an M-step's half-step
    (:func:`framed_components`) and the next E-step's plan both read
    that of one state.
    """
    known = expectations.__dict__
    if "_conditioning_loss" not in known:
        known["_conditioning_loss"] = unit.conditioning_loss(
            expectations.precisions, expectations.precisions_cholesky
        )
    return known["_conditioning_loss"]


def framed_components(moments, expectations, unit, dtype):
    """The components whose data term at ``expectations`` needs their frames.

    The data term ``sum_n w_n r_nk (x_n - m_k)^T Lambda_k (x_n - m_k)`` of
    a q(Z), read from its moments, errs by eps times ``s^T |Lambda_k| s``
    (per D) where ``s`` is the spread of the rows about the points the
    moments were summed about, in the moments' frame (the data, or the
    whitened frames of :class:`skvi._kernel.WhitenedMoments`). Within
    ``WHITENING_LIMIT`` that costs no more than the kernel's own values
    do; so does any precision whose conditioning loss is within it (the
    E-step's certificate, computed once per state). Beyond it (an M-step
    that collapses a component onto two rows: the conditioning loss went
    from 31 to 8.6e5, and the half-step was 3.3e-11 of the bound off), the
    moments of those components are taken again in the frames of
    ``expectations`` (:func:`framed_statistics`).

    Returns
    -------
    ndarray of int
        The components' indices (all of them where the moments have no
        whitened frames), empty where none needs them.
    """
    limit = WHITENING_LIMIT[np.dtype(dtype)]
    if conditioning_loss(unit, expectations) <= limit:
        return np.arange(0)
    factors = unit.component_factors(expectations.precisions_cholesky)
    whitened = moments.whitened
    if whitened is not None:
        losses = whitened.rounding_losses(factors)
    else:
        spreads = unit.moment_spreads(moments.nk, moments.shift, moments.scatter)
        precisions = np.abs(factors @ np.swapaxes(factors, 1, 2))
        losses = np.einsum("ki,kij,kj->k", spreads, precisions, spreads)
        losses /= unit.n_features
    # NaN fails the comparison: the moments are taken again.
    needed = ~(losses <= limit)
    if whitened is None and needed.any():
        # Moments in the data's frame and in whitened frames do not mix.
        return np.arange(len(losses))
    return np.flatnonzero(needed)


def log_rho_expansion(
    unit, expectations, reg_covar, dtype, centers=None, n_rows=None, frame=None
):
    """The kernel's plan for ``log rho_nk = const_k - quadratic_nk / 2``.

    ``centers`` (K, D) overrides the kernel's choice of centers; ``n_rows``,
    the rows of a fit's data, sets its limit (:func:`skvi._kernel.loss_limit`).
    ``frame``, the expectations of another state and indices of components,
    has a pass take only those components' moments, in that state's
    whitened frames.
    """
    log_weights = expectations.log_weights
    weights = np.exp(log_weights - np.max(log_weights))
    if frame is not None:
        frame, components = frame
        factors = unit.component_factors(frame.precisions_cholesky)
        frame = (frame.means[components], factors[components], components)
    return parameter_expansion(
        unit,
        expectations.means,
        expectations.precisions,
        expectations.precisions_cholesky,
        weights,
        dtype,
        scale=-0.5,
        offsets=log_rho_constants(expectations, unit, reg_covar),
        log_density=True,
        centers=centers,
        n_rows=n_rows,
        conditioning=conditioning_loss(unit, expectations),
        frame=frame,
    )


def _statistics(statistics_pass, unit):
    reference, total, nk, sum_x, sum_xx, log_normalizer = statistics_pass.totals()
    return SufficientStatistics(
        reference=reference,
        total_weight=total,
        nk=nk,
        sum_x=sum_x,
        sum_xx=sum_xx,
        entropy=statistics_pass.entropy,
        log_normalizer=log_normalizer,
        pairs=statistics_pass.pairs,
        component_entropy=statistics_pass.component_entropy,
        pair_entropy=statistics_pass.pair_entropy,
        has_missing=statistics_pass.own_counts is not None,
        whitened=statistics_pass.whitened,
        _unit=unit,
    )


class ArrayData:
    """Training rows held in memory, and their sample weights.

    The batch and online algorithms reach the data only through this
    interface; :class:`skvi._dask.DaskData` implements the same for a
    distributed array, so no algorithm branches on the type of its input.

    Parameters
    ----------
    X : ndarray of shape (n, D)
        Validated float32 or float64 rows; NaN marks a missing entry.
    sample_weight : ndarray of shape (n,)
        Validated float64 weights.
    weight_unit : float, default=1.0
        The caller's weights are ``sample_weight * weight_unit``: a power of
        two where a model scaled them (:func:`rescaled_weights`), which
        the hierarchical starts undo to read whole numbers as counts.
    """

    def __init__(self, X, sample_weight, weight_unit=1.0):
        self.X = X
        self.sample_weight = sample_weight
        self.weight_unit = weight_unit
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype

    @cached_property
    def has_missing(self):
        """Whether any entry is missing (NaN)."""
        return bool(np.isnan(np.sum(self.X)))

    @cached_property
    def _columns(self):
        """The rows as columns, (D, n) C-contiguous, or None.

        A pass over one shared center subtracts it from each chunk in the
        features' layout (D, m); from the rows' own layout that is a
        transposing copy per chunk and pass (digits: 0.3 ms of a 2.1 ms
        pass; diag fits 10% faster). Kept for complete data of at most
        ``COLUMNS_BYTES``, at the cost of one more copy of X: at larger
        sizes the pass's products outweigh the copy, and memory counts.
        """
        X = self.X
        if self.has_missing or X.nbytes > COLUMNS_BYTES:
            return None
        return np.ascontiguousarray(X.T)

    @cached_property
    def _patterns(self):
        """The chunks' missing entries, found once (FoundPatterns), or None.

        Kept up to as many bytes as the data's (about a quarter of them
        with 10% of the entries missing).
        """
        if not self.has_missing:
            return None
        return FoundPatterns(self.X.nbytes)

    def observed_moments(self):
        """Per-column statistics of the observed entries.

        Returns their weighted means, sums of weighted squared deviations and
        total weights, three arrays of shape (D,).
        """
        observed = ~np.isnan(self.X)
        weights = self.sample_weight[:, np.newaxis] * observed
        observed_weight = weights.sum(axis=0)
        values = np.where(observed, self.X, 0.0).astype(float)
        safe = np.where(observed_weight > 0, observed_weight, 1.0)
        means = np.sum(values * weights, axis=0) / safe
        squares = np.sum(weights * (values - means) ** 2, axis=0)
        return means, squares, observed_weight

    def filled(self):
        """These rows with missing entries replaced by their column's mean.

        Initialisations (k-means, seeds) and the default priors need complete
        rows; the E-steps never use this copy.
        """
        if not self.has_missing:
            return self
        means, _, _ = self.observed_moments()
        X = np.where(np.isnan(self.X), means.astype(self.dtype), self.X)
        return ArrayData(X, self.sample_weight, self.weight_unit)

    def optimal_statistics(self, plan, pairs=None):
        """Statistics of the optimal q(Z) for the plan's log rho (an E-step).

        With ``pairs`` of components, also the entropies that pricing their
        merges needs (:class:`SufficientStatistics`).
        """
        X, sample_weight = self.X, self.sample_weight
        complete = not self.has_missing
        patterns = self._patterns
        columns = self._columns if plan.n_groups == 1 else None

        def add(statistics_pass, rows):
            statistics_pass.add_optimal(
                X[rows],
                sample_weight[rows],
                complete,
                None if patterns is None else patterns.for_rows(rows),
                None if columns is None else columns[:, rows],
            )

        statistics_pass = chunked_pass(plan, plan.chunks(self.n_samples), add, pairs)
        return _statistics(statistics_pass, plan.unit)

    def assigned_statistics(self, plan, responsibilities):
        """Statistics of a given q(Z) about the plan's centers.

        ``responsibilities(rows)`` returns the (len(rows), K)
        responsibilities of a slice of rows, so they are never all held at
        once.
        """
        X, sample_weight = self.X, self.sample_weight
        complete = not self.has_missing

        def add(statistics_pass, rows):
            statistics_pass.add_assigned(
                X[rows], sample_weight[rows], responsibilities(rows), complete
            )

        # In this thread, in order: ``responsibilities`` may replay a random
        # stream chunk by chunk.
        statistics_pass = chunked_pass(
            plan, plan.chunks(self.n_samples), add, parallel=False
        )
        return _statistics(statistics_pass, plan.unit)

    def assigned_means(self, unit, responsibilities):
        """Weighted means of a given q(Z) (the origin for an empty component)."""
        X, sample_weight = self.X, self.sample_weight
        nk = np.zeros(unit.n_components)
        sums = np.zeros((unit.n_components, unit.n_features))
        # The responsibilities, their weighted copy and the caller's array.
        row_bytes = X.dtype.itemsize * (3 * unit.n_components + unit.n_features)
        with one_blas_thread():
            for rows in row_chunks(self.n_samples, row_bytes + 16):
                weighted = np.asarray(responsibilities(rows), dtype=X.dtype)
                weighted = weighted * sample_weight[rows].astype(X.dtype)[:, None]
                nk += np.sum(weighted, axis=0, dtype=float)
                sums += weighted.T @ X[rows]
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        return np.where(nk[:, np.newaxis] > 0, sums / safe, 0.0)

    def one_component_statistics(self, unit):
        """Statistics of all rows as one component (``unit`` has K = 1).

        With missing entries, those of the rows filled with the column means,
        whose scatter about the means is then scaled, column by column, from
        the observed weight to the total weight: the variances are those of
        the observed entries, and the scatter stays positive semi-definite.
        """
        complete = self.filled()
        stats = statistics_of_assignment(
            complete, unit, lambda rows: np.ones((rows.stop - rows.start, 1))
        )
        if complete is not self:
            _, squares, observed_weight = self.observed_moments()
            stats = with_observed_variances(stats, unit, squares, observed_weight)
        return stats

    def initialisation_data(self, random_state):
        """The rows initialisations are drawn from: all of them (filled)."""
        return self.filled()


def with_observed_variances(stats, unit, squares, observed_weight):
    """One-component statistics whose variances count the observed rows.

    The filled rows' scatter has, in column j, the observed entries' sum of
    squares ``squares[j]``; scaled by ``total / observed_weight[j]`` it
    estimates the column's variance over all rows. Adding the difference to
    the diagonal keeps the scatter positive semi-definite.
    """
    total = stats.total_weight
    safe = np.where(observed_weight > 0, observed_weight, total)
    increments = squares * (total / safe - 1.0)
    corrected = stats.copy()
    corrected.sum_xx = stats.second_moments() + unit.second_moment_from_dense(
        np.diag(increments)[np.newaxis]
    )
    return corrected


def e_step(data, unit, expectations, reg_covar, pairs=None, previous=None):
    """One pass over the data: statistics of the optimal q(Z).

    The kernel takes moments about centers at the current means. Where a
    component's new mean lies many of its new standard deviations from
    them (a component collapsing onto a tight cluster, early in a fit),
    its scatter cancels more digits than the dtype can spare; the pass is
    then repeated about the new means (at most ``MAX_RECENTERINGS`` times),
    which each time shrinks that distance by the working precision. A
    scatter taken from whitened moments (rows whitened by ill-conditioned
    precisions) is judged by the digits those lost about the current
    means, their frames' origins; the pass about the new means then sums
    the scatter about them instead. Those new centers are one shared
    center where it serves (:func:`recentering_centers`), and the next
    E-step, given this one's statistics as ``previous``, starts from it
    (:func:`kept_center`).

    Parameters
    ----------
    data : ArrayData or DaskData
    unit : CovarianceUnit
    expectations : ComponentExpectations
    reg_covar : float
        Enters the objective as ``-(reg_covar / 2) E[tr Lambda_k]``.
    pairs : ndarray of shape (P, 2), optional
        Pairs of components whose merge entropies to sum as well.
    previous : SufficientStatistics, optional
        The previous E-step's statistics in the same run.

    Returns
    -------
    SufficientStatistics
        With the entropy of q(Z) and the log normaliser.
    """
    n_rows = data.n_samples
    centers = kept_center(unit, expectations, previous, data.dtype, n_rows)
    plan = log_rho_expansion(
        unit, expectations, reg_covar, data.dtype, centers=centers, n_rows=n_rows
    )
    stats = data.optimal_statistics(plan, pairs)
    stats._centers = centers
    limit = LOSS_LIMIT[np.dtype(data.dtype)]
    for _ in range(MAX_RECENTERINGS):
        moments = stats.moments
        # A component whose mass is below rounding of the total is empty to
        # both updates: its moments cannot lose digits that matter, and a
        # pass about new centers would not change it.
        empty = empty_components(moments)
        shift = moments.shift
        if empty.any():
            shift = np.where(empty[:, np.newaxis], 0.0, shift)
        if stats.sum_xx is None:
            # The scatter came from the whitened moments, about the means
            # the pass evaluated (StatisticsPass._derives).
            growth = stats.whitened.rounding_growth(reg_covar, empty)
        else:
            growth = unit.moment_rounding_growth(
                moments.nk, shift, moments.scatter, reg_covar
            )
        if growth <= limit:
            break
        centers = recentering_centers(unit, plan, moments, empty, reg_covar, n_rows)
        plan = log_rho_expansion(
            unit,
            expectations,
            reg_covar,
            data.dtype,
            centers=centers,
        )
        plan.derives_second = False
        stats = data.optimal_statistics(plan, pairs)
        stats._centers = centers
    return stats


def kept_center(unit, expectations, previous, dtype, n_rows):
    """The one center the previous E-step's pass took, where it still serves.

    A center that an E-step's moments needed (:func:`recentering_centers`)
    usually serves the next E-step's moments too, where the kernel's own
    choice from the parameters may not: under a variational posterior the
    expected precisions of a column a component holds constant are
    moderate (the prior's scale enters them), so they do not pull the
    center there, and on scikit-learn's digits every E-step took a second
    pass. Kept where its expansion loss at ``expectations`` is within
    :func:`skvi._kernel.loss_limit`; None otherwise (the kernel chooses).
    """
    if previous is None or unit.n_components == 1:
        return None
    # A merge move's statistics (skvi._merge.MergedStatistics) keep none.
    centers = getattr(previous, "_centers", None)
    if centers is None or len(centers) != 1:
        return None
    loss, _ = unit.expansion_loss(
        np.asarray(expectations.means, dtype=float),
        None,
        expectations.precisions,
        center=centers[0],
    )
    return centers if loss <= loss_limit(dtype, n_rows) else None


def recentering_centers(unit, plan, moments, empty, reg_covar, n_rows):
    """The centers of a pass that takes an E-step's moments again.

    One shared center where both its values and its moments keep their
    digits: the new means weighted by their regularised precisions
    (coordinate by coordinate; ``unit.recentering_scales``), which
    minimises the sum of the moments' ratios ``N_k s_kj^2 / (S_kjj + N_k
    reg_covar)``; its expansion loss at
    ``plan``'s parameters within :func:`skvi._kernel.loss_limit`, and that
    growth within ``LOSS_LIMIT``. Otherwise each component's new mean, one
    group of rows per component. Early in a fit on scikit-learn's digits,
    components become constant on pixels (variance ``reg_covar``) away
    from the center the E-step expanded about; the shared center serves
    those passes at the cost of one.
    """
    dtype = plan.dtype
    nk = moments.nk
    means = moments.means
    scales = unit.recentering_scales(nk, moments.scatter, reg_covar)
    scales = np.where(empty[:, np.newaxis], 0.0, scales)
    center = weighted_center(means, scales, plan.centers.mean(axis=0))
    shift = moments.offsets_from(center[np.newaxis])
    shift = np.where(empty[:, np.newaxis], 0.0, shift)
    growth = unit.moment_rounding_growth(nk, shift, moments.scatter, reg_covar)
    loss, _ = unit.expansion_loss(plan.means, None, plan.precisions, center=center)
    if growth <= LOSS_LIMIT[dtype] and loss <= loss_limit(dtype, n_rows):
        return center[np.newaxis]
    return means


def framed_statistics(data, unit, stats, expectations, reg_covar, frame, components):
    """``stats`` with some components' whitened moments in another state's frames.

    ``stats`` is an E-step's at ``expectations`` (:func:`e_step`); its pass
    is repeated with the same plan, so its q(Z) is the same, but sums only
    the moments of ``components`` in the whitened frames of ``frame`` (the
    expectations of another state; see :func:`framed_components`). The
    other components keep their moments; the result's whitened moments
    mix frames, each component's its own. No other moment is summed again:
    the extra pass costs the values (for the responsibilities) and, per
    framed component, one whitening product and one rank update.

    Returns
    -------
    SufficientStatistics
        A copy of ``stats``; without whitened moments where the framed
        pass could not take them (rows with missing entries).
    """
    centers = stats._centers
    plan = log_rho_expansion(
        unit,
        expectations,
        reg_covar,
        data.dtype,
        centers=centers,
        n_rows=data.n_samples if centers is None else None,
        frame=(frame, components),
    )
    framed = data.optimal_statistics(plan).whitened
    result = stats.copy()
    if framed is None:
        result.sum_xx = result.second_moments()
        result.whitened = None
    elif stats.whitened is None or len(components) == len(stats.nk):
        result.whitened = framed
    else:
        whitened = result.whitened
        whitened.means = np.array(whitened.means, dtype=float)
        whitened.factors = np.array(whitened.factors, dtype=float)
        whitened.means[components] = framed.means
        whitened.factors[components] = framed.factors
        whitened.masses[components] = framed.masses
        whitened.first[components] = framed.first
        whitened.second[components] = framed.second
    result.__dict__.pop("moments", None)
    return result


def statistics_of_assignment(data, unit, responsibilities):
    """Statistics of a fixed q(Z), accurate wherever the data sit.

    A first pass finds each component's mean; the second accumulates moments
    about those means, so second moments do not cancel when the data sit far
    from the origin or from each other. Both passes hold one BLAS limit
    (setting it costs as much as a pass over a few hundred rows).

    A q(Z) with ``seeds`` (:class:`skvi._initialization.SeedResponsibilities`:
    each component on one row alone) is summed over its seed rows only, see
    :func:`_seed_statistics`.
    """
    seeds = getattr(responsibilities, "seeds", None)
    if seeds is not None:
        return _seed_statistics(data, unit, seeds)
    with one_blas_thread():
        means = data.assigned_means(unit, responsibilities)
        plan = center_expansion(unit, means, data.dtype)
        return data.assigned_statistics(plan, responsibilities)


def _seed_statistics(data, unit, seeds):
    """Statistics of the q(Z) that puts component k on row ``seeds[k]`` alone.

    Every other row has zero responsibility: in both passes of
    :func:`statistics_of_assignment` it adds exact zeros to every sum (0 x a
    finite value, to sums that start at +0), so the seed rows alone give
    the same numbers, bit for bit, without two passes over the data (at
    100,000 x 32 with K = 32 those took 70 ms, 15% of a 10-iteration VI
    fit). The exception is the total weight, summed here in the rows' order
    rather than chunk by chunk in the kernel's: the same for integer
    weights, else within its rounding; the initial state reads it only to
    find empty components (:func:`empty_components`).
    """
    rows = ArrayData(data.X[seeds], data.sample_weight[seeds])
    one_hot = np.eye(len(seeds))
    stats = statistics_of_assignment(rows, unit, lambda chunk: one_hot[chunk])
    return replace(stats, total_weight=float(np.sum(data.sample_weight)))


def chunked_pass(plan, chunks, add, pairs=None, parallel=True):
    """One :class:`StatisticsPass` over ``chunks``, split over threads.

    ``add(statistics_pass, rows)`` adds the rows of one chunk (a slice).
    Every chunk is summed in a pass of its own and the passes are added in
    chunk order, so the sums are the same, bit for bit, whatever the number
    of threads (:mod:`skvi._threads` decides it, one unless ``parallel``)
    and their timing.
    """
    longest = _longest(chunks)
    workers = 1
    if parallel:
        workers = chunk_workers(chunks, plan.row_bytes())
    if len(chunks) == 1:
        # One chunk summed into the total adds the same numbers in the same
        # order as its own pass would (a pass starts from exact zeros). With
        # several chunks it would not: a chunk may add several pieces (rows
        # with missing entries add corrections), whose partial sums differ
        # from the chunk's own total added at once.
        total = StatisticsPass(plan, longest, pairs)
        with one_blas_thread():
            add(total, chunks[0])
        return total
    # The work buffers are a thread's own: the total lends its to the
    # chunks when the calling thread runs them all.
    total = StatisticsPass(plan, longest if workers == 1 else 1, pairs)
    local = threading.local()

    def chunk_pass(rows):
        lender = getattr(local, "lender", None)
        if lender is None:
            lender = local.lender = (
                total if workers == 1 else StatisticsPass(plan, longest)
            )
        part = StatisticsPass(plan, longest, pairs, buffers=lender)
        add(part, rows)
        return part

    with one_blas_thread():
        map_in_order(chunk_pass, chunks, workers, total.__iadd__)
    return total


def _longest(chunks):
    return max((rows.stop - rows.start for rows in chunks), default=1)


def empty_components(moments):
    """Components whose responsibility mass is below rounding of the total."""
    return moments.nk <= _EPSILON * moments.total_weight
