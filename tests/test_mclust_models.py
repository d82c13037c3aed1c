"""mclust's fourteen models against published formulas (no R needed).

The parameter counts are Table 3 of Scrucca, Fop, Murphy & Raftery (2016),
mclust 5, The R Journal 8(1), written out per model as published (not
composed from the letters as skvi computes them); BIC and AIC follow from
them as mclust defines BIC, with the sign turned.
"""

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skvi import DegenerateFitWarning, EMGaussianMixture

# Covariance parameters of each model in d dimensions with K components
# (Scrucca et al. 2016, Table 3); every model adds K d means and K - 1
# weights.
COVARIANCE_PARAMETERS = {
    "EII": lambda d, K: 1,
    "VII": lambda d, K: K,
    "EEI": lambda d, K: d,
    "VEI": lambda d, K: K + (d - 1),
    "EVI": lambda d, K: 1 + K * (d - 1),
    "VVI": lambda d, K: K * d,
    "EEE": lambda d, K: d * (d + 1) // 2,
    "VEE": lambda d, K: K + d * (d + 1) // 2 - 1,
    "EVE": lambda d, K: 1 + K * (d - 1) + d * (d - 1) // 2,
    "VVE": lambda d, K: K * d + d * (d - 1) // 2,
    "EEV": lambda d, K: 1 + (d - 1) + K * d * (d - 1) // 2,
    "VEV": lambda d, K: K + (d - 1) + K * d * (d - 1) // 2,
    "EVV": lambda d, K: 1 + K * (d - 1) + K * d * (d - 1) // 2,
    "VVV": lambda d, K: K * d * (d + 1) // 2,
}
ALIASES = {"spherical": "VII", "diag": "VVI", "tied": "EEE", "full": "VVV"}


def mclust_count(model, d, K):
    return COVARIANCE_PARAMETERS[ALIASES.get(model, model)](d, K) + K * d + K - 1


def blobs(n_features, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.normal(scale=6.0, size=(3, n_features))
    scales = rng.uniform(0.5, 2.0, size=(3, n_features))
    return np.vstack(
        [
            c + rng.normal(size=(40, n_features)) * s
            for c, s in zip(centres, scales, strict=True)
        ]
    )


def test_the_table_is_mclusts_for_iris():
    # nMclustParams(model, 4, 3) in R's mclust 6.0 (iris: d = 4, K = 3).
    counts = [15, 17, 18, 20, 24, 26, 24, 26, 30, 32, 36, 38, 42, 44]
    assert [mclust_count(m, 4, 3) for m in COVARIANCE_PARAMETERS] == counts


@pytest.mark.parametrize("n_features", [2, 3])
@pytest.mark.parametrize(
    "covariance_type", [*COVARIANCE_PARAMETERS, "spherical", "diag", "tied", "full"]
)
def test_bic_and_aic_count_parameters_as_mclust(covariance_type, n_features):
    X = blobs(n_features)
    n = len(X)
    for K in (1, 2, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", DegenerateFitWarning)
            em = EMGaussianMixture(
                n_components=K,
                covariance_type=covariance_type,
                max_iter=2,
                random_state=0,
            ).fit(X)
        loglik = em.score(X) * n
        expected = mclust_count(covariance_type, n_features, K)
        # mclust: BIC = 2 logL - npar log n (larger is better); skvi's is
        # its negative.
        mclust_bic = 2.0 * loglik - expected * math.log(n)
        assert em.bic(X) == pytest.approx(-mclust_bic, rel=1e-12)
        assert em.aic(X) == pytest.approx(-2.0 * loglik + 2 * expected, rel=1e-12)
