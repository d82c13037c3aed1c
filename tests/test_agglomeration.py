"""The model-based hierarchical agglomeration behind ``init_params="hc"``."""

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from skvi import (
    EMGaussianMixture,
    VariationalGaussianMixture,
    _agglomeration,
    select_model,
)
from skvi._agglomeration import (
    MAX_AGGLOMERATED_ROWS,
    _stored_scatter,
    agglomerate,
    agglomerate_mclust,
    agglomerate_ward,
)
from skvi.datasets import load_old_faithful

from .helpers import COVARIANCE_TYPES, make_blobs


def brute_force_merges(Z, weights):
    """Agglomerate by pricing every pair from its rows at each step.

    A cluster of weight n and scatter W costs n log(det(W/n) + (tr W +
    alpha)/n) (Fraley 1998's regularised unconstrained model, beta = 1),
    alpha being the trace of the data's scatter over n D. Each cost is
    computed from the cluster's rows (no update of a merged cluster's
    statistics); a cluster's cost is kept by its rows, in their order,
    since the pairs that a merge does not touch ask for the same costs
    at every step.
    """
    weights = weights / weights.mean()
    m, p = Z.shape
    center = weights @ Z / weights.sum()
    alpha = np.sum(weights @ (Z - center) ** 2) / (weights.sum() * p)
    known = {}

    def cost(rows):
        key = tuple(rows)
        if key not in known:
            known[key] = priced(rows)
        return known[key]

    def priced(rows):
        w = weights[rows]
        n = w.sum()
        deviations = Z[rows] - w @ Z[rows] / n
        W = (deviations.T * w) @ deviations
        det = np.linalg.det(W / n) if len(rows) > p else 0.0
        return n * np.log(det + (np.trace(W) + alpha) / n)

    def rise(first, second):
        return cost(first + second) - cost(first) - cost(second)

    clusters = {row: [row] for row in range(m)}
    merges, rises = [], []
    while len(clusters) > 1:
        leaders = sorted(clusters)
        candidates = [
            (rise(clusters[a], clusters[b]), a, b)
            for i, a in enumerate(leaders)
            for b in leaders[i + 1 :]
        ]
        smallest, a, b = min(candidates)
        merges.append((a, b))
        rises.append(smallest)
        clusters[a] += clusters.pop(b)
    return np.array(merges), np.array(rises)


@pytest.mark.parametrize("n_features", [1, 2, 3, 5])
@pytest.mark.parametrize("weighted", [False, True])
def test_merges_match_a_brute_force_agglomeration(n_features, weighted):
    # 5 features take the general determinant; 1 to 3 the explicit ones.
    rng = np.random.RandomState(n_features)
    X = rng.normal(size=(24, n_features)) * rng.uniform(0.1, 50, size=n_features)
    weights = rng.uniform(0.2, 3.0, size=24) if weighted else np.ones(24)
    tree = agglomerate(X, weights if weighted else None)
    merges, rises = brute_force_merges(tree.transform(X), weights)
    assert_array_equal(tree.merges, merges)
    assert_allclose(tree.costs, rises, rtol=1e-10, atol=1e-10)


def test_coordinates_are_mclust_scaled_svd():
    # hcUse="SVD": standardise (n - 1), then X_s V D^(-1/2) for X_s = U D V^T,
    # whose Gram matrix is U D U^T whatever the signs of the vectors.
    X = make_blobs(0, n_samples=60, n_features=3) * [1.0, 20.0, 0.01]
    tree = agglomerate(X)
    standardised = (X - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    u, d, _ = np.linalg.svd(standardised, full_matrices=False)
    Z = tree.transform(X)
    assert_allclose(Z @ Z.T, (u * d) @ u.T, atol=1e-12)


def test_tree_does_not_depend_on_units_or_offsets():
    X = make_blobs(1, n_samples=150, n_features=3)
    moved = X * [1000.0, 1.0, 0.001] + [5.0, -1e4, 3.0]
    with_constant = np.column_stack([X, np.full(len(X), 7.0)])
    trees = [agglomerate(data) for data in (X, moved, with_constant)]
    for k in range(1, 12):
        assert_array_equal(trees[1].labels(k), trees[0].labels(k))
        assert_array_equal(trees[2].labels(k), trees[0].labels(k))


def test_hc_start_does_not_depend_on_units():
    X = make_blobs(2, n_samples=150, n_features=2)
    moved = X * [1000.0, 1.0] + [3.0, 0.0]
    params = dict(n_components=3, init_params="hc", max_iter=0)
    ours = EMGaussianMixture(**params).fit(X)
    scaled = EMGaussianMixture(**params).fit(moved)
    assert_allclose(scaled.means_, ours.means_ * [1000.0, 1.0] + [3.0, 0.0])


def test_duplicate_rows_merge_first():
    rng = np.random.RandomState(3)
    distinct = rng.normal(size=(20, 2))
    repeats = rng.randint(1, 4, size=20)
    X = np.repeat(distinct, repeats, axis=0)[rng.permutation(repeats.sum())]
    tree = agglomerate(X)
    n_duplicates = len(X) - 20
    first = tree.merges[:n_duplicates]
    assert_array_equal(X[first[:, 0]], X[first[:, 1]])
    assert np.all(tree.costs[:n_duplicates] < 0)
    # Cut at the number of distinct rows: one cluster per distinct row.
    labels = tree.labels(20)
    _, groups = np.unique(X, axis=0, return_inverse=True)
    assert len(np.unique(labels * 100 + groups.ravel())) == 20


def test_partitions_do_not_depend_on_the_order_of_rows():
    # Old Faithful has 16 repeated rows: the only exactly tied merges, which
    # a new order of the rows breaks differently. No cut may depend on it.
    X = load_old_faithful().data
    order = np.random.RandomState(6).permutation(len(X))
    tree, shuffled = agglomerate(X), agglomerate(X[order])
    for k in range(1, 10):
        ours, theirs = tree.labels(k)[order], shuffled.labels(k)
        # The same partition: each cluster of one is a cluster of the other.
        assert len(np.unique(ours * k + theirs)) == k


def test_only_relative_weights_matter():
    X = make_blobs(4, n_samples=80, n_features=2)
    weights = np.random.RandomState(4).uniform(0.5, 2.0, size=80)
    reference = agglomerate(X, weights).merges
    assert_array_equal(agglomerate(X, 3.0 * weights).merges, reference)
    assert_array_equal(agglomerate(X, np.full(80, 0.3)).merges, agglomerate(X).merges)


def test_one_tree_serves_every_number_of_clusters():
    X = make_blobs(5, n_samples=90, n_features=2, n_clusters=4)
    tree = agglomerate(X)
    previous = tree.labels(1)
    assert_array_equal(previous, 0)
    for k in range(2, 10):
        labels = tree.labels(k)
        assert len(np.unique(labels)) == k
        # Cutting at k splits exactly one cluster of the cut at k - 1.
        pairs = np.unique(np.column_stack([previous, labels]), axis=0)
        assert_array_equal(np.unique(pairs[:, 1]), np.arange(k))
        assert len(pairs) == k
        # The hc start of a k-component model is the cut at k.
        start = EMGaussianMixture(n_components=k, init_params="hc", max_iter=0).fit(X)
        means = np.array([X[labels == j].mean(axis=0) for j in range(k)])
        assert_allclose(start.means_, means, rtol=1e-12)
        previous = labels


def test_cuts_are_kept_read_only_and_equal_a_fresh_trees():
    # Every covariance type of a selection cuts the tree at the same K:
    # the cut is made once and shared, so no caller may write into it.
    X = make_blobs(6, n_samples=70, n_features=3, n_clusters=3)
    tree = agglomerate(X)
    first = tree.labels(4)
    assert tree.labels(4) is first
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1
    assert_array_equal(first, agglomerate(X).labels(4))


def test_large_data_agglomerates_a_subsample():
    rng = np.random.RandomState(6)
    X = make_blobs(6, n_samples=5000, n_features=2)
    _agglomeration._TREES.trees.clear()
    model = EMGaussianMixture(
        n_components=3, init_params="hc", max_iter=0, random_state=rng
    ).fit(X)
    (tree,) = _agglomeration._TREES.trees.values()
    assert tree.n_samples == MAX_AGGLOMERATED_ROWS
    # Replay the start: the sample's cut, then every row to its nearest
    # cluster mean in the tree's coordinates.
    sample = np.sort(
        np.random.RandomState(6).choice(len(X), MAX_AGGLOMERATED_ROWS, replace=False)
    )
    cut = tree.labels(3)
    Z = tree.transform(X)
    centers = np.array([Z[sample][cut == k].mean(axis=0) for k in range(3)])
    labels = np.argmin(((Z[:, None] - centers) ** 2).sum(axis=2), axis=1)
    labels[sample] = cut
    means = np.array([X[labels == k].mean(axis=0) for k in range(3)])
    assert_allclose(model.means_, means, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_hc_on_old_faithful_is_at_least_as_good_as_kmeans(covariance_type):
    # Run to convergence so that the optima, not the stopping points, are
    # compared. (At K = 5, full and diag, k-means' start finds the better
    # optimum; both are local.)
    X = load_old_faithful().data
    for k in range(1, 5):
        fits = [
            EMGaussianMixture(
                n_components=k,
                covariance_type=covariance_type,
                init_params=init,
                tol=1e-10,
                max_iter=3000,
                random_state=0,
            ).fit(X)
            for init in ("hc", "kmeans")
        ]
        hc, kmeans = (fit.score(X) for fit in fits)
        assert hc >= kmeans - 1e-9 * abs(kmeans)


def test_select_model_starts_from_one_tree_and_picks_mclusts_model():
    X = load_old_faithful().data
    _agglomeration._MCLUST_TREES.trees.clear()
    builds = _agglomeration._MCLUST_TREES.builds
    table, best = select_model(X, n_components=range(1, 6), as_frame=False)
    assert _agglomeration._MCLUST_TREES.builds == builds + 1
    # One tree (mclust's) for all five numbers of components and fourteen
    # models; mclust's Mclust picks EEE with 3 components.
    assert len(table) == 5 * 14
    assert (best.n_components, best.covariance_type) == (3, "EEE")
    assert best.init_params == "hc_mclust"
    _, kmeans = select_model(
        X, n_components=[2], covariance_types="full", init_params="kmeans"
    )
    assert kmeans.init_params == "kmeans"


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_hc_with_missing_entries_and_weights(estimator):
    X = make_blobs(7, n_samples=100, n_features=3)
    X[::7, 1] = np.nan
    weights = np.random.RandomState(7).uniform(0.0, 2.0, size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(n_components=3, init_params="hc", random_state=0).fit(
            X, sample_weight=weights
        )
    assert np.all(np.isfinite(model.means_))


def test_select_model_vi_starts_from_hc():
    X = make_blobs(8, n_samples=100, n_features=2)
    _, best = select_model(X, n_components=[1, 3], method="vi", random_state=0)
    assert best.init_params == "hc_mclust"


def test_hc_start_of_a_dask_array_and_of_partial_fit():
    X = load_old_faithful().data
    params = dict(n_components=3, covariance_type="tied", init_params="hc")
    in_memory = EMGaussianMixture(**params).fit(X)
    chunked = EMGaussianMixture(**params).fit(da.from_array(X, chunks=100))
    assert_allclose(chunked.means_, in_memory.means_, rtol=1e-10)
    online = EMGaussianMixture(**params)
    for batch in np.array_split(X, 4):
        online.partial_fit(batch)
    assert np.all(np.isfinite(online.means_))


def test_hc_keeps_float32():
    X = load_old_faithful().data.astype(np.float32)
    model = VariationalGaussianMixture(n_components=3, init_params="hc").fit(X)
    assert model.means_.dtype == np.float32


def _same_partition(a, b):
    pairs = np.unique(np.column_stack([a, b]), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_ward_tree_cuts_are_scipys_and_ignore_units():
    from scipy.cluster.hierarchy import fcluster, ward

    X = load_old_faithful().data
    tree = agglomerate_ward(X)
    linkage = ward(tree.transform(X))
    rescaled = agglomerate_ward(X * [1000.0, 0.01] + [5.0, -3.0])
    for k in range(1, 10):
        labels = tree.labels(k)
        assert len(np.unique(labels)) == k
        assert _same_partition(labels, fcluster(linkage, k, "maxclust"))
        assert_array_equal(rescaled.labels(k), labels)
    # Sum-of-squares rises of Ward's merges never fall.
    assert np.all(np.diff(tree.costs) >= -1e-12 * tree.costs.max())
    with pytest.raises(ValueError, match="sample weights"):
        agglomerate_ward(X, np.arange(1.0, len(X) + 1.0))


@pytest.mark.parametrize("n_features", [2, 3, 5])
def test_mclust_tree_stores_copies_of_the_factors_first_row(n_features):
    # hcVVV keeps min(rows - 1, D) stored rows, each a copy of the first row
    # of the cluster's upper triangular factor, read from column i on.
    rng = np.random.RandomState(n_features)
    rows = rng.normal(size=(9, n_features))
    deviations = rows - rows.mean(axis=0)
    W = deviations.T @ deviations
    factor = np.linalg.cholesky(W).T
    for size in (2, 3, 4, 9):
        stored = min(size - 1, n_features)
        kept = np.zeros((n_features, n_features))
        for i in range(stored):
            row = factor[0].copy()
            row[:i] = 0.0
            kept += np.outer(row, row)
        expected = W if size <= 2 else kept
        assert_allclose(_stored_scatter(W, float(size)), expected, rtol=1e-12)


def test_mclust_tree_cuts_old_faithful_as_mclust_does():
    # Cluster sizes of R mclust 6.0's hclass(hc(faithful), 2:5), read from R
    # when the tree was written; skvi's exact tree cuts 2 clusters of 98
    # and 174. mclust's first merges grow one cluster from a repeated row.
    X = load_old_faithful().data
    tree = agglomerate_mclust(X)
    mclust_sizes = [[97, 175], [40, 97, 135], [32, 40, 65, 135], [32, 40, 65, 65, 70]]
    for k, sizes in zip(range(2, 6), mclust_sizes, strict=True):
        assert sorted(np.bincount(tree.labels(k))) == sizes
    first = tree.merges[:4]
    assert len(np.unique(first[:, 0])) < 4
    assert_array_equal(agglomerate_mclust(X * 1000.0 + 3.0).merges, tree.merges)


def test_mclust_tree_prices_like_the_exact_one_until_a_cluster_has_three_rows():
    # Rows in general position (no ties): the trees part only after the
    # first merge that makes a cluster of three rows, whose stored factor
    # then differs (that merge itself is priced from pairs and singletons).
    X = make_blobs(9, n_samples=40, n_features=3)
    exact, mclust = agglomerate(X), agglomerate_mclust(X)
    sizes = np.ones(len(X), dtype=int)
    step = 0
    while True:
        a, b = exact.merges[step]
        sizes[a] += sizes[b]
        if sizes[a] >= 3:
            break
        step += 1
    assert step >= 1
    assert_array_equal(mclust.merges[: step + 1], exact.merges[: step + 1])
    assert_allclose(mclust.costs[: step + 1], exact.costs[: step + 1], rtol=1e-12)
    # Later merges of that cluster are priced from its stored rows.
    assert not np.allclose(mclust.costs, exact.costs, rtol=1e-9)


def test_hc_mclust_start_and_select_model():
    X = load_old_faithful().data
    tree = agglomerate_mclust(X)
    start = EMGaussianMixture(n_components=3, init_params="hc_mclust", max_iter=0)
    start.fit(X)
    labels = tree.labels(3)
    means = np.array([X[labels == j].mean(axis=0) for j in range(3)])
    assert_allclose(start.means_, means, rtol=1e-12)
    table, best = select_model(
        X, n_components=[3], covariance_types="tied", init_params="hc_mclust"
    )
    assert best.init_params == "hc_mclust"
