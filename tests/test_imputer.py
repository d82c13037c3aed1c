"""GaussianMixtureImputer: conditional expectations and draws from the mixture."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.exceptions import NotFittedError
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


def two_groups(seed, n_samples):
    """Rows of two well-separated correlated groups, and their group."""
    y = np.random.RandomState(seed).randint(2, size=n_samples)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, -4.0]])
    return centers[y] + correlated(seed + 1, n_samples), y


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
    # conditional draws vary more than the plug-in Gaussian's, by exactly
    # what the conditional of the Student-t predictive says.
    X = correlated(4, 30)
    X[0] = [1.0, np.nan, 0.5]
    model = VariationalGaussianMixture(n_components=1, random_state=0)
    imputer = GaussianMixtureImputer(model, sample_posterior=True, random_state=0)
    draws = imputer.fit(X).transform(np.repeat(X[:1], 40_000, axis=0))[:, 1]
    fitted = imputer.estimator_
    sigma = np.asarray(fitted.covariances_[0])
    observed, missing = [0, 2], 1

    def conditional_variance(scale):
        gain = scale[missing, observed] @ np.linalg.inv(
            scale[np.ix_(observed, observed)]
        )
        return scale[missing, missing] - gain @ scale[observed, missing]

    # Bishop (2006) eq. 10.81: Student-t with nu + 1 - d degrees of freedom
    # and scale (1 + beta) nu / ((nu + 1 - d) beta) times covariances_.
    nu, beta = fitted.degrees_of_freedom_[0], fitted.mean_precision_[0]
    dof = nu + 1 - 3
    scale = (1 + beta) * nu / (dof * beta) * sigma
    # Its conditional given two observed entries: dof + 2 degrees of
    # freedom, scale inflated by (dof + delta) / (dof + 2).
    diff = X[0, observed] - fitted.means_[0, observed]
    delta = diff @ np.linalg.solve(scale[np.ix_(observed, observed)], diff)
    spread = conditional_variance(scale) * (dof + delta) / (dof + 2)
    expected = spread * (dof + 2) / (dof + 2 - 2)
    assert expected > 1.05 * conditional_variance(sigma)
    # 40,000 draws: one standard error of the sample variance is about
    # 0.8%, so 4% is five of them.
    assert draws.var() == pytest.approx(expected, rel=0.04)


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


def test_nested_parameters_reach_the_default_mixture():
    imputer = GaussianMixtureImputer()
    params = imputer.get_params(deep=True)
    assert params["estimator"] is None
    assert params["estimator__n_components"] == 1
    assert params["estimator__covariance_type"] == "full"

    assert imputer.set_params(estimator__n_components=2) is imputer
    assert isinstance(imputer.estimator, EMGaussianMixture)
    assert imputer.get_params()["estimator__n_components"] == 2
    imputer.set_params(estimator__covariance_type="diag")
    assert imputer.estimator.get_params()["n_components"] == 2
    assert imputer.estimator.covariance_type == "diag"
    fitted = imputer.fit(hide(correlated(10, 200), 0.1, 11)).estimator_
    assert (fitted.n_components, fitted.covariance_type) == (2, "diag")
    # Nothing is shared with other imputers built with the default.
    assert GaussianMixtureImputer().estimator is None

    # With estimator=None in the same call, the nested values apply to the
    # new default; a wrong nested name raises before anything changes.
    imputer.set_params(estimator=None, estimator__n_components=3)
    assert imputer.estimator.get_params() == EMGaussianMixture(3).get_params()
    untouched = GaussianMixtureImputer(sample_posterior=True)
    with pytest.raises(ValueError, match="Invalid parameter 'n_component'"):
        untouched.set_params(estimator__n_component=2)
    assert untouched.estimator is None


def test_clone_keeps_the_parameters_and_shares_no_mixture():
    X = hide(correlated(12, 200), 0.1, 13)
    imputer = GaussianMixtureImputer(random_state=0).set_params(
        estimator__n_components=2, estimator__random_state=0
    )
    imputer.fit(X)
    copy = clone(imputer)
    assert not hasattr(copy, "estimator_")
    assert copy.estimator is not imputer.estimator
    assert copy.get_params(deep=True).keys() == imputer.get_params(deep=True).keys()
    for name, value in imputer.get_params(deep=True).items():
        if name != "estimator":
            assert copy.get_params(deep=True)[name] == value
    copy.set_params(estimator__n_components=3)
    assert imputer.estimator.n_components == 2
    assert_array_equal(
        copy.set_params(estimator__n_components=2).fit(X).transform(X),
        imputer.transform(X),
    )
    assert clone(GaussianMixtureImputer()).estimator is None


def test_grid_search_tunes_the_default_mixture_in_a_pipeline():
    X, y = two_groups(14, 240)
    X = hide(X, 0.2, 15)
    grid = {
        "gaussianmixtureimputer__estimator__n_components": [1, 2],
        "gaussianmixtureimputer__estimator__covariance_type": ["full", "diag"],
        "gaussianmixtureimputer__estimator__random_state": [0],
    }
    search = GridSearchCV(
        make_pipeline(GaussianMixtureImputer(), LogisticRegression()), grid, cv=3
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_score_ > 0.9
    best = search.best_params_
    fitted = search.best_estimator_[0].estimator_
    assert (
        fitted.n_components == best["gaussianmixtureimputer__estimator__n_components"]
    )
    assert (
        fitted.covariance_type
        == best["gaussianmixtureimputer__estimator__covariance_type"]
    )


def failing_refits(X):
    """Inputs whose refit fails in the mixture, after the imputer's checks."""
    all_nan_column = np.column_stack([X, np.full(len(X), np.nan)])
    return {
        "too few rows": (X[:1, :2], None),
        "an all-NaN column": (all_nan_column, None),
        "weights of the wrong length": (X, np.ones(len(X) + 1)),
    }


@pytest.mark.parametrize("case", list(failing_refits(np.zeros((4, 3)))))
@pytest.mark.parametrize("as_frame", [False, True])
def test_a_failed_refit_leaves_the_imputer_and_its_mixture_as_they_were(case, as_frame):
    X = hide(correlated(16, 200), 0.1, 17)
    train = X
    if as_frame:
        pandas = pytest.importorskip("pandas")
        train = pandas.DataFrame(X, columns=["a", "b", "c"])
    imputer = GaussianMixtureImputer(
        VariationalGaussianMixture(n_components=2, random_state=0),
        sample_posterior=True,
        random_state=0,
    ).fit(train)
    mixture = imputer.estimator_
    before = pickle.dumps(imputer)
    state = dict(vars(imputer))
    fitted = {
        name: np.copy(getattr(mixture, name))
        for name in vars(mixture)
        if name.endswith("_") and isinstance(getattr(mixture, name), np.ndarray)
    }

    bad_X, bad_weight = failing_refits(X)[case]
    with pytest.raises(ValueError):
        imputer.fit(bad_X, sample_weight=bad_weight)

    assert pickle.dumps(imputer) == before
    assert vars(imputer).keys() == state.keys()
    assert all(vars(imputer)[name] is value for name, value in state.items())
    assert imputer.n_features_in_ == mixture.n_features_in_ == 3
    if as_frame:
        assert list(imputer.feature_names_in_) == ["a", "b", "c"]
    for name, value in fitted.items():
        assert_array_equal(getattr(mixture, name), value)
    # Still usable as fitted: the next draws are those the fit prepared.
    expected = pickle.loads(before).transform(train)
    assert_array_equal(imputer.transform(train), expected)


def test_a_failed_first_fit_leaves_the_imputer_unfitted():
    imputer = GaussianMixtureImputer()
    fresh = dict(vars(imputer))
    X = hide(correlated(18, 50), 0.1, 19)
    for bad_X, bad_weight in failing_refits(X).values():
        with pytest.raises(ValueError):
            imputer.fit(bad_X, sample_weight=bad_weight)
        assert vars(imputer) == fresh
        with pytest.raises(NotFittedError):
            imputer.transform(X)


@pytest.mark.parametrize("sample_posterior", [False, True])
@pytest.mark.parametrize(
    "layout", ["float32", "fortran", "strided view", "read-only", "frame"]
)
def test_transform_never_writes_into_the_callers_data(layout, sample_posterior):
    X = hide(two_groups(20, 120)[0], 0.2, 21)
    imputer = GaussianMixtureImputer(
        EMGaussianMixture(2, random_state=0), sample_posterior=sample_posterior
    ).fit(X)
    if layout == "float32":
        data = X.astype(np.float32)
    elif layout == "fortran":
        data = np.asfortranarray(X)
    elif layout == "strided view":
        data = np.repeat(X, 2, axis=0)[::2]
    elif layout == "read-only":
        data = X.copy()
        data.flags.writeable = False
    else:
        data = pytest.importorskip("pandas").DataFrame(X)
    before = np.array(data, copy=True)
    filled = imputer.transform(data)
    assert not np.isnan(filled).any()
    assert_array_equal(np.asarray(data), before)
    assert not np.shares_memory(filled, np.asarray(data))
