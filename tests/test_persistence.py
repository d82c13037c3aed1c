"""Persistence: pickle and skops round trips of fitted estimators.

A loaded model predicts, samples and keeps learning exactly as the original;
skops reports only skvi's own classes as untrusted, so sharing a model needs
no pickle.
"""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from skvi import EMGaussianMixture, GaussianMixtureImputer, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, make_blobs

sio = pytest.importorskip("skops.io", reason="the test extra installs skops")

CLASS_NAMES = {
    EMGaussianMixture: "skvi._em.EMGaussianMixture",
    VariationalGaussianMixture: "skvi._variational.VariationalGaussianMixture",
}
ESTIMATORS = list(CLASS_NAMES)


def pickled(model):
    return pickle.loads(pickle.dumps(model))


def skopsed(model):
    data = sio.dumps(model)
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))


def assert_same_model(loaded, original, X):
    assert type(loaded) is type(original)
    assert loaded.get_params() == original.get_params()
    assert_array_equal(loaded.score_samples(X), original.score_samples(X))
    assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    for name, value in vars(original).items():
        if name.endswith("_") and not name.startswith("_"):
            assert_array_equal(np.asarray(getattr(loaded, name)), np.asarray(value))


def fitted(estimator, covariance_type, dtype, how):
    X = make_blobs(0, n_samples=300, n_features=3, n_clusters=3).astype(dtype)
    model = estimator(n_components=3, covariance_type=covariance_type, random_state=0)
    if how == "fit":
        model.fit(X)
    elif how == "partial_fit":
        model.partial_fit(X[:150]).partial_fit(X[150:])
    else:
        holes = X.copy()
        holes[::5, 1] = np.nan
        model.fit(holes)
    return model, X


@pytest.mark.parametrize("roundtrip", [pickled, skopsed], ids=["pickle", "skops"])
@pytest.mark.parametrize("how", ["fit", "partial_fit", "missing"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=["EM", "VI"])
def test_a_loaded_model_equals_the_original(
    estimator, covariance_type, dtype, how, roundtrip
):
    model, X = fitted(estimator, covariance_type, dtype, how)
    loaded = roundtrip(model)
    assert_same_model(loaded, model, X)
    # The same draws, and the same next step of the stream.
    model.set_params(random_state=5)
    loaded.set_params(random_state=5)
    for a, b in zip(loaded.sample(50), model.sample(50), strict=True):
        assert_array_equal(a, b)
    if how != "missing":
        assert_same_model(loaded.partial_fit(X[:40]), model.partial_fit(X[:40]), X)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=["EM", "VI"])
def test_skops_trusts_nothing_but_skvi_estimators(estimator):
    model, _ = fitted(estimator, "full", np.float64, "partial_fit")
    data = sio.dumps(model)
    assert sio.get_untrusted_types(data=data) == [CLASS_NAMES[estimator]]
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(data)
    # An unfitted estimator round-trips too.
    fresh = skopsed(estimator(n_components=2))
    assert fresh.get_params() == estimator(n_components=2).get_params()


def test_a_loaded_imputer_imputes_as_the_original():
    X = make_blobs(1, n_samples=200, n_features=3, n_clusters=2)
    X[::4, 0] = np.nan
    imputer = GaussianMixtureImputer(random_state=0).fit(X)
    data = sio.dumps(imputer)
    assert sorted(sio.get_untrusted_types(data=data)) == [
        "skvi._em.EMGaussianMixture",
        "skvi._imputer.GaussianMixtureImputer",
    ]
    for loaded in (pickled(imputer), skopsed(imputer)):
        assert_array_equal(loaded.transform(X), imputer.transform(X))
