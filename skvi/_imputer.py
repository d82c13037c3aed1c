"""GaussianMixtureImputer: fill missing entries from a fitted mixture."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import _unchanged_on_error
from ._em import EMGaussianMixture


class GaussianMixtureImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Fill missing entries (NaN) from a Gaussian mixture fitted to the data.

    ``fit`` fits a skvi mixture on the rows with their missing entries, which
    it treats exactly as latent variables. ``transform`` fills each missing
    entry with its conditional expectation ``E[x_m | x_o]`` under the mixture
    (each component's conditional mean, weighted by the component's
    posterior probability given the observed entries), or, with
    ``sample_posterior=True``, with one draw from ``p(x_m | x_o)``: a
    component from those probabilities, then its conditional distribution.
    Draws give multiple imputation, as scikit-learn's ``IterativeImputer``
    does with the same option. For a variational mixture ``p`` is its
    posterior predictive (Student-t components).

    Parameters
    ----------
    estimator : EMGaussianMixture or VariationalGaussianMixture, default=None
        The mixture to fit, cloned; None means ``EMGaussianMixture()``.
        Tune it through nested parameters, e.g. ``estimator__n_components``,
        as in any scikit-learn meta-estimator. They work with the default
        too: ``get_params(deep=True)`` lists the parameters of
        ``EMGaussianMixture()``, and setting one while ``estimator`` is None
        makes ``estimator`` a new ``EMGaussianMixture()`` with that value, so
        ``GridSearchCV`` can tune the default mixture. (The default stays
        None rather than an instance, which every imputer would share.)
    sample_posterior : bool, default=False
        Fill with one draw from ``p(x_m | x_o)`` instead of its mean.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws of ``sample_posterior=True`` (the mixture has its
        own ``random_state``).

    Attributes
    ----------
    estimator_ : EMGaussianMixture or VariationalGaussianMixture
        The fitted mixture.
    random_state_ : numpy.random.RandomState
        The generator of the draws, created by ``fit`` from ``random_state``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.impute.IterativeImputer : Imputation by chained regressions.

    Examples
    --------
    >>> import numpy as np
    >>> from skvi import EMGaussianMixture, GaussianMixtureImputer
    >>> rng = np.random.RandomState(0)
    >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=500)
    >>> X_missing = X.copy()
    >>> X_missing[::5, 1] = np.nan
    >>> imputer = GaussianMixtureImputer(EMGaussianMixture(1)).fit(X_missing)
    >>> filled = imputer.transform(X_missing)
    >>> bool(np.isnan(filled).any())
    False
    >>> error = np.abs(filled[::5, 1] - X[::5, 1]).mean()
    >>> bool(error < 0.5 * np.abs(X[::5, 1]).mean())   # beats the mean (0)
    True
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba", "_impute"]), None],
        "sample_posterior": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator=None, *, sample_posterior=False, random_state=None):
        self.estimator = estimator
        self.sample_posterior = sample_posterior
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def get_params(self, deep=True):
        """Get the parameters of this imputer and, if deep, of its mixture.

        Parameters
        ----------
        deep : bool, default=True
            Also return the mixture's parameters, as ``estimator__<name>``;
            with ``estimator=None`` those of ``EMGaussianMixture()``.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.

        Examples
        --------
        >>> from skvi import GaussianMixtureImputer
        >>> GaussianMixtureImputer().get_params()["estimator__n_components"]
        1
        """
        params = super().get_params(deep=deep)
        if deep and self.estimator is None:
            default = EMGaussianMixture().get_params()
            params.update(
                (f"estimator__{key}", value) for key, value in default.items()
            )
        return params

    def set_params(self, **params):
        """Set the parameters of this imputer and of its mixture.

        Nested parameters ``estimator__<name>`` set the mixture's. With
        ``estimator=None`` (the default) they are set on a new
        ``EMGaussianMixture()``, which then becomes ``estimator``; a name it
        does not have raises before the imputer changes.

        Parameters
        ----------
        **params : dict
            Parameter names mapped to their new values.

        Returns
        -------
        self : object
            The imputer.

        Examples
        --------
        >>> from skvi import GaussianMixtureImputer
        >>> GaussianMixtureImputer().set_params(estimator__n_components=2)
        GaussianMixtureImputer(estimator=EMGaussianMixture(n_components=2))
        """
        nested = {
            key.partition("__")[2]: value
            for key, value in params.items()
            if key.startswith("estimator__")
        }
        if nested and params.get("estimator", self.estimator) is None:
            # Set them on the new default first, so that a wrong name
            # raises while the imputer is still untouched.
            estimator = EMGaussianMixture().set_params(**nested)
            params = {
                key: value
                for key, value in params.items()
                if not key.startswith("estimator__")
            }
            params["estimator"] = estimator
        return super().set_params(**params)

    @_unchanged_on_error
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture to X, missing entries and all.

        A fit that raises leaves the imputer as it was: still fitted to the
        earlier data, with its mixture, or still unfitted.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with NaN for missing entries.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, read as repeat counts. Rows of weight 0
            take no part in the fit (they are still filled by ``transform``).

        Returns
        -------
        self : object
            The fitted imputer.

        Examples
        --------
        >>> import numpy as np
        >>> from skvi import GaussianMixtureImputer
        >>> X = np.array([[1.0, 2.0], [2.0, 4.1], [3.0, np.nan], [4.0, 7.9]])
        >>> imputer = GaussianMixtureImputer().fit(X)
        >>> imputer.estimator_.n_components, imputer.n_features_in_
        (1, 2)
        """
        self._validate_params()
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan"
        )
        if self.estimator is None:
            estimator = EMGaussianMixture()
        else:
            estimator = clone(self.estimator)
        self.estimator_ = estimator.fit(X, sample_weight=sample_weight)
        self.random_state_ = check_random_state(self.random_state)
        return self

    def transform(self, X):
        """Fill the missing entries of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with NaN for missing entries; other entries are kept.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
            A new array without NaN, in the dtype of X (float32 or float64).

        Examples
        --------
        >>> import numpy as np
        >>> from skvi import GaussianMixtureImputer
        >>> X = np.array([[1.0, 2.0], [2.0, 4.1], [3.0, np.nan], [4.0, 7.9]])
        >>> filled = GaussianMixtureImputer().fit(X).transform(X)
        >>> filled[2].round(2)  # E[x_2 | x_1 = 3] under the fitted Gaussian
        array([3.  , 5.97])
        """
        check_is_fitted(self)
        X = validate_data(
            self,
            X,
            reset=False,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
        )
        draws = self.random_state_ if self.sample_posterior else None
        return self.estimator_._impute(X, draws)
