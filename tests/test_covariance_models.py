"""mclust's fourteen covariance models in EMGaussianMixture.

* Parameter counts are mclust's, and bic/aic use them.
* VII, VVI, EEE and VVV reach the fits of spherical, diag, tied and full.
* Each constrained M-step maximises the model's likelihood: it is at least
  as good as a brute-force numerical maximiser over an unconstrained
  parameterisation of volumes, shapes and orientations.
* Property tests: for every model, no half-step decreases the ELBO, and
  after every E-step the ELBO is the smoothed log-likelihood.
* The fitted decomposition, precisions_init, partial_fit, Dask, missing
  values, degenerate components, and VI's refusal of the models.
"""

import tracemalloc
import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning

from skvi import (
    DegenerateComponentError,
    EMGaussianMixture,
    VariationalGaussianMixture,
    select_model,
)
from skvi._covariance import covariance_unit
from skvi._covariance.mclust import (
    MCLUST_MODELS,
    _common_shape,
    _newton_direction,
    _second_derivative_terms,
    _skew_basis,
)
from skvi._covariance.stacked import (
    _common_shapes,
    stacked_common_matrix,
    stacked_joint_shape,
)

from .helpers import (
    fp_tolerance,
    ill_conditioned_blobs,
    smoothed_log_likelihood,
    weighted_case_data,
    whitens,
)
from .test_em_elbo import PROPERTY_SETTINGS, fit_or_reject

MODELS = MCLUST_MODELS
ALIASES = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}


def mclust_count(model, K, d):
    """mclust's nVarParams, written out model by model (Celeux & Govaert)."""
    return {
        "EII": 1,
        "VII": K,
        "EEI": d,
        "VEI": K + (d - 1),
        "EVI": 1 + K * (d - 1),
        "VVI": K * d,
        "EEE": d * (d + 1) // 2,
        "VEE": K + (d - 1) + d * (d - 1) // 2,
        "EVE": 1 + K * (d - 1) + d * (d - 1) // 2,
        "VVE": K + K * (d - 1) + d * (d - 1) // 2,
        "EEV": 1 + (d - 1) + K * d * (d - 1) // 2,
        "VEV": K + (d - 1) + K * d * (d - 1) // 2,
        "EVV": 1 - K + K * d * (d + 1) // 2,
        "VVV": K * d * (d + 1) // 2,
    }[model]


@pytest.fixture(scope="module")
def iris():
    return load_iris().data


@pytest.mark.parametrize("model", MODELS)
def test_bic_and_aic_count_mclusts_parameters(model, iris):
    K, d, n = 3, iris.shape[1], len(iris)
    em = EMGaussianMixture(K, covariance_type=model, random_state=0).fit(iris)
    loglik = em.score(iris) * n
    p = (K - 1) + K * d + mclust_count(model, K, d)
    assert em.bic(iris) == pytest.approx(-2 * loglik + p * np.log(n), rel=1e-12)
    assert em.aic(iris) == pytest.approx(-2 * loglik + 2 * p, rel=1e-12)


def aliased_start(X, K, seed):
    rng = np.random.RandomState(seed)
    means = X[rng.choice(len(X), K, replace=False)]
    weights = rng.dirichlet(np.ones(K) * 5)
    return weights, means, rng


@pytest.mark.parametrize("model", sorted(ALIASES))
def test_sklearn_types_are_their_mclust_models(model, iris):
    """From the same start, VII/VVI/EEE/VVV fit as spherical/diag/tied/full."""
    X = iris
    K, d = 3, X.shape[1]
    weights, means, rng = aliased_start(X, K, 0)
    variances = rng.uniform(0.2, 1.0, size=(K, d))
    if model == "VII":
        own = 1.0 / variances[:, 0]
        dense = own[:, None, None] * np.eye(d)
    elif model == "VVI":
        own = 1.0 / variances
        dense = np.stack([np.diag(p) for p in own])
    elif model == "EEE":
        mixing = rng.normal(size=(d, d))
        own = mixing @ mixing.T + d * np.eye(d)
        dense = np.broadcast_to(own, (K, d, d))
    else:
        mixing = rng.normal(size=(K, d, d))
        own = mixing @ np.swapaxes(mixing, 1, 2) + d * np.eye(d)
        dense = own
    fits = {}
    for name, precisions in ((model, dense), (ALIASES[model], own)):
        fits[name] = EMGaussianMixture(
            K,
            covariance_type=name,
            weights_init=weights,
            means_init=means,
            precisions_init=precisions,
            max_iter=20,
            tol=0.0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name].fit(X)
    ours, theirs = fits[model], fits[ALIASES[model]]
    np.testing.assert_allclose(ours.weights_, theirs.weights_, rtol=1e-9)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-9)
    np.testing.assert_allclose(
        ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-12, atol=0
    )
    expected = {
        "VII": lambda c: c[:, None, None] * np.eye(d),
        "VVI": lambda c: np.stack([np.diag(v) for v in c]),
        "EEE": lambda c: np.broadcast_to(c, (K, d, d)),
        "VVV": lambda c: c,
    }[model](theirs.covariances_)
    np.testing.assert_allclose(ours.covariances_, expected, rtol=1e-8, atol=1e-13)
    assert ours.covariances_.shape == (K, d, d)


# ----------------------------------------------------------- the M-step
def m_step_objective(covariances, nk, S, reg_covar):
    """``sum_k N_k (log det Sigma_k + tr(Sigma_k^-1 (S_k + reg I)))``: minimised.

    ``covariances`` may carry leading batch axes: one value for each."""
    d = S.shape[1]
    _, log_det = np.linalg.slogdet(covariances)
    target = np.broadcast_to(S + reg_covar * np.eye(d), covariances.shape)
    traces = np.trace(np.linalg.solve(covariances, target), axis1=-2, axis2=-1)
    values = (log_det + traces) @ nk
    return float(values) if np.ndim(values) == 0 else values


class Parameterisation:
    """Unconstrained coordinates of a model: log volumes, log shapes (sum 0),
    rotation vectors (d = 3) or angles (d = 2) of the orientations."""

    def __init__(self, model, K, d):
        self.model, self.K, self.d = model, K, d
        self.counts = [
            {"E": 1, "V": K, "I": 0}[letter] for letter in model
        ]  # volume, shape and orientation blocks
        self.per = [1, d - 1, d * (d - 1) // 2]

    @property
    def size(self):
        return sum(c * p for c, p in zip(self.counts, self.per, strict=True))

    def covariances(self, theta):
        """The (K, d, d) covariances of ``theta``, or (B, K, d, d) of a
        (B, size) stack of them (the gradients below evaluate theirs in one
        call)."""
        K, d = self.K, self.d
        theta = np.asarray(theta)
        stack = np.atleast_2d(theta)
        B = len(stack)
        blocks, start = [], 0
        for count, per in zip(self.counts, self.per, strict=True):
            blocks.append(stack[:, start : start + count * per].reshape(B, count, per))
            start += count * per
        volumes = np.broadcast_to(np.exp(blocks[0][:, :, 0]), (B, K))
        if self.counts[1]:
            raw = blocks[1]
            logs = np.concatenate([raw, -raw.sum(axis=2, keepdims=True)], axis=2)
            shapes = np.broadcast_to(np.exp(logs), (B, K, d))
        else:
            shapes = np.ones((B, K, d))
        if self.counts[2]:
            count = self.counts[2]
            turns = self.rotations(blocks[2].reshape(B * count, -1))
            rotations = np.broadcast_to(turns.reshape(B, count, d, d), (B, K, d, d))
        else:
            rotations = np.broadcast_to(np.eye(d), (B, K, d, d))
        covariances = np.einsum(
            "bkij,bkj,bklj->bkil", rotations, volumes[:, :, None] * shapes, rotations
        )
        return covariances if theta.ndim == 2 else covariances[0]

    def rotations(self, vectors):
        """The rotation of each row of ``vectors``: an angle (d = 2) or a
        rotation vector (d = 3, Rodrigues' formula, as scipy's
        ``Rotation.from_rotvec``, without its per-call cost: the numerical
        gradients below call this thousands of times)."""
        if self.d == 2:
            c, s = np.cos(vectors[:, 0]), np.sin(vectors[:, 0])
            return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
        angle = np.linalg.norm(vectors, axis=1)
        skew = np.zeros((len(vectors), 3, 3))
        x, y, z = vectors.T
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -z, y, -x
        skew -= np.swapaxes(skew, 1, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            first = np.where(angle > 1e-8, np.sin(angle) / angle, 1.0)
            second = np.where(angle > 1e-8, (1.0 - np.cos(angle)) / angle**2, 0.5)
        return (
            np.eye(3)
            + first[:, None, None] * skew
            + second[:, None, None] * (skew @ skew)
        )

    def start_from(self, covariances):
        """Coordinates of a point near the given (unconstrained) covariances."""
        d = self.d
        values, vectors = np.linalg.eigh(covariances)
        vectors = vectors * np.sign(np.linalg.det(vectors))[:, None, None]
        log_volumes = np.log(values).mean(axis=1)
        log_shapes = np.log(values) - log_volumes[:, None]
        if self.model[2] == "I":
            log_shapes = np.log(np.diagonal(covariances, axis1=1, axis2=2))
            log_shapes = log_shapes - log_shapes.mean(axis=1, keepdims=True)
        parts = [log_volumes]
        if self.model[1] != "I":
            parts.append(log_shapes[:, : d - 1])
        if self.model[2] != "I":
            if d == 2:
                parts.append(np.arctan2(vectors[:, 1, 0], vectors[:, 0, 0])[:, None])
            else:
                parts.append(Rotation.from_matrix(vectors).as_rotvec())
        theta = []
        for letter, part in zip(self.model, parts, strict=False):
            theta.append(part.mean(axis=0) if letter == "E" else part.ravel())
        return np.concatenate([np.ravel(t) for t in theta])


def brute_force(model, nk, S, reg_covar, rng, n_starts=3):
    """The best of BFGS runs over the unconstrained parameterisation."""
    K, d = S.shape[:2]
    param = Parameterisation(model, K, d)

    def objective(thetas):
        # A random start can wander to overflowing volumes: a wall there.
        with np.errstate(all="ignore"):
            try:
                values = m_step_objective(param.covariances(thetas), nk, S, reg_covar)
            except np.linalg.LinAlgError:
                if len(thetas) == 1:
                    return np.array([1e300])
                return np.concatenate([objective(theta[None]) for theta in thetas])
        return np.where(np.isfinite(values), values, 1e300)

    def value_and_gradient(theta):
        # scipy's default 2-point forward differences (same steps), with
        # the point and its n shifted copies evaluated in one batch.
        sign = np.where(theta >= 0, 1.0, -1.0)
        step = np.sqrt(np.finfo(float).eps) * sign * np.maximum(1.0, np.abs(theta))
        shifted = theta + np.diag(step)
        values = objective(np.vstack([theta, shifted]))
        gradient = (values[1:] - values[0]) / (np.diagonal(shifted) - theta)
        return values[0], gradient

    starts = [param.start_from(S + reg_covar * np.eye(d))]
    starts += [rng.normal(scale=0.5, size=param.size) for _ in range(n_starts - 1)]
    best = np.inf
    for start in starts:
        result = minimize(
            value_and_gradient,
            start,
            jac=True,
            method="BFGS",
            options={"gtol": 1e-9},
        )
        best = min(best, result.fun)
    return best


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("model", ["VVV", "EEE"])
def test_ill_conditioned_fits_equal_tied_and_full(model, seed):
    """Where the E-step whitens rows (ill-conditioned precisions), VVV and
    EEE form their precisions in the whitened frames as full and tied do:
    VVV's fit is full's to the last bit, and EEE's precision factors are
    tied's to rounding (formed from the covariances instead, they lose the
    weak direction's digits: 1e-10 of the factors here)."""
    X = ill_conditioned_blobs(seed)
    K = 2
    means = X[np.random.RandomState(0).choice(len(X), K, replace=False)]
    fits = {}
    for name in (model, ALIASES[model]):
        fits[name] = EMGaussianMixture(
            K,
            covariance_type=name,
            weights_init=np.full(K, 1.0 / K),
            means_init=means,
            tol=0.0,
            max_iter=30,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name].fit(X)
    ours, theirs = fits[model], fits[ALIASES[model]]
    assert whitens(ours) and whitens(theirs)
    if model == "VVV":
        np.testing.assert_array_equal(ours.lower_bounds_, theirs.lower_bounds_)
        np.testing.assert_array_equal(ours.covariances_, theirs.covariances_)
        np.testing.assert_array_equal(
            ours.precisions_cholesky_, theirs.precisions_cholesky_
        )
        return
    factors = np.broadcast_to(theirs.precisions_cholesky_, (K, *X.shape[1:] * 2))
    scale = np.abs(factors).max()
    np.testing.assert_allclose(
        ours.precisions_cholesky_, factors, rtol=0, atol=1e-13 * scale
    )
    # The bounds differ by the rounding of the E-step's two layouts (K
    # equal precisions against one shared), which cancels in the bound.
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-10)


def small_problem(seed):
    rng = np.random.default_rng(seed)
    K, d = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    nk = rng.uniform(3.0, 20.0, K)
    mixing = rng.normal(size=(K, d, d)) * rng.uniform(0.2, 3.0, size=(K, 1, d))
    S = mixing @ np.swapaxes(mixing, 1, 2) / d
    return rng, nk, S


@pytest.mark.parametrize("reg_covar", [0.0, 0.1])
@pytest.mark.parametrize("model", MODELS)
def test_m_step_maximises_the_constrained_likelihood(model, reg_covar):
    """No numerical maximiser beats the M-step, from scratch or a start."""
    rng, nk, S = small_problem(MODELS.index(model) + int(100 * reg_covar))
    K, d = S.shape[:2]
    unit = covariance_unit(model, K, d)
    empty = np.zeros(K, dtype=bool)
    scatter = nk[:, None, None] * S
    best = brute_force(model, nk, S, reg_covar, rng)
    param = Parameterisation(model, K, d)
    previous = param.covariances(rng.normal(size=param.size))
    for start in (None, previous):
        ours = unit.maximize(nk, scatter, reg_covar, empty, start)
        value = m_step_objective(ours, nk, S, reg_covar)
        assert value <= best + 1e-9 * abs(best)
        # ... and the result is a member of the model.
        rebuilt = unit.decompose(ours)
        covariances = np.einsum(
            "kij,kj,klj->kil", rebuilt[2], rebuilt[0][:, None] * rebuilt[1], rebuilt[2]
        )
        np.testing.assert_allclose(covariances, ours, rtol=1e-9, atol=1e-12)
        assert_satisfies_model(model, *rebuilt)


@pytest.mark.parametrize("n_features", [2, 3, 4, 6])
def test_sparse_orientation_hessian_terms_equal_the_dense_sums(n_features):
    """The common orientation's Hessian terms that do not pass through the
    Jacobian, built from the pairs of basis elements that share an index,
    equal the dense sums over (E_a E_b + E_b E_a) and the basis' columns
    bit for bit (each entry a sum of at most two exact terms)."""
    d = n_features
    basis = _skew_basis(d)
    n = len(basis)
    products = np.einsum("aij,bjl->abil", basis, basis)
    products = products + products.swapaxes(0, 1)
    values = np.random.default_rng(d).normal(size=(d, d, d))
    pooled = values[np.arange(d), np.arange(d)]  # v_ccr as (c, r)
    across = basis.transpose(2, 0, 1)
    dense_inner = (products.reshape(n * n, -1) @ pooled.T.ravel()).reshape(n, n)
    dense_spread = np.sum(across @ values @ across.transpose(0, 2, 1), axis=0)
    index, parts = _second_derivative_terms(d)
    found = values[index[0], index[1], index[2]]
    for (where, coefficients), dense in zip(
        parts, (dense_inner, dense_spread), strict=True
    ):
        sparse = found[where[0]] * coefficients[0] + found[where[1]] * coefficients[1]
        assert np.array_equal(sparse, dense)
        # Each nonzero coefficient is one of the dense sum's terms.
        assert set(np.unique(coefficients)) <= {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_orientation_newton_step_in_thirty_dimensions_stays_small():
    """A common orientation's Newton direction in D = 30 (breast cancer's
    columns; 435 skew coordinates) works on (n, n) arrays, not on the dense
    (n, n, D, D) products of the basis (1.4 GB): it allocates under 100 MB,
    and select_model's VVE and EVE fit such data in seconds, not hours."""
    d, K = 30, 3
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(K, d, d))
    rotated = factors @ factors.swapaxes(1, 2) + np.eye(d)
    nk = np.array([100.0, 50.0, 20.0])
    tracemalloc.start()
    try:
        for common_volume in (True, False):
            skew, decrement = _newton_direction(rotated, nk, common_volume)
            assert np.all(np.isfinite(skew)) and decrement >= 0.0
            np.testing.assert_array_equal(skew, -skew.T)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


@pytest.mark.parametrize("model", ["VVE", "EVE"])
def test_common_orientation_reaches_the_better_of_two_local_maxima(model):
    """Here the likelihood has two local maxima in the common orientation,
    and started from the identity (or a random start) the blocks climb the
    lower one; the M-step's second start, from principal axes, finds the
    other."""
    rng, nk, S = small_problem(1003)  # K = 2, d = 2
    K, d = S.shape[:2]
    best = brute_force(model, nk, S, 0.1, rng, n_starts=6)
    unit = covariance_unit(model, K, d)
    for start in (None, np.broadcast_to(np.eye(d), (K, d, d))):
        ours = unit.maximize(
            nk, nk[:, None, None] * S, 0.1, np.zeros(K, dtype=bool), start
        )
        assert m_step_objective(ours, nk, S, 0.1) <= best + 1e-9 * abs(best)


@pytest.mark.parametrize("model", ["VEI", "VEE", "EVE", "VVE", "VEV"])
def test_iterative_m_steps_ascend_and_reach_the_fixed_point(model, iris):
    """The M-steps that iterate (at D = 4 EVE and VVE take Newton's steps
    on their common orientation) never decrease the ELBO, and each starts
    from the previous parameters and runs to convergence: at EM's fixed
    point one more warm-started EM step leaves the covariances as they
    are (a step that stopped early, or a start that lost the previous
    orientation, would move them)."""
    em = EMGaussianMixture(
        2, covariance_type=model, tol=0.0, max_iter=100, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em.fit(iris)
        tolerance = fp_tolerance(em.elbo_decomposition(iris), em)
        assert np.all(np.diff(em.half_step_lower_bounds_) >= -tolerance)
        fixed_point = em.covariances_.copy()
        em.set_params(warm_start=True, max_iter=1).fit(iris)
    np.testing.assert_allclose(em.covariances_, fixed_point, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n_components", [2, 3, 5])
def test_vee_m_step_is_celeux_and_govaerts_fixed_point(n_components, iris):
    """VEE's M-step (Newton's method on the volumes) reaches the fixed point
    of Celeux & Govaert's (1995) alternation to rounding: one more round of
    it, the common matrix ``C = M / det(M)^(1/D)`` with ``M = sum_k W_k /
    lambda_k`` and then ``lambda_k = tr(W_k C^-1) / (D N_k)``, leaves the
    covariances as they are. (Iterated linearly to a tolerance on f, the
    alternation stopped up to 5e-9 away.)"""
    K, d = n_components, iris.shape[1]
    rng = np.random.default_rng(K)
    resp = rng.dirichlet(np.full(K, 0.5), size=len(iris))
    nk = resp.sum(axis=0)
    centered = iris[:, None, :] - (resp.T @ iris / nk[:, None])[None]
    scatter = np.einsum("nk,nki,nkj->kij", resp, centered, centered)
    unit = covariance_unit("VEE", K, d)
    previous = np.cov(iris.T)[None] * rng.uniform(0.5, 2.0, size=(K, 1, 1))
    for start in (None, previous):
        ours = unit.maximize(nk, scatter, 0.0, np.zeros(K, dtype=bool), start)
        volumes = np.exp(np.linalg.slogdet(ours)[1] / d)
        pooled = np.tensordot(1.0 / volumes, scatter, 1)
        common = pooled / np.exp(np.linalg.slogdet(pooled)[1] / d)
        again = np.einsum("kij,ji->k", scatter, np.linalg.inv(common)) / (d * nk)
        np.testing.assert_allclose(
            again[:, None, None] * common, ours, rtol=0, atol=1e-13 * np.abs(ours).max()
        )


def test_vee_m_step_of_a_collapsing_component_is_silent():
    """A component of half a point on a tiny scatter (iris's VEE with 5
    components met one in select_model) has its volume's optimum orders of
    magnitude below the start: Newton's first steps overshoot so far that
    the trial weights ``1 / lambda_k`` overflow. Those trials are rejected
    and halved, with no RuntimeWarning reaching the user, and the fit's own
    and the lock step's stacked M-step agree."""
    rng = np.random.default_rng(0)
    d, K = 4, 5
    factors = rng.normal(size=(K, d, d))
    nk = np.array([16.0, 8.5, 0.5, 26.7, 23.3])
    scatter = factors @ factors.swapaxes(1, 2) / d * nk[:, None, None]
    scatter[2] *= 1e-6
    start = np.eye(d) * np.array([0.05, 0.014, 0.03, 0.12, 0.065])[:, None, None]
    unit = covariance_unit("VEE", K, d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = unit.maximize(nk, scatter, 0.0, np.zeros(K, dtype=bool), start)
        stacked = stacked_common_matrix(nk, scatter, 0.0, [K], [None])
    volumes = np.exp(np.linalg.slogdet(ours)[1] / d)
    assert volumes[2] < 1e-5 * volumes.max()
    np.testing.assert_allclose(
        stacked[0], ours, rtol=0, atol=1e-12 * np.abs(ours).max()
    )


@pytest.mark.parametrize("model", ["VEI", "VEV"])
def test_common_shape_of_columns_in_very_different_units_is_silent(model):
    """Wine's raw columns (variances from 0.01 to 1e5): the common shape's
    Newton steps start far from the optimum and some trials overflow exp.
    They are rejected without a RuntimeWarning, and the fit's own and the
    lock step's stacked M-step agree."""
    X = load_wine().data
    K, d = 3, X.shape[1]
    rng = np.random.default_rng(0)
    resp = rng.dirichlet(np.full(K, 0.3), size=len(X))
    nk = resp.sum(axis=0)
    centered = X[:, None, :] - (resp.T @ X / nk[:, None])[None]
    scatter = np.einsum("nk,nki,nkj->kij", resp, centered, centered)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = covariance_unit(model, K, d).maximize(
            nk, scatter, 1e-6, np.zeros(K, dtype=bool), None
        )
        stacked = stacked_joint_shape(model, nk, scatter, 1e-6, [K], [None])
    np.testing.assert_allclose(
        stacked[0], ours, rtol=0, atol=1e-12 * np.abs(ours).max()
    )


def _alternated_common_shape(diagonals, nk, passes=20_000):
    """Celeux & Govaert's alternation of the shape and the volumes, from
    the pooled diagonals: slow (linear) but sure, a reference. It runs
    until a pass moves the shape by no more than rounding: 20 passes on
    iris in each of the units below, within 5e-16 of the shape after
    20,000 passes (which only trade the last bits)."""
    shape = diagonals.sum(axis=0)
    shape /= np.exp(np.log(shape).mean())
    for _ in range(passes):
        previous = shape
        volumes = (diagonals / shape).sum(axis=1) / (len(shape) * nk)
        shape = (diagonals / volumes[:, None]).sum(axis=0)
        shape /= np.exp(np.log(shape).mean())
        if np.max(np.abs(shape / previous - 1.0)) <= 8 * np.finfo(float).eps:
            break
    return shape


@pytest.mark.parametrize("factor", [1.0, 1e7, 1e9])
def test_common_shape_is_reached_from_the_identity_whatever_the_units(factor):
    """Review 17, item 1: with one column 1e7 times wider than the others,
    the Newton step from the identity (about 1e13 long) stayed too long
    for the halvings, and the VEI and VEV M-steps returned their start."""
    X, y = load_iris(return_X_y=True)
    X = X * np.array([1.0, 1.0, factor, 1.0])
    nk = np.bincount(y).astype(float)
    diagonals = np.stack(
        [((X[y == k] - X[y == k].mean(axis=0)) ** 2).sum(axis=0) for k in range(3)]
    )
    reference = _alternated_common_shape(diagonals, nk)
    shape = _common_shape(diagonals, nk, np.ones(4))
    np.testing.assert_allclose(shape, reference, rtol=1e-9)
    stacked = _common_shapes(diagonals, nk, [3], np.ones((1, 4)))
    np.testing.assert_allclose(stacked[0], shape, rtol=1e-12)


@pytest.mark.parametrize("factor", [1e7, 1e9])
def test_vei_fit_does_not_depend_on_a_columns_units(factor):
    # VEI is closed under rescaling a column: the fit in other units is the
    # same fit, its log-likelihood shifted by the log of the factor.
    X = load_iris().data
    scale = np.array([1.0, 1.0, factor, 1.0])
    params = dict(n_components=3, covariance_type="VEI", init_params="hc")
    reference = EMGaussianMixture(**params).fit(X)
    model = EMGaussianMixture(**params).fit(X * scale)
    assert model.score(X * scale) + np.log(factor) == pytest.approx(
        reference.score(X), rel=1e-9
    )
    np.testing.assert_array_equal(model.predict(X * scale), reference.predict(X))


def test_models_with_orientations_warn_where_columns_spread_far_apart():
    # Review 17: an eigendecomposition loses the small directions' digits
    # (EVV on iris with petal length x 1e7 ended 5% lower per row, VEE with
    # x 1e8 18%); the user is told to rescale. Models exact in any units,
    # and columns within the limit, fit silently.
    X = load_iris().data
    wide = X * np.array([1.0, 1.0, 1e7, 1.0])
    with pytest.warns(UserWarning, match=r"Column 2 spreads 2\.5e\+07 times wider"):
        EMGaussianMixture(3, covariance_type="VEE", random_state=0).fit(wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in ("VVV", "EEE", "VEI", "VVI"):
            EMGaussianMixture(3, covariance_type=model, random_state=0).fit(wide)
        EMGaussianMixture(3, covariance_type="EVV", random_state=0).fit(
            X * np.array([1.0, 1.0, 1e4, 1.0])
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_model(wide, n_components=[2, 3], covariance_types=["VVV", "EVV"])
    said = [w for w in caught if "spreads" in str(w.message)]
    assert len(said) == 1 and "of EVV come" in str(said[0].message)


@pytest.mark.parametrize("model", [m for m in MODELS if m not in ("EVE", "VVE")])
def test_m_step_from_its_own_last_result_equals_one_from_a_decomposition(model, iris):
    """EM's next M-step reuses the blocks of the last one when its previous
    covariances are what that step returned; it ends where an M-step that
    decomposes them ends (to rounding)."""
    K, d = 3, iris.shape[1]
    rng = np.random.default_rng(MODELS.index(model))
    empty = np.zeros(K, dtype=bool)
    statistics = []
    for _ in range(2):
        resp = rng.dirichlet(np.full(K, 2.0), size=len(iris))
        nk = resp.sum(axis=0)
        centered = iris[:, None, :] - (resp.T @ iris / nk[:, None])[None]
        statistics.append((nk, np.einsum("nk,nki,nkj->kij", resp, centered, centered)))
    warm = covariance_unit(model, K, d)
    first = warm.maximize(*statistics[0], 1e-6, empty, None)
    reused = warm.maximize(*statistics[1], 1e-6, empty, first)
    cold = covariance_unit(model, K, d)
    decomposed = cold.maximize(*statistics[1], 1e-6, empty, first.copy())
    np.testing.assert_allclose(
        reused, decomposed, rtol=0, atol=1e-12 * np.abs(decomposed).max()
    )
    assert_satisfies_model(model, *cold.decompose(reused))


def assert_satisfies_model(model, volumes, shapes, orientations):
    K, d = shapes.shape
    np.testing.assert_allclose(np.prod(shapes, axis=1), 1.0, rtol=1e-10)
    np.testing.assert_allclose(
        orientations @ np.swapaxes(orientations, 1, 2),
        np.broadcast_to(np.eye(d), (K, d, d)),
        atol=1e-10,
    )
    volume, shape, orientation = model
    if volume == "E":
        np.testing.assert_allclose(volumes, volumes[0], rtol=1e-10)
    if shape == "E":
        np.testing.assert_allclose(shapes, shapes[[0]].repeat(K, 0), rtol=1e-8)
    if shape == "I":
        np.testing.assert_allclose(shapes, 1.0, rtol=1e-12)
    if orientation == "I":
        np.testing.assert_array_equal(orientations, np.eye(d)[None].repeat(K, 0))
    if orientation == "E":
        # Equal up to the signs of the columns (Sigma does not see them).
        np.testing.assert_allclose(
            np.abs(orientations), np.abs(orientations[[0]]).repeat(K, 0), atol=1e-10
        )


# ----------------------------------------------------------- properties
@st.composite
def model_cases(draw):
    n_features = draw(st.integers(1, 3))
    n_components = draw(st.integers(1, 3))
    reg_covar = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.1]))
    return {
        "seed": draw(st.integers(0, 2**16)),
        "n_samples": 20 + 10 * n_components * n_features,
        "n_features": n_features,
        "n_components": n_components,
        "covariance_type": draw(st.sampled_from(MODELS)),
        "reg_covar": reg_covar,
        "weights": draw(st.sampled_from(["none", "integer", "real"])),
        "offset": draw(st.sampled_from([0.0, 50.0])),
    }


def make_model(case, **overrides):
    params = {
        "n_components": case["n_components"],
        "covariance_type": case["covariance_type"],
        "reg_covar": case["reg_covar"],
        "random_state": case["seed"],
        "max_iter": 25,
        "tol": 0.0,
    }
    params.update(overrides)
    return EMGaussianMixture(**params)


@PROPERTY_SETTINGS
@given(model_cases())
def test_no_half_step_decreases_the_elbo_for_any_model(case):
    X, weights = weighted_case_data(case)
    model = fit_or_reject(make_model(case), X, weights)
    tolerance = fp_tolerance(model.elbo_decomposition(X, weights), model)
    half_steps = model.half_step_lower_bounds_
    assert np.all(np.isfinite(half_steps))
    assert np.all(np.diff(half_steps) >= -tolerance)


@PROPERTY_SETTINGS
@given(model_cases())
def test_after_every_e_step_the_gap_is_zero_for_any_model(case):
    X, weights = weighted_case_data(case)
    model = make_model(case, max_iter=1, warm_start=True)
    for _ in range(3):
        fit_or_reject(model, X, weights)
        decomposition = model.elbo_decomposition(X, weights)
        tolerance = fp_tolerance(decomposition, model)
        assert abs(decomposition.kl_gap) <= tolerance
        independent = smoothed_log_likelihood(model, X, weights, case["reg_covar"])
        assert model.lower_bound_ == pytest.approx(independent, rel=1e-9, abs=1e-9)
        if case["reg_covar"] == 0.0:
            mean_score = np.dot(weights, model.score_samples(X)) / weights.sum()
            assert model.lower_bound_ == pytest.approx(mean_score, rel=1e-12)


# ----------------------------------------------------------- attributes
@pytest.mark.parametrize("model", MODELS)
def test_fitted_decomposition(model, iris):
    K, d = 3, iris.shape[1]
    em = EMGaussianMixture(K, covariance_type=model, random_state=1).fit(iris)
    assert em.covariances_.shape == em.precisions_.shape == (K, d, d)
    assert em.precisions_cholesky_.shape == (K, d, d)
    volumes, shapes, orientations = em.volumes_, em.shapes_, em.orientations_
    assert volumes.shape == (K,) and shapes.shape == (K, d)
    assert orientations.shape == (K, d, d)
    rebuilt = np.einsum(
        "kij,kj,klj->kil", orientations, volumes[:, None] * shapes, orientations
    )
    np.testing.assert_allclose(rebuilt, em.covariances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(em.covariances_), volumes**d, rtol=1e-9)
    assert_satisfies_model(model, volumes, shapes, orientations)
    if model[2] != "I" and model[1:] not in ("VE",):
        assert np.all(np.diff(shapes, axis=1) <= 0)
    # A refit as scikit-learn's type drops the decomposition.
    em.set_params(covariance_type="full").fit(iris)
    assert not hasattr(em, "volumes_")


@pytest.mark.parametrize("model", MODELS)
def test_precisions_init_any_spd_starts_inside_the_model(model, iris):
    K, d = 2, iris.shape[1]
    rng = np.random.RandomState(0)
    mixing = rng.normal(size=(K, d, d))
    precisions = mixing @ np.swapaxes(mixing, 1, 2) + np.eye(d)
    given = precisions.copy()
    em = EMGaussianMixture(
        K, covariance_type=model, precisions_init=precisions, max_iter=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em.fit(iris)
    np.testing.assert_array_equal(precisions, given)  # not modified
    assert_satisfies_model(model, em.volumes_, em.shapes_, em.orientations_)
    # A start already in the model is kept as it is.
    again = EMGaussianMixture(
        K,
        covariance_type=model,
        precisions_init=em.precisions_,
        weights_init=em.weights_,
        max_iter=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again.fit(iris)
    np.testing.assert_allclose(again.covariances_, em.covariances_, rtol=1e-8)


def test_precisions_init_of_the_wrong_shape_is_refused(iris):
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4\)"):
        EMGaussianMixture(
            2, covariance_type="VEV", precisions_init=np.ones((2, 4))
        ).fit(iris)


@pytest.mark.parametrize("model", MODELS)
def test_collapsed_components_raise_degenerate_error(model):
    X = np.array([[0.0, 0.0]] * 5 + [[1.0, 2.0]] * 5)
    with pytest.raises(DegenerateComponentError):
        EMGaussianMixture(2, covariance_type=model, reg_covar=0.0).fit(X)


@pytest.mark.parametrize("model", ["EVE", "VVE", "VEI", "VEV"])
def test_singular_scatter_in_four_dimensions_raises_degenerate_error(model):
    """A cluster on a plane of R^4 without reg_covar: the Newton solves and
    plane searches of the iterative M-steps meet a singular scatter, and
    the fit says the component collapsed (instead of looping or NaN)."""
    rng = np.random.default_rng(0)
    flat = np.zeros((30, 4))
    flat[:, :2] = rng.normal(size=(30, 2))
    X = np.vstack([rng.normal(size=(30, 4)), flat + 10.0])
    em = EMGaussianMixture(2, covariance_type=model, reg_covar=0.0, random_state=0)
    with pytest.raises(DegenerateComponentError, match="collapsed"):
        em.fit(X)


@pytest.mark.parametrize("model", MODELS)
def test_variational_mixture_refuses_mclust_models(model):
    with pytest.raises(ValueError, match="only EMGaussianMixture fits"):
        VariationalGaussianMixture(covariance_type=model).fit(np.eye(3))


# ----------------------------------------------- the other learning paths
@pytest.mark.parametrize("model", ["VEI", "EVE", "VVE", "VEV"])
def test_partial_fit_runs_every_model(model, iris):
    em = EMGaussianMixture(3, covariance_type=model, random_state=0)
    for batch in np.array_split(np.random.RandomState(0).permutation(iris), 5):
        em.partial_fit(batch)
    assert em.covariances_.shape == (3, 4, 4)
    assert_satisfies_model(model, em.volumes_, em.shapes_, em.orientations_)
    assert np.isfinite(em.score(iris))


@pytest.mark.parametrize("model", ["EEI", "VVE"])
def test_dask_fit_equals_in_memory_fit(model, iris):
    kwargs = {"covariance_type": model, "random_state": 0, "init_params": "random"}
    ours = EMGaussianMixture(3, **kwargs).fit(da.from_array(iris, chunks=50))
    theirs = EMGaussianMixture(3, **kwargs).fit(iris)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-6)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-9)


@pytest.mark.parametrize("model", ["VEE", "EVE", "EVI"])
def test_missing_values_every_model(model, iris):
    X = iris.copy()
    X[np.random.RandomState(0).rand(*X.shape) < 0.1] = np.nan
    em = EMGaussianMixture(3, covariance_type=model, random_state=0, tol=1e-6)
    em.fit(X)
    assert np.all(np.diff(em.half_step_lower_bounds_) >= -1e-12)
    assert_satisfies_model(model, em.volumes_, em.shapes_, em.orientations_)
