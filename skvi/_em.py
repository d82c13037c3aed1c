"""EMGaussianMixture: EM as coordinate ascent on the ELBO."""

import math
from dataclasses import dataclass, replace

import numpy as np

from ._base import BaseGaussianMixture
from ._dask import dask_counted_weights, is_dask_collection
from ._elbo import ComponentExpectations
from ._kernel import normalize_in_place, row_values
from ._stats import empty_components, log_rho_expansion
from ._validation import (
    check_array_param,
    check_weights_init,
    counted_weights,
    relative_weight_sums,
    rescaled_weights,
)

# The fitted decomposition Sigma_k = volume_k D_k A_k D_k^T of mclust's models.
DECOMPOSITION = ("volumes_", "shapes_", "orientations_")


@dataclass(frozen=True)
class GaussianParameters:
    """Point estimates theta of a Gaussian mixture (float64)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


@dataclass(frozen=True)
class _InitialParameters:
    """Validated copies of weights_init, means_init and precisions_init."""

    weights: np.ndarray | None
    means: np.ndarray | None
    precisions: np.ndarray | None


class EMGaussianMixture(BaseGaussianMixture):
    """Gaussian mixture fitted by EM, a drop-in for scikit-learn's.

    EM is coordinate ascent on the evidence lower bound
    ``ELBO(q, theta) = log p(X; theta) - KL(q(Z) || p(Z | X; theta))``: the
    E-step sets q(Z) to the exact posterior (the gap becomes 0), the M-step
    maximises over theta. Every constructor parameter, default and fitted
    attribute of :class:`sklearn.mixture.GaussianMixture` is here, with one
    documented difference: ``reg_covar`` is part of the objective (below).

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical', 'EII', 'VII', \
'EEI', 'VEI', 'EVI', 'VVI', 'EEE', 'VEE', 'EVE', 'VVE', 'EEV', 'VEV', 'EVV', \
'VVV'}, default='full'
        'full': each component has its own covariance matrix; 'tied': all
        share one; 'diag': each has its own diagonal covariance; 'spherical':
        each has its own single variance.

        The three-letter names are R mclust's fourteen models. Each writes
        ``Sigma_k = lambda_k D_k A_k D_k^T`` with a volume ``lambda_k``, a
        shape ``A_k`` (diagonal, determinant 1) and an orientation ``D_k``
        (orthogonal), and the letters say, in that order, whether each is
        Equal across components (E), Variable (V) or the Identity (I). VII,
        VVI, EEE and VVV are the same models as 'spherical', 'diag',
        'tied' and 'full' (and reach the same fits), but every mclust name
        stores full (K, D, D) ``covariances_``, ``precisions_`` and
        ``precisions_cholesky_``, and adds ``volumes_``, ``shapes_`` and
        ``orientations_``. Their M-steps are closed forms where they exist
        (EII, VII, EEI, EVI, VVI, EEE, EEV, EVV, VVV; Celeux & Govaert
        1995) and otherwise ascent iterations run to convergence from the
        previous parameters (VEI, VEV: Newton's method on the common
        shape with the volumes profiled out; VEE: that alternated with its
        orientation; EVE, VVE: plane searches and Newton's method on the
        common orientation with the shapes and volumes profiled out), so
        no step decreases the ELBO. The number of
        parameters in :meth:`bic` and :meth:`aic` is mclust's.
    tol : float, default=1e-3
        Convergence threshold on the per-sample ELBO, in the units of
        ``lower_bounds_``: the fit stops when Aitken's extrapolation of the
        recent changes, ``change / (1 - rate)`` with the rate read from the
        last six changes, says less than ``tol`` is left to gain (see the
        user guide). scikit-learn's GaussianMixture
        stops at the first change below ``tol``; on a slowly converging fit
        that can be far from the limit, so skvi may take more iterations at
        the same ``tol``, and never fewer.
    relative_tol : float, default=0.0
        A second condition on stopping, R mclust's: the fit also goes on
        while an iteration raises the per-sample bound by more than
        ``relative_tol * max(1, |bound|)`` (mclust stops EM when the total
        log-likelihood changes by at most ``1e-5 * (1 + |logL|)``, its
        ``emControl(tol)``). Aitken's rule alone can stop on a plateau
        (where EM creeps past a saddle point, its changes shrinking for a
        while, then growing again); this condition keeps a fit going
        there as mclust's does. 0 turns it off; :func:`select_model` uses
        ``1e-5`` (see :doc:`/mclust`). The bound's scale depends on the
        data's units, so, as in mclust, the same data in other units stop
        at other points.
    reg_covar : float, default=1e-6
        Variance of isotropic noise the data are smoothed by. The fit
        maximises the ELBO of the smoothed data, whose data term is
        ``E_q[log N(x | mu_k, Sigma_k)] - (reg_covar / 2) tr(Sigma_k^-1)``.
        Its exact M-step is scikit-learn's ``Sigma_k = S_k + reg_covar I``,
        and every EM step provably does not decrease it. With
        ``reg_covar=0`` this is the textbook likelihood. mclust's models
        take it the same way: their M-step maximises the model's
        likelihood of the scatters ``N_k (S_k + reg_covar I)`` under the
        model's constraint. It is in the data's units: ``fit`` warns where
        it exceeds a column's variance (rescale such data).
    max_iter : int, default=100
        Maximum number of EM iterations (M-step then E-step).
    n_init : int, default=1
        Number of initialisations; the best final ELBO is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data', \
'hc', 'hc_mclust', 'ward'}, default='kmeans'
        How the initial responsibilities are chosen. 'hc' cuts R mclust's
        model-based hierarchical agglomeration (unconstrained covariances,
        on scaled SVD coordinates) at ``n_components`` clusters: unlike
        'kmeans', which runs on the raw columns as scikit-learn's does (and
        stays the default, so that the same ``random_state`` gives
        scikit-learn's start), it does not depend on the units of the
        columns. Its tree is built on at most 2,000 rows (a random sample
        of larger data; the other rows join the nearest cluster), so with
        ``n_init > 1`` the starts differ only on larger data. 'ward' cuts
        Ward's agglomeration (equal spherical covariances, mclust's
        ``hcEII``) on the same coordinates and rows, without sample
        weights: :func:`select_model` tries it beside its first start
        (``second_start``). 'hc_mclust' cuts the tree R mclust 6.0's
        ``hc()`` builds, which departs from the criterion (later merges
        priced from copies of a stored factor's first row, repeated rows
        not merged first, mclust's choice among tied merges; see
        :mod:`skvi._agglomeration`): :func:`select_model` uses it by
        default.
    weights_init : array-like of shape (n_components,), default=None
        Initial weights; computed from ``init_params`` if None.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means; computed from ``init_params`` if None.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped as
        ``precisions_``; computed from ``init_params`` if None. For
        mclust's models, any (K, D, D) positive definite matrices: the fit
        starts from the member of the model closest to their inverses (the
        model's maximum likelihood fit to them, with the initial weights),
        which is those inverses when they already satisfy the model.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each fit starts from the previous solution (and
        ``n_init`` is ignored); on the same data it continues the previous
        run's stopping rule, so fits of ``max_iter=1`` stop where one fit
        would.
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

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Mixture weights.
    means_ : ndarray of shape (n_components, n_features)
        Component means.
    covariances_ : ndarray
        Component covariances: (K, D, D) full, (D, D) tied, (K, D) diag,
        (K,) spherical.
    precisions_ : ndarray
        Inverses of ``covariances_``, same shape.
    precisions_cholesky_ : ndarray
        Cholesky factors of ``precisions_`` (upper triangular for full and
        tied; square roots for diag and spherical).
    volumes_ : ndarray of shape (n_components,)
        mclust's models only: ``lambda_k = det(Sigma_k)^(1 / D)``.
    shapes_ : ndarray of shape (n_components, n_features)
        mclust's models only: the diagonal of ``A_k`` (product 1), in the
        order of the columns of ``orientations_[k]``: coordinate order for
        an Identity orientation (``*II``, ``**I``), decreasing otherwise
        (for a common orientation with varying shapes, EVE and VVE, by
        their geometric mean over components).
    orientations_ : ndarray of shape (n_components, n_features, n_features)
        mclust's models only: ``D_k``, whose columns are the principal axes
        (the identity matrix for ``**I`` models; equal matrices for a
        common orientation), so ``covariances_[k] = volumes_[k] *
        orientations_[k] @ diag(shapes_[k]) @ orientations_[k].T``.
    converged_ : bool
        Whether the best run met ``tol`` within ``max_iter``. False too for
        a fit of EVE or VVE that ended where a component collapsed (its
        ``degenerate_`` says so), as R's mclust ends at a singular
        covariance.
    n_iter_ : int
        EM iterations (M-steps) of the best run.
    lower_bound_ : float
        Per-sample ELBO of the stored parameters with their optimal q(Z):
        the mean smoothed log-likelihood of the training data.
    lower_bounds_ : ndarray of shape (``n_iter_ + 1``,)
        ``lower_bounds_[i]`` is the ELBO after iteration i (entry 0 after
        initialisation); it never decreases, and ``lower_bounds_[-1] ==
        lower_bound_``. After :meth:`partial_fit`: the estimates of the
        last ``min(n_iter_, 1000)`` steps.
    half_step_lower_bounds_ : ndarray of shape (``2 * n_iter_ + 1``,)
        The ELBO after every half-step: after the initial E-step, then after
        each M-step and each E-step in turn.
    kl_gaps_ : ndarray of shape (``n_iter_``,)
        After each M-step, ``log p(X; theta_new) - ELBO(q_old, theta_new) =
        KL(q_old || p(Z | X; theta_new)) >= 0``, per sample; goes to 0 as the
        fit converges.
    degenerate_ : str or None
        Why the fit is degenerate (a component collapsed onto a subspace,
        holding too few points for its covariance, or, with missing
        entries, observing a column in too few rows), or None; see
        :class:`DegenerateFitWarning`. Set by :meth:`fit`; a stream's
        :meth:`partial_fit` sets it at its steps 1, 2, 4, 8, ... by the
        ratio rules alone (a stream has no sample size to count points
        in) and keeps it in between.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    VariationalGaussianMixture : The same model with priors, fitted by
        mean-field variational inference.

    Notes
    -----
    Differences from scikit-learn, by design: ``lower_bound_`` is the
    bound of the *stored* parameters (scikit-learn reports the one before
    the last M-step); ``lower_bounds_`` includes the initial value;
    ``fit``, ``score`` and ``bic``/``aic`` accept ``sample_weight``.

    Examples
    --------
    >>> import numpy as np
    >>> from skvi import EMGaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = EMGaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.sort(gm.means_[:, 0])
    array([ 1., 10.])
    >>> bool(np.all(np.diff(gm.lower_bounds_) >= -1e-12))
    True
    """

    _parameter_constraints: dict = {
        **BaseGaussianMixture._parameter_constraints,
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        relative_tol=0.0,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        learning_decay=0.7,
        learning_offset=10.0,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.relative_tol = relative_tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    # ------------------------------------------------------------ fitting
    def _prepare(self, data, unit, stream=False):
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = check_weights_init(self.weights_init, self.n_components)
        if self.means_init is not None:
            means = check_array_param(
                self.means_init, (self.n_components, data.n_features), "means_init"
            )
        if self.precisions_init is not None:
            precisions = check_array_param(
                self.precisions_init, unit.precision_shape, "precisions_init"
            )
            precisions = unit.check_precisions(precisions, "precisions_init")
        return _InitialParameters(weights, means, precisions)

    def _initial_state(self, data, unit, context, rng):
        given = context
        if given.weights is None or given.means is None or given.precisions is None:
            state = super()._initial_state(data, unit, context, rng)
        else:
            state = None
        if given.weights is not None:
            state = _replace(state, weights=given.weights)
        if given.means is not None:
            state = _replace(state, means=given.means)
        if given.precisions is not None:
            factor = unit.cholesky_from_precision(given.precisions)
            covariances = unit.covariance_from_cholesky(factor)
            # mclust's models take any positive definite matrices and start
            # from the member of the model closest to them.
            constrained = unit.constrain(covariances, state.weights)
            if constrained is not None:
                covariances = constrained
                factor = unit.cholesky_from_covariance(covariances, self.reg_covar)
            state = _replace(state, covariances=covariances, precisions_cholesky=factor)
        return state

    def _update(self, moments, unit, context, previous, scale=1.0):
        """The M-step: the exact maximiser of the smoothed ELBO.

        It reads the statistics only relative to each other: their
        ``scale`` changes nothing.
        """
        empty = empty_components(moments)
        nk = moments.nk
        means = moments.means
        if previous is not None:
            # An empty component's terms vanish; keeping it is optimal.
            means = np.where(empty[:, np.newaxis], previous.means, means)
        covariances = unit.maximize(
            nk,
            moments.scatter,
            self.reg_covar,
            empty,
            None if previous is None else previous.covariances,
        )
        factors = None
        if moments.whitened is not None:
            # Ill-conditioned precisions: formed in the E-step's whitened
            # frames, where reg_covar is not lost to entries far larger.
            factors = unit.maximize_whitened(
                nk,
                moments.whitened,
                self.reg_covar,
                empty,
                None if previous is None else previous.precisions_cholesky,
            )
        if factors is not None:
            # With reg_covar=0 the whitened frames give a factor even for a
            # covariance singular to rounding (rows on a line): a collapse.
            unit.check_not_singular(covariances, factors, self.reg_covar)
        else:
            factors = unit.cholesky_from_covariance(covariances, self.reg_covar)
        return GaussianParameters(
            weights=nk / nk.sum(),
            means=means,
            covariances=covariances,
            precisions_cholesky=factors,
        )

    def _expectations(self, state, unit):
        with np.errstate(divide="ignore"):
            log_weights = np.log(state.weights)
        factor = state.precisions_cholesky
        return ComponentExpectations(
            log_weights=log_weights,
            means=state.means,
            precisions=unit.precision_from_cholesky(factor),
            precisions_cholesky=factor,
            log_det=unit.log_det_cholesky(factor),
            mean_variance=np.zeros(unit.n_components),
        )

    def _kl_terms(self, state, unit, context):
        # Point estimates: no KL term for theta.
        return 0.0, 0.0

    def _state_from_attributes(self, unit):
        return GaussianParameters(
            weights=np.asarray(self.weights_, dtype=float),
            means=np.asarray(self.means_, dtype=float),
            covariances=np.asarray(self.covariances_, dtype=float),
            precisions_cholesky=np.asarray(self.precisions_cholesky_, dtype=float),
        )

    def _store_state(self, state, unit, dtype):
        self.weights_ = state.weights.astype(dtype)
        self.means_ = state.means.astype(dtype)
        self.covariances_ = state.covariances.astype(dtype)
        self.precisions_cholesky_ = state.precisions_cholesky.astype(dtype)
        self.precisions_ = unit.precision_from_cholesky(
            state.precisions_cholesky
        ).astype(dtype)
        decomposition = unit.decompose(state.covariances)
        for name, value in zip(DECOMPOSITION, decomposition or (), strict=False):
            setattr(self, name, value.astype(dtype))
        if decomposition is None:
            for name in DECOMPOSITION:
                self.__dict__.pop(name, None)

    def _store_run(self, run):
        super()._store_run(run)
        half = self.half_step_lower_bounds_
        self.kl_gaps_ = half[2::2] - half[1::2]

    def _effective_points(self, X, sample_weight, data=None):
        size = getattr(data, "effective_sample_size", None)
        if size is None:
            size = _effective_sample_size(X, sample_weight)
        return np.asarray(self.weights_, dtype=float) * size

    def _stream_points(self):
        # A stream has no sample size (its rows may repeat, pass after
        # pass): only the ratio rules of skvi._degeneracy apply to it.
        return np.full(len(self.weights_), np.inf)

    def _log_likelihood(self, optimal_stats):
        return optimal_stats.log_normalizer / optimal_stats.total_weight

    # ------------------------------------------------------------ scoring
    def _component_log_density(self, unit, dtype):
        expectations = self._expectations(self._state_from_attributes(unit), unit)
        # The plain likelihood: no reg_covar smoothing.
        plan = log_rho_expansion(unit, expectations, 0.0, dtype)
        return plan, lambda rows: row_values(plan, rows)

    def _conditional_draw(self, rng, unit, component, conditional):
        # Gaussian: the conditional of component k given the observed entries.
        lower = np.linalg.cholesky(conditional["covariances"])
        means = conditional["means"]
        return means + np.einsum("nij,nj->ni", lower, rng.standard_normal(means.shape))

    def _sample_component(self, rng, unit, component, n_samples):
        draws = unit.sample_component(
            rng, np.asarray(self.covariances_, dtype=float), component, n_samples
        )
        return self.means_[component] + draws

    # ------------------------------------------------- model selection
    def _n_parameters(self):
        n_features = self.means_.shape[1]
        unit = self._fitted_unit(n_features)
        mean_params = unit.n_components * n_features
        return unit.n_parameters() + mean_params + unit.n_components - 1

    def _criteria(self, X, sample_weight=None, score_entropy=None):
        """``(bic, aic, icl)`` of X from one pass over its rows.

        The numbers :meth:`bic` and :meth:`aic` give, and ICL: BIC plus
        twice the entropy of the responsibilities. :func:`select_model`'s
        table reads them for every fit; on a few hundred rows separate
        passes (score twice, predict_proba) cost as much as a short fit.
        ``score_entropy``, the mean log-likelihood of X and the weighted
        entropy of its responsibilities where the caller computed them
        (:mod:`skvi._multifit`, for all fits at once), skips that pass.
        """
        if score_entropy is not None:
            score, entropy = score_entropy
            n = _total_weight(X, sample_weight)
            return self._from_score(score, n, float(entropy))
        if is_dask_collection(X):
            score, n = self._score_and_size(X, sample_weight)
            resp = self.predict_proba(X)
            entropy = weighted_entropy(resp, dask_counted_weights(X, sample_weight))
            return self._from_score(score, n, float(entropy))
        columns = self._per_row(
            X, _density_and_responsibilities, len(self.weights_) + 1
        )
        log_density, resp = columns[:, 0], columns[:, 1:]
        # As score does it: rows of weight 0, or with no observed value, are
        # not there (they are not in the fit either).
        counted = counted_weights(X, sample_weight)
        n = float(counted.sum())
        weights = rescaled_weights(counted)
        kept = weights > 0
        score = float(np.dot(weights[kept], log_density[kept]) / weights[kept].sum())
        return self._from_score(score, n, weighted_entropy(resp, counted))

    def _from_score(self, score, n, entropy):
        """``(bic, aic, icl)`` from the mean log-likelihood of n samples."""
        fit = -2 * score * n
        bic = fit + self._n_parameters() * math.log(n)
        aic = fit + 2 * self._n_parameters()
        return bic, aic, bic + 2.0 * entropy

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on X (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        sample_weight : array-like of shape (n_samples,), default=None
            Repeat counts; the sample size is their sum.

        Returns
        -------
        bic : float

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> round(em.bic(X), 1)
        2322.2
        """
        score, n = self._score_and_size(X, sample_weight)
        return -2 * score * n + self._n_parameters() * math.log(n)

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on X (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        sample_weight : array-like of shape (n_samples,), default=None
            Repeat counts; the sample size is their sum.

        Returns
        -------
        aic : float

        Examples
        --------
        >>> from skvi import EMGaussianMixture
        >>> from skvi.datasets import load_old_faithful
        >>> X = load_old_faithful().data
        >>> em = EMGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> round(em.aic(X), 1)
        2282.5
        """
        score, n = self._score_and_size(X, sample_weight)
        return -2 * score * n + 2 * self._n_parameters()


def _density_and_responsibilities(log_joint):
    """Rows of ``[log density, responsibilities]`` from (K, m) log joints."""
    log_density = normalize_in_place(log_joint)
    return np.concatenate([log_density[np.newaxis], log_joint]).T


def weighted_entropy(resp, sample_weight=None):
    """``-sum_n w_n sum_k r_nk log r_nk`` of responsibilities (n, K)."""
    weights = (
        np.ones(resp.shape[0])
        if sample_weight is None
        else np.asarray(sample_weight, dtype=float)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(resp > 0, resp * np.log(resp), 0.0)
    return -float(weights @ terms.sum(axis=1))


def _total_weight(X, sample_weight):
    """The sample size of an information criterion: the total weight.

    Of the rows with an observed value: a fit leaves the others out.
    """
    if is_dask_collection(X):
        return float(dask_counted_weights(X, sample_weight).sum().compute())
    return float(counted_weights(X, sample_weight).sum())


def _effective_sample_size(X, sample_weight):
    """Kish's effective sample size ``sum(w)**2 / sum(w**2)``.

    EM reads weights only relative to each other, and so does this: it is
    the number of rows for equal weights of any scale, and less where a few
    rows carry most of the weight. Rows with no observed value are not
    counted: the fit leaves them out.
    """
    if is_dask_collection(X):
        import dask

        # One pass over the rows (which of them have an observed value), of
        # the weights over their largest (squares of huge weights overflow;
        # Kish's ratio does not change).
        relative = dask_counted_weights(X, sample_weight)
        if sample_weight is not None:
            relative = relative / float(relative.max().compute())
        total, squares = dask.compute(relative.sum(), (relative**2).sum())
    else:
        relative = counted_weights(X, sample_weight)
        if sample_weight is None:
            # The rows with a value; and no BLAS call outside a fit's
            # one-thread limit: OpenBLAS's threads then spin on for tens of
            # milliseconds, and the next fit's chunk threads met them (its
            # first passes took 27 ms where 15 ms is theirs, two threads).
            return float(np.count_nonzero(relative))
        total, squares = relative_weight_sums(relative)
    return float(total**2 / squares)


def _replace(state, **changes):
    if state is None:
        return GaussianParameters(
            weights=changes.get("weights"),
            means=changes.get("means"),
            covariances=changes.get("covariances"),
            precisions_cholesky=changes.get("precisions_cholesky"),
        )
    return replace(state, **changes)
