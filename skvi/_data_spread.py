"""What the data give each component where entries are missing.

The degeneracy rules (:mod:`skvi._degeneracy`) ask of a fitted component
how much spread its rows give it, and in how many rows it observes each
column. On complete data the fit's own statistics answer both: the M-step's
scatter is the rows' scatter, and every row observes every column. With
missing entries the M-step's scatter is not the data's: for a row missing
x_m it adds the conditional covariance ``Cov[x_m | x_o, k]`` of the missing
entries to the scatter of the rows' conditional expectations. That is the
model's own covariance, not spread the data show: a component whose rows
share one value of a column, a fraction f of them missing it, reaches the
fixed point ``Sigma = reg_covar / (1 - f)`` there (for a column uncorrelated
with the others), so that ``Sigma - reg_covar`` is no longer 0; and a
component that observes a column in no row keeps ``Sigma + reg_covar`` from
one M-step to the next there, a variance that grows by ``reg_covar`` per
iteration without end.

:func:`data_spread` makes two passes over X under the fitted model for
both:

* each component's scatter of its rows' conditional expectations
  ``E[x | x_o, k]`` (the observed values, and the conditional means of the
  missing ones) about their weighted mean, over its weight: the spread the
  data give it, without the conditional covariances. The conditional
  means are taken about the mean they would have at EM's fixed point for
  the fitted covariances and responsibilities, not the fitted mean: where
  most rows of a collapsed component miss a column, EM moves its mean
  there towards the observed value by only the observed share per
  iteration, and the fit may stop with the mean a few 1e-5 away, which
  would put that much spread between the observed values and the
  conditional means. The fixed point ``m = mean_n E[x_n | x_o, k; m]``
  is linear in m (``E[x_m | x_o] = m_m + Sigma_mo Sigma_oo^-1 (x_o -
  m_o)``): the first pass sums the rows' expectations and their
  derivatives in m, the second the scatter about the solution;
* the effective points that observe each column, per component: the
  responsibilities of the rows that have a value there, summed with their
  weights, in Kish's effective sample size as the effective-points rule
  counts a component's points.

Rows of weight 0, or with no observed value, take no part (they observe
nothing). On complete data it returns None and the rules read the fit's
statistics as they always did: the expectations are then the rows
themselves, and the pass would only repeat the last E-step.
"""

from dataclasses import dataclass

import numpy as np

from ._dask import dask_weights, is_dask_collection
from ._degeneracy import full_matrices
from ._kernel import normalize_in_place, row_values
from ._validation import (
    check_sample_weight,
    rescaled_weights,
    validate_rows,
    weights_of_observed_rows,
)


@dataclass(frozen=True)
class DataSpread:
    """What the data give each component (see the module's docstring).

    Attributes
    ----------
    scatters : ndarray of shape (n_components, n_features, n_features)
        Each component's scatter of its rows' conditional expectations
        about their weighted mean, at the mean's fixed point, over its
        weight (0 for a component that holds no weight).
    observed : ndarray of shape (n_components, n_features)
        The effective points of each component that observe each column.
    """

    scatters: np.ndarray
    observed: np.ndarray


class _Sums:
    """Weighted sums of one pass, added block by block.

    The first pass (no ``shifts``): each component's weight ``mass``, its
    weight on each column's observed entries ``observed``, the sum of its
    rows' expectations less its mean ``first`` and of their derivatives in
    the mean ``jacobian``; and the rows' weights' sum and sum of squares.
    The second: ``first`` and ``second``, the sums of the expectations
    about the fixed-point mean and of their outer products.
    """

    _NAMES = ("mass", "observed", "first", "second", "jacobian", "total", "squares")

    def __init__(self, n_components, n_features):
        self.mass = np.zeros(n_components)
        self.observed = np.zeros((n_components, n_features))
        self.first = np.zeros((n_components, n_features))
        self.second = np.zeros((n_components, n_features, n_features))
        self.jacobian = np.zeros((n_components, n_features, n_features))
        self.total = 0.0
        self.squares = 0.0
        self.missing = False

    def __iadd__(self, other):
        for name in self._NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.missing = self.missing or other.missing
        return self


def data_spread(model, X, sample_weight):
    """The spread and observed columns the data give a fitted EM model.

    Parameters
    ----------
    model : EMGaussianMixture
        Fitted.
    X : array-like or dask.array.Array of shape (n_samples, n_features)
        The rows it was fitted to.
    sample_weight : None, array-like or dask.array.Array of shape (n_samples,)

    Returns
    -------
    spread : DataSpread or None
        None where X has no missing entry.
    """
    if is_dask_collection(X):
        passes = _dask_passes(model, X, sample_weight)
    else:
        X = validate_rows(model, X, reset=False)
        if not _has_missing(X):
            return None
        weights = rescaled_weights(check_sample_weight(sample_weight, X.shape[0]))
        passes = _Passes(model, *_rows_taking_part(X, weights))

    sums = passes(None)
    if not sums.missing:
        return None
    held = sums.mass > 0
    safe = np.where(held, sums.mass, 1.0)
    # The fixed point m = mu + delta of the mean: the expectations' mean
    # moves by J delta where the mean moves by delta, so that
    # (I - J) delta = their mean less mu. Least squares: a column that no
    # row of a component observes leaves its mean there free (delta 0).
    jacobian = sums.jacobian / safe[:, np.newaxis, np.newaxis]
    offsets = sums.first / safe[:, np.newaxis]
    eye = np.eye(offsets.shape[1])
    shifts = np.stack(
        [
            np.linalg.lstsq(eye - matrix, offset, rcond=None)[0]
            for matrix, offset in zip(jacobian, offsets, strict=True)
        ]
    )
    shifts[~held] = 0.0
    spread = passes(shifts)
    offsets = spread.first / safe[:, np.newaxis]
    scatters = spread.second / safe[:, np.newaxis, np.newaxis]
    # About the expectations' own mean (the fixed point, to rounding).
    scatters -= offsets[:, :, np.newaxis] * offsets[:, np.newaxis, :]
    scatters[~held] = 0.0
    scatters = 0.5 * (scatters + np.swapaxes(scatters, 1, 2))
    # Weighted counts in effective points: sum(w) / sum(w**2) per unit of
    # weight, 1 for equal weights of any scale.
    per_weight = sums.total / sums.squares if sums.squares > 0 else 0.0
    return DataSpread(scatters=scatters, observed=sums.observed * per_weight)


def _rows_taking_part(X, weights):
    """The rows of positive weight and some observed value, and their weights."""
    weights = weights_of_observed_rows(X, np.asarray(weights, dtype=float))
    present = weights > 0
    if not present.all():
        return X[present], weights[present]
    return X, weights


def _full_precisions(model):
    """The fitted precisions as (n_components, n_features, n_features)."""
    n_components, n_features = model.means_.shape
    layout = getattr(model, "_fitted_covariance_type", model.covariance_type)
    return full_matrices(layout, model.precisions_, n_components, n_features)


#: The largest first pass (bytes of its responsibilities and conditional
#: moments) whose chunks the second pass reads again, not to recompute them.
CACHE_BYTES = 64 * 2**20


class _Passes:
    """The two passes over rows in memory: the second reads the first's chunks.

    Where their E-step results fit in :data:`CACHE_BYTES`; else it computes
    them again.
    """

    def __init__(self, model, X, weights):
        self.model, self.X, self.weights = model, X, weights
        self.chunks = None

    def __call__(self, shifts):
        if shifts is None:
            chunks = _chunk_moments(self.model, self.X, self.weights)
            if _moment_bytes(self.model, self.X) <= CACHE_BYTES:
                chunks = self.chunks = list(chunks)
            return _first_sums(self.model, self.X, self.weights, chunks)
        chunks = self.chunks
        if chunks is None:
            chunks = _chunk_moments(self.model, self.X, self.weights)
        return _second_sums(self.model, self.X, shifts, chunks)


def _moment_bytes(model, X):
    """The bytes of :func:`_chunk_moments`'s arrays for rows X.

    The responsibilities (K per row), the conditional means (K per missing
    entry) and covariances (K s^2 per row missing s entries), and the
    indices. Each component's expectations (K D per row) and derivatives
    (K D per missing entry), 20 times the data at D = 16 and K = 8, are
    not kept: they are rebuilt from these.
    """
    n_components = model.means_.shape[0]
    counts = np.count_nonzero(np.isnan(X), axis=1)
    values = X.shape[0] + int(counts.sum()) + int(counts @ counts)
    return 8 * n_components * values + 8 * 2 * int(counts.sum())


def _block_sums(model, X, weights, shifts):
    """One pass's sums over rows X (in memory) and their weights.

    The first pass with ``shifts`` None, the second with each component's
    shift of its mean to the fixed point (:class:`_Sums`).
    """
    chunks = _chunk_moments(model, X, weights)
    if shifts is None:
        return _first_sums(model, X, weights, chunks)
    return _second_sums(model, X, shifts, chunks)


def _chunk_moments(model, X, weights):
    """Per chunk of rows X, what the fitted model's E-step says of them.

    Yields ``(rows, weighted, groups)``: the chunk's slice of X, the
    responsibilities times the rows' weights (K, m), and per group of rows
    with the same number s of missing entries ``(members, missing, fills,
    covariances)``: the rows, their missing coordinates (n, s), each
    component's conditional means of them less its mean (K, n, s) and their
    conditional covariances (K, n, s, s). Nothing for rows without a
    missing entry.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0 or not _has_missing(X):
        return
    n_components, n_features = model.means_.shape
    unit = model._fitted_unit(n_features)
    plan, _ = model._component_log_density(unit, X.dtype)
    means = np.asarray(model.means_, dtype=float)
    for rows in plan.chunks(X.shape[0]):
        # The log joints (K, m) and the conditional moments from one
        # factorisation of each row's missing block.
        weighted, moments = row_values(plan, X[rows], conditionals=True)
        normalize_in_place(weighted)  # responsibilities ...
        weighted *= weights[rows]  # ... times the rows' weights
        groups = [
            (members, missing, conditional - means[:, missing], covariances)
            for members, missing, conditional, covariances in moments
        ]
        yield rows, weighted, groups


def _expectations(model, chunk, groups):
    """Each component's expectations of the chunk's rows less its mean.

    (K, m, D): the observed values, and the conditional means of the
    missing ones, in one pass over the array (NaN where missing, then
    filled).
    """
    expected = chunk - np.asarray(model.means_, dtype=float)[:, np.newaxis, :]
    for members, missing, fills, _ in groups:
        expected[:, members[:, np.newaxis], missing] = fills
    return expected


def _first_sums(model, X, weights, chunks):
    """The first pass's sums (:class:`_Sums`) from :func:`_chunk_moments`.

    A missing entry's conditional mean moves by ``Cov[x_m | x_o]
    Lambda[m, :]`` (its derivative) times a move of the component's mean.
    """
    sums = _Sums(*model.means_.shape)
    # The derivatives' weighted sum is A_k Lambda_k, A_k the weighted sum of
    # the rows' conditional covariances placed at their missing coordinates.
    placed = np.zeros_like(sums.jacobian)
    for rows, weighted, groups in chunks:
        chunk = X[rows]
        expected = _expectations(model, chunk, groups)
        sums.missing = True
        sums.mass += weighted.sum(axis=1)
        sums.observed += weighted @ ~np.isnan(chunk)
        sums.first += np.einsum("km,kmd->kd", weighted, expected)
        for members, missing, _, covariances in groups:
            _add_placed(placed, missing, weighted[:, members], covariances)
    if sums.missing:
        sums.jacobian = placed @ _full_precisions(model)
        sums.total = float(weights.sum())
        sums.squares = float(weights @ weights)
    return sums


def _second_sums(model, X, shifts, chunks):
    """The second pass's sums about the fixed-point means ``means_ + shifts``.

    A component's conditional means move by their derivative times its
    shift, ``Cov[x_m | x_o] (Lambda shift)[m]``: the products of the
    precisions and the shifts are taken once, not per missing entry.
    """
    sums = _Sums(*model.means_.shape)
    moved = np.einsum("kij,kj->ki", _full_precisions(model), shifts)
    for rows, weighted, groups in chunks:
        sums.missing = True
        about = _expectations(model, X[rows], groups)
        about -= shifts[:, np.newaxis, :]
        for members, missing, _, covariances in groups:
            change = covariances @ moved[:, missing][..., np.newaxis]
            about[:, members[:, np.newaxis], missing] += change[..., 0]
        sums.first += np.einsum("km,kmd->kd", weighted, about)
        sums.second += np.swapaxes(about * weighted[:, :, np.newaxis], 1, 2) @ about
    return sums


def _add_placed(placed, missing, weights, covariances):
    """Add the weighted covariances (K, n, s, s) at coordinates ``missing`` (n, s).

    ``placed[k, i, j]`` gets the sum over the rows' entries at coordinates
    (i, j), by one ``np.bincount`` over all components: no (K, n, s, D)
    derivative per missing entry is formed, and no unbuffered ``np.add.at``
    (a third of the diagnosis of a 10%-missing fit, 100,000 x 16, K = 8).
    """
    n_components, n_features = placed.shape[:2]
    if missing.size == 0:
        return
    cells = (missing[:, :, np.newaxis] * n_features + missing[:, np.newaxis, :]).ravel()
    offsets = np.arange(n_components)[:, np.newaxis] * n_features**2
    weighted = covariances * weights[:, :, np.newaxis, np.newaxis]
    placed += np.bincount(
        (offsets + cells).ravel(),
        weights=weighted.ravel(),
        minlength=placed.size,
    ).reshape(placed.shape)


def _dask_passes(model, X, sample_weight):
    """The passes of :func:`data_spread` over a Dask array's row blocks."""
    import copy

    import dask

    from ._dask import check_dask_array

    X = check_dask_array(X, model.n_features_in_)
    row_chunks = X.chunks[0]
    if sample_weight is None:
        weight_blocks = [dask.delayed(np.ones)(rows) for rows in row_chunks]
    else:
        weights = dask_weights(sample_weight, row_chunks)
        (largest,) = dask.compute(weights.max())
        weights = weights.map_blocks(rescaled_weights, largest, dtype=float)
        weight_blocks = list(weights.to_delayed().ravel())
    snapshot = copy.deepcopy(model)
    blocks = list(X.to_delayed().ravel())

    def passes(shifts):
        parts = [
            dask.delayed(_part_sums)(snapshot, block, block_weights, shifts)
            for block, block_weights in zip(blocks, weight_blocks, strict=True)
        ]
        sums = _Sums(*model.means_.shape)
        for part in dask.compute(*parts):
            sums += part
        return sums

    return passes


def _part_sums(model, block, weights, shifts):
    """:func:`_block_sums` of a block's rows that take part."""
    block, weights = _rows_taking_part(np.asarray(block), np.asarray(weights))
    return _block_sums(model, block, weights, shifts)


def _has_missing(X):
    """Whether X has a NaN entry (the sum first: no mask without one)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isnan(np.sum(X)):
            return False
    # Huge finite values can overflow the sum to NaN too.
    return bool(np.isnan(X).any())
