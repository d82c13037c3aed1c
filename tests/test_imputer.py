"""GaussianMixtureImputer: conditional expectations and draws from the mixture."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvi import EMGaussianMixture, GaussianMixtureImputer, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES


def correlated(seed, n_samples=2000):
    rng = np.random.RandomState(seed)
    covariance = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    return rng.multivariate_normal([1.0, -2.0, 0.5], covariance, size=n_samples)


def hide(X, fraction, seed):
    X = X.copy()
    X[np.random.RandomState(seed).uniform(size=X.shape) < fraction] = np.nan
    return X


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fills_every_missing_entry_and_keeps_the_others(estimator, covariance_type):
    X = hide(correlated(0, 500), 0.25, 1)
    before = X.copy()
    imputer = GaussianMixtureImputer(
        estimator(n_components=2, covariance_type=covariance_type, random_state=0)
    ).fit(X)
    for filled in (
        imputer.transform(X),
        imputer.set_params(sample_posterior=True, random_state=0).fit(X).transform(X),
    ):
        assert not np.isnan(filled).any()
        observed = ~np.isnan(X)
        assert_allclose(filled[observed], X[observed])
    assert_allclose(X, before, equal_nan=True)


def test_one_gaussian_fills_with_the_regression_of_the_missing_on_the_observed():
    X_full = correlated(2)
    X = X_full.copy()
    X[::3, 1] = np.nan
    imputer = GaussianMixtureImputer(EMGaussianMixture(1, reg_covar=0.0)).fit(X)
    mean = imputer.estimator_.means_[0]
    sigma = imputer.estimator_.covariances_[0]
    observed = [0, 2]
    gain = sigma[1, observed] @ np.linalg.inv(sigma[np.ix_(observed, observed)])
    expected = mean[1] + (X[::3][:, observed] - mean[observed]) @ gain
    assert_allclose(imputer.transform(X)[::3, 1], expected, rtol=1e-10)


def test_draws_follow_the_conditional_distribution():
    X = correlated(3, 400)
    X[0] = [0.5, np.nan, 1.0]
    imputer = GaussianMixtureImputer(
        EMGaussianMixture(1, reg_covar=0.0), sample_posterior=True, random_state=0
    ).fit(X)
    rows = np.repeat(X[:1], 20_000, axis=0)
    draws = imputer.transform(rows)[:, 1]
    mean = imputer.estimator_.means_[0]
    sigma = imputer.estimator_.covariances_[0]
    observed = [0, 2]
    inverse = np.linalg.inv(sigma[np.ix_(observed, observed)])
    gain = sigma[1, observed] @ inverse
    expected_mean = mean[1] + gain @ (X[0, observed] - mean[observed])
    expected_variance = sigma[1, 1] - gain @ sigma[observed, 1]
    assert draws.mean() == pytest.approx(expected_mean, abs=0.02)
    assert draws.var() == pytest.approx(expected_variance, rel=0.05)


def test_variational_draws_have_the_heavier_student_t_tails():
    # Few rows: the predictive has few degrees of freedom, so its
    # conditional draws vary more than the plug-in Gaussian's.
    X = correlated(4, 30)
    X[0] = [1.0, np.nan, 0.5]
    model = VariationalGaussianMixture(n_components=1, random_state=0)
    imputer = GaussianMixtureImputer(model, sample_posterior=True, random_state=0)
    draws = imputer.fit(X).transform(np.repeat(X[:1], 40_000, axis=0))[:, 1]
    fitted = imputer.estimator_
    sigma = np.asarray(fitted.covariances_[0])
    observed = [0, 2]
    gain = sigma[1, observed] @ np.linalg.inv(sigma[np.ix_(observed, observed)])
    plug_in_variance = sigma[1, 1] - gain @ sigma[observed, 1]
    assert draws.var() > 1.1 * plug_in_variance


def test_a_pipeline_with_a_classifier_under_grid_search():
    X, y = load_wine(return_X_y=True)
    X = hide(X, 0.2, 5)
    pipeline = make_pipeline(
        StandardScaler(),
        GaussianMixtureImputer(EMGaussianMixture(random_state=0, reg_covar=1e-3)),
        LogisticRegression(max_iter=2000),
    )
    grid = GridSearchCV(
        pipeline,
        {"gaussianmixtureimputer__estimator__n_components": [1, 3]},
        cv=3,
    ).fit(X, y)
    assert grid.best_score_ > 0.9
    assert grid.predict(X).shape == y.shape


def test_feature_names_pass_through():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(hide(correlated(6, 200), 0.1, 7), columns=["a", "b", "c"])
    imputer = GaussianMixtureImputer(EMGaussianMixture(2, random_state=0)).fit(frame)
    assert list(imputer.get_feature_names_out()) == ["a", "b", "c"]


def test_the_default_mixture_is_em():
    imputer = GaussianMixtureImputer().fit(hide(correlated(8, 100), 0.1, 9))
    assert isinstance(imputer.estimator_, EMGaussianMixture)
