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
from ._stats import Moments, e_step


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

    @property
    def lower_bound(self):
        return self.half_steps[-1]


def ascend(model, data, unit, context, state, trend=None):
    """Coordinate ascent from ``state`` until ``tol`` or ``max_iter``.

    ``model`` supplies the updates and ELBO terms (an EM or VI estimator).
    A run stops when :func:`remaining_gain` estimates less than ``tol`` to
    come. Where the model allows merge moves (:mod:`skvi._merge`), a run
    that would stop first tries them: it has converged only when the steps
    have nearly nothing left to gain and no merge pays. The run ends
    with an E-step, so its last bound is that of the returned state with its
    optimal q(Z), whose statistics are returned with it.

    ``trend`` is the :class:`Trend` an earlier run ended with (a warm
    start). When this run starts at exactly that run's final bound, it
    continues that run: its first change is judged against that run's last
    one, and a merge that run accepted in its last iteration is applied by
    this run's first global step. Warm starts with ``max_iter=1`` thus
    stop where one long run would, with the same merges.
    """
    evaluated = model._evaluate(state, unit, context)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    half_steps = [model._elbo_after_e_step(stats, evaluated)]
    converged, n_iter, pending = False, 0, None
    if trend is not None and trend.bound == half_steps[0]:
        previous_change, done = trend.change, trend.iterations
        schedule = MergeSchedule(model._allows_merges(unit), trend.next_merge_try)
        if trend.merged is not None:
            stats = trend.merged
    else:
        previous_change, done = None, 0
        schedule = MergeSchedule(model._allows_merges(unit))
    for n_iter in range(1, model.max_iter + 1):
        previous_bound = half_steps[-1]
        state = model._update(stats.moments, unit, context, previous=state)
        pending = None
        evaluated = model._evaluate(state, unit, context)
        # ELBO(q_old, theta_new): the M-step half of the iteration.
        half_steps.append(model._elbo(stats, evaluated, unit))
        stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
        half_steps.append(model._elbo_after_e_step(stats, evaluated))
        change = half_steps[-1] - previous_bound
        model._print_iteration(n_iter, change, half_steps[-1])
        stopping = remaining_gain(change, previous_change) < model.tol
        proposal = None
        if schedule.due(done + n_iter, change, previous_change, stopping):
            proposal = merge_move(model, data, unit, context, state, evaluated, stats)
            schedule.record(done + n_iter, proposal)
        if proposal is not None:
            # The next global step starts from the merged q(Z); the jump
            # says nothing of the rate that follows.
            stats, change, pending = proposal, None, proposal
        elif stopping:
            converged = True
            previous_change = change
            break
        previous_change = change
    trend = Trend(
        half_steps[-1], previous_change, pending, done + n_iter, schedule.next_try
    )
    return AscentRun(state, half_steps, n_iter, converged, stats, trend)


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
    change : float or None
        Its last change of the bound (None after a merge).
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
    change: float | None
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
        change = None if self.change is None else float(self.change)
        return {
            "bound": float(self.bound),
            "change": change,
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
        return cls(
            stored["bound"],
            stored["change"],
            merged,
            stored.get("iterations", 0),
            stored.get("next_merge_try", 1),
        )


def remaining_gain(change, previous_change):
    """Aitken's estimate of what the bound has still to gain (per sample).

    Near a fixed point EM and coordinate ascent converge linearly: each
    change is about ``a`` times the one before, so ``change / (1 - a)``
    more is to come (Aitken's delta-squared extrapolation, the stopping
    rule of Boehning et al. 1994, "The distribution of the likelihood ratio
    for mixtures of densities from the one-parameter exponential family",
    AISM 46). A slow run (``a`` near 1) thus goes on where a small change
    alone would stop it far from its limit. With no earlier change to
    estimate ``a`` from, or a change that does not shrink, the estimate is
    infinite; a change that is not positive (rounding at the fixed point)
    estimates nothing more to come beyond its size.
    """
    if change <= 0:
        return -change
    if previous_change is None or previous_change <= change:
        return float("inf")
    rate = change / previous_change
    return change / (1.0 - rate)
