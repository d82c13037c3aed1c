"""The E-step kernel against the exact per-component computation.

The kernel (skvi/_kernel.py) evaluates every component's quadratic form as
matrix products over expanded row features, about a shared center or about
each row's nearest component mean. Here its values, responsibilities and
statistics are compared with a direct computation that subtracts each
component's mean from each row in float64, on random problems: every
covariance type, float32 and float64 rows, data offset by 1e6, clusters 1e5
standard deviations apart, sample weights, and chunks down to one row.

Values are checked against the rounding bound of the expansion: a sum of
terms t_j computed in precision u is off by at most about (number of
terms) * u * sum_j |t_j|. A wrong coefficient would be off by a whole term.
"""

import warnings

import numpy as np
import pytest
import sklearn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

import skvi._kernel as kernel
import skvi._stats as stats_module
from skvi import EMGaussianMixture, VariationalGaussianMixture
from skvi._covariance import covariance_unit
from skvi._stats import ArrayData, e_step

from .helpers import (
    COVARIANCE_TYPES,
    HYPOTHESIS_EXAMPLES,
    dense_covariances,
    ill_conditioned_blobs,
    whitens,
)

PROPERTY_SETTINGS = settings(
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def problems(draw):
    """Rows, weights and a random mixture's parameters in one unit's layout."""
    covariance_type = draw(st.sampled_from(COVARIANCE_TYPES))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n_features = draw(st.integers(1, 5))
    n_components = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["overlapping", "separated", "far apart"]))
    offset = draw(st.sampled_from([0.0, -50.0, 1e6]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    spread = {"overlapping": 1.0, "separated": 8.0, "far apart": 1e5}[layout]
    means = rng.normal(scale=spread, size=(n_components, n_features)) + offset
    labels = rng.randint(n_components, size=60)
    X = means[labels] + rng.normal(size=(60, n_features)) * rng.uniform(0.3, 2.0)
    weights = rng.uniform(0.0, 3.0, size=60) if draw(st.booleans()) else np.ones(60)
    unit = covariance_unit(covariance_type, n_components, n_features)
    precisions = _random_precisions(rng, covariance_type, n_components, n_features)
    return {
        "unit": unit,
        "X": X.astype(dtype),
        "weights": weights,
        "means": (means + rng.normal(scale=0.5, size=means.shape)).astype(dtype),
        "precisions": precisions,
        "mixing": rng.dirichlet(np.ones(n_components)),
        "offsets": rng.normal(scale=3.0, size=n_components),
    }


def _random_precisions(rng, covariance_type, n_components, n_features):
    def spd():
        root = rng.normal(size=(n_features, n_features))
        return root @ root.T + rng.uniform(0.2, 2.0) * np.eye(n_features)

    if covariance_type == "full":
        return np.stack([spd() for _ in range(n_components)])
    if covariance_type == "tied":
        return spd()
    if covariance_type == "diag":
        return rng.uniform(0.2, 3.0, size=(n_components, n_features))
    return rng.uniform(0.2, 3.0, size=n_components)


class _Layout:
    """Just enough of a fitted model for helpers.dense_covariances."""

    def __init__(self, problem):
        unit = problem["unit"]
        self.covariance_type = unit.name
        self.n_components = unit.n_components
        self.means_ = np.asarray(problem["means"], dtype=float)
        # dense_covariances expands any layout; here it expands precisions.
        self.covariances_ = problem["precisions"]


def dense_precisions(problem):
    return np.asarray(dense_covariances(_Layout(problem)))


def plan_for(problem, scale=-0.5):
    unit = problem["unit"]
    precisions = problem["precisions"]
    return kernel.parameter_expansion(
        unit,
        problem["means"],
        precisions,
        unit.cholesky_from_precision(precisions),
        problem["mixing"],
        problem["X"].dtype,
        scale=scale,
        offsets=problem["offsets"],
    )


def reference_values(problem, scale=-0.5):
    """(K, n) values, each mean subtracted from each row in float64."""
    X = problem["X"].astype(float)
    means = np.asarray(problem["means"], dtype=float)
    dense = dense_precisions(problem)
    quad = np.stack(
        [
            np.einsum("ni,ij,nj->n", X - m, p, X - m)
            for m, p in zip(means, dense, strict=True)
        ]
    )
    return scale * quad + problem["offsets"][:, np.newaxis]


def expansion_bound(problem, plan, scale=-0.5):
    """Sum of |terms| of each value as the kernel expands it, shape (K, n).

    For a row about center c (e = x - c) and component k (d = m_k - c):
    |e|^T |L| |e| + 2 |e|^T |L d| + |d^T L d| + |offset|.
    """
    X = problem["X"].astype(float)
    means = np.asarray(problem["means"], dtype=float)
    dense = dense_precisions(problem)
    if plan.n_groups == 1:
        centers = np.broadcast_to(plan.centers[0], X.shape)
    else:
        centers = plan.centers[plan.nearest_centers(problem["X"])]
    e = np.abs(X - centers)
    bound = np.empty((len(means), len(X)))
    for k, (m, p) in enumerate(zip(means, dense, strict=True)):
        d = m - centers
        bound[k] = (
            np.einsum("ni,ij,nj->n", e, np.abs(p), e)
            + 2 * np.einsum("ni,ni->n", e, np.abs(d @ p))
            + np.abs(np.einsum("ni,ij,nj->n", d, p, d))
        )
    return abs(scale) * bound + np.abs(problem["offsets"])[:, np.newaxis]


def rounding(dtype, plan):
    """Terms per value (features, plus rounding of rows, features and
    coefficients) times the unit roundoff of the dtype."""
    return (plan.n_features_total + 8) * np.finfo(dtype).eps


@PROPERTY_SETTINGS
@given(problems())
def test_values_equal_the_per_component_computation(problem):
    plan = plan_for(problem)
    values = kernel.row_values(plan, problem["X"], np.float64)
    expected = reference_values(problem)
    bound = expansion_bound(problem, plan)
    tolerance = rounding(problem["X"].dtype, plan) * bound + 1e-13 * bound
    assert np.all(np.abs(values - expected) <= tolerance)


@PROPERTY_SETTINGS
@given(problems(), st.sampled_from([2**-10, 2**-14, 1024]))
def test_statistics_equal_the_per_component_computation(problem, working_memory):
    # working_memory=2**-14 MiB (64 bytes) leaves one row per chunk.
    X, weights, unit = problem["X"], problem["weights"], problem["unit"]
    plan = plan_for(problem)
    with sklearn.config_context(working_memory=working_memory):
        chunks = plan.chunks(len(X))
        statistics_pass = kernel.StatisticsPass(
            plan, max(c.stop - c.start for c in chunks)
        )
        for rows in chunks:
            statistics_pass.add_optimal(X[rows], weights[rows])
    reference, total, nk, sum_x, sum_xx, log_normalizer = statistics_pass.totals()

    values = reference_values(problem)
    top = values.max(axis=0)
    resp = np.exp(values - top)
    log_norm = np.log(resp.sum(axis=0)) + top
    resp /= resp.sum(axis=0)
    weighted = resp * weights
    exact_nk = weighted.sum(axis=1)
    x64 = X.astype(float)
    # Moments about the kernel's own reference points, directly.
    exact_sum_x = np.stack(
        [w @ (x64 - r) for w, r in zip(weighted, reference, strict=True)]
    )
    scale = 1.0 + np.abs(x64 - x64.mean(axis=0)).max()
    assert total == pytest.approx(weights.sum(), rel=1e-12)
    # The values' rounding moves the responsibilities of rows on a
    # boundary; in float64 the expansion keeps 12 digits.
    tol = 1e-9 if X.dtype == np.float64 else 1e-4
    assert_allclose(nk, exact_nk, rtol=tol, atol=tol * weights.sum())
    assert_allclose(sum_x, exact_sum_x, rtol=tol, atol=tol * weights.sum() * scale)
    assert log_normalizer == pytest.approx(
        np.dot(weights, log_norm), rel=tol, abs=tol * weights.sum()
    )
    # The second moments, in the unit's layout, about the same references.
    exact_xx = unit.zero_second_moment()
    for k in range(unit.n_components):
        diff = x64 - reference[k]
        outer = (diff * weighted[k][:, np.newaxis]).T @ diff
        if unit.name == "full":
            exact_xx[k] = outer
        elif unit.name == "tied":
            exact_xx += outer
        elif unit.name == "diag":
            exact_xx[k] = np.diag(outer)
        else:
            exact_xx[k] = np.trace(outer)
    assert_allclose(sum_xx, exact_xx, rtol=tol, atol=tol * weights.sum() * scale**2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_local_and_shared_centers_give_the_same_fit(
    monkeypatch, covariance_type, estimator
):
    # Moderately separated clusters, where both layouts are accurate.
    rng = np.random.RandomState(0)
    centers = rng.normal(scale=5.0, size=(4, 3))
    X = centers[rng.randint(4, size=800)] + rng.normal(size=(800, 3))
    params = dict(
        n_components=4,
        covariance_type=covariance_type,
        random_state=0,
        tol=0.0,
        max_iter=15,
    )
    fits = {}
    for name, limit in (("shared", np.inf), ("local", 0.0)):
        monkeypatch.setitem(kernel.LOSS_LIMIT, np.dtype(np.float64), limit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name] = estimator(**params).fit(X)
    shared, local = fits["shared"], fits["local"]
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(local, name), getattr(shared, name), rtol=1e-9)
    assert_allclose(local.score_samples(X), shared.score_samples(X), rtol=1e-10)


@pytest.mark.parametrize(
    "separation, groups",
    [
        (0.5, {np.float64: 1, np.float32: 1}),  # nearly coincident means
        (4.0, {np.float64: 1, np.float32: 2}),  # float32 has no digits to spare
        (1e5, {np.float64: 2, np.float32: 2}),  # one center would lose them all
    ],
)
def test_local_centers_where_one_center_would_lose_digits(separation, groups):
    unit = covariance_unit("full", 2, 2)
    means = np.array([[0.0, 0.0], [separation, 0.0]])
    precisions = np.stack([np.eye(2), np.eye(2)])
    found = {}
    for dtype in (np.float64, np.float32):
        plan = kernel.parameter_expansion(
            unit, means, precisions, precisions, np.ones(2), dtype, -0.5, np.zeros(2)
        )
        found[dtype] = plan.n_groups
    assert found == groups


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full"])
def test_a_column_one_component_holds_constant_keeps_one_center(covariance_type):
    # Component 0's rows are all 0 in column 0 (precision 1 / reg_covar
    # there, as on a digit's blank border); component 1 spreads about 6.
    # The weighted mean of the means sits 3 from component 0's mean, F near
    # 1e7; weighted by precisions, the center sits at component 0's value.
    rng = np.random.RandomState(0)
    n_features = 3
    unit = covariance_unit(covariance_type, 2, n_features)
    means = np.array([[0.0, 1.0, -1.0], [6.0, 0.0, 1.0]])
    variances = np.array([[1e-6, 1.0, 2.0], [4.0, 1.5, 1.0]])
    if covariance_type == "spherical":
        variances = np.array([1e-6, 4.0])
        dense = variances[:, np.newaxis, np.newaxis] * np.eye(n_features)
        precisions = 1.0 / variances
    elif covariance_type == "diag":
        dense = np.stack([np.diag(v) for v in variances])
        precisions = 1.0 / variances
    else:
        dense = np.stack([np.diag(v) for v in variances])
        precisions = np.linalg.inv(dense)
    pairs = zip(means, dense, strict=True)
    X = np.concatenate([rng.multivariate_normal(m, c, size=200) for m, c in pairs])
    X[:200, 0] = 0.0
    mixing = np.array([0.5, 0.5])
    plain_loss, _ = unit.expansion_loss(means, mixing, precisions)
    assert plain_loss > kernel.LOSS_LIMIT[np.dtype(np.float64)]
    plan = kernel.parameter_expansion(
        unit,
        means,
        precisions,
        unit.cholesky_from_precision(precisions),
        mixing,
        np.float64,
        -0.5,
        np.zeros(2),
        n_rows=len(X),
    )
    assert plan.n_groups == 1
    assert_allclose(plan.centers[0, 0], 0.0, atol=1e-5)
    problem = {
        "unit": unit,
        "X": X,
        "means": means,
        "precisions": precisions,
        "offsets": np.zeros(2),
    }
    values = kernel.row_values(plan, X, np.float64)
    expected = reference_values(problem)
    bound = expansion_bound(problem, plan)
    # The terms are within a small factor of the values: no digits lost.
    assert np.max(bound / np.maximum(np.abs(expected), 1.0)) < 1e3
    assert np.all(np.abs(values - expected) <= rounding(X.dtype, plan) * bound)


@pytest.mark.parametrize(
    "n_rows, groups",
    [
        (None, 1),  # predictions: the limit of any number of rows
        (6, 2),  # a fit of six rows keeps no 1e3 eps of its values
        (200, 1),  # from LOSS_LIMIT / ROW_LOSS rows on, fits are unchanged
        (10**6, 1),
    ],
)
def test_tiny_fits_take_local_centers_where_one_center_loses_digits(n_rows, groups):
    # Means 60 apart, unit precisions: one shared center loses F = 901.
    unit = covariance_unit("full", 2, 2)
    means = np.array([[0.0, 0.0], [60.0, 0.0]])
    precisions = np.stack([np.eye(2), np.eye(2)])
    found = {}
    for dtype in (np.float64, np.float32):
        plan = kernel.parameter_expansion(
            unit,
            means,
            precisions,
            precisions,
            np.ones(2),
            dtype,
            -0.5,
            np.zeros(2),
            n_rows=n_rows,
        )
        found[dtype] = plan.n_groups
    # float32's limit (4) is below any row count's.
    assert found == {np.float64: groups, np.float32: 2}


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fit_matches_float64_fit_of_the_same_data(covariance_type):
    # From a converged start EM contracts, so the difference of the two fits
    # measures the float32 arithmetic, not the sensitivity of the path.
    rng = np.random.RandomState(2)
    centers = rng.normal(scale=6.0, size=(3, 4))
    X = (centers[rng.randint(3, size=3000)] + rng.normal(size=(3000, 4))).astype(
        np.float32
    )
    X64 = X.astype(np.float64)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    start = EMGaussianMixture(tol=1e-10, max_iter=500, **params).fit(X64)
    init = dict(
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
    run = dict(tol=0.0, max_iter=10, **params, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit32 = EMGaussianMixture(**run).fit(X)
        fit64 = EMGaussianMixture(**run).fit(X64)
    assert fit32.means_.dtype == np.float32
    spread = X64.std(axis=0).max()
    assert np.abs(fit32.means_ - fit64.means_).max() <= 1e-6 * spread
    covariance_scale = np.abs(fit64.covariances_).max()
    assert np.abs(fit32.covariances_ - fit64.covariances_).max() <= (
        1e-6 * covariance_scale
    )
    assert fit32.lower_bound_ == pytest.approx(fit64.lower_bound_, abs=1e-5)


def test_e_step_entropy_is_summed_not_derived():
    # A start so sharp that the log normaliser is ~1e7 times the entropy: a
    # difference of the two would lose the entropy to rounding.
    rng = np.random.RandomState(3)
    X = rng.normal(size=(500, 2))
    unit = covariance_unit("spherical", 2, 2)
    model = EMGaussianMixture(
        2,
        covariance_type="spherical",
        weights_init=[0.5, 0.5],
        means_init=[[-0.1, 0.0], [0.1, 0.0]],
        precisions_init=[1e6, 1e6],
        max_iter=0,
    ).fit(X)
    evaluated = model._evaluate(model._state_from_attributes(unit), unit, None)
    stats = e_step(ArrayData(X, np.ones(len(X))), unit, evaluated.expectations, 0.0)
    values = reference_values(
        {
            "unit": unit,
            "X": X,
            "means": model.means_,
            "precisions": model.precisions_,
            "offsets": np.log(model.weights_)
            + unit.log_det_cholesky(model.precisions_cholesky_) / 2
            - np.log(2 * np.pi),
        }
    )
    log_resp = values - np.logaddexp.reduce(values, axis=0)
    exact = -np.sum(np.exp(log_resp) * log_resp)
    assert abs(stats.log_normalizer) > 1e6 * exact > 0
    assert stats.entropy == pytest.approx(exact, rel=1e-9)


def _force_layout(monkeypatch, layout):
    """Make the cost model pick ``layout`` for every dtype."""
    # (per feature, per feature and component, per K D^2, per K D) in ns.
    costs = {"expanded": (0.0, 0.0, 1.0, 1.0), "per_component": (1.0, 1.0, 0.0, 0.0)}
    for dtype in (np.float64, np.float32):
        monkeypatch.setitem(kernel.LAYOUT_COSTS, np.dtype(dtype), costs[layout])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_per_component_and_expanded_layouts_give_the_same_fit(
    monkeypatch, estimator, dtype
):
    rng = np.random.RandomState(1)
    centers = rng.normal(scale=4.0, size=(3, 6))
    X = centers[rng.randint(3, size=600)] + rng.normal(size=(600, 6))
    X = (X + 100.0).astype(dtype)
    params = dict(n_components=3, random_state=0, tol=0.0, max_iter=12)
    fits = {}
    for layout in ("expanded", "per_component"):
        _force_layout(monkeypatch, layout)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[layout] = estimator(**params).fit(X)
    expanded, per_component = fits["expanded"], fits["per_component"]
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert_allclose(
            getattr(per_component, name), getattr(expanded, name), rtol=rtol
        )
    assert_allclose(
        per_component.score_samples(X), expanded.score_samples(X), rtol=rtol
    )


@pytest.mark.parametrize(
    "n_components, n_features, dtype, per_component",
    [
        (2, 64, np.float64, True),  # few components, many features
        (8, 64, np.float32, True),
        (32, 8, np.float64, False),  # many components, few features
        (32, 16, np.float32, False),
    ],
)
def test_layout_follows_the_cost_model(n_components, n_features, dtype, per_component):
    unit = covariance_unit("full", n_components, n_features)
    means = np.zeros((n_components, n_features))
    precisions = np.broadcast_to(np.eye(n_features), unit.precision_shape).copy()
    plan = kernel.parameter_expansion(
        unit,
        means,
        precisions,
        precisions,
        np.ones(n_components),
        dtype,
        -0.5,
        np.zeros(n_components),
    )
    assert plan.per_component is per_component
    # The workspace then holds no second-order features.
    expected = 1 + n_features if per_component else plan.n_features_total
    assert plan.n_features_used == expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spread", [8.0, 1e5])
@pytest.mark.parametrize("seed", range(3))
# 200 rows: one stacked product for all components; 2,000 (more than
# SMALL_CHUNK_VALUES whitened values): a triangular product per component
# in float64.
@pytest.mark.parametrize("n_rows", [200, 2000])
def test_per_component_values_and_statistics_are_exact(
    monkeypatch, dtype, spread, seed, n_rows
):
    # The per-component layout whitens the rows about their centers
    # (shared, or local for clusters far apart) by dense upper Cholesky
    # factors: the values and the statistics are those computed component
    # by component in float64.
    _force_layout(monkeypatch, "per_component")
    rng = np.random.RandomState(seed)
    n_components, n_features = 3, 6
    unit = covariance_unit("full", n_components, n_features)
    means = rng.normal(scale=spread, size=(n_components, n_features))
    labels = rng.randint(n_components, size=n_rows)
    X = (means[labels] + rng.normal(size=(n_rows, n_features))).astype(dtype)
    problem = {
        "unit": unit,
        "X": X,
        "means": (means + rng.normal(scale=0.5, size=means.shape)).astype(dtype),
        "precisions": _random_precisions(rng, "full", n_components, n_features),
        "mixing": rng.dirichlet(np.ones(n_components)),
        "offsets": rng.normal(scale=3.0, size=n_components),
    }
    plan = plan_for(problem)
    assert plan.per_component and not plan.whitened
    assert (plan.triangular_rows is not None) == (dtype == np.float64)
    if spread == 1e5:
        assert plan.n_groups == n_components
    values = kernel.row_values(plan, X, np.float64)
    expected = reference_values(problem)
    # The rounding of P^T z is that of |P^T| |z|, z the row minus the mean.
    factors = unit.cholesky_from_precision(problem["precisions"])
    diffs = X.astype(float)[np.newaxis] - np.asarray(problem["means"], float)[:, None]
    sizes = np.sum(np.einsum("kij,kni->knj", np.abs(factors), np.abs(diffs)) ** 2, -1)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(values - expected) <= 64 * eps * (sizes + 1.0))

    statistics_pass = kernel.StatisticsPass(plan, len(X))
    statistics_pass.add_optimal(X, np.ones(len(X)))
    reference, _, nk, sum_x, sum_xx, _ = statistics_pass.totals()
    resp = np.exp(values - values.max(axis=0))
    resp /= resp.sum(axis=0)
    x64 = X.astype(float)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    assert_allclose(nk, resp.sum(axis=1), rtol=tol, atol=tol * len(X))
    for k in range(n_components):
        diff = x64 - reference[k]
        scale = 1.0 + np.abs(diff).max()
        atol = tol * len(X) * scale**2
        assert_allclose(sum_x[k], resp[k] @ diff, rtol=tol, atol=atol)
        assert_allclose(
            sum_xx[k], (diff * resp[k][:, None]).T @ diff, rtol=tol, atol=atol
        )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("small", [True, False])
def test_weighted_gram_skips_rows_of_zero_mass_exactly(
    dtype, shared, small, monkeypatch
):
    # Component 0 has mass on a tenth of the rows (the sparse path),
    # component 1 on all of them (the dense path), component 2 on none.
    # Rows of zero mass add exact zeros: the Gram of the rows of nonzero
    # mass alone is the same, bit for bit, and both are the weighted sum.
    # A small chunk (``small``) takes one stacked product for all.
    if not small:
        monkeypatch.setattr(kernel, "SMALL_CHUNK_VALUES", 0)
    rng = np.random.default_rng(0)
    n_features, n_rows = 5, 300
    shape = (n_features, n_rows) if shared else (3, n_features, n_rows)
    rows = rng.normal(size=shape).astype(dtype)
    masses = np.zeros((3, n_rows), dtype=dtype)
    used = np.sort(rng.choice(n_rows, size=n_rows // 10, replace=False))
    masses[0, used] = rng.random(len(used))
    masses[1] = rng.random(n_rows) + 0.1
    assert n_rows // 10 <= kernel.SPARSE_GRAM_FRACTION * n_rows
    gram = kernel._weighted_gram(rows, masses)

    sparse_rows = rows[..., used] if shared else rows[0][:, used]
    alone = kernel._weighted_gram(sparse_rows, masses[:1, used])
    np.testing.assert_array_equal(gram[0], alone[0])
    np.testing.assert_array_equal(gram[2], 0.0)
    # The dense path is exactly symmetric, too.
    np.testing.assert_array_equal(gram[1], gram[1].T)
    rows64 = np.broadcast_to(rows.astype(float), (3, n_features, n_rows))
    expected = np.einsum("kim,kjm,km->kij", rows64, rows64, masses.astype(float))
    tol = 16 * n_rows * np.finfo(dtype).eps
    assert_allclose(gram, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_shifted_second_moment_is_the_sum_over_groups(covariance_type):
    # Moving group g's moments by s adds first s^T + s first^T + counts s s^T
    # (in the unit's layout); summed over the groups. (Tied and spherical
    # pool or trace the same sums.)
    rng = np.random.default_rng(1)
    n_groups, n_components, n_features = 4, 3, 5
    unit = covariance_unit(covariance_type, n_components, n_features)
    first = rng.normal(size=(n_groups, n_components, n_features))
    counts = rng.random((n_groups, n_components))
    shifts = rng.normal(size=(n_groups, n_components, n_features))
    dense = np.zeros((n_components, n_features, n_features))
    for g in range(n_groups):
        for k in range(n_components):
            cross = np.outer(first[g, k], shifts[g, k])
            dense[k] += (
                cross + cross.T + counts[g, k] * np.outer(shifts[g, k], shifts[g, k])
            )
    expected = unit.second_moment_from_dense(dense)
    assert_allclose(
        unit.shifted_second_moment(first, counts, shifts),
        expected,
        rtol=1e-13,
        atol=1e-13,
    )


def test_an_empty_component_takes_no_extra_pass(monkeypatch):
    # Component 2 starts so far from the data that its mass (about 1e-160)
    # is below rounding of the total: its mean is many of its standard
    # deviations from its rows, but a pass about new centers would change
    # nothing that matters, so every iteration takes one pass.
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 8.0])
    passes = []
    original = ArrayData.optimal_statistics

    def counted(self, plan, pairs=None):
        passes.append(plan)
        return original(self, plan, pairs)

    monkeypatch.setattr(ArrayData, "optimal_statistics", counted)
    model = EMGaussianMixture(
        n_components=3,
        means_init=[[0.0, 0.0], [8.0, 8.0], [30.0, 0.0]],
        tol=0.0,
        max_iter=5,
        # (The weights and covariances start from a seeded k-means.)
        random_state=0,
    )
    with warnings.catch_warnings():
        # Not converged in 5 iterations, and component 2 is degenerate.
        warnings.simplefilter("ignore")
        model.fit(X)
    assert model.weights_[2] < 1e-100
    assert len(passes) == model.n_iter_ + 1


DIGITS_DIAG = dict(
    n_components=6,
    covariance_type="diag",
    tol=0.0,
    init_params="random_from_data",
    random_state=0,
)


def assert_same_fit_to_rounding(fit, other, X):
    """Two fits of ``X`` about other centers: equal to rounding."""
    # A blank pixel's mean, summed about a center 1e-8 off its value, is
    # 1e-23 where about its own mean it is 0: rounding of the data's scale.
    assert_allclose(fit.means_, other.means_, rtol=1e-9, atol=1e-13 * X.max())
    for name in ("weights_", "covariances_", "lower_bounds_"):
        assert_allclose(getattr(fit, name), getattr(other, name), rtol=1e-9)


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_digits_take_one_center_and_the_fit_of_local_centers(monkeypatch, estimator):
    # scikit-learn's digits, diag: components constant on blank pixels
    # (variance reg_covar) put the weighted mean of the means 1e7 of their
    # whitened units away. The passes, those that take an E-step's moments
    # again included, expand about one precision-weighted center, and the
    # fit is the one local centers (one per component) give.
    X = load_digits().data[:600]
    params = dict(DIGITS_DIAG, max_iter=8)
    groups = []
    original = ArrayData.optimal_statistics

    def counted(self, plan, pairs=None):
        groups.append(plan.n_groups)
        return original(self, plan, pairs)

    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        monkeypatch.setattr(ArrayData, "optimal_statistics", counted)
        fits["shared"] = estimator(**params).fit(X)
        monkeypatch.setattr(ArrayData, "optimal_statistics", original)
        monkeypatch.setitem(kernel.LOSS_LIMIT, np.dtype(np.float64), 0.0)
        fits["local"] = estimator(**params).fit(X)
    # The random start gives each component one row, every precision
    # 1 / reg_covar about that row's values (16 and 0 in one pixel): no one
    # center serves its first E-step. Every later pass takes one.
    assert len(groups) > fits["shared"].n_iter_
    assert groups[0] in (1, 6)
    assert set(groups[1:]) == {1}
    assert_same_fit_to_rounding(fits["shared"], fits["local"], X)


def test_an_e_step_starts_from_the_center_the_previous_one_needed(monkeypatch):
    # Variational digits, diag: the expected precisions of a pixel that a
    # component holds constant are moderate (the prior's scale enters
    # them), so the kernel's own center is far from where the moments
    # need it and every E-step took a second pass about a better one.
    # Starting from the previous E-step's center takes fewer passes, and
    # the fit is the same to rounding.
    X = load_digits().data[:600]
    params = dict(DIGITS_DIAG, max_iter=10, merge_components=False)
    passes = {}
    fits = {}
    original = ArrayData.optimal_statistics
    for name in ("kept", "not kept"):
        counted = []

        def counting(self, plan, pairs=None, counted=counted):
            counted.append(plan.n_groups)
            return original(self, plan, pairs)

        monkeypatch.setattr(ArrayData, "optimal_statistics", counting)
        if name == "not kept":
            monkeypatch.setattr(stats_module, "kept_center", lambda *args: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name] = VariationalGaussianMixture(**params).fit(X)
        passes[name] = counted
    assert len(passes["kept"]) < len(passes["not kept"])
    assert_same_fit_to_rounding(fits["kept"], fits["not kept"], X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
@pytest.mark.parametrize("working_memory", [2**-6, 1024])
def test_the_data_kept_as_columns_give_the_same_fit_bit_for_bit(
    monkeypatch, covariance_type, estimator, working_memory
):
    # ArrayData keeps small data as (D, n) columns, from which a pass about
    # one center subtracts it: the same subtractions as from the rows.
    # 300 rows: at 2**-6 MiB still 5-10 chunks of 30-75 rows each.
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(size=(150, 12)), rng.normal(size=(150, 12)) + 3])
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        tol=0.0,
        max_iter=6,
        random_state=0,
    )
    fits = {}
    with (
        warnings.catch_warnings(),
        sklearn.config_context(working_memory=working_memory),
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits["columns"] = estimator(**params).fit(X)
        monkeypatch.setattr(stats_module, "COLUMNS_BYTES", -1)
        fits["rows"] = estimator(**params).fit(X)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_array_equal(
            getattr(fits["columns"], name), getattr(fits["rows"], name)
        )


def test_interleaved_passes_do_not_share_work_buffers():
    # Passes reuse a thread's work buffers once the pass that held them is
    # gone; two passes alive at once must each keep their own.
    rng = np.random.RandomState(3)
    X = rng.normal(size=(300, 4))
    weights = np.ones(len(X))
    unit = covariance_unit("diag", 3, 4)
    plans = []
    for _ in range(2):
        precisions = rng.uniform(0.5, 2.0, size=(3, 4))
        means = X[rng.choice(len(X), 3)]
        plans.append(
            kernel.parameter_expansion(
                unit,
                means,
                precisions,
                np.sqrt(precisions),
                np.ones(3),
                X.dtype,
                -0.5,
                np.zeros(3),
            )
        )
    halves = (slice(0, 150), slice(150, 300))

    def totals(passes, order):
        for index, rows in order:
            passes[index].add_optimal(X[rows], weights[rows])
        return [p.totals() for p in passes]

    alone = [
        totals([kernel.StatisticsPass(plan, 150)], [(0, r) for r in halves])[0]
        for plan in plans
    ]
    passes = [kernel.StatisticsPass(plan, 150) for plan in plans]
    interleaved = totals(
        passes, [(0, halves[0]), (1, halves[0]), (0, halves[1]), (1, halves[1])]
    )
    for got, expected in zip(interleaved, alone, strict=True):
        for a, b in zip(got, expected, strict=True):
            assert_allclose(a, b, rtol=1e-14)
    # A pass made after the others are gone takes their buffers over.
    buffer = passes[1]._workspace._values
    del passes
    again = kernel.StatisticsPass(plans[0], 150)
    assert np.shares_memory(again._workspace._values, buffer)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("small", [True, False])
def test_whitened_rows_of_ill_conditioned_precisions_are_exact(
    seed, small, monkeypatch
):
    # Component 0 spans two clusters 1e5 apart: its precision is weak along
    # the axis joining them, where a row's x - m_0 lies, and P_0^T (x - m_0)
    # cancels far more digits than the rounding allows. Component 1 has a
    # nearly constant feature (variance 1e-10, as a blank pixel of digits
    # has): strong, with x - m_1 nearly zero along it. Every row's form is
    # the exact one (rational arithmetic) to 64 eps of itself, whether the
    # components are whitened together (a small chunk) or one at a time.
    from fractions import Fraction

    if not small:
        monkeypatch.setattr(kernel, "SMALL_CHUNK_VALUES", 0)

    rng = np.random.RandomState(seed)
    n_features = 6
    unit = covariance_unit("full", 2, n_features)
    axis = rng.normal(size=n_features)
    axis /= np.linalg.norm(axis)
    means = np.stack([rng.normal(size=n_features), rng.normal(size=n_features)])
    sides = rng.choice([-5e4, 5e4], size=40)
    X = means[0] + sides[:, np.newaxis] * axis + rng.normal(size=(40, n_features))
    near = means[1] + rng.normal(size=(20, n_features))
    near[:, 2] = means[1, 2] + rng.normal(scale=1e-5, size=20)
    X = np.concatenate([X, near])
    spanning = np.eye(n_features) + 2.5e9 * np.outer(axis, axis)
    constant = np.eye(n_features)
    constant[2, 2] = 1e-10
    precisions = np.linalg.inv(np.stack([spanning, constant]))
    precisions = 0.5 * (precisions + np.swapaxes(precisions, 1, 2))
    factors = unit.cholesky_from_precision(precisions)
    plan = kernel.parameter_expansion(
        unit,
        means,
        unit.precision_from_cholesky(factors),
        factors,
        np.array([0.6, 0.4]),
        np.float64,
        scale=1.0,
        offsets=np.zeros(2),
    )
    assert plan.whitened
    values = kernel.row_values(plan, X, np.float64)

    def exact_form(x, mean, factor):
        z = [Fraction(a) - Fraction(b) for a, b in zip(x, mean, strict=True)]
        columns = zip(*[[Fraction(v) for v in row] for row in factor], strict=True)
        return float(
            sum(sum(p * e for p, e in zip(c, z, strict=True)) ** 2 for c in columns)
        )

    expected = np.array(
        [[exact_form(x, means[k], factors[k]) for x in X] for k in range(2)]
    )
    eps = np.finfo(float).eps
    assert np.all(np.abs(values - expected) <= 64 * eps * expected)
    # The plain product would not do: its terms exceed some forms by far.
    terms = np.einsum(
        "kij,kni->knj", np.abs(factors), np.abs(X[np.newaxis] - means[:, np.newaxis])
    )
    assert np.max(np.sum(terms**2, axis=-1) / expected) > 1e8


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_a_whitened_pass_takes_its_scatter_from_the_whitened_moments(covariance_type):
    # A pass over complete rows whitened by ill-conditioned precisions sums
    # no rank update of the rows about the centers: its scatter comes from
    # the whitened moments. It agrees with the rank update's to rounding,
    # the halves of the rows add up to the whole, and statistics of another
    # state (other frames, as minibatches at successive states) add up with
    # the second moments made explicit first.
    from dataclasses import replace

    from skvi._stats import _statistics, log_rho_expansion

    X = ill_conditioned_blobs(0, n_samples=60)
    model = EMGaussianMixture(
        2,
        covariance_type=covariance_type,
        reg_covar=1e-9,
        max_iter=3,
        tol=0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert whitens(model)
    unit = model._fitted_unit(X.shape[1])
    state = model._state_from_attributes(unit)
    expectations = model._evaluate(state, unit, model._fit_context(unit)).expectations
    plan = log_rho_expansion(unit, expectations, 1e-9, X.dtype, n_rows=len(X))
    moved = replace(expectations, means=expectations.means + 1e-3)
    other = log_rho_expansion(unit, moved, 1e-9, X.dtype, centers=plan.centers)
    weights = np.linspace(0.5, 2.0, len(X))

    def statistics(plan, rows, complete):
        statistics_pass = kernel.StatisticsPass(plan, len(X))
        statistics_pass.add_optimal(X[rows], weights[rows], complete)
        return _statistics(statistics_pass, unit)

    whole = slice(None)
    halves = slice(0, 25), slice(25, None)
    derived, summed = statistics(plan, whole, True), statistics(plan, whole, False)
    assert derived.sum_xx is None and summed.sum_xx is not None
    assert_allclose(derived.nk, summed.nk, rtol=1e-15)
    scale = np.sqrt(np.abs(np.diagonal(summed.sum_xx, axis1=-2, axis2=-1)))
    spread = scale[..., :, np.newaxis] * scale[..., np.newaxis, :]
    eps = np.finfo(float).eps
    for got, expected in (
        (derived.moments.scatter, summed.moments.scatter),
        (derived.second_moments(), summed.sum_xx),
    ):
        assert np.all(np.abs(got - expected) <= 1e3 * eps * spread)
    parts = statistics(plan, halves[0], True)
    parts += statistics(plan, halves[1], True)
    assert parts.sum_xx is None and parts.whitened is not None
    assert np.all(
        np.abs(parts.moments.scatter - derived.moments.scatter) <= spread * 1e3 * eps
    )
    mixed = statistics(plan, halves[0], True)
    mixed += statistics(other, halves[1], True)
    assert mixed.whitened is None and mixed.sum_xx is not None
    expected = statistics(plan, halves[0], False)
    expected += statistics(other, halves[1], False)
    assert np.all(np.abs(mixed.sum_xx - expected.sum_xx) <= 1e3 * eps * spread)


@pytest.mark.parametrize("chunk_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "n_components, n_features", [(32, 32), (40, 30), (8, 32), (32, 8)]
)
def test_rows_centered_in_their_layout_are_the_direct_differences(
    n_components, n_features, dtype, chunk_dtype
):
    # Both ways make the same subtractions: the same bits, whichever runs.
    rng = np.random.default_rng(0)
    unit = covariance_unit("diag", n_components, n_features)
    means = rng.normal(size=(n_components, n_features))
    precisions = rng.uniform(0.5, 2.0, size=(n_components, n_features))
    plan = kernel.parameter_expansion(
        unit,
        means,
        precisions,
        np.sqrt(precisions),
        np.ones(n_components),
        dtype,
        -0.5,
        np.zeros(n_components),
        centers=means[:1],
    )
    chunk = (1e3 * rng.normal(size=(301, n_features))).astype(chunk_dtype)
    for rows in (chunk, np.asfortranarray(chunk)):
        workspace = kernel._Workspace(plan, len(rows))
        out = np.empty((n_features, len(rows)), dtype=dtype)
        kernel._subtract_transposed(rows, plan.centers_work[0], out, workspace)
        direct = np.empty_like(out)
        np.subtract(rows.T, plan.centers_work[0][:, np.newaxis], out=direct)
        np.testing.assert_array_equal(out, direct)
