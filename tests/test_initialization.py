"""Starts from seed rows (random_from_data, k-means++): their statistics.

Each component's seed row carries all its responsibility and every other
row none, so the statistics are summed over the seed rows alone
(skvi._stats._seed_statistics). They must be the numbers that the passes
over all rows give, bit for bit (the total weight to its rounding), in
every covariance layout and dtype, with one shared center or local ones,
in one chunk or many.
"""

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_array_equal

from skvi._covariance import covariance_unit
from skvi._initialization import SeedResponsibilities
from skvi._stats import ArrayData, statistics_of_assignment

from .helpers import COVARIANCE_TYPES

FIELDS = ("reference", "nk", "sum_x", "entropy", "log_normalizer")


def seeded_data(dtype, weights, spread):
    rng = np.random.default_rng(7)
    centers = rng.normal(scale=spread, size=(5, 3))
    X = (centers[rng.integers(5, size=3000)] + rng.normal(size=(3000, 3))).astype(dtype)
    sample_weight = np.ones(len(X))
    if weights == "fractional":
        sample_weight = rng.uniform(0.1, 3.0, len(X))
    # The first and last rows among the seeds: chunk edges.
    seeds = np.array([2999, 17, 0, 1500, 2048])
    return ArrayData(X, sample_weight), seeds


@pytest.mark.parametrize("working_memory", [1024, 0.05], ids=["one-chunk", "chunks"])
@pytest.mark.parametrize("spread", [0.5, 100.0], ids=["near", "far"])
@pytest.mark.parametrize("weights", ["unit", "fractional"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_seed_statistics_are_those_of_all_rows(
    covariance_type, dtype, weights, spread, working_memory
):
    data, seeds = seeded_data(dtype, weights, spread)
    unit = covariance_unit(covariance_type, len(seeds), data.n_features)
    responsibilities = SeedResponsibilities(seeds, len(seeds))
    with sklearn.config_context(working_memory=working_memory):
        ours = statistics_of_assignment(data, unit, responsibilities)
        # A plain function of the rows: the passes over all of them.
        passes = statistics_of_assignment(
            data, unit, lambda rows: responsibilities(rows)
        )
    for name in FIELDS:
        assert_array_equal(getattr(ours, name), getattr(passes, name), err_msg=name)
    assert_array_equal(ours.second_moments(), passes.second_moments())
    if weights == "unit":
        assert ours.total_weight == passes.total_weight
    else:
        assert ours.total_weight == pytest.approx(passes.total_weight, rel=1e-15)
