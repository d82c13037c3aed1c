"""The batch loop's stopping rule (Aitken's estimate of the remaining gain,
with the rate read from a window of changes)."""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning

from skvi import EMGaussianMixture, VariationalGaussianMixture
from skvi._batch import (
    BOUND_RESOLUTION,
    RATE_HORIZON,
    RATE_WINDOW,
    Trend,
    remaining_gain,
)

from .helpers import make_blobs


def test_remaining_gain_extrapolates_a_steady_linear_rate():
    # Changes 1, 1/2, 1/4, ... leave as much again to come as the last one.
    halving = [0.5**i for i in range(RATE_WINDOW + 1)]
    assert remaining_gain(halving) == pytest.approx(halving[-1] / (1 - 0.5))
    # Too few changes to read a rate from: no estimate.
    assert remaining_gain(halving[1:]) == np.inf
    assert remaining_gain([]) == np.inf
    # Only the last RATE_WINDOW + 1 changes are read.
    assert remaining_gain([5.0, 7.0, *halving]) == remaining_gain(halving)
    # A change in the window that does not shrink: no estimate.
    assert remaining_gain([*halving[:-2], halving[-1], halving[-1]]) == np.inf
    # At the fixed point rounding can make a change (slightly) negative.
    assert remaining_gain([1e-9, -1e-15]) == pytest.approx(1e-15)
    assert remaining_gain([0.0]) == 0.0
    # So is a positive change within the rounding of the bound.
    assert remaining_gain([1e-9, 3e-14], rounding=1e-13) == 3e-14
    assert remaining_gain([1e-9, 3e-14]) == np.inf


def test_remaining_gain_extrapolates_a_rising_rate():
    # Ratios 0.5, 0.55, ..., 0.7: the rate rises 0.05 per iteration, and
    # is read as it will be RATE_HORIZON iterations on.
    ratios = 0.5 + 0.05 * np.arange(RATE_WINDOW)
    changes = list(np.cumprod([1.0, *ratios]))
    rate = ratios[-1] + RATE_HORIZON * 0.05
    assert remaining_gain(changes) == pytest.approx(changes[-1] / (1 - rate))
    # A plateau: changes shrinking ever more slowly, at a rate that will
    # reach 1, promise no limit.
    plateau = list(np.cumprod([1.0, *(0.75 + 0.05 * np.arange(RATE_WINDOW))]))
    assert remaining_gain(plateau) == np.inf


@pytest.mark.parametrize(
    "estimator", [EMGaussianMixture, VariationalGaussianMixture], ids=["EM", "VI"]
)
def test_a_fit_stops_at_the_first_iteration_the_rule_allows(estimator):
    X = make_blobs(4, n_samples=600, n_features=3, n_clusters=3)
    params = dict(n_components=3, random_state=0, tol=1e-4)
    if estimator is VariationalGaussianMixture:
        params["merge_components"] = False
    model = estimator(**params).fit(X)
    assert model.converged_
    bounds = model.lower_bounds_
    changes = list(np.diff(bounds))
    rounding = BOUND_RESOLUTION[np.dtype(float)] * np.abs(bounds[1:])
    estimates = [
        remaining_gain(changes[:t], rounding[t - 1]) for t in range(1, len(changes) + 1)
    ]
    assert estimates[-1] < model.tol
    assert all(estimate >= model.tol for estimate in estimates[:-1])


def test_a_default_fit_does_not_stop_on_a_plateau():
    # Iris, tied, 5 components from the agglomerative start: the changes
    # shrink for a while, then the bound climbs again by far more than tol
    # per iteration. Aitken's estimate from the last two changes alone
    # stopped on the plateau, 0.4 nats per row short of the limit.
    X = load_iris().data
    params = dict(
        n_components=5, covariance_type="tied", init_params="hc", random_state=0
    )
    model = EMGaussianMixture(**params).fit(X)
    assert model.converged_
    limit = EMGaussianMixture(**params, tol=1e-10, max_iter=2000).fit(X)
    assert limit.converged_
    # From where the default fit stopped, the long fit never climbs by more
    # than tol per iteration on average over any later stretch.
    bounds = limit.lower_bounds_[model.n_iter_ :]
    assert bounds[0] == model.lower_bound_
    climb = (bounds[1:] - bounds[0]) / np.arange(1, len(bounds))
    assert climb.max() <= model.tol


@pytest.mark.parametrize(
    "estimator", [EMGaussianMixture, VariationalGaussianMixture], ids=["EM", "VI"]
)
def test_relative_tol_goes_on_while_a_change_exceeds_it(estimator):
    X = load_iris().data
    params = dict(n_components=3, random_state=0, tol=1e-2)
    if estimator is VariationalGaussianMixture:
        params["merge_components"] = False
    loose = estimator(**params).fit(X)
    tight = estimator(**params, relative_tol=1e-9, max_iter=1000).fit(X)
    assert loose.converged_ and tight.converged_
    # The same run up to where the loose rule stopped, then on.
    assert tight.lower_bounds_[: loose.n_iter_ + 1] == pytest.approx(
        loose.lower_bounds_, rel=1e-13
    )
    bounds = tight.lower_bounds_
    changes = np.diff(bounds)
    floors = 1e-9 * np.maximum(1.0, np.abs(bounds[1:]))
    # It stops at the first iteration where both conditions hold.
    rounding = BOUND_RESOLUTION[np.dtype(float)] * np.abs(bounds[1:])
    stops = [
        remaining_gain(list(changes[:t]), rounding[t - 1]) < tight.tol
        and changes[t - 1] <= floors[t - 1]
        for t in range(1, len(changes) + 1)
    ]
    assert stops[-1] and not any(stops[:-1])
    assert tight.n_iter_ > loose.n_iter_


def test_mclusts_rule_keeps_a_fit_going_past_a_plateau():
    # Old Faithful, spherical (mclust's VII) with 9 components from mclust's
    # tree: Aitken's estimate stops after 21 iterations, on a plateau before
    # a climb of 2.9 nats; R mclust goes on, and so does relative_tol=1e-5.
    from skvi.datasets import load_old_faithful

    X = load_old_faithful().data
    params = dict(n_components=9, covariance_type="spherical", init_params="hc_mclust")
    default = EMGaussianMixture(**params).fit(X)
    mclust_like = EMGaussianMixture(**params, relative_tol=1e-5).fit(X)
    assert default.n_iter_ == 21
    assert (mclust_like.lower_bound_ - default.lower_bound_) * len(X) > 2.5
    change = np.diff(mclust_like.lower_bounds_)[-1]
    assert change <= 1e-5 * abs(mclust_like.lower_bound_)


def test_relative_tol_is_validated():
    with pytest.raises(ValueError, match="relative_tol"):
        EMGaussianMixture(relative_tol=-1.0).fit(np.zeros((5, 2)))


def test_the_trend_of_a_warm_start_stores_the_window_of_changes():
    X = make_blobs(4, n_samples=300, n_features=2, n_clusters=3)
    model = EMGaussianMixture(n_components=3, max_iter=8, tol=0.0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(X)
    stored = model._ascent_trend
    changes = np.diff(model.lower_bounds_)[-(RATE_WINDOW + 1) :]
    assert stored["changes"] == list(changes)
    assert Trend.from_dict(stored).to_dict() == stored
    # A trend stored before the window kept only the last change.
    old = {k: v for k, v in stored.items() if k != "changes"}
    assert Trend.from_dict({**old, "change": 0.5}).changes == (0.5,)
    assert Trend.from_dict({**old, "change": None}).changes == ()
