"""The batch algorithm: coordinate ascent on the ELBO over all the data.

Each iteration is one pass over the data (the E-step, VI's local step) and
one update of the parameters (the M-step, VI's global step), and every
half-step's ELBO is recorded. The loop reaches the data only through its
``optimal_statistics``, so it runs unchanged on arrays in memory
(:class:`skvi._stats.ArrayData`) and on distributed arrays
(:class:`skvi._dask.DaskData`).
"""

from dataclasses import dataclass

import numpy as np

from ._kernel import WhitenedMoments
from ._merge import MergedStatistics, MergeSchedule, merge_move
from ._stats import Moments, e_step, framed_components, framed_statistics
from ._threads import one_blas_thread

# The stopping rule reads the rate of convergence from this many ratios of
# consecutive changes of the bound, and extrapolates the rate's rise this
# many iterations ahead (see remaining_gain; measured on R mclust's data
# sets in benchmarks/RESULTS.md).
RATE_WINDOW = 5
RATE_HORIZON = 5
INFINITY = float("inf")
# A change within this fraction of the bound is rounding: it says the run
# is at its fixed point, not at which rate. (The bound sums many rows in
# float64: its relative rounding grows with their number and with the
# cancellation between its terms; rescaled sample weights alone move it by
# 1e-13 relative.) float32 data round it through their responsibilities,
# to a few float32 units in the last place (eps = 1.2e-7).
BOUND_RESOLUTION = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 3e-7}


@dataclass
class AscentRun:
    """The outcome of one initialisation's coordinate ascent."""

    state: object
    half_steps: list
    n_iter: int
    converged: bool
    statistics: object
    # What a warm start continues the stopping rule from (see ascend).
    trend: object = None
    # Why the run ended before it converged, at its M-step's word (a fit of
    # EVE or VVE that collapsed: skvi._degeneracy.STOPPED_AT_COLLAPSE).
    stop_reason: str = None

    @property
    def lower_bound(self):
        return self.half_steps[-1]


def ascend(model, data, unit, context, state, trend=None, resume=None):
    """Coordinate ascent from ``state`` until ``tol`` or ``max_iter``.

    ``model`` supplies the updates and ELBO terms (an EM or VI estimator).
    A run stops when :func:`remaining_gain` estimates less than ``tol`` to
    come from the recent changes of the bound. Where the model allows merge
    moves (:mod:`skvi._merge`), a run that would stop first tries them: it
    has converged only when the steps have nearly nothing left to gain and
    no merge pays. The run ends with an E-step, so its last bound is that
    of the returned state with its optimal q(Z), whose statistics are
    returned with it.

    ``trend`` is the :class:`Trend` an earlier run ended with (a warm
    start). When this run starts at exactly that run's final bound, it
    continues that run: its first changes are judged together with that
    run's last ones, and a merge that run accepted in its last iteration is applied by
    this run's first global step. Warm starts with ``max_iter=1`` thus
    stop where one long run would, with the same merges.

    ``resume`` continues a run that another loop began with the same
    arithmetic up to rounding (:mod:`skvi._multifit`'s lock step), from
    ``state``, the parameters of its latest M-step: ``(half_steps, recent,
    n_iter)`` as that run left them, its trace ending with that M-step's
    half-step, its stopping rule's recent changes and its completed
    iterations. The first E-step completes the iteration it was in, judged
    by the stopping rule as that run would have; the result is the whole
    run's (all its half-steps and iterations), as if it had run here from
    its start.

    The whole run holds the one-BLAS-thread limit that every chunk loop
    takes (:func:`skvi._threads.one_blas_thread`): setting and lifting it
    costs tens of microseconds, as much as a whole iteration on a few
    hundred rows, and the steps between the passes are small products.
    """
    with one_blas_thread():
        return _ascend(model, data, unit, context, state, trend, resume)


def _ascend(model, data, unit, context, state, trend, resume=None):
    evaluated = model._evaluate(state, unit, context)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    half_steps = [model._elbo_after_e_step(stats, evaluated)]
    converged, n_iter, pending, stop_reason = False, 0, None, None
    resolution = BOUND_RESOLUTION.get(np.dtype(data.dtype), 1e-12)
    if resume is not None:
        earlier, recent, done = resume
        recent, stopping = list(recent), False
        half_steps = [*earlier, half_steps[0]]
        schedule = MergeSchedule(model._allows_merges(unit))
        if len(earlier) >= 2:
            # The iteration the run was in ends with this E-step.
            done += 1
            recent, stopping = stopping_rule(
                recent,
                half_steps[-1] - earlier[-2],
                half_steps[-1],
                model.tol,
                resolution,
                model.relative_tol,
            )
            # A lock-step fit whose iteration's M-step stopped at a
            # collapse ends, as it would have there (neither a start's M-step
            # nor the first iteration's ends a run, alone or there: a first
            # M-step from a rough start can pass through a collapse that
            # the E-step lifts).
            if done > 1:
                stop_reason = getattr(unit, "stop_reason", None)
        if stopping or stop_reason is not None:
            trend = Trend(half_steps[-1], tuple(recent), None, done, schedule.next_try)
            converged = stop_reason is None
            return AscentRun(
                state, half_steps, done, converged, stats, trend, stop_reason
            )
    elif trend is not None and trend.bound == half_steps[0]:
        recent, done = list(trend.changes), trend.iterations
        schedule = MergeSchedule(model._allows_merges(unit), trend.next_merge_try)
        if trend.merged is not None:
            stats = trend.merged
    else:
        recent, done = [], 0
        schedule = MergeSchedule(model._allows_merges(unit))
    # A resumed run's iterations so far count against max_iter (a warm
    # start's do not: its n_iter_ counts its own).
    budget = model.max_iter - (done if resume is not None else 0)
    for n_iter in range(1, budget + 1):
        previous_bound = half_steps[-1]
        state, evaluated, stats = _global_step(
            model, data, unit, context, state, evaluated, stats
        )
        pending = None
        # ELBO(q_old, theta_new): the M-step half of the iteration.
        half_steps.append(model._elbo(stats, evaluated, unit))
        stats = e_step(
            data, unit, evaluated.expectations, model.reg_covar, previous=stats
        )
        half_steps.append(model._elbo_after_e_step(stats, evaluated))
        change = half_steps[-1] - previous_bound
        model._print_iteration(n_iter, change, half_steps[-1])
        previous_change = recent[-1] if recent else None
        recent, stopping = stopping_rule(
            recent, change, half_steps[-1], model.tol, resolution, model.relative_tol
        )
        if done + n_iter > 1 and getattr(unit, "stop_reason", None) is not None:
            stop_reason = unit.stop_reason  # its M-step found it collapsed
            break
        proposal = None
        if schedule.due(done + n_iter, change, previous_change, stopping):
            proposal = merge_move(model, data, unit, context, state, evaluated, stats)
            schedule.record(done + n_iter, proposal)
        if proposal is not None:
            # The next global step starts from the merged q(Z); the jump
            # says nothing of the rate that follows.
            stats, recent, pending = proposal, [], proposal
        elif stopping:
            converged = True
            break
    trend = Trend(
        half_steps[-1], tuple(recent), pending, done + n_iter, schedule.next_try
    )
    if resume is not None:
        n_iter += done
    return AscentRun(state, half_steps, n_iter, converged, stats, trend, stop_reason)


def _global_step(model, data, unit, context, state, evaluated, stats):
    """The M-step from ``stats``, q(Z) of the state ``evaluated``.

    Returns the new state, its evaluation and the statistics its half-step
    reads. Where a new precision is so ill-conditioned that its data term
    would lose digits in the moments' frames (a component collapsing onto a
    few rows: :func:`skvi._stats.framed_components`), the same q(Z) is
    summed again with that component's moments in the new state's whitened
    frame, and the M-step taken from those (one more pass, only in the
    iteration of such a collapse: from then on the E-step whitens in
    frames that change little).
    """
    new_state = model._update(stats.moments, unit, context, previous=state)
    new_evaluated = model._evaluate(new_state, unit, context)
    # A merged q(Z) is no E-step's: it keeps its moments.
    if isinstance(stats, MergedStatistics):
        return new_state, new_evaluated, stats
    components = framed_components(
        stats.moments, new_evaluated.expectations, unit, data.dtype
    )
    if len(components):
        stats = framed_statistics(
            data,
            unit,
            stats,
            evaluated.expectations,
            model.reg_covar,
            new_evaluated.expectations,
            components,
        )
        new_state = model._update(stats.moments, unit, context, previous=state)
        new_evaluated = model._evaluate(new_state, unit, context)
    return new_state, new_evaluated, stats


@dataclass(frozen=True)
class Trend:
    """Where a run left its stopping rule, for a warm start to continue.

    A later run continues this one only if it starts at exactly ``bound``:
    the same data and the same state (a warm start on other data, or after
    parameters were set by hand, starts afresh).

    Attributes
    ----------
    bound : float
        The run's final bound.
    changes : tuple of float
        Its last changes of the bound, oldest first, as many as the
        stopping rule reads (none after a merge).
    merged : MergedStatistics or None
        A merge accepted in the last iteration, which no global step has
        applied yet.
    iterations : int
        Iterations of the run so far, warm starts that continued it included.
    next_merge_try : int
        The iteration after which a slow phase may next try merges
        (:class:`skvi._merge.MergeSchedule`).
    """

    bound: float
    changes: tuple = ()
    merged: object = None
    iterations: int = 0
    next_merge_try: int = 1

    def to_dict(self):
        """Plain floats and arrays, for a fitted attribute that persists."""
        merged = None
        if self.merged is not None:
            moments = self.merged.moments
            merged = {
                "total_weight": float(self.merged.total_weight),
                "entropy": float(self.merged.entropy),
                "nk": moments.nk,
                "reference": moments.reference,
                "shift": moments.shift,
                "scatter": np.asarray(moments.scatter),
                "whitened": None
                if moments.whitened is None
                else moments.whitened.to_dict(),
            }
        return {
            "bound": float(self.bound),
            "changes": [float(change) for change in self.changes],
            "merged": merged,
            "iterations": int(self.iterations),
            "next_merge_try": int(self.next_merge_try),
        }

    @classmethod
    def from_dict(cls, stored):
        """The trend :meth:`to_dict` stored (None gives None)."""
        if stored is None:
            return None
        merged = stored["merged"]
        if merged is not None:
            moments = Moments(
                merged["total_weight"],
                merged["nk"],
                merged["reference"],
                merged["shift"],
                merged["scatter"],
                WhitenedMoments.from_dict(merged.get("whitened")),
            )
            merged = MergedStatistics(
                moments, merged["entropy"], merged["total_weight"]
            )
        if "changes" in stored:
            changes = tuple(stored["changes"])
        else:
            # Stored by a version that kept only the last change.
            changes = () if stored["change"] is None else (stored["change"],)
        return cls(
            stored["bound"],
            changes,
            merged,
            stored.get("iterations", 0),
            stored.get("next_merge_try", 1),
        )


def stopping_rule(recent, change, bound, tol, resolution, relative_tol=0.0):
    """One iteration's verdict of the stopping rule.

    Shared by :func:`ascend` and the lock-step fits of
    :mod:`skvi._multifit`, so that a fit stops after the same iteration
    whichever runs it.

    Parameters
    ----------
    recent : sequence of float
        The changes of the bound so far (since the start or the last
        merge), oldest first.
    change : float
        This iteration's change of the per-sample bound.
    bound : float
        The bound after this iteration.
    tol : float
        The estimator's ``tol``.
    resolution : float
        The relative rounding of the bound (``BOUND_RESOLUTION``).
    relative_tol : float, default=0.0
        The estimator's ``relative_tol``: a change above
        ``relative_tol * max(1, |bound|)`` goes on (mclust's rule).

    Returns
    -------
    recent : list of float
        The changes the next iteration judges with (the last
        ``RATE_WINDOW + 1``).
    stopping : bool
        Whether :func:`remaining_gain` estimates less than ``tol`` to come
        (and the change is within ``relative_tol``).
    """
    recent = [*recent[-RATE_WINDOW:], change]
    if relative_tol > 0.0 and change > relative_tol * max(1.0, abs(bound)):
        # It goes on whatever the gain to come (the second test below).
        return recent, False
    stopping = remaining_gain(recent, resolution * abs(bound)) < tol
    if stopping and relative_tol > 0.0:
        stopping = change <= relative_tol * max(1.0, abs(bound))
    return recent, stopping


def remaining_gain(changes, rounding=0.0):
    """What the bound has still to gain (per sample), from its recent changes.

    Near a fixed point EM and coordinate ascent converge linearly: each
    change is about ``a`` times the one before, so ``change / (1 - a)``
    more is to come (Aitken's delta-squared extrapolation, the stopping
    rule of Boehning et al. 1994, "The distribution of the likelihood ratio
    for mixtures of densities from the one-parameter exponential family",
    AISM 46). A slow run (``a`` near 1) thus goes on where a small change
    alone would stop it far from its limit.

    Two changes alone are easily fooled: on a plateau (EM passing a saddle
    point) the changes shrink for a while at a rate that creeps towards 1,
    then grow again. So the rate is read from the last ``RATE_WINDOW``
    ratios of consecutive changes, all of which must be below 1: the
    largest of them, plus its average rise per iteration over the window
    extrapolated ``RATE_HORIZON`` iterations ahead. A rate that reaches 1,
    fewer than ``RATE_WINDOW + 1`` changes, or changes that do not shrink
    all through the window estimate an infinite remainder. A last change
    no larger than the rounding of the bound (at the fixed point, where
    rounding decides its sign) estimates nothing more to come beyond its
    size, as does one that is not positive.

    Parameters
    ----------
    changes : sequence of float
        The changes of the bound since the start or the last merge, oldest
        first; only the last ``RATE_WINDOW + 1`` are read.
    rounding : float, default=0.0
        The rounding of the bound: a change within it is rounding.

    Returns
    -------
    float
        The estimated gain still to come, ``inf`` where there is no
        estimate.
    """
    if not changes:
        return INFINITY
    change = changes[-1]
    if change <= rounding:
        return abs(change)
    if len(changes) <= RATE_WINDOW:
        return INFINITY
    window = changes[-(RATE_WINDOW + 1) :]
    if min(window) <= 0:
        return INFINITY
    # (Called per fit and iteration in select_model's lock step: no zip.)
    earlier = window[0]
    ratios = []
    for later in window[1:]:
        ratios.append(later / earlier)
        earlier = later
    rise = max(0.0, (ratios[-1] - ratios[0]) / (RATE_WINDOW - 1))
    rate = max(ratios) + RATE_HORIZON * rise
    if rate >= 1.0:
        return INFINITY
    return change / (1.0 - rate)
