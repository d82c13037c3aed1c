"""The bound never decreases by more than the rounding of its own sum.

The ascent is monotone in exact arithmetic; these cases once showed drops
far above rounding because a term cancelled digits: an ill-conditioned
precision whose weak axis separates clusters far apart, evaluated entry by
entry. The tolerance is that of the bound's own sum, 1e-13 relative.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skvi import EMGaussianMixture, VariationalGaussianMixture

ROUNDING = 1e-13


def assert_never_decreases(model):
    """No half-step lowers the bound by more than its rounding."""
    half_steps = model.half_step_lower_bounds_
    drops = np.diff(half_steps)
    assert np.all(drops >= -ROUNDING * np.abs(half_steps[1:]))


def far_apart_clusters(seed, spacing=1e5):
    """Three unit clusters on a line, ``spacing`` apart along (1, 1)."""
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(size=(100, 2)) + spacing * k for k in range(3)])


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.mark.parametrize("seed", [1, 3, 4, 5])
@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_tied_fit_of_clusters_far_apart_never_decreases(estimator, seed):
    # Four components for three clusters: VI's spare component sits between
    # them, and the tied precision is nearly singular along (1, 1).
    model = estimator(
        n_components=4, covariance_type="tied", random_state=seed, tol=0, max_iter=50
    )
    assert_never_decreases(fit_quietly(model, far_apart_clusters(seed)))
