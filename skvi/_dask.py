"""The distributed E-step: the statistics kernel mapped over Dask blocks.

A :class:`DaskData` stands for a ``dask.array`` of training rows. Each row
block is turned into :class:`skvi._stats.SufficientStatistics` on the
worker that holds it, by the same kernel that serves arrays in memory; the
statistics are summed by a tree reduction, and only they (about K D^2
numbers) reach the client, where the M-step or conjugate update runs. One
E-step is one pass over the data. The batch loop (skvi._batch) sees the
same interface as for an array in memory, so no algorithm branches on the
type of its input.

The rows stay on the workers: they are persisted in worker memory when they
fit comfortably (half the workers' memory limits), and otherwise recomputed
from their graph at every pass, so data larger than the cluster's memory
can be fitted. A first pass validates the rows and weights as in memory
(:class:`DaskData`). Initialisation draws a sample of rows to the client
(``INITIALISATION_ROWS``), block by block, and applies ``init_params``
there; nothing on the client grows with the number of rows.

The same code runs on a multi-machine cluster: connect a
``distributed.Client`` to its scheduler before calling ``fit``.

Predictions map a copy of the fitted model over the blocks and stay lazy.
"""

import numbers

import numpy as np

from ._kernel import center_expansion
from ._stats import ArrayData, with_observed_variances
from ._validation import (
    ALL_WEIGHTS_ZERO,
    NOTHING_OBSERVED,
    check_count_total,
    check_observed_columns,
    check_sample_weight,
    check_weight_range,
    relative_weight_sums,
    rescaled_weights,
    rescaling_unit,
    weights_of_observed_rows,
)

# Rows drawn to the client for the initialisation.
INITIALISATION_ROWS = 20_000

# Statistics of this many blocks are summed by one task of the reduction.
REDUCTION_FAN_IN = 8

# Persist the rows if they take at most this share of the workers' memory.
PERSIST_SHARE = 0.5


def is_dask_collection(X):
    """Whether ``X`` is a Dask collection (without importing Dask)."""
    return hasattr(X, "__dask_graph__") and not isinstance(X, type)


def check_dask_array(X, n_features=None):
    """Validate a dask.array of rows; return it as a float array.

    Raises a ValueError or TypeError that says what to change: another Dask
    collection, unknown chunk sizes, blocks split along the features, the
    wrong number of features or a non-numeric dtype.
    """
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(
            f"Expected a dask.array.Array, got {type(X).__name__}. Convert a Dask "
            "DataFrame with df.to_dask_array(lengths=True)."
        )
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D dask array of shape (n_samples, n_features), got "
            f"{X.ndim} dimensions."
        )
    if any(np.isnan(size) for size in X.chunks[0]):
        raise ValueError(
            "X has unknown chunk sizes along its rows; call X.compute_chunk_sizes() "
            "(or build it with known lengths) first."
        )
    if len(X.chunks[1]) > 1:
        raise ValueError(
            f"X is split into {len(X.chunks[1])} blocks along its features; every "
            "block must hold whole rows. Use X.rechunk({1: -1})."
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but the model was fitted with "
            f"{n_features} features."
        )
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X must hold numbers, got dtype {X.dtype}.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    return X


def dask_weights(sample_weight, row_chunks):
    """Sample weights as a Dask vector in the given row blocks.

    Weights in memory are validated at once (:func:`check_sample_weight`);
    a Dask vector is checked on the workers, block by block, when computed
    (finite, non-negative).
    """
    import dask.array as da

    n_samples = int(np.sum(row_chunks))
    if not is_dask_collection(sample_weight):
        weights = check_sample_weight(sample_weight, n_samples)
        return da.from_array(weights, chunks=(row_chunks,))
    if sample_weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {sample_weight.shape}, but X has "
            f"{n_samples} samples; pass one weight per row."
        )
    weights = sample_weight.astype(float).rechunk((row_chunks,))
    return weights.map_blocks(_checked_weights, dtype=float)


def dask_counted_weights(X, sample_weight):
    """:func:`skvi._validation.counted_weights` of a Dask array: a lazy vector.

    Rows with no observed value count 0, as in a fit.
    """
    import dask.array as da

    X = check_dask_array(X)
    if sample_weight is None:
        # Lazy, as every block of X: no vector of n ones in the client.
        weights = da.ones(X.shape[0], chunks=(X.chunks[0],))
    else:
        weights = dask_weights(sample_weight, X.chunks[0])
    return da.where(da.isnan(X).all(axis=1), 0.0, weights)


def counted_mean_and_total(values, X, sample_weight):
    """The mean of a lazy vector over the rows of X that count, and their weight.

    The rows that count are those of positive weight with an observed
    value (:func:`dask_counted_weights`); both numbers come from one pass
    over X, the weights scaled as :meth:`score` scales them in memory (by
    a power of two from their largest, found from the weights alone) so
    that huge weights cannot overflow their sum. The total is in the
    weights' own units.
    """
    import dask.array as da

    X = check_dask_array(X)
    factor = 1.0
    if sample_weight is None:
        weights = da.ones(X.shape[0], chunks=(X.chunks[0],))
    else:
        weights = dask_weights(sample_weight, X.chunks[0])
        (largest,) = _compute(weights.max())
        if not largest > 0:
            raise ValueError(ALL_WEIGHTS_ZERO)
        factor = rescaling_unit(largest)
        weights = weights.map_blocks(rescaled_weights, largest, dtype=float)
    counted = da.where(da.isnan(X).all(axis=1), 0.0, weights)
    total, weighted = _compute(counted.sum(), (counted * values).sum())
    if not total > 0:
        raise ValueError(NOTHING_OBSERVED)
    return float(weighted / total), float(total * factor)


class DaskData:
    """Training rows in a dask.array, and their validated sample weights.

    One pass over the blocks validates the rows and weights as
    :meth:`BaseGaussianMixture.fit` validates an array in memory: finite
    non-negative weights, not all zero; a column that no row of positive
    weight observes is an error; rows of weight 0 (or with no observed
    value) take no part; weights that are counts must have a usable total
    (:func:`check_count_total`), and others are scaled by the power of two
    that puts their largest in [0.5, 1) (:func:`rescaled_weights`).

    Parameters
    ----------
    X : dask.array.Array of shape (n, D)
        Validated rows (:func:`check_dask_array`).
    sample_weight : None, ndarray or dask.array.Array of shape (n,)
    counts : bool, default=True
        Whether the model reads the weights as repeat counts (VI), rather
        than only relative to each other (EM).

    Attributes
    ----------
    n_present : int
        The number of rows that take part: positive weight, some observed
        value.
    has_missing : bool
        Whether a row that takes part misses an entry.
    effective_sample_size : float
        Kish's ``sum(w) ** 2 / sum(w ** 2)`` of the rows that take part.
    """

    def __init__(self, X, sample_weight=None, counts=True):
        import dask.array as da

        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        row_chunks = X.chunks[0]
        if sample_weight is None:
            weights = da.ones(self.n_samples, chunks=(row_chunks,))
        else:
            weights = dask_weights(sample_weight, row_chunks)
        self.X, self.sample_weight = _persisted_if_small(X, weights)
        summary = self._reduce(_block_summary, None)
        if summary.n_weighted == 0:
            raise ValueError(ALL_WEIGHTS_ZERO)
        check_observed_columns(summary.observed, summary.observed_anywhere)
        # The caller's weights are the held ones times this (ArrayData).
        self.weight_unit = 1.0
        if counts:
            check_count_total(np.array([summary.total]))
        else:
            check_weight_range(summary.smallest, summary.largest)
            self.sample_weight = self.sample_weight.map_blocks(
                rescaled_weights, summary.largest, dtype=float
            )
            self.weight_unit = rescaling_unit(summary.largest)
        # Rows that take part, block by block: the initialisation sample is
        # drawn from them.
        self._block_present = summary.present
        self.n_present = int(summary.present.sum())
        # What a fitted EM model's degeneracy rules ask of these rows
        # (BaseGaussianMixture._diagnose), known now rather than from two
        # more passes over X after the fit.
        self.has_missing = bool(np.any(summary.observed < self.n_present))
        total, squares = summary.relative
        self.effective_sample_size = float(total * total / squares)

    # ------------------------------------------------------------ passes
    def optimal_statistics(self, plan, pairs=None):
        """Statistics of the optimal q(Z) of the plan, summed over blocks."""
        return self._reduce(_block_optimal_statistics, (plan, pairs))

    def one_component_statistics(self, unit):
        """Statistics of all rows as one component (``unit`` has K = 1).

        One pass finds the (observed) column means, a second the moments
        about them, of the rows with missing entries filled by those means
        and with the variances of the observed entries, as in memory.
        """
        sums = self._reduce(_block_observed_sums, None)
        n = self.n_features
        observed_weight = sums[1 + n :]
        means = sums[1 : 1 + n] / observed_weight
        plan = center_expansion(unit, means[np.newaxis], self.dtype)
        pair = self._reduce(_block_one_component_statistics, plan)
        return with_observed_variances(
            pair.statistics, unit, pair.squares, observed_weight
        )

    def initialisation_data(self, random_state):
        """The rows initialisations are drawn from, on the client.

        All rows that take part when there are at most
        ``INITIALISATION_ROWS`` (the initialisation is then that of the same
        array in memory), else a uniform sample of that many, drawn without
        replacement: the client draws how many rows each block gives (one
        count per block), and each block draws its rows on its worker, so
        the client never holds anything of the size of X's rows.
        """
        import dask

        counts = self._block_present
        seeds = [None] * len(counts)
        if self.n_present > INITIALISATION_ROWS:
            counts = _sample_counts(counts, INITIALISATION_ROWS, random_state)
            seeds = random_state.randint(np.iinfo(np.int32).max, size=len(counts))
        blocks = self.X.to_delayed()[:, 0]
        weights = self.sample_weight.to_delayed()
        parts = [
            dask.delayed(_block_sample, pure=True)(
                blocks[b], weights[b], start, int(counts[b]), seeds[b]
            )
            for b, start in enumerate(self._block_starts())
            if counts[b] > 0
        ]
        parts = _compute(*parts)
        X = np.ascontiguousarray(np.concatenate([part[0] for part in parts]))
        weights = np.concatenate([part[1] for part in parts])
        unobserved = np.flatnonzero(np.isnan(X).all(axis=0))
        if unobserved.size:
            # Columns observed in rows the sample missed: their mean over
            # all rows stands in for them, as a column's mean fills its
            # missing entries.
            sums = self._reduce(_block_observed_sums, None)
            n = self.n_features
            means = sums[1 : 1 + n] / sums[1 + n :]
            X[:, unobserved] = means[unobserved].astype(X.dtype)
        return ArrayData(X, weights, self.weight_unit).filled()

    def _block_starts(self):
        """The index of each block's first row in X."""
        return np.concatenate([[0], np.cumsum(self.X.chunks[0])[:-1]]).astype(int)

    def _reduce(self, block_function, plan):
        """Map ``block_function`` over the row blocks and tree-sum the results."""
        import dask

        shared = dask.delayed(plan, pure=True)
        blocks = self.X.to_delayed()[:, 0]
        weights = self.sample_weight.to_delayed()
        parts = [
            dask.delayed(block_function, pure=True)(block, weight, int(start), shared)
            for block, weight, start in zip(
                blocks, weights, self._block_starts(), strict=True
            )
        ]
        while len(parts) > 1:
            parts = [
                dask.delayed(_sum, pure=True)(*parts[i : i + REDUCTION_FAN_IN])
                for i in range(0, len(parts), REDUCTION_FAN_IN)
            ]
        (total,) = _compute(parts[0])
        return total


# ------------------------------------------------- functions run on workers
def _check_block(block, weights, rows):
    """Raise naming the first bad row; ``rows`` maps block rows to X's.

    NaN marks a missing entry; infinity is an error.
    """
    if np.isinf(block).any():
        bad = np.isinf(block).any(axis=1)
        first = int(rows(np.flatnonzero(bad)[0]))
        raise ValueError(
            f"X contains infinity (first in row {first}); pass finite values (NaN "
            "marks a missing entry)."
        )
    _check_weights(weights, rows)


def _check_weights(weights, rows):
    """Raise naming the first row whose weight is negative or not finite."""
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        valid = np.isfinite(weights) & (weights >= 0)
        first = int(rows(np.flatnonzero(~valid)[0]))
        raise ValueError(
            f"sample_weight is negative or not finite in row {first}; weights are "
            "repeat counts and must be finite and >= 0."
        )


def _checked_weights(weights, block_info=None):
    """A block of weights, checked (Dask's ``block_info`` locates its rows)."""
    start = block_info[0]["array-location"][0][0] if block_info else 0
    _check_weights(weights, lambda row: start + row)
    return weights


def _block_rows(block, weights, start):
    """The block's rows that take part in the fit, and their weights.

    Rows of weight 0 (or with no observed value) are not there: they are
    left out before anything reads them, as in memory.
    """
    block = np.ascontiguousarray(block)
    weights = np.asarray(weights, dtype=float)
    _check_block(block, weights, lambda row: start + row)
    weights = weights_of_observed_rows(block, weights)
    present = weights > 0
    if not present.all():
        block, weights = block[present], weights[present]
    return ArrayData(block, weights)


class _RowSummary:
    """What validating the weights needs to know of some blocks.

    Attributes
    ----------
    present : ndarray of int
        The number of rows that take part, in each block, in order.
    n_weighted : int
        The number of rows of positive weight.
    total, largest, smallest : float
        The sum, largest and smallest of the weights of the rows that take
        part (``smallest`` is infinite when none does).
    observed, observed_anywhere : ndarray of shape (D,)
        For each column, the number of rows that take part, and of all
        rows, in which it is observed.
    relative : ndarray of shape (2,)
        The sum and the sum of squares of those weights over ``largest``
        (which neither overflows): Kish's effective sample size is
        ``relative[0] ** 2 / relative[1]``.
    """

    def __init__(
        self,
        present,
        n_weighted,
        total,
        largest,
        smallest,
        observed,
        anywhere,
        relative,
    ):
        self.present = present
        self.n_weighted = n_weighted
        self.total = total
        self.largest = largest
        self.smallest = smallest
        self.observed = observed
        self.observed_anywhere = anywhere
        self.relative = relative

    def copy(self):
        return _RowSummary(
            self.present.copy(),
            self.n_weighted,
            self.total,
            self.largest,
            self.smallest,
            self.observed.copy(),
            self.observed_anywhere.copy(),
            self.relative.copy(),
        )

    def __iadd__(self, other):
        self.present = np.concatenate([self.present, other.present])
        self.n_weighted += other.n_weighted
        with np.errstate(over="ignore"):
            self.total += other.total
        largest = max(self.largest, other.largest)
        if largest > 0:
            # Both sums over the new largest weight.
            mine, theirs = self.largest / largest, other.largest / largest
            self.relative = self.relative * [mine, mine * mine] + other.relative * [
                theirs,
                theirs * theirs,
            ]
        self.largest = largest
        self.smallest = min(self.smallest, other.smallest)
        self.observed += other.observed
        self.observed_anywhere += other.observed_anywhere
        return self


def _block_summary(block, weights, start, _):
    n_weighted = int(np.count_nonzero(np.asarray(weights) > 0))
    rows = _block_rows(block, weights, start)
    kept = rows.sample_weight
    observed = ~np.isnan(rows.X)
    with np.errstate(over="ignore"):
        total = float(np.sum(kept))
    relative = np.zeros(2)
    if len(kept):
        relative[:] = relative_weight_sums(kept)
    return _RowSummary(
        present=np.array([len(kept)]),
        n_weighted=n_weighted,
        total=total,
        largest=float(kept.max()) if len(kept) else 0.0,
        smallest=float(kept.min()) if len(kept) else np.inf,
        observed=observed.sum(axis=0),
        anywhere=(~np.isnan(np.asarray(block))).sum(axis=0),
        relative=relative,
    )


def _block_sample(block, weights, start, count, seed):
    """``count`` of the block's rows that take part, drawn uniformly.

    All of them when ``seed`` is None. Returns the rows and their weights,
    in the block's order.
    """
    rows = _block_rows(block, weights, start)
    X, weights = rows.X, rows.sample_weight
    if seed is not None and count < len(X):
        chosen = np.random.RandomState(seed).choice(len(X), count, replace=False)
        chosen.sort()
        X, weights = X[chosen], weights[chosen]
    return X, weights


def _block_optimal_statistics(block, weights, start, job):
    plan, pairs = job
    return _block_rows(block, weights, start).optimal_statistics(plan, pairs)


def _block_observed_sums(block, weights, start, plan):
    """``[sum w, sum w x and sum w]`` over the observed entries of each column."""
    rows = _block_rows(block, weights, start)
    observed = ~np.isnan(rows.X)
    weighted = rows.sample_weight[:, np.newaxis] * observed
    values = np.where(observed, rows.X, 0.0).astype(float, copy=False)
    return np.concatenate(
        [[rows.sample_weight.sum()], np.sum(weighted * values, axis=0), weighted.sum(0)]
    )


class _StatisticsAndSquares:
    """One-component statistics of filled rows and the observed squares."""

    def __init__(self, statistics, squares):
        self.statistics = statistics
        self.squares = squares

    def copy(self):
        return _StatisticsAndSquares(self.statistics.copy(), self.squares.copy())

    def __iadd__(self, other):
        self.statistics += other.statistics
        self.squares += other.squares
        return self


def _block_one_component_statistics(block, weights, start, plan):
    rows = _block_rows(block, weights, start)
    mean = plan.centers[0]
    observed = ~np.isnan(rows.X)
    deviations = np.where(observed, rows.X - mean, 0.0)
    squares = rows.sample_weight @ (deviations * deviations)
    filled = ArrayData(
        np.where(observed, rows.X, mean.astype(rows.dtype)), rows.sample_weight
    )
    statistics = filled.assigned_statistics(
        plan, lambda chunk: np.ones((chunk.stop - chunk.start, 1))
    )
    return _StatisticsAndSquares(statistics, squares)


def _sum(*parts):
    """The sum of additive parts (statistics or arrays), as a new object."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


# ------------------------------------------------------------- the client
def _sample_counts(population, n_draws, random_state):
    """How many of ``n_draws`` rows drawn without replacement fall in each block.

    ``population`` holds the number of rows of each block. The counts are
    drawn from their multivariate hypergeometric distribution, block after
    block (each from the hypergeometric of the rows left), so a uniform
    sample is drawn without an index of every row.
    """
    counts = np.zeros(len(population), dtype=np.int64)
    left = int(np.sum(population))
    for block, size in enumerate(population):
        size = int(size)
        if n_draws == 0:
            break
        counts[block] = random_state.hypergeometric(size, left - size, n_draws)
        n_draws -= int(counts[block])
        left -= size
    return counts


def _compute(*collections):
    import dask

    return dask.compute(*collections)


def _persisted_if_small(X, weights):
    """Persist rows and weights in worker memory when they fit comfortably."""
    capacity = _memory_capacity()
    if capacity is not None and X.nbytes + weights.nbytes <= PERSIST_SHARE * capacity:
        import dask

        return dask.persist(X, weights)
    return X, weights


def _memory_capacity():
    """Total memory limit of the distributed workers, if a client is active."""
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return None
    limits = [
        worker.get("memory_limit") or 0
        for worker in client.scheduler_info()["workers"].values()
    ]
    total = sum(limits)
    return total if isinstance(total, numbers.Number) and total > 0 else None
