"""The batch algorithm: coordinate ascent on the ELBO over all the data.

Each iteration is one pass over the data (the E-step, VI's local step) and
one update of the parameters (the M-step, VI's global step), and every
half-step's ELBO is recorded. The loop reaches the data only through its
``optimal_statistics``, so it runs unchanged on arrays in memory
(:class:`skvi._stats.ArrayData`) and on distributed arrays
(:class:`skvi._dask.DaskData`).
"""

from dataclasses import dataclass

from ._merge import MergeSchedule, merge_move
from ._stats import e_step


@dataclass
class AscentRun:
    """The outcome of one initialisation's coordinate ascent."""

    state: object
    half_steps: list
    n_iter: int
    converged: bool
    statistics: object

    @property
    def lower_bound(self):
        return self.half_steps[-1]


def ascend(model, data, unit, context, state):
    """Coordinate ascent from ``state`` until ``tol`` or ``max_iter``.

    ``model`` supplies the updates and ELBO terms (an EM or VI estimator).
    A run stops when :func:`remaining_gain` estimates less than ``tol`` to
    come. Where the model allows merge moves (:mod:`skvi._merge`), a run
    that would stop first tries them: it has converged only when the steps
    have nearly nothing left to gain and no merge pays. The run ends
    with an E-step, so its last bound is that of the returned state with its
    optimal q(Z), whose statistics are returned with it.
    """
    schedule = MergeSchedule(model._allows_merges(unit))
    evaluated = model._evaluate(state, unit, context)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    half_steps = [model._elbo_after_e_step(stats, evaluated)]
    converged, n_iter, previous_change = False, 0, None
    for n_iter in range(1, model.max_iter + 1):
        previous_bound = half_steps[-1]
        state = model._update(stats.moments, unit, context, previous=state)
        evaluated = model._evaluate(state, unit, context)
        # ELBO(q_old, theta_new): the M-step half of the iteration.
        half_steps.append(model._elbo(stats, evaluated, unit))
        stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
        half_steps.append(model._elbo_after_e_step(stats, evaluated))
        change = half_steps[-1] - previous_bound
        model._print_iteration(n_iter, change, half_steps[-1])
        stopping = remaining_gain(change, previous_change) < model.tol
        proposal = None
        if schedule.due(n_iter, change, previous_change, stopping):
            proposal = merge_move(model, data, unit, context, state, evaluated, stats)
            schedule.record(n_iter, proposal)
        if proposal is not None:
            # The next global step starts from the merged q(Z); the jump
            # says nothing of the rate that follows.
            stats, change = proposal, None
        elif stopping:
            converged = True
            break
        previous_change = change
    return AscentRun(state, half_steps, n_iter, converged, stats)


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
