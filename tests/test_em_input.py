"""Bad input: a clear error naming the problem and the remedy, never a NaN
result or a LinAlgError from deep inside, and the caller's arrays intact."""

import numpy as np
import pytest
import scipy.sparse as sp

from skvi import DegenerateComponentError, EMGaussianMixture

from .helpers import COVARIANCE_TYPES, all_finite, make_blobs

X_GOOD = make_blobs(0, n_samples=60, n_features=2, n_clusters=2)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_values_are_rejected(bad):
    # NaN is a missing entry (tests/test_missing.py); infinity is an error.
    X = X_GOOD.copy()
    X[3, 1] = bad
    with pytest.raises(ValueError, match="infinity"):
        EMGaussianMixture(2).fit(X)
    model = EMGaussianMixture(2, random_state=0).fit(X_GOOD)
    with pytest.raises(ValueError, match="infinity"):
        model.predict(X)


def test_array_input_sets_the_feature_attributes_as_sklearn_does():
    # Arrays that need no conversion skip scikit-learn's validate_data
    # (skvi._validation.validate_rows); the fitted attributes, the
    # conversions and the warnings are the same.
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X_GOOD, columns=["a", "b"])
    model = EMGaussianMixture(2, random_state=0).fit(frame)
    assert list(model.feature_names_in_) == ["a", "b"]
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        model.predict(X_GOOD)
    model.fit(X_GOOD)
    assert model.n_features_in_ == 2
    assert not hasattr(model, "feature_names_in_")
    for X in (X_GOOD.astype(np.float32), np.asfortranarray(X_GOOD), X_GOOD[::2]):
        fitted = EMGaussianMixture(2, random_state=0).fit(X)
        assert fitted.means_.dtype == X.dtype
    integers = EMGaussianMixture(2, random_state=0).fit(
        np.round(10 * X_GOOD).astype(int)
    )
    assert integers.means_.dtype == np.float64
    with pytest.raises(ValueError, match="1D array"):
        EMGaussianMixture(1).fit(X_GOOD[:, 0])


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match="0 sample"):
        EMGaussianMixture(1).fit(np.empty((0, 2)))
    with pytest.raises(ValueError, match="0 feature"):
        EMGaussianMixture(1).fit(np.empty((5, 0)))


def test_fewer_samples_than_components_is_rejected():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        EMGaussianMixture(5).fit(X_GOOD[:3])
    # Zero-weight rows do not count.
    weights = np.zeros(len(X_GOOD))
    weights[:2] = 1.0
    with pytest.raises(ValueError, match="positive weight"):
        EMGaussianMixture(3).fit(X_GOOD, sample_weight=weights)


def test_wrong_number_of_features_at_predict():
    model = EMGaussianMixture(2, random_state=0).fit(X_GOOD)
    with pytest.raises(ValueError, match="3 features.*expecting 2 features"):
        model.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="3 features.*expecting 2 features"):
        model.score_samples(np.ones((4, 3)))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (-np.ones(60), "negative"),
        (np.zeros(60), "zero for every sample"),
        (np.ones(59), r"shape \(59,\).*60 samples"),
        (np.full(60, np.nan), "NaN or infinity"),
    ],
)
def test_bad_sample_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        EMGaussianMixture(2).fit(X_GOOD, sample_weight=weights)


def test_a_data_frame_column_that_is_no_number_is_named():
    # NumPy's words ("float() argument must be ... not 'NAType'", a dtype
    # promotion error) named neither the column nor the remedy.
    pd = pytest.importorskip("pandas")
    X = make_blobs(17, n_samples=40, n_features=2, n_clusters=2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    cases = {
        "when": (pd.date_range("2020-01-01", periods=40), "holds dates or times"),
        "kind": (pd.Categorical(["x", "y"] * 20), "holds 'x', which is no number"),
        "label": (np.array(["x", "y"] * 20, dtype=object), "holds 'x'"),
        "score": (
            pd.Series([1.5, pd.NA] + [2.0] * 38, dtype=object),
            "holds <NA> among Python objects",
        ),
    }
    for name, (column, message) in cases.items():
        bad = frame.assign(**{name: column})
        with pytest.raises(ValueError, match=f"Column '{name}' of X.*{message}"):
            EMGaussianMixture(2, random_state=0).fit(bad)
    # Converted as the message says, pd.NA is a missing value.
    fixed = frame.assign(score=cases["score"][0].astype("Float64"))
    assert EMGaussianMixture(2, random_state=0).fit(fixed).n_features_in_ == 3


def test_sparse_input_is_rejected_with_the_remedy():
    with pytest.raises(TypeError, match="toarray"):
        EMGaussianMixture(2).fit(sp.csr_matrix(X_GOOD))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_components": 0}, "n_components"),
        ({"covariance_type": "banana"}, "covariance_type"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"init_params": "nope"}, "init_params"),
        ({"weights_init": [0.5, 0.6]}, "weights_init must sum to 1"),
        ({"weights_init": [0.5, 0.5, 0.0]}, r"weights_init must have shape \(2,\)"),
        ({"means_init": np.zeros((3, 2))}, r"means_init must have shape \(2, 2\)"),
        ({"precisions_init": -np.ones((2, 2, 2))}, "precisions_init"),
    ],
)
def test_bad_parameters_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        EMGaussianMixture(**{"n_components": 2, **params}).fit(X_GOOD)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_must_be_valid_for_its_type(covariance_type):
    bad = {
        "full": np.array([[[1.0, 2.0], [2.0, 1.0]]] * 2),
        "tied": np.array([[1.0, 0.5], [0.4, 1.0]]),
        "diag": np.array([[1.0, 0.0], [1.0, 1.0]]),
        "spherical": np.array([1.0, -1.0]),
    }[covariance_type]
    with pytest.raises(ValueError, match="precisions_init"):
        EMGaussianMixture(2, covariance_type=covariance_type, precisions_init=bad).fit(
            X_GOOD
        )


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_a_component_collapsing_onto_a_point_says_how_to_fix_it(covariance_type):
    # Ten copies of one point, seeded as a component so sharp that every
    # other row's responsibility underflows to 0: after one M-step its
    # covariance is exactly zero without reg_covar.
    X = np.vstack([np.tile([[50.0, 50.0]], (10, 1)), X_GOOD])
    sharp, broad = 1e6, 1e-2
    precisions = {
        "full": np.array([sharp * np.eye(2), broad * np.eye(2)]),
        "diag": np.array([[sharp, sharp], [broad, broad]]),
        "spherical": np.array([sharp, broad]),
    }[covariance_type]
    inits = dict(
        weights_init=[0.5, 0.5],
        means_init=np.array([[50.0, 50.0], X_GOOD.mean(axis=0)]),
        precisions_init=precisions,
    )
    model = EMGaussianMixture(
        2, covariance_type=covariance_type, reg_covar=0.0, **inits
    )
    with pytest.raises(DegenerateComponentError, match="Component 0 collapsed") as info:
        model.fit(X)
    assert "Increase reg_covar" in str(info.value)
    assert isinstance(info.value, ValueError)
    # The default reg_covar keeps it proper, and nothing is NaN.
    fitted = EMGaussianMixture(2, covariance_type=covariance_type, **inits)
    fitted.fit(X)
    assert all_finite(fitted)
    assert np.all(np.isfinite(fitted.score_samples(X)))


@pytest.mark.parametrize("random_state", range(10))
@pytest.mark.parametrize(
    ("covariance_type", "n_components", "message"),
    [("tied", 2, "tied covariance collapsed"), ("full", 1, "collapsed")],
)
def test_collapse_to_rounding_is_caught(
    covariance_type, n_components, message, random_state
):
    # All rows on a line: the (pooled) covariance is singular. From some
    # k-means starts rounding left its computed value positive definite
    # (a pivot 1e-33 of its variance), Cholesky accepted it and the fit ran
    # on with a bound that went down; every start must say it collapsed.
    X = np.column_stack([np.arange(20.0), 2 * np.arange(20.0)])
    model = EMGaussianMixture(
        n_components,
        covariance_type=covariance_type,
        reg_covar=0.0,
        random_state=random_state,
    )
    with pytest.raises(DegenerateComponentError, match=message):
        model.fit(X)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_init_leaving_a_component_empty_is_explained():
    # Fewer distinct rows than components.
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, axis=0)
    with pytest.raises(ValueError, match="fewer distinct rows than n_components"):
        EMGaussianMixture(3, random_state=0).fit(X)


def test_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        EMGaussianMixture().predict(X_GOOD)
    with pytest.raises(NotFittedError):
        EMGaussianMixture().sample(3)


def test_sample_needs_a_positive_count():
    model = EMGaussianMixture(2, random_state=0).fit(X_GOOD)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        model.sample(0)


def test_bad_responsibilities_for_the_decomposition():
    model = EMGaussianMixture(2, random_state=0).fit(X_GOOD)
    with pytest.raises(ValueError, match="shape"):
        model.elbo_decomposition(X_GOOD, responsibilities=np.ones((60, 3)) / 3)
    with pytest.raises(ValueError, match="sum to 1"):
        model.elbo_decomposition(X_GOOD, responsibilities=np.ones((60, 2)))
