"""Rows of sample_weight 0 are not there: they change nothing in a fit, and
nothing they hold (far-away, huge or missing values) can reach a statistic."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from skvi import EMGaussianMixture, GaussianMixtureImputer, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, fitted_attributes, make_blobs

ESTIMATORS = [EMGaussianMixture, VariationalGaussianMixture]
INIT_PARAMS = ["kmeans", "k-means++", "random", "random_from_data", "hc"]

# Rows that would break a fit if they took part: one far away, two whose
# squares overflow, one with nothing observed, one missing the column the
# others observe.
ABSENT_ROWS = np.array(
    [
        [1e6, -1e6],
        [1e308, -1e308],
        [-1.7e308, 1.7e308],
        [np.nan, np.nan],
        [np.nan, 1e300],
    ]
)


@pytest.fixture(autouse=True)
def _overflow_is_an_error():
    # A weight-0 row must be skipped, never multiplied by 0: any overflow or
    # 0 * inf on the way fails the test (unless a test expects one).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", RuntimeWarning)
        yield


def assert_same_model(model, reference):
    attributes = fitted_attributes(reference)
    assert fitted_attributes(model).keys() == attributes.keys()
    for name, value in attributes.items():
        assert_array_equal(getattr(model, name), value, err_msg=name)


def with_absent_rows(X, weights, seed=0):
    """X and weights with ABSENT_ROWS at random places, at weight 0.

    Returns the new rows, weights, and the mask of the original rows.
    """
    rng = np.random.RandomState(seed)
    n_absent = len(ABSENT_ROWS)
    present = np.ones(len(X) + n_absent, dtype=bool)
    present[rng.choice(len(present), n_absent, replace=False)] = False
    X_all = np.empty((len(present), X.shape[1]))
    X_all[present], X_all[~present] = X, ABSENT_ROWS
    weights_all = np.zeros(len(present))
    weights_all[present] = weights
    return X_all, weights_all, present


def blobs_and_weights(seed=0):
    X = make_blobs(seed, n_samples=90, n_features=2, n_clusters=3)
    weights = np.random.RandomState(seed).uniform(0.5, 3.0, size=len(X))
    return X, weights


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("init_params", INIT_PARAMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weight_zero_rows_change_no_fit(estimator, init_params, covariance_type):
    X, weights = blobs_and_weights()
    X_all, weights_all, present = with_absent_rows(X, weights)
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        init_params=init_params,
        n_init=2,
        max_iter=15,
        random_state=0,
    )
    reference = estimator(**params).fit(X, sample_weight=weights)
    model = estimator(**params).fit(X_all, sample_weight=weights_all)
    assert_same_model(model, reference)
    # Every input row, present or not, gets a label (predicting the far rows
    # may overflow on the way: they are there to be predicted).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        labels = estimator(**params).fit_predict(X_all, sample_weight=weights_all)
        assert_array_equal(labels[~present], model.predict(ABSENT_ROWS))
    assert_array_equal(labels[present], reference.predict(X))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weight_zero_rows_change_no_partial_fit(estimator):
    X, weights = blobs_and_weights(1)
    params = dict(n_components=3, init_params="random_from_data", random_state=0)
    reference, model = estimator(**params), estimator(**params)
    for batch in np.array_split(np.arange(len(X)), 3):
        reference.partial_fit(X[batch], sample_weight=weights[batch])
        X_all, weights_all, _ = with_absent_rows(X[batch], weights[batch], batch[0])
        model.partial_fit(X_all, sample_weight=weights_all)
        assert_same_model(model, reference)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_scores_skip_weight_zero_rows(estimator):
    X, weights = blobs_and_weights(2)
    X_all, weights_all, present = with_absent_rows(X, weights)
    model = estimator(n_components=3, random_state=0).fit(X, sample_weight=weights)
    assert model.score(X_all, sample_weight=weights_all) == model.score(
        X, sample_weight=weights
    )
    assert model.elbo_decomposition(
        X_all, sample_weight=weights_all
    ) == model.elbo_decomposition(X, sample_weight=weights)
    # Hard assignments; the absent rows' are checked but never read.
    resp = np.eye(3)[model.predict(X)]
    resp_all = np.full((len(X_all), 3), 1.0 / 3)
    resp_all[present] = resp
    assert model.elbo_decomposition(
        X_all, sample_weight=weights_all, responsibilities=resp_all
    ) == model.elbo_decomposition(X, sample_weight=weights, responsibilities=resp)
    if estimator is EMGaussianMixture:
        assert model.bic(X_all, sample_weight=weights_all) == model.bic(
            X, sample_weight=weights
        )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_rows_with_nothing_observed_are_not_there(estimator):
    # fit gives such a row zero weight, whatever weight it was passed.
    X, weights = blobs_and_weights(3)
    X_all = np.vstack([X, [[np.nan, np.nan]]])
    weights_all = np.append(weights, 5.0)
    reference = estimator(n_components=3, random_state=0).fit(X, sample_weight=weights)
    model = estimator(n_components=3, random_state=0)
    model.fit(X_all, sample_weight=weights_all)
    assert_same_model(model, reference)


def column_error(fit, X, sample_weight=None):
    with pytest.raises(ValueError) as error:
        fit(X, sample_weight=sample_weight)
    return str(error.value)


@pytest.mark.parametrize(
    "make_fit",
    [
        lambda: EMGaussianMixture(n_components=2).fit,
        lambda: VariationalGaussianMixture(n_components=2).fit,
        lambda: EMGaussianMixture(n_components=2).partial_fit,
        lambda: GaussianMixtureImputer().fit,
    ],
    ids=["EM fit", "VI fit", "partial_fit", "imputer"],
)
def test_column_observed_only_at_weight_zero_is_an_empty_column(make_fit):
    X, _ = blobs_and_weights(4)
    X[:, 1] = np.nan
    all_nan = column_error(make_fit(), X)
    X_all = np.vstack([X, [[0.0, 1.0], [np.nan, 2.0]]])
    weights = np.r_[np.ones(len(X)), 0.0, 0.0]
    weight_zero = column_error(make_fit(), X_all, weights)
    # The same error, saying in each case why the column is empty.
    prefix = "Column 1 of X has no observed value ("
    assert all_nan.startswith(prefix + "every entry is NaN); drop that column")
    assert weight_zero.startswith(prefix + "it is observed only in rows of")
    assert all_nan.endswith("); drop that column or provide some of its values.")
    assert weight_zero.endswith("); drop that column or provide some of its values.")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_only_rows_of_positive_weight_count_as_samples(estimator):
    X, _ = blobs_and_weights(5)
    weights = np.zeros(len(X))
    weights[:2] = 1.0
    with pytest.raises(ValueError, match="n_components = 3, n_samples = 2 "):
        estimator(n_components=3).fit(X, sample_weight=weights)
    with pytest.raises(ValueError, match="n_components = 3, n_samples = 2 "):
        estimator(n_components=3).partial_fit(X, sample_weight=weights)
    weights[1] = 0.0
    # A fit needs two rows, as scikit-learn's GaussianMixture does.
    with pytest.raises(ValueError, match="Found 1 row.* minimum of 2 is required"):
        estimator(n_components=1).fit(X, sample_weight=weights)


def test_imputer_fit_ignores_weight_zero_rows():
    X, weights = blobs_and_weights(6)
    X[::7, 0] = np.nan
    X_all, weights_all, present = with_absent_rows(X, weights)
    reference = GaussianMixtureImputer(random_state=0).fit(X, sample_weight=weights)
    imputer = GaussianMixtureImputer(random_state=0)
    imputer.fit(X_all, sample_weight=weights_all)
    assert_same_model(imputer.estimator_, reference.estimator_)
    assert_array_equal(imputer.transform(X), reference.transform(X))
    # The absent rows are filled too (far ones may overflow on the way).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        filled = imputer.transform(X_all)
    assert_array_equal(filled[present], reference.transform(X))
    assert not np.any(np.isnan(filled))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weight_zero_rows_change_no_float32_fit(estimator):
    X, weights = blobs_and_weights(7)
    X_all, weights_all, _ = with_absent_rows(X, weights)
    # The float32 range: the squares of these overflow it.
    X_all = np.clip(X_all, -3e38, 3e38).astype(np.float32)
    params = dict(n_components=3, init_params="k-means++", random_state=0)
    reference = estimator(**params).fit(X.astype(np.float32), sample_weight=weights)
    model = estimator(**params).fit(X_all, sample_weight=weights_all)
    assert model.means_.dtype == np.float32
    assert_same_model(model, reference)


@pytest.mark.parametrize("covariance_type", ["full", "VVE", "spherical"])
def test_whole_number_weights_start_and_fit_as_the_rows_repeated(covariance_type):
    # Whole-number weights are repeat counts also for the hierarchical
    # start: its tree merges identical rows first, so a row of weight 3
    # is three rows, and the fit from init_params='hc' (no random draw at
    # this size) is the fit of the rows repeated.
    from skvi.datasets import load_old_faithful

    X = np.asarray(load_old_faithful().data, dtype=float)
    counts = np.random.RandomState(0).randint(1, 4, len(X))
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        init_params="hc",
        random_state=0,
    )
    weighted = EMGaussianMixture(**params).fit(X, sample_weight=counts)
    repeated = EMGaussianMixture(**params).fit(np.repeat(X, counts, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, rel=1e-12)
    # Weights that are not whole numbers count relative to their mean: the
    # same start and fit (to the rounding of the rescaled sums) at any scale.
    scaled = EMGaussianMixture(**params).fit(X, sample_weight=counts / 2.5)
    unit_mean = EMGaussianMixture(**params).fit(X, sample_weight=counts / counts.mean())
    assert scaled.n_iter_ == unit_mean.n_iter_
    np.testing.assert_allclose(scaled.means_, unit_mean.means_, rtol=1e-12)
    # So do whole numbers totalling more than 2,000 (rows the tree would
    # subsample): counts of thousands would make each row a cluster of that
    # many copies.
    thousands = EMGaussianMixture(**params).fit(X, sample_weight=counts * 1000.0)
    assert thousands.n_iter_ == unit_mean.n_iter_
    np.testing.assert_allclose(thousands.means_, unit_mean.means_, rtol=1e-12)
