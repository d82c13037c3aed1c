"""The batch algorithm: coordinate ascent on the ELBO over all the data.

Each iteration is one pass over the data (the E-step, VI's local step) and
one update of the parameters (the M-step, VI's global step), and every
half-step's ELBO is recorded. The loop reaches the data only through its
``optimal_statistics``, so it runs unchanged on arrays in memory
(:class:`skvi._stats.ArrayData`) and on distributed arrays
(:class:`skvi._dask.DaskData`).
"""

from dataclasses import dataclass

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
    The run ends with an E-step, so its last bound is that of the returned
    state with its optimal q(Z), whose statistics are returned with it.
    """
    evaluated = model._evaluate(state, unit, context)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    half_steps = [model._elbo_after_e_step(stats, evaluated)]
    converged, n_iter = False, 0
    for n_iter in range(1, model.max_iter + 1):
        previous_bound = half_steps[-1]
        state = model._update(stats.moments, unit, context, previous=state)
        evaluated = model._evaluate(state, unit, context)
        # ELBO(q_old, theta_new): the M-step half of the iteration.
        half_steps.append(model._elbo(stats, evaluated, unit))
        stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
        half_steps.append(model._elbo_after_e_step(stats, evaluated))
        change = half_steps[-1] - previous_bound
        model._print_iteration(n_iter, change)
        if abs(change) < model.tol:
            converged = True
            break
    return AscentRun(state, half_steps, n_iter, converged, stats)
