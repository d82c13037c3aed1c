"""Degenerate fits are flagged, warned about and never chosen (issue 15)."""

import json
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning

from skvi import (
    DegenerateFitWarning,
    EMGaussianMixture,
    VariationalGaussianMixture,
    select_model,
)
from skvi._cli import main
from skvi._degeneracy import (
    RATIO_RESOLUTION,
    RATIO_THRESHOLD,
    _shown_ratio,
    degeneracy,
)
from skvi.datasets import load_old_faithful

from .helpers import fp_tolerance

SKLEARN_TYPES = ["full", "tied", "diag", "spherical"]


def two_clusters_and_three_points(seed=0):
    """Two elongated clusters of 150 rows and 3 far rows, in 3-D.

    A full covariance on the 3 rows spans only a plane: its component's
    likelihood is inflated by ``reg_covar`` alone, and its BIC beats every
    sound model.
    """
    rng = np.random.RandomState(seed)
    up = np.array([[3.0, 0, 0], [2.9, 0.3, 0], [0, 0, 1]])
    down = np.array([[3.0, 0, 0], [-2.9, 0.3, 0], [0, 0, 1]])
    return np.vstack(
        [
            rng.normal(size=(150, 3)) @ up.T,
            rng.normal(size=(150, 3)) @ down.T + [25, 0, 0],
            rng.normal(size=(3, 3)) * 0.5 + [12, 30, 5],
        ]
    )


def cluster_and_plane(seed=0):
    """A round cluster and one of 40 rows exactly on the plane z = 0.

    Both spread about 100 units: the flat one's covariance has eigenvalues
    about 1e4, 1e4 and ``reg_covar`` (a ratio near 1e-10).
    """
    rng = np.random.RandomState(seed)
    flat = rng.normal(size=(40, 3)) * 100 + [600, 0, 0]
    flat[:, 2] = 0.0
    return np.vstack([rng.normal(size=(60, 3)) * 100, flat])


def fit_quietly(model, X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateFitWarning)
        return model.fit(X, **kwargs)


def test_component_on_three_points_in_three_dimensions_is_flagged_and_warned():
    X = two_clusters_and_three_points()
    em = EMGaussianMixture(n_components=3, init_params="hc", random_state=0)
    with pytest.warns(DegenerateFitWarning, match="holds 3 effective points") as w:
        em.fit(X)
    assert "fewer components" in str(w[0].message)
    assert "at least 4 needed" in em.degenerate_
    # The case of the issue: the smallest eigenvalue is reg_covar.
    k = int(np.argmin(em.weights_))
    assert np.linalg.eigvalsh(em.covariances_[k])[0] == pytest.approx(em.reg_covar)


def test_select_model_never_chooses_a_degenerate_fit():
    X = two_clusters_and_three_points()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        table, best = select_model(
            X, range(1, 5), SKLEARN_TYPES, random_state=0, as_frame=False
        )
    rows = {(row["n_components"], row["covariance_type"]): row for row in table}
    flagged = rows[3, "full"]
    assert "effective points" in flagged["degenerate"]
    assert not flagged["chosen"]
    assert all(np.isnan(flagged[name]) for name in ("bic", "icl", "aic"))
    assert np.isfinite(flagged["lower_bound"])
    chosen = next(row for row in table if row["chosen"])
    assert chosen["degenerate"] is None
    assert best.degenerate_ is None
    # Without the rule the degenerate fit would win by far.
    degenerate = fit_quietly(
        EMGaussianMixture(n_components=3, init_params="hc", random_state=0), X
    )
    assert degenerate.bic(X) < chosen["bic"] - 500


def test_select_model_table_as_frame_marks_degenerate_fits():
    X = two_clusters_and_three_points()
    table, _ = select_model(X, [2, 3], "full", random_state=0)
    assert isinstance(table, pd.DataFrame)
    assert table["bic"].isna().tolist() == [False, True]
    assert table["degenerate"].notna().tolist() == [False, True]


def test_select_model_raises_when_every_fit_is_degenerate():
    X = two_clusters_and_three_points()
    with pytest.raises(ValueError, match="Every combination .* is degenerate"):
        select_model(X, [3, 4], "full", random_state=0)
    with pytest.raises(ValueError, match="The fit is degenerate: component"):
        select_model(X, 3, "full", random_state=0)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_component_collapsed_on_a_plane_is_flagged_by_its_eigenvalue_ratio(
    covariance_type,
):
    X = cluster_and_plane()
    em = EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=[[0, 0, 0], [600, 0, 0]],
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match="eigenvalue ratio"):
        em.fit(X)
    flat = int(np.argmin(em.weights_))
    assert em.weights_[flat] * len(X) == pytest.approx(40)
    assert em.degenerate_.startswith(f"component {flat}'s covariance")


def test_tied_covariance_collapsed_on_parallel_planes_is_flagged():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 3)) * 100
    X[:, 2] = np.repeat([0.0, 500.0], 50)
    em = EMGaussianMixture(n_components=2, covariance_type="tied", random_state=0)
    with pytest.warns(DegenerateFitWarning, match="the shared covariance"):
        em.fit(X)


def test_spherical_component_on_duplicated_rows_is_flagged():
    X = cluster_and_plane()[:60]
    X = np.vstack([X, [[900.0, 0, 0], [900.0, 0, 0]]])
    em = EMGaussianMixture(
        n_components=2,
        covariance_type="spherical",
        means_init=[[0, 0, 0], [900, 0, 0]],
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match="volume ratio"):
        em.fit(X)
    pair = int(np.argmin(em.weights_))
    assert em.weights_[pair] * len(X) == pytest.approx(2)
    assert em.covariances_[pair] == pytest.approx(em.reg_covar)
    assert em.degenerate_.startswith(f"component {pair}'s covariance")


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_component_on_one_row_is_flagged(covariance_type):
    X = np.vstack([cluster_and_plane()[:60], [[900.0, 0, 0]]])
    em = EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=[[0, 0, 0], [900, 0, 0]],
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match="holds 1 effective points"):
        em.fit(X)


@pytest.mark.parametrize("scale", [0.5, 1e-100, 1e100])
def test_effective_points_do_not_depend_on_the_scale_of_the_weights(scale):
    # EM reads weights relative to each other: Kish's effective sample size.
    X = two_clusters_and_three_points()
    em = EMGaussianMixture(n_components=3, init_params="hc", random_state=0)
    with pytest.warns(DegenerateFitWarning, match="holds 3 effective points"):
        em.fit(X, sample_weight=np.full(len(X), scale))


def test_effective_points_discount_rows_that_carry_most_weight():
    # Two rows hold almost all the weight: about two effective points, too
    # few for a full covariance in 2-D; with unit weights the fit is sound.
    X = load_old_faithful().data
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        assert EMGaussianMixture().fit(X).degenerate_ is None
    weights = np.ones(len(X))
    weights[:2] = 1e6
    em = EMGaussianMixture()
    with pytest.warns(DegenerateFitWarning, match=r"holds 2(\.\d+)? effective points"):
        em.fit(X, sample_weight=weights)


def test_columns_in_very_different_units_are_not_degenerate():
    X = load_old_faithful().data * [1e-4, 1e4]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        for covariance_type in ("full", "tied", "diag"):
            em = EMGaussianMixture(covariance_type=covariance_type).fit(X)
            assert em.degenerate_ is None


@pytest.mark.parametrize(
    "X", [load_old_faithful().data, load_iris().data], ids=["faithful", "iris"]
)
def test_sound_fits_do_not_warn(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        table, best = select_model(
            X, covariance_types=SKLEARN_TYPES, random_state=0, as_frame=False
        )
        vi = VariationalGaussianMixture(n_components=9, random_state=0).fit(X)
    assert all(row["degenerate"] is None for row in table)
    assert best.degenerate_ is None
    # VI components the posterior emptied are pruned, not degenerate.
    assert np.sum(vi.mean_precision_ - vi.mean_precision_prior_ < 1) > 0
    assert vi.degenerate_ is None


def test_variational_prior_keeps_a_three_point_component_sound():
    X = two_clusters_and_three_points()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        vi = VariationalGaussianMixture(
            n_components=3, init_params="hc", random_state=0
        ).fit(X)
    counts = vi.mean_precision_ - vi.mean_precision_prior_
    assert np.sort(counts)[0] == pytest.approx(3, abs=0.1)
    assert vi.degenerate_ is None


def test_partial_fit_replaces_the_diagnosis_of_fit_with_the_streams():
    # The fit's component on three rows in 3-D holds too few points; the
    # stream cannot count points, but the ratio rules still see that the
    # three rows span a plane. Already degenerate: no second warning.
    X = two_clusters_and_three_points()
    em = fit_quietly(
        EMGaussianMixture(n_components=3, init_params="hc", random_state=0), X
    )
    assert "3 effective points" in em.degenerate_
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em.partial_fit(X[:50])
    assert "ratio 0 " in em.degenerate_


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_stream_is_diagnosed_at_steps_one_two_four_and_so_on(covariance_type):
    # One cluster's second column is one value: its component has no spread
    # there but reg_covar's. A stream warns at the first diagnosis that
    # finds it, keeps the diagnosis between steps 1, 2, 4, 8, ..., and
    # does not warn again while it stays degenerate.
    rng = np.random.RandomState(0)
    flat = np.column_stack([rng.normal(size=150), np.full(150, 5.0)])
    X = np.vstack([flat, rng.normal(size=(150, 2)) + [10.0, 0.0]])
    em = EMGaussianMixture(
        n_components=2, covariance_type=covariance_type, random_state=0
    )
    with pytest.warns(DegenerateFitWarning, match="Degenerate stream"):
        em.partial_fit(X)
    assert "ratio 0 " in em.degenerate_
    diagnosed = []
    original = em._degeneracy
    em._degeneracy = lambda points: diagnosed.append(em.n_iter_) or original(points)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        for _ in range(8):
            em.partial_fit(X)
    assert diagnosed == [2, 4, 8]
    assert "ratio 0 " in em.degenerate_


def test_a_sound_stream_is_not_degenerate():
    X = load_old_faithful().data
    em = EMGaussianMixture(n_components=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        for batch in np.array_split(X, 4):
            em.partial_fit(batch)
    assert em.degenerate_ is None


def test_dask_fit_is_diagnosed_too():
    X = two_clusters_and_three_points()
    em = EMGaussianMixture(n_components=3, init_params="hc", random_state=0)
    with pytest.warns(DegenerateFitWarning, match="effective points"):
        em.fit(da.from_array(X, chunks=100))


def test_cli_shows_degenerate_fits_in_the_table(tmp_path, capsys):
    path = tmp_path / "data.csv"
    pd.DataFrame(two_clusters_and_three_points(), columns=list("xyz")).to_csv(
        path, index=False
    )
    status = main(
        ["fit", str(path), "--n-components", "2-3", "--covariance-type", "full",
         "--output-dir", str(tmp_path / "out"), "--random-state", "0"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status in (0, None)
    lines = {line[2:].split()[0]: line for line in out.splitlines() if "full " in line}
    assert "degenerate (never chosen): component" in lines["3"]
    assert lines["2"].startswith("* ") and not lines["3"].startswith("* ")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["parameters"]["n_components"] == 2


@pytest.mark.parametrize("covariance_type", ["full", "VVV", "VEI", "VEV"])
def test_component_on_duplicated_rows_is_flagged_by_its_volume(covariance_type):
    # Five copies of one row: enough points for any of these models, a
    # round covariance of reg_covar (eigenvalue ratio 1), but a volume 1e-10
    # of the other component's: a collapse onto a point.
    X = np.vstack([cluster_and_plane()[:60], np.tile([[900.0, 0, 0]], (5, 1))])
    em = EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=[[0, 0, 0], [900, 0, 0]],
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match="volume ratio .* onto a point"):
        em.fit(X)
    assert em.degenerate_.startswith(f"component {np.argmin(em.weights_)}'s")


@pytest.mark.parametrize(
    ("covariance_type", "needed"),
    [("VII", 2), ("VEI", 2), ("EVI", 2), ("VEE", 2), ("EVE", 2), ("VVE", 2),
     ("VEV", 2), ("EVV", 4), ("VVV", 4)],
)  # fmt: skip
def test_new_models_need_points_for_what_each_component_estimates(
    covariance_type, needed
):
    # The row is far enough that a component of the cluster's volume (EVI,
    # EVV) takes nothing of the cluster: at 900 such a component converges
    # to one that holds the row and some 3 points of the cluster's tail.
    X = np.vstack([cluster_and_plane()[:60], [[1e4, 0, 0]]])
    em = EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=[[0, 0, 0], [1e4, 0, 0]],
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match=f"at least {needed} needed"):
        em.fit(X)
    assert "holds 1 effective points" in em.degenerate_


@pytest.mark.parametrize("covariance_type", ["EII", "EEI", "EEE", "EEV"])
def test_models_pooling_their_covariance_accept_a_one_row_component(
    covariance_type,
):
    # What the components share is estimated from all the rows: a component
    # of one row has a sound covariance.
    X = np.vstack([cluster_and_plane()[:60], [[900.0, 0, 0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em = EMGaussianMixture(
            n_components=2,
            covariance_type=covariance_type,
            means_init=[[0, 0, 0], [900, 0, 0]],
            random_state=0,
        ).fit(X)
    assert em.degenerate_ is None
    assert em.weights_.min() * len(X) == pytest.approx(1.0)


def test_shared_shape_under_variable_orientations_needs_one_full_component():
    # EEV pools the components' sorted eigenvalues: with every component on
    # 3 rows in 3-D, the smallest is 0 for all and the shared shape is
    # singular.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(3, 3)) + 20.0 * k for k in range(3)])
    em = EMGaussianMixture(
        n_components=3,
        covariance_type="EEV",
        means_init=[[20.0 * k] * 3 for k in range(3)],
        reg_covar=1e-6,
        # Some starts end with a row of one group in another's component,
        # which then holds 4 points and a sound shape.
        random_state=0,
    )
    with pytest.warns(DegenerateFitWarning, match="no component holds the 4"):
        em.fit(X)
    np.testing.assert_allclose(em.weights_ * len(X), 3.0)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "VVE"])
def test_component_on_tied_values_is_flagged_although_reg_covar_hides_it(
    covariance_type,
):
    # Old Faithful's waiting times are whole minutes: from this start one
    # component settles on 14 rows of one waiting time. Its variance there
    # is reg_covar alone (1e-6 against the column's 184), a ratio the plain
    # eigenvalue rule accepts; the data give it no spread at all. (VVE's
    # common orientation is not exactly the axes, so its data ratio is
    # about 7e-12 rather than rounding's 0.)
    X = load_old_faithful().data
    em = EMGaussianMixture(
        n_components=8,
        covariance_type=covariance_type,
        init_params="random_from_data",
        random_state=1,
    )
    with pytest.warns(DegenerateFitWarning, match="less reg_covar"):
        em.fit(X)
    assert "less reg_covar has eigenvalue ratio" in em.degenerate_
    if covariance_type != "VVE":
        assert "ratio 0 " in em.degenerate_
    # select_model never chooses it: here it is the only fit.
    with pytest.raises(ValueError, match="The fit is degenerate"):
        select_model(
            X, 8, covariance_type, init_params="random_from_data", random_state=1
        )


def test_vve_covariance_less_reg_covar_is_its_spread_in_the_common_frame():
    # VVE's covariances are D diag(D^T S_k D) D^T + reg_covar I: a component
    # whose scatter is 0 along one of the common axes is left with
    # reg_covar there, and is flagged; the same with a small but genuine
    # spread (1e-4 of the largest, in a column of unit spread) is not.
    # (R's mclust gives NA for wine's VVE with 7, 8 and 9 components, where
    # skvi's fits have data ratios of 2e-11 to 9e-11.)
    rng = np.random.default_rng(0)
    d, reg_covar = 3, 1e-6
    orientation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    spreads = np.array([[1.0, 0.5, 0.2], [0.8, 0.3, 0.0], [0.6, 0.4, 0.1]])
    means = rng.normal(size=(3, d))
    weights = np.full(3, 1 / 3)
    points = np.full(3, 50.0)

    def reason(model, spreads):
        covariances = np.einsum(
            "ij,kj,lj->kil", orientation, spreads + reg_covar, orientation
        )
        return degeneracy(
            model, weights, means, covariances, points,
            prior=False, reg_covar=reg_covar,
        )  # fmt: skip

    assert reason("VVE", spreads).startswith("component 1's covariance less reg_covar")
    spreads[1, 2] = 1e-4
    assert reason("VVE", spreads) is None
    # Without reg_covar's share subtracted, the same collapse passes: the
    # plain eigenvalue ratio of component 1 is about 1e-6.
    spreads[1, 2] = 0.0
    assert reason("EVE", spreads) is None


@pytest.mark.parametrize("covariance_type", SKLEARN_TYPES)
def test_a_constant_column_is_not_a_collapse(covariance_type):
    X = load_old_faithful().data
    X = np.column_stack([X, np.full(len(X), 7.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em = EMGaussianMixture(
            n_components=2, covariance_type=covariance_type, random_state=0
        ).fit(X)
    assert em.degenerate_ is None


def test_ratios_below_rounding_are_reported_as_zero():
    # A zero spread's eigenvalue ratio comes out as rounding noise whose
    # digits depend on the BLAS kernel (3.4e-17 with one, 6.7e-17 with
    # another): messages say 0, so that they do not.
    assert _shown_ratio(3.4e-17) == _shown_ratio(-6.7e-17) == "0"
    assert _shown_ratio(RATIO_RESOLUTION / 2) == "0"
    assert _shown_ratio(2.5e-9) == "2.5e-09"
    assert _shown_ratio(float("nan")) == "nan"


def test_counts_of_points_are_taken_to_the_nearest_whole_point():
    # Rows lend crumbs of responsibility to other components as well as
    # borrow them: R's mclust picks VEV with 6 components for its
    # EuroUnemployment data, one of which holds two rows of responsibility
    # 0.999998 (N_k = 1.9999963): two points, enough for its own volume.
    means = np.array([[0.0, 0, 0], [10, 0, 0]])
    covariances = np.stack([np.eye(3), np.eye(3)])

    def reason(model, points):
        points = np.asarray(points, dtype=float)
        return degeneracy(
            model, points / points.sum(), means, covariances, points,
            prior=False, reg_covar=1e-6,
        )  # fmt: skip

    assert reason("VEV", [1.9999963, 29.0000037]) is None
    assert "holds 1.4 effective points" in reason("VEV", [1.4, 29.6])
    # A component of its own shape and orientation in 3-D needs 4 points.
    assert reason("VVV", [3.6, 27.4]) is None
    assert "holds 3.4 effective points" in reason("VVV", [3.4, 27.6])
    # A shape shared under variable orientations needs one such component.
    assert reason("EEV", [3.6, 3.4]) is None
    assert "the largest holds 3.4" in reason("EEV", [3.4, 3.4])


def flat_cluster_far_away():
    """cluster_and_plane in units of its spread, the flat cluster 100 away.

    Far enough that a component of either cluster takes nothing of the
    other: the flat one's 40 rows have no spread at all along z.
    """
    X = cluster_and_plane() / 100
    X[60:, 0] += 100
    return X


def started_at(covariance_type, means=((0, 0, 0), (106, 0, 0))):
    """A two-component EM started at the two clusters' centers."""
    return EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=np.array(means, dtype=float),
        random_state=0,
    )


@pytest.mark.parametrize("covariance_type", ["EVI", "EVE", "EVV"])
def test_own_shape_under_a_shared_volume_on_a_plane_is_flagged(covariance_type):
    # The flat component's axis along z is as short as reg_covar lets it,
    # but the shared volume rescales it: its plain eigenvalue ratio (about
    # 8e-7) passes, and reg_covar cannot be subtracted from it. Its rows'
    # variance along that axis is 0 (EVE's common orientation is not
    # exactly the axes: 7e-12).
    X = flat_cluster_far_away()
    em = started_at(covariance_type)
    with pytest.warns(DegenerateFitWarning, match="rows have spread ratio"):
        em.fit(X)
    assert em.degenerate_.startswith("component 1's rows have spread ratio")
    values = np.linalg.eigvalsh(em.covariances_[1])
    assert values[0] / values[-1] > RATIO_THRESHOLD


@pytest.mark.parametrize("covariance_type", ["VEI", "VEE", "VEV", "EEV"])
def test_a_shared_shape_keeps_a_flat_component_sound(covariance_type):
    # The other cluster's rows give the shared shape its spread along z:
    # the flat component is an ellipsoid like the other, only smaller.
    X = flat_cluster_far_away()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em = started_at(covariance_type).fit(X)
    assert em.degenerate_ is None


@pytest.mark.parametrize("covariance_type", ["VEI", "VEE", "EEV", "VEV"])
def test_a_shared_shape_of_flat_rows_only_is_flagged(covariance_type):
    # Both clusters flat along z, at different heights: the mixture spreads
    # along z, but no component's rows do, so the shared shape is as short
    # there as reg_covar lets it (under variable orientations, along each
    # component's shortest axis). R's mclust gives NA for VEI with 4, 5
    # and 9 components on R's mtcars, whose 0/1 columns vs and am can be
    # constant within every component, and for EEV with 5 to 8 on R's
    # women (15 rows of integer heights and weights, 3 or 4 rows of a
    # component on one line); skvi's fits have ratio 0 there.
    X = flat_cluster_far_away()
    X[:60, 2] = 3.0
    em = started_at(covariance_type, means=((0, 0, 3), (106, 0, 0)))
    with pytest.warns(DegenerateFitWarning, match="the rows of the shared shape"):
        em.fit(X)
    assert "spread ratio 0 " in em.degenerate_


@pytest.mark.parametrize("covariance_type", ["EVI", "EVV", "VEV", "EEV"])
def test_a_young_streams_shapes_read_the_scatter_its_m_step_read(covariance_type):
    # A stream's components that have seen fewer than D + 1 rows take the
    # pooled scatter in their M-step; the rows' own (singular) scatter
    # would make the first minibatch's fit look collapsed.
    rng = np.random.default_rng(1)
    X = np.vstack(
        [rng.normal(size=(200, 8)) * rng.uniform(0.5, 2, 8) + np.r_[6 * i, [0] * 7]
         for i in range(3)]
    )  # fmt: skip
    batch = rng.permutation(X)[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em = EMGaussianMixture(3, covariance_type=covariance_type, random_state=0)
        em.partial_fit(batch)
    assert em.degenerate_ is None


@pytest.mark.parametrize("covariance_type", ["EVI", "VEI", "EVV", "EEV"])
def test_a_column_below_reg_covars_resolution_is_not_a_collapse(covariance_type):
    # Noise of standard deviation 1e-8 in a third column: every component
    # has reg_covar there, as in a constant column, and nothing collapsed.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + [6, 0]])
    X = np.column_stack([X, rng.normal(size=len(X)) * 1e-8])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        em = EMGaussianMixture(2, covariance_type=covariance_type, random_state=0)
        em.fit(X)
    assert em.degenerate_ is None


def test_a_count_short_of_its_points_never_shows_as_enough():
    points = np.array([2.4996, 40.0])
    reason = degeneracy(
        "VVV", points / points.sum(), np.array([[0.0, 0], [9, 0]]),
        np.stack([np.eye(2), np.eye(2)]), points, prior=False, reg_covar=1e-6,
    )  # fmt: skip
    assert "holds 2.499 effective points" in reason


@pytest.mark.parametrize("covariance_type", ["VEI", "VEE", "VEV"])
def test_a_component_of_copies_of_one_row_is_flagged_under_a_shared_shape(
    covariance_type,
):
    # Twelve copies of one row (rounded measurements give such runs): the
    # shared shape keeps the component from collapsing along one axis, but
    # its own volume shrinks as far as reg_covar lets it, and the volume
    # rule, against the other components', passes. (R's mclust gives NA
    # for VEI, VEE and VEV beyond one component on iris rounded to whole
    # centimetres, where skvi's fits had components of copies.)
    rng = np.random.default_rng(0)
    X = np.vstack(
        [
            rng.normal(size=(100, 3)),
            rng.normal(size=(100, 3)) * [1, 2, 0.5] + [8, 0, 0],
            np.tile([4.0, 9.0, 1.0], (12, 1)),
        ]
    )
    em = started_at(covariance_type, means=((0, 0, 0), (8, 0, 0), (4, 9, 1)))
    em.set_params(n_components=3)
    with pytest.warns(DegenerateFitWarning, match="copies of one"):
        em.fit(X)
    assert em.degenerate_.startswith("component 2's rows have spread ratio 0 ")
    assert em.weights_[2] * len(X) == pytest.approx(12)


def test_reg_covar_larger_than_a_columns_spread_is_said():
    # reg_covar is in the data's units: iris in units a million million
    # times larger (1e-12 of a centimetre) chose one component, silently,
    # since every model is reg_covar * I there.
    X = load_iris().data
    with pytest.warns(
        UserWarning, match=r"exceeds the variance of column\(s\) 0, 1, 2, 3"
    ):
        EMGaussianMixture(2, random_state=0).fit(X * 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # In its own units, and with a constant column: nothing to say.
        EMGaussianMixture(2, random_state=0).fit(np.column_stack([X, np.ones(150)]))
        VariationalGaussianMixture(n_components=2, random_state=0).fit(X)
    with pytest.warns(UserWarning, match=r"column\(s\) 1 "):
        VariationalGaussianMixture(n_components=2, random_state=0).fit(
            X * [1, 1e-9, 1, 1]
        )


def few_rows_far_away(n_few):
    """60 rows in 6 dimensions, and ``n_few`` more far from them."""
    rng = np.random.RandomState(0)
    many = rng.normal(size=(60, 6))
    few = rng.normal(size=(n_few, 6)) * 0.3 + 6
    return np.vstack([many, few]), np.vstack([many.mean(axis=0), few.mean(axis=0)])


def clusters_of_random_shapes(seed):
    """A few clusters of random shapes and sizes, some of few rows."""
    rng = np.random.RandomState(seed)
    n_features, n_clusters = rng.randint(3, 9), rng.randint(2, 5)
    common = rng.rand() < 0.5
    shared_axes = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
    rows = []
    for _ in range(n_clusters):
        axes = shared_axes
        if not common:
            axes = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
        spread = 10 ** rng.uniform(-3, 3, n_features)
        if rng.rand() < 0.3:
            spread[rng.randint(n_features)] *= 1e-3
        few = rng.rand() < 0.4
        n = (
            rng.randint(n_features + 2, n_features + 40)
            if few
            else rng.randint(50, 200)
        )
        cluster = rng.normal(size=(n, n_features)) * np.sqrt(spread) @ axes.T
        cluster += (
            rng.normal(size=n_features)
            * np.sqrt(spread.max())
            * 10 ** (rng.uniform(-0.5, 1.2))
        )
        rows.append(cluster)
    X = np.vstack(rows)
    if rng.rand() < 0.3:
        for j in rng.choice(n_features, rng.randint(1, 3), replace=False):
            X[:, j] *= 10.0 ** rng.choice([-8, -5, -3, 3, 5])
    return X, n_clusters


def test_an_eve_fit_ends_at_a_collapse():
    # Two clusters in 5 dimensions, one of a few rows: the search for the
    # common orientation turns an axis into their span's complement, down
    # a funnel log(reg_covar + t^2) of many short steps. It stops where the
    # data-spread rule would flag the component (well past it), and the fit
    # ends there, flagged, as R's mclust ends at a singular covariance,
    # and warns of no convergence it never sought.
    X, n_clusters = clusters_of_random_shapes(31)
    em = EMGaussianMixture(n_clusters, covariance_type="EVE", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em.fit(X)
    kinds = {type(w.message) for w in caught}
    assert DegenerateFitWarning in kinds and ConvergenceWarning not in kinds
    assert not em.converged_ and em.n_iter_ == 2
    assert em.degenerate_ is not None
    # Never down, but by the rounding of two evaluations of the bound.
    rounding = fp_tolerance(em.elbo_decomposition(X), em)
    assert np.all(np.diff(em.half_step_lower_bounds_) >= -rounding)


@pytest.mark.parametrize("covariance_type", ["EVE", "VVE"])
def test_a_common_orientation_fit_with_rows_enough_converges(covariance_type):
    # Where the far cluster spans every direction, nothing stops the fit.
    X, centers = few_rows_far_away(30)
    em = EMGaussianMixture(
        n_components=2,
        covariance_type=covariance_type,
        means_init=centers,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        em.fit(X)
    assert em.converged_ and em.degenerate_ is None


@pytest.mark.parametrize("covariance_type", ["EVE", "VVE"])
def test_a_thin_component_beside_a_wide_one_is_not_stopped(covariance_type):
    # Two clusters under one orientation whose variances differ by 1e8
    # along an axis (a reviewer's case): the thin one is sound, since the
    # search stops only where the data-spread rules, each component in
    # the units of the data's columns, would flag the fit (a ratio against
    # the pool of both components once flagged it).
    rng = np.random.RandomState(4)
    wide, thin = 10 ** rng.uniform(-1, 6, 3), 10 ** rng.uniform(-4, 2, 3)
    turn = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    X = (
        np.vstack(
            [
                rng.normal(size=(150, 3)) * np.sqrt(wide),
                rng.normal(size=(150, 3)) * np.sqrt(thin),
            ]
        )
        @ turn.T
    )
    X[150:] += 50 * np.sqrt(wide.max()) * turn[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        em = EMGaussianMixture(
            n_components=2, covariance_type=covariance_type, random_state=0
        ).fit(X)
    assert em.converged_ and em.degenerate_ is None
