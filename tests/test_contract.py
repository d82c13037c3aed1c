"""The contract, fuzzed: every input either fits cleanly or is refused clearly.

Random shapes, scales (1e-8..1e8), offsets (up to 1e6), dtypes, sample
weights spanning 1e-6..1e6 with zeros, duplicated rows, constant columns and
missing entries, for every covariance type, both estimators, ``fit`` and
``partial_fit``. Each case either

* fits, with finite parameters, finite scores, rows of ``predict_proba``
  that sum to 1 and (for ``fit``) a bound that never decreases beyond the
  rounding of the dtype; or
* raises a ValueError (never numpy's bare LinAlgError) whose message says
  what to change, leaving the estimator unfitted.

Either way the caller's arrays are unchanged. The number of cases is
bounded for CI; ``SKVI_HYPOTHESIS_EXAMPLES=1000 python -m pytest
tests/test_contract.py`` searches deeper.
"""

import copy
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.validation import check_is_fitted

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import (
    COVARIANCE_TYPES,
    HYPOTHESIS_EXAMPLES,
    all_finite,
    rounding_amplification,
)

# Words of a message that tells the caller what to change.
ADVICE = (
    "use",
    "pass",
    "provide",
    "drop",
    "remove",
    "increase",
    "set",
    "must",
    "required",
    "need",
)


@st.composite
def contract_cases(draw):
    n_features = draw(st.integers(1, 4))
    return {
        "estimator": draw(
            st.sampled_from([EMGaussianMixture, VariationalGaussianMixture])
        ),
        "covariance_type": draw(st.sampled_from(COVARIANCE_TYPES)),
        "dtype": draw(st.sampled_from([np.float64, np.float32])),
        "n_samples": draw(st.integers(1, 80)),
        "n_features": n_features,
        "n_components": draw(st.integers(1, 4)),
        "log_scale": draw(st.sampled_from([-8, -4, 0, 3, 8])),
        "offset": draw(st.sampled_from([0.0, 1.0, 1e3, 1e6])),
        "shape": draw(st.sampled_from(["blobs", "duplicated", "constant column"])),
        "weights": draw(st.sampled_from(["none", "wide", "wide with zeros"])),
        "missing": draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
        "method": draw(st.sampled_from(["fit", "partial_fit"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def case_data(case):
    rng = np.random.RandomState(case["seed"])
    n, d = case["n_samples"], case["n_features"]
    centers = rng.normal(scale=4.0, size=(3, d))
    X = centers[rng.randint(3, size=n)] + rng.normal(size=(n, d))
    if case["shape"] == "duplicated":
        X = X[rng.randint(max(1, n // 4), size=n)]
    elif case["shape"] == "constant column":
        X[:, rng.randint(d)] = rng.normal()
    X = X * 10.0 ** case["log_scale"] + case["offset"]
    if case["missing"]:
        X[rng.rand(n, d) < case["missing"]] = np.nan
    weights = None
    if case["weights"] != "none":
        weights = 10.0 ** rng.uniform(-6, 6, size=n)
        if case["weights"] == "wide with zeros":
            weights[rng.rand(n) < 0.3] = 0.0
    return X.astype(case["dtype"]), weights


def fit_case(model, case, X, weights, snapshots):
    """Fit as the case says; ``snapshots`` gets the state after each call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if case["method"] == "fit":
            return model.fit(X, sample_weight=weights)
        half = max(1, len(X) // 2)
        first, second = (None, None) if weights is None else np.split(weights, [half])
        model.partial_fit(X[:half], sample_weight=first)
        snapshots.append(copy.deepcopy(vars(model)))
        if half < len(X):
            model.partial_fit(X[half:], sample_weight=second)
        return model


def assert_same_state(state, before):
    assert state.keys() == before.keys()
    for name, value in before.items():
        if isinstance(value, dict):
            assert_same_state(state[name], value)
        else:
            assert_array_equal(np.asarray(state[name]), np.asarray(value))


def bound_rounding(model):
    """How far a non-decreasing bound may appear to fall, per sample.

    The bound is a sum of terms of the size of the recorded values, each
    rounded in the dtype of the data (float32 responsibilities cap its
    precision at about 1e-6 relative), and amplified by the conditioning of
    the covariances (see ``rounding_amplification``).
    """
    eps = np.finfo(model.means_.dtype).eps
    scale = np.max(np.abs(model.half_step_lower_bounds_))
    return 64 * eps * max(scale, 1.0) * rounding_amplification(model)


@settings(
    max_examples=3 * HYPOTHESIS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(contract_cases())
def test_every_input_fits_cleanly_or_is_refused_clearly(case):
    X, weights = case_data(case)
    X_before = X.copy()
    weights_before = None if weights is None else weights.copy()
    model = case["estimator"](
        n_components=case["n_components"],
        covariance_type=case["covariance_type"],
        random_state=case["seed"],
    )
    snapshots = []
    try:
        fit_case(model, case, X, weights, snapshots)
    except ValueError as error:
        message = str(error)
        assert not isinstance(error, np.linalg.LinAlgError), message
        assert len(message) > 40, message
        assert any(word in message.lower() for word in ADVICE), message
        if snapshots:
            # A later minibatch failed: the model is as the first one left it.
            assert_same_state(vars(model), snapshots[0])
        else:
            with pytest.raises(NotFittedError):
                check_is_fitted(model)
    else:
        assert all_finite(model)
        scores = model.score_samples(X)
        assert np.all(np.isfinite(scores))
        proba = model.predict_proba(X)
        assert np.all(np.isfinite(proba))
        tolerance = 8 * np.finfo(proba.dtype).eps * model.n_components
        assert np.all(np.abs(proba.sum(axis=1) - 1.0) <= tolerance)
        if case["method"] == "fit":
            steps = np.diff(model.half_step_lower_bounds_)
            assert np.all(steps >= -bound_rounding(model)), steps.min()
    assert_array_equal(X, X_before)
    if weights is not None:
        assert_array_equal(weights, weights_before)
