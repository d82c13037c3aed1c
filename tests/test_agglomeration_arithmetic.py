"""The arithmetic the agglomeration's fast paths rely on to keep its bits."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skvi._agglomeration import _log_determinants


@pytest.mark.parametrize("n_features", [1, 2])
@pytest.mark.parametrize("scale", [1e-150, 1e-3, 1.0, 1e3, 1e150])
def test_squared_gaps_sum_as_einsum_does(n_features, scale):
    # rises sums the squared gaps of one or two coordinates itself, in
    # place of einsum: the trees stay bit-identical only if the sums are.
    rng = np.random.default_rng(n_features)
    gaps = rng.standard_cauchy(size=(20000, n_features)) * scale
    with np.errstate(over="ignore"):
        squares = gaps.T * gaps.T
        ours = squares[0] + squares[1] if n_features == 2 else squares[0]
        assert_array_equal(ours, np.einsum("jd,jd->j", gaps, gaps))


@pytest.mark.parametrize("n_features", [1, 2, 3, 4, 6])
def test_log_determinants_of_matrices_stacked_last(n_features):
    rng = np.random.default_rng(n_features)
    factors = rng.normal(size=(50, n_features, n_features + 1))
    matrices = factors @ factors.transpose(0, 2, 1)
    # A singular one and one rounding made indefinite: -inf, as log(0).
    matrices[0] = 0.0
    matrices[1] = np.diag([-1.0] + [1.0] * (n_features - 1))
    with np.errstate(divide="ignore"):
        logdets = _log_determinants(np.ascontiguousarray(matrices.transpose(1, 2, 0)))
    assert_array_equal(logdets[:2], -np.inf)
    assert_allclose(logdets[2:], np.linalg.slogdet(matrices[2:])[1], rtol=1e-12)
