"""Stacked M-steps shared by several models equal each model's own call.

select_model's lock step gives the fits of VEI and VEV, of EVE and VVE, and
of the five closed-form models one stacked M-step per group
(skvi._covariance.stacked.SHARED_GROUPS); each fit's result must be the one
its own model's stacked call gives, bit for bit (tables are compared byte
for byte across versions).
"""

import numpy as np
import pytest

from skvi._covariance import mclust
from skvi._covariance import stacked as stacking

from .helpers import stacked_scatters


def _assert_identical(found, expected):
    if isinstance(expected, (list, tuple)):
        assert len(found) == len(expected)
        for one, other in zip(found, expected, strict=True):
            _assert_identical(one, other)
    elif expected is None:
        assert found is None
    else:
        np.testing.assert_array_equal(found, expected)


def _by_model(models, sizes, nk, scatter):
    """Each model's fits' rows, in the mixed call's order of models."""
    names = [name for name, size in zip(models, sizes, strict=True)]
    rows = np.repeat(names, sizes)
    return {
        name: (
            [size for kind, size in zip(names, sizes, strict=True) if kind == name],
            nk[rows == name],
            scatter[rows == name],
        )
        for name in dict.fromkeys(names)
    }


def _interleaved(rng, group, n_fits):
    """Per fit a model of the group, each at least twice."""
    models = list(group) * 2 + list(rng.choice(group, n_fits - 2 * len(group)))
    rng.shuffle(models)
    return models


@pytest.mark.parametrize("group", ["VEI+VEV", "EVE+VVE"])
@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
def test_shared_iterative_m_steps_equal_each_models_own(group, n_features):
    if group == "EVE+VVE" and n_features == 1:
        pytest.skip("a common orientation needs two features")
    call = {
        "VEI+VEV": stacking.stacked_joint_shape,
        "EVE+VVE": stacking.stacked_common_orientation,
    }[group]
    rng = np.random.RandomState(n_features)
    models = _interleaved(rng, stacking.SHARED_GROUPS[group], 7)
    sizes = list(rng.randint(1, 6, len(models)))
    previous = None if group == "EVE+VVE" else [None] * len(models)
    own_previous = {
        name: None if previous is None else [None] * models.count(name)
        for name in set(models)
    }
    for _ in range(3):
        # The first M-step, then two from the blocks of the last.
        nk, scatter = stacked_scatters(rng, sizes, n_features)
        mixed = call(models, nk, scatter, 1e-6, sizes, previous)
        parts = _by_model(models, sizes, nk, scatter)
        own = {
            name: call(
                name, part_nk, part_scatter, 1e-6, part_sizes, own_previous[name]
            )
            for name, (part_sizes, part_nk, part_scatter) in parts.items()
        }
        for name in parts:
            rows = np.repeat(np.array(models) == name, sizes)
            _assert_identical(mixed[0][rows], own[name][0])
            blocks = [b for b, m in zip(mixed[1], models, strict=True) if m == name]
            _assert_identical(blocks, own[name][1])
        previous = mixed[1]
        own_previous = {name: found[1] for name, found in own.items()}


@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
def test_shared_closed_forms_equal_each_models_own(n_features):
    rng = np.random.RandomState(10 + n_features)
    models = _interleaved(rng, stacking.STACKED_MODELS, 12)
    sizes = list(rng.randint(1, 6, len(models)))
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    mixed = stacking.stacked_closed_form(models, nk, scatter, 1e-6, sizes)
    for name, (part_sizes, part_nk, part_scatter) in _by_model(
        models, sizes, nk, scatter
    ).items():
        own = stacking.stacked_closed_form(
            name, part_nk, part_scatter, 1e-6, part_sizes
        )
        rows = np.repeat(np.array(models) == name, sizes)
        np.testing.assert_array_equal(mixed[rows], own)


def test_shared_closed_forms_return_none_where_a_model_collapses():
    # A component with no spread along an axis: its model's own call has no
    # positive shape, so the shared call returns None (each model's call
    # then runs, and each fit's own M-step says which component collapsed).
    rng = np.random.RandomState(0)
    models, sizes = ["EVI", "EEV", "EII"], [2, 2, 1]
    nk, scatter = stacked_scatters(rng, sizes, 2)
    scatter[1] = np.diag([4.0, 0.0])
    assert stacking.stacked_closed_form("EVI", nk[:2], scatter[:2], 0.0, [2]) is None
    assert stacking.stacked_closed_form(models, nk, scatter, 0.0, sizes) is None


@pytest.mark.parametrize("n_features", [2, 3, 4])
def test_a_model_alone_in_a_shared_orientation_step_equals_its_own(n_features):
    # With one plane per round (D <= 3), a model with one fit sums its
    # plane's changes along its components alone in its own call (numpy
    # sums one column in another order than several): the mixed call sums
    # that column again so.
    rng = np.random.RandomState(20 + n_features)
    models, sizes = ["VVE", "EVE", "VVE", "VVE"], [2, 3, 4, 1]
    previous, own_previous = None, {"VVE": None, "EVE": None}
    for _ in range(3):
        nk, scatter = stacked_scatters(rng, sizes, n_features)
        mixed = stacking.stacked_common_orientation(
            models, nk, scatter, 1e-6, sizes, previous
        )
        own = {}
        for name, (part_sizes, part_nk, part_scatter) in _by_model(
            models, sizes, nk, scatter
        ).items():
            own[name] = stacking.stacked_common_orientation(
                name, part_nk, part_scatter, 1e-6, part_sizes, own_previous[name]
            )
            rows = np.repeat(np.array(models) == name, sizes)
            _assert_identical(mixed[0][rows], own[name][0])
        previous = mixed[1]
        own_previous = {name: found[1] for name, found in own.items()}


def test_failed_solves_fall_back_by_model():
    # A singular (or not positive definite) system of one model sends that
    # model's systems to the fallback, as its own call does; the other
    # model's keep the batched solve.
    rng = np.random.RandomState(2)
    matrices = rng.normal(size=(6, 3, 3))
    matrices = matrices @ matrices.swapaxes(1, 2) + np.eye(3)
    vectors = rng.normal(size=(6, 3))
    kinds = np.array([True, False, True, False, False, True])
    singular = matrices.copy()
    singular[0] = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    solved = stacking._solve_by_kind(singular, vectors, kinds)
    np.testing.assert_array_equal(
        solved[~kinds],
        np.linalg.solve(singular[~kinds], vectors[~kinds][:, :, None])[:, :, 0],
    )
    for row in np.flatnonzero(kinds):
        np.testing.assert_array_equal(
            solved[row], np.linalg.lstsq(singular[row], vectors[row])[0]
        )
    indefinite = matrices.copy()
    indefinite[1] = np.diag([1.0, -1.0, 2.0])
    solved = stacking._stacked_shifted_solve(indefinite, vectors, kinds)
    np.testing.assert_array_equal(
        solved[kinds],
        np.linalg.solve(indefinite[kinds], vectors[kinds][:, :, None])[:, :, 0],
    )
    for row in np.flatnonzero(~kinds):
        np.testing.assert_array_equal(
            solved[row], mclust._shifted_solve(indefinite[row], vectors[row])
        )
