"""The online algorithm: one step of online EM or stochastic VI per minibatch.

Both keep running sufficient statistics per unit of sample weight, s_t. A
minibatch's statistics under the current parameters (an E-step on the
minibatch), normalised the same way, are blended in with a step size rho_t:

    s_t = (1 - rho_t) s_{t-1} + rho_t s_batch,

and the parameters are updated from s_t:

* EM: the M-step of s_t, which is online EM (O. Cappé, E. Moulines 2009).
* VI: the conjugate update of s_t scaled to ``total_samples`` rows. The
  natural parameters of the conjugate factors are linear in the
  statistics, so this is the stochastic VI step of M. Hoffman, D. Blei,
  C. Wang, J. Paisley (2013) on the global factors, with the local factor
  q(Z) of the minibatch optimal.

The step size is the larger of the minibatch's share of the rows seen so
far, ``m_t / M_t``, and ``(learning_offset + t)^(-learning_decay)``. The
first makes the early statistics running averages over the rows (rho_t =
1/t for equal minibatches), so the first minibatch, which the
initialisation came from, is diluted at once rather than kept with weight
(1 - rho) ~ 0.8 per step; the second takes over within a few steps, and
the sequence still meets the Robbins-Monro conditions both algorithms
converge under. Rows, not weights, are counted: EM rescales each
minibatch's weights, and a row of large weight adds one row's rank to a
scatter.

Early in a stream a component has seen few rows, and a full covariance
from fewer than ``n_features + 1`` rows is singular: its density vanishes
off the span of those rows, the next minibatches go to the broadest
component, and the mixture collapses onto it for good (a starved
component's statistics shrink but keep their shape). So a component whose
share of the rows seen, ``M_t N_k``, is below ``n_features + 1`` is updated
with the pooled within-component scatter instead of its own. This changes
only the start: every component with positive weight passes the threshold
as the rows seen grow, and from then on its updates are the plain ones.

The first step of a stream (an unfitted model, or after ``fit`` was called
again) takes rho = 1: its statistics are the minibatch's own. After ``fit``,
the stream continues from the statistics of the fit's final E-step, which
count as long past the start (``M_t`` infinite): the schedule is
``(learning_offset + t)^(-learning_decay)`` and no scatter is pooled.

Statistics are blended as weights, means and scatters (the parallel-axis
theorem moves every scatter to the blended means), so nothing cancels when
the data sit far from the origin.
"""

from dataclasses import dataclass

import numpy as np

from ._stats import Moments, e_step

# partial_fit's lower_bounds_ keeps the estimates of this many recent steps.
STREAM_HISTORY = 1000


@dataclass(frozen=True)
class RunningStatistics:
    """Sufficient statistics per unit of sample weight.

    Attributes
    ----------
    nk : ndarray of shape (K,)
        Responsibility mass per unit weight (sums to 1).
    means : ndarray of shape (K, D)
        Each component's weighted mean.
    scatter : ndarray
        Scatter about those means per unit weight, in the unit's layout.
    seen : float
        The number of rows (of positive weight) the statistics have seen;
        infinite after a batch fit, which counts as long past the start.
    """

    nk: np.ndarray
    means: np.ndarray
    scatter: np.ndarray
    seen: float

    @classmethod
    def from_moments(cls, moments, seen=np.inf):
        """Normalise summed moments of ``seen`` rows by their total weight."""
        total = moments.total_weight
        return cls(moments.nk / total, moments.means, moments.scatter / total, seen)

    def blend(self, other, rho, unit):
        """``(1 - rho) * self + rho * other``, as statistics of a mixture."""
        keep, take = 1.0 - rho, rho
        nk = keep * self.nk + take * other.nk
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        means = (
            self.means
            + (take * other.nk)[:, np.newaxis] * (other.means - self.means) / safe
        )
        counts = np.stack([keep * self.nk, take * other.nk])
        shifts = np.stack([self.means - means, other.means - means])
        scatter = (
            keep * self.scatter
            + take * other.scatter
            + unit.shifted_second_moment(np.zeros_like(shifts), counts, shifts)
        )
        return RunningStatistics(nk, means, scatter, self.seen + other.seen)

    def moments(self, total_weight, unit):
        """These statistics scaled to ``total_weight`` rows, as Moments.

        A component that has seen fewer than ``n_features + 1`` rows takes
        the pooled within-component scatter (see the module notes).
        """
        with np.errstate(invalid="ignore"):
            # (A batch fit's statistics have seen without end: an empty
            # component's inf * 0 is NaN, not young, as before.)
            young = self.seen * self.nk < unit.n_features + 1
        scatter = self.scatter
        if np.any(young):
            scatter = unit.pooled_scatter(self.nk, scatter, young)
        return Moments(
            total_weight=float(total_weight),
            nk=self.nk * total_weight,
            reference=self.means,
            shift=np.zeros_like(self.means),
            scatter=scatter * total_weight,
        )

    def to_dict(self):
        """Plain values, for a fitted attribute that pickles and skops-saves."""
        return {
            "nk": self.nk,
            "means": self.means,
            "scatter": self.scatter,
            "seen": self.seen,
        }

    @classmethod
    def from_dict(cls, values):
        return cls(
            np.asarray(values["nk"], dtype=float),
            np.asarray(values["means"], dtype=float),
            np.asarray(values["scatter"], dtype=float),
            # A stream saved before this was kept is long past its start.
            float(values.get("seen", np.inf)),
        )


def step_size(step, learning_offset, learning_decay):
    """``rho_t = (learning_offset + t)^(-learning_decay)``, t counted from 1."""
    return float((learning_offset + step) ** -learning_decay)


def stream_step_size(step, share, learning_offset, learning_decay):
    """The larger of a minibatch's ``share`` of the weight seen and rho_t."""
    return max(share, step_size(step, learning_offset, learning_decay))


def online_step(model, data, unit, context, state, running, step):
    """One minibatch step from ``state`` and the running statistics.

    Parameters
    ----------
    model : BaseGaussianMixture
        Supplies the updates and ELBO terms.
    data : ArrayData
        The minibatch.
    unit, context : CovarianceUnit, fit context
    state : parameters (EM) or q(theta) (VI) before the step.
    running : RunningStatistics or None
        None starts a stream: the minibatch's statistics are taken whole.
    step : int
        Steps taken before this one.

    Returns
    -------
    state, running : the updated parameters and statistics.
    bound : float
        Per-sample ELBO estimate of the minibatch under ``state`` (before
        the update), the quantity a stream can monitor for free.
    """
    evaluated = model._evaluate(state, unit, context)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    rows = np.count_nonzero(data.sample_weight)
    batch = RunningStatistics.from_moments(stats.moments, rows)
    if running is None:
        running = batch
    else:
        share = rows / (running.seen + rows)
        rho = stream_step_size(
            step + 1, share, model.learning_offset, model.learning_decay
        )
        running = running.blend(batch, rho, unit)
    stream_weight = model._stream_weight(stats.total_weight)
    bound = model._stream_bound(stats, evaluated, stream_weight)
    # The statistics scaled to the stream's weight over the largest power of
    # two below it: finite for any total_samples, and exactly those scaled to
    # the weight itself.
    scale = float(np.ldexp(1.0, int(np.frexp(stream_weight)[1]) - 1))
    new_state = model._update(
        running.moments(stream_weight / scale, unit),
        unit,
        context,
        previous=state,
        scale=scale,
    )
    return new_state, running, bound
