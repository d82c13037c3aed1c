"""The batch loop's stopping rule (Aitken's estimate of the remaining gain)."""

import numpy as np
import pytest

from skvi import EMGaussianMixture, VariationalGaussianMixture
from skvi._batch import remaining_gain

from .helpers import make_blobs


def test_remaining_gain_extrapolates_a_linear_rate():
    # Changes 1, 1/2, 1/4, ... leave as much again to come as the last one.
    assert remaining_gain(0.25, 0.5) == pytest.approx(0.25 / (1 - 0.5))
    assert remaining_gain(0.01, 0.011) == pytest.approx(0.01 / (1 - 0.01 / 0.011))
    # No rate yet, or changes that do not shrink: no estimate.
    assert remaining_gain(0.1, None) == np.inf
    assert remaining_gain(0.1, 0.1) == np.inf
    assert remaining_gain(0.2, 0.1) == np.inf
    # At the fixed point rounding can make a change (slightly) negative.
    assert remaining_gain(-1e-15, 1e-9) == pytest.approx(1e-15)
    assert remaining_gain(0.0, None) == 0.0


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
    changes = np.diff(model.lower_bounds_)
    previous = [None, *changes[:-1]]
    estimates = [remaining_gain(c, p) for c, p in zip(changes, previous, strict=True)]
    assert estimates[-1] < model.tol
    assert all(estimate >= model.tol for estimate in estimates[:-1])
