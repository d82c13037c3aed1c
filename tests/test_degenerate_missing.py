"""Degenerate fits with missing entries (skvi._data_spread, review 15).

With missing entries the M-step's scatter holds the conditional covariances
of the missing entries: a collapsed component keeps ``reg_covar / (1 - f)``
there, and one that observes a column in no row a variance that grows by
``reg_covar`` per iteration. The rules read the spread the data give
instead, and count the rows that observe each column.
"""

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import load_iris

from skvi import (
    EMGaussianMixture,
    VariationalGaussianMixture,
    _data_spread,
    select_model,
)
from skvi._data_spread import data_spread

LAB = [7.5, 8.8, 10.1, 5.4, 7.5, 9.6]


def ratings(missing=0.0, seed=0):
    """300 rows of 5 items rated 1 to 5 by two groups, some entries NaN.

    The rounding leaves some rows of a group sharing a rating in an item:
    a component fitted to them alone has no spread there but reg_covar's.
    """
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, 300)
    X = np.clip(np.round(rng.normal(2 + 2 * group[:, None], 0.8, (300, 5))), 1, 5)
    return np.where(rng.uniform(size=X.shape) < missing, np.nan, X)


def iris_and_lab():
    """Iris and a lab value measured on 6 versicolor rows only."""
    X, y = load_iris(return_X_y=True)
    lab = np.full(150, np.nan)
    lab[np.flatnonzero(y == 1)[:6]] = LAB
    return np.c_[X, lab], y


def iris_means(X, y):
    """Each species' means (the lab value's observed mean for all)."""
    means = np.array([X[y == k, :4].mean(axis=0) for k in range(3)])
    return np.c_[means, np.full(3, np.nanmean(X[:, 4]))]


def fitted(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EMGaussianMixture(**params).fit(X)


@pytest.mark.parametrize("covariance_type", ["VVI", "VVV"])
def test_a_collapse_onto_a_value_is_flagged_with_missing_entries(covariance_type):
    # Review 15, item 1: 5% NaN gave the column reg_covar / (1 - f) and no
    # flag, and select_model chose the collapse.
    for missing in (0.0, 0.05):
        model = fitted(
            ratings(missing),
            n_components=5,
            covariance_type=covariance_type,
            init_params="hc_mclust",
            random_state=0,
        )
        flagged = "less reg_covar has eigenvalue ratio" in (model.degenerate_ or "")
        if missing:
            assert flagged
            continue
        # Complete data: the full fit reaches the collapse with one BLAS
        # kernel and a sound maximum with another (OPENBLAS_CORETYPE=Haswell:
        # rounding decides the path); either way the flag says which.
        covariances = model.covariances_
        if covariances.ndim == 2:
            covariances = np.stack([np.diag(c) for c in covariances])
        spread = np.linalg.eigvalsh(covariances - model.reg_covar * np.eye(5))
        collapsed = (spread.min(axis=1) < 1e-12 * spread.max(axis=1)).any()
        assert flagged == collapsed


def test_select_model_does_not_choose_a_collapse_hidden_by_missing_entries():
    X = ratings(0.15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, best = select_model(
            X, n_components=[2, 5], covariance_types=["EII", "VVI"]
        )
    assert table.set_index(["covariance_type", "n_components"]).loc[
        ("VVI", 5), "degenerate"
    ]
    assert (best.covariance_type, best.n_components) == ("EII", 2)


def test_copies_of_one_row_with_missing_entries_are_flagged():
    # A spherical component on rows (3, 3, 3) most of whose entries are
    # missing: EM moves its mean onto them by the observed share per
    # iteration only; the spread is read at the mean's fixed point.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(60, 3)) * 0.7 + 5, np.full((14, 3), 3.0)])
    X[60:][rng.uniform(size=(14, 3)) < 0.7] = np.nan
    X[60:, 0][np.isnan(X[60:]).all(axis=1)] = 3.0
    means = np.array([[5.0, 5.0, 5.0], [3.1, 2.9, 3.05]])
    model = fitted(
        X, n_components=2, covariance_type="spherical", means_init=means, tol=1e-3
    )
    assert "component 1's covariance less reg_covar" in model.degenerate_


@pytest.mark.parametrize(
    ("covariance_type", "needed"), [("full", 6), ("VVI", 2), ("EVI", 1), ("VVE", 1)]
)
def test_a_component_that_observes_no_value_of_a_column_is_flagged(
    covariance_type, needed
):
    # Review 15, item 2: the setosa component never observes the lab value.
    X, y = iris_and_lab()
    model = fitted(
        X,
        n_components=3,
        covariance_type=covariance_type,
        means_init=iris_means(X, y),
        max_iter=20,
        # The weights and covariances start from k-means' responsibilities:
        # with random_state=None the setosa component took a lab row now and
        # then (CI, stop 34).
        random_state=0,
    )
    component = model.predict(X[y == 0]).max()
    reason = model.degenerate_
    assert reason.startswith(
        f"component {component} observes column 4 in 0 effective points"
    )
    assert "not from the data" in reason and "Leave the column out" in reason


def separated(observing, seed=0):
    """Three clusters of 30 rows far apart in 5-D, and their centers.

    The middle one observes its last column in ``observing`` rows only.
    """
    rng = np.random.RandomState(seed)
    centers = np.array([[0.0] * 5, [40.0] * 5, [80.0] * 5])
    X = np.vstack([rng.normal(size=(30, 5)) + center for center in centers])
    X[30 + observing : 60, 4] = np.nan
    return X, centers


@pytest.mark.parametrize(
    "covariance_type", ["EII", "VII", "EEI", "VEI", "EEE", "VEE", "EEV", "VEV"]
)
def test_a_shared_shape_needs_the_column_observed_only_in_the_pool(covariance_type):
    # The component that never observes the column takes its variance
    # there from the shape all of them share: the fit stays bounded.
    X, centers = separated(0)
    model = fitted(
        X, n_components=3, covariance_type=covariance_type, means_init=centers
    )
    assert model.converged_ and model.degenerate_ is None


@pytest.mark.parametrize("observing", [5, 8])
def test_too_few_rows_for_a_columns_regression_are_flagged(observing):
    # VVV: a column observed in 5 rows of a component in 5 dimensions fits
    # its regression on the other 4 exactly (6 needed). Clusters far apart:
    # no crumbs of the others' rows.
    X, centers = separated(observing)
    model = fitted(
        X, n_components=3, covariance_type="VVV", means_init=centers, max_iter=20
    )
    if observing == 5:
        assert model.degenerate_.startswith(
            "component 1 observes column 4 in 5 effective points (its rows with "
            "a value there): too few to estimate a VVV covariance there (at "
            "least 6 needed: its mean there, its regression on the other 4 "
            "columns and a spread about it), so that its variance in that column "
            "comes from reg_covar, not from the data."
        )
    else:
        assert model.degenerate_ is None


def test_the_variational_model_takes_such_a_column_from_its_prior():
    X, _ = iris_and_lab()
    model = VariationalGaussianMixture(n_components=3, random_state=0).fit(X)
    assert model.converged_ and model.degenerate_ is None


def test_sound_fits_with_missing_entries_stay_unflagged():
    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[np.random.RandomState(0).uniform(size=X.shape) < 0.15] = np.nan
    for covariance_type in ("VVV", "VVI", "EEE", "VEV", "EVE", "VVE", "EVI"):
        model = fitted(
            X, n_components=2, covariance_type=covariance_type, random_state=0
        )
        assert model.degenerate_ is None, covariance_type


def test_a_constant_column_with_missing_entries_is_left_out():
    X, _ = load_iris(return_X_y=True)
    X = np.c_[X, np.full(150, 2.0)]
    X[np.random.RandomState(1).uniform(size=150) < 0.2, 4] = np.nan
    for covariance_type in ("VVV", "VVI", "EVI", "VEV"):
        model = fitted(
            X, n_components=2, covariance_type=covariance_type, random_state=0
        )
        assert model.degenerate_ is None, covariance_type


def brute_force_spread(model, X):
    """Each component's conditional expectations' scatter, row by row.

    The mean iterated to its fixed point (EM's mean update with the
    covariances and responsibilities held).
    """
    resp = model.predict_proba(X)
    scatters = []
    for r, mean, covariance in zip(
        resp.T, model.means_, full_covariances(model), strict=True
    ):
        gains = [conditional_gain(row, covariance) for row in X]
        for _ in range(1000):
            expected = np.array(
                [
                    row if gain is None else fill(row, mean, gain)
                    for row, gain in zip(X, gains, strict=True)
                ]
            )
            previous, mean = mean, r @ expected / r.sum()
            if np.all(previous == mean):
                break
        centered = expected - mean
        scatters.append(centered.T @ (centered * r[:, None]) / r.sum())
    return np.array(scatters), resp.T @ ~np.isnan(X)


def conditional_gain(row, covariance):
    """``Sigma_mo Sigma_oo^-1`` of a row with missing entries, else None."""
    missing = np.isnan(row)
    if not missing.any():
        return None
    observed = ~missing
    return covariance[np.ix_(missing, observed)] @ np.linalg.inv(
        covariance[np.ix_(observed, observed)]
    )


def fill(row, mean, gain):
    """The row with its conditional means ``m_m + G (x_o - m_o)``."""
    missing = np.isnan(row)
    filled = row.copy()
    filled[missing] = mean[missing] + gain @ (row[~missing] - mean[~missing])
    return filled


@pytest.mark.parametrize(
    "covariance_type", ["full", "tied", "diag", "spherical", "VVE"]
)
def test_the_spread_is_that_of_the_conditional_expectations(covariance_type):
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(40, 3)) @ [[1, 0.5, 0], [0, 1, 0.3], [0, 0, 1]]])
    X = np.vstack([X, rng.normal(size=(30, 3)) + 4])
    X[rng.uniform(size=X.shape) < 0.25] = np.nan
    model = fitted(
        X, n_components=2, covariance_type=covariance_type, random_state=0, max_iter=5
    )
    spread = data_spread(model, X, None)
    scatters, observed = brute_force_spread(model, X)
    assert_allclose(spread.scatters, scatters, rtol=1e-9, atol=1e-12)
    assert_allclose(spread.observed, observed, rtol=1e-12)


def full_covariances(model):
    K, D = model.means_.shape
    c = np.asarray(model.covariances_)
    if model.covariance_type == "spherical":
        return c[:, None, None] * np.eye(D)
    if model.covariance_type == "diag":
        return c[:, None, :] * np.eye(D)
    if model.covariance_type == "tied":
        return np.broadcast_to(c, (K, D, D))
    return c


def test_weights_are_read_relative_to_each_other():
    X = ratings(0.1)[:80]
    model = fitted(X, n_components=2, covariance_type="VVV", random_state=0)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    one = data_spread(model, X, weights)
    scaled = data_spread(model, X, weights * 1e6)
    assert_allclose(scaled.scatters, one.scatters, rtol=1e-12)
    assert_allclose(scaled.observed, one.observed, rtol=1e-12)
    # Equal weights: each row one point.
    equal = data_spread(model, X, np.full(len(X), 3.0))
    assert_allclose(equal.observed, data_spread(model, X, None).observed)
    assert_allclose(equal.observed.sum(axis=0), (~np.isnan(X)).sum(axis=0), rtol=1e-12)


def test_complete_data_read_the_fit_statistics():
    X, _ = load_iris(return_X_y=True)
    model = fitted(X, n_components=2, random_state=0)
    assert data_spread(model, X, None) is None


def test_dask_arrays_give_the_in_memory_spread():
    X, y = iris_and_lab()
    model = fitted(
        X, n_components=3, covariance_type="VVV", means_init=iris_means(X, y)
    )
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    for w, wd in ((None, None), (weights, da.from_array(weights, chunks=40))):
        here = data_spread(model, X, w)
        there = data_spread(model, da.from_array(X, chunks=(40, 5)), wd)
        assert_allclose(there.scatters, here.scatters, rtol=1e-10, atol=1e-13)
        assert_allclose(there.observed, here.observed, rtol=1e-12)


def test_a_first_pass_too_large_to_keep_is_computed_again(monkeypatch):
    X, y = iris_and_lab()
    model = fitted(
        X, n_components=3, covariance_type="VVV", means_init=iris_means(X, y)
    )
    kept = data_spread(model, X, None)
    monkeypatch.setattr(_data_spread, "CACHE_BYTES", 0)
    again = data_spread(model, X, None)
    assert_allclose(again.scatters, kept.scatters, rtol=0, atol=0)
    assert_allclose(again.observed, kept.observed, rtol=0, atol=0)
