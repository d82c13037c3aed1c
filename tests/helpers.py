"""Shared test helpers: data, an independent reference implementation of the
objective with scipy.stats, and the floating-point tolerance of ELBO checks."""

import os
import time

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from skvi._covariance import covariance_unit
from skvi._kernel import LOSS_LIMIT, WHITENING_LIMIT, shared_center

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Examples per property test; raise it for a deeper local search, e.g.
# SKVI_HYPOTHESIS_EXAMPLES=500 python -m pytest tests/test_em_elbo.py
HYPOTHESIS_EXAMPLES = int(os.environ.get("SKVI_HYPOTHESIS_EXAMPLES", "30"))
EPS = np.finfo(float).eps


def make_blobs(seed, n_samples=120, n_features=2, n_clusters=3, offset=0.0):
    """Gaussian clusters with random centers, scales and correlations."""
    rng = np.random.RandomState(seed)
    centers = rng.uniform(-6, 6, size=(n_clusters, n_features))
    labels = rng.randint(n_clusters, size=n_samples)
    X = np.empty((n_samples, n_features))
    for k in range(n_clusters):
        rows = labels == k
        mixing = rng.normal(size=(n_features, n_features)) * rng.uniform(0.3, 1.5)
        X[rows] = centers[k] + rng.normal(size=(rows.sum(), n_features)) @ mixing
    return X + offset


def ill_conditioned_blobs(seed, n_samples=40):
    """3-D blobs whose third column nearly repeats the first.

    Fitted full and tied covariances are then conditioned beyond the
    kernel's WHITENING_LIMIT, so the E-step evaluates rows through each
    component's Cholesky factor (see :func:`whitens`).
    """
    X = make_blobs(seed, n_samples=n_samples, n_features=2, n_clusters=2)
    noise = np.random.RandomState(seed + 1).normal(size=n_samples)
    return np.column_stack([X, X[:, 0] + 1e-3 * noise])


def whitens(model):
    """Whether skvi's kernel whitens rows for this fitted float64 model."""
    unit = covariance_unit(
        model.covariance_type, model.n_components, model.means_.shape[1]
    )
    loss = unit.conditioning_loss(
        np.asarray(model.precisions_, dtype=float),
        np.asarray(model.precisions_cholesky_, dtype=float),
    )
    return loss > WHITENING_LIMIT[np.dtype(np.float64)]


def weighted_case_data(case):
    """Blobs and sample weights for a property-test case.

    ``case`` holds seed, n_samples, n_features, n_components, offset and
    weights ('none', 'integer' or 'real').
    """
    X = make_blobs(
        case["seed"],
        n_samples=case["n_samples"],
        n_features=case["n_features"],
        n_clusters=case["n_components"],
        offset=case["offset"],
    )
    rng = np.random.RandomState(case["seed"] + 1)
    weights = {
        "none": np.ones(len(X)),
        "integer": rng.randint(0, 4, size=len(X)).astype(float),
        "real": rng.uniform(0.0, 3.0, size=len(X)),
    }[case["weights"]]
    # Keep enough weighted rows for every component.
    weights[: case["n_components"] * 3] += 1.0
    return X, weights


def dense_covariances(model):
    """Each component's (D, D) covariance matrix, whatever the type."""
    covariances = np.asarray(model.covariances_, dtype=float)
    n_components, n_features = model.means_.shape
    if covariances.ndim == 3:  # full, and mclust's models
        return covariances
    if model.covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_features, n_features))
    if model.covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return np.stack([c * np.eye(n_features) for c in covariances])


def smoothed_log_rho(model, X, reg_covar):
    """log pi_k + log N(x | mu_k, Sigma_k) - (reg/2) tr(Sigma_k^-1), via scipy."""
    covariances = dense_covariances(model)
    columns = []
    for k in range(model.n_components):
        log_pdf = stats.multivariate_normal.logpdf(X, model.means_[k], covariances[k])
        penalty = 0.5 * reg_covar * np.trace(np.linalg.inv(covariances[k]))
        with np.errstate(divide="ignore"):
            columns.append(np.log(model.weights_[k]) + log_pdf - penalty)
    return np.column_stack(columns).reshape(len(X), -1)


def smoothed_log_likelihood(model, X, sample_weight, reg_covar):
    """Per-sample smoothed log-likelihood, computed independently."""
    per_row = logsumexp(smoothed_log_rho(model, X, reg_covar), axis=1)
    return np.dot(sample_weight, per_row) / sample_weight.sum()


def em_elbo(model, X, sample_weight, resp, reg_covar):
    """Per-sample ELBO(q, theta) of an EM model for responsibilities resp."""
    log_rho = smoothed_log_rho(model, X, reg_covar)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(resp > 0, resp * (log_rho - np.log(resp)), 0.0)
    return np.dot(sample_weight, terms.sum(axis=1)) / sample_weight.sum()


def rounding_amplification(model):
    """How much the ELBO's evaluation amplifies rounding, for this model.

    * full, tied: forming a scatter S_k in original coordinates loses about
      eps * cond(Sigma_k) relative along its small axes, and tr(Lambda_k S_k)
      weighs exactly those axes up: the amplification is the condition number.
    * when skvi's E-step kernel expands about one shared center (see
      skvi/_kernel.py), rounding grows by the expansion loss F that the
      library itself computes and bounds.
    """
    unit = covariance_unit(
        model.covariance_type, model.n_components, model.means_.shape[1]
    )
    amplification = 1.0
    if model.covariance_type not in ("diag", "spherical"):
        amplification = max(np.linalg.cond(c) for c in dense_covariances(model))
    limit = LOSS_LIMIT[np.dtype(model.means_.dtype)]
    loss, _ = shared_center(
        unit,
        np.asarray(model.means_, dtype=float),
        np.asarray(model.weights_, dtype=float),
        np.asarray(model.precisions_, dtype=float),
        limit,
    )
    if loss <= limit:
        amplification = max(amplification, loss)
    return amplification


def fp_tolerance(decomposition, model, ulps=32):
    """Rounding tolerance of comparing two per-sample ELBO evaluations.

    The ELBO is the sum of an expected log joint and an entropy, each a sum
    of many terms; two evaluations that are mathematically ordered can only
    disagree by the rounding of those magnitudes (ulps of them), times the
    amplification that this model's conditioning causes.
    """
    scale = abs(decomposition.expected_log_joint) + abs(decomposition.entropy)
    return ulps * EPS * max(scale, 1.0) * rounding_amplification(model)


def all_finite(model):
    """Whether every fitted array attribute is finite."""
    for name, value in vars(model).items():
        if name.endswith("_") and not name.startswith("_"):
            array = np.asarray(value)
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                return False
    return True


def independent_rtol(model):
    """Relative tolerance for agreement with an independent implementation.

    Two correct evaluations of the same quantity differ by their rounding,
    about eps times the model's amplification (conditioning) each; 1e-9 is
    the floor for the different algorithms scipy uses (eigendecompositions).
    """
    return max(1e-9, 16 * EPS * rounding_amplification(model))


def fitted_attributes(model):
    """The public fitted attributes of a model (names ending in _)."""
    return {
        name: value
        for name, value in vars(model).items()
        if name.endswith("_") and not name.startswith("_")
    }


def stacked_scatters(rng, sizes, n_features):
    """Random statistics of stacked fits: masses and scatters N_k S_k."""
    nk = rng.uniform(3.0, 30.0, sum(sizes))
    factors = rng.normal(size=(sum(sizes), n_features, n_features))
    scatter = nk[:, None, None] * (
        factors @ np.swapaxes(factors, 1, 2) / n_features + 0.1 * np.eye(n_features)
    )
    return nk, scatter


# The environment variable naming the file the run's numba warm-up writes
# when done (tests/conftest.py).
NUMBA_WARMED = "SKVI_TESTS_NUMBA_WARMED"


def compile_missing_kernels():
    """Fits whose chunks take the compiled missing-entry kernels, full and tied.

    Where numba is importable, this compiles the kernels in this process
    (or loads them from numba's cache) and leaves the cache written.
    """
    import warnings

    from skvi import EMGaussianMixture

    X = np.random.RandomState(0).normal(size=(12_000, 3))
    X[::2, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for covariance_type in ("full", "tied"):
            EMGaussianMixture(2, covariance_type=covariance_type, max_iter=2).fit(X)


def wait_for_numba_warmup(timeout=60.0):
    """Wait until the run's numba warm-up (if any) has written its cache.

    For tests that would otherwise compile the kernels a second time, at
    the same time, in their own worker.
    """
    marker = os.environ.get(NUMBA_WARMED)
    deadline = time.monotonic() + timeout
    while marker and not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
