"""VariationalGaussianMixture: predictive density, limits, model selection,
agreement with scikit-learn where the models coincide, and bad input."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture
from sklearn.model_selection import GridSearchCV

from skvi import EMGaussianMixture, VariationalGaussianMixture

from .helpers import COVARIANCE_TYPES, all_finite, make_blobs

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def separated_clusters(seed, n_samples, scale=1.0):
    rng = np.random.RandomState(seed)
    centers = np.array([[0.0, 0.0], [7.0, 0.0], [0.0, 7.0]])
    labels = rng.randint(3, size=n_samples)
    return centers[labels] + scale * rng.normal(size=(n_samples, 2)), labels


# ------------------------------------------------------------ the predictive


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_predictive_density_integrates_to_one_in_1d(covariance_type, weight_prior):
    rng = np.random.RandomState(0)
    # Few rows: small degrees of freedom, heavy Student-t tails.
    X = np.concatenate([rng.normal(-3, 1, 12), rng.normal(2, 0.5, 8)])[:, None]
    model = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_prior,
        random_state=0,
    ).fit(X)

    def density(x):
        return float(np.exp(model.score_samples(np.array([[x]])))[0])

    total, error = integrate.quad(density, -np.inf, np.inf, limit=200)
    assert error < 1e-8
    assert total == pytest.approx(1.0, abs=1e-7)


def grid_moments(model, center, half_width, n_points=601):
    """Mass, mean and covariance of exp(score_samples) on a 2-D grid."""
    axis_x = np.linspace(center[0] - half_width, center[0] + half_width, n_points)
    axis_y = np.linspace(center[1] - half_width, center[1] + half_width, n_points)
    grid_x, grid_y = np.meshgrid(axis_x, axis_y, indexing="ij")
    points = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    density = np.exp(model.score_samples(points))
    cell = (axis_x[1] - axis_x[0]) * (axis_y[1] - axis_y[0])
    mass = density.sum() * cell
    mean = points.T @ density * cell / mass
    centered = points - mean
    covariance = (centered * density[:, None]).T @ centered * cell / mass
    return mass, mean, covariance


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_predictive_density_integrates_to_one_in_2d(covariance_type, weight_prior):
    X, _ = separated_clusters(1, 60)
    model = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_prior,
        random_state=0,
    ).fit(X)
    # Rapidly decaying smooth densities: the grid sum converges fast.
    mass, _, _ = grid_moments(model, center=(3.5, 3.5), half_width=30.0)
    assert mass == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_draws_from_the_posterior_predictive(covariance_type):
    X, _ = separated_clusters(2, 40)
    # With 40 rows the ELBO prefers two of the three clusters merged; the
    # emptied component's predictive (about one degree of freedom) then has
    # no finite variance, and sample moments could not be compared.
    model = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        merge_components=False,
        random_state=0,
    ).fit(X)
    draws, labels = model.sample(400_000)
    assert draws.shape == (400_000, 2)
    assert set(np.unique(labels)) <= set(range(3))
    # Moments of the samples against those of the density itself, computed
    # by integrating exp(score_samples) numerically.
    _, mean, covariance = grid_moments(model, center=(3.5, 3.5), half_width=40.0)
    assert_allclose(draws.mean(axis=0), mean, atol=0.02)
    assert_allclose(np.cov(draws.T), covariance, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_proba_and_predict_share_the_predictive_terms(covariance_type):
    X, _ = separated_clusters(3, 300)
    model = VariationalGaussianMixture(
        n_components=3, covariance_type=covariance_type, random_state=0
    ).fit(X)
    proba = model.predict_proba(X)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert_array_equal(model.predict(X), np.argmax(proba, axis=1))
    assert_array_equal(model.fit_predict(X), model.predict(X))
    # A one-component model's score is that component's predictive alone.
    single = VariationalGaussianMixture(
        n_components=1, covariance_type=covariance_type
    ).fit(X)
    assert_allclose(single.predict_proba(X), 1.0)


# ----------------------------------------------------------------- limits


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_with_many_samples_and_a_weak_prior_vi_approaches_em(covariance_type):
    X, _ = separated_clusters(4, 20_000)
    start = np.array([[0.0, 0.0], [7.0, 0.0], [0.0, 7.0]])
    # (EM's weights and covariances start from a seeded k-means.)
    em = EMGaussianMixture(
        3,
        covariance_type=covariance_type,
        means_init=start,
        tol=1e-8,
        max_iter=500,
        random_state=0,
    ).fit(X)
    vi = VariationalGaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        weight_concentration_prior_type="dirichlet_distribution",
        mean_precision_prior=1e-3,
        tol=1e-8,
        max_iter=500,
        random_state=0,
    ).fit(X)
    order = np.lexsort(vi.means_.T)
    em_order = np.lexsort(em.means_.T)
    assert_allclose(vi.means_[order], em.means_[em_order], atol=1e-3)
    assert_allclose(vi.weights_[order], em.weights_[em_order], atol=1e-3)
    vi_cov = np.asarray(vi.covariances_)
    em_cov = np.asarray(em.covariances_)
    if covariance_type != "tied":
        vi_cov, em_cov = vi_cov[order], em_cov[em_order]
    assert_allclose(vi_cov, em_cov, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_surplus_components_get_negligible_weight(weight_prior):
    X, _ = separated_clusters(5, 600)
    model = VariationalGaussianMixture(
        n_components=8,
        weight_concentration_prior_type=weight_prior,
        tol=1e-6,
        max_iter=1000,
        random_state=0,
    ).fit(X)
    weights = np.sort(model.weights_)[::-1]
    assert np.all(weights[:3] > 0.25)
    assert np.all(weights[3:] < 0.005)
    assert weights.sum() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_grid_search_with_the_default_score_finds_the_true_number(weight_prior):
    X, _ = separated_clusters(6, 600)
    search = GridSearchCV(
        VariationalGaussianMixture(
            weight_concentration_prior_type=weight_prior, max_iter=500, random_state=0
        ),
        {"n_components": [1, 2, 3, 4, 5, 6]},
        cv=3,
    ).fit(X)
    assert search.best_params_["n_components"] == 3


# -------------------------------------------------------- scikit-learn


def test_full_dirichlet_agrees_with_sklearn_where_the_models_coincide():
    # Full covariances with a Dirichlet prior are the same model in both
    # libraries; at reg_covar=0 with the same explicit prior and the same
    # k-means start, every factor of q must agree.
    X = make_blobs(0, n_samples=300, n_features=3, n_clusters=3)
    params = dict(
        n_components=4,
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        reg_covar=0.0,
        covariance_prior=np.cov(X.T),
        tol=0.0,
        max_iter=20,
        random_state=3,
    )
    theirs = BayesianGaussianMixture(**params).fit(X)
    ours = VariationalGaussianMixture(**params, merge_components=False).fit(X)
    for name in (
        "weight_concentration_",
        "mean_precision_",
        "means_",
        "degrees_of_freedom_",
        "covariances_",
        "precisions_",
        "weights_",
    ):
        assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fitted_attributes_match_sklearn_names_and_shapes(covariance_type):
    X = make_blobs(1, n_samples=100, n_features=3, n_clusters=2)
    params = dict(n_components=2, covariance_type=covariance_type, random_state=0)
    theirs = BayesianGaussianMixture(**params).fit(X)
    ours = VariationalGaussianMixture(**params).fit(X)
    # Traces differ in length with the iteration counts of the two
    # algorithms, and scikit-learn's tied lower_bound_ is a 1-element array.
    traces = {"lower_bound_", "lower_bounds_"}
    for name, value in vars(theirs).items():
        if name.endswith("_") and not name.startswith("_"):
            assert hasattr(ours, name), name
            if name not in traces:
                assert np.shape(getattr(ours, name)) == np.shape(value), name
    assert np.ndim(ours.lower_bound_) == 0
    # Every parameter of scikit-learn's, plus the step sizes of partial_fit,
    # the merge moves and mclust's stopping condition.
    extra = set(ours.get_params()) - set(theirs.get_params())
    assert set(theirs.get_params()) <= set(ours.get_params())
    assert extra == {
        "learning_decay",
        "learning_offset",
        "total_samples",
        "merge_components",
        "relative_tol",
    }


# ------------------------------------------------------------ invariances


@pytest.mark.parametrize(
    ("covariance_type", "params", "message"),
    [
        ("full", {"degrees_of_freedom_prior": 1.5}, "degrees_of_freedom_prior must"),
        ("tied", {"degrees_of_freedom_prior": 2.0}, "degrees_of_freedom_prior must"),
        ("full", {"weight_concentration_prior": 0.0}, "weight_concentration_prior"),
        ("diag", {"mean_precision_prior": -1.0}, "mean_precision_prior"),
        ("full", {"mean_prior": [0.0, 1.0]}, r"mean_prior must have shape \(3,\)"),
        ("full", {"covariance_prior": np.eye(2)}, r"covariance_prior must have shape"),
        (
            "full",
            {"covariance_prior": [[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]},
            "covariance_prior.*positive definite",
        ),
        (
            "tied",
            {"covariance_prior": [[1.0, 0.5, 0], [0.1, 1.0, 0], [0, 0, 1.0]]},
            "covariance_prior.*symmetric",
        ),
        ("diag", {"covariance_prior": [1.0, -1.0, 1.0]}, "covariance_prior must be"),
        ("diag", {"covariance_prior": [1.0, 1.0]}, r"covariance_prior must have shape"),
        ("spherical", {"covariance_prior": -2.0}, "covariance_prior"),
        ("full", {"weight_concentration_prior_type": "dp"}, "weight_concentration"),
    ],
)
def test_invalid_priors_name_the_parameter(covariance_type, params, message):
    X = make_blobs(9, n_samples=60, n_features=3, n_clusters=2)
    model = VariationalGaussianMixture(
        n_components=2, covariance_type=covariance_type, **params
    )
    with pytest.raises(ValueError, match=message):
        model.fit(X)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_gamma_priors_only_need_positive_degrees_of_freedom(covariance_type):
    X = make_blobs(10, n_samples=60, n_features=3, n_clusters=2)
    model = VariationalGaussianMixture(
        n_components=2, covariance_type=covariance_type, degrees_of_freedom_prior=0.5
    ).fit(X)
    assert all_finite(model)


def test_a_constant_feature_needs_a_prior_or_reg_covar():
    X = make_blobs(11, n_samples=60, n_features=2, n_clusters=2)
    X[:, 1] = 3.0
    with pytest.raises(ValueError, match="default covariance_prior.*singular"):
        VariationalGaussianMixture(n_components=2, reg_covar=0.0).fit(X)
    # With the default reg_covar the smoothed data's covariance is proper.
    assert all_finite(VariationalGaussianMixture(n_components=2).fit(X))
