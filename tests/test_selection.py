"""select_model and the command line over mclust's fourteen models (issue 17)."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning

from skvi import DegenerateFitWarning, EMGaussianMixture, select_model
from skvi._cli import main

MCLUST_ORDER = [
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
]  # fmt: skip


def three_blobs(seed=0, n=40):
    rng = np.random.RandomState(seed)
    return np.vstack(
        [
            rng.normal(size=(n, 2)) * [1.0, 0.3] + [0, 0],
            rng.normal(size=(n, 2)) * [0.4, 1.2] + [5, 1],
            rng.normal(size=(n, 2)) * 0.7 + [1, 6],
        ]
    )


def test_all_is_mclusts_fourteen_models_in_its_order():
    X = three_blobs()
    table, best = select_model(X, [1, 3], random_state=0, as_frame=False)
    kinds = list(dict.fromkeys(row["covariance_type"] for row in table))
    assert kinds == MCLUST_ORDER
    assert [row["n_components"] for row in table] == [1, 3] * 14
    assert best.covariance_type in MCLUST_ORDER
    assert best.covariances_.shape == (best.n_components, 2, 2)
    chosen = [row for row in table if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["degenerate"] is None
    assert chosen[0]["bic"] == min(
        row["bic"] for row in table if np.isfinite(row["bic"])
    )


def test_all_on_one_column_is_mclusts_e_and_v():
    # In one dimension every model is EII or VII (mclust fits "E" and "V"):
    # the other twelve would repeat them, and ties would name the pick by
    # rounding. R's acidity-like data: two groups of one variable.
    rng = np.random.RandomState(0)
    X = np.concatenate([rng.normal(4.5, 0.4, 100), rng.normal(6.3, 0.4, 55)])
    table, best = select_model(X[:, None], n_components=range(1, 4), as_frame=False)
    assert [row["covariance_type"] for row in table] == ["EII"] * 3 + ["VII"] * 3
    assert (best.covariance_type, best.n_components) == ("EII", 2)
    # A list names what to fit, whatever the number of columns.
    table, _ = select_model(X[:, None], 2, ["VVV", "EEE"], as_frame=False)
    assert [row["covariance_type"] for row in table] == ["VVV", "EEE"]


def test_models_that_coincide_pick_the_first_in_the_table():
    # With one component every full model is the same Gaussian: their BICs
    # agree to rounding, and the first listed is chosen (as mclust's order
    # decides its pick), not whichever rounding favours.
    X = np.random.RandomState(1).normal(size=(200, 3)) @ [
        [2, 0, 0],
        [1, 1, 0],
        [0, 0.5, 1],
    ]
    kinds = ["EEV", "VVV", "EEE", "VEV"]
    table, best = select_model(X, 1, kinds, as_frame=False)
    bics = [row["bic"] for row in table]
    assert np.ptp(bics) < 1e-9 * abs(bics[0])
    assert [row["chosen"] for row in table] == [True, False, False, False]
    assert best.covariance_type == "EEV"


def test_mclust_and_scikit_learn_names_mix_in_a_list_or_a_string():
    X = three_blobs()
    table, best = select_model(X, 3, "VEV, full,VEV", random_state=0, as_frame=False)
    assert [row["covariance_type"] for row in table] == ["VEV", "full"]
    # VVV and 'full' are one model: the same fit, two layouts.
    rows, _ = select_model(X, 3, ["VVV", "full"], random_state=0, as_frame=False)
    assert rows[0]["bic"] == pytest.approx(rows[1]["bic"], rel=1e-10)


def test_variational_all_means_its_four_conjugate_types():
    X = three_blobs()
    table, best = select_model(X, 2, method="vi", random_state=0, as_frame=False)
    assert [row["covariance_type"] for row in table] == [
        "full",
        "tied",
        "diag",
        "spherical",
    ]


def test_variational_selection_refuses_mclust_names_with_the_reason():
    with pytest.raises(ValueError, match="'VEV' is one of mclust's models, which"):
        select_model(three_blobs(), 2, ["full", "VEV"], method="vi")


@pytest.mark.parametrize("kinds", ["round", ["full", "vvv"], [], "all,full"])
def test_unknown_covariance_types_name_the_choices(kinds):
    with pytest.raises(ValueError, match="Unknown covariance type .*mclust's EII"):
        select_model(three_blobs(), 2, kinds)


def test_iris_picks_mclusts_model():
    # R's mclust 6.0: Mclust(iris[, 1:4]) picks VEV with 2 components,
    # BIC -561.7285 in its sign (larger is better); it is also the best of
    # K <= 3 (VEV 3: -562.55, VVV 2: -574.02).
    X = load_iris().data
    table, best = select_model(X, [1, 2, 3], random_state=0, as_frame=False)
    assert (best.covariance_type, best.n_components) == ("VEV", 2)
    chosen = next(row for row in table if row["chosen"])
    assert chosen["bic"] == pytest.approx(561.7285, abs=1e-3)


def test_iris_fourteen_models_to_nine_components_without_runtime_warnings():
    # Mclust(iris[, 1:4]) with its defaults (G = 1:9, fourteen models). Each
    # RuntimeWarning a user would see is an error here: VEE with 5
    # components once let Newton's rejected trials' overflow through.
    X = load_iris().data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        table, best = select_model(X, range(1, 10), as_frame=False)
    assert len(table) == 14 * 9
    assert (best.covariance_type, best.n_components) == ("VEV", 2)


def test_degenerate_fits_of_the_new_models_are_never_chosen():
    # Two rows far away: the models whose components estimate their own
    # full matrix (EVV, VVV) give them a component of 2 < d + 1 points.
    rng = np.random.RandomState(0)
    X = np.vstack([three_blobs()[:80], rng.normal(size=(2, 2)) * 0.01 + [30, 30]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        table, best = select_model(
            X, 3, ["EVV", "VVV", "EEE"], random_state=0, as_frame=False
        )
    rows = {row["covariance_type"]: row for row in table}
    for kind in ("EVV", "VVV"):
        assert "effective points" in rows[kind]["degenerate"]
        assert np.isnan(rows[kind]["bic"])
    assert best.covariance_type == "EEE" and best.degenerate_ is None


def test_the_frame_keeps_none_where_a_cell_has_no_error_or_flag():
    # As the records have it (pandas 3 would infer text columns and turn
    # None into NaN, and `row.degenerate is None` would fail).
    pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = np.vstack([three_blobs()[:80], rng.normal(size=(2, 2)) * 0.01 + [30, 30]])
    table, _ = select_model(X, 3, ["EVV", "EEE"], random_state=0)
    flags = dict(zip(table["covariance_type"], table["degenerate"], strict=True))
    assert "effective points" in flags["EVV"] and flags["EEE"] is None
    assert all(error is None for error in table["error"])


def test_cli_fits_one_mclust_model_and_refuses_it_for_vi(tmp_path, capsys):
    X = three_blobs()
    data = tmp_path / "d.csv"
    np.savetxt(data, X, delimiter=",", header="a,b", comments="")
    status = main(
        ["fit", str(data), "--n-components", "3", "--covariance-type", "VEV"]
        + ["--plot", "--output-dir", str(tmp_path)]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "3 components, VEV" in out
    # The figure reads full (K, d, d) covariances for mclust's names.
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    em = EMGaussianMixture(
        n_components=3, covariance_type="VEV", init_params="hc", random_state=0
    ).fit(X)
    assert em.covariances_.shape == (3, 2, 2)
    status = main(
        ["fit", str(data), "--method", "vi", "--covariance-type", "VEV"]
        + ["--output-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert status != 0
    assert "--covariance-type" in err and "only EM fits" in err


def test_a_constant_column_stops_a_comparison_of_covariance_types(tmp_path, capsys):
    # Its variance, reg_covar alone, swayed the choice (iris: VEV -> VVV).
    X = np.c_[load_iris().data, np.ones(150)]
    with pytest.raises(ValueError, match=r"Column 4 of X holds one value only \(1\)"):
        select_model(X, n_components=[1, 2])
    # Constant where it counts: in rows of positive weight, missing left out.
    varied = X.copy()
    varied[0, 4], varied[1, 4] = 5.0, np.nan
    weights = np.ones(150)
    weights[0] = 0.0
    with pytest.raises(ValueError, match="Column 4 of X holds one value only"):
        select_model(varied, n_components=[1, 2], sample_weight=weights)
    table, _ = select_model(varied, n_components=[1, 2], covariance_types=["VVV"])
    assert table["error"].isna().all()
    # A spread below reg_covar's sways it too (1e-12 to 1e-4 did); a data
    # frame's column is named as the frame names it.
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    for spread in (1e-12, 1e-4):
        frame = pd.DataFrame(np.c_[load_iris().data, 5 + spread * rng.normal(size=150)])
        frame.columns = ["a", "b", "c", "d", "lab"]
        with pytest.raises(ValueError, match="Column 'lab' of X spreads over"):
            select_model(frame, n_components=[1, 2])
    table, _ = select_model(
        np.c_[load_iris().data, 5 + 1e-2 * rng.normal(size=150)], n_components=[1]
    )
    assert table["error"].isna().all()
    # The command line names it and says how to leave it out.
    data = tmp_path / "flag.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c,d,flag", comments="")
    status = main(
        ["fit", str(data), "--n-components", "1-2"]
        + ["--covariance-type", "all", "--output-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert status == 1 and "Column 'flag' of" in err and "--columns" in err


def test_cli_help_says_all_means_the_fourteen(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "all: the fourteen for em" in text
    assert ", ".join(MCLUST_ORDER) in text


# BIC (skvi's sign: smaller is better) of R mclust 6.0's Mclust on Old
# Faithful, from benchmarks/mclust_reference.R (fit, models VII,VVI,EEE,VVV):
# cells where select_model's 'hc' start alone is worse by more than 2.
MCLUST_FAITHFUL_BIC = {
    ("spherical", 9): 2919.41,
    ("diag", 6): 2373.47,
    ("diag", 9): 2432.71,
    ("tied", 4): 2331.22,
    ("tied", 8): 2376.10,
    ("full", 5): 2379.39,
}


def test_second_start_ward_keeps_the_better_fit_of_each_cell():
    from skvi.datasets import load_old_faithful

    X = load_old_faithful().data
    kinds = ["spherical", "diag", "tied", "full"]
    # The nested restarts (their own test below) off: only the two starts.
    common = dict(covariance_types=kinds, as_frame=False, random_state=0, restarts=None)
    one, _ = select_model(X, **common)
    from skvi import _agglomeration

    trees = _agglomeration._MCLUST_TREES, _agglomeration._WARD_TREES
    builds = [tree.builds for tree in trees]
    for tree in trees:
        tree.trees.clear()
    two, best = select_model(X, second_start="ward", **common)
    # Each tree is built once, shared by the check of the cuts and the fits.
    assert [tree.builds for tree in trees] == [count + 1 for count in builds]
    assert [row["init_params"] for row in one] == ["hc_mclust"] * len(one)
    assert {row["init_params"] for row in two} == {"hc_mclust", "ward"}
    for first, second in zip(one, two, strict=True):
        assert first["n_components"] == second["n_components"]
        assert first["covariance_type"] == second["covariance_type"]
        # More fits in the lock step change its sums in the last digits
        # only (skvi._multifit: criteria equal to about 1e-12 relative).
        if second["init_params"] == "hc_mclust":
            assert second["bic"] == pytest.approx(first["bic"], rel=1e-12)
        else:
            assert second["bic"] < first["bic"] * (1.0 + 1e-12)
    cells = {(row["covariance_type"], row["n_components"]): row for row in two}
    for cell, bic in MCLUST_FAITHFUL_BIC.items():
        assert cells[cell]["bic"] <= bic + 2.0, cell
    chosen = next(row for row in two if row["chosen"])
    assert best.init_params == chosen["init_params"]
    assert chosen["bic"] == min(row["bic"] for row in two)


def test_second_start_is_validated():
    with pytest.raises(ValueError, match="second_start"):
        select_model(np.zeros((10, 2)), second_start="kmeans")


# R mclust 6.0's BIC (skvi's sign) of Old Faithful, Mclust(X, G = 1:9,
# modelNames = c("VII", "VVI", "EEE", "VVV")), K = 1..9 (read from R).
MCLUST_FAITHFUL_SHARED = {
    "spherical": [4024.72, 3458.30, 3336.60, 3242.83, 3129.08, 3038.17, 2973.37]
    + [2935.08, 2919.41],
    "diag": [3055.83, 2346.06, 2342.37, 2343.49, 2351.02, 2373.47, 2394.70]
    + [2413.71, 2432.71],
    "tied": [2607.62, 2325.22, 2314.32, 2331.22, 2360.66, 2347.35, 2369.33]
    + [2376.10, 2389.61],
    "full": [2607.62, 2322.19, 2349.70, 2351.49, 2379.39, 2387.02, 2412.44]
    + [2442.02, 2460.40],
}


def test_default_start_is_mclusts_tree_and_reaches_mclusts_bic():
    # From the exact tree ('hc') 9 of these 36 cells end worse than mclust
    # by more than 2; from mclust's own tree (the default start) two, both
    # where the default stopping rule stops before mclust's: spherical 9
    # pauses on a plateau, full 6 runs to max_iter.
    from skvi.datasets import load_old_faithful

    X = load_old_faithful().data
    table, best = select_model(
        X, covariance_types=list(MCLUST_FAITHFUL_SHARED), as_frame=False
    )
    assert best.init_params == "hc_mclust"
    worse = {
        (row["covariance_type"], row["n_components"])
        for row in table
        if row["bic"]
        > MCLUST_FAITHFUL_SHARED[row["covariance_type"]][row["n_components"] - 1] + 2.0
    }
    assert worse <= {("spherical", 9), ("full", 6)}


def test_pandas_missing_values_are_selected_on_as_nan():
    # A nullable column's pd.NA is a missing entry, as NaN is (the lock
    # step's check for missing entries once refused it with a TypeError).
    pd = pytest.importorskip("pandas")
    X = load_iris().data.copy()
    X[[3, 40, 77], [1, 0, 2]] = np.nan
    frame = pd.DataFrame(X).astype("Float64")
    frame[0] = (frame[0] * 10).round().astype("Int64")
    X[:, 0] = np.round(X[:, 0] * 10)
    assert frame.isna().sum().sum() == 3
    params = dict(
        n_components=range(1, 3),
        covariance_types=["full", "VEV"],
        random_state=0,
        as_frame=False,
    )
    from_frame, _ = select_model(frame, **params)
    # pandas hands the frame's values over column by column (a Fortran-
    # ordered array), and some BLAS kernels (OpenBLAS's Sandybridge and
    # Prescott) round products of the two layouts differently in the last
    # bits: the array is compared in the frame's layout.
    from_array, _ = select_model(np.asfortranarray(X), **params)
    assert from_frame == from_array


def test_an_unconverged_choice_warns_and_a_converged_one_does_not():
    # The fits' own warnings stay quiet in the table; the chosen model's
    # lack of convergence is said, since its score decided the choice.
    X = load_iris().data
    with pytest.warns(ConvergenceWarning, match=r"chosen model \(2 VVV\).*max_iter=3"):
        table, best = select_model(
            X, [2], ["VVV"], max_iter=3, as_frame=False, random_state=0
        )
    assert not best.converged_ and best.n_iter_ == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        select_model(X, [2], ["VVV"], as_frame=False, random_state=0)
    # The variational fits' own max_iter (select_model sets none for them).
    with pytest.warns(ConvergenceWarning, match=r"max_iter=100\)"):
        select_model(
            X, [2], ["full"], method="vi", tol=0.0, as_frame=False, random_state=0
        )
