"""scikit-learn's estimator checks on every public estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skvi import EMGaussianMixture, GaussianMixtureImputer, VariationalGaussianMixture

ESTIMATORS = [
    EMGaussianMixture(),
    VariationalGaussianMixture(),
    GaussianMixtureImputer(),
    GaussianMixtureImputer(
        VariationalGaussianMixture(n_components=2), sample_posterior=True
    ),
]

# Checks expected to fail, with the reason; none so far.
EXPECTED_FAILURES = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
