"""Model-based hierarchical agglomeration, the start of ``init_params="hc"``.

Every row starts as its own cluster; at each step the two clusters whose
merge loses the least classification likelihood are merged (Banfield &
Raftery 1993; Fraley 1998), under the unconstrained-covariance model (R
mclust's default ``hcVVV``). A cluster of total weight ``n`` with scatter
matrix ``W`` about its mean costs

    n * log(det(W / n) + beta * (trace(W) + alpha) / n)

(twice its negative maximised log-likelihood up to constants, with Fraley's
regularisation: ``alpha`` is the mean per-column variance of the data and
``beta = 1``, so singletons and clusters of at most ``D`` rows, whose
``det(W)`` is 0, have a defined cost that grows with their spread). A merge
raises the total cost by the merged cluster's cost less its parts'; the
cheapest merge is taken.

The rows are first moved to mclust's scaled SVD coordinates
(``hcUse="SVD"``; Scrucca & Raftery 2015): columns centred and scaled to
unit variance, rotated onto their principal axes, each axis divided by the
square root of its singular value. Rescaling a column or adding a constant
to it does not change the tree.

The tree follows the criterion above exactly, at every merge. mclust's own
``hcVVV`` (mclust 6.0) does not once a merge makes a cluster of three or
more rows: it keeps each merged cluster's scatter as a triangular factor,
but stores the factor's first row in place of each of its rows and prices
that cluster's later merges from the stored rows (its trace is kept
exactly). Replaying the merges with that one change (and mclust's choice
among exactly tied merges) reproduces mclust's trees on Old Faithful and
mclust's ``wreath``, where they differ from this one (from K = 2 and at K =
2 and 3); on iris and mclust's diabetes, banknote and thyroid the changed
prices alter no merge, and the partitions for K = 1..9 are mclust's. Neither
tree is the better EM start in general: each wins some (model, K) cells of
``benchmarks/bench_mclust.py``, whose ``--start mclust`` starts skvi from
mclust's partitions. Exact ties come from identical rows, which merge first
here in any order, so no partition of this tree depends on tie-breaking.

:func:`agglomerate_mclust` builds the tree of ``init_params="hc_mclust"``:
mclust 6.0's own ``hc()`` tree, replayed. It prices merges from the stored
rows above, does not group identical rows first (``hc()`` does not pass
its default ``dupPartition`` on to ``hcVVV``, which then starts from
singletons; on Old Faithful mclust's first merges grow one cluster from a
repeated row), and among exactly tied merges takes mclust's, the last in
its scan (the pair with the largest slot, then the largest other slot).
Its cuts at K = 1..9 are mclust's on Old Faithful, iris and mclust's
``wreath``, diabetes, banknote and thyroid (checked against R while
writing it); as mclust's, they can depend on the order of the rows where
merges tie exactly (repeated rows). From these starts skvi's BIC is worse
than mclust's by more than 2 in 2 of Old Faithful's 36 cells of the four
shared models instead of 9 (``docs/mclust.rst``).

One tree serves every number of clusters: :meth:`AgglomerationTree.labels`
cuts it at any K. Time is O(m^2 D^3) and memory O(m^2 + m D^2) for m
agglomerated rows, so above ``MAX_AGGLOMERATED_ROWS`` rows (mclust's default
``subset``) a uniform random sample of that many is agglomerated and every
other row joins the cluster with the nearest mean in the transformed
coordinates. Trees are cached by the content of their rows, so that fits of
every K and covariance type on the same data (``select_model``,
``n_init``, grid searches) build it once per process.

:func:`agglomerate_ward` builds the second tree of ``init_params="ward"``
(and of :func:`skvi.select_model`'s ``second_start="ward"``): Ward's
criterion, the classification likelihood of equal spherical covariances
(mclust's ``hcEII``; Fraley 1998), on the same coordinates, by SciPy.

Sample weights are repeat counts: a row of weight w is a cluster of weight
w (weights are divided by their mean, so unit weights are counts of 1 and
only relative weights matter, as in EM).
"""

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import ward

try:
    # ``numpy.linalg.slogdet``'s own kernel, without the wrapper's checks
    # (a few microseconds a merge); the same bits.
    from numpy.linalg._umath_linalg import slogdet as _slogdet_kernel
except ImportError:  # pragma: no cover - a NumPy that moved it
    _slogdet_kernel = None

# mclust's default ``mclust.options("subset")``.
MAX_AGGLOMERATED_ROWS = 2000
# Fraley's ``beta``; mclust's default.
_BETA = 1.0
_CACHE_SIZE = 4
_ASSIGN_CHUNK = 1 << 16


@dataclass(frozen=True)
class AgglomerationTree:
    """The merge sequence of an agglomeration of m rows.

    Attributes
    ----------
    merges : ndarray of shape (m - 1, 2)
        Step s merged the clusters led by rows ``merges[s, 0] <
        merges[s, 1]`` (a cluster is led by its smallest row index); the
        merged cluster is led by ``merges[s, 0]``.
    costs : ndarray of shape (m - 1,)
        The rise of the total cost (twice the classification log-likelihood
        lost) at each step.
    center, scale, projection : ndarray
        The transformation to the agglomerated coordinates:
        ``((X - center) / scale) @ projection``.
    columns : ndarray of int
        The columns used (constant columns are left out).
    """

    merges: np.ndarray
    costs: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    projection: np.ndarray
    columns: np.ndarray
    # The partitions cut so far, by number of clusters: every covariance
    # type of a selection cuts the tree at the same K.
    _cuts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_samples(self):
        """The number of agglomerated rows."""
        return len(self.merges) + 1

    def labels(self, n_clusters):
        """The partition into ``n_clusters`` clusters of the tree's rows.

        Replays the first ``m - n_clusters`` merges. Clusters are numbered
        0, 1, ... in the order of their smallest row. The array is shared
        by every call for the same number (read-only).
        """
        m = self.n_samples
        if not 1 <= n_clusters <= m:
            raise ValueError(
                f"Cannot cut a tree of {m} rows into {n_clusters} clusters."
            )
        labels = self._cuts.get(n_clusters)
        if labels is None:
            labels = self._cut(n_clusters)
            labels.flags.writeable = False
            self._cuts[n_clusters] = labels
        return labels

    def _cut(self, n_clusters):
        m = self.n_samples
        parent = np.arange(m)
        steps = self.merges[: m - n_clusters]
        parent[steps[:, 1]] = steps[:, 0]
        # Leaders only ever point to smaller leaders: jump to the roots.
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        _, labels = np.unique(parent, return_inverse=True)
        return labels

    def transform(self, X):
        """Rows of X in the agglomerated coordinates."""
        X = np.asarray(X, dtype=np.float64)[:, self.columns]
        return ((X - self.center) / self.scale) @ self.projection


def agglomerate(X, sample_weight=None):
    """Agglomerate every row of X (no subsampling; see :func:`hc_labels`).

    Parameters
    ----------
    X : ndarray of shape (m, D)
        Finite rows.
    sample_weight : ndarray of shape (m,), default=None
        Positive repeat counts; None means 1.

    Returns
    -------
    AgglomerationTree
    """
    X = np.asarray(X, dtype=np.float64)
    weights = _tree_weights(sample_weight, X.shape[0])
    center, scale, projection, columns = _scaled_svd(X, weights)
    # Identical rows are merged first, as mclust's default initial
    # partition does; the rest agglomerates their groups as weighted rows.
    _, first, inverse = np.unique(
        X[:, columns], axis=0, return_index=True, return_inverse=True
    )
    order = np.argsort(first)
    leaders = first[order]
    group = np.empty_like(order)
    group[order] = np.arange(len(order))
    group = group[inverse.ravel()]
    group_weights = np.bincount(group, weights=weights, minlength=len(leaders))
    Z = ((X[leaders][:, columns] - center) / scale) @ projection
    if Z.shape[1] == 0:
        # Every row is the same: there is one group.
        Z = np.zeros((len(leaders), 1))
    duplicates = np.flatnonzero(leaders[group] != np.arange(len(X)))
    merges = [np.column_stack([leaders[group[duplicates]], duplicates])]
    costs = [_duplicate_costs(group[duplicates], weights[duplicates], weights[leaders])]
    group_merges, group_costs = _merge_sequence(Z, group_weights)
    merges.append(leaders[group_merges])
    costs.append(group_costs)
    return AgglomerationTree(
        np.concatenate(merges).astype(np.intp, copy=False),
        np.concatenate(costs),
        center,
        scale,
        projection,
        columns,
    )


def agglomerate_mclust(X, sample_weight=None):
    """Agglomerate every row of X as mclust 6.0's ``hc()`` does.

    The same coordinates and criterion as :func:`agglomerate`, with
    mclust's departures (module docstring): merges priced from the stored
    factor rows, no grouping of identical rows, mclust's choice among tied
    merges.

    Parameters
    ----------
    X : ndarray of shape (m, D)
        Finite rows.
    sample_weight : ndarray of shape (m,), default=None
        Positive repeat counts; None means 1.

    Returns
    -------
    AgglomerationTree
    """
    X = np.asarray(X, dtype=np.float64)
    weights = _tree_weights(sample_weight, X.shape[0])
    center, scale, projection, columns = _scaled_svd(X, weights)
    Z = ((X[:, columns] - center) / scale) @ projection
    if Z.shape[1] == 0:
        Z = np.zeros((X.shape[0], 1))
    merges, costs = _merge_sequence(Z, weights, stored_rows=True)
    return AgglomerationTree(
        merges.astype(np.intp, copy=False), costs, center, scale, projection, columns
    )


def agglomerate_ward(X, sample_weight=None):
    """Ward's agglomeration of every row of X, in the tree's coordinates.

    Ward's criterion (the least rise of the within-cluster sum of squares)
    is the classification likelihood of the model with equal spherical
    covariances, mclust's ``hcEII`` (Fraley 1998), here on the same scaled
    SVD coordinates as :func:`agglomerate`. It serves as a second start of
    :func:`skvi.select_model`: cut at the same K, it often gives another
    partition, and EM from it another optimum. SciPy's ``ward`` builds it
    (O(m^2) time and memory).

    Parameters
    ----------
    X : ndarray of shape (m, D)
        Finite rows.
    sample_weight : ndarray of shape (m,), default=None
        Must be None or equal weights: Ward's criterion here counts rows.

    Returns
    -------
    AgglomerationTree
        ``costs`` holds the rise of the within-cluster sum of squares at
        each step.
    """
    X = np.asarray(X, dtype=np.float64)
    # (Its merges' order does not change when every weight is scaled.)
    weights = _unit_mean_weights(sample_weight, X.shape[0])
    if not np.all(weights == 1.0):
        raise ValueError("Ward's agglomeration takes no unequal sample weights.")
    center, scale, projection, columns = _scaled_svd(X, weights)
    m = X.shape[0]
    Z = ((X[:, columns] - center) / scale) @ projection
    merges = np.empty((max(m - 1, 0), 2), dtype=np.intp)
    costs = np.empty(max(m - 1, 0))
    if m >= 2:
        if Z.shape[1] == 0:
            Z = np.zeros((m, 1))
        linkage = ward(Z)
        # SciPy numbers the cluster made at step s as m + s; a cluster is
        # led here by its smallest row.
        leaders = np.concatenate([np.arange(m), np.empty(m - 1, dtype=np.intp)])
        pairs = linkage[:, :2].astype(np.intp)
        for step, (a, b) in enumerate(pairs):
            first, second = sorted((leaders[a], leaders[b]))
            merges[step] = first, second
            leaders[m + step] = first
        # SciPy's height is sqrt(2 x the rise of the sum of squares).
        costs[:] = linkage[:, 2] ** 2 / 2.0
    return AgglomerationTree(merges, costs, center, scale, projection, columns)


def _duplicate_costs(groups, weights, leader_weights):
    """The cost rises of merging duplicate rows into their groups in turn.

    A cluster of identical rows costs ``n log(beta alpha / n)``, so adding
    weight w to weight s raises the cost by ``s log s + w log w - (s + w)
    log(s + w)`` (always negative: duplicates go first).
    """
    filled = leader_weights.copy()
    costs = np.empty(len(groups))
    for step, (g, w) in enumerate(zip(groups, weights, strict=True)):
        s = filled[g]
        costs[step] = s * np.log(s) + w * np.log(w) - (s + w) * np.log(s + w)
        filled[g] = s + w
    return costs


def hc_labels(X, sample_weight, n_clusters, random_state, criterion="vvv"):
    """Labels of every row of X from a (cached) agglomeration tree.

    Above ``MAX_AGGLOMERATED_ROWS`` rows a uniform sample of that many
    (drawn with ``random_state``) is agglomerated and the other rows join
    the nearest cluster mean in the tree's coordinates. ``criterion``:
    "vvv" (:func:`agglomerate`), "mclust" (:func:`agglomerate_mclust`) or
    "ward" (:func:`agglomerate_ward`).
    """
    n_samples = X.shape[0]
    if n_samples > MAX_AGGLOMERATED_ROWS:
        sample = np.sort(
            random_state.choice(n_samples, MAX_AGGLOMERATED_ROWS, replace=False)
        )
    else:
        sample = None
    rows = X if sample is None else X[sample]
    weights = None if sample_weight is None else np.asarray(sample_weight)
    if weights is not None and sample is not None:
        weights = weights[sample]
    tree = _TREES_BY_CRITERION[criterion].get(rows, weights)
    labels = tree.labels(n_clusters)
    if sample is None:
        return labels
    return _nearest_mean_labels(X, tree, rows, weights, labels, sample, n_clusters)


def _nearest_mean_labels(X, tree, rows, weights, sample_labels, sample, k):
    Z = tree.transform(rows)
    w = _unit_mean_weights(weights, len(rows))
    totals = np.bincount(sample_labels, weights=w, minlength=k)
    means = (
        np.stack(
            [np.bincount(sample_labels, weights=w * z, minlength=k) for z in Z.T],
            axis=1,
        )
        / totals[:, np.newaxis]
    )
    labels = np.empty(X.shape[0], dtype=np.intp)
    for start in range(0, X.shape[0], _ASSIGN_CHUNK):
        chunk = tree.transform(X[start : start + _ASSIGN_CHUNK])
        distances = (
            -2.0 * chunk @ means.T + np.einsum("kd,kd->k", means, means)[np.newaxis]
        )
        labels[start : start + len(chunk)] = np.argmin(distances, axis=1)
    # The agglomerated rows keep their own clusters.
    labels[sample] = sample_labels
    return labels


def _tree_weights(sample_weight, n_samples):
    """The weights a tree counts its rows by: counts, or relative weights.

    Whole numbers are repeat counts, as everywhere in skvi, where the rows
    they stand for would be agglomerated whole (a total of at most
    ``MAX_AGGLOMERATED_ROWS``): a row of weight 3 is three identical rows,
    which the tree merges first, so its tree is that of the rows repeated.
    Beyond that total the repeated rows would be subsampled, and counts of
    thousands make the regularised criterion merge as if every row were a
    cluster of that many identical rows. Other weights, and such counts,
    are relative: scaled to a mean of 1, so that their scale does not
    matter (equal ones give the unweighted tree).
    """
    if sample_weight is None:
        return np.ones(n_samples)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if _counted(weights):
        return weights
    return _unit_mean_weights(weights, n_samples)


def _counted(weights):
    """Whether a tree reads ``weights`` as counts (:func:`_tree_weights`)."""
    return bool(
        np.all(weights == np.floor(weights))
        and np.sum(weights) <= MAX_AGGLOMERATED_ROWS
    )


def _unit_mean_weights(sample_weight, n_samples):
    if sample_weight is None:
        return np.ones(n_samples)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if np.all(weights == weights[0]):
        return np.ones(n_samples)
    return weights * (n_samples / weights.sum())


def _scaled_svd(X, weights):
    """The scaled SVD transformation (mclust's ``hcUse="SVD"``), weighted.

    Columns are centred and divided by their standard deviation (n - 1 in
    the denominator, as R's ``scale``); constant columns are dropped. The
    standardised rows are rotated onto the right singular vectors and each
    coordinate divided by the square root of its singular value. Directions
    of zero singular value carry no information and are dropped.
    """
    total = weights.sum()
    center = weights @ X / total
    deviations = X - center
    variance = weights @ deviations**2 / max(total - 1.0, 1.0)
    spread = np.sqrt(variance)
    # A column is constant when its spread is rounding error of its values.
    magnitude = np.max(np.abs(X), axis=0) if len(X) else np.zeros(X.shape[1])
    columns = np.flatnonzero(spread > 16 * np.finfo(np.float64).eps * magnitude)
    if columns.size == 0:
        return center[:0], spread[:0], np.zeros((0, 0)), columns
    center, spread = center[columns], spread[columns]
    standardised = deviations[:, columns] / spread
    _, singular, vt = np.linalg.svd(
        np.sqrt(weights)[:, np.newaxis] * standardised, full_matrices=False
    )
    keep = singular > singular[0] * max(standardised.shape) * np.finfo(float).eps
    projection = vt[keep].T / np.sqrt(singular[keep])
    return center, spread, projection, columns


# Flat entries of a 3 x 3 matrix: [b, d, d], [c, c, e], [e, e, b], [e, f, f],
# [a, d, f] (see _log_determinants).
_DET3_ENTRIES = np.array([4, 1, 1, 8, 8, 5, 5, 5, 4, 5, 2, 2, 0, 1, 2])


def _log_determinants(S):
    """``log det`` of symmetric positive semi-definite matrices ``S[:, :, k]``.

    The matrices are stacked along the last axis, so that every operation
    below runs over them in its inner loop. -inf where singular (or not
    positive); call it under ``np.errstate(divide="ignore")``, as the
    agglomeration does, for ``log(0)``. Small matrices take the explicit
    formulas, which are many times faster than a LAPACK call per matrix.
    """
    p = S.shape[0]
    if p == 1:
        det = S[0, 0]
    elif p == 2:
        det = S[0, 0] * S[1, 1] - S[0, 1] ** 2
    elif p == 3:
        # a (b c - e e) - d (d c - e f) + f (d e - b f), with a, b, c the
        # diagonal and d, e, f the (0, 1), (1, 2), (0, 2) entries: the
        # three minors and their terms each in one operation.
        entries = S.reshape(9, -1)[_DET3_ENTRIES]
        minors = entries[0:3] * entries[3:6]
        minors -= entries[6:9] * entries[9:12]
        minors *= entries[12:15]
        det = minors[0] - minors[1]
        det += minors[2]
    else:
        # LAPACK copies each matrix anyway; one copy of all is cheaper.
        stacked = S.transpose(2, 0, 1).copy()
        if _slogdet_kernel is None:  # pragma: no cover
            sign, logdet = np.linalg.slogdet(stacked)
        else:
            sign, logdet = _slogdet_kernel(stacked, signature="d->dd")
        logdet[~(sign > 0)] = -np.inf
        return logdet
    # fmax: not positive (or NaN) -> log(0) = -inf.
    return np.log(np.fmax(det, 0.0))


class _Agglomeration:
    """The state of a running agglomeration, clusters packed in slots.

    The ``n`` live clusters occupy slots ``0 .. n - 1``; when two merge,
    the last slot moves into the freed one, so every step works on
    contiguous views that shrink as the agglomeration goes. ``leader[s]``
    is the smallest row of slot s's cluster. ``cost[s, t]`` is the rise of
    the total cost when the clusters in slots s and t merge (inf on the
    diagonal); ``best[s]`` and ``partner[s]`` are the minimum of row s and
    where it is, kept up to date by touching only the rows a merge changes:
    O(n D^3) work per merge.
    """

    def __init__(self, Z, weights, stored_rows=False):
        m, p = Z.shape
        self.n = m
        self.p = p
        # mclust's hcVVV: later merges priced from the stored factor rows.
        self.stored_rows = stored_rows
        if stored_rows:
            self._stored_terms = _stored_terms(p)
        # mclust's alpha: the trace of the data's scatter over n * D.
        total = weights.sum()
        squares = weights @ (Z - weights @ Z / total) ** 2
        self.alpha = max(squares.sum() / (total * p), np.finfo(np.float64).eps)
        # Slot s's values are column s of two arrays: the slots are the
        # inner axis of every operation on all of them, and moving a slot
        # is two column copies.
        self._reals = np.zeros((4 + p + p * p, m))
        self._ints = np.zeros((3, m), dtype=np.intp)
        self.terms, self.best, self.sizes, self.traces = self._reals[:4]
        self.means = self._reals[4 : 4 + p]
        self.scatters = self._reals[4 + p :].reshape(p, p, m)
        self.leader, self.counts, self.partner = self._ints
        self.leader[:] = np.arange(m)
        self.counts[:] = 1
        self.sizes[:] = weights
        self.means[:] = Z.T
        self.terms[:] = self.sizes * np.log(_BETA * self.alpha / self.sizes)
        self.cost = self._singleton_pair_costs(Z, weights)
        self.partner[:] = self.cost.argmin(axis=1)
        self.best[:] = self.cost[np.arange(m), self.partner]

    def _singleton_pair_costs(self, Z, weights):
        # Two rows' scatter has rank 1: its determinant is 0 unless D == 1.
        # In place: the (m, m) arrays are the memory of the agglomeration.
        sq = np.einsum("id,id->i", Z, Z)
        traces = Z @ Z.T
        traces *= -2.0
        traces += sq[:, np.newaxis]
        traces += sq[np.newaxis]
        np.maximum(traces, 0.0, out=traces)
        if weights.min() == weights.max():
            # Equal weights: the same operations on scalars, not (m, m)
            # arrays, and none that multiply by 1.
            weight, term = float(weights[0]), float(self.terms[0])
            sizes = weight + weight
            product = weight * weight
            terms = rows = term
        else:
            sizes = weights[:, np.newaxis] + weights[np.newaxis]
            product = weights[:, np.newaxis] * weights[np.newaxis]
            rows, terms = self.terms[:, np.newaxis], self.terms[np.newaxis]
        # trace = (w_i w_j / n) |z_i - z_j|^2 and the cost's ridge divides
        # it by n again.
        if not (isinstance(product, float) and product == 1.0):
            traces *= product
        traces /= sizes**2
        ridge = traces
        if self.p == 1:
            ridge *= 1.0 + _BETA
        elif _BETA != 1.0:
            ridge *= _BETA
        ridge += _BETA * self.alpha / sizes
        cost = np.log(ridge, out=ridge)
        cost *= sizes
        cost -= rows
        cost -= terms
        np.fill_diagonal(cost, np.inf)
        return cost

    def closest_pair(self):
        """The slots of the cheapest merge.

        With ``stored_rows``, among exactly tied merges mclust's: the pair
        with the largest slot, then the largest other slot (its scan keeps
        the last minimum).
        """
        best = self.best[: self.n]
        s = int(best.argmin())
        # A unique cheapest merge is the best of its two slots only.
        smallest = best[s]
        if self.stored_rows and np.count_nonzero(best == smallest) > 2:
            pairs = [
                (max(a, b), min(a, b))
                for a in (best == smallest).nonzero()[0]
                for b in (self.cost[a, : self.n] == smallest).nonzero()[0]
            ]
            last, other = max(pairs)
            return int(other), int(last)
        return s, int(self.partner[s])

    def rises(self, a):
        """The cost rises of merging slot a with every live slot (inf at a).

        A merged cluster costs ``n log(det(W/n) + beta (trace W + alpha) /
        n)``, or ``n log(beta (trace W + alpha) / n)`` where it has at most
        ``D`` rows (``det(W)`` is exactly 0): the determinants are computed
        only for the pairs of more rows, all of them once slot a holds
        ``D`` rows or more.
        """
        # In place where it changes no bit: every call here costs
        # microseconds, the arithmetic on n pairs far less.
        n, p = self.n, self.p
        size = self.sizes[a]
        live = self.sizes[:n]
        sizes = size + live
        factor = size * live
        factor /= sizes
        # The gaps by coordinate, slots inner: the outer products below run
        # over the slots in their inner loop.
        g = self.means[:, :n] - self.means[:, a, np.newaxis]
        if p <= 2:
            # The sum einsum takes for one or two coordinates, in fewer steps.
            squares = g * g
            distances = squares[0] + squares[1] if p == 2 else squares[0]
        else:
            # einsum's order of summation, which depends on the layout.
            gaps = np.ascontiguousarray(g.T)
            distances = np.einsum("jd,jd->j", gaps, gaps)
        traces = self.traces[a] + self.traces[:n]
        traces += factor * distances
        # _BETA is 1: multiplying by it would change no bit.
        traces += self.alpha
        traces /= sizes
        ridge = np.log(traces, out=traces)
        count = self.counts[a]
        own = self.scatters[:, :, a, np.newaxis]
        if count >= p:
            scatter = self.scatters[:, :, :n] + own
            scatter += (factor * g)[:, np.newaxis] * g
            logdets = _log_determinants(scatter)
            logdets -= p * np.log(sizes)
            np.logaddexp(logdets, ridge, out=ridge)
        else:
            (full_rank,) = (self.counts[:n] > p - count).nonzero()
            if full_rank.size:
                g = g[:, full_rank]
                scatter = self.scatters[:, :, full_rank] + own
                scatter += (factor[full_rank] * g)[:, np.newaxis] * g
                logdets = _log_determinants(scatter)
                logdets -= p * np.log(sizes[full_rank])
                ridge[full_rank] = np.logaddexp(logdets, ridge[full_rank])
        rises = ridge
        rises *= sizes
        rises -= self.terms[a]
        rises -= self.terms[:n]
        rises[a] = np.inf
        return rises

    def merge(self, a, b, merged_term):
        """Merge slot b's cluster into slot a's; update the costs."""
        size_a, size_b = self.sizes[a], self.sizes[b]
        size = size_a + size_b
        means = self.means
        gap = means[:, b] - means[:, a]
        factor = size_a * size_b / size
        scatter = self.scatters[:, :, a]
        scatter += self.scatters[:, :, b] + factor * (gap[:, np.newaxis] * gap)
        if self.stored_rows:
            _stored_scatter(scatter, size, self._stored_terms, out=True)
        self.traces[a] += self.traces[b] + factor * (gap @ gap)
        means[:, a] += (size_b / size) * gap
        self.sizes[a] = size
        self.counts[a] += self.counts[b]
        self.terms[a] = merged_term
        self.leader[a] = min(self.leader[a], self.leader[b])
        n = self.n
        # Rows whose best partner was a or b: their minimum may have risen.
        partner = self.partner[:n]
        stale = partner == a
        stale |= partner == b
        last = n - 1
        if b != last:
            self._move(last, b)
            stale[b] = stale[last]
            if a == last:
                a = b
        self.n = n = last
        stale = stale[:n]
        stale[a] = False
        rises = self.rises(a)
        self.cost[a, :n] = rises
        self.cost[:n, a] = rises
        if n == 1:
            return
        closest = rises.argmin()
        self.best[a] = rises[closest]
        self.partner[a] = closest
        (rows,) = stale.nonzero()
        if rows.size:
            block = self.cost[rows, :n]
            closest = block.argmin(axis=1)
            self.partner[rows] = closest
            self.best[rows] = block[np.arange(len(rows)), closest]
        best = self.best[:n]
        better = rises < best
        better[rows] = False
        np.copyto(best, rises, where=better)
        np.copyto(self.partner[:n], a, where=better)

    def _move(self, source, target):
        """Move the cluster in slot ``source`` to slot ``target``."""
        n = self.n
        self._reals[:, target] = self._reals[:, source]
        self._ints[:, target] = self._ints[:, source]
        self.cost[target, :n] = self.cost[source, :n]
        self.cost[:n, target] = self.cost[:n, source]
        self.cost[target, target] = np.inf
        self.partner[:n][self.partner[:n] == source] = target


def _stored_terms(p):
    """``terms[r][j, k]``: the stored rows (of ``r``) that reach entry (j, k).

    Stored row ``i`` is the factor's first row from column ``i`` on, so it
    reaches entry (j, k) when ``i <= min(j, k)``: ``min(j, k) + 1`` rows of
    ``r``, at most ``r``.
    """
    index = np.arange(p)
    reach = np.minimum.outer(index, index) + 1
    return [np.minimum(reach, rows).astype(np.float64) for rows in range(p + 1)]


def _stored_scatter(scatter, size, terms=None, out=False):
    """The scatter mclust's ``hcVVV`` stores for a merged cluster.

    It keeps the cluster's upper triangular factor ``R`` (``R^T R = W``) as
    ``min(rows - 1, D)`` stored rows, each a copy of ``R``'s first row, and
    reads stored row ``i`` from column ``i`` on: the factor it prices the
    cluster's later merges from has rows ``r_1`` with its first ``i``
    entries zeroed. ``R``'s first row is ``W[0] / sqrt(W[0, 0])`` (up to a
    sign, which the outer products drop). Clusters of at most two rows keep
    their scatter (rank one: the first row is the whole factor).
    """
    p = len(scatter)
    rows = min(int(round(size)) - 1, p)
    if rows < 2 or not scatter[0, 0] > 0:
        return scatter
    if terms is None:
        terms = _stored_terms(p)
    first = scatter[0] / math.sqrt(scatter[0, 0])
    # In place (``out``): the agglomeration's own slot.
    result = scatter if out else np.empty_like(scatter)
    np.multiply(first[:, np.newaxis], first, out=result)
    result *= terms[rows]
    return result


def _merge_sequence(Z, weights, stored_rows=False):
    """The merges (by leading row) and their cost rises, in order."""
    m = Z.shape[0]
    merges = np.empty((max(m - 1, 0), 2), dtype=np.intp)
    costs = np.empty(max(m - 1, 0))
    if m < 2:
        return merges, costs
    state = _Agglomeration(Z, weights, stored_rows)
    # log(0) = -inf is the log-determinant of a singular scatter.
    with np.errstate(divide="ignore"):
        for step in range(m - 1):
            a, b = state.closest_pair()
            rise = state.cost[a, b]
            merges[step] = sorted((state.leader[a], state.leader[b]))
            costs[step] = rise
            state.merge(a, b, rise + state.terms[a] + state.terms[b])
    return merges, costs


class _TreeCache:
    """The last few trees, keyed by the bytes of their rows and unequal weights.

    Thread-safe: fits running in threads may share it (a tree two threads
    miss at once is built twice, harmlessly).
    """

    def __init__(self, size, build):
        self.size = size
        self.build = build
        self.trees = OrderedDict()
        self.builds = 0
        self._lock = threading.Lock()

    def get(self, X, weights):
        digest = hashlib.blake2b(digest_size=16)
        X = np.ascontiguousarray(X, dtype=np.float64)
        digest.update(repr(X.shape).encode())
        digest.update(X.tobytes())
        # Equal weights build the unweighted tree, unless they are counts
        # other than 1 (_tree_weights).
        if weights is not None and weights.size:
            weights = np.ascontiguousarray(weights, dtype=np.float64)
            # (np.ptp's Python layer costs more than the two reductions.)
            if np.maximum.reduce(weights) != np.minimum.reduce(weights):
                digest.update(weights.tobytes())
            elif weights[0] != 1.0 and _counted(weights):
                digest.update(repr(float(weights[0])).encode())
        key = digest.hexdigest()
        with self._lock:
            tree = self.trees.get(key)
            if tree is not None:
                self.trees.move_to_end(key)
                return tree
        tree = self.build(X, weights)
        with self._lock:
            self.builds += 1
            self.trees[key] = tree
            while len(self.trees) > self.size:
                self.trees.popitem(last=False)
        return tree


_TREES = _TreeCache(_CACHE_SIZE, agglomerate)
_WARD_TREES = _TreeCache(_CACHE_SIZE, agglomerate_ward)
_MCLUST_TREES = _TreeCache(_CACHE_SIZE, agglomerate_mclust)
_TREES_BY_CRITERION = {"vvv": _TREES, "ward": _WARD_TREES, "mclust": _MCLUST_TREES}


def _cached_tree(X, weights):
    return _TREES.get(X, weights)
