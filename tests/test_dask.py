"""Dask arrays: the distributed E-step on a real two-worker LocalCluster."""

import os
import signal
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, wait_for_numba_warmup

da = pytest.importorskip("dask.array", reason="the test extra installs dask")
import dask  # noqa: E402

# With pytest-xdist (the README's test command), these tests run in one
# worker, so one LocalCluster serves them all.
pytestmark = pytest.mark.xdist_group("dask")


@pytest.fixture(autouse=True)
def _cluster(dask_client):
    # Every test here runs on the cluster (the client is the default).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield dask_client


def clusters(seed, n_samples, n_features=3):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=6.0, size=(4, n_features))
    return centers[rng.randint(4, size=n_samples)] + rng.normal(
        size=(n_samples, n_features)
    )


def start_of(X, covariance_type):
    start = EMGaussianMixture(
        4, covariance_type=covariance_type, random_state=0, max_iter=1
    ).fit(X)
    return {
        "weights_init": start.weights_,
        "means_init": start.means_,
        "precisions_init": start.precisions_,
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_on_dask_equals_em_in_memory(covariance_type):
    X = clusters(0, 12_000)
    weights = np.random.RandomState(1).uniform(0.5, 2.0, size=len(X))
    params = dict(
        n_components=4,
        covariance_type=covariance_type,
        tol=0.0,
        max_iter=15,
        **start_of(X, covariance_type),
    )
    local = EMGaussianMixture(**params).fit(X, sample_weight=weights)
    distributed = EMGaussianMixture(**params).fit(
        da.from_array(X, chunks=(2_500, 3)),
        sample_weight=da.from_array(weights, chunks=2_500),
    )
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vi_on_dask_equals_vi_in_memory(covariance_type):
    # Up to 20 000 rows the initialisation uses every row, as in memory.
    X = clusters(2, 8_000)
    params = dict(
        n_components=5, covariance_type=covariance_type, random_state=0, tol=1e-6
    )
    local = VariationalGaussianMixture(**params).fit(X)
    distributed = VariationalGaussianMixture(**params).fit(
        da.from_array(X, chunks=(1_500, 3))
    )
    assert distributed.n_iter_ == local.n_iter_
    for name in ("weights_", "means_", "covariances_", "mean_prior_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-9)


def test_merge_moves_on_dask_equal_those_in_memory():
    # Ten components for four clusters: the default fit merges.
    X = clusters(3, 6_000)
    params = dict(n_components=10, random_state=0)
    local = VariationalGaussianMixture(**params).fit(X)
    unmerged = VariationalGaussianMixture(**params, merge_components=False).fit(X)
    assert local.lower_bound_ > unmerged.lower_bound_ + 1e-3
    distributed = VariationalGaussianMixture(**params).fit(
        da.from_array(X, chunks=(1_000, 3))
    )
    assert distributed.n_iter_ == local.n_iter_
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-9)


def test_vi_from_a_sample_reaches_the_same_optimum():
    # More rows than the initialisation draws: k-means on a sample finds
    # the same clusters, and the fit the same optimum. (Under the Dirichlet
    # process prior the bound also depends on the order of the components,
    # which a different initialisation may permute.)
    X = clusters(3, 60_000)
    params = dict(
        n_components=4,
        weight_concentration_prior_type="dirichlet_distribution",
        random_state=0,
        tol=1e-10,
        max_iter=300,
    )
    local = VariationalGaussianMixture(**params).fit(X)
    distributed = VariationalGaussianMixture(**params).fit(
        da.from_array(X, chunks=(10_000, 3))
    )
    assert distributed.lower_bound_ == pytest.approx(local.lower_bound_, abs=1e-9)
    order_local = np.lexsort(local.means_.T)
    order_dask = np.lexsort(distributed.means_.T)
    assert_allclose(
        distributed.means_[order_dask], local.means_[order_local], atol=1e-5
    )


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_predictions_stay_lazy_and_equal_the_in_memory_ones(estimator):
    X = clusters(4, 6_000)
    model = estimator(n_components=4, random_state=0).fit(X)
    Xd = da.from_array(X, chunks=(1_000, 3))
    labels, proba, log_density = (
        model.predict(Xd),
        model.predict_proba(Xd),
        model.score_samples(Xd),
    )
    for lazy in (labels, proba, log_density):
        assert isinstance(lazy, da.Array)
    assert proba.shape == (6_000, 4)
    labels, proba, log_density = dask.compute(labels, proba, log_density)
    assert_array_equal(labels, model.predict(X))
    assert_allclose(proba, model.predict_proba(X), rtol=1e-12, atol=1e-15)
    assert_allclose(log_density, model.score_samples(X), rtol=1e-12)
    weights = np.arange(6_000.0) % 3
    assert model.score(Xd, sample_weight=weights) == pytest.approx(
        model.score(X, sample_weight=weights), rel=1e-12
    )


def test_data_larger_than_a_worker_stays_on_the_workers():
    # 26 MB per block, 442 MB (422 MiB) in all: more than either worker's
    # 400 MiB, generated on the workers at every pass and never persisted:
    # three passes (validation and two E-steps). Blocks of 52 MiB, with the
    # temporaries of their generation, took a worker to its memory limit,
    # where it pauses (or dies). Each block is drawn by one task, in place,
    # with uniform noise of variance 1: a third of the workers' time of
    # normals drawn by da.random and shifted by another task, whose blocks
    # of one pass met on one worker (transfers, then spills to disk).
    def block(block_info=None):
        rows, columns = block_info[None]["chunk-shape"]
        rng = np.random.default_rng([5, block_info[None]["chunk-location"][0]])
        X = rng.random((rows, columns))
        X -= 0.5
        X *= np.sqrt(12.0)
        X += np.where(rng.random((rows, 1)) > 0.5, 4.0, -4.0)
        return X

    X = da.map_blocks(block, chunks=((250_000,) * 17, (13,)), dtype=np.float64)
    assert X.nbytes > 400 * 2**20
    tracemalloc.start()
    try:
        model = EMGaussianMixture(
            2,
            covariance_type="diag",
            max_iter=1,
            tol=0.0,
            weights_init=[0.5, 0.5],
            means_init=np.stack([np.full(13, -4.0), np.full(13, 4.0)]),
            precisions_init=np.ones((2, 13)),
        ).fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20
    assert_allclose(np.sort(model.means_[:, 0]), [-4.0, 4.0], atol=0.05)
    assert np.all(np.isfinite(model.covariances_))


def test_a_worker_killed_during_the_fit_changes_nothing(dask_client):
    # Ten blocks, 25 iterations: a fit takes about 3.5 s on a quiet 2-core
    # machine (an iteration is mostly the scheduler's round trips), so the
    # kill at 0.5 s falls within it on a machine several times faster too.
    X = clusters(6, 100_000)
    params = dict(
        n_components=4,
        covariance_type="full",
        tol=0.0,
        max_iter=25,
        **start_of(X[:5_000], "full"),
    )
    Xd = da.from_array(X, chunks=(10_000, 3))
    undisturbed = EMGaussianMixture(**params).fit(Xd)

    pids = list(dask_client.run(os.getpid).values())
    victim = threading.Timer(0.5, os.kill, args=(pids[0], signal.SIGKILL))
    started = time.perf_counter()
    victim.start()
    try:
        disturbed = EMGaussianMixture(**params).fit(Xd)
    finally:
        victim.cancel()
    assert time.perf_counter() - started > 0.5, "the fit ended before the kill"
    assert pids[0] not in dask_client.run(os.getpid).values()
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(
            getattr(disturbed, name), getattr(undisturbed, name), rtol=1e-12
        )


def test_an_infinity_in_a_block_is_found_on_the_workers():
    # More rows than the initialisation sample: the E-step's blocks, on the
    # workers, find the infinity and name its row.
    X = da.from_array(clusters(8, 30_000), chunks=(5_000, 3))
    with_inf = da.where(da.arange(30_000)[:, None] == 27_123, np.inf, X)
    with pytest.raises(ValueError, match=r"infinity \(first in row 27123\)"):
        EMGaussianMixture(
            2, max_iter=2, weights_init=[0.5, 0.5], means_init=np.zeros((2, 3))
        ).fit(with_inf.rechunk((5_000, 3)))


def test_bad_dask_input_is_explained():
    X = da.from_array(clusters(7, 1_000), chunks=(200, 3))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        EMGaussianMixture(2).fit(X[X[:, 0] > 0])
    with pytest.raises(ValueError, match=r"rechunk\(\{1: -1\}\)"):
        EMGaussianMixture(2).fit(X.rechunk((200, 1)))
    with_inf = da.where(da.arange(1_000)[:, None] == 650, -np.inf, X)
    with pytest.raises(ValueError, match=r"infinity \(first in row 650\)"):
        EMGaussianMixture(2, random_state=0, max_iter=3).fit(with_inf.rechunk((200, 3)))
    model = EMGaussianMixture(2, random_state=0).fit(X)
    message = "has 2 features, but the model was fitted with 3"
    with pytest.raises(ValueError, match=message):
        model.predict(X[:, :2])
    import dask

    with pytest.raises(TypeError, match="Expected a dask.array.Array, got Delayed"):
        model.predict(dask.delayed(np.zeros((10, 3))))


def test_information_criteria_of_a_dask_array():
    X = clusters(9, 4_000)
    model = EMGaussianMixture(4, random_state=0).fit(X)
    Xd = da.from_array(X, chunks=(1_000, 3))
    weights = np.linspace(0.5, 1.5, 4_000)
    assert model.bic(Xd) == pytest.approx(model.bic(X), rel=1e-12)
    assert model.aic(Xd, sample_weight=da.from_array(weights, chunks=1_000)) == (
        pytest.approx(model.aic(X, sample_weight=weights), rel=1e-12)
    )
    # Rows with no observed value count nowhere, as in memory.
    padded = da.concatenate([Xd, da.full((500, 3), np.nan, chunks=(500, 3))])
    assert model.bic(padded) == pytest.approx(model.bic(X), rel=1e-12)
    assert model.score(padded) == pytest.approx(model.score(X), rel=1e-12)
    assert model._criteria(padded) == pytest.approx(model._criteria(X), rel=1e-12)
    assert_allclose(
        model._effective_points(padded, None), model._effective_points(X, None)
    )


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_missing_entries_on_dask_equal_those_in_memory(estimator, covariance_type):
    X = clusters(10, 6_000)
    X[np.random.RandomState(11).uniform(size=X.shape) < 0.2] = np.nan
    params = dict(
        n_components=4, covariance_type=covariance_type, random_state=0, tol=1e-6
    )
    # The in-memory fit takes the compiled kernels: loaded, not compiled here.
    wait_for_numba_warmup()
    local = estimator(**params).fit(X)
    Xd = da.from_array(X, chunks=(1_000, 3))
    distributed = estimator(**params).fit(Xd)
    assert distributed.n_iter_ == local.n_iter_
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-9)
    # (Rows with nothing observed score 0, up to rounding.)
    assert_allclose(
        distributed.score_samples(Xd).compute(),
        local.score_samples(X),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_lazy_predictions_belong_to_the_model_they_were_asked_of(estimator):
    X = clusters(12, 2_000)
    Xd = da.from_array(X, chunks=(500, 3))
    model = estimator(n_components=2, random_state=0).fit(X)
    expected = model.predict(X), model.predict_proba(X), model.score_samples(X)
    lazy = model.predict(Xd), model.predict_proba(Xd), model.score_samples(Xd)
    # A refit with another shape, then a change to a fitted array in place.
    model.set_params(n_components=3).fit(X)
    model.means_ += 100.0
    labels, proba, log_density = dask.compute(*lazy)
    assert_array_equal(labels, expected[0])
    assert_allclose(proba, expected[1], rtol=1e-12, atol=1e-15)
    assert_allclose(log_density, expected[2], rtol=1e-12)


def test_huge_weights_are_validated_and_scaled_as_in_memory():
    X = clusters(13, 3_000)
    Xd = da.from_array(X, chunks=(700, 3))
    huge = np.full(len(X), 1e306)
    params = dict(n_components=4, random_state=0, tol=0.0, max_iter=5)
    # EM reads weights relative to each other: scaled, they fit as in memory.
    local = EMGaussianMixture(**params).fit(X, sample_weight=huge)
    distributed = EMGaussianMixture(**params).fit(
        Xd, sample_weight=da.from_array(huge, chunks=700)
    )
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-10)
    assert local.score(Xd, sample_weight=da.from_array(huge, chunks=700)) == (
        pytest.approx(local.score(X, sample_weight=huge), rel=1e-12)
    )
    # VI reads them as counts: the same clear error as in memory.
    for data in (X, Xd):
        with pytest.raises(ValueError, match="sample_weight sums to inf, more than"):
            VariationalGaussianMixture(n_components=2).fit(data, sample_weight=huge)
    # Counts of 1e301 a row (a total of 3e304) are usable: as in memory.
    large = np.full(len(X), 1e301)
    local = VariationalGaussianMixture(**params).fit(X, sample_weight=large)
    distributed = VariationalGaussianMixture(**params).fit(Xd, sample_weight=large)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(distributed, name), getattr(local, name), rtol=1e-9)


def test_weights_too_far_apart_for_float64_are_refused():
    X = clusters(14, 1_000)
    weights = np.where(np.arange(1_000) % 2, 1e300, 1e-300)
    for data in (X, da.from_array(X, chunks=(300, 3))):
        with pytest.raises(ValueError, match="sample_weight ranges from 1e-300 to"):
            EMGaussianMixture(n_components=2).fit(data, sample_weight=weights)
    # Far apart but within float64's range, every weight is kept exactly:
    # the fit is that of the same weights scaled by a power of two.
    weights = np.where(np.arange(1_000) % 2, 1e300, 1e-5)
    fits = [
        EMGaussianMixture(n_components=2, random_state=0).fit(
            da.from_array(X, chunks=(300, 3)), sample_weight=scaled
        )
        for scaled in (weights, np.ldexp(weights, -900))
    ]
    assert_array_equal(fits[0].means_, fits[1].means_)
    assert_array_equal(fits[0].lower_bounds_, fits[1].lower_bounds_)


@pytest.mark.parametrize("missing", [False, True])
def test_the_validation_pass_knows_what_the_diagnosis_asks(missing):
    # Weights far apart (their squares overflow), zero, and rows with
    # nothing observed: the validation pass's effective sample size and
    # whether entries are missing are those of the rows themselves, so the
    # diagnosis after a fit reads them instead of two more passes.
    from distributed import get_task_stream

    from skvi._dask import DaskData
    from skvi._em import _effective_sample_size

    X = clusters(16, 5_000)
    weights = np.random.RandomState(2).uniform(size=len(X)) * 1e300
    weights[::9] = 0.0
    weights[1::13] = 1e-5
    X[3::17] = np.nan
    if missing:
        X[5::11, 1] = np.nan
    Xd = da.from_array(X, chunks=(1_100, 3))
    wd = da.from_array(weights, chunks=1_100)
    data = DaskData(Xd, wd, counts=False)
    assert data.has_missing is missing
    assert data.effective_sample_size == pytest.approx(
        _effective_sample_size(Xd, wd), rel=1e-12
    )
    assert data.effective_sample_size == pytest.approx(
        _effective_sample_size(X, weights), rel=1e-12
    )
    params = dict(n_components=3, random_state=0, max_iter=3, tol=0.0)
    with get_task_stream() as stream:
        model = EMGaussianMixture(**params).fit(Xd, sample_weight=wd)
    spread_passes = {
        task["key"] for task in stream.data if "_part_sums" in str(task["key"])
    }
    # The data's spread is asked of the blocks only where entries are missing.
    assert bool(spread_passes) is missing
    local = EMGaussianMixture(**params).fit(X, sample_weight=weights)
    assert model.degenerate_ == local.degenerate_
    assert_allclose(model.means_, local.means_, rtol=1e-9)


@pytest.mark.parametrize("n_samples", [6_000, 30_000])
def test_rows_of_weight_zero_are_not_there(n_samples):
    # Rows of weight 0 far away (their squares overflow): left out of the
    # initialisation sample and of every pass, on both sides of the sample
    # size.
    X = clusters(15, n_samples)
    weights = np.ones(n_samples)
    weights[::7] = 0.0
    X[::7] = 1e200
    distributed = EMGaussianMixture(n_components=4, random_state=0).fit(
        da.from_array(X, chunks=(2_000, 3)), sample_weight=weights
    )
    assert np.all(np.abs(distributed.means_) < 100)
    if n_samples <= 20_000:
        local = EMGaussianMixture(n_components=4, random_state=0).fit(X[weights > 0])
        assert_allclose(distributed.means_, local.means_, rtol=1e-10)
    # A column observed only in rows of weight 0 is as empty as one all NaN.
    X[weights > 0, 1] = np.nan
    with pytest.raises(
        ValueError, match="Column 1 of X has no observed value"
    ) as error:
        VariationalGaussianMixture(n_components=2).fit(
            da.from_array(X, chunks=(2_000, 3)), sample_weight=weights
        )
    assert "observed only in rows of sample_weight 0" in str(error.value)


def test_the_initialisation_sample_holds_nothing_of_the_size_of_x():
    # 46 MiB generated lazily on the workers; a sample of 20 000 rows drawn
    # block by block: the client never holds an array of one entry per row
    # (an index of every row would take 24 MB).
    rng = da.random.RandomState(16)
    X = rng.normal(size=(3_000_000, 2), chunks=(375_000, 2))
    tracemalloc.start()
    try:
        model = EMGaussianMixture(2, random_state=0, max_iter=0).fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 6
    assert np.all(np.isfinite(model.means_))


def test_a_column_the_initialisation_sample_misses_is_filled_from_all_rows():
    # Column 2 is observed in one row of 60 000: a sample of 20 000 rows
    # mostly misses it, and the fit still runs, as in memory.
    X = clusters(17, 60_000)
    X[1:, 2] = np.nan
    Xd = da.from_array(X, chunks=(20_000, 3))
    for seed in (0, 3):  # a sample without that row, and one with it
        model = EMGaussianMixture(2, random_state=seed, max_iter=0).fit(Xd)
        assert_allclose(model.means_[:, 2], X[0, 2])
        assert np.all(np.isfinite(model.covariances_))


def test_distributed_workers_keep_the_numpy_corrections(dask_client):
    # numba's import and compilation cost a worker process memory its nanny
    # budgets (a 400 MiB worker was restarted while compiling until the task
    # failed): the compiled missing-entries kernels are for the client's
    # process only.
    from skvi._missing import _in_dask_worker, compiled_kernels

    assert not _in_dask_worker()
    in_worker, kernels = dask_client.submit(
        lambda: (_in_dask_worker(), compiled_kernels()), pure=False
    ).result()
    assert in_worker
    assert kernels is None


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_blocks_left_empty_by_a_filter_predict_and_score(estimator):
    # Rows filtered lazily, then compute_chunk_sizes() (what the error for
    # unknown chunk sizes asks for): some blocks hold no rows. The fit is
    # the in-memory fit of the filtered rows, and every method gives on
    # the blocks what the model gives on those rows in memory.
    X = clusters(11, 600)
    # Rows in the order of the column filtered on: its first blocks empty.
    X = X[np.argsort(X[:, 1])]
    A = da.from_array(X, chunks=(50, 3))
    kept = A[A[:, 1] > -2.0]
    kept.compute_chunk_sizes()
    assert 0 in kept.chunks[0]
    rows = X[X[:, 1] > -2.0]
    params = dict(n_components=2, covariance_type="diag", random_state=0)
    model = estimator(**params).fit(kept)
    in_memory = estimator(**params).fit(rows)
    assert_allclose(model.means_, in_memory.means_, rtol=1e-10)
    # One round trip for the three lazy results.
    labels, proba, log_density = dask.compute(
        model.predict(kept), model.predict_proba(kept), model.score_samples(kept)
    )
    assert_array_equal(labels, model.predict(rows))
    assert_allclose(proba, model.predict_proba(rows), rtol=1e-12)
    assert_allclose(log_density, model.score_samples(rows), rtol=1e-12)
    assert model.score(kept) == pytest.approx(model.score(rows), rel=1e-12)
    if estimator is EMGaussianMixture:
        assert model.bic(kept) == pytest.approx(model.bic(rows), rel=1e-12)
