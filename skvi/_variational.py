"""VariationalGaussianMixture: exact mean-field VI on the shared ELBO core."""

from dataclasses import dataclass, replace
from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseGaussianMixture
from ._covariance import MCLUST_MODELS, covariance_unit
from ._elbo import ComponentExpectations, kl_normal_given_precision
from ._kernel import parameter_expansion, row_values
from ._priors import WEIGHT_PRIORS, NormalPrecisionPrior
from ._shrinkage import shrinkage_intensity, shrunk_towards_identity
from ._validation import check_array_param

# The largest total_samples: the posterior's counts (the stream's weight plus
# the priors' pseudo-counts) then still add up to a finite float64.
LARGEST_TOTAL_SAMPLES = 1e308


@dataclass(frozen=True)
class VariationalParameters:
    """The factors of q(pi) q(mu, Lambda), parameterised as in DESIGN.md."""

    weight_concentration: object
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: object
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


@dataclass(frozen=True)
class _Priors:
    components: NormalPrecisionPrior
    weights: object


# The covariance types with a conjugate prior (mclust's VVV, EEE, VVI, VII).
CONJUGATE_TYPES = ("full", "tied", "diag", "spherical")


class VariationalGaussianMixture(BaseGaussianMixture):
    """Gaussian mixture fitted by exact mean-field variational inference.

    A drop-in for :class:`sklearn.mixture.BayesianGaussianMixture` (every
    constructor parameter, default and fitted attribute), on the same ELBO
    core as :class:`EMGaussianMixture`. The variational posterior factorises
    as ``q(Z) q(pi) prod_k q(mu_k, Lambda_k)`` with conjugate factors; the
    fit alternates the local step (q(Z)) and the global step (q(pi) and
    q(mu, Lambda)), each the exact maximiser of the ELBO, so the ELBO never
    decreases.

    Parameters
    ----------
    n_components : int, default=1
        Number of components (an upper bound: surplus components can be
        left with negligible weight).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        'full': Normal-Wishart per component; 'tied': one Wishart shared by
        all components; 'diag': Normal-Gamma per component and feature;
        'spherical': Normal-Gamma with one precision per component. These
        are mclust's VVV, EEE, VVI and VII; its other models (and its
        names) are not conjugate and are :class:`EMGaussianMixture`'s
        only: passing one raises a ValueError.
    tol : float, default=1e-3
        Convergence threshold on the per-sample ELBO (the bound divided by
        the total sample weight, as for EM): the fit stops when Aitken's
        extrapolation of the recent changes says less than ``tol`` is
        left to gain and no merge move gains ``tol / 10`` (see
        ``merge_components`` and the user guide). scikit-learn's
        BayesianGaussianMixture compares ``tol`` with a single change of
        the total bound instead (about ``n_samples`` times stricter, so it
        often runs to ``max_iter``); pass ``tol / n_samples`` and
        ``merge_components=False`` for a rule closer to its.
    relative_tol : float, default=0.0
        Also go on while a change of the per-sample bound exceeds
        ``relative_tol * max(1, |bound|)``: R mclust's condition for EM
        (there ``1e-5``), which keeps a run going across a plateau that
        Aitken's rule would stop on; see :class:`EMGaussianMixture`. 0
        turns it off.
    reg_covar : float, default=1e-6
        Variance of isotropic noise the data are smoothed by: the data term
        of the ELBO is ``E_q[log N(x | mu_k, Lambda_k^-1)] - (reg_covar / 2)
        E_q[tr Lambda_k]``, so the conjugate update gains
        ``N_k reg_covar I`` in ``W_k^-1`` and stays exact. It is in the
        data's units: ``fit`` warns where it exceeds a column's variance.
    max_iter : int, default=100
        Maximum number of iterations (global step then local step).
    n_init : int, default=1
        Number of initialisations; the best final ELBO is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data', \
'hc', 'hc_mclust', 'ward'}, default='kmeans'
        How the initial responsibilities are chosen; 'hc' is the model-based
        hierarchical agglomeration of :class:`EMGaussianMixture`, which does
        not depend on the units of the columns, 'hc_mclust' R mclust's own
        tree of the same criterion, and 'ward' its Ward's agglomeration (no
        sample weights).
    merge_components : bool, default=True
        Whether :meth:`fit` may merge two components when coordinate ascent
        stops or slows down (a merge move, Hughes & Sudderth 2013; tried
        where the stopping rule fires and, a logarithmic number of times,
        while the bound climbs slowly): q(Z) is replaced by
        the one that gives the pair's summed responsibilities to one of them
        and none to the other, and the move is kept only if the exact ELBO
        gains at least ``tol / 10`` per sample, so the bound never
        decreases. It empties redundant components, which coordinate ascent
        drains only over thousands of tiny steps; ``converged_`` then means
        that neither the steps nor a merge have more to gain. Set False for
        scikit-learn's algorithm. Not used with missing entries (the merged
        q(x_m | z) leaves the variational family) nor by :meth:`partial_fit`.
    weight_concentration_prior_type : {'dirichlet_process', \
'dirichlet_distribution'}, default='dirichlet_process'
        'dirichlet_process': truncated stick-breaking with the last stick
        fixed to 1 (Blei & Jordan 2006), so the weights sum to 1;
        'dirichlet_distribution': a symmetric Dirichlet.
    weight_concentration_prior : float, default=None
        The concentration (gamma_0 or alpha_0); ``1 / n_components`` if None.
    mean_precision_prior : float, default=None
        ``beta_0``, the prior precision of the means relative to Lambda;
        1 if None.
    mean_prior : array-like of shape (n_features,), default=None
        ``m_0``; the (weighted) mean of X if None.
    degrees_of_freedom_prior : float, default=None
        ``nu_0``; n_features if None. Must exceed n_features - 1 for 'full'
        and 'tied' (a proper Wishart) and 0 for 'diag' and 'spherical' (a
        proper Gamma).
    covariance_prior : float or array-like, default=None
        The prior scale: ``W_0^-1`` for 'full' and 'tied' (D, D); the Gamma
        rates' per-feature values (D,) for 'diag'; one value for
        'spherical'. If None, the (weighted) covariance of the data smoothed
        by reg_covar, i.e. the empirical covariance plus ``reg_covar I``;
        for 'full' and 'tied' at the first :meth:`partial_fit` of a stream,
        whose minibatch stands for rows not seen yet, that covariance is
        shrunk towards a multiple of the identity by Ledoit and Wolf's rule
        (a well-conditioned estimate from few rows in many features).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each fit starts from the previous q (``n_init`` ignored);
        on the same data it continues the previous run's stopping rule and
        merges, so fits of ``max_iter=1`` stop where one fit would.
    verbose : int, default=0
        1 prints each initialisation, 2 also per-iteration ELBO changes.
    verbose_interval : int, default=10
        Iterations between progress messages.
    learning_decay : float, default=0.7
        Exponent of the step size ``(learning_offset + t)^(-learning_decay)``
        of the t-th :meth:`partial_fit` call, as in scikit-learn's
        ``LatentDirichletAllocation``; values in (0.5, 1] make the steps
        satisfy the conditions under which online EM and stochastic VI
        converge. The first steps take the minibatch's share of the rows
        seen where that is larger (running averages). Not used by
        :meth:`fit`.
    learning_offset : float, default=10.0
        Down-weights the early :meth:`partial_fit` steps (must be >= 1).
    total_samples : float, default=1e6
        The number of rows (total sample weight) the stream of
        :meth:`partial_fit` minibatches stands for: each update scales the
        running statistics to it, which sets how strongly the data outweigh
        the priors (the stochastic VI scaling). At most 1e308, so that the
        posterior's counts still add up in float64. Not used by :meth:`fit`.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        ``E_q[pi_k]``; sums to 1 for both weight priors.
    weight_concentration_ : ndarray or tuple of two ndarrays
        Dirichlet: ``alpha_k``. Dirichlet process: ``(gamma_1, gamma_2)``
        of the Beta factors q(v_k); their K-th entries are unused.
    mean_precision_ : ndarray of shape (n_components,)
        ``beta_k``.
    means_ : ndarray of shape (n_components, n_features)
        ``m_k``, the means of q(mu_k).
    degrees_of_freedom_ : ndarray of shape (n_components,) or float
        ``nu_k`` (one shared value for 'tied').
    precisions_ : ndarray
        ``E_q[Lambda_k]`` in scikit-learn's layout for the covariance type.
    covariances_ : ndarray
        Inverses of ``precisions_``.
    precisions_cholesky_ : ndarray
        Cholesky factors of ``precisions_``.
    weight_concentration_prior_ : float
        The concentration used (default filled in).
    mean_precision_prior_ : float
        ``beta_0`` used.
    mean_prior_ : ndarray of shape (n_features,)
        ``m_0`` used.
    degrees_of_freedom_prior_ : float
        ``nu_0`` used.
    covariance_prior_ : float or ndarray
        The prior scale used, in the layout of the covariance type.
    converged_ : bool
        Whether the best run met ``tol`` within ``max_iter``.
    n_iter_ : int
        Iterations (global steps) of the best run.
    lower_bound_ : float
        The exact per-sample ELBO of the stored q, every constant included.
    lower_bounds_ : ndarray of shape (``n_iter_ + 1``,)
        The ELBO after each iteration (entry 0 after initialisation); it
        never decreases. After :meth:`partial_fit`: the estimates of the
        last ``min(n_iter_, 1000)`` steps.
    half_step_lower_bounds_ : ndarray of shape (``2 * n_iter_ + 1``,)
        The ELBO after every half-step: the initial local step, then each
        global and local step in turn.
    degenerate_ : str or None
        Why the fit is degenerate (a component holding at least one point
        whose covariance collapsed onto a subspace), or None; see
        :class:`DegenerateFitWarning`. Set by :meth:`fit`; a stream's
        :meth:`partial_fit` sets it at its steps 1, 2, 4, 8, ... and keeps
        it in between.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    EMGaussianMixture : Point estimates by EM on the same objective.

    Notes
    -----
    The q parameterisation (the user guide's "The model and the
    parameterisation of q"): full,
    ``q(Lambda_k) = Wishart(W_k, nu_k)`` with ``W_k = precisions_[k] /
    nu_k`` and ``q(mu_k | Lambda_k) = N(m_k, (beta_k Lambda_k)^-1)``; tied,
    one ``Wishart(W, nu)`` with ``nu = nu_0 + N`` whose KL is counted once;
    diag, ``q(lambda_kj) = Gamma(nu_k / 2, nu_k / (2 precisions_[k, j]))``;
    spherical, ``q(lambda_k) = Gamma(nu_k D / 2, nu_k D / (2
    precisions_[k]))``. For tied, diag and spherical these exact updates
    differ from scikit-learn's, which reuses Wishart-style terms there.

    ``score_samples`` is the log posterior predictive density, a mixture of
    Student-t (Bishop 2006, eq. 10.81): a proper density, so ``score``
    compares models across ``n_components``. ``predict_proba`` and
    ``predict`` use the same predictive terms, and ``sample`` draws from the
    predictive (Student-t) components, where scikit-learn draws from
    Gaussians at the posterior means.

    Examples
    --------
    >>> import numpy as np
    >>> from skvi import VariationalGaussianMixture
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(8, 1, (100, 2))])
    >>> vgm = VariationalGaussianMixture(
    ...     n_components=5, tol=1e-6, max_iter=500, random_state=0
    ... ).fit(X)
    >>> int(np.sum(vgm.weights_ > 0.05))  # surplus components are pruned
    2
    >>> bool(np.all(np.diff(vgm.half_step_lower_bounds_) > -1e-10))
    True
    """

    _parameter_constraints: dict = {
        **BaseGaussianMixture._parameter_constraints,
        # The conjugate types only; mclust's models are EMGaussianMixture's.
        "covariance_type": [StrOptions(set(CONJUGATE_TYPES))],
        "weight_concentration_prior_type": [
            StrOptions({"dirichlet_process", "dirichlet_distribution"})
        ],
        "weight_concentration_prior": [
            None,
            Interval(Real, 0.0, None, closed="neither"),
        ],
        "mean_precision_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "covariance_prior": [
            None,
            "array-like",
            Interval(Real, 0.0, None, closed="neither"),
        ],
        "total_samples": [Interval(Real, 0.0, LARGEST_TOTAL_SAMPLES, closed="right")],
        "merge_components": ["boolean"],
    }

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        relative_tol=0.0,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        merge_components=True,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        learning_decay=0.7,
        learning_offset=10.0,
        total_samples=1e6,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.relative_tol = relative_tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.merge_components = merge_components
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.total_samples = total_samples

    def _validate_params(self):
        # mclust's names get an error that says where they are served.
        if isinstance(self.covariance_type, str) and (
            self.covariance_type in MCLUST_MODELS
        ):
            raise ValueError(
                f"covariance_type={self.covariance_type!r} is one of mclust's "
                "models, which only EMGaussianMixture fits: "
                "VariationalGaussianMixture supports the conjugate types "
                "'full', 'tied', 'diag' and 'spherical' (mclust's VVV, EEE, "
                "VVI and VII)."
            )
        super()._validate_params()

    # Weights are repeat counts: their total sets the data's strength
    # against the priors.
    _weights_are_counts = True

    # ------------------------------------------------------------ priors
    def _prepare(self, data, unit, stream=False):
        n_features = data.n_features
        moments = None
        if self.mean_prior is None or self.covariance_prior is None:
            single = covariance_unit(self.covariance_type, 1, n_features)
            moments = data.one_component_statistics(single).moments

        self.weight_concentration_prior_ = float(
            1.0 / self.n_components
            if self.weight_concentration_prior is None
            else self.weight_concentration_prior
        )
        self.mean_precision_prior_ = float(
            1.0 if self.mean_precision_prior is None else self.mean_precision_prior
        )
        if self.mean_prior is None:
            self.mean_prior_ = moments.means[0].copy()
        else:
            self.mean_prior_ = check_array_param(
                self.mean_prior, (n_features,), "mean_prior"
            )
        dof = (
            float(n_features)
            if self.degrees_of_freedom_prior is None
            else float(self.degrees_of_freedom_prior)
        )
        if dof <= unit.min_dof_prior():
            raise ValueError(
                f"degrees_of_freedom_prior must be greater than "
                f"{unit.min_dof_prior():g} for covariance_type="
                f"'{self.covariance_type}' with {n_features} features (a proper "
                f"prior), got {dof:g}."
            )
        self.degrees_of_freedom_prior_ = dof
        if self.covariance_prior is None:
            self.covariance_prior_ = self._default_covariance_prior(unit, moments)
            if stream and np.ndim(self.covariance_prior_) == 2:
                # A minibatch's covariance over many features is a poor
                # estimate of the stream's (see _shrinkage).
                rows = data.filled()
                self.covariance_prior_ = shrunk_towards_identity(
                    self.covariance_prior_,
                    shrinkage_intensity(rows.X, rows.sample_weight),
                )
        else:
            self.covariance_prior_ = unit.check_prior(self.covariance_prior)
        # Validated and computed in float64; stored, like every fitted
        # parameter, in the dtype of X.
        context = self._fit_context(unit)
        self.mean_prior_ = self.mean_prior_.astype(data.dtype)
        self.covariance_prior_ = np.asarray(self.covariance_prior_, dtype=data.dtype)[
            ()
        ]
        return context

    def _default_covariance_prior(self, unit, moments):
        check_finite_scatter(moments)
        # The covariance of the data smoothed by reg_covar, with ddof=1 as
        # scikit-learn's np.cov for a total weight of at least 2 (weights are
        # repeat counts); below, a denominator of half the total continues it
        # (equal at 2) and keeps the prior within twice the weighted
        # covariance, however small the total.
        total = moments.total_weight
        denominator = total - 1.0 if total >= 2.0 else 0.5 * total
        prior = unit.prior_from_scatter(moments.scatter, denominator, self.reg_covar)
        try:
            unit.check_prior(prior)
        except ValueError as error:
            raise ValueError(
                "The default covariance_prior, the covariance of X, is singular "
                "(a constant feature, or fewer samples than features). Pass "
                "covariance_prior explicitly or use reg_covar > 0."
            ) from error
        return prior

    def _fit_context(self, unit):
        components = NormalPrecisionPrior(
            mean=np.asarray(self.mean_prior_, dtype=float),
            mean_precision=self.mean_precision_prior_,
            dof=self.degrees_of_freedom_prior_,
            covariance=np.asarray(self.covariance_prior_, dtype=float),
        )
        weights = WEIGHT_PRIORS[self.weight_concentration_prior_type](
            self.weight_concentration_prior_
        )
        return _Priors(components, weights)

    # ------------------------------------------------------------ fitting
    _prior_regularises_covariances = True

    def _effective_points(self, X, sample_weight, data=None):
        # beta_k = beta_0 + N_k, in the units of the sample weights.
        return np.asarray(self.mean_precision_, dtype=float) - float(
            self.mean_precision_prior_
        )

    def _allows_merges(self, unit):
        return self.merge_components and unit.n_components > 1

    def _update(self, moments, unit, context, previous, scale=1.0):
        """The global step: exact conjugate updates of q(pi), q(mu, Lambda).

        ``moments`` hold the statistics divided by ``scale``, a power of
        two. The prior's pseudo-counts are divided by it too, which leaves
        the means and covariances as they are (the update is a ratio of
        sums linear in both) and keeps every sum finite for any total weight
        (a stream's ``total_samples``); the counts are then multiplied back.
        """
        check_finite_scatter(moments)
        prior = context.components
        scaled = replace(
            prior,
            mean_precision=prior.mean_precision / scale,
            dof=prior.dof / scale,
            covariance=prior.covariance / scale,
        )
        nk = moments.nk
        beta = scaled.mean_precision + nk
        offsets = moments.offsets_from(prior.mean)
        means = prior.mean + offsets * (nk / beta)[:, np.newaxis]
        arguments = (
            scaled,
            nk,
            moments.scatter,
            offsets,
            scaled.mean_precision * nk / beta,
            self.reg_covar,
        )
        covariances, dof = update = unit.conjugate_update(*arguments)
        return VariationalParameters(
            weight_concentration=context.weights.update(nk * scale),
            mean_precision=beta * scale,
            means=means,
            degrees_of_freedom=dof * scale,
            covariances=covariances,
            precisions_cholesky=unit.conjugate_cholesky(
                *arguments, update, moments.whitened if scale == 1.0 else None
            ),
        )

    def _expectations(self, state, unit):
        weights = WEIGHT_PRIORS[self.weight_concentration_prior_type]
        factor = state.precisions_cholesky
        return ComponentExpectations(
            log_weights=weights.expected_log_weights(state.weight_concentration),
            means=state.means,
            precisions=unit.precision_from_cholesky(factor),
            precisions_cholesky=factor,
            log_det=unit.expected_log_det(factor, state.degrees_of_freedom),
            mean_variance=unit.n_features / state.mean_precision,
        )

    def _kl_terms(self, state, unit, context):
        prior = context.components
        precisions = unit.precision_from_cholesky(state.precisions_cholesky)
        prior_distance = unit.prior_distances(
            state.means, prior.mean, state.precisions_cholesky
        )
        kl_means = kl_normal_given_precision(
            state.mean_precision, prior.mean_precision, prior_distance, unit.n_features
        )
        kl_precisions = unit.kl_precision(
            precisions, state.precisions_cholesky, state.degrees_of_freedom, prior
        )
        kl_weights = context.weights.kl(state.weight_concentration)
        return kl_weights, float(np.sum(kl_means)) + kl_precisions

    def _stream_weight(self, batch_weight):
        # Stochastic VI: the running statistics stand for total_samples rows.
        return float(self.total_samples)

    def _has_state_for(self, unit):
        stored_sticks = isinstance(getattr(self, "weight_concentration_", None), tuple)
        wanted_sticks = self.weight_concentration_prior_type == "dirichlet_process"
        return super()._has_state_for(unit) and stored_sticks == wanted_sticks

    def _state_from_attributes(self, unit):
        concentration = self.weight_concentration_
        if isinstance(concentration, tuple):
            concentration = tuple(np.asarray(c, dtype=float) for c in concentration)
        else:
            concentration = np.asarray(concentration, dtype=float)
        return VariationalParameters(
            weight_concentration=concentration,
            mean_precision=np.asarray(self.mean_precision_, dtype=float),
            means=np.asarray(self.means_, dtype=float),
            degrees_of_freedom=_as_float(self.degrees_of_freedom_),
            covariances=np.asarray(self.covariances_, dtype=float),
            precisions_cholesky=np.asarray(self.precisions_cholesky_, dtype=float),
        )

    def _store_state(self, state, unit, dtype):
        check_counts_fit_dtype(state, dtype)
        prior = WEIGHT_PRIORS[self.weight_concentration_prior_type]
        concentration = state.weight_concentration
        if isinstance(concentration, tuple):
            self.weight_concentration_ = tuple(c.astype(dtype) for c in concentration)
        else:
            self.weight_concentration_ = concentration.astype(dtype)
        self.weights_ = prior.mean_weights(concentration).astype(dtype)
        self.mean_precision_ = state.mean_precision.astype(dtype)
        self.means_ = state.means.astype(dtype)
        self.degrees_of_freedom_ = np.asarray(state.degrees_of_freedom, dtype=dtype)[()]
        self.covariances_ = state.covariances.astype(dtype)
        self.precisions_cholesky_ = state.precisions_cholesky.astype(dtype)
        self.precisions_ = unit.precision_from_cholesky(
            state.precisions_cholesky
        ).astype(dtype)

    # ------------------------------------------------------------ scoring
    def _component_log_density(self, unit, dtype):
        state = self._state_from_attributes(unit)
        weights = np.asarray(self.weights_, dtype=float)
        log_weights = np.log(weights)[:, np.newaxis]
        factor = state.precisions_cholesky
        # The quadratic forms under E[Lambda]; each unit's predictive turns
        # them into Student-t log densities.
        plan = parameter_expansion(
            unit,
            state.means,
            unit.precision_from_cholesky(factor),
            factor,
            weights,
            dtype,
            scale=1.0,
            offsets=np.zeros(unit.n_components),
        )

        def log_density(X):
            predictive = unit.log_predictive(
                X,
                lambda rows: row_values(plan, rows, np.float64, marginal=True),
                state.means,
                factor,
                state.degrees_of_freedom,
                state.mean_precision,
            )
            predictive += log_weights.astype(X.dtype)
            return predictive

        return plan, log_density

    def _conditional_draw(self, rng, unit, component, conditional):
        # The posterior predictive (Student-t) of component k, given the
        # observed entries.
        state = self._state_from_attributes(unit)
        t_dof, scale = unit.predictive_dof_and_scale(
            state.degrees_of_freedom, state.mean_precision
        )
        t_dof = np.broadcast_to(t_dof, scale.shape)[component]
        return unit.conditional_predictive_draw(
            rng,
            conditional["means"],
            conditional["covariances"],
            conditional["quadratic"],
            conditional["n_observed"],
            t_dof,
            scale[component],
        )

    def _sample_component(self, rng, unit, component, n_samples):
        state = self._state_from_attributes(unit)
        return unit.sample_predictive(
            rng,
            state.means[component],
            state.covariances,
            component,
            state.degrees_of_freedom,
            state.mean_precision,
            n_samples,
        )


def check_finite_scatter(moments):
    """Raise a clear error where the scatter of the weighted data overflows.

    Sample weights are counts: summed over huge counts, a large spread of X
    exceeds the largest float64.
    """
    if not np.all(np.isfinite(moments.scatter)):
        raise ValueError(
            "The scatter of X about its means, summed over the sample "
            "weights (repeat counts), overflows the floating-point range of "
            "X's dtype (about 3e38 for float32, 1.8e308 for float64). "
            "Standardise X (e.g. with sklearn.preprocessing.StandardScaler), "
            "pass float32 data as float64, or use smaller weights."
        )


def check_counts_fit_dtype(state, dtype):
    """Raise unless the posterior's counts are representable in ``dtype``.

    Fitted attributes follow X's dtype: float32 holds counts (degrees of
    freedom, mean precisions, weight concentrations) up to about 3e38 only,
    which a stream's total_samples may exceed.
    """
    concentration = state.weight_concentration
    if isinstance(concentration, tuple):
        concentration = np.concatenate(concentration)
    largest = max(
        np.max(concentration),
        np.max(state.mean_precision),
        np.max(state.degrees_of_freedom),
    )
    if largest > np.finfo(dtype).max:
        raise ValueError(
            f"The posterior's counts reach {largest:.3g}, beyond the range of "
            f"{np.dtype(dtype).name}, the dtype of X that the fitted attributes "
            "follow. Pass X as float64, or use a total_samples (or sample "
            f"weights) summing to at most {np.finfo(dtype).max / 2:.1g}."
        )


def _as_float(value):
    array = np.asarray(value, dtype=float)
    return array if array.ndim else float(array)
