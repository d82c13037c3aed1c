"""select_model's lock-step fits (skvi._multifit) equal the fits one by one."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris

from skvi import EMGaussianMixture, VariationalGaussianMixture, _multifit, _selection
from skvi import select_model as _select_model
from skvi._batch import remaining_gain, stopping_rule
from skvi._covariance import mclust
from skvi._covariance import stacked as stacking
from skvi.datasets import load_old_faithful

from .helpers import stacked_scatters

SHARED = "full,tied,diag,spherical"
CRITERIA = ("bic", "icl", "aic", "lower_bound")


def select_model(X, **params):
    # The nested restarts (tests/test_nesting.py) take only the lock step:
    # off here, where the lock step is compared with the fits one by one.
    params.setdefault("restarts", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _select_model(X, as_frame=False, **params)


def one_by_one(monkeypatch, X, **params):
    """select_model with the lock step switched off: every fit on its own."""
    with monkeypatch.context() as patch:
        patch.setattr(_selection, "lockstep_applies", lambda *args: False)
        return select_model(X, **params)


def lockstep_count(monkeypatch):
    """A list that receives how many fits each lock step finished."""
    counts = []
    original = _multifit.fit_in_lockstep

    def counting(*args):
        models = original(*args)
        counts.append(sum(model is not None for model in models))
        return models

    monkeypatch.setattr(_selection, "fit_in_lockstep", counting)
    return counts


def assert_same_tables(together, alone, rtol):
    assert len(together) == len(alone)
    for row, reference in zip(together, alone, strict=True):
        cell = (row["covariance_type"], row["n_components"])
        for key in ("n_iter", "converged", "error", "degenerate", "chosen"):
            assert row[key] == reference[key], (cell, key)
        for key in CRITERIA:
            if np.isnan(reference[key]):
                assert np.isnan(row[key]), (cell, key)
            else:
                assert row[key] == pytest.approx(reference[key], rel=rtol), (cell, key)


def assert_same_models(together, alone):
    assert together.get_params() == alone.get_params()
    assert together.n_iter_ == alone.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(together, name), getattr(alone, name), rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(
        together.half_step_lower_bounds_, alone.half_step_lower_bounds_, rtol=1e-12
    )
    np.testing.assert_allclose(together.kl_gaps_, alone.kl_gaps_, atol=1e-12)


@pytest.mark.parametrize("name", ["faithful", "iris"])
def test_shared_types_equal_the_fits_one_by_one(monkeypatch, name):
    X = load_old_faithful().data if name == "faithful" else load_iris().data
    counts = lockstep_count(monkeypatch)
    together, best = select_model(X, covariance_types=SHARED, random_state=0)
    alone, best_alone = one_by_one(
        monkeypatch, X, covariance_types=SHARED, random_state=0
    )
    # Every one of the 36 fits ran in the lock step.
    assert counts == [36]
    assert_same_tables(together, alone, rtol=1e-12)
    assert_same_models(best, best_alone)
    # The fitted model continues like one fitted alone.
    assert best.predict(X).tolist() == best_alone.predict(X).tolist()


def test_all_fourteen_models_equal_the_fits_one_by_one(monkeypatch):
    # mclust's models other than the four take their own M-step per fit;
    # those that iterate (VEE, EVE, VVE, VEI, VEV) stop their inner
    # iterations at a tolerance, which turns rounding-level differences of
    # the statistics into differences of about 1e-11 of the entropy in ICL.
    X = load_old_faithful().data
    params = dict(n_components=range(1, 7), random_state=1)
    counts = lockstep_count(monkeypatch)
    together, best = select_model(X, **params)
    alone, best_alone = one_by_one(monkeypatch, X, **params)
    assert counts[0] >= 0.9 * len(alone)
    assert_same_tables(together, alone, rtol=1e-10)
    assert_same_models(best, best_alone)


def test_sample_weights_and_fits_that_leave_or_fail(monkeypatch):
    # Repeated rows collapse some components (the fits leave the lock step
    # or end degenerate); rows of weight 0 are not there.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(60, 2)), np.repeat(rng.normal(size=(5, 2)), 4, 0)])
    weights = rng.uniform(0.5, 3.0, len(X))
    weights[:5] = 0.0
    params = dict(
        n_components=[1, 2, 3, 6],
        covariance_types=SHARED + ",VEV",
        sample_weight=weights,
        random_state=0,
    )
    left = []
    original = _multifit._Fit.resume_before_m_step

    def leaving(fit):
        left.append((fit.unit.name, fit.n_components, fit.n_iter))
        original(fit)

    monkeypatch.setattr(_multifit._Fit, "resume_before_m_step", leaving)
    together, _ = select_model(X, **params)
    alone, _ = one_by_one(monkeypatch, X, **params)
    # 'full' with 6 and 3 components turn ill-conditioned in their 40th and
    # 51st M-steps: each goes on alone from the parameters of the iteration
    # before and ends as the fit alone from its start does.
    assert left == [("full", 6, 39), ("full", 3, 50)]
    assert_same_tables(together, alone, rtol=1e-12)


def test_fits_that_leave_in_their_start_m_step_run_alone_from_their_start(
    monkeypatch,
):
    # R's women (15 rows, nearly on a line): the hierarchical start gives
    # these models' fits a component of one or two rows, whose precision the
    # start's M-step leaves ill-conditioned. Such a fit leaves the lock step
    # there and runs alone from its start in it, as its own fit does (no
    # refit through select_model's fits one by one): the same table, bit
    # for bit.
    height = np.arange(58.0, 73.0)
    weight = [115, 117, 120, 123, 126, 129, 132, 135, 139, 142, 146, 150, 154, 159]
    X = np.column_stack([height, np.array([*weight, 164.0])])
    params = dict(n_components=[4, 5, 6], covariance_types="VVV,EVV,VEV")
    started = []
    original = _multifit._Fit.resume_alone

    def resuming(fit):
        started.append(fit.resume[0] is None)
        return original(fit)

    refitted = []
    fit_one = _selection._fit_one

    def counting(*args):
        refitted.append(args[3:5])
        return fit_one(*args)

    monkeypatch.setattr(_multifit._Fit, "resume_alone", resuming)
    monkeypatch.setattr(_selection, "_fit_one", counting)
    together, best = select_model(X, random_state=0, **params)
    assert started == [True] * 9
    assert refitted == []
    alone, best_alone = one_by_one(monkeypatch, X, random_state=0, **params)
    assert len(refitted) == len(alone)
    for row, reference in zip(together, alone, strict=True):
        for key in ("n_iter", "converged", "error", "degenerate", *CRITERIA):
            value, expected = row[key], reference[key]
            unset = isinstance(expected, float) and np.isnan(expected)
            assert value == expected or (unset and np.isnan(value)), key
    assert_same_models(best, best_alone)


def test_fits_whose_moments_cancel_about_the_center_stay_in_the_lock_step(
    monkeypatch,
):
    # On iris, VEE with 5, 7 and 9 components reach moments that would lose
    # more digits about the shared center than the kernel allows (after 23,
    # 25 and 60 iterations; they used to leave the lock step there and
    # finish alone): their scatters are summed about each component's own
    # mean instead, and each ends as the fit alone from its start does
    # (all three end degenerate; the fit of two components is the best).
    X = load_iris().data
    params = dict(n_components=[2, 5, 7, 9], covariance_types="VEE", random_state=0)
    direct = set()
    original = _multifit._Lockstep._direct_scatters

    def recording(lockstep, fits, resp, chosen):
        direct.update(
            fit.n_components for fit, on in zip(fits, chosen, strict=True) if on
        )
        original(lockstep, fits, resp, chosen)

    monkeypatch.setattr(_multifit._Lockstep, "_direct_scatters", recording)
    counts = lockstep_count(monkeypatch)
    together, best = select_model(X, **params)
    alone, best_alone = one_by_one(monkeypatch, X, **params)
    assert direct == {5, 7, 9}
    assert counts == [4]
    assert_same_tables(together, alone, rtol=1e-10)
    assert_same_models(best, best_alone)


def test_tied_fits_judge_their_moments_pooled(monkeypatch):
    # Two nearly equal rows far from the rest: a tied component on them has
    # almost no scatter of its own, and its moments about the shared center
    # cancel far beyond the kernel's limit relative to that scatter, but not
    # relative to the pooled one, the only one a tied fit uses (the tied
    # unit's own check). Such fits stay in the lock step (on mclust's
    # diabetes, tied with 8 and 9 components left it and finished alone).
    rng = np.random.RandomState(0)
    far = [30.0, 30.0] + 1e-3 * rng.normal(size=(2, 2))
    X = np.vstack([rng.normal(size=(150, 2)), far])
    params = dict(n_components=[2, 3, 4], covariance_types="tied", random_state=0)
    counts = lockstep_count(monkeypatch)
    together, best = select_model(X, **params)
    alone, best_alone = one_by_one(monkeypatch, X, **params)
    assert counts == [3]
    assert_same_tables(together, alone, rtol=1e-12)
    assert_same_models(best, best_alone)


def test_fits_that_cannot_start_get_their_error(monkeypatch):
    # Nine components on eight rows (first: the lock step validates the
    # data with a fit that can start).
    X = np.random.RandomState(1).normal(size=(8, 2))
    params = dict(n_components=[9, 1, 2], covariance_types=SHARED, random_state=0)
    together, _ = select_model(X, **params)
    alone, _ = one_by_one(monkeypatch, X, **params)
    assert any(row["error"] for row in alone)
    assert_same_tables(together, alone, rtol=1e-12)


@pytest.mark.parametrize("init_params", ["random_from_data", "hc"])
def test_starts_draw_from_their_own_generator_only_where_they_draw(
    monkeypatch, init_params
):
    # The lock step seeds a generator for a start only where it draws from
    # it (not for an agglomeration of every row); either way every fit
    # equals its fit alone.
    X = load_old_faithful().data
    params = dict(
        n_components=[1, 3], covariance_types="full,diag", init_params=init_params
    )
    seeded = []
    original = _multifit.check_random_state

    def counting(seed):
        seeded.append(seed)
        return original(seed)

    monkeypatch.setattr(_multifit, "check_random_state", counting)
    together, _ = select_model(X, random_state=3, **params)
    assert len(seeded) == (4 if init_params == "random_from_data" else 0)
    alone, _ = one_by_one(monkeypatch, X, random_state=3, **params)
    assert_same_tables(together, alone, rtol=1e-12)


def test_lockstep_fits_check_the_parameters_they_change():
    # A fit that begins from another's validation checks what differs.
    X = load_old_faithful().data
    first = EMGaussianMixture(n_components=2, random_state=0)
    data, _, _ = first._begin_fit(X, None)
    second = EMGaussianMixture(n_components=0, random_state=0)
    with pytest.raises(ValueError, match="n_components"):
        second._begin_fit(X, None, (first, data))
    third = EMGaussianMixture(n_components=2, random_state=0, tol=-1.0)
    with pytest.raises(ValueError, match="tol"):
        third._begin_fit(X, None, (first, data))


def test_where_the_lock_step_does_not_apply():
    X = load_old_faithful().data
    em = EMGaussianMixture(random_state=0)
    assert _multifit.lockstep_applies(em, X)
    refused = [
        VariationalGaussianMixture(random_state=0),
        EMGaussianMixture(random_state=0, n_init=2),
        EMGaussianMixture(random_state=np.random.RandomState(0)),
        EMGaussianMixture(random_state=0, means_init=[[0.0, 0.0]]),
        EMGaussianMixture(random_state=0, verbose=1),
        EMGaussianMixture(random_state=0, warm_start=True),
        EMGaussianMixture(random_state=0, max_iter=0),
    ]
    for template in refused:
        assert not _multifit.lockstep_applies(template, X), template
    large = np.zeros((_multifit.MAX_ROWS + 1, 2))
    assert not _multifit.lockstep_applies(em, large)
    # float32 and missing entries: every fit is left to the ordinary path.
    for data in (X.astype(np.float32), np.where(np.eye(len(X), 2) > 0, np.nan, X)):
        models = _multifit.fit_in_lockstep(em, data, None, [(1, "full"), (2, "diag")])
        assert models == [None, None]


def test_float32_selection_still_runs_every_fit_alone(monkeypatch):
    X = load_old_faithful().data.astype(np.float32)
    counts = lockstep_count(monkeypatch)
    table, best = select_model(X, n_components=[1, 2], covariance_types="full")
    assert counts == [0]
    assert best.means_.dtype == np.float32
    assert all(row["error"] is None for row in table)


def test_stopping_rule_is_the_batch_loops_rule():
    changes = [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    recent, stopping = stopping_rule(changes[:-1], changes[-1], -4.0, 0.1, 1e-12)
    assert recent == changes
    # Rate 1/2: as much again is to come.
    assert remaining_gain(recent) == pytest.approx(0.0625)
    assert stopping
    _, stopping = stopping_rule(changes[:-1], changes[-1], -4.0, 0.01, 1e-12)
    assert not stopping


@pytest.mark.parametrize(
    "name", stacking.STACKED_MODELS + stacking.JOINT_SHAPE_MODELS + ("VEE",)
)
@pytest.mark.parametrize("n_features", [1, 2, 3])
def test_stacked_m_steps_equal_each_fits_own(name, n_features):
    # Several fits' M-steps at once equal each fit's own, from no previous
    # parameters and then from its own (the guard and Newton's start).
    rng = np.random.RandomState(n_features)
    sizes = [1, 3, 2]
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    bounds = np.cumsum([0, *sizes])
    units = [mclust.ConstrainedCovariance(size, n_features, name) for size in sizes]
    own = [
        unit.maximize(nk[a:b], scatter[a:b], 1e-6, np.zeros(b - a, bool), None)
        for unit, a, b in zip(units, bounds[:-1], bounds[1:], strict=True)
    ]
    if name in stacking.STACKED_MODELS:
        stacked = stacking.stacked_closed_form(name, nk, scatter, 1e-6, sizes)
    else:
        if name == "VEE":

            def stacked_m_step(name, *args):
                return stacking.stacked_common_matrix(*args)

        else:
            stacked_m_step = stacking.stacked_joint_shape
        stacked, blocks = stacked_m_step(
            name, nk, scatter, 1e-6, sizes, [None] * len(sizes)
        )
        np.testing.assert_allclose(stacked, np.concatenate(own), rtol=1e-9, atol=1e-12)
        # A second M-step on new statistics, from the first's blocks.
        nk, scatter = stacked_scatters(rng, sizes, n_features)
        own = [
            unit.maximize(nk[a:b], scatter[a:b], 1e-6, np.zeros(b - a, bool), first)
            for unit, a, b, first in zip(
                units, bounds[:-1], bounds[1:], own, strict=True
            )
        ]
        stacked, _ = stacked_m_step(name, nk, scatter, 1e-6, sizes, blocks)
    np.testing.assert_allclose(stacked, np.concatenate(own), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", stacking.COMMON_ORIENTATION_MODELS)
@pytest.mark.parametrize("n_features", [2, 3, 4])
def test_stacked_common_orientation_equals_each_fits_own(name, n_features):
    rng = np.random.RandomState(n_features)
    sizes = [2, 4, 1, 3]
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    bounds = np.cumsum([0, *sizes])
    pairs = list(zip(bounds[:-1], bounds[1:], strict=True))
    units = [mclust.ConstrainedCovariance(size, n_features, name) for size in sizes]
    first = [
        unit.maximize(nk[a:b], scatter[a:b], 1e-6, np.zeros(b - a, bool), None)
        for unit, (a, b) in zip(units, pairs, strict=True)
    ]
    # The first M-step: from the identity and, for D > 2, principal axes.
    stacked, blocks = stacking.stacked_common_orientation(
        name, nk, scatter, 1e-6, sizes, None
    )
    np.testing.assert_allclose(stacked, np.concatenate(first), rtol=1e-9, atol=1e-12)
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    own = [
        unit.maximize(nk[a:b], scatter[a:b], 1e-6, np.zeros(b - a, bool), previous)
        for unit, (a, b), previous in zip(units, pairs, first, strict=True)
    ]
    # From the previous covariances, and from the blocks of the first step.
    for previous in (np.concatenate(first), blocks):
        stacked, _ = stacking.stacked_common_orientation(
            name, nk, scatter, 1e-6, sizes, previous
        )
        np.testing.assert_allclose(stacked, np.concatenate(own), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("common_volume", [True, False, "mixed"])
def test_stacked_newton_gives_each_fit_its_search_alone(common_volume):
    # The stacked Newton search narrows its passes to the fits still
    # moving; each fit's orientation is still the one its search alone
    # reaches (every sum is over its own components; batched products of
    # other lengths may round differently).
    rng = np.random.RandomState(5)
    sizes, n_features = [3, 1, 4, 2, 3], 4
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    bounds = np.cumsum([0, *sizes])
    if common_volume == "mixed":
        common_volume = np.array([True, False, False, True, False])
    common = np.broadcast_to(common_volume, len(sizes))
    turns = np.linalg.qr(rng.normal(size=(len(sizes), n_features, n_features)))[0]
    axes = np.repeat(turns, sizes, axis=0)
    rotated = axes.swapaxes(1, 2) @ scatter @ axes
    together, _ = stacking._stacked_newton(turns, rotated, nk, sizes, common_volume)
    for fit, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        alone, _ = stacking._stacked_newton(
            turns[fit : fit + 1], rotated[a:b], nk[a:b], [b - a], bool(common[fit])
        )
        np.testing.assert_allclose(together[fit], alone[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("seed", [256, 390])
def test_stacked_first_m_step_keeps_each_fits_better_start(seed):
    # Two fits whose first VVE M-steps end at different local minima from
    # the identity and from principal axes, the identity better for one fit
    # and the principal axes for the other: the stacked M-step keeps each
    # fit's better run, as its own M-step does.
    rng = np.random.RandomState(seed)
    sizes, n_features = [2, 3], 3
    nk = rng.uniform(3.0, 30.0, sum(sizes))
    mixing = rng.normal(size=(sum(sizes), n_features, n_features))
    mixing = mixing * rng.uniform(0.2, 3.0, size=(sum(sizes), 1, n_features))
    scatter = nk[:, None, None] * (mixing @ np.swapaxes(mixing, 1, 2) / n_features)
    bounds = np.cumsum([0, *sizes])
    own = []
    for size, a, b in zip(sizes, bounds[:-1], bounds[1:], strict=True):
        unit = mclust.ConstrainedCovariance(size, n_features, "VVE")
        own.append(
            unit.maximize(nk[a:b], scatter[a:b], 1e-6, np.zeros(size, bool), None)
        )
    stacked, _ = stacking.stacked_common_orientation(
        "VVE", nk, scatter, 1e-6, sizes, None
    )
    np.testing.assert_allclose(stacked, np.concatenate(own), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("orientation", ["identity", "common", "variable"])
def test_stacked_guard_flags_the_fits_whose_previous_blocks_are_lower(orientation):
    # The final guard of the stacked M-steps: each fit's previous blocks
    # against a given f, as ConstrainedCovariance._objective scores them.
    rng = np.random.RandomState(3)
    sizes, n_features = [2, 1, 3], 3
    nk, scatter = stacked_scatters(rng, sizes, n_features)
    bounds = np.cumsum([0, *sizes])
    previous, values, expected = [], [], []
    for number, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        volumes = rng.uniform(0.5, 2.0, b - a)
        shape = mclust._normalized(rng.uniform(0.5, 2.0, n_features))
        if orientation == "identity":
            axes = None
            full = np.broadcast_to(np.eye(n_features), (b - a, n_features, n_features))
        elif orientation == "common":
            axes = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
            full = np.broadcast_to(axes, (b - a, n_features, n_features))
        else:
            axes = np.linalg.qr(rng.normal(size=(b - a, n_features, n_features)))[0]
            full = axes
        blocks = mclust._Blocks(
            volumes,
            np.broadcast_to(shape, (b - a, n_features)),
            full,
            nk[a:b],
            scatter[a:b],
            np.ones(b - a, bool),
        )
        value = mclust.ConstrainedCovariance._objective(
            blocks, blocks.rotated_diagonals()
        )
        # The second fit has no previous blocks; the first is lower.
        previous.append(None if number == 1 else (volumes, shape, axes, None))
        values.append(value + (1.0 if number == 0 else -1.0))
        expected.append(number == 0)
    lower = stacking._previous_are_lower(
        previous, scatter, nk, sizes, np.asarray(values)
    )
    assert lower.tolist() == expected
