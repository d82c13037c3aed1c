"""Machinery shared by both estimators.

Validation, initialisation, the coordinate-ascent loop (with ``n_init`` and
``warm_start``), the ELBO bookkeeping and the predict/score plumbing live
here. An estimator supplies only what differs between EM and VI: how
summed statistics become parameters (M-step or conjugate update), what the
E-step needs from those parameters, the KL terms, and how it scores new data.
"""

import copy
import functools
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from time import time

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted, validate_data

from ._batch import Trend, ascend
from ._covariance import COVARIANCE_TYPES, covariance_unit
from ._dask import (
    DaskData,
    check_dask_array,
    counted_mean_and_total,
    is_dask_collection,
)
from ._data_spread import data_spread
from ._degeneracy import ADVICE, DegenerateFitWarning, column_variances, degeneracy
from ._elbo import ELBODecomposition, expected_log_joint
from ._initialization import initial_responsibilities
from ._kernel import conditional_moments, normalize_in_place, row_values
from ._online import STREAM_HISTORY, RunningStatistics, online_step
from ._stats import (
    ArrayData,
    e_step,
    empty_components,
    log_rho_expansion,
    statistics_of_assignment,
)
from ._threads import for_each_chunk
from ._validation import (
    check_count_total,
    check_enough_samples,
    check_missing_entries,
    check_sample_weight,
    check_weight_range,
    counted_weights,
    rescaled_weights,
    rescaling_unit,
    rows_of_positive_weight,
    validate_rows,
    warn_if_columns_far_apart,
    warn_if_reg_covar_swamps,
)


def _unchanged_on_error(method):
    """Make a fitting method leave the estimator as it was if it raises.

    A fit sets attributes along the way (validation, priors); on an error
    they are all put back, so that a model fitted before stays fitted and
    consistent, and an unfitted one stays unfitted.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper


@dataclass(frozen=True)
class _EvaluatedState:
    """A state with what every ELBO evaluation needs of it, computed once."""

    state: object
    expectations: object
    kl_weights: float
    kl_components: float


@functools.cache
def _constructor_parameters(cls):
    """``BaseEstimator._get_param_names`` of ``cls``, as a tuple, once."""
    return tuple(BaseEstimator._get_param_names.__func__(cls))


class BaseGaussianMixture(DensityMixin, BaseEstimator):
    """Base class of skvi's mixtures; not for direct use."""

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "relative_tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [
            StrOptions(
                {
                    "kmeans",
                    "k-means++",
                    "random",
                    "random_from_data",
                    "hc",
                    "hc_mclust",
                    "ward",
                }
            )
        ],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "learning_decay": [Interval(Real, 0, 1, closed="both")],
        "learning_offset": [Interval(Real, 1.0, None, closed="left")],
    }

    @classmethod
    def _get_param_names(cls):
        # scikit-learn reads the constructor's signature on every
        # get_params (each fit's parameter validation, clone, set_params):
        # more time than an EM iteration on a few hundred rows. A class's
        # signature does not change; read it once.
        return list(_constructor_parameters(cls))

    def __sklearn_tags__(self):
        # Dense float arrays; NaN marks a missing entry, marginalised
        # exactly; sparse input and infinities are rejected with a clear
        # error.
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------
    # Hooks an estimator implements.

    def _prepare(self, data, unit, stream=False):
        """Validate data-dependent parameters; return a fit context.

        ``stream`` is True for a stream's first minibatch (``partial_fit``),
        whose rows stand for many not seen yet.
        """
        raise NotImplementedError

    def _update(self, moments, unit, context, previous, scale=1.0):
        """New parameters (M-step) or q(theta) (conjugate update).

        ``moments`` hold the statistics divided by ``scale`` (a power of two).
        """
        raise NotImplementedError

    def _expectations(self, state, unit):
        """The :class:`ComponentExpectations` of a state."""
        raise NotImplementedError

    def _kl_terms(self, state, unit, context):
        """``(KL of the weights, KL of the components)`` of a state."""
        raise NotImplementedError

    def _state_from_attributes(self, unit):
        """The state stored in the fitted attributes."""
        raise NotImplementedError

    def _store_state(self, state, unit, dtype):
        """Set the fitted attributes from a state."""
        raise NotImplementedError

    def _component_log_density(self, unit, dtype):
        """The kernel plan and a function of rows for scoring.

        The function maps a chunk of rows to the (K, m) array of
        ``log(weight_k density_k(x))``; the plan sizes the chunks.
        """
        raise NotImplementedError

    def _sample_component(self, rng, unit, component, n_samples):
        """Draws from one component of the fitted density."""
        raise NotImplementedError

    def _conditional_draw(self, rng, unit, component, conditional):
        """Draws of missing entries from one component given the observed.

        ``conditional`` holds ``means`` (n, s), ``covariances`` (n, s, s),
        the observed coordinates' ``quadratic`` forms (n,) and their number
        ``n_observed`` (n,).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------
    # Fitting.

    @_unchanged_on_error
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture by coordinate ascent on the ELBO.

        The fit runs ``n_init`` times and keeps the run with the largest
        final lower bound. Each run alternates the E-step (q(Z)) and the
        M-step (EM) or conjugate update (VI) until the per-sample ELBO
        changes by less than ``tol``, and ends with an E-step, so
        ``lower_bound_`` is the ELBO of the stored parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. float32 input is kept float32.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts. None means 1. A row
            of weight 0 is not there: it is left out before the
            initialisation, so the fit is exactly the fit without it (its
            values are never read, and a column observed only in such rows
            raises the error of an all-NaN column).

        Returns
        -------
        self : object
            The fitted estimator.

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> em.converged_, em.n_iter_, round(em.lower_bound_, 4)
        (True, 6, -4.1554)
        """
        data, unit, context = self._begin_fit(X, sample_weight)
        warm = self.warm_start and self._has_state_for(unit)
        rng = check_random_state(self.random_state)
        best = None
        for init in range(1 if warm else self.n_init):
            self._print_init_start(init)
            trend = None
            if warm:
                state = self._state_from_attributes(unit)
                trend = Trend.from_dict(getattr(self, "_ascent_trend", None))
            else:
                state = self._initial_state(data, unit, context, rng)
            run = ascend(self, data, unit, context, state, trend)
            self._print_init_end(run)
            if best is None or run.lower_bound > best.lower_bound:
                best = run

        # (A run its M-step stopped at a collapse is flagged degenerate.)
        if not best.converged and best.stop_reason is None and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different "
                "init parameters, or increase max_iter, tol, or check for "
                "degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._finish_fit(best, unit, data)
        self._diagnose(X, sample_weight, data)
        return self

    def _begin_fit(self, X, sample_weight, validated=None):
        """Validate a fit's parameters and data: ``(data, unit, context)``.

        What :meth:`fit` does before its runs; :mod:`skvi._multifit` starts
        its lock-step fits with it too, passing as ``validated`` an
        estimator that has validated the same X and sample weights (and
        the data it returned) and its own parameters: their validation is
        then not repeated, and of the parameters only those that are not
        the other estimator's (the same objects, as :func:`sklearn.clone`
        leaves numbers and strings) are checked.
        """
        if validated is None:
            self._validate_params()
            data = self._training_data(X, sample_weight)
        else:
            other, data = validated
            theirs = other.get_params(deep=False)
            validate_parameter_constraints(
                self._parameter_constraints,
                {
                    name: value
                    for name, value in self.get_params(deep=False).items()
                    if value is not theirs[name]
                },
                caller_name=type(self).__name__,
            )
            check_enough_samples(data.sample_weight, self.n_components, min_samples=2)
            self.n_features_in_ = other.n_features_in_
            if hasattr(other, "feature_names_in_"):
                self.feature_names_in_ = other.feature_names_in_
        unit = covariance_unit(self.covariance_type, self.n_components, data.n_features)
        if getattr(unit, "name", None) in ("EVE", "VVE") and hasattr(data, "X"):
            # What their orientation's search judges a collapse by (one
            # pass over a Dask array's blocks).
            unit.column_variances = np.asarray(
                column_variances(data.X, data.sample_weight, self.reg_covar),
                dtype=float,
            )
        return data, unit, self._prepare(data, unit)

    def _finish_fit(self, best, unit, data):
        """Store the best :class:`skvi._batch.AscentRun` as the fitted model.

        Everything :meth:`fit` sets after its runs but ``degenerate_``
        (:meth:`_diagnose`, which warns from the caller's frame).
        """
        self._store_state(best.state, unit, data.dtype)
        self._fitted_covariance_type = unit.name
        self._store_run(best)
        self._stop_reason = best.stop_reason
        # A later partial_fit continues from the final E-step's statistics.
        self._online_statistics = dict(
            RunningStatistics.from_moments(best.statistics.moments).to_dict(), steps=0
        )

    def _dask_training_data(self, X, sample_weight):
        X = check_dask_array(X)
        if X.shape[0] < max(2, self.n_components):
            raise ValueError(
                f"Expected n_samples >= max(2, n_components) but got n_components = "
                f"{self.n_components}, n_samples = {X.shape[0]}."
            )
        self.n_features_in_ = X.shape[1]
        self.__dict__.pop("feature_names_in_", None)
        data = DaskData(X, sample_weight, counts=self._weights_are_counts)
        # As many ones as rows that take part, up to n_components: enough to
        # check, and nothing of the size of X on the client.
        check_enough_samples(
            np.ones(min(data.n_present, max(2, self.n_components))),
            self.n_components,
            min_samples=2,
        )
        return data

    @_unchanged_on_error
    def partial_fit(self, X, y=None, sample_weight=None):
        """One online step on a minibatch: online EM or stochastic VI.

        The model keeps running sufficient statistics per unit of sample
        weight. Each call runs one E-step on the minibatch under the current
        parameters, blends its statistics into the running ones with step
        size ``max(m_t / M_t, (learning_offset + t)^(-learning_decay))``
        for the t-th call (``m_t`` the minibatch's rows of positive weight,
        ``M_t`` the rows seen so far: the first steps are running averages),
        and updates the parameters from them: EM's M-step (online EM), or
        VI's conjugate update with the statistics scaled to
        ``total_samples`` rows (stochastic VI). Until a component's share
        of the rows seen reaches ``n_features + 1``, its update uses the
        pooled within-component scatter instead of its own, which would be
        singular: a stream of small minibatches with many features then
        does not collapse onto one component.

        The first call on an unfitted model initialises from its minibatch
        as ``init_params`` says (and, for VI, takes default priors from it,
        the covariance prior shrunk as ``covariance_prior`` says)
        and keeps that minibatch's statistics whole. After :meth:`fit`, calls
        continue from the fitted model, whose statistics count as long past
        the start (no averaging or pooling); :meth:`fit` after ``partial_fit``
        starts afresh, or from the current parameters when
        ``warm_start=True``. Every call must have the fitted number of
        features, and the fitted ``n_components`` and ``covariance_type``
        (a stream does not change shape: :meth:`fit` or a clone starts a
        new one).

        After ``partial_fit``: ``n_iter_`` is the number of steps since the
        stream began (at the first call, or at the last ``fit``);
        ``lower_bound_`` is the per-sample ELBO estimate of the latest
        minibatch under the parameters it was processed with, and
        ``lower_bounds_`` those of the last ``min(n_iter_, 1000)`` steps
        (a bounded history, so that a call costs the same however long the
        stream). The estimates are noisy and not monotone, and
        ``converged_`` is False: monitor a held-out :meth:`score` instead.
        The batch traces
        ``half_step_lower_bounds_`` (and EM's ``kl_gaps_``) are removed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A minibatch of rows.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts within the
            minibatch's statistics; the step size counts rows (``m_t`` and
            ``M_t`` above), so a minibatch with a row of weight 3 does not
            step as one with three copies of it would. Rows of weight 0 are
            left out, as in :meth:`fit`.

        Returns
        -------
        self : object
            The updated estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0)
        >>> for batch in np.array_split(X, 4):
        ...     em = em.partial_fit(batch)
        >>> em.n_iter_, round(em.score(X), 2)
        (4, -4.16)
        """
        self._validate_params()
        fitted = hasattr(self, "_online_statistics")
        data = self._validated_rows(
            X, sample_weight, reset=not fitted, counts=self._weights_are_counts
        )
        X, sample_weight = data.X, data.sample_weight
        unit = covariance_unit(self.covariance_type, self.n_components, X.shape[1])
        if fitted and not self._has_state_for(unit):
            # (It restarted the stream silently, losing what it had learnt.)
            raise ValueError(
                f"partial_fit continues the fitted model, which has "
                f"{len(self.weights_)} components of covariance type "
                f"{getattr(self, '_fitted_covariance_type', '?')!r}; set_params "
                f"asked for {unit.n_components} of type {unit.name!r}. Call fit "
                "to start "
                "afresh, or begin a new stream with a new estimator "
                "(sklearn.base.clone(model))."
            )
        if fitted:
            stream = self._online_statistics
            running = RunningStatistics.from_dict(stream)
            steps, bounds = stream["steps"], self._stream_bounds()
            context = self._fit_context(unit)
            state = self._state_from_attributes(unit)
        else:
            check_enough_samples(sample_weight, self.n_components)
            running, steps, bounds = None, 0, np.empty(0)
            context = self._prepare(data, unit, stream=True)
            rng = check_random_state(self.random_state)
            state = self._initial_state(data, unit, context, rng)
        state, running, bound = online_step(
            self, data, unit, context, state, running, steps
        )
        self._store_state(state, unit, X.dtype)
        self._fitted_covariance_type = unit.name
        self._online_statistics = dict(running.to_dict(), steps=steps + 1)
        # A bounded history: a call costs the same however long the stream.
        self.lower_bounds_ = np.append(bounds[-(STREAM_HISTORY - 1) :], bound)
        self.lower_bound_ = float(bound)
        self.n_iter_ = steps + 1
        self.converged_ = False
        # (A stream's steps do not stop: a batch fit's stop no longer holds.)
        for name in (
            "half_step_lower_bounds_",
            "kl_gaps_",
            "_ascent_trend",
            "_stop_reason",
        ):
            self.__dict__.pop(name, None)
        self._diagnose_stream(steps + 1)
        return self

    def _stream_bounds(self):
        """The stream's recent bounds: none right after a fit."""
        if self._online_statistics["steps"] == 0:
            return np.empty(0)
        return self.lower_bounds_

    def _stream_weight(self, batch_weight):
        """The total weight the running statistics stand for in an update."""
        return batch_weight

    @staticmethod
    def _stream_bound(stats, evaluated, stream_weight):
        """Per-sample ELBO estimate of a minibatch standing for a stream.

        The minibatch's data term and entropy per unit weight, less the KL
        terms spread over the stream's weight.
        """
        kl = evaluated.kl_weights + evaluated.kl_components
        return stats.log_normalizer / stats.total_weight - kl / stream_weight

    def _training_data(self, X, sample_weight):
        """Validate the training rows and weights (resetting n_features_in_).

        Returns the data source the algorithms use: rows in memory, or a
        Dask array whose blocks stay on the workers.
        """
        if is_dask_collection(X):
            return self._dask_training_data(X, sample_weight)
        data = self._validated_rows(
            X, sample_weight, reset=True, min_samples=2, counts=self._weights_are_counts
        )
        check_enough_samples(data.sample_weight, self.n_components, min_samples=2)
        warn_if_reg_covar_swamps(data.X, self.reg_covar)
        warn_if_columns_far_apart(data.X, [self.covariance_type])
        return data

    # Whether fit reads sample weights as counts whose scale matters (VI:
    # against the prior), rather than only relative to each other (EM).
    _weights_are_counts = False

    def _validated_rows(self, X, sample_weight, reset, min_samples=1, counts=True):
        """Validated rows in memory (NaN allowed) and their weights.

        Only the rows of positive weight are kept: a row of weight 0 (or with
        no observed value) is not there for the algorithms.

        Weights whose scale does not matter (``counts=False``) are brought
        to a largest weight in [0.5, 1) by an exact power of two; counts
        must have a total the bound can use.
        """
        X = validate_rows(self, X, reset, min_samples)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        sample_weight = check_missing_entries(X, sample_weight, check_columns=reset)
        X, sample_weight = rows_of_positive_weight(X, sample_weight)
        unit = 1.0
        if counts:
            check_count_total(sample_weight)
        else:
            positive = sample_weight[sample_weight > 0]
            check_weight_range(positive.min(), positive.max())
            unit = rescaling_unit(positive.max())
            sample_weight = rescaled_weights(sample_weight)
        return ArrayData(X, sample_weight, unit)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit the mixture and return the component of each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts; rows of weight 0
            are left out of the fit but labelled.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Equal to ``fit(X).predict(X)``.

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> EMGaussianMixture(n_components=2, random_state=0).fit_predict(X)[:5]
        array([1, 0, 1, 0, 1])
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _has_state_for(self, unit):
        """Whether the fitted attributes can seed a warm start of this fit.

        They cannot after set_params changed the shape of the model (number
        of components or features, covariance type): the fit starts afresh.
        """
        if not hasattr(self, "converged_"):
            return False
        # The shapes of, say, tied and diag coincide when K == D: the type
        # of a fitted state must match too. (Attributes set by hand carry no
        # type; their shapes decide.)
        return (
            getattr(self, "_fitted_covariance_type", unit.name) == unit.name
            and np.shape(self.means_) == (unit.n_components, unit.n_features)
            and np.shape(self.covariances_) == unit.precision_shape
        )

    def _fitted_unit(self, n_features):
        """The covariance unit of the fitted model.

        From the fitted attributes, not the parameters: ``set_params`` after
        ``fit`` (or a failed refit) does not change what the model predicts.
        """
        kind = getattr(self, "_fitted_covariance_type", self.covariance_type)
        return covariance_unit(kind, len(self.weights_), n_features)

    def _initial_state(self, data, unit, context, rng):
        rows, responsibilities = self._initial_assignment(data, rng)
        stats = statistics_of_assignment(rows, unit, responsibilities)
        empty = empty_components(stats.moments)
        if np.any(empty):
            raise ValueError(
                f"init_params={self.init_params!r} left component "
                f"{int(np.flatnonzero(empty)[0])} without samples (X may have "
                "fewer distinct rows than n_components). Use fewer components "
                "or another init_params."
            )
        return self._update(stats.moments, unit, context, previous=None)

    def _initial_assignment(self, data, rng):
        """The rows a start is computed from, and their q(Z) as ``init_params`` says.

        The q(Z) is a function of a slice of those rows (see
        :func:`skvi._initialization.initial_responsibilities`).
        """
        rows = data.initialisation_data(rng)
        return rows, initial_responsibilities(
            rows.X,
            rows.sample_weight,
            self.n_components,
            self.init_params,
            rng,
            rows.weight_unit,
        )

    def _allows_merges(self, unit):
        """Whether the batch fit may try merge moves (VI only)."""
        return False

    def _evaluate(self, state, unit, context):
        kl_weights, kl_components = self._kl_terms(state, unit, context)
        return _EvaluatedState(
            state, self._expectations(state, unit), kl_weights, kl_components
        )

    def _elbo_terms(self, stats, evaluated, unit):
        """``(E[log p(X, Z | theta)], H[q(Z)], KL weights, KL components)``."""
        data = expected_log_joint(
            stats.moments, evaluated.expectations, unit, self.reg_covar
        )
        return data, stats.entropy, evaluated.kl_weights, evaluated.kl_components

    def _elbo(self, stats, evaluated, unit):
        """Per-sample ELBO of q(Z) (through its statistics) and a state."""
        data, entropy, kl_weights, kl_components = self._elbo_terms(
            stats, evaluated, unit
        )
        return (data + entropy - kl_weights - kl_components) / stats.total_weight

    @staticmethod
    def _elbo_after_e_step(stats, evaluated):
        """Per-sample ELBO of the optimal q(Z) for the state it was computed from.

        For that q the data term plus entropy is the log normaliser.
        """
        kl = evaluated.kl_weights + evaluated.kl_components
        return (stats.log_normalizer - kl) / stats.total_weight

    # Whether a prior regularises the covariances (VI): then any number of
    # points gives a nonsingular one; see skvi._degeneracy.
    _prior_regularises_covariances = False

    def _effective_points(self, X, sample_weight, data=None):
        """The total sample weight each fitted component holds.

        ``data``, where given, is the fit's validated X (ArrayData or
        DaskData), whose known facts save a pass over X.
        """
        raise NotImplementedError

    def _stream_points(self):
        """What a stream can count of each component's points (see below)."""
        return self._effective_points(None, None)

    def _degeneracy(self, points, spread=None):
        """Why the stored model is degenerate, or None (skvi._degeneracy).

        ``spread`` is what the data give the components where entries are
        missing (:func:`skvi._data_spread.data_spread`), None on complete
        data or for a stream. A fit that ended where its M-step found it
        collapsed is degenerate for that reason where no rule names another.
        """
        reason = degeneracy(
            getattr(self, "_fitted_covariance_type", self.covariance_type),
            self.weights_,
            self.means_,
            self.covariances_,
            points,
            prior=self._prior_regularises_covariances,
            reg_covar=None if self._prior_regularises_covariances else self.reg_covar,
            scatters=self._component_scatters(),
            data_scatters=None if spread is None else spread.scatters,
            observed=None if spread is None else spread.observed,
            orientations=getattr(self, "orientations_", None),
        )
        return reason or getattr(self, "_stop_reason", None)

    def _component_scatters(self):
        """Each component's scatter over its weight, as the last M-step read it.

        From the statistics of the fit's last E-step, or a stream's running
        ones, whose components that have seen fewer than ``n_features + 1``
        rows take the pooled scatter (:meth:`RunningStatistics.moments`).
        Full (K, D, D) matrices where the statistics keep them (mclust's
        models), else None.
        """
        statistics = getattr(self, "_online_statistics", None)
        if statistics is None or np.ndim(statistics["scatter"]) != 3:
            return None
        scatter = np.asarray(statistics["scatter"])
        unit = covariance_unit(
            getattr(self, "_fitted_covariance_type", self.covariance_type),
            scatter.shape[0],
            scatter.shape[1],
        )
        moments = RunningStatistics.from_dict(statistics).moments(1.0, unit)
        nk = moments.nk
        safe = np.where(nk > 0, nk, 1.0)[:, np.newaxis, np.newaxis]
        return moments.scatter / safe

    def _warn_degenerate(self, what):
        warnings.warn(
            f"Degenerate {what}: {self.degenerate_}. Its likelihood and "
            f"criteria do not measure a sound model. {ADVICE}",
            DegenerateFitWarning,
            stacklevel=5,  # the caller of fit or partial_fit, through its wrapper
        )

    def _diagnose(self, X, sample_weight, data=None):
        """Set ``degenerate_`` (the reason, or None) and warn if it is set.

        With missing entries in X, the rules of a model without a prior
        read the spread and observed columns of one more pass over X
        (:mod:`skvi._data_spread`). ``data`` is what :meth:`fit` made of
        X, where given: a Dask array's validation pass already knows
        whether entries are missing and the effective sample size, which
        saves two passes over its blocks (each a read of the data).
        """
        spread = None
        if not self._prior_regularises_covariances and getattr(
            data, "has_missing", True
        ):
            spread = data_spread(self, X, sample_weight)
        self.degenerate_ = self._degeneracy(
            self._effective_points(X, sample_weight, data), spread
        )
        if self.degenerate_ is not None:
            self._warn_degenerate("fit")

    def _diagnose_stream(self, step):
        """Diagnose a stream's model at its steps 1, 2, 4, 8, ...

        Often enough to notice a stream turning degenerate, and at a cost
        that vanishes per step (the ratio rules take an eigendecomposition
        per component, as long as a small minibatch's whole step). In
        between, ``degenerate_`` keeps the last diagnosis. It warns when a
        diagnosis finds the model degenerate where the one before did not.
        """
        if step & (step - 1):
            return
        before = getattr(self, "degenerate_", None)
        self.degenerate_ = self._degeneracy(self._stream_points())
        if self.degenerate_ is not None and before is None:
            self._warn_degenerate("stream")

    def _store_run(self, run):
        self.half_step_lower_bounds_ = np.asarray(run.half_steps)
        self.lower_bounds_ = self.half_step_lower_bounds_[::2].copy()
        self.lower_bound_ = float(run.lower_bound)
        self.n_iter_ = run.n_iter
        self.converged_ = run.converged
        # A warm-started fit continues the stopping rule from here.
        self._ascent_trend = run.trend.to_dict()

    # ------------------------------------------------------------------
    # The ELBO of a fitted model.

    def elbo_decomposition(self, X, sample_weight=None, responsibilities=None):
        """The ELBO of the fitted model on X, split into its terms.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to evaluate the bound on.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts; rows of weight 0
            are skipped (their responsibilities are checked, not read).
        responsibilities : array-like of shape (n_samples, n_components), \
default=None
            A q(Z) to evaluate, rows summing to 1. None uses the optimal
            q(Z) for the fitted parameters (the exact posterior for EM).

        Returns
        -------
        ELBODecomposition
            Every term divided by the total sample weight.

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> terms = em.elbo_decomposition(X)
        >>> round(terms.elbo, 4), round(terms.entropy, 4), abs(terms.kl_gap) < 1e-12
        (-4.1554, 0.0026, True)
        """
        check_is_fitted(self)
        X = validate_rows(self, X, reset=False)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        unit = self._fitted_unit(X.shape[1])
        resp = None
        if responsibilities is not None:
            resp = _check_responsibilities(responsibilities, X.shape[0], unit)
        # Skipped, not multiplied by 0: a row of weight 0 is not there.
        X, sample_weight, resp = rows_of_positive_weight(X, sample_weight, resp)
        evaluated = self._evaluate(
            self._state_from_attributes(unit), unit, self._fit_context(unit)
        )
        rows = ArrayData(X, sample_weight)
        optimal = e_step(rows, unit, evaluated.expectations, self.reg_covar)
        if resp is None:
            stats = optimal
        else:
            plan = log_rho_expansion(
                unit, evaluated.expectations, self.reg_covar, X.dtype
            )
            stats = rows.assigned_statistics(plan, lambda chunk: resp[chunk])
        total = stats.total_weight
        data, entropy, kl_weights, kl_components = self._elbo_terms(
            stats, evaluated, unit
        )
        elbo = (data + entropy - kl_weights - kl_components) / total
        log_likelihood = self._log_likelihood(optimal)
        return ELBODecomposition(
            expected_log_joint=data / total,
            entropy=entropy / total,
            kl_weights=kl_weights / total,
            kl_components=kl_components / total,
            elbo=elbo,
            log_likelihood=log_likelihood,
            kl_gap=None if log_likelihood is None else log_likelihood - elbo,
        )

    def _fit_context(self, unit):
        """The fit context rebuilt from fitted attributes."""
        return None

    def _log_likelihood(self, optimal_stats):
        """Per-sample log evidence when the E-step is exact, else None."""
        return None

    # ------------------------------------------------------------------
    # Predicting and scoring.

    def _per_row(self, X, reduce, width=None, labels=False):
        """Apply ``reduce`` to the (K, m) log joint densities of X, chunk by chunk.

        Results go straight into one preallocated array of ``len(X)`` rows
        (``width`` columns if given), in the dtype of X (integers if
        ``labels``). A Dask array gets a lazy Dask array, computed block by
        block on the workers from a copy of the model as it is now: a later
        refit, ``set_params`` or change to a fitted array does not reach it.
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            X = check_dask_array(X, self.n_features_in_)
            dtype = np.dtype(np.intp) if labels else X.dtype
            snapshot = copy.deepcopy(self)
            if width is None:
                return X.map_blocks(
                    snapshot._per_block, reduce, None, labels, drop_axis=1, dtype=dtype
                )
            chunks = (X.chunks[0], (width,))
            return X.map_blocks(
                snapshot._per_block, reduce, width, labels, chunks=chunks, dtype=dtype
            )
        X = validate_rows(self, X, reset=False)
        unit = self._fitted_unit(X.shape[1])
        plan, density = self._component_log_density(unit, X.dtype)
        shape = (X.shape[0],) if width is None else (X.shape[0], width)
        out = np.empty(shape, dtype=np.intp if labels else X.dtype)

        def evaluate(rows):
            out[rows] = reduce(density(X[rows]))

        for_each_chunk(evaluate, plan.chunks(X.shape[0]), plan.row_bytes())
        return out

    def _per_block(self, block, reduce, width, labels):
        """:meth:`_per_row` of one block of a Dask array.

        A block may hold no rows (rows filtered lazily, then
        ``compute_chunk_sizes()``): its result is empty, where an empty
        array of the caller's is an error.
        """
        if block.shape[0] == 0:
            shape = (0,) if width is None else (0, width)
            return np.empty(shape, dtype=np.intp if labels else block.dtype)
        return self._per_row(block, reduce, width, labels)

    def score_samples(self, X):
        """Log density of each sample under the fitted model.

        For :class:`EMGaussianMixture`, the mixture log-likelihood
        ``log p(x; theta)``, without the reg_covar smoothing of the training
        objective. For :class:`VariationalGaussianMixture`, the log
        posterior predictive density ``log p(x | X_train)``, a mixture of
        Student-t: a normalised density, comparable across models.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> em.score_samples(X[:2]).round(3)
        array([-4.637, -3.672])
        """
        return self._per_row(X, normalize_in_place)

    def score(self, X, y=None, sample_weight=None):
        """Weighted mean log density of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts; rows of weight 0
            are skipped, and so are rows with no observed value (all NaN),
            which a fit leaves out too.

        Returns
        -------
        score : float

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> round(em.score(X), 4)
        -4.1554
        """
        return self._score_and_size(X, sample_weight)[0]

    def _score_and_size(self, X, sample_weight):
        """The score of X and the total weight of its rows that count.

        Rows of weight 0 and rows with no observed value count in neither
        (skvi._validation.counted_weights); on a Dask array, one pass.
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            log_density = self.score_samples(X)
            return counted_mean_and_total(log_density, X, sample_weight)
        counted = counted_weights(X, sample_weight)
        weights = rescaled_weights(counted)
        if not np.all(weights > 0):
            # Rows of weight 0 are not there: skipped, not multiplied by 0
            # (one may be too far for any density).
            X, weights = _safe_indexing(X, weights > 0), weights[weights > 0]
        score = float(np.dot(weights, self.score_samples(X)) / weights.sum())
        return score, float(counted.sum())

    def predict_proba(self, X):
        """Posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> em.predict_proba(X[:2]).round(3)
        array([[0., 1.],
               [1., 0.]])
        """
        check_is_fitted(self)
        width = len(self.weights_)
        return self._per_row(X, _responsibilities, width=width)

    def predict(self, X):
        """The most probable component of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        labels : ndarray of shape (n_samples,)

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> em.predict(X[:3])
        array([1, 0, 1])
        """
        return self._per_row(X, _labels, labels=True)

    def _impute(self, X, random_state=None):
        """X with each missing entry filled from the fitted mixture.

        With ``random_state`` None, the conditional expectation E[x_m | x_o]
        (the responsibilities given x_o times each component's conditional
        mean); otherwise one draw from p(x_m | x_o): a component from the
        responsibilities, then its conditional. Used by
        :class:`skvi.GaussianMixtureImputer`.
        """
        check_is_fitted(self)
        X = validate_data(
            self,
            X,
            reset=False,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
            copy=True,
        )
        unit = self._fitted_unit(X.shape[1])
        plan, _ = self._component_log_density(unit, X.dtype)
        for rows in plan.chunks(X.shape[0]):
            chunk = X[rows]
            parts = list(conditional_moments(plan, chunk))
            if not parts:
                continue
            resp = self.predict_proba(chunk)
            quadratic = None
            if random_state is not None:
                quadratic, _, observed = row_values(
                    plan, chunk, np.float64, marginal=True
                )
            for members, missing, means, covariances in parts:
                if random_state is None:
                    fill = np.einsum("nk,kns->ns", resp[members], means)
                else:
                    fill = self._drawn_fill(
                        random_state,
                        unit,
                        resp[members],
                        means,
                        covariances,
                        quadratic[:, members] if quadratic is not None else None,
                        observed[members],
                    )
                chunk[members[:, np.newaxis], missing] = fill
        return X

    def _drawn_fill(self, rng, unit, resp, means, covariances, quadratic, observed):
        """One draw of the missing entries of each row, (n, s)."""
        cumulative = np.cumsum(resp, axis=1)
        draws = rng.uniform(size=(len(resp), 1)) * cumulative[:, -1:]
        components = np.minimum((cumulative < draws).sum(axis=1), resp.shape[1] - 1)
        fill = np.empty(means.shape[1:])
        for k in np.unique(components):
            chosen = np.flatnonzero(components == k)
            fill[chosen] = self._conditional_draw(
                rng,
                unit,
                k,
                {
                    "means": means[k, chosen],
                    "covariances": covariances[k, chosen],
                    "quadratic": quadratic[k, chosen],
                    "n_observed": observed[chosen],
                },
            )
        return fill

    def sample(self, n_samples=1):
        """Draw samples from the fitted density.

        Draws use ``random_state``, as scikit-learn's mixtures do.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The samples, grouped by component.
        y : ndarray of shape (n_samples,)
            The component each sample was drawn from.

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> samples, components = em.sample(5)
        >>> samples.shape, components
        ((5, 2), array([0, 0, 1, 1, 1]))
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {n_samples!r}."
            )
        unit = self._fitted_unit(self.means_.shape[1])
        rng = check_random_state(self.random_state)
        weights = np.asarray(self.weights_, dtype=float)
        counts = rng.multinomial(n_samples, weights / weights.sum())
        draws = [
            self._sample_component(rng, unit, k, int(count))
            for k, count in enumerate(counts)
        ]
        labels = np.repeat(np.arange(unit.n_components), counts)
        return np.vstack(draws).astype(self.means_.dtype, copy=False), labels

    # ------------------------------------------------------------------
    # Progress messages, as scikit-learn prints them.

    def _print_init_start(self, init):
        if self.verbose >= 1:
            print(f"Initialization {init}")
            self._init_time = self._iter_time = time()

    def _print_merges(self, pairs):
        if self.verbose >= 1:
            merged = ", ".join(f"{k} into {j}" for j, k in pairs)
            print(f"  Merged components {merged}")

    def _print_iteration(self, n_iter, change, bound):
        if self.verbose >= 1 and n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {n_iter}")
            else:
                now = time()
                print(
                    f"  Iteration {n_iter}\t time lapse {now - self._iter_time:.5f}s"
                    f"\t ELBO change {change:.5f}\t ELBO {bound:.6f}"
                )
                self._iter_time = now

    def _print_init_end(self, run):
        if self.verbose >= 1:
            status = "converged" if run.converged else "did not converge"
            if run.stop_reason is not None:
                status = "stopped at a collapse"
            if self.verbose == 1:
                print(f"Initialization {status}.")
            else:
                print(
                    f"Initialization {status}. time lapse "
                    f"{time() - self._init_time:.5f}s\t ELBO {run.lower_bound:.5f}."
                )


def _labels(log_joint):
    """The most probable component from (K, m) log joint densities."""
    return np.argmax(log_joint, axis=0)


def _responsibilities(log_joint):
    """Rows of responsibilities from (K, m) log joint densities."""
    normalize_in_place(log_joint)
    return log_joint.T


def _check_responsibilities(responsibilities, n_samples, unit):
    resp = np.array(responsibilities, dtype=float)
    shape = (n_samples, unit.n_components)
    if resp.shape != shape:
        raise ValueError(f"responsibilities must have shape {shape}, got {resp.shape}.")
    if not np.all(np.isfinite(resp)) or np.any(resp < 0):
        raise ValueError("responsibilities must be finite and non-negative.")
    if not np.allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-10):
        raise ValueError("Each row of responsibilities must sum to 1.")
    return resp
