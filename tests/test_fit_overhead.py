"""The shortcuts that make many small fits cheap give the same numbers (issue 15).

select_model reads its criteria from one pass over X, a run holds one BLAS
limit, full precisions are checked for conditioning in one batched inverse,
and the estimators read their constructor's parameters once: each must give
what the long way gives.
"""

import warnings

import numpy as np
import pytest
from scipy.linalg import lapack
from sklearn.base import BaseEstimator, clone
from threadpoolctl import threadpool_info

from skvi import EMGaussianMixture, VariationalGaussianMixture, _selection, select_model
from skvi._covariance._unit import (
    precision_conditioning_loss,
    precision_conditioning_losses,
    triangular_inverses,
    upper_cholesky_of_inverses,
)
from skvi._multifit import _conditioning_losses
from skvi.datasets import load_old_faithful


def _entropy(resp, weights):
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(resp > 0, resp * np.log(resp), 0.0)
    return -float(weights @ terms.sum(axis=1))


@pytest.mark.parametrize("lockstep", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_table_criteria_are_those_of_the_fitted_models(weighted, lockstep, monkeypatch):
    # Fits one by one: the table's criteria are the models' own, exactly.
    # In select_model's lock step (skvi._multifit) the fits and their
    # criteria are computed in stacked passes, equal up to rounding.
    if not lockstep:
        monkeypatch.setattr(_selection, "lockstep_applies", lambda *args: False)
    X = load_old_faithful().data
    sample_weight = None
    weights = np.ones(len(X))
    if weighted:
        # Fractional weights and rows of weight 0, which score skips.
        weights = np.random.default_rng(0).uniform(0.5, 3.0, size=len(X))
        weights[::17] = 0.0
        sample_weight = weights
    table, _ = select_model(
        X,
        n_components=range(1, 4),
        covariance_types=["full", "spherical"],
        sample_weight=sample_weight,
        random_state=0,
        as_frame=False,
    )
    for row in table:
        model = EMGaussianMixture(
            row["n_components"],
            covariance_type=row["covariance_type"],
            init_params="hc_mclust",
            random_state=0,
            # select_model's stopping rule (skvi._selection.SELECTION_DEFAULTS).
            relative_tol=1e-5,
            max_iter=1000,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, sample_weight=sample_weight)
        bic = model.bic(X, sample_weight=sample_weight)
        aic = model.aic(X, sample_weight=sample_weight)
        icl = bic + 2.0 * _entropy(model.predict_proba(X), weights)
        assert row["n_iter"] == model.n_iter_
        rel = 1e-12 if lockstep else 0.0
        assert row["bic"] == pytest.approx(bic, rel=rel, abs=0)
        assert row["aic"] == pytest.approx(aic, rel=rel, abs=0)
        assert row["icl"] == pytest.approx(icl, rel=rel, abs=0)


def _blas_threads():
    return sorted(
        (pool["filepath"], pool["num_threads"])
        for pool in threadpool_info()
        if pool["user_api"] == "blas"
    )


def test_a_failed_run_gives_back_the_blas_settings():
    # A run holds the one-thread limit from its first pass to its last; a
    # fit that raises inside it must lift it all the same.
    # The second component holds five copies of one point after the first
    # E-step: its M-step covariance is 0, and reg_covar=0 cannot save it.
    blob = np.random.default_rng(0).normal(size=(30, 2))
    X = np.vstack([blob, np.full((5, 2), 100.0)])
    model = EMGaussianMixture(
        2,
        reg_covar=0.0,
        weights_init=[0.5, 0.5],
        means_init=[blob.mean(axis=0), [100.0, 100.0]],
        precisions_init=np.stack([np.eye(2), np.eye(2)]),
    )
    before = _blas_threads()
    with pytest.raises(ValueError, match="Component 1 collapsed"):
        model.fit(X)
    assert _blas_threads() == before


def _precisions(seed, n_components, n_features, spread):
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_components, n_features, n_features))
    scales = np.logspace(0, spread, n_features)
    covariances = factors @ np.swapaxes(factors, 1, 2) * scales * scales[:, None]
    covariances += 1e-3 * np.eye(n_features)
    lower = np.linalg.cholesky(covariances)
    upper = np.swapaxes(np.linalg.inv(lower), 1, 2)
    return upper @ np.swapaxes(upper, 1, 2), upper


@pytest.mark.parametrize(
    "n_components, n_features, spread", [(1, 1, 0), (4, 2, 0), (3, 5, 4), (2, 24, 6)]
)
def test_batched_conditioning_losses_are_the_per_component_ones(
    n_components, n_features, spread
):
    precisions, factors = _precisions(0, n_components, n_features, spread)
    one_by_one = [
        precision_conditioning_loss(p, f)
        for p, f in zip(precisions, factors, strict=True)
    ]
    np.testing.assert_allclose(
        precision_conditioning_losses(precisions, factors), one_by_one, rtol=1e-10
    )


def test_batched_conditioning_losses_of_a_singular_factor_are_infinite():
    precisions, factors = _precisions(1, 3, 3, 0)
    factors[1, 2, 2] = 0.0
    losses = precision_conditioning_losses(precisions, factors)
    assert np.isinf(losses[1]) and np.all(np.isfinite(np.delete(losses, 1)))


@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
@pytest.mark.parametrize("lower", [True, False])
def test_batched_triangular_inverses_are_lapacks_bit_for_bit(n_features, lower):
    # With D <= 2 they are closed forms in dtrti2's order, beyond one
    # dtrtri call per matrix in place: the same bits either way, over
    # condition numbers up to about 1e10.
    rng = np.random.default_rng(n_features)
    for spread in (0, 2, 5):
        _, factors = _precisions(int(rng.integers(1000)), 50, n_features, spread)
        signs = rng.choice([-1.0, 1.0], size=(50, 1, n_features))
        triangles = factors * signs
        if lower:
            triangles = np.ascontiguousarray(np.swapaxes(triangles, 1, 2))
        found = triangular_inverses(triangles, lower=lower)
        for matrix, inverse in zip(triangles, found, strict=True):
            expected, info = lapack.dtrtri(matrix, lower=int(lower))
            assert info == 0
            np.testing.assert_array_equal(inverse, expected)
        # The factors of inverses: LAPACK's Cholesky factor of each (in
        # the dtype given) and its inverse (in double), bit for bit.
        covariances = np.linalg.inv(factors @ np.swapaxes(factors, 1, 2))
        covariances = 0.5 * (covariances + np.swapaxes(covariances, 1, 2))
        for dtype in (np.float64, np.float32):
            given = covariances.astype(dtype)
            batched, failed = upper_cholesky_of_inverses(given)
            assert failed is None and batched.dtype == dtype
            for covariance, factor in zip(given, batched, strict=True):
                inverse, _ = lapack.dtrtri(np.linalg.cholesky(covariance), lower=1)
                np.testing.assert_array_equal(factor, inverse.T.astype(dtype))
        # One not positive definite: its index.
        covariances[7, -1, -1] = -1.0
        assert upper_cholesky_of_inverses(covariances) == (None, 7)


@pytest.mark.parametrize(
    "n_components, n_features, spread", [(1, 1, 0), (4, 2, 0), (3, 5, 4), (2, 24, 6)]
)
def test_lock_step_conditioning_check_decides_as_the_exact_one(
    n_components, n_features, spread
):
    # skvi._multifit takes one batched inverse: its losses equal LAPACK's
    # to rounding, and a limit set at (or within rounding of) a loss is
    # judged by the exact value.
    precisions, factors = _precisions(2, n_components, n_features, spread)
    exact = np.asarray(precision_conditioning_losses(precisions, factors))
    losses = _conditioning_losses(precisions, factors, np.inf)
    np.testing.assert_allclose(losses, exact, rtol=1e-10)
    for limit in (exact[0], exact[0] * (1 + 1e-12), exact[0] * (1 - 1e-12)):
        losses = _conditioning_losses(precisions, factors, limit)
        assert (losses <= limit).tolist() == (exact <= limit).tolist()
    factors[0, -1, -1] = 0.0
    assert np.isinf(_conditioning_losses(precisions, factors, 1e3)[0])


@pytest.mark.parametrize("estimator", [EMGaussianMixture, VariationalGaussianMixture])
def test_parameter_names_are_scikit_learns(estimator):
    names = estimator._get_param_names()
    assert names == BaseEstimator._get_param_names.__func__(estimator)
    # A fresh list each time: a caller may change it.
    names.append("not_a_parameter")
    assert "not_a_parameter" not in estimator._get_param_names()
    model = estimator(n_components=3, tol=1e-4)
    copy = clone(model).set_params(max_iter=7)
    assert copy.get_params() == {**model.get_params(), "max_iter": 7}
