"""Behaviour both estimators share: invariances, dtypes, warm start, the
caller's arrays, and the scikit-learn ecosystem."""

import io
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvi import EMGaussianMixture, VariationalGaussianMixture, _kernel

from .helpers import COVARIANCE_TYPES, all_finite, fitted_attributes, make_blobs

ESTIMATORS = [EMGaussianMixture, VariationalGaussianMixture]


@pytest.fixture(autouse=True)
def _quiet_convergence():
    # Runs with tol=0 stop at max_iter by design.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(estimator, covariance_type):
    X = make_blobs(2, n_samples=80, n_features=2, n_clusters=3)
    counts = np.random.RandomState(0).randint(0, 4, size=len(X))
    repeated_X = np.repeat(X, counts, axis=0)
    params = dict(n_components=3, covariance_type=covariance_type, tol=0.0)
    # Start both from the same initial parameters: those the weighted data
    # give (max_iter=0), handed over through warm_start.
    start = estimator(max_iter=0, random_state=0, **params).fit(X, sample_weight=counts)
    fits = []
    for data, weights in ((X, counts), (repeated_X, None)):
        model = estimator(max_iter=20, warm_start=True, **params)
        for name, value in fitted_attributes(start).items():
            setattr(model, name, value)
        fits.append(model.fit(data, sample_weight=weights))
    weighted, repeated = fits
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-9)
    assert weighted.score(X, sample_weight=counts) == pytest.approx(
        repeated.score(repeated_X), rel=1e-10
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_results_do_not_depend_on_the_chunk_size(estimator, covariance_type):
    X = make_blobs(4, n_samples=500, n_features=3, n_clusters=3)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    whole = estimator(**params).fit(X)
    # About 1 KiB per chunk: a few rows at a time.
    with sklearn.config_context(working_memory=2**-10):
        chunked = estimator(**params).fit(X)
        assert_allclose(chunked.predict_proba(X), whole.predict_proba(X), atol=1e-12)
        assert_allclose(chunked.score_samples(X), whole.score_samples(X), rtol=1e-12)
    assert chunked.n_iter_ == whole.n_iter_
    assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-12)
    assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_adding_a_constant_to_x_changes_nothing(estimator, covariance_type):
    X = make_blobs(5, n_samples=300, n_features=2, n_clusters=3)
    shift = np.array([1e6, -3e5])
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    plain = estimator(**params).fit(X)
    moved = estimator(**params).fit(X + shift)
    assert moved.n_iter_ == plain.n_iter_
    # X + shift itself is only exact to about 1e6 * eps = 2e-10.
    assert_allclose(moved.means_ - shift, plain.means_, atol=1e-8)
    assert_allclose(moved.covariances_, plain.covariances_, rtol=1e-8, atol=1e-9)
    assert moved.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-9)
    assert_allclose(moved.score_samples(X + shift), plain.score_samples(X), atol=1e-8)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_is_kept_end_to_end(estimator, covariance_type):
    X = make_blobs(6, n_samples=400, n_features=3, n_clusters=3)
    # The same number of iterations in both: where the stopping rule is near
    # its threshold, float32's rounding can stop one iteration later (tied
    # EM under OpenBLAS's SkylakeX kernels), and the parameters then differ
    # by how far EM still moves, not by float32's precision.
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        random_state=0,
        tol=0.0,
        max_iter=30,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = estimator(**params).fit(X.astype(np.float32))
        double = estimator(**params).fit(X)
    # Every fitted parameter follows X; the ELBO traces are scalars summed
    # over all rows, accumulated in float64 whatever the input.
    traces = {"lower_bounds_", "half_step_lower_bounds_", "kl_gaps_"}
    for name, value in fitted_attributes(double).items():
        if isinstance(value, np.ndarray) and name not in traces:
            assert getattr(single, name).dtype == np.float32, name
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert_allclose(getattr(single, name), getattr(double, name), rtol=2e-3)
    X32 = X.astype(np.float32)
    assert single.score_samples(X32).dtype == np.float32
    assert single.predict_proba(X32).dtype == np.float32
    assert single.sample(5)[0].dtype == np.float32
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, rel=1e-5)
    assert np.all(np.diff(single.half_step_lower_bounds_) > -1e-5)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_warm_start_continues_from_the_stored_fit(estimator):
    X = make_blobs(11, n_samples=200, n_features=2, n_clusters=3)
    long_run = estimator(n_components=3, max_iter=12, tol=0.0, random_state=0)
    long_run.fit(X)
    stepped = estimator(
        n_components=3, max_iter=3, tol=0.0, random_state=0, warm_start=True
    )
    for _ in range(4):
        stepped.fit(X)
    assert_allclose(stepped.means_, long_run.means_, rtol=1e-12)
    assert stepped.lower_bound_ == pytest.approx(long_run.lower_bound_, rel=1e-13)
    assert stepped.lower_bounds_[0] == pytest.approx(
        long_run.lower_bounds_[9], rel=1e-13
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_max_iter_zero_stores_the_initialisation(estimator):
    X = make_blobs(12, n_samples=100, n_features=2, n_clusters=2)
    model = estimator(n_components=2, max_iter=0, random_state=0).fit(X)
    assert model.n_iter_ == 0
    assert model.lower_bounds_.shape == (1,)
    assert model.half_step_lower_bounds_.shape == (1,)
    assert model.lower_bound_ == model.lower_bounds_[0]
    if isinstance(model, EMGaussianMixture):
        assert model.kl_gaps_.shape == (0,)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_caller_arrays_are_never_modified(estimator):
    X = make_blobs(7, n_samples=100, n_features=2, n_clusters=2)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, size=len(X))
    copies = (X.copy(), weights.copy())
    model = estimator(n_components=2, random_state=0).fit(X, sample_weight=weights)
    model.score(X, sample_weight=weights)
    model.predict_proba(X)
    model.elbo_decomposition(X, weights)
    assert_array_equal(copies[0], X)
    assert_array_equal(copies[1], weights)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random", "random_from_data", "hc"]
)
def test_every_init_method_fits_without_nan(estimator, covariance_type, init_params):
    X = make_blobs(8, n_samples=120, n_features=2, n_clusters=3)
    model = estimator(
        n_components=3,
        covariance_type=covariance_type,
        init_params=init_params,
        random_state=0,
    ).fit(X)
    assert all_finite(model)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert np.all(np.isfinite(model.predict_proba(X)))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_n_init_keeps_the_best_run(estimator):
    X = make_blobs(10, n_samples=200, n_features=2, n_clusters=4)
    params = dict(n_components=4, init_params="random")
    if estimator is VariationalGaussianMixture:
        # Merge moves take every start of VI to the same optimum here; the
        # runs must differ for the choice of the best to be tested.
        params["merge_components"] = False
    best = estimator(n_init=5, random_state=0, **params).fit(X)
    # The same five runs one by one: they draw from one shared generator.
    rng = np.random.RandomState(0)
    bounds = [
        estimator(random_state=rng, **params).fit(X).lower_bound_ for _ in range(5)
    ]
    assert len(set(np.round(bounds, 6))) > 1
    assert best.lower_bound_ == pytest.approx(max(bounds), rel=1e-12)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_verbose_reports_progress(estimator):
    X = make_blobs(13, n_samples=100, n_features=2, n_clusters=2)
    output = io.StringIO()
    with redirect_stdout(output):
        estimator(n_components=2, verbose=2, verbose_interval=1, random_state=0).fit(X)
    text = output.getvalue()
    assert "Initialization 0" in text
    assert "Iteration 1" in text
    assert "ELBO" in text


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_works_in_pipeline_clone_and_pickle(estimator):
    X = make_blobs(16, n_samples=300, n_features=2, n_clusters=3)
    pipeline = make_pipeline(
        StandardScaler(), estimator(n_components=3, random_state=0)
    )
    pipeline.fit(X)
    assert pipeline.predict(X).shape == (300,)
    assert np.isfinite(pipeline.score(X))

    model = estimator(n_components=3, covariance_type="diag", random_state=0).fit(X)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "means_")

    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict(X), model.predict(X))
    assert_allclose(restored.score_samples(X), model.score_samples(X))


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_never_holds_an_n_samples_by_n_components_array(estimator, covariance_type):
    # 100 000 x 25 responsibilities in float64 would take 20 MB; with 1 MiB
    # of working memory the whole fit must stay well below that. (The seeds
    # initialisation keeps KMeans, which is scikit-learn's, out of the way.)
    # What the fit holds besides grows with n x D (the data kept as columns,
    # a weight per row: 24 bytes a row here, 36% of the bound) or not at all
    # (one chunk's work buffers, about 1.3 MB). At 40 000 rows that constant
    # was most of the bound, and a pytest-xdist worker's first VI fit, which
    # also imports modules and fills caches, reached 1.004 times it. So the
    # traced fit's allocations do not depend on the tests before it: a small
    # fit pays the first use, and each thread's kept work buffers (an earlier
    # test's may be large enough or not) are dropped first. Peaks: 0.58
    # times the bound for VI, 0.59 for EM.
    import tracemalloc

    rng = np.random.RandomState(0)
    X = rng.normal(size=(100_000, 2))
    n_components = 25
    model = estimator(
        n_components=n_components,
        covariance_type=covariance_type,
        init_params="random_from_data",
        max_iter=2,
        random_state=0,
    )
    with sklearn.config_context(working_memory=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clone(model).fit(X[:100])
        _kernel._POOL.buffers.clear()
        tracemalloc.start()
        try:
            model.fit(X)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    responsibilities_bytes = X.shape[0] * n_components * 8
    assert peak < responsibilities_bytes / 3


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_too_far_for_any_density_give_no_nan(estimator, dtype):
    # Every quadratic form of these rows overflows the dtype.
    X = make_blobs(17, n_samples=100, n_features=2, n_clusters=2).astype(dtype)
    model = estimator(n_components=2, random_state=0).fit(X)
    far = np.array([[1e30, -1e30], [0.0, 0.0]], dtype=dtype)
    far[0] *= 1e150 if dtype == np.float64 else 1.0
    scores = model.score_samples(far)
    proba = model.predict_proba(far)
    assert np.all(np.isfinite(scores)) and np.all(np.isfinite(proba))
    if estimator is EMGaussianMixture:
        # A Gaussian log-likelihood below what the dtype can hold.
        assert scores[0] < -1e37
    else:
        # The Student-t predictive decays only polynomially: its log density
        # stays representable, and is computed in float64.
        assert scores[0] < scores[1] - 1e3
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_warm_start_after_changing_the_model_type_starts_afresh(estimator):
    X = make_blobs(18, n_samples=150, n_features=2, n_clusters=2)
    model = estimator(n_components=2, warm_start=True, random_state=0).fit(X)
    model.set_params(covariance_type="diag").fit(X)
    assert model.covariances_.shape == (2, 2)
    assert all_finite(model)
    if isinstance(model, VariationalGaussianMixture):
        model.set_params(weight_concentration_prior_type="dirichlet_distribution")
        model.fit(X)
        assert not isinstance(model.weight_concentration_, tuple)
