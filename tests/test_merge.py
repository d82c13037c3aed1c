"""Merge moves of the variational fit.

* The statistics and entropy of a merged q(Z), as the merge pass prices
  them, equal those of the merged responsibilities computed directly.
* With merges, no step of a fit decreases the ELBO and the stored bound is
  that of the fitted model.
* Default fits reach a converged model on data where coordinate ascent
  alone stalls with redundant components, also where it drains them too
  slowly for the stopping rule to fire within ``max_iter``.
* Merges are not tried with missing entries or when disabled.
"""

import contextlib
import copy
import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.datasets import make_blobs as sklearn_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from skvi import VariationalGaussianMixture
from skvi._kernel import row_values
from skvi._merge import candidate_pairs, merged
from skvi._stats import (
    ArrayData,
    e_step,
    log_rho_expansion,
    statistics_of_assignment,
)

from .helpers import COVARIANCE_TYPES, HYPOTHESIS_EXAMPLES, fp_tolerance, make_blobs


def fitted_internals(model, X):
    unit = model._fitted_unit(X.shape[1])
    context = model._fit_context(unit)
    evaluated = model._evaluate(model._state_from_attributes(unit), unit, context)
    return unit, evaluated


def optimal_responsibilities(model, X, unit, evaluated):
    plan = log_rho_expansion(unit, evaluated.expectations, model.reg_covar, X.dtype)
    log_rho = row_values(plan, X).T.astype(float)
    log_rho -= log_rho.max(axis=1, keepdims=True)
    resp = np.exp(log_rho)
    return resp / resp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_merged_statistics_equal_those_of_merged_responsibilities(
    covariance_type, offset
):
    # Far-apart clusters (offset 1e4 apart in the second case) make the
    # kernel take moments about each component's own center.
    rng = np.random.RandomState(0)
    X = np.vstack([make_blobs(1, 150, 3, 2), make_blobs(2, 150, 3, 2) + offset])
    weights = rng.uniform(0.2, 2.0, len(X))
    model = VariationalGaussianMixture(
        n_components=5,
        covariance_type=covariance_type,
        max_iter=3,
        tol=0.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, sample_weight=weights)
    unit, evaluated = fitted_internals(model, X)
    data = ArrayData(X, weights)
    stats = e_step(data, unit, evaluated.expectations, model.reg_covar)
    pairs = candidate_pairs(stats.moments, evaluated.expectations, unit)
    assert len(pairs) > 0
    priced = e_step(data, unit, evaluated.expectations, model.reg_covar, pairs)
    resp = optimal_responsibilities(model, X, unit, evaluated)
    for p, (j, k) in enumerate(pairs):
        joined = resp.copy()
        joined[:, j] += joined[:, k]
        joined[:, k] = 0.0
        direct = statistics_of_assignment(
            data, unit, lambda rows, joined=joined: joined[rows]
        )
        ours = merged(priced, unit, [p])
        scale = np.abs(direct.moments.scatter).max()
        assert_allclose(ours.moments.nk, direct.moments.nk, rtol=1e-9, atol=1e-9)
        # An empty component's mean is only a placeholder.
        occupied = direct.moments.nk > 0
        assert_allclose(
            ours.moments.means[occupied], direct.moments.means[occupied], rtol=1e-9
        )
        assert_allclose(ours.moments.scatter, direct.moments.scatter, atol=1e-8 * scale)
        assert ours.entropy == pytest.approx(direct.entropy, rel=1e-8, abs=1e-8)


@st.composite
def merge_cases(draw):
    n_features = draw(st.integers(1, 3))
    n_clusters = draw(st.integers(1, 3))
    return {
        "seed": draw(st.integers(0, 2**16)),
        "n_features": n_features,
        "n_clusters": n_clusters,
        # More components than clusters, so that some are redundant.
        "n_components": n_clusters + draw(st.integers(1, 4)),
        "covariance_type": draw(st.sampled_from(COVARIANCE_TYPES)),
        "weight_prior": draw(
            st.sampled_from(["dirichlet_process", "dirichlet_distribution"])
        ),
        "tol": draw(st.sampled_from([1e-2, 1e-3, 1e-5])),
        "weighted": draw(st.booleans()),
        "offset": draw(st.sampled_from([0.0, 1e3])),
    }


@settings(
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(merge_cases())
def test_fits_with_merges_never_decrease_the_elbo(case):
    X = make_blobs(
        case["seed"],
        n_samples=60 * case["n_clusters"],
        n_features=case["n_features"],
        n_clusters=case["n_clusters"],
        offset=case["offset"],
    )
    rng = np.random.RandomState(case["seed"])
    weights = rng.uniform(0.0, 3.0, len(X)) if case["weighted"] else None
    model = VariationalGaussianMixture(
        n_components=case["n_components"],
        covariance_type=case["covariance_type"],
        weight_concentration_prior_type=case["weight_prior"],
        tol=case["tol"],
        max_iter=200,
        random_state=case["seed"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, sample_weight=weights)
    decomposition = model.elbo_decomposition(X, weights)
    tolerance = fp_tolerance(decomposition, model)
    assert np.all(np.diff(model.half_step_lower_bounds_) >= -tolerance)
    assert abs(decomposition.elbo - model.lower_bound_) <= tolerance
    assert np.all(np.isfinite(model.means_))
    assert np.sum(model.weights_) == pytest.approx(1.0, rel=1e-12)


def redundant_blobs(n_samples):
    """The data of the review: 5 clusters, to be fitted with 10 components."""
    return sklearn_blobs(
        n_samples,
        10,
        centers=5,
        cluster_std=[1, 2, 0.5, 1.5, 1],
        random_state=0,
    )


def test_default_fit_converges_where_coordinate_ascent_stalls():
    X, labels = redundant_blobs(20_000)
    stalled = VariationalGaussianMixture(
        n_components=10, merge_components=False, random_state=0
    ).fit(X)
    # Coordinate ascent alone to tol=1e-8: the stalled fit continued (a warm
    # start continues one ascent exactly, tests/test_warm_start_ascent.py),
    # rather than its first 52 iterations run again.
    tight = (
        copy.deepcopy(stalled)
        .set_params(tol=1e-8, max_iter=5000, warm_start=True)
        .fit(X)
    )
    assert tight.converged_
    default = VariationalGaussianMixture(n_components=10, random_state=0).fit(X)
    assert default.converged_
    assert default.n_iter_ < default.max_iter
    assert adjusted_rand_score(labels, default.predict(X)) >= 0.9
    assert default.lower_bound_ >= tight.lower_bound_ - 5e-3
    # Without merges the same tol stops at a model far below that bound:
    # the merges are what makes the default fit converged.
    assert stalled.lower_bound_ < tight.lower_bound_ - 5e-3


@pytest.mark.parametrize("random_state", [0, 1])
def test_default_fit_merges_while_redundant_components_drain_slowly(random_state):
    # Spreads 0.5 to 2: k-means with 10 centers splits the wide clusters,
    # whose halves drain at a rate near 1; the stopping rule alone fires
    # late or never within max_iter, so merges must be tried before it does.
    X, labels = sklearn_blobs(
        6_000, 10, centers=5, cluster_std=[0.5, 1, 1.5, 2, 2], random_state=0
    )
    params = dict(n_components=10, random_state=random_state)
    default = VariationalGaussianMixture(**params).fit(X)
    tight = VariationalGaussianMixture(**params, tol=1e-10, max_iter=1000).fit(X)
    assert default.converged_
    # With room to spare, not at the edge of max_iter.
    assert default.n_iter_ <= default.max_iter // 2
    assert adjusted_rand_score(labels, default.predict(X)) >= 0.9999
    assert tight.converged_
    assert default.lower_bound_ >= tight.lower_bound_ - 1e-3
    tolerance = fp_tolerance(default.elbo_decomposition(X), default)
    assert np.all(np.diff(default.half_step_lower_bounds_) >= -tolerance)


@pytest.fixture(scope="module")
def verbose_redundant_fit():
    """The default fit of 3,000 redundant blobs, verbose, and what it printed.

    Shared by two tests: verbosity only prints.
    """
    X, _ = redundant_blobs(3_000)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model = VariationalGaussianMixture(
            n_components=10, random_state=0, verbose=1
        ).fit(X)
    return X, model, printed.getvalue()


def test_merges_are_not_tried_with_missing_entries_or_when_disabled(
    verbose_redundant_fit,
):
    X, with_merges, _ = verbose_redundant_fit
    params = dict(n_components=10, random_state=0)
    # Merges change this fit, so the comparisons below are not vacuous.
    without = VariationalGaussianMixture(**params, merge_components=False).fit(X)
    assert with_merges.lower_bound_ > without.lower_bound_
    holes = X.copy()
    holes[np.random.RandomState(0).rand(*X.shape) < 0.05] = np.nan
    on_holes = VariationalGaussianMixture(**params).fit(holes)
    off_holes = VariationalGaussianMixture(**params, merge_components=False).fit(holes)
    assert on_holes.n_iter_ == off_holes.n_iter_
    assert_allclose(on_holes.means_, off_holes.means_)


def test_verbose_fit_reports_the_merges(verbose_redundant_fit):
    _, _, printed = verbose_redundant_fit
    assert "Merged components" in printed
