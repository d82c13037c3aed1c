"""Merge moves: exact ELBO-increasing jumps between local optima of VI.

Coordinate ascent drains a redundant component (two components sharing one
cluster, as a k-means start with too many centers leaves them) only by tiny
steps, thousands of iterations for a bound change each far below ``tol``.
A merge move (Hughes & Sudderth, "Memoized online variational inference for
Dirichlet process mixture models", NIPS 2013) replaces q(Z) by the q' that
gives component j the responsibilities ``r_nj + r_nk`` and component k none.
q' is a valid q(Z), its statistics are sums of the old ones, and its entropy
needs only ``-sum_n s_n log s_n`` per pair, which one E-step sums. The
global step from q' and its exact ELBO follow; a merge is kept only if that
ELBO beats the ordinary global step by at least ``MERGE_GAIN * tol``, so
the objective still never decreases and every recorded bound stays exact.
"""

from dataclasses import dataclass

import numpy as np

from ._covariance import DegenerateComponentError
from ._stats import Moments, e_step, empty_components

# Each component is priced against this many of its nearest partners.
MERGE_PARTNERS = 3
# A merge is kept if it raises the per-sample bound by this fraction of tol:
# far above rounding, yet a merge of two small components, which changes
# q(Z) on a few rows only, gains well below tol per sample of all rows.
MERGE_GAIN = 0.1
# A run whose change shrinks by less than this factor per iteration is slow:
# at this rate Aitken's remainder is ten or more changes.
SLOW_RATE = 0.9


class MergeSchedule:
    """When a batch run tries merge moves.

    Always where the stopping rule would end the run (it has converged only
    if no merge pays), and also while it climbs slowly: redundant
    components drain at a rate near 1, so the stopping rule may not fire
    within ``max_iter`` while a merge would jump to the optimum. A slow
    phase that is not such a stall would otherwise pay for a futile attempt
    every iteration, so after one that finds nothing the next waits until
    the iteration count has doubled: at most ``log2(max_iter)`` of them.
    """

    def __init__(self, enabled, next_try=1):
        self.enabled = enabled
        # The first iteration (counted over warm starts that continue one
        # run) after which a slow phase may try merges again.
        self.next_try = next_try

    def due(self, n_iter, change, previous_change, stopping):
        """Whether to try merges after iteration ``n_iter``.

        ``change`` and ``previous_change`` are the last two changes of the
        bound (None where a merge or the start left no rate), ``stopping``
        whether the stopping rule has fired.
        """
        if not self.enabled:
            return False
        if stopping:
            return True
        slow = (
            previous_change is not None
            and previous_change > 0
            and change >= SLOW_RATE * previous_change
        )
        return slow and n_iter >= self.next_try

    def record(self, n_iter, proposal):
        """Note the outcome of the attempt after iteration ``n_iter``."""
        self.next_try = n_iter + 1 if proposal is not None else 2 * n_iter


@dataclass(frozen=True)
class MergedStatistics:
    """What the global step and the ELBO read of a merged q(Z)."""

    moments: Moments
    entropy: float
    total_weight: float


def candidate_pairs(moments, expectations, unit):
    """Pairs (j, k), j < k, of occupied components worth pricing.

    Each component's nearest partners by the symmetrised Mahalanobis
    distance of their means under the two components' precisions: the
    components that share rows, whose merge can pay.
    """
    occupied = np.flatnonzero(~empty_components(moments))
    if occupied.size < 2:
        return np.empty((0, 2), dtype=np.intp)
    means = expectations.means
    # distances[j, k]: (m_j - m_k)^T Lambda_k (m_j - m_k).
    distances = np.stack(
        [unit.mahalanobis(means[j] - means, expectations.precisions) for j in occupied]
    )[:, occupied]
    symmetric = distances + distances.T
    np.fill_diagonal(symmetric, np.inf)
    partners = min(MERGE_PARTNERS, occupied.size - 1)
    nearest = np.argsort(symmetric, axis=1, kind="stable")[:, :partners]
    pairs = {
        (min(a, b), max(a, b))
        for row, columns in enumerate(nearest)
        for a, b in ((occupied[row], occupied[c]) for c in columns)
    }
    return np.array(sorted(pairs), dtype=np.intp).reshape(-1, 2)


def merged(stats, unit, chosen):
    """The statistics of q(Z) after the disjoint merges ``chosen``.

    ``chosen`` holds indices into ``stats.pairs``; pair (j, k) moves
    component k's responsibilities into component j.
    """
    moments = stats.moments
    nk = moments.nk.copy()
    shift = moments.shift.copy()
    scatter = moments.scatter
    whitened = moments.whitened
    entropy = stats.entropy
    for p in chosen:
        j, k = stats.pairs[p]
        total = nk[j] + nk[k]
        # xbar_k - xbar_j without rounding either mean first.
        offset = (moments.reference[k] - moments.reference[j]) + (shift[k] - shift[j])
        # N_j N_k / (N_j + N_k), without overflow for huge weights.
        weight = nk[j] * (nk[k] / total)
        scatter = unit.merged_scatter(scatter, j, k, offset, weight)
        shift[j] += (nk[k] / total) * offset
        shift[k] = 0.0
        nk[j], nk[k] = total, 0.0
        if whitened is not None:
            whitened = whitened.merged(j, k)
        entropy += (
            stats.pair_entropy[p]
            - stats.component_entropy[j]
            - stats.component_entropy[k]
        )
    merged_moments = Moments(
        moments.total_weight, nk, moments.reference, shift, scatter, whitened
    )
    return MergedStatistics(merged_moments, entropy, stats.total_weight)


def merge_move(model, data, unit, context, state, evaluated, stats):
    """The best merges of the current q(Z), or None if none gains enough.

    ``stats`` are those of the optimal q(Z) of ``state`` (just computed);
    one more E-step of the same q prices the candidate pairs. Pairs are
    taken greedily by their gain, each only if it is disjoint from those
    taken and raises the bound by at least ``MERGE_GAIN * tol`` more.

    Returns
    -------
    MergedStatistics or None
        The statistics for the next global step.
    """
    if stats.has_missing:
        # The merged q(x_m | z) would leave the variational family.
        return None
    pairs = candidate_pairs(stats.moments, evaluated.expectations, unit)
    if len(pairs) == 0:
        return None
    priced = e_step(data, unit, evaluated.expectations, model.reg_covar, pairs)

    def bound(chosen):
        candidate = merged(priced, unit, chosen)
        try:
            step = model._update(candidate.moments, unit, context, previous=state)
        except DegenerateComponentError:
            # A merge whose covariance cannot be formed is not a move.
            return -np.inf
        return model._elbo(candidate, model._evaluate(step, unit, context), unit)

    best = bound([])
    gains = np.array([bound([p]) for p in range(len(pairs))]) - best
    chosen, used = [], set()
    for p in np.argsort(-gains, kind="stable"):
        if gains[p] < MERGE_GAIN * model.tol:
            break
        j, k = pairs[p]
        if j in used or k in used:
            continue
        value = bound([*chosen, p])
        if value - best >= MERGE_GAIN * model.tol:
            chosen.append(p)
            used.update((j, k))
            best = value
    if not chosen:
        return None
    model._print_merges(pairs[chosen])
    return merged(priced, unit, chosen)
