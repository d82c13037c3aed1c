"""Lock-step EM: the fits of one model selection advanced together.

:func:`skvi.select_model` fits every (covariance type, number of components)
of a grid to one data set. On a few hundred rows an EM iteration is a few
dozen NumPy calls of microseconds each, so fitting the grid one model at a
time is dominated by call overhead, not arithmetic. Here all fits advance
in lock step, one iteration each per round:

* **E-step, once for all fits.** The components of every active fit are
  stacked as one set (``C`` components in all, each with a full upper
  Cholesky factor ``P_k`` of its precision, whatever its covariance type).
  One pass computes ``log rho_nk = c_k - |P_k^T (x_n - m_k)|^2 / 2`` for
  all of them, normalises the responsibilities within each fit's block of
  components, and sums every component's statistics (mass, mean and dense
  scatter about its own mean, so no second moment cancels).
* **M-step, batched where it is a per-component closed form.** Fits of
  scikit-learn's 'full', 'diag' and 'spherical' types are stacked into one
  covariance unit of that type and updated by one call of its own
  ``maximize`` and ``cholesky_from_covariance``; 'tied' fits become one
  'full' unit with a component per fit (its pooled scatter and total mass).
  mclust's VII, VVI, EEE and VVV, the same models, join those groups and
  store the result in their full (K, D, D) layout. mclust's closed-form
  models EII, EEI, EVI, EEV and EVV take one stacked pass of their blocks
  per model (:func:`skvi._covariance.stacked.stacked_closed_form`), VEI and
  VEV one stacked pass with their common shapes' Newton steps taken
  together (:func:`skvi._covariance.stacked.stacked_joint_shape`), EVE and
  VVE one with their orientations' plane searches taken together
  (:func:`skvi._covariance.stacked.stacked_common_orientation`; their first
  M-step, which tries a second start, is each fit's own), and VEE one with
  its volumes' Newton steps taken together
  (:func:`skvi._covariance.stacked.stacked_common_matrix`). The
  covariances of these groups and of the full and tied groups are
  factorised in one call per round (each matrix's factor is its own).
  Where a stacked M-step cannot be taken (a collapse), each fit takes its
  estimator's own M-step on its slice of the statistics, which reports it.
* **Stopping rule, per fit:** :func:`skvi._batch.stopping_rule`, the one
  the ordinary loop uses; a fit leaves the lock step after the iteration
  at which it would have stopped alone.

The values and statistics are those of the ordinary path (the kernel's
whitened layout, :mod:`skvi._kernel`) up to rounding, so a fit ends with the
same number of iterations and criteria equal to about 1e-12 relative.

**When it runs** (:func:`lockstep_applies`): EM only, on a NumPy-compatible
array of at most ``MAX_ROWS`` rows, float64 without missing entries (none
at all, not even in rows left out for having no value), one
initialisation from an integer seed, no user-given ``weights_init``,
``means_init`` or ``precisions_init``, no ``warm_start`` or ``verbose``, and
``max_iter >= 1``. Anything else (VI, Dask, float32, NaN, large data,
``n_init > 1``, ...) fits every model on its own, as before. Within the lock
step, a fit whose path the engine does not reproduce exactly leaves it and
goes on alone (:meth:`_Fit.resume_alone`) with its trace and its stopping
rule's history, so it ends as the fit alone does without repeating its
iterations. (Values and moments that would cancel beyond the kernel's
limits about the shared center are computed about each component's own
mean instead, so such fits stay.) One that leaves in an E-step (a
component that empties) goes on from its last parameters; one whose
covariance fails its Cholesky factorisation in an M-step (a collapse), or
whose precision comes out ill-conditioned enough for the kernel to change
its arithmetic (``WHITENING_LIMIT``), from the
parameters that M-step started from (the ordinary loop sums a collapsing
component's moments again in its new frame before that M-step, which the
lock step does not). One that leaves in its start's M-step runs alone
from its start, as its own ``fit`` would, without validating its data
again (a restart or second start is left to its caller); EVE and VVE go
on from the lock step's start M-step instead of taking it again (their
costliest M-step; the same search from the same start up to rounding,
which moved no BIC of the 19 data sets by 1e-9 but changes the ratios
that degenerate fits report). One whose start
fails, or whose run alone raises, is fitted again on its own from its
start, which reports any error.
"""

from dataclasses import dataclass
from functools import partial
from numbers import Integral
from operator import attrgetter

import numpy as np
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import _num_samples

from ._batch import BOUND_RESOLUTION, AscentRun, Trend, ascend, stopping_rule
from ._covariance import covariance_unit
from ._covariance._gufuncs import einsum, inv
from ._covariance._unit import precision_conditioning_losses, triangular_inverses
from ._covariance.diag import DiagCovariance
from ._covariance.full import FullCovariance
from ._covariance.spherical import SphericalCovariance
from ._covariance.stacked import (
    COMMON_ORIENTATION_MODELS,
    JOINT_SHAPE_MODELS,
    SHARED_GROUPS,
    STACKED_MODELS,
    stacked_closed_form,
    stacked_common_matrix,
    stacked_common_orientation,
    stacked_joint_shape,
)
from ._covariance.tied import TiedCovariance
from ._dask import is_dask_collection
from ._degeneracy import STOPPED_AT_COLLAPSE
from ._elbo import LOG_2PI
from ._em import EMGaussianMixture, GaussianParameters
from ._initialization import draws_random
from ._kernel import (
    EXP_FLOOR,
    LOSS_LIMIT,
    WHITENING_LIMIT,
    _exp_log_ratios,
    loss_limit,
)
from ._stats import Moments
from ._threads import one_blas_thread

# Above this many rows an E-step's arithmetic outweighs its call overhead
# and the lock step gains little, while its (C, n, D) work arrays grow.
MAX_ROWS = 5000

# The log-constant of a padding slot: no exponential of it differs from 0.
PADDING = -1e300
EPSILON = float(np.finfo(float).eps)
_INDEX = attrgetter("index")
# Relative distance from a limit within which a check computed with other
# rounding is repeated exactly (_conditioning_losses).
MARGIN = 1e-6

# The covariance units whose M-step the lock step batches (exact types:
# mclust's units subclass FullCovariance but constrain their maximiser),
# and mclust's models that are the same models (and M-steps): their fits
# join those groups and store the result in their full (K, D, D) layout.
BATCHED_UNITS = (FullCovariance, DiagCovariance, SphericalCovariance, TiedCovariance)
SAME_MODELS = {
    "VII": SphericalCovariance,
    "VVI": DiagCovariance,
    "EEE": TiedCovariance,
    "VVV": FullCovariance,
}


def lockstep_applies(template, X):
    """Whether :func:`fit_in_lockstep` may fit ``template``'s grid on ``X``.

    The conditions that need the data validated (float64, no missing
    entries) are checked by :func:`fit_in_lockstep` itself.
    """
    return (
        type(template) is EMGaussianMixture
        and not is_dask_collection(X)
        and _num_samples(X) <= MAX_ROWS
        and template.n_init == 1
        and isinstance(template.random_state, Integral)
        and template.weights_init is None
        and template.means_init is None
        and template.precisions_init is None
        and not template.warm_start
        and not template.verbose
        and template.max_iter >= 1
    )


def fit_in_lockstep(template, X, sample_weight, combinations):
    """Fit ``(n_components, covariance_type)`` combinations together.

    Parameters
    ----------
    template : EMGaussianMixture
        The estimator every fit clones (see :func:`lockstep_applies`).
    X : array-like of shape (n_samples, n_features)
    sample_weight : array-like of shape (n_samples,) or None
    combinations : list of (int, str) or (int, str, str or estimator)
        ``(n_components, covariance_type)``, optionally with the
        ``init_params`` of that fit (default: the template's) or a fitted
        estimator with as many components, whose responsibilities of the
        rows are the fit's start (a restart from another model's fit, see
        :mod:`skvi._nesting`; the model keeps the template's
        ``init_params``).

    Returns
    -------
    list
        Per combination, the fitted estimator (``degenerate_`` not yet
        set: :meth:`_diagnose` warns, and its caller decides how) and its
        ``(score, entropy)`` for the criteria (:meth:`_Lockstep.criteria`;
        None for a fit that left in an E-step and finished alone from
        there, see :meth:`_Fit.resume_alone`), or None where it must be
        fitted on its own from its start.
    """
    models = [None] * len(combinations)
    fits, validated = [], None
    params = template.get_params(deep=False)
    for index, (n_components, kind, *start) in enumerate(combinations):
        # The template's parameters are plain values here (an integer seed,
        # no initial arrays: lockstep_applies), so a new estimator built
        # from them is its clone, at an eighth of clone's cost.
        model = type(template)(
            **{
                **params,
                "n_components": n_components,
                "covariance_type": kind,
            }
        )
        given = start[0] if start and not isinstance(start[0], str) else None
        # Only a fit of the template's own start goes on alone from its
        # start (see _Lockstep._maximize): a second start that leaves is
        # dropped by its caller, and a restart's start is another model's.
        goes_on = not start
        if start and given is None:
            model.set_params(init_params=start[0])
        try:
            data, unit, context = model._begin_fit(X, sample_weight, validated)
            if validated is None:
                if data.dtype != np.float64 or _has_missing(X):
                    return models
                validated = (model, data)
            if given is not None:
                # The rows the fit sees (those of positive weight).
                start = given.predict_proba(data.X)
            else:
                # The lock step's only draws are its starts'.
                rng = None
                if draws_random(model.init_params, data.n_samples):
                    rng = check_random_state(model.random_state)
                rows, responsibilities = model._initial_assignment(data, rng)
                if rows is not data:
                    continue
                start = np.asarray(
                    responsibilities(slice(0, data.n_samples)), dtype=float
                )
        except ValueError:
            # Fitted on its own, which reports the error.
            continue
        fits.append(_Fit(index, model, data, unit, context, start))
        fits[-1].goes_on_from_start = goes_on
    if not fits:
        return models
    # One BLAS limit for the whole lock step and the runs that finish
    # alone: setting and lifting it costs more than one of their iterations.
    with one_blas_thread():
        lockstep = _Lockstep(fits)
        lockstep.run(template)
        fits = [fit for fit in fits if not fit.left]
        if fits:
            scores, entropies = lockstep.criteria(fits, sample_weight)
        for number, fit in enumerate(fits):
            fit.finish(lockstep.moments(fit))
            models[fit.index] = (fit.model, (scores[number], entropies[number]))
        # Fits whose moments left the kernel's limits in an E-step go on
        # alone from there rather than from their start; their criteria are
        # their own.
        for fit in lockstep.fits:
            if fit.left and fit.resume is not None and fit.resume_alone():
                models[fit.index] = (fit.model, None)
    return models


class _Fit:
    """One combination's model, its place in the stack and its run so far."""

    def __init__(self, index, model, data, unit, context, start):
        self.index = index
        self.model = model
        self.data = data
        self.unit = unit
        self.context = context
        # The starting responsibilities (n, K); the state after each M-step.
        self.start = start
        self.state = None
        # Where the latest batched M-step left this fit's parameters:
        # (weights, means, covariances, factors) of its group, the fit's
        # slice of the first two and its index into the others (one for a
        # tied fit); a state is made of them only when it is needed.
        self.latest = None
        self.half_steps = []
        self.recent = []
        self.n_iter = 0
        self.converged = False
        self.done = False
        self.left = False
        self.entropy = 0.0
        # Whose batched M-step this fit takes (None: its own), and whether
        # it stores that group's layout or mclust's full one.
        self.group = type(unit) if type(unit) in BATCHED_UNITS else None
        self.full_layout = False
        if unit.name in SAME_MODELS:
            self.group = SAME_MODELS[unit.name]
            self.full_layout = True
        elif (
            unit.name
            in STACKED_MODELS
            + JOINT_SHAPE_MODELS
            + COMMON_ORIENTATION_MODELS
            + ("VEE",)
        ):
            # mclust's other models: one stacked M-step per model, or per
            # group of models (SHARED_GROUPS).
            self.group = next(
                (group for group, names in SHARED_GROUPS.items() if unit.name in names),
                unit.name,
            )
        # Whether the kernel may evaluate it in its whitened layout.
        self.may_whiten = _may_be_ill_conditioned(unit)
        # The blocks of the latest stacked VEI or VEV M-step, its next start.
        self.blocks = None
        # Where a fit that left goes on alone from: its state and its run
        # so far (skvi._batch.ascend's ``resume``).
        self.resume = None
        # The stopping rule's changes before it judged the last iteration,
        # and the fit as the round's M-step found it (_Lockstep._maximize):
        # where a fit that leaves in that M-step goes on alone from.
        self.recent_before = []
        self.before = None
        # Whether a fit that leaves in its start's M-step runs alone from
        # its start here (see _Lockstep._maximize).
        self.goes_on_from_start = True

    def resume_alone(self):
        """Finish the run alone from where it left the lock step.

        Returns whether it could: a run that fails (a component that
        collapses, say) is refitted from its start, which reports why.
        A fit that left in its start's M-step (state None) runs alone from
        its start, as :meth:`fit` runs it (the same start, M-step and
        ascent), without validating its data and parameters again.
        """
        state, so_far = self.resume
        try:
            if state is None:
                model = self.model
                rng = check_random_state(model.random_state)
                state = model._initial_state(self.data, self.unit, self.context, rng)
            run = ascend(
                self.model, self.data, self.unit, self.context, state, resume=so_far
            )
        except ValueError:
            return False
        self.model._finish_fit(run, self.unit, self.data)
        return True

    def resume_before_m_step(self):
        """Go on alone from the parameters the last M-step started from.

        Their E-step, which the lock step already took, is taken again by
        :meth:`resume_alone`: the run so far ends with their M-step's
        half-step, and the iteration that E-step completed is judged there.
        """
        latest, state, count, recent, n_iter = self.before
        self.latest, self.state = latest, state
        if hasattr(self.unit, "stop_reason"):
            self.unit.stop_reason = None  # that M-step is taken again
        so_far = (self.half_steps[: count - 1], tuple(recent), max(n_iter - 1, 0))
        self.resume = (self.current_state(), so_far)

    @property
    def n_components(self):
        return self.unit.n_components

    def current_state(self):
        """The fit's parameters after its latest M-step."""
        if self.latest is None:
            return self.state
        weights, means, covariances, factors, own, shared = self.latest
        self.state = GaussianParameters(
            weights=weights[own],
            means=means[own],
            covariances=covariances[shared],
            precisions_cholesky=factors[shared],
        )
        self.latest = None
        return self.state

    def finish(self, moments):
        """Store the run in the model, as :meth:`fit` stores its best run."""
        bound = self.half_steps[-1]
        trend = Trend(bound, tuple(self.recent), None, self.n_iter, 1)
        run = AscentRun(
            self.current_state(),
            self.half_steps,
            self.n_iter,
            self.converged,
            _Statistics(moments),
            trend,
            None if self.converged else getattr(self.unit, "stop_reason", None),
        )
        self.model._finish_fit(run, self.unit, self.data)


@dataclass(frozen=True)
class _Statistics:
    """The final E-step's moments, as :meth:`fit` keeps them."""

    moments: Moments


class _Lockstep:
    """The stacked parameters and statistics of all fits, by component.

    Arrays over the ``C`` components of all fits (in the order of
    ``fits``): ``means`` (C, D), ``factors`` (C, D, D) upper Cholesky
    factors of the precisions, ``log_weights`` (C,); and the statistics of
    the latest E-step: ``nk`` (C,), ``xbar`` (C, D), ``scatter`` (C, D, D).
    """

    def __init__(self, fits):
        self.fits = fits
        data = fits[0].data
        self.X = data.X
        self.weights = data.sample_weight
        self.total_weight = float(self.weights.sum())
        # The kernel's limit on the values' rounding (lower on tiny data).
        self.value_limit = loss_limit(np.float64, len(self.X))
        self.resolution = BOUND_RESOLUTION[np.dtype(self.X.dtype)]
        sizes = [fit.n_components for fit in fits]
        stops = np.cumsum(sizes)
        for fit, stop, size in zip(fits, stops, sizes, strict=True):
            fit.slice = slice(int(stop - size), int(stop))
        n_total, n_features = int(stops[-1]), self.X.shape[1]
        self.means = np.zeros((n_total, n_features))
        self.factors = np.zeros((n_total, n_features, n_features))
        self.log_weights = np.zeros(n_total)
        self.nk = np.zeros(n_total)
        self.xbar = np.zeros((n_total, n_features))
        self.scatter = np.zeros((n_total, n_features, n_features))
        # The rows about their weighted mean c, and the features of the
        # expansion: 1, e = x - c and the products e_i e_j (features, rows).
        self.center = self.weights @ self.X / self.total_weight
        self.centered = self.X - self.center
        n_samples = len(self.X)
        products = einsum("ni,nj->nij", self.centered, self.centered)
        self.features = np.concatenate(
            [np.ones((n_samples, 1)), self.centered, products.reshape(n_samples, -1)],
            axis=1,
        ).T.copy()
        self._cached_layout = (None, None)
        self._cached_positions = {}
        self._cached_owners = {}
        self._round_constants = None
        # The fits still in the lock step (the same list while none
        # leaves), each list's key (by identity: :meth:`_key`) and the
        # M-step's groups of those fits (:meth:`_groups`).
        self._active_fits = fits
        self._keys = {}
        self._key_numbers = {}
        self._cached_groups = (None, None)

    # ---------------------------------------------------------------- loop
    def _maximize(self, active, resumable=True):
        """M-step of the active fits; returns those still in the lock step.

        A fit the M-step leaves ill-conditioned, or whose stacked M-step
        fails, leaves the lock step. With ``resumable`` (every M-step but
        the start's) it goes on alone from the parameters it had before
        this M-step, redoing their E-step: the ordinary loop's M-step from
        there (which sums the moments of a collapsing component again in
        its new frame, :func:`skvi._batch._global_step`) is then its own,
        and its iterations so far are not repeated. A fit that leaves in
        the start's M-step (not ``resumable``) runs alone from its start,
        as its own ``fit`` would (:meth:`_Fit.resume_alone`), unless it was
        given a start of its own.
        """
        self._round_constants = None
        if resumable:
            for fit in active:
                fit.before = (
                    fit.latest,
                    fit.state,
                    len(fit.half_steps),
                    fit.recent_before,
                    fit.n_iter,
                )
        self._m_step(active)
        self._leave_ill_conditioned(active)
        for fit in active:
            if not fit.left or fit.resume is not None:
                continue
            if resumable:
                fit.resume_before_m_step()
            elif fit.goes_on_from_start:
                # Its whole run alone, from its start (resume_alone): what
                # fit would do, less the validation fit_in_lockstep did.
                # EVE and VVE go on from the lock step's start M-step, the
                # same search from the same starts up to rounding of the
                # start's moments, rather than taking it again (their
                # costliest M-step: two orientation searches for D > 2).
                state = None
                if fit.unit.name in COMMON_ORIENTATION_MODELS:
                    state = fit.current_state()
                fit.resume = (state, None)
        return self._active()

    def run(self, template):
        """Fit every fit with the template's stopping rule and reg_covar."""
        max_iter, tol = template.max_iter, template.tol
        relative_tol = template.relative_tol
        self.reg_covar = template.reg_covar
        # The start: the M-step from the statistics of the initial q(Z),
        # as EMGaussianMixture._initial_state takes it.
        self._assign(self.fits)
        active = self._active()
        if not active:
            return
        active = self._maximize(active, resumable=False)
        if not active:
            return
        self._e_step(active)
        for fit in self._active():
            fit.half_steps.append(fit.log_normalizer / self.total_weight)
        for n_iter in range(1, max_iter + 1):
            active = self._active()
            if not active:
                return
            active = self._maximize(active)
            if not active:
                return
            self._half_step(active)
            self._e_step(active)
            for fit in self._active():
                bound = fit.log_normalizer / self.total_weight
                # From the last E-step's bound, before this M-step's.
                change = bound - fit.half_steps[-2]
                fit.half_steps.append(bound)
                fit.n_iter = n_iter
                fit.recent_before = fit.recent
                fit.recent, stopping = stopping_rule(
                    fit.recent, change, bound, tol, self.resolution, relative_tol
                )
                if n_iter > 1 and getattr(fit.unit, "stop_reason", None) is not None:
                    fit.done = True  # its M-step found it collapsed
                elif stopping:
                    fit.converged = fit.done = True

    def _active(self):
        """The fits still in the lock step: the same list while none leaves.

        (Filtered from the last such list, since a fit never returns; the
        caches of the layouts and groups key on that list's identity.)
        """
        previous = self._active_fits
        current = [fit for fit in previous if not (fit.done or fit.left)]
        if len(current) == len(previous):
            return previous
        self._active_fits = current
        self._keys.clear()
        return current

    def _key(self, fits):
        """A number naming the set of ``fits``, the key of the layout caches.

        One number per distinct set (its indices looked up once per list:
        the lists of a round are those of the round before while no fit
        leaves, and hashing a tuple of a hundred indices in every cache
        lookup would cost more than the lookups save).
        """
        found = self._keys.get(id(fits))
        if found is not None and found[0] is fits:
            return found[1]
        indices = tuple(map(_INDEX, fits))
        key = self._key_numbers.setdefault(indices, len(self._key_numbers))
        self._keys[id(fits)] = (fits, key)
        return key

    def _groups(self, fits):
        """The fits by M-step group, and those checked for conditioning.

        Built once per list of active fits (the same lists every round
        while no fit leaves, so their layouts are found by identity).
        """
        if self._cached_groups[0] is not fits:
            groups = {}
            for fit in fits:
                groups.setdefault(fit.group, []).append(fit)
            checked = [fit for fit in fits if fit.may_whiten]
            self._cached_groups = (fits, (groups, checked))
        return self._cached_groups[1]

    # ---------------------------------------------------------- parameters
    def _set_parameters(self, fit, state):
        """Copy a state into the stacked arrays (per-fit M-steps, starts)."""
        where = fit.slice
        self.means[where] = state.means
        self.factors[where] = _full_matrices(fit.unit, state.precisions_cholesky)
        with np.errstate(divide="ignore"):
            self.log_weights[where] = np.log(state.weights)

    def _leave_ill_conditioned(self, fits):
        """Fits the kernel would evaluate in its whitened layout leave."""
        checked = self._groups(fits)[1]
        if not checked:
            return
        # A tied fit's components hold copies of one factor (the batched
        # M-step repeats it; a tied unit's own broadcasts it, EEE's copies
        # one covariance): its first stands for all.
        counts = self._positions(checked, tied_once=True)[1]
        factors, _, precisions = self._factors_and_constants(
            fits, self.reg_covar, constants=False
        )
        rows = self._checked_rows(fits, checked)
        if rows is not None:
            factors, precisions = factors[rows], precisions[rows]
        limit = WHITENING_LIMIT[np.dtype(np.float64)]
        losses = _conditioning_losses(precisions, factors, limit)
        # NaN losses fail the comparison: such a fit leaves too.
        fine = losses <= limit
        if fine.all():
            return
        owners = np.repeat(np.arange(len(checked)), counts)
        failing = np.bincount(owners, weights=~fine, minlength=len(checked))
        for number in np.flatnonzero(failing):
            checked[number].left = True

    def _checked_rows(self, fits, checked):
        """Where the checked components are among all the fits' (None: all).

        The components :meth:`_leave_ill_conditioned` checks (a tied fit's
        first only), as rows of the fits' stacked arrays (their stacked
        indices, in order, are increasing). Cached as :meth:`_positions` is.
        """
        key = ("checked", self._key(fits))
        if key not in self._cached_positions:
            where = self._positions(checked, tied_once=True)[0]
            every = self._layout(fits)[0]
            rows = None
            if len(where) != len(every):
                rows = np.searchsorted(every, where)
            self._cached_positions[key] = rows
        return self._cached_positions[key]

    def _m_step(self, fits):
        groups = self._groups(fits)[0]
        # Covariances whose precision factors are then found in one call
        # for all (_factorize): mclust's stacked groups', and the batched
        # full and tied groups'.
        pending = []
        for group, members in groups.items():
            if isinstance(group, str):
                found = self._stacked_covariances(group, members)
                if found is None:
                    self._stacked_apart(group, members)
                else:
                    pending.append(
                        (
                            found[3],
                            partial(self._store_stacked, members, *found),
                            partial(self._stacked_apart, group, members),
                        )
                    )
            elif group is None or not self._batched_m_step(group, members, pending):
                self._own_m_steps(members)
        if pending:
            self._factorize(pending)

    def _own_m_steps(self, fits):
        """Each fit's own M-step (:meth:`_own_m_step`)."""
        for fit in fits:
            self._own_m_step(fit)

    def _stacked_apart(self, group, fits):
        """Where a stacked M-step fails: as apart, each model's or fit's own."""
        if group not in SHARED_GROUPS:
            self._own_m_steps(fits)
            return
        for name in SHARED_GROUPS[group]:
            own = [fit for fit in fits if fit.unit.name == name]
            if own and not self._stacked_m_step(name, own):
                self._own_m_steps(own)

    def _own_m_step(self, fit):
        """The estimator's own M-step on the fit's slice of the statistics."""
        try:
            state = fit.model._update(
                self.moments(fit), fit.unit, fit.context, previous=fit.current_state()
            )
        except ValueError:
            fit.left = True
            return
        fit.state = state
        fit.blocks = None
        self._set_parameters(fit, state)

    def _batched_m_step(self, group, fits, pending=None):
        """One M-step for fits of one type; False if a fit must take its own.

        No component is empty here (a fit with one leaves the lock step),
        so the units' ``maximize`` needs no previous covariances. Given
        ``pending``, a full unit's covariances are factorised with the
        round's others (:meth:`_factorize`).
        """
        where, sizes, starts = self._positions(fits)
        owners, full_layout = self._owners(group, fits)
        nk = self.nk[where]
        fit_mass = np.add.reduceat(nk, starts)
        weights = nk / fit_mass.repeat(sizes)
        # Indexing with an array copies.
        means = self.xbar[where]
        n_features = means.shape[1]
        scatter = self.scatter[where]
        if group is TiedCovariance:
            # One full covariance per fit: its pooled scatter and mass.
            unit = covariance_unit("full", len(fits), n_features)
            scatter = np.add.reduceat(scatter, starts, axis=0)
            nk = fit_mass
        else:
            unit = covariance_unit(group.name, len(where), n_features)
            scatter = unit.second_moment_from_dense(scatter)
        empty = np.zeros(len(nk), dtype=bool)
        covariances = unit.maximize(nk, scatter, self.reg_covar, empty, None)
        found = (where, sizes, weights, means, covariances, owners, full_layout)
        if pending is not None and type(unit) is FullCovariance:
            # The full unit's factors: found with the round's others.
            pending.append(
                (
                    covariances,
                    partial(self._store_batched, group, unit, *found),
                    partial(self._own_m_steps, fits),
                )
            )
            return True
        try:
            factors = unit.cholesky_from_covariance(covariances, self.reg_covar)
        except ValueError:
            return False
        self._store_batched(group, unit, *found, factors)
        return True

    def _store_batched(
        self,
        group,
        unit,
        where,
        sizes,
        weights,
        means,
        covariances,
        owners,
        full_layout,
        factors,
    ):
        """Store a batched M-step's parameters, given its factors."""
        full = _full_matrices(unit, factors)
        if group is TiedCovariance:
            full = full.repeat(sizes, axis=0)
        full_covariances = None
        if full_layout:
            full_covariances = _full_matrices(unit, covariances)
            if group is TiedCovariance:
                full_covariances = full_covariances.repeat(sizes, axis=0)
        self.means[where] = means
        self.factors[where] = full
        self.log_weights[where] = np.log(weights)
        for fit, own, shared in owners:
            if fit.full_layout:
                fit.latest = (weights, means, full_covariances, full, own, own)
            else:
                fit.latest = (weights, means, covariances, factors, own, shared)

    def _owners(self, group, fits):
        """Where each fit's parameters are in a batched M-step's arrays.

        Per fit: its slice of the weights and means, and its index into
        the unit's covariances and factors (the slice, or its number for a
        tied fit); and whether any fit stores mclust's full layout. Cached
        as :meth:`_positions` is.
        """
        key = (group, self._key(fits))
        found = self._cached_owners.get(key)
        if found is None:
            owners, start = [], 0
            for number, fit in enumerate(fits):
                own = slice(start, start + fit.n_components)
                shared = number if group is TiedCovariance else own
                owners.append((fit, own, shared))
                start = own.stop
            found = (owners, any(fit.full_layout for fit in fits))
            self._cached_owners[key] = found
        return found

    def _stacked_m_step(self, name, fits):
        """One M-step for the fits of one of mclust's models (or group).

        False if a fit must take its own (a collapse, which its own
        M-step reports).
        """
        found = self._stacked_covariances(name, fits)
        if found is None:
            return False
        failed = []
        store = partial(self._store_stacked, fits, *found)
        self._factorize([(found[3], store, partial(failed.append, True))])
        return not failed

    def _stacked_covariances(self, name, fits):
        """The covariances of one stacked M-step of mclust's models.

        :func:`skvi._covariance.stacked.stacked_closed_form` (or the
        iterative models' stacked M-steps) on the fits' stacked
        statistics. Returns ``(where, weights, means, covariances,
        blocks)``, or None if a fit must take its own M-step.
        """
        where, sizes, starts = self._positions(fits)
        nk = self.nk[where]
        weights = nk / np.add.reduceat(nk, starts).repeat(sizes)
        means = self.xbar[where].copy()
        scatter = self.scatter[where]
        if name in (*COMMON_ORIENTATION_MODELS, "EVE+VVE"):
            previous = [fit.blocks for fit in fits]
            if any(blocks is None for blocks in previous):
                # The first M-step (every fit's search from its own starts),
                # or after a fit's own M-step (from its covariances; a
                # shared group's then each model's, as apart).
                states = [fit.current_state() for fit in fits]
                if all(state is None for state in states):
                    previous = None
                elif name in SHARED_GROUPS or any(state is None for state in states):
                    return None
                else:
                    previous = np.concatenate([state.covariances for state in states])
            models = name if name != "EVE+VVE" else [f.unit.name for f in fits]
            stopped = []
            found = stacked_common_orientation(
                models,
                nk,
                scatter,
                self.reg_covar,
                sizes,
                previous,
                stopped,
                fits[0].unit.column_variances,  # one data set for all
            )
            if found is None:
                return None
            covariances, blocks = found
            for fit, collapsed in zip(fits, stopped, strict=True):
                # As its own M-step says it (the run ends after its E-step).
                fit.unit.stop_reason = STOPPED_AT_COLLAPSE if collapsed else None
        elif name in (*JOINT_SHAPE_MODELS, "VEE", "VEI+VEV"):
            previous = [fit.blocks for fit in fits]
            if name == "VEE":
                found = stacked_common_matrix(
                    nk, scatter, self.reg_covar, sizes, previous
                )
            else:
                # A shared group's fits: each its model.
                models = name if name != "VEI+VEV" else [f.unit.name for f in fits]
                found = stacked_joint_shape(
                    models, nk, scatter, self.reg_covar, sizes, previous
                )
            if found is None:
                return None
            covariances, blocks = found
        else:
            models = name if name in STACKED_MODELS else [f.unit.name for f in fits]
            covariances = stacked_closed_form(
                models, nk, scatter, self.reg_covar, sizes
            )
            if covariances is None:
                return None
            blocks = [None] * len(fits)
        return where, weights, means, covariances, blocks

    def _factorize(self, pending):
        """The precision factors of several M-steps' covariances, at once.

        ``pending`` holds per M-step its covariances (K, D, D) in the full
        layout, what stores its parameters given their factors, and what
        to do where a factorisation fails. One call for all: each
        matrix's factor is its own (the same bits as a call for its
        M-step alone), and if any fails each M-step's is tried alone.
        """
        if len(pending) == 1:
            covariances = pending[0][0]
        else:
            covariances = np.concatenate([entry[0] for entry in pending])
        unit = covariance_unit("full", len(covariances), covariances.shape[-1])
        try:
            factors = unit.cholesky_from_covariance(covariances, self.reg_covar)
        except ValueError:
            if len(pending) == 1:
                pending[0][2]()
            else:
                for entry in pending:
                    self._factorize([entry])
            return
        begin = 0
        for covariances, store, _ in pending:
            store(factors[begin : begin + len(covariances)])
            begin += len(covariances)

    def _store_stacked(self, fits, where, weights, means, covariances, blocks, factors):
        """Store a stacked M-step's parameters, given its factors."""
        self.means[where] = means
        self.factors[where] = factors
        self.log_weights[where] = np.log(weights)
        start = 0
        for fit, found in zip(fits, blocks, strict=True):
            own = slice(start, start + fit.n_components)
            fit.latest = (weights, means, covariances, factors, own, own)
            fit.blocks = found
            start = own.stop

    # -------------------------------------------------------------- E-step
    def _constants(self, where, reg_covar):
        """``log rho_nk + (x - m_k)^T Lambda_k (x - m_k) / 2`` of ``where``."""
        factors = self.factors[where]
        diagonals = factors.diagonal(axis1=1, axis2=2)
        log_det = 2.0 * np.add.reduce(np.log(diagonals), axis=1)
        traces = einsum("kij,kij->k", factors, factors)
        n_features = factors.shape[1]
        return (
            self.log_weights[where]
            + 0.5 * log_det
            - 0.5 * n_features * LOG_2PI
            - 0.5 * reg_covar * traces
        )

    def _factors_and_constants(self, fits, reg_covar, constants=True):
        """The fits' stacked precision factors, :meth:`_constants`, precisions.

        Kept from the conditioning check for the half-step and the E-step
        that follow it on the same fits (all after one M-step, which
        clears them). Without ``constants``, those are not computed (they
        are None): the check sees fits whose M-step failed too, whose
        factors may not have a logarithm.
        """
        key = (self._key(fits), reg_covar)
        found = self._round_constants
        if found is None or found[0] != key:
            where = self._layout(fits)[0]
            factors = self.factors[where]
            precisions = np.matmul(factors, factors.swapaxes(1, 2))
            found = (key, [factors, None, precisions])
            self._round_constants = found
        found = found[1]
        if constants and found[1] is None:
            found[1] = self._constants(self._layout(fits)[0], reg_covar)
        return found

    def _half_step(self, fits):
        """ELBO(q_old, theta_new): the new parameters, the last E-step's q."""
        layout = self._layout(fits)
        where, starts = layout[0], layout[4]
        factors, constants, _ = self._factors_and_constants(fits, self.reg_covar)
        nk = self.nk[where]
        offsets = einsum("ki,kij->kj", self.xbar[where] - self.means[where], factors)
        # tr(P^T S P): one batched product and a two-operand einsum (the
        # three-operand loop takes several times as long).
        traces = einsum("kjl,kjl->k", factors, self.scatter[where] @ factors)
        terms = nk * constants - 0.5 * (
            traces + nk * einsum("ki,ki->k", offsets, offsets)
        )
        data_terms = np.add.reduceat(terms, starts)
        for fit, data_term in zip(fits, data_terms, strict=True):
            fit.half_steps.append((data_term + fit.entropy) / self.total_weight)

    def _log_rho(self, fits, reg_covar):
        """Every component's ``log rho`` of every row, (slots, fits, rows).

        Components are laid out by (slot, fit): slot ``s`` of fit ``f`` is
        its component ``s``, and slots beyond a fit's K are padding (no
        coefficients and a log-constant no exponential reaches), so that
        every step of the E-step is one operation on contiguous (fits,
        rows) blocks. The values are the kernel's expansion about one
        center ``c``, the rows' weighted mean (:mod:`skvi._kernel`): with
        ``e = x - c`` and ``d_k = m_k - c``, ``const_k - (e^T Lambda_k e -
        2 e^T Lambda_k d_k + d_k^T Lambda_k d_k) / 2``, one matrix product
        for all components. Also returns each component's rounding loss
        ``1 + d_k^T Lambda_k d_k`` of that expansion.
        """
        layout = self._layout(fits)
        where, n_slots, rows = layout[0], layout[3], layout[7]
        n_fits, n_features = len(fits), self.centered.shape[1]
        factors, constants, precisions = self._factors_and_constants(fits, reg_covar)
        shifts = self.means[where] - self.center
        whitened = einsum("ki,kij->kj", shifts, factors)
        quadratic = einsum("kj,kj->k", whitened, whitened)
        coefficients = np.zeros((n_slots * n_fits, 1 + n_features + n_features**2))
        coefficients[:, 0] = PADDING
        coefficients[rows, 0] = constants - 0.5 * quadratic
        coefficients[rows, 1 : 1 + n_features] = einsum(
            "kij,kj->ki", precisions, shifts
        )
        coefficients[rows, 1 + n_features :] = -0.5 * precisions.reshape(len(where), -1)
        log_rho = coefficients @ self.features
        return log_rho.reshape(n_slots, n_fits, -1), 1.0 + quadratic

    def _exact_values(self, fits, log_rho, losses, reg_covar):
        """Recompute, without a center, the values of fits that lose digits.

        Where a component's expansion about the shared center loses more
        than the kernel allows (``losses``, :func:`skvi._kernel.loss_limit`
        of the rows: a tight component far from the center), the kernel
        expands each row about its nearest component instead, and so loses
        nothing. Here every component of such a fit whitens the rows itself,
        ``P_k^T (x - m_k)`` (as accurate; one small product per component),
        in place in ``log_rho``. Returns which fits were recomputed (None if
        none): their moments are summed about each component's own mean too
        (:meth:`_accumulate`).
        """
        flagged = losses > self.value_limit
        if not flagged.any():
            return None
        layout = self._layout(fits)
        columns, starts, sizes = layout[2], layout[4], layout[5]
        exact = np.bincount(columns, weights=flagged, minlength=len(fits)) > 0
        factors, constants, _ = self._factors_and_constants(fits, reg_covar)
        where = layout[0]
        # One component at a time: work arrays of the rows' size only.
        for number in np.flatnonzero(exact):
            for slot in range(sizes[number]):
                k = starts[number] + slot
                whitened = (self.X - self.means[where[k]]) @ factors[k]
                forms = einsum("nj,nj->n", whitened, whitened)
                log_rho[slot, number] = constants[k] - 0.5 * forms
        return exact

    def _posterior(self, log_rho, fits):
        """Weighted responsibilities from ``log rho``, in place.

        Returns them (``w_n r_nk``), each fit's log density of each row
        (fits, rows), and each fit's entropy of q(Z).
        """
        weights = self.weights
        top = np.maximum.reduce(log_rho, axis=0)
        log_rho -= top
        # Floored as the kernel floors them: numpy's exp of the padding's
        # and of far components' log-ratios (results below the smallest
        # normal double) takes a path 10-80x slower per entry.
        if len(self._layout(fits)[0]) < log_rho.shape[0] * log_rho.shape[1]:
            # A padding slot's log-ratio (about -1e300) is below the floor:
            # the kernel's floored path, without its search for the minimum.
            np.maximum(log_rho, EXP_FLOOR[np.dtype(np.float64)], out=log_rho)
            resp = np.exp(log_rho)
            resp -= np.exp(EXP_FLOOR[np.dtype(np.float64)])
        else:
            resp = _exp_log_ratios(log_rho, np.empty_like(log_rho))
        totals = np.add.reduce(resp, axis=0)
        log_totals = np.log(totals)
        resp *= weights / totals
        entropies = log_totals @ weights - einsum("sfn,sfn->f", resp, log_rho)
        log_totals += top
        return resp, log_totals, entropies

    def _e_step(self, fits):
        """Statistics of every fit's optimal q(Z), in one pass.

        The values and moments are the kernel's expansion about the center
        ``c``; a fit whose means lie so far from ``c`` (in its own
        precision's metric, or relative to its spread) that this would lose
        more than the kernel's limits (``loss_limit`` of the rows for the
        values, ``LOSS_LIMIT`` for the moments) is computed without a
        center instead (:meth:`_exact_values`, :meth:`_accumulate`), as
        accurately as the kernel's local centers. A fit with an empty
        component (the kernel's ``empty_components``) or moments that are
        not finite leaves the lock step.
        """
        log_rho, losses = self._log_rho(fits, self.reg_covar)
        exact = self._exact_values(fits, log_rho, losses, self.reg_covar)
        resp, log_density, entropies = self._posterior(log_rho, fits)
        # (As Python floats: read per fit, once each.)
        log_normalizers = (log_density @ self.weights).tolist()
        entropies = entropies.tolist()
        leaving = self._accumulate(fits, resp, exact).tolist()
        for number, fit in enumerate(fits):
            if leaving[number]:
                # Its parameters are the ordinary fit's: the run goes on
                # alone from them (resume_alone).
                fit.left = True
                fit.resume = (
                    fit.current_state(),
                    (list(fit.half_steps), tuple(fit.recent), fit.n_iter),
                )
            else:
                fit.log_normalizer = log_normalizers[number]
                fit.entropy = entropies[number]

    def _assign(self, fits):
        """Statistics of the fits' starting responsibilities."""
        n_slots = self._layout(fits)[3]
        resp = np.zeros((n_slots, len(fits), len(self.X)))
        for number, fit in enumerate(fits):
            resp[: fit.n_components, number] = fit.start.T * self.weights
        leaving = self._accumulate(fits, resp, None)
        for fit, leaves in zip(fits, leaving, strict=True):
            fit.start = None
            fit.left = bool(leaves)

    def _accumulate(self, fits, resp, exact):
        """Sum the moments of weighted responsibilities (slots, fits, rows).

        The moments are summed about the center ``c`` and recentred at each
        mean, as the kernel's shared-center layout sums them. Fits marked
        ``exact`` (:meth:`_exact_values`), and fits whose recentring would
        cancel more digits than the kernel allows (a tight component far
        from ``c``, where the kernel sums about local centers), have their
        scatters summed about each component's own mean instead. Returns
        whether each fit must leave the lock step: an empty component, or
        moments that are not finite.
        """
        where, _, columns, n_slots = self._layout(fits)[:4]
        n_fits, n_features = len(fits), self.centered.shape[1]
        rows = self._layout(fits)[7]
        flat = resp.reshape(n_slots * n_fits, -1)
        sums = (flat @ self.features[1:].T).take(rows, axis=0)
        first, second = sums[:, :n_features], sums[:, n_features:]
        nk = np.add.reduce(resp, axis=2).reshape(-1).take(rows)
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis]
        offset = first / safe
        scatter = second.reshape(-1, n_features, n_features) - (
            first[:, :, np.newaxis] * offset[:, np.newaxis, :]
        )
        self.nk[where] = nk
        self.xbar[where] = self.center + offset
        self.scatter[where] = scatter
        # The kernel's limits on its cancellation (see the docstring).
        variances = scatter.diagonal(axis1=1, axis2=2) + (
            nk[:, np.newaxis] * self.reg_covar
        )
        cancelled = nk[:, np.newaxis] * offset**2
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = np.maximum.reduce(cancelled / variances, axis=1)
        tied = self._layout(fits)[6]
        if tied is not None:
            # A tied fit uses its scatters pooled, whose rounding is relative
            # to the pooled variances: its growth is the tied unit's
            # (TiedCovariance.moment_rounding_growth), not its components'.
            starts = self._layout(fits)[4]
            pooled_cancelled = np.add.reduceat(cancelled, starts)
            pooled_variances = np.add.reduceat(variances, starts)
            with np.errstate(divide="ignore", invalid="ignore"):
                pooled = np.maximum.reduce(pooled_cancelled / pooled_variances, axis=1)
            growth = np.where(tied, pooled[columns], growth)
        bad = ~np.isfinite(growth) | (nk <= EPSILON * self.total_weight)
        leaving = np.bincount(columns, weights=bad, minlength=n_fits) > 0
        cancelling = growth > LOSS_LIMIT[np.dtype(np.float64)]
        if exact is not None or cancelling.any():
            direct = np.bincount(columns, weights=cancelling, minlength=n_fits) > 0
            if exact is not None:
                direct |= exact
            direct &= ~leaving
            if direct.any():
                self._direct_scatters(fits, resp, direct)
        return leaving

    def _direct_scatters(self, fits, resp, direct):
        """Scatters of the ``direct`` fits about each component's own mean."""
        layout = self._layout(fits)
        where, starts, sizes = layout[0], layout[4], layout[5]
        # One component at a time: work arrays of the rows' size only.
        for number in np.flatnonzero(direct):
            for slot in range(sizes[number]):
                component = where[starts[number] + slot]
                gaps = self.X - self.xbar[component]
                weighted = resp[slot, number, :, np.newaxis] * gaps
                self.scatter[component] = weighted.T @ gaps

    def criteria(self, fits, sample_weight):
        """``(score, entropy)`` of each fit's final parameters.

        The mean plain log-likelihood of the rows (no ``reg_covar`` term,
        as :meth:`score` has it) and the entropy of the responsibilities
        with the caller's sample weights: what
        :meth:`EMGaussianMixture._criteria` computes per fit.
        """
        self._round_constants = None
        log_rho, losses = self._log_rho(fits, 0.0)
        self._exact_values(fits, log_rho, losses, 0.0)
        _, log_density, entropies = self._posterior(log_rho, fits)
        score = log_density @ self.weights / self.total_weight
        raw = len(self.X) if sample_weight is None else np.sum(sample_weight)
        # The rescaled weights are the caller's times a power of two.
        return score, entropies * (float(raw) / self.total_weight)

    def moments(self, fit):
        """The fit's latest E-step statistics as :class:`Moments`."""
        own = fit.slice
        return Moments(
            self.total_weight,
            self.nk[own].copy(),
            self.xbar[own].copy(),
            np.zeros_like(self.xbar[own]),
            fit.unit.second_moment_from_dense(self.scatter[own]),
        )

    def _positions(self, fits, tied_once=False):
        """Where the components of ``fits`` are in the stack, in their order.

        Their stacked indices, each fit's number of them and where each
        fit's begin among them. With ``tied_once`` a tied fit (the tied
        group's, whose components hold copies of one factor) counts its
        first component only. Cached: the members of a group change only
        when fits leave, and an M-step would otherwise build these for
        every group in every round.
        """
        key = (tied_once, self._key(fits))
        found = self._cached_positions.get(key)
        if found is None:
            sizes = [
                1 if tied_once and fit.group is TiedCovariance else fit.n_components
                for fit in fits
            ]
            starts = np.cumsum([0, *sizes[:-1]])
            where = _first_indices(fits, sizes, starts)
            found = (where, sizes, starts)
            self._cached_positions[key] = found
        return found

    def _layout(self, fits):
        """Where the components of ``fits`` are in the stack.

        Their stacked indices, the (slot, fit) of each, the number of slots,
        where each fit's components begin among them, each fit's K, which
        components belong to tied fits (None if none does), and the row of
        each in a (slots * fits, ...) layout.
        """
        key = self._key(fits)
        if self._cached_layout[0] != key:
            sizes = [fit.n_components for fit in fits]
            starts = np.cumsum([0, *sizes[:-1]])
            where = _first_indices(fits, sizes, starts)
            slots = where - np.repeat(where[starts], sizes)
            columns = np.repeat(np.arange(len(fits)), sizes)
            tied = [fit.group is TiedCovariance for fit in fits]
            tied = np.repeat(tied, sizes) if any(tied) else None
            # Each component's row of the (slots * fits) layout: one index
            # array takes or sets them several times faster than two.
            rows = slots * len(fits) + columns
            self._cached_layout = (
                key,
                (where, slots, columns, int(max(sizes)), starts, sizes, tied, rows),
            )
        return self._cached_layout[1]


def _has_missing(X):
    """Whether X (validated: numeric) has a missing entry.

    Also in rows the fits leave out (no observed value): the lock step
    takes only data without any.
    """
    # check_array reads pandas' missing values (pd.NA in nullable columns)
    # as NaN, which np.asarray refuses.
    values = check_array(X, dtype=np.float64, ensure_all_finite=False)
    return bool(np.isnan(np.sum(values)))


def _conditioning_losses(precisions, factors, limit):
    """``precision_conditioning_losses``, as compared with ``limit``.

    One batched inverse of the upper factors in place of LAPACK's
    triangular inverse per component (most of this check's time on small
    data; with D <= 2 LAPACK's own arithmetic, in closed form for all).
    The two round differently, by far less than ``MARGIN``: losses
    that close to the limit, and any that is not finite, are recomputed
    exactly, so every comparison with the limit is the exact one's.
    """
    diagonals = np.diagonal(factors, axis1=1, axis2=2)
    if not (np.isfinite(factors).all() and diagonals.all()):
        return np.asarray(precision_conditioning_losses(precisions, factors))
    if factors.shape[-1] <= 2:
        # In closed form (the exact check's own inverses): numpy's batched
        # general inverse costs ten times as much on hundreds of them.
        inverse = triangular_inverses(factors, lower=False)
    else:
        inverse = inv(factors)
    stds = np.sqrt(einsum("kij,kij->kj", inverse, inverse))
    losses = einsum("ki,kij,kj->k", stds, np.abs(precisions), stds)
    losses /= precisions.shape[-1]
    near = ~(np.abs(losses - limit) > MARGIN * limit)
    if near.any():
        losses[near] = precision_conditioning_losses(precisions[near], factors[near])
    return losses


def _first_indices(fits, sizes, starts):
    """The stacked indices of each fit's first ``size`` components, in order.

    ``starts`` are where each fit's begin in the result (the cumulative
    sizes before it). One arange and one repeat in place of an arange
    per fit (the lock step rebuilds its layouts whenever a fit leaves).
    """
    shifts = np.array([fit.slice.start for fit in fits]) - starts
    return np.arange(int(starts[-1]) + sizes[-1]) + np.repeat(shifts, sizes)


def _may_be_ill_conditioned(unit):
    """Whether the kernel may whiten rows for this unit's precisions."""
    return isinstance(unit, FullCovariance | TiedCovariance)


def _full_matrices(unit, matrices):
    """Each component's matrix (K, D, D) from the unit's layout.

    Covariances or upper Cholesky factors of precisions: a variance or a
    diagonal becomes a diagonal matrix, a tied matrix one per component.
    """
    if isinstance(unit, FullCovariance):
        return matrices
    n_components, n_features = unit.n_components, unit.n_features
    if isinstance(unit, TiedCovariance):
        return np.broadcast_to(matrices, (n_components, n_features, n_features))
    diagonals = np.broadcast_to(
        np.reshape(matrices, (n_components, -1)), (n_components, n_features)
    )
    full = np.zeros((n_components, n_features, n_features))
    # The diagonals as a strided view of each flattened matrix.
    full.reshape(n_components, -1)[:, :: n_features + 1] = diagonals
    return full
