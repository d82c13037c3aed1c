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
can be fitted. Initialisation draws a sample of rows to the client
(``INITIALISATION_ROWS``) and applies ``init_params`` there.

The same code runs on a multi-machine cluster: connect a
``distributed.Client`` to its scheduler before calling ``fit``.

Predictions map the fitted model over the blocks and stay lazy.
"""

import numbers

import numpy as np

from ._kernel import center_expansion
from ._stats import ArrayData, with_observed_variances
from ._validation import (
    check_missing_entries,
    check_sample_weight,
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


class DaskData:
    """Training rows in a dask.array, and their sample weights.

    Parameters
    ----------
    X : dask.array.Array of shape (n, D)
        Validated rows (:func:`check_dask_array`).
    sample_weight : None, ndarray or dask.array.Array of shape (n,)
    """

    def __init__(self, X, sample_weight=None):
        import dask.array as da

        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        row_chunks = X.chunks[0]
        if sample_weight is None:
            weights = da.ones(self.n_samples, chunks=(row_chunks,))
        elif is_dask_collection(sample_weight):
            if sample_weight.shape != (self.n_samples,):
                raise ValueError(
                    f"sample_weight has shape {sample_weight.shape}, but X has "
                    f"{self.n_samples} samples; pass one weight per row."
                )
            weights = sample_weight.astype(float).rechunk((row_chunks,))
        else:
            weights = check_sample_weight(sample_weight, self.n_samples)
            weights = da.from_array(weights, chunks=(row_chunks,))
        self.X, self.sample_weight = _persisted_if_small(X, weights)

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
        empty = np.flatnonzero(observed_weight <= 0)
        if empty.size:
            raise ValueError(
                f"Column {int(empty[0])} of X has no observed value (every entry is "
                "NaN); drop that column or provide some of its values."
            )
        means = sums[1 : 1 + n] / observed_weight
        plan = center_expansion(unit, means[np.newaxis], self.dtype)
        pair = self._reduce(_block_one_component_statistics, plan)
        return with_observed_variances(
            pair.statistics, unit, pair.squares, observed_weight
        )

    def initialisation_data(self, random_state):
        """The rows initialisations are drawn from, on the client.

        All rows when there are at most ``INITIALISATION_ROWS`` (the
        initialisation is then that of the same array in memory), else a
        uniform sample of that many.
        """
        if self.n_samples <= INITIALISATION_ROWS:
            X, weights = _compute(self.X, self.sample_weight)
            _check_block(X, weights, lambda row: row)
        else:
            rows = random_state.choice(
                self.n_samples, INITIALISATION_ROWS, replace=False
            )
            rows = np.sort(rows)
            X, weights = _compute(self.X[rows], self.sample_weight[rows])
            _check_block(X, weights, lambda row: rows[row])
        try:
            weights = check_missing_entries(X, weights)
        except ValueError as error:
            raise ValueError(
                f"In the {len(X)} rows drawn for the initialisation: {error}"
            ) from error
        return ArrayData(np.ascontiguousarray(X), weights).filled()

    def count_positive_weights(self):
        """The number of rows of positive weight."""
        (count,) = _compute((self.sample_weight > 0).sum())
        return int(count)

    def _reduce(self, block_function, plan):
        """Map ``block_function`` over the row blocks and tree-sum the results."""
        import dask

        shared = dask.delayed(plan, pure=True)
        blocks = self.X.to_delayed()[:, 0]
        weights = self.sample_weight.to_delayed()
        starts = np.concatenate([[0], np.cumsum(self.X.chunks[0])[:-1]])
        parts = [
            dask.delayed(block_function, pure=True)(block, weight, int(start), shared)
            for block, weight, start in zip(blocks, weights, starts, strict=True)
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
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        valid = np.isfinite(weights) & (weights >= 0)
        first = int(rows(np.flatnonzero(~valid)[0]))
        raise ValueError(
            f"sample_weight is negative or not finite in row {first}; weights are "
            "repeat counts and must be finite and >= 0."
        )


def _block_rows(block, weights, start):
    block = np.ascontiguousarray(block)
    weights = np.asarray(weights, dtype=float)
    _check_block(block, weights, lambda row: start + row)
    return ArrayData(block, weights_of_observed_rows(block, weights))


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
